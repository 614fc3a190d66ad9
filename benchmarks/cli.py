"""Seconds to answer ``--help`` and a typo'd override, per entry point, side by side.

    python benchmarks/cli.py [--quick] [--repeat 3]

Runs each entry point's ``--help`` in a fresh process (the median of ``--repeat`` runs), one
typo'd override of ``train.py`` (``trainer.max_epoch=3``: the one-line suggestion, exit 2),
and, as the yardstick on this machine, ``python -c "import torch"``. Whether each ``--help``
imported torch is read from ``-X importtime``. Prints human lines and, last, one JSON line:
{"benchmark": "cli", "train_help_s", "predict_help_s", "export_help_s", "stm_help_s",
"demo_world_help_s", "typo_s", "import_torch_s", "max_help_s", "help_imports_torch": {...}}.
Absolute times depend on the machine and its load; the goal is under 3 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ENTRIES: dict[str, list[str]] = {
    "train": ["train.py"],
    "predict": ["predict.py"],
    "export": ["-m", "bsrlc.export"],
    "stm": ["-m", "bsrlc.stm"],
    "demo_world": ["-m", "bsrlc.data.demo"],
}
"""Hydra entry points: name -> arguments of ``python`` that start it."""


def timed(args: list[str], repeat: int) -> tuple[float, subprocess.CompletedProcess[str]]:
    """The median wall time of ``python *args`` over ``repeat`` fresh processes.

    Args:
        args: the interpreter's arguments.
        repeat: how many runs.

    Returns:
        (median seconds, the last run's result).
    """
    times = []
    res: subprocess.CompletedProcess[str] | None = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = subprocess.run(
            [sys.executable, *args], capture_output=True, text=True, cwd=ROOT, check=False
        )
        times.append(time.perf_counter() - t0)
    assert res is not None
    return statistics.median(times), res


def imports_torch(args: list[str]) -> bool:
    """Whether ``python *args`` imports torch (from ``-X importtime`` on stderr).

    Args:
        args: the interpreter's arguments.

    Returns:
        True when a ``torch`` module was imported.
    """
    res = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    return any(line.split("|")[-1].strip() == "torch" for line in res.stderr.splitlines())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one run per entry point")
    ap.add_argument("--repeat", type=int, default=3, help="runs per entry point (median)")
    args = ap.parse_args()
    repeat = 1 if args.quick else max(1, args.repeat)

    torch_s, _ = timed(["-c", "import torch"], repeat)
    help_s: dict[str, float] = {}
    heavy: dict[str, bool] = {}
    for name, entry in ENTRIES.items():
        seconds, res = timed([*entry, "--help"], repeat)
        if res.returncode != 0:
            print(f"{name:<11} --help failed (exit {res.returncode}): {res.stderr[-200:]}")
            continue
        help_s[name] = seconds
        heavy[name] = imports_torch([*entry, "--help"])
    typo_s, typo = timed(["train.py", "trainer.max_epoch=3"], repeat)

    print(f"python -c 'import torch': {torch_s:6.2f} s   (the yardstick; median of {repeat})")
    for name, seconds in help_s.items():
        torch_note = "imports torch" if heavy[name] else "no torch"
        print(f"{name:<11} --help:     {seconds:6.2f} s   {torch_note}")
    line = typo.stderr.strip().splitlines()[-1] if typo.stderr.strip() else ""
    print(f"train.py trainer.max_epoch=3: {typo_s:6.2f} s   exit {typo.returncode}: {line}")
    print(
        json.dumps(
            {
                "benchmark": "cli",
                **{f"{name}_help_s": round(s, 2) for name, s in help_s.items()},
                "typo_s": round(typo_s, 2),
                "typo_exit": typo.returncode,
                "import_torch_s": round(torch_s, 2),
                "max_help_s": round(max(help_s.values(), default=float("nan")), 2),
                "help_imports_torch": heavy,
                "repeat": repeat,
            }
        )
    )


if __name__ == "__main__":
    main()
