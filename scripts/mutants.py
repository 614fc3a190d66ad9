"""Prove the fast tests bite: apply deliberate breaks to a scratch copy and run the tests.

Each mutant replaces exact strings in one file of a scratch copy of the repository (``git archive
HEAD``, or the working tree with ``--worktree``), runs the fast tests that should catch it
(``pytest -x -q -m "not slow"``, learning tests first so a killed mutant stops early) with this
interpreter (the project's venv), and counts it killed when they fail. A replacement target that
is not in the file exactly once stops the script before anything runs: when the code moves, the
mutant must be updated, not silently test nothing.

    make mutants                      # or: .venv/bin/python scripts/mutants.py [--only NAME]

Prints one line per mutant and, last, ``{"mutants": n, "killed": k}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEARNING = "tests/test_learning.py"


@dataclass(frozen=True)
class Mutant:
    """One deliberate break: exact (old, new) replacements in one file, and the tests to run."""

    name: str
    path: str
    edits: tuple[tuple[str, str], ...]
    tests: tuple[str, ...]


MUTANTS = [
    Mutant(
        "zeroed input (classification patch reader)",
        "bsrlc/data/classify.py",
        (("        x = (x - self.mean) / self.std\n", "        x = 0.0 * (x - self.mean)\n"),),
        (f"{LEARNING}::test_classifier_beats_chance_on_held_out_points",),
    ),
    Mutant(
        "shuffled training labels",
        "bsrlc/data/classify.py",
        (
            (
                "                        s.labels[m],\n                        self.patch_size,\n",
                "                        np.random.default_rng(0).permutation(s.labels[m])\n"
                '                        if name == "train"\n'
                "                        else s.labels[m],\n"
                "                        self.patch_size,\n",
            ),
        ),
        (f"{LEARNING}::test_classifier_beats_chance_on_held_out_points",),
    ),
    Mutant(
        "dense classification tile read one pixel off",
        "bsrlc/inference/dense.py",
        (
            (
                "    r0, c0 = int(window.row_off) - halo, int(window.col_off) - halo\n"
                "    r1 = int(window.row_off + window.height) + halo\n",
                "    r0, c0 = int(window.row_off) - halo + 1, int(window.col_off) - halo\n"
                "    r1 = int(window.row_off + window.height) + halo + 1\n",
            ),
        ),
        (
            f"{LEARNING}::test_dense_map_agrees_with_patches_at_points",
            "tests/test_predict_export.py::test_tiled_map_equals_one_pass_and_per_patch",
        ),
    ),
    Mutant(
        "two bands swapped in the band lookup",
        "bsrlc/raster.py",
        (
            (
                "    return [lookup[n] for n in names]\n",
                "    out = [lookup[n] for n in names]\n"
                "    if len(out) > 3:\n"
                "        out[0], out[3] = out[3], out[0]\n"
                "    return out\n",
            ),
        ),
        (
            f"{LEARNING}::test_dense_map_agrees_with_patches_at_points",
            "tests/test_raster_chips.py",
        ),
    ),
    Mutant(
        "SR L1 content loss replaced by zero",
        "bsrlc/tasks/sr.py",
        (("        loss_l1 = F.l1_loss(sr, hr)\n", "        loss_l1 = 0.0 * F.l1_loss(sr, hr)\n"),),
        (f"{LEARNING}::test_sr_beats_bicubic_on_held_out_patches",),
    ),
]


def scratch_copy(dest: Path, worktree: bool) -> None:
    """The repository at HEAD (or its working tree: tracked and untracked, not ignored)."""
    if worktree:
        files = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        ).stdout.split(b"\0")
        for name in filter(None, (f.decode() for f in files)):
            src = ROOT / name
            if src.is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / name)
        return
    archive = subprocess.run(
        ["git", "archive", "--format=tar", "HEAD"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)


def check_targets(copy: Path, mutants: list[Mutant]) -> None:
    """Refuse to run when a replacement target is missing or ambiguous."""
    problems = []
    for m in mutants:
        text = (copy / m.path).read_text()
        for old, _ in m.edits:
            n = text.count(old)
            if n != 1:
                problems.append(f"{m.name}: target found {n} times in {m.path}: {old!r}")
        for test in m.tests:
            if not (copy / test.split("::")[0]).exists():
                problems.append(f"{m.name}: test file {test} does not exist")
            elif "::" in test:
                fn = test.split("::")[1].split("[")[0]
                if f"def {fn}(" not in (copy / test.split("::")[0]).read_text():
                    problems.append(f"{m.name}: test {test} does not exist")
    if problems:
        sys.exit("mutants: the code moved; update scripts/mutants.py:\n  " + "\n  ".join(problems))


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float, env: dict) -> tuple[str, str]:
    """('passed' | 'failed' | 'timeout', the last lines of the output)."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-m", "not slow", "-p", "no:cacheprovider"]
    try:
        res = subprocess.run(
            [*cmd, *tests], cwd=copy, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return "timeout", ""
    tail = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.strip()][-3:]
    return ("passed" if res.returncode == 0 else "failed"), " | ".join(tail)


def main() -> None:
    """Apply each mutant in turn to one scratch copy and report which the tests catch."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worktree", action="store_true", help="copy the working tree, not HEAD")
    parser.add_argument("--only", help="run the mutants whose name contains this")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per mutant")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy")
    args = parser.parse_args()
    mutants = [m for m in MUTANTS if not args.only or args.only in m.name]
    if not mutants:
        sys.exit(f"mutants: no mutant name contains {args.only!r}")
    tmp = Path(tempfile.mkdtemp(prefix="bsrlc-mutants-"))
    copy = tmp / "repo"
    copy.mkdir()
    try:
        scratch_copy(copy, args.worktree)
        check_targets(copy, mutants)
        env = {
            **os.environ,
            "PYTHONPATH": str(copy),  # ahead of the venv's editable install of this checkout
            "BSRLC_CACHE": str(tmp / "chips"),
            "WANDB_MODE": "offline",
            "WANDB_SILENT": "true",
        }
        where = subprocess.run(
            [sys.executable, "-c", "import bsrlc; print(bsrlc.__file__)"],
            cwd=copy,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if not Path(where).resolve().is_relative_to(copy.resolve()):
            sys.exit(f"mutants: the scratch copy imports bsrlc from {where}, not from {copy}")
        print(f"scratch copy of {'the working tree' if args.worktree else 'HEAD'}: {copy}")
        if not args.no_baseline:
            tests = tuple(dict.fromkeys(t for m in mutants for t in m.tests))
            t0 = time.monotonic()
            outcome, tail = run_tests(copy, tests, args.timeout * 2, env)
            print(f"baseline (no mutant): {outcome} in {time.monotonic() - t0:.0f} s")
            if outcome != "passed":
                sys.exit(f"mutants: the tests fail without a mutant, so kills mean nothing: {tail}")
        killed = 0
        for m in mutants:
            target = copy / m.path
            original = target.read_text()
            text = original
            for old, new in m.edits:
                text = text.replace(old, new)
            target.write_text(text)
            t0 = time.monotonic()
            try:
                outcome, tail = run_tests(copy, m.tests, args.timeout, env)
            finally:
                target.write_text(original)
            dead = outcome in {"failed", "timeout"}
            killed += dead
            verdict = "killed" if dead else "SURVIVED"
            extra = " (timeout)" if outcome == "timeout" else ""
            print(f"{verdict}{extra}: {m.name} [{time.monotonic() - t0:.0f} s] {tail}", flush=True)
        print(json.dumps({"mutants": len(mutants), "killed": killed}))
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
