"""benchmarks/gpu.py: its --quick run on the CPU, the no-CUDA refusal and the stage runner."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _alive(pid: int) -> bool:
    """A process that exists and is no zombie (PID 1 of a container may not reap)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state


def test_runner_times_out_kills_the_group_and_goes_on(tmp_path):
    """A stage past its limit is killed with every process it started and recorded as timed
    out; a failing stage is recorded with its error line; the next stage still runs."""
    mod = _module()
    runner = mod.Runner(tmp_path, budget=120, env=dict(os.environ))
    pidfile = tmp_path / "grandchild.pid"
    hang = (
        "import subprocess, sys, time; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
        f"open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(300)"
    )
    t0 = time.perf_counter()
    assert runner.run("inputs", [sys.executable, "-c", hang], limit=3) is None
    assert time.perf_counter() - t0 < 30
    st = runner.stages["inputs"]
    assert st["ok"] is False and st["error"].startswith("timed out after 3 s")
    grandchild = int(pidfile.read_text())
    for _ in range(50):
        if not _alive(grandchild):
            break
        time.sleep(0.1)
    assert not _alive(grandchild)

    fail = "import sys; print('working'); sys.exit('ValueError: bad input raster')"
    assert runner.run("sr_predict", [sys.executable, "-c", fail], limit=30) is None
    st = runner.stages["sr_predict"]
    assert st["ok"] is False and "exit status 1" in st["error"] and "bad input" in st["error"]

    good = "import json; print('log line'); print(json.dumps({'mpx_s': 2.5}))"
    assert runner.run("classify_predict", [sys.executable, "-c", good], limit=30) == {"mpx_s": 2.5}
    assert runner.stages["classify_predict"]["ok"] is True
    assert (tmp_path / "classify_predict.log").exists()


def test_runner_budget_caps_the_stages(tmp_path):
    """With no time left in the budget a stage is not started and says why."""
    mod = _module()
    runner = mod.Runner(tmp_path, budget=5, env=dict(os.environ))
    assert runner.run("ddp", [sys.executable, "-c", "print(1)"]) is None
    assert runner.stages["ddp"] == {
        "ok": False,
        "wall_s": 0.0,
        "cpu_s": 0.0,
        "error": "no time left in --budget",
    }


def test_no_cuda_without_quick_is_one_line():
    """Without a CUDA device a full run is refused in one line that suggests --quick."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "no CUDA device" in err and "--quick" in err


@pytest.mark.slow
def test_gpu_benchmark_quick_json(tmp_path):
    """--quick runs every stage on the CPU at tiny sizes (DDP on 2 CPU processes): all stages
    succeed, the JSON last line holds positive training rates for both precisions and phases,
    positive prediction Mpx/s, the DDP rate, and is the same as --out's result.json."""
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = proc.stdout.strip().splitlines()[-1]
    res = json.loads(line)
    assert res["benchmark"] == "gpu" and res["quick"] is True and res["device"] == "cpu"
    assert set(res["stages"]) == {
        "inputs",
        "train_fp32",
        "train_bf16",
        "classify_train",
        "sr_predict",
        "classify_predict",
        "ddp",
    }
    for name, st in res["stages"].items():
        assert st["ok"] is True and st["error"] is None, (name, st)
        assert st["wall_s"] > 0, name
    tr = res["sr_train"]
    for key in ("fp32_steps_s", "bf16_steps_s", "fp32_gan_steps_s", "bf16_gan_steps_s"):
        assert tr[key] > 0, key
    assert tr["bf16_speedup"] == pytest.approx(tr["bf16_steps_s"] / tr["fp32_steps_s"], rel=0.01)
    assert tr["batch_size"] == 4 and tr["full_recipe_h"] > 0
    assert tr["peak_mem_gb"] is None  # no CUDA: no GPU memory
    assert res["sr_predict_mpx_s"] > 0 and res["classify_predict_mpx_s"] > 0
    # the 64 px 30 m raster super-resolved to 192 px; the 192 px 10 m raster classified
    assert res["sr_predict_output_mpx"] == pytest.approx(192 * 192 / 1e6, abs=1e-3)
    assert res["classify_predict_output_mpx"] == pytest.approx(192 * 192 / 1e6, abs=1e-3)
    assert res["ddp"]["devices"] == 2 and res["ddp"]["world_size"] == 2
    assert res["ddp"]["l1_steps_s"] > 0
    assert (tmp_path / "out" / "result.json").read_text().strip() == line


def test_sigterm_ends_the_stage_and_still_prints_the_json(tmp_path):
    """SIGTERM (an outer `timeout`) while a training stage runs: that stage is ended, the later
    ones are not started, and the JSON line still comes, with the inputs stage ok."""
    import signal

    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env=env,
    )
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "train_fp32 (limit" in line:
                time.sleep(2)
                proc.send_signal(signal.SIGTERM)
                break
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    res = json.loads(rest.strip().splitlines()[-1])
    stages = res["stages"]
    assert stages["inputs"]["ok"] is True
    assert stages["train_fp32"]["ok"] is False
    assert stages["train_fp32"]["error"] == "stopped by SIGTERM"
    for name in ("train_bf16", "classify_train"):
        assert stages[name]["error"] == "stopped by SIGTERM", name
    assert res["sr_train"]["fp32_steps_s"] is None
