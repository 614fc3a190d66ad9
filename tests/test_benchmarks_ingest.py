"""benchmarks/ingest.py --quick runs end to end (tiny scenes) and ends with its JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ingest_benchmark_quick_json(tmp_path):
    """One repetition of every contender on 4 scenes onto a 200 px tile: the JSON last line has the keys the
    issue asks for, the contenders' STMs agree where their CLEAR_COUNT does, and bsrlc's peak
    RSS is measured in its own process."""
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "ingest.py"),
            "--quick",
            "--reps",
            "1",
            "--scenes",
            "4",
            "--tile-px",
            "200",
            "--probe-rows",
            "2",
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
    for key in ("benchmark", "vs_gdalwarp", "vs_odc_stac", "io_limit_ratio", "peak_rss_mb"):
        assert key in out, key
    assert out["benchmark"] == "ingest" and out["quick"] is True
    assert out["vs_gdalwarp"] > 0 and out["io_limit_ratio"] > 0
    assert 50 < out["peak_rss_mb"] < 4096
    assert set(out["median_s"]) >= {"bsrlc", "gdalwarp", "io"}
    check = out["check"]["gdalwarp"]
    assert check["count_agree_frac"] > 0.8
    assert check["p99_9_abs_diff"] <= 30  # int16 units; the rest: cloud and scene edges
    if out["vs_odc_stac"] is not None:
        assert out["check"]["odc"]["p99_9_abs_diff"] <= 30
