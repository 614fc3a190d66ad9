"""benchmarks/temporal.py --quick runs end to end on a small year and ends with its JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # 30-65 s on 2 cores; `make bench` runs it too
def test_temporal_benchmark_quick_json(tmp_path):
    """8 scenes of 64 px, batches of 32: the JSON last line has the issue's keys, the encodings
    made from the store and from the scenes are identical, and the sizes add up."""
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "temporal.py"),
            "--quick",
            "--scenes",
            "8",
            "--size",
            "64",
            "--batch",
            "32",
            "--batches",
            "3",
            "--scene-batches",
            "1",
            "--steps",
            "3",
            "--pointwise-px",
            "4",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["benchmark"] == "temporal" and out["quick"] is True
    for key in ("vs_from_scenes", "wait_share", "wait_share_1_worker", "vs_from_scenes_pointwise"):
        assert key in out, key
    assert out["identical"] is True
    assert out["vs_from_scenes"] > 0 and 0 <= out["wait_share"] < 1
    assert 0 <= out["wait_share_1_worker"] < 1
    assert (out["scenes"], out["tile_px"], out["batch"]) == (8, 64, 32)
    assert out["dense_int16_mb"] == round(64 * 64 * 6 * 365 * 2 / 2**20, 1)
    assert out["empty_pixels"] >= 0 and 0 < out["obs_per_pixel"] <= 8
    assert (tmp_path / "obs" / "X0000_Y0000_2019.obs" / "meta.json").is_file()
