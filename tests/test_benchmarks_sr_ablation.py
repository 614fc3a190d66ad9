"""benchmarks/sr_ablation.py --quick trains two rows on the tiny world and scores them on its block."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "sr_ablation.py"


def _run(*args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    # ~60 CPU seconds in all; the timeout leaves room for a machine shared with other jobs
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


@pytest.mark.slow  # two SR trainings in subprocesses (about 60 CPU s); `make bench` runs it too
def test_sr_ablation_quick_json_and_reuse(tmp_path):
    """Rows ``l1`` (no GAN) and ``today`` (with one, so also ``today@pretrain``) train in their
    own processes; the JSON last line holds each row's block scores, its gain over harmonised
    bicubic, its steps and CPU time; a second call with ``--reuse`` scores the same checkpoints
    again without training and gets the same numbers."""
    out = tmp_path / "runs"
    args = ("--quick", "--data", str(tmp_path / "no_world"), "--out", str(out))
    proc = _run(*args)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    res = json.loads(lines[-1])
    assert res["benchmark"] == "sr_ablation" and res["quick"] is True
    assert set(res["rows"]) == {"l1", "today", "today@pretrain"}
    harm = res["baselines"]["bicubic_harmonised"]
    assert set(res["baselines"]) == {"bicubic", "bicubic_harmonised"}
    for name, row in res["rows"].items():
        assert "error" not in row, (name, row)
        for key in ("psnr", "sam", "ergas", "spectrum_error", "synthesis", "hallucination"):
            assert math.isfinite(row[key]), (name, key)
        assert abs(row["gain"] - (row["psnr"] - harm["psnr"])) < 2e-3
    rows = res["rows"]
    assert (rows["l1"]["steps"], rows["today"]["steps"], rows["today@pretrain"]["steps"]) == (
        20,
        30,
        20,
    )
    # the GAN phase changed the model: its end and its pretraining end score differently
    assert rows["today"]["psnr"] != rows["today@pretrain"]["psnr"]
    assert rows["today"]["cost"] == 1.0 and rows["today"]["cpu_cost"] == 1.0
    assert rows["l1"]["cpu_s"] > 0 and rows["l1"]["wall_s"] >= rows["l1"]["fit_s"] > 0
    assert any(line.startswith("| today@pretrain |") for line in lines)
    assert (out / "today" / "checkpoints" / "pretrain_end.ckpt").exists()

    again = _run(*args, "--reuse")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "rc 0" not in again.stdout  # nothing trained
    res2 = json.loads(again.stdout.strip().splitlines()[-1])
    for name, row in rows.items():
        timed = {k: v for k, v in row.items() if k != "infer_s"}
        assert {k: v for k, v in res2["rows"][name].items() if k != "infer_s"} == timed, name


def test_sr_ablation_unknown_row_is_one_line():
    """An unknown row stops before anything is trained, naming it and the rows there are."""
    proc = _run("--rows", "today,nope", timeout=120)
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "nope" in err and "mse_sam" in err


def test_shorten_scales_both_phases_and_the_ramp():
    """``--fraction`` keeps a row's recipe on fewer batches: sr_demo's 1400 + 200 GAN with a 100
    batch ramp becomes 350 + 50 with a 25 batch ramp; a row without a GAN phase stays without."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sr_ablation", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def steps(overrides):
        return {k: v for k, v in (o.split("=", 1) for o in overrides) if "_steps" in k}

    today = mod.shorten(mod.ROWS["today"][1], 0.25)
    assert steps(today) == {
        "model.pretrain_steps": "350",
        "model.adversarial_steps": "50",
        "model.adv_ramp_steps": "25",
    }
    assert "model.content_loss=l1" in today
    assert steps(mod.shorten(mod.ROWS["mse_sam"][1], 0.5))["model.adversarial_steps"] == "0"
    assert steps(mod.shorten(mod.ROWS["mse_sam"][1], 0.5))["model.pretrain_steps"] == "800"
    assert mod.shorten(mod.ROWS["today"][1], 1.0) == mod.ROWS["today"][1]
    with pytest.raises(SystemExit, match="--fraction"):
        mod.shorten(mod.ROWS["today"][1], 0)
