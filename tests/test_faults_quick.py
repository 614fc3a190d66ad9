"""The fault-injection suite's own code (scripts/faults.py, ``make faults``) on one cheap case.

``make faults`` is slow and not part of ``make test``; this runs one real case through the
script's functions (a truncated model given to ``predict.py``: one line, no traceback, nothing
left behind) and checks how it judges runs, temporary files and outputs.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from affine import Affine

from bsrlc.raster import write_cog

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def faults():
    spec = importlib.util.spec_from_file_location("faults", ROOT / "scripts" / "faults.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["faults"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("faults", None)


def _raster(path, value=None, shape=(3, 24, 24)):
    rng = np.random.default_rng(0)
    arr = (
        rng.integers(500, 3000, shape).astype(np.int16)
        if value is None
        else np.full(shape, value, np.int16)
    )
    return write_cog(
        path,
        arr,
        crs="EPSG:32633",
        transform=Affine(10, 0, 500_000, 0, -10, 6_000_000),
        nodata=-9999,
        descriptions=["BLU_P50", "GRN_P50", "RED_P50"],
    )


def test_truncated_model_given_to_predict_is_one_clear_line(faults, tmp_path):
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(64, 64)}, "hyper_parameters": {}}, ckpt)
    src = _raster(tmp_path / "s2_2019.tif")
    suite = faults.Suite(tmp_path / "work", kills=1, quick=True)
    case = faults.Case("truncated_ckpt")
    size = ckpt.stat().st_size // 2
    faults.truncated_predict(suite, case, ckpt, src, [size], "model")
    assert case.runs == 1 and case.n["clear_error"] == 1, case.findings
    assert case.n["tracebacks"] == case.n["leftovers"] == 0
    (trial,) = case.trials
    assert trial["clear"] and "not a readable checkpoint" in trial["error"]
    report = faults.summary([case], 1.0)
    assert report["tracebacks"] == 0 and report["cases"]["truncated_ckpt"]["clear_error"] == 1
    assert "truncated_ckpt" in faults.table([case])


def test_runs_are_judged_by_exit_status_stderr_and_what_they_leave(faults, tmp_path):
    run = faults.Run
    case = faults.Case("odd_rasters")
    assert (
        faults.judge_input(case, "a", run(["x"], 2, "", "info\nerror: a.tif: south-up\n", 1.0))
        == "refused"
    )
    assert (
        faults.judge_input(case, "b", run(["x"], 0, "", "WARNING a.tif: 100 % nodata\n", 1.0))
        == "warned"
    )
    silent = faults.judge_input(case, "c", run(["x"], 0, "[WARNING] on stdout", "", 1.0))
    assert silent == "silent (warned on stdout)" and case.n["silent_inputs"] == 1
    boom = run(["x"], 1, "", "Traceback (most recent call last):\n  ...\nValueError: x\n", 1.0)
    assert faults.judge_input(case, "d", case.check(boom)) == "failed"
    assert case.n["tracebacks"] == 1 and case.n["clear_error"] == 1 and not boom.clear_error
    # temporary files count, a kept tile store only where expected
    out = tmp_path / "out"
    (out / ".map.tif.tiles").mkdir(parents=True)
    (out / ".map.tif.tiles" / "u000001.0.ab12cd34.tmp.npy").write_bytes(b"")
    (out / ".map.tif.0123abcd.partial.stage.tif").write_bytes(b"")
    (out / ".map.tif.lock").write_text("{}")
    (out / "map.tif").write_bytes(b"")
    found = {p.name for p in faults.leftovers(out)}
    assert found == {
        ".map.tif.tiles",
        "u000001.0.ab12cd34.tmp.npy",
        ".map.tif.0123abcd.partial.stage.tif",
        ".map.tif.lock",
    }
    assert ".map.tif.tiles" not in {p.name for p in faults.leftovers(out, store_ok=True)}
    # rasters compared by pixels (and grid, bands, tags)
    for d in ("a", "b"):
        _raster(tmp_path / d / "x_2019.tif")
    assert faults.dirs_diff(tmp_path / "a", tmp_path / "b", ["*.tif"]) is None
    _raster(tmp_path / "b" / "x_2019.tif", value=7)
    assert "values differ" in faults.dirs_diff(tmp_path / "a", tmp_path / "b", ["*.tif"])
    assert "missing" in faults.dirs_diff(tmp_path / "a", tmp_path / "c", ["*.tif"])


def test_kill_triggers(faults):
    state = {"v": 0}
    trigger = faults.AfterChanges(lambda: state["v"], 2, 0.5)
    assert not trigger(0.0)
    state["v"] = 1
    assert not trigger(1.0)
    state["v"] = 2
    assert not trigger(1.1)  # the 2nd change: kill 0.5 s later
    assert not trigger(1.5) and trigger(1.6)
    assert faults.AfterChanges(lambda: 0, 1, 0.0, limit=3.0)(3.0)
    assert faults.at_time(2.0)(2.0) and not faults.at_time(2.0)(1.9)
