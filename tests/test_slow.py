"""Slow end-to-end checks (make test-slow): the demo pipeline, DDP simulation, a sweep."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_pipeline_on_the_tiny_world(tmp_path):
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "bsrlc.demo",
            "--size",
            "tiny",
            "--data-dir",
            str(tmp_path / "d"),
            "--out-dir",
            str(tmp_path / "o"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert set(m["sr"]) == {"model", "bicubic", "bicubic_harmonised"}
    assert set(m["sr"]["model"]) == {"psnr", "ssim", "sam", "ergas"}
    block = m["sr_block"]["rows"]
    assert {"bicubic", "bicubic_harmonised", "sr", "hr"} <= set(block)
    quality = {"consistency", "synthesis", "improvement", "omission", "hallucination"}
    assert quality | {"psnr", "ssim", "sam", "ergas", "spectrum_error"} <= set(block["sr"])
    # HR against itself: perfect correctness, no spectrum error (the scorer's floor)
    assert block["hr"]["improvement"] == 1.0 and block["hr"]["spectrum_error"] == 0.0
    assert set(m["classify"]["latest"]) == {"s2_10m", "sr_10m", "landsat_30m_nn", "pixel_sr_10m"}
    assert set(m["classify"]["early"]) == {"sr_10m", "landsat_30m_nn", "pixel_sr_10m"}
    assert set(m["maps"]) == {"2001", "2007", "2013", "2019"}
    assert set(m["maps"]["2019"]) == {"s2_10m", "sr_10m", "landsat_30m_nn", "pixel_sr_10m"}
    one = m["maps"]["2019"]["sr_10m"]
    assert {"area_oa", "area_ratio", "users_accuracy", "producers_accuracy"} <= set(one)
    assert set(one["world_area_ratio"]) == set(one["area_ratio"]) and 0 <= one["area_oa"] <= 1
    assert {"sr_10m", "truth"} <= set(m["flicker"])
    assert m["construction_site"]["period"] == "2013"
    rows = m["ablation"]["rows"]
    assert rows[0]["remedy"].startswith("seed")
    assert len(rows) == 5 and all(set(r["area_oa"]) == set(m["maps"]) for r in rows)
    assert 0.0 <= m["ablation"]["hmm"]["stay"] <= 1.0
    assert set(m["temporal"]) == {"sr_10m", "landsat_30m_nn", "pixel_sr_10m"}
    assert set(m["flicker_independent"]) == set(m["temporal"])
    report = (tmp_path / "o" / "report.md").read_text()
    assert report.index("## Maps by area") < report.index("## Classification")
    for name in ("report.md", "change.gif", "figures/maps_vs_truth.png", "maps/sr_10m_2019.tif"):
        assert (tmp_path / "o" / name).exists(), name


@pytest.mark.slow
@pytest.mark.parametrize(
    "trainer",
    [
        ["trainer=ddp_sim"],
        # one script per rank, as on GPU nodes (only rank 0 logs: its CSV logger is real)
        [
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.precision=32-true",
            "trainer.sync_batchnorm=false",
        ],
    ],
    ids=["ddp_sim", "ddp_cpu"],
)
def test_ddp_trains_with_two_processes(tmp_path, tiny_world, tiny_stms, trainer):
    res = subprocess.run(
        [
            sys.executable,
            "train.py",
            "experiment=classify_demo",
            *trainer,
            f"data.raster={tiny_stms['sentinel2']['2019']}",
            f"data.points={tiny_world.root / 'points' / 'points_2019.gpkg'}",
            "data.cache_dir=null",
            "data.block_size=32",
            "logger=csv",
            "trainer.max_epochs=1",
            "model.net.channels=[8,8,8,8,8,8]",
            f"hydra.run.dir={tmp_path}",
            f"paths.log_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "test/oa" in json.loads((tmp_path / "metrics.json").read_text())


@pytest.mark.slow
def test_multirun_sweep_with_a_failing_trial(tmp_path, tiny_world, tiny_stms):
    res = subprocess.run(
        [
            sys.executable,
            "train.py",
            "-m",
            "experiment=classify_demo",
            f"data.raster={tiny_stms['sentinel2']['2019']}",
            f"data.points={tiny_world.root / 'points' / 'points_2019.gpkg'}",
            "data.cache_dir=null",
            "data.block_size=32",
            "logger=csv",
            "trainer.max_epochs=1",
            "model.net.channels=[8,8,8,8,8,8]",
            "data.patch_size=15,14",
            f"hydra.sweep.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [r["status"] for r in summary] == ["ok", "failed"]
    assert "val/macro_f1" in summary[0]


def _sr_ddp_run(tmp_path, tiny_world, tiny_stms, name, *overrides):
    run = tmp_path / name
    res = subprocess.run(
        [
            sys.executable,
            "train.py",
            "experiment=sr_demo",
            f"data.lr_path={tiny_stms['landsat']['2019']}",
            f"data.hr_path={tiny_stms['sentinel2']['2019']}",
            f"data.test_region={tiny_world.root / 'regions.geojson'}",
            "data.patch_size=16",
            "data.samples_per_epoch=16",
            "data.cache_dir=null",
            "logger=csv",
            "model.pretrain_steps=4",
            "model.adversarial_steps=2",
            "model.adv_ramp_steps=1",
            "model.generator.channels=8",
            "model.generator.n_blocks=1",
            "test=false",
            "optimized_metric=null",
            f"hydra.run.dir={run}",
            *overrides,
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    import torch

    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    return ckpt["state_dict"]


@pytest.mark.slow
def test_sr_gan_under_ddp_sim_equals_one_process_with_the_global_batch(
    tmp_path, tiny_world, tiny_stms
):
    """Two ranks of batch 4 draw, between them, one process's batches of 8 (the same samples
    and augmentations): the generator ends equal up to float summation order. The
    discriminator (Adam on near-zero gradients amplifies rounding) is only checked to have
    trained on both paths."""
    ddp = _sr_ddp_run(
        tmp_path, tiny_world, tiny_stms, "ddp", "trainer=ddp_sim", "data.batch_size=4"
    )
    one = _sr_ddp_run(tmp_path, tiny_world, tiny_stms, "one", "data.batch_size=8")
    gen = [
        k
        for k in one
        if k.startswith(("generator.", "generator_ema.")) and one[k].is_floating_point()
    ]
    assert gen and set(gen) <= set(ddp)
    diff = max((ddp[k] - one[k]).abs().max().item() for k in gen)
    assert diff < 1e-6, diff
    disc = [k for k in one if k.startswith("discriminator.") and k.endswith("original")]
    assert disc and all(ddp[k].isfinite().all() for k in disc)
