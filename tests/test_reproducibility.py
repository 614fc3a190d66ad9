"""Reproducible CPU numerics (bsrlc.numerics): the README's reproducibility sentence, tested.

Slow: two ``train.py`` runs of the tiny classifier, one started with 1 thread and torch's
non-vector kernels (``OMP_NUM_THREADS=1 ATEN_CPU_CAPABILITY=default``), one with 2 threads and
AVX2, both with ``numerics.threads=2 numerics.cpu_isa=avx2`` (what ``python -m bsrlc.demo``
pins): bit-identical weights. Unpinned, the same two setups differ (by ~1e-7 after three epochs).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bsrlc.errors import ConfigError
from bsrlc.numerics import pin_cpu_numerics, pin_from_config

ROOT = Path(__file__).resolve().parents[1]


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="numerics.cpu_isa=avx512"):
        pin_cpu_numerics(cpu_isa="avx512")
    with pytest.raises(ConfigError, match="numerics.threads=0"):
        pin_cpu_numerics(threads=0)


def test_nothing_pinned_by_default():
    from omegaconf import OmegaConf

    before = torch.get_num_threads()
    assert (
        pin_from_config(OmegaConf.create({"numerics": {"threads": None, "cpu_isa": None}})) is None
    )
    assert pin_from_config(OmegaConf.create({})) is None
    assert torch.get_num_threads() == before


def _weights(run: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    return {k: v for k, v in ckpt["state_dict"].items() if v.is_floating_point()}


@pytest.mark.slow
def test_pinned_runs_are_identical_across_thread_counts_and_cpu_kernels(
    tmp_path, tiny_world, tiny_stms
):
    runs = {}
    for threads, isa in ((1, "default"), (2, "avx2")):
        run = tmp_path / f"t{threads}"
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "ATEN_CPU_CAPABILITY": isa,
            "WANDB_MODE": "offline",
        }
        res = subprocess.run(
            [
                sys.executable,
                str(ROOT / "train.py"),
                "experiment=classify_demo",
                f"data.raster={tiny_stms['sentinel2']['2019']}",
                f"data.points={tiny_world.root / 'points' / 'points_2019.gpkg'}",
                "data.cache_dir=null",
                "data.block_size=32",
                "logger=csv",
                "trainer.max_epochs=3",
                "test=false",
                "numerics.threads=2",
                "numerics.cpu_isa=avx2",
                f"hydra.run.dir={run}",
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
        )
        assert res.returncode == 0, res.stderr[-2000:]
        assert "'cpu_capability': 'AVX2'" in res.stderr + res.stdout
        runs[threads] = _weights(run)
    one, two = runs[1], runs[2]
    assert one.keys() == two.keys()
    diff = max((one[k] - two[k]).abs().max().item() for k in one)
    assert diff == 0.0, f"pinned runs differ by {diff}"
