"""Exact resume: kill -9 a real ``train.py`` at a random checkpoint, resume, compare.

The slow tests run each task three times as subprocesses (uninterrupted; killed with SIGKILL
after a random number of ``last.ckpt`` writes; resumed with ``ckpt_path=last``) and require the
same final weights and the same ``metrics.csv``, in one run folder. The fast tests cover the
refusals (another config, a truncated checkpoint) and the resumable sampler.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bsrlc.data.chips import EpochSampler, ResumableLoader

ROOT = Path(__file__).resolve().parents[1]


def _classify_args(world, stms, *extra):
    return [
        "experiment=classify_demo",
        f"data.raster={stms['sentinel2']['2019']}",
        f"data.points={world.root / 'points' / 'points_2019.gpkg'}",
        "data.cache_dir=null",
        "data.batch_size=32",
        "data.block_size=32",
        "logger=csv",
        "trainer.max_epochs=4",
        "trainer.log_every_n_steps=3",
        "model.net.channels=[8,8,8,8,8,8]",
        "callbacks.model_checkpoint.last_every_n_train_steps=2",
        "test=false",
        *extra,
    ]


def _sr_args(world, stms, *extra):
    return [
        "experiment=sr_demo",
        f"data.lr_path={stms['landsat']['2019']}",
        f"data.hr_path={stms['sentinel2']['2019']}",
        f"data.test_region={world.root / 'regions.geojson'}",
        "data.patch_size=16",
        "data.batch_size=4",
        "data.samples_per_epoch=16",
        "data.cache_dir=null",
        "logger=csv",
        "trainer.val_check_interval=3",
        "trainer.log_every_n_steps=3",
        "model.pretrain_steps=4",
        "model.adversarial_steps=8",
        "model.adv_ramp_steps=2",
        "model.ema_decay=0.9",
        "model.generator.channels=8",
        "model.generator.n_blocks=1",
        "model.discriminator.channels=[8,8,8,8,8]",
        "model.panel_every_n_epochs=0",
        "callbacks.model_checkpoint.last_every_n_train_steps=2",
        "test=false",
        *extra,
    ]


def _train(args, log_dir, kill_after=None):
    """Run train.py; with ``kill_after``, SIGKILL it once that many last.ckpt writes were seen."""
    cmd = [sys.executable, "train.py", *args, f"paths.log_dir={log_dir}"]
    env = dict(os.environ, WANDB_MODE="offline")
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if kill_after is None:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
        return out
    seen, stamp = 0, None
    while proc.poll() is None:
        found = list(Path(log_dir).glob("**/checkpoints/last.ckpt"))
        if found:
            try:
                now = found[0].stat().st_mtime_ns
            except FileNotFoundError:
                now = stamp
            if now != stamp:
                seen, stamp = seen + 1, now
            if seen >= kill_after:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return "killed"
        time.sleep(0.01)
    pytest.fail("the run ended before it could be killed")


def _result(log_dir):
    runs = sorted(Path(log_dir).glob("*/runs/*"))
    assert len(runs) == 1, runs  # one training, one run folder
    versions = list((runs[0] / "csv").glob("version_*"))
    assert len(versions) == 1, versions  # one CSV logger run
    ckpt = torch.load(runs[0] / "checkpoints" / "last.ckpt", weights_only=True)
    with open(versions[0] / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))
    return ckpt, rows


def _compare(full_dir, part_dir):
    a, rows_a = _result(full_dir)
    b, rows_b = _result(part_dir)
    assert a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        other = b["state_dict"][key]
        if value.is_floating_point():
            assert torch.allclose(value, other, atol=1e-6, rtol=0), key
        else:
            assert torch.equal(value, other), key
    assert rows_a[0] == rows_b[0] and len(rows_a) == len(rows_b)
    for ra, rb in zip(rows_a[1:], rows_b[1:], strict=True):
        for name, x, y in zip(rows_a[0], ra, rb, strict=True):
            if x != y:
                assert x and y and abs(float(x) - float(y)) <= 1e-6, (name, x, y)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classify", "sr"])
def test_kill_9_and_resume_equals_an_uninterrupted_run(tmp_path, tiny_world, tiny_stms, task):
    make = _classify_args if task == "classify" else _sr_args
    args = make(tiny_world, tiny_stms)
    _train(args, tmp_path / "full")
    kills = random.Random().randint(1, 4)  # a random checkpoint of the run (mid-epoch or not)
    assert _train(args, tmp_path / "part", kill_after=kills) == "killed"
    killed = torch.load(next((tmp_path / "part").glob("**/last.ckpt")), weights_only=True)
    out = _train([*args, "ckpt_path=last"], tmp_path / "part")
    assert "resuming run" in out
    assert killed["global_step"] < 12 or task == "classify", "killed after the end"
    _compare(tmp_path / "full", tmp_path / "part")


def test_ckpt_path_last_refuses_other_configs_and_truncated_files(tmp_path, tiny_world, tiny_stms):
    from bsrlc.training import train
    from tests.conftest import compose_train

    logs = tmp_path / "logs"
    args = _classify_args(tiny_world, tiny_stms, "trainer.max_epochs=1")
    run_dir = logs / "classify_demo" / "runs" / "first"
    cfg = compose_train([*args, f"paths.log_dir={logs}"], run_dir)
    train(cfg)
    assert (run_dir / "fingerprint.json").is_file()
    last = run_dir / "checkpoints" / "last.ckpt"

    def run(*extra):
        cmd = [
            sys.executable,
            "train.py",
            *args,
            f"paths.log_dir={logs}",
            f"hydra.run.dir={tmp_path / 'new'}",
            "ckpt_path=last",
            *extra,
        ]
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        assert res.returncode == 2, res.stderr[-3000:]
        assert "Traceback" not in res.stderr
        return res.stderr.strip().splitlines()[-1]

    line = run("model.optimizer.lr=0.01")
    assert line.startswith("error: ckpt_path=last: no run of classify_demo")
    assert str(run_dir) in line and "config differs: model.optimizer.lr" in line
    last.write_bytes(last.read_bytes()[:5000])  # a truncated checkpoint of the matching run
    line = run()
    assert line.startswith("error: ") and "last.ckpt: not a readable checkpoint" in line


def test_resumable_loader_skips_the_batches_already_trained():
    class Keys(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, key):
            return key[0]  # the index of the key (index, epoch, position)

    data = Keys()
    sampler = EpochSampler(len(data), seed=7)
    loader = ResumableLoader(data, sampler, batch_size=3, seed=7)
    sampler.set_epoch(2)
    full = [b.tolist() for b in loader]
    assert sorted(i for b in full for i in b) == list(range(10)) and len(full) == 4
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    assert state == {"epoch": 2, "batches": 1}
    again = ResumableLoader(data, EpochSampler(len(data), seed=7), batch_size=3, seed=7)
    again.load_state_dict(state)
    assert [b.tolist() for b in again] == full[1:]
    sampler.set_epoch(3)
    assert [b.tolist() for b in loader] != full  # a new order every epoch
    weighted = EpochSampler(4, seed=1, weights=[0.0, 0.0, 1.0, 0.0])
    assert {k[0] for k in weighted} == {2}
