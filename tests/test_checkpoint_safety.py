"""No entry point runs code stored in a checkpoint: fit, test-only, export and predict refuse it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bsrlc.checkpoints import read_checkpoint
from bsrlc.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


class _Payload:
    """Pickles as a call to ``os.system``: loading the file unrestricted creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def payload(tmp_path, checkpoints):
    """A real classifier checkpoint with a code-running object added, and its marker file."""
    ckpt = read_checkpoint(checkpoints[1])
    marker = tmp_path / "pwned"
    ckpt["callbacks"] = {"evil": _Payload(marker)}
    path = tmp_path / "payload.ckpt"
    torch.save(ckpt, path)
    return path, marker


def test_the_payload_is_live_when_loaded_unrestricted(payload):
    path, marker = payload
    torch.load(path, weights_only=False)  # proves the file really runs code: never do this
    assert marker.exists()


def test_read_checkpoint_refuses_the_payload_in_one_line(payload):
    path, marker = payload
    with pytest.raises(InputError) as err:
        read_checkpoint(path)
    text = str(err.value)
    assert "refused to load" in text and "posix.system" in text and str(path) in text
    assert "\n" not in text and "\x1b[" not in text
    assert not marker.exists()


def _one_line_refusal(res: subprocess.CompletedProcess, marker: Path) -> None:
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "refused to load" in last, last
    assert not marker.exists(), "the checkpoint's code ran"


def _classify_train(tmp_path, tiny_world, tiny_stms, *extra):
    return [
        sys.executable,
        "train.py",
        "experiment=classify_demo",
        f"data.raster={tiny_stms['sentinel2']['2019']}",
        f"data.points={tiny_world.root / 'points' / 'points_2019.gpkg'}",
        "data.cache_dir=null",
        "data.block_size=32",
        "logger=csv",
        "trainer.max_epochs=1",
        "model.net.channels=[8,8,8,8,8,8]",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.log_dir={tmp_path / 'logs'}",
        *extra,
    ]


@pytest.mark.parametrize("mode", ["fit", "test_only"])
def test_train_refuses_the_payload(tmp_path, tiny_world, tiny_stms, payload, mode):
    path, marker = payload
    extra = [f"ckpt_path={path}"]
    if mode == "test_only":
        extra += ["train=false", "test=true", "optimized_metric=val/macro_f1"]
    cmd = _classify_train(tmp_path, tiny_world, tiny_stms, *extra)
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    _one_line_refusal(res, marker)


def test_train_refuses_a_payload_found_by_ckpt_path_last(tmp_path, tiny_world, tiny_stms, payload):
    path, marker = payload
    planted = tmp_path / "logs" / "classify_demo" / "runs" / "old" / "checkpoints" / "last.ckpt"
    planted.parent.mkdir(parents=True)
    planted.write_bytes(path.read_bytes())
    cmd = _classify_train(tmp_path, tiny_world, tiny_stms, "ckpt_path=last", "train=false")
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    _one_line_refusal(res, marker)


def test_export_refuses_the_payload(tmp_path, payload):
    path, marker = payload
    cmd = [sys.executable, "-m", "bsrlc.export", f"checkpoint={path}", f"out_dir={tmp_path / 'b'}"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    _one_line_refusal(res, marker)
    assert not (tmp_path / "b").exists()


def test_predict_refuses_the_payload(tmp_path, tiny_stms, payload):
    path, marker = payload
    cmd = [
        sys.executable,
        "predict.py",
        f"model={path}",
        f"input={tiny_stms['sentinel2']['2019']}",
        f"out_dir={tmp_path / 'out'}",
        "progress=false",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    _one_line_refusal(res, marker)


def test_no_code_path_loads_checkpoints_unrestricted():
    offenders = []
    for file in [ROOT / "train.py", ROOT / "predict.py", *sorted((ROOT / "bsrlc").rglob("*.py"))]:
        for n, line in enumerate(file.read_text().splitlines(), 1):
            if re.search(r"weights_only\s*=\s*False", line) or re.search(
                r"torch\.load\((?![^)]*weights_only\s*=\s*True)", line
            ):
                offenders.append(f"{file.relative_to(ROOT)}:{n}")
    assert offenders == []


def test_test_only_run_reports_test_metrics(tmp_path, tiny_world, tiny_stms, checkpoints):
    cmd = _classify_train(
        tmp_path,
        tiny_world,
        tiny_stms,
        f"ckpt_path={checkpoints[1]}",
        "train=false",
        "optimized_metric=val/macro_f1",
    )
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    import json

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0.0 <= metrics["test/macro_f1"] <= 1.0
    assert not any(k.startswith("val/") for k in metrics)
