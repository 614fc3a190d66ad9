"""Fault injection: kill -9, full disk, concurrent runs, truncated checkpoints, odd inputs.

Every case runs the real command lines as subprocesses on tiny generated inputs (the tiny demo
world, a few Collection 2 style scenes) and compares what they leave with an uninterrupted run:

- ``kill_*``: ``kill -9`` at seeded random points of ``python -m bsrlc.stm`` (tiled ingest of C2
  scenes, and the same-grid path of the demo world's scenes), ``train.py`` (tiny classifier and
  tiny SR model; resumed with ``ckpt_path=last``) and ``predict.py`` (``sr+classify``). A trial
  kills a run, kills its rerun up to ``--chain`` times in all, then reruns it to the end and
  compares with the uninterrupted run: rasters pixel for pixel (and their grid, bands, tags),
  training by final weights (within 1e-6) and ``metrics.csv`` rows.
- ``disk_full``: ``predict.py`` and the tiled ingest writing to a small tmpfs (``mount -t tmpfs``;
  without the right to mount, an ENOSPC simulated in the predict subprocess) filled to several
  levels: a run that fails must say so in one line naming the folder and the free space, leave
  no temporary file, and the rerun once space is freed must equal the uninterrupted output.
- ``concurrent``: two ``predict.py`` on one ``out_dir``: both finish, or one stops in one line.
- ``truncated_ckpt``: a truncated ``last.ckpt`` resumed with ``ckpt_path=last``, and a truncated
  model/SR model given to ``predict.py``: one-line errors, no traceback.
- ``rewritten_input``: an input rewritten with other content and its old mtime (``cp -p``,
  ``os.utime``) after a kill: the rerun must equal a fresh run on the new content (predict's
  tile store; the tiled ingest's finished tiles).
- ``odd_rasters``: EPSG:4326 degrees, 10 m x 20 m pixels, south-up, all saturated, all nodata,
  7 x 7 px given to ``predict.py``: refused or warned about (a warning on stderr); rc 0 with no
  warning on stderr counts as a silent input.

Counted per case: kills, resumed_equal (final output equal to the uninterrupted run), clear_error
(a one-line ``error:`` and exit status 2), lost_data (a rerun that ends unequal or fails),
tracebacks (``Traceback (most recent call last)`` on stderr of any run), leftovers (temporary
files or folders left after the case: ``*.partial*``, ``*.tmp*``, ``*.stage*``, lock files,
finished tile stores, new ``bsrlc-bundle-*`` in the temp folder), silent_inputs.

    make faults                                 # 20 kills per program (slow: about an hour)
    .venv/bin/python scripts/faults.py --quick  # 3 kills per program
    .venv/bin/python scripts/faults.py --cases odd_rasters,truncated_ckpt --kills 5

Writes ``outputs/faults/report.json``, prints a table and, last, the report as one JSON line.
Exit status 0 when no case found a traceback, a leftover, lost data or a silent input, else 1.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
TRACEBACK = "Traceback (most recent call last)"
COUNTERS = (
    "kills",
    "resumed_equal",
    "clear_error",
    "lost_data",
    "tracebacks",
    "leftovers",
    "silent_inputs",
)
TEMP_PATTERNS = ("*.partial*", "*.tmp*", "*.stage*", "*.lock")
"""File or folder names a finished (or cleanly failed) run must not leave behind."""
STORE_PATTERNS = (".*.tiles", ".*.tiles.*")
"""Tile stores of predict.py: kept on purpose after a failure, gone after success."""
RUN_TIMEOUT = 900
CASES = (
    "kill_stm_tiled",
    "kill_stm_grid",
    "kill_train_cls",
    "kill_train_sr",
    "kill_predict",
    "disk_full",
    "concurrent",
    "truncated_ckpt",
    "rewritten_input",
    "odd_rasters",
)


# -- processes -------------------------------------------------------------------------------


@dataclass
class Run:
    """One finished (or killed) command."""

    cmd: list[str]
    rc: int | None
    out: str
    err: str
    seconds: float
    killed: bool = False

    @property
    def lines(self) -> list[str]:
        """Non-empty stderr lines."""
        return [ln for ln in self.err.splitlines() if ln.strip()]

    @property
    def last_line(self) -> str:
        """The last stderr line."""
        return self.lines[-1] if self.lines else ""

    @property
    def clear_error(self) -> bool:
        """Stopped with a one-line ``error: ...`` (exit status 2), no traceback."""
        return self.rc == 2 and self.last_line.startswith("error: ") and TRACEBACK not in self.err

    def tail(self, n: int = 1200) -> str:
        """The end of stderr."""
        return self.err[-n:]

    def shell(self) -> str:
        """The command as one shell line (relative to the repository root)."""
        import shlex

        return " ".join(shlex.quote(c) for c in self.cmd)


def environment(work: Path) -> dict[str, str]:
    """The environment of every subprocess: runs and caches inside the work folder."""
    return {
        **os.environ,
        "BSRLC_ROOT": str(work / "root"),
        "BSRLC_CACHE": str(work / "cache"),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL what is left of a process we started in its own session (loader workers)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def execute(
    cmd: Sequence[str],
    env: dict[str, str],
    trigger: Callable[[float], bool] | None = None,
    timeout: float = RUN_TIMEOUT,
) -> Run:
    """Run ``cmd`` from the repository root; with ``trigger``, SIGKILL it once trigger(elapsed).

    Only the process itself is killed, as ``kill -9 PID`` would; what it started (data loader
    workers) is killed afterwards, once it is gone.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            list(cmd), cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True
        )
        killed = False
        try:
            while proc.poll() is None:
                elapsed = time.monotonic() - t0
                if elapsed > timeout:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                    err.write(f"\n[faults] timed out after {timeout:.0f} s\n")
                    break
                if trigger is not None and trigger(elapsed):
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                    killed = True
                    break
                time.sleep(0.02)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
            _kill_group(proc)
        seconds = time.monotonic() - t0
        out.seek(0)
        err.seek(0)
        return Run(list(cmd), proc.returncode, out.read(), err.read(), seconds, killed)


def at_time(seconds: float) -> Callable[[float], bool]:
    """A trigger: kill after ``seconds``."""
    return lambda elapsed: elapsed >= seconds


class AfterChanges:
    """A trigger: kill ``delay`` seconds after ``watch()`` changed ``n`` times (or at ``limit``).

    Args:
        watch: returns something comparable (e.g. a checkpoint's mtime, a count of files).
        n: changes to wait for.
        delay: seconds after the n-th change.
        limit: kill at this elapsed time anyway (None: never).
    """

    def __init__(
        self, watch: Callable[[], Any], n: int, delay: float, limit: float | None = None
    ) -> None:
        self.watch, self.n, self.delay, self.limit = watch, n, delay, limit
        self.last = watch()
        self.seen = 0
        self.when: float | None = None

    def __call__(self, elapsed: float) -> bool:
        """Whether to kill now."""
        if self.limit is not None and elapsed >= self.limit:
            return True
        if self.when is None:
            now = self.watch()
            if now != self.last:
                self.seen, self.last = self.seen + 1, now
            if self.seen >= self.n:
                self.when = elapsed + self.delay
            return False
        return elapsed >= self.when


def mtime_of(pattern: str, root: Path) -> Callable[[], int | None]:
    """A watch: the newest mtime of files matching ``pattern`` under ``root``."""

    def watch() -> int | None:
        stamps = []
        for p in root.glob(pattern):
            try:
                stamps.append(p.stat().st_mtime_ns)
            except FileNotFoundError:
                pass
        return max(stamps) if stamps else None

    return watch


def count_of(pattern: str, root: Path) -> Callable[[], int]:
    """A watch: how many files match ``pattern`` under ``root``."""
    return lambda: len(list(root.glob(pattern)))


# -- what runs leave -------------------------------------------------------------------------


def leftovers(*roots: Path, store_ok: bool = False) -> list[Path]:
    """Temporary files and folders under ``roots`` (hidden ones too).

    Args:
        roots: folders to scan.
        store_ok: a predict tile store is expected (a run that stopped keeps its finished tiles
            for the rerun); its temporary files still count.
    """
    found: list[Path] = []
    for root in roots:
        if not root.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            for name in [*dirnames, *filenames]:
                path = Path(dirpath) / name
                if any(fnmatch.fnmatch(name, p) for p in TEMP_PATTERNS):
                    found.append(path)
                elif not store_ok and any(fnmatch.fnmatch(name, p) for p in STORE_PATTERNS):
                    found.append(path)
    return sorted(set(found))


def bundle_dirs() -> set[str]:
    """``bsrlc-bundle-*`` folders in the temp folder (export's scratch)."""
    return {p.name for p in Path(tempfile.gettempdir()).glob("bsrlc-bundle-*")}


# -- comparisons -----------------------------------------------------------------------------


def raster_diff(a: Path, b: Path) -> str | None:
    """Why two rasters differ (grid, bands, tags, pixels), or None if they are equal."""
    import numpy as np
    import rasterio

    with rasterio.open(a) as x, rasterio.open(b) as y:
        for attr in ("count", "width", "height", "dtypes", "nodata", "descriptions"):
            if getattr(x, attr) != getattr(y, attr):
                return f"{attr} {getattr(x, attr)} != {getattr(y, attr)}"
        if x.crs != y.crs or not x.transform.almost_equals(y.transform, 1e-9):
            return "grid"
        if x.tags() != y.tags():
            keys = sorted(
                k for k in set(x.tags()) | set(y.tags()) if x.tags().get(k) != y.tags().get(k)
            )
            return f"tags {keys}"
        u, v = x.read(), y.read()
    if not np.array_equal(u, v, equal_nan=u.dtype.kind == "f"):
        n = int((u != v).sum())
        return f"{n} of {u.size} values differ"
    return None


def dirs_diff(ref: Path, out: Path, patterns: Sequence[str]) -> str | None:
    """Why the files matching ``patterns`` differ between two folders, or None.

    Rasters (``.tif``, ``.vrt``) are compared by grid, bands, tags and pixels; other files by
    content. Temporary files are left out (:func:`leftovers` counts them).
    """
    names: dict[str, set[str]] = {}
    for side, root in (("ref", ref), ("out", out)):
        names[side] = {
            str(p.relative_to(root))
            for pat in patterns
            for p in root.glob(pat)
            if p.is_file() and not any(fnmatch.fnmatch(p.name, t) for t in TEMP_PATTERNS)
        }
    if names["ref"] != names["out"]:
        return (
            f"files: missing {sorted(names['ref'] - names['out'])}, "
            f"extra {sorted(names['out'] - names['ref'])}"
        )
    if not names["ref"]:
        return "no output"
    for name in sorted(names["ref"]):
        a, b = ref / name, out / name
        if a.suffix.lower() in (".tif", ".vrt"):
            why = raster_diff(a, b)
        else:
            why = None if a.read_bytes() == b.read_bytes() else "content"
        if why:
            return f"{name}: {why}"
    return None


def train_result(log_dir: Path) -> tuple[dict[str, Any], list[list[str]], Path]:
    """The final checkpoint and metrics.csv rows of the one run under ``log_dir``."""
    import torch

    runs = sorted({p.parent.parent for p in log_dir.glob("*/runs/*/checkpoints/last.ckpt")})
    if len(runs) != 1:
        raise ValueError(f"{len(runs)} run folders with a last.ckpt under {log_dir}")
    versions = list((runs[0] / "csv").glob("version_*"))
    if len(versions) != 1:
        raise ValueError(f"{len(versions)} CSV logger versions in {runs[0]}")
    ckpt = torch.load(runs[0] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    with open(versions[0] / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))
    return ckpt, rows, runs[0]


def train_diff(ref: Path, out: Path, atol: float = 1e-6) -> str | None:
    """Why a (resumed) training run differs from the reference: weights, step, metrics rows."""
    import torch

    try:
        a, rows_a, _ = train_result(ref)
        b, rows_b, _ = train_result(out)
    except (ValueError, OSError, RuntimeError) as err:
        return str(err).splitlines()[0]
    if a["global_step"] != b["global_step"]:
        return f"global_step {a['global_step']} != {b['global_step']}"
    if a["state_dict"].keys() != b["state_dict"].keys():
        return "state_dict keys"
    for key, value in a["state_dict"].items():
        other = b["state_dict"][key]
        if value.is_floating_point():
            if not torch.allclose(value, other, atol=atol, rtol=0):
                return f"weights {key}: max diff {(value - other).abs().max().item():.3g}"
        elif not torch.equal(value, other):
            return f"buffer {key}"
    if rows_a[:1] != rows_b[:1] or len(rows_a) != len(rows_b):
        return f"metrics.csv: {len(rows_a)} rows != {len(rows_b)} (or other columns)"
    for i, (ra, rb) in enumerate(zip(rows_a[1:], rows_b[1:], strict=True), start=2):
        for name, x, y in zip(rows_a[0], ra, rb, strict=True):
            if x != y and not (x and y and abs(float(x) - float(y)) <= atol):
                return f"metrics.csv row {i} {name}: {x} != {y}"
    return None


# -- bookkeeping -----------------------------------------------------------------------------


@dataclass
class Case:
    """Counts and findings of one case."""

    name: str
    n: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    extra: dict[str, Any] = field(default_factory=dict)
    findings: list[dict[str, Any]] = field(default_factory=list)
    trials: list[dict[str, Any]] = field(default_factory=list)
    runs: int = 0
    seconds: float = 0.0

    def add(self, key: str, k: int = 1) -> None:
        """Count ``k`` under ``key``."""
        if key in self.n:
            self.n[key] += k
        else:
            self.extra[key] = self.extra.get(key, 0) + k

    def check(self, run: Run, what: str = "") -> Run:
        """Count a run and a traceback in its stderr."""
        self.runs += 1
        if TRACEBACK in run.err:
            self.add("tracebacks")
            self.finding("traceback", run, what)
        return run

    def finding(self, kind: str, run: Run | None = None, note: str = "") -> None:
        """Record a problem (with the command and the end of its stderr)."""
        item: dict[str, Any] = {"kind": kind, "note": note}
        if run is not None:
            item.update(command=run.shell(), rc=run.rc, stderr_tail=run.tail())
        self.findings.append(item)

    def scan(self, *roots: Path, store_ok: bool = False, note: str = "") -> list[Path]:
        """Count (and record) temporary files left under ``roots``."""
        found = leftovers(*roots, store_ok=store_ok)
        if found:
            self.add("leftovers", len(found))
            self.finding("leftover", note=f"{note}: {[str(p) for p in found]}".lstrip(": "))
        return found

    def report(self) -> dict[str, Any]:
        """The case's part of report.json."""
        return {
            **self.n,
            **self.extra,
            "runs": self.runs,
            "seconds": round(self.seconds, 1),
            "trials": self.trials,
            "findings": self.findings,
        }


# -- inputs ----------------------------------------------------------------------------------

C2_CLEAR = 21824  # QA_PIXEL of a clear land pixel
C2_FILL = 1
C2_BANDS = (2, 3, 4, 5, 6, 7)  # SR_B2..SR_B7 of Landsat 8/9
C2_DATES = ("2020-05-10", "2020-06-27", "2020-08-14")
C2_AREA = (17.97, 49.98, 18.03, 50.02)  # lon/lat box: about 4 x 4 km
MTL = """GROUP = LANDSAT_METADATA_FILE
  GROUP = PRODUCT_CONTENTS
    LANDSAT_PRODUCT_ID = "{pid}"
    PROCESSING_LEVEL = "L2SP"
    COLLECTION_NUMBER = 02
{files}
    FILE_NAME_QUALITY_L1_PIXEL = "{pid}_QA_PIXEL.TIF"
    FILE_NAME_QUALITY_L1_RADIOMETRIC_SATURATION = "{pid}_QA_RADSAT.TIF"
  END_GROUP = PRODUCT_CONTENTS
  GROUP = IMAGE_ATTRIBUTES
    SPACECRAFT_ID = "LANDSAT_8"
    DATE_ACQUIRED = {date}
  END_GROUP = IMAGE_ATTRIBUTES
  GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS
{params}
  END_GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS
END_GROUP = LANDSAT_METADATA_FILE
END
"""


def _write_band(
    path: Path, data: Any, crs: str, transform: Any, nodata: float | None = None
) -> None:
    import rasterio

    profile = {
        "driver": "GTiff",
        "width": data.shape[1],
        "height": data.shape[0],
        "count": 1,
        "dtype": data.dtype,
        "nodata": nodata,
        "crs": crs,
        "transform": transform,
        "tiled": True,
        "blockxsize": 64,
        "blockysize": 64,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)


def c2_scenes(folder: Path) -> Path:
    """Collection 2 Level-2 style scenes (SR bands, QA_PIXEL, QA_RADSAT, MTL) of a small area.

    Three dates on UTM 33 (path 190) and the day after each on UTM 34 (path 189), overlapping
    across 18 E: the tiled ingest warps both zones onto its grid. As tests/test_stm_archive.py,
    on a smaller area.
    """
    import numpy as np
    from affine import Affine
    from pyproj import Transformer

    folder.mkdir(parents=True, exist_ok=True)
    for zone, lons, path_row, shift in (
        (33, (C2_AREA[0] - 0.02, 18.015), "190025", 0),
        (34, (17.985, C2_AREA[2] + 0.02), "189025", 1),
    ):
        epsg = 32600 + zone
        to_utm = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
        xs, ys = to_utm.transform(
            [lons[0], lons[1], lons[0], lons[1]],
            [C2_AREA[1] - 0.02, C2_AREA[1] - 0.02, C2_AREA[3] + 0.02, C2_AREA[3] + 0.02],
        )
        x0, x1 = np.floor(min(xs) / 30) * 30 + 15, np.ceil(max(xs) / 30) * 30 + 15
        y0, y1 = np.floor(min(ys) / 30) * 30 + 15, np.ceil(max(ys) / 30) * 30 + 15
        w, h = int((x1 - x0) / 30), int((y1 - y0) / 30)
        transform = Affine(30, 0, x0, 0, -30, y1)
        rows, cols = np.mgrid[0:h, 0:w]
        x, y = transform * (cols + 0.5, rows + 0.5)
        to_ll = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:3035", always_xy=True)
        ex, ey = to_ll.transform(x, y)  # one field in EPSG:3035 metres for both zones
        for k, date in enumerate(C2_DATES):
            day = np.datetime64(date) + np.timedelta64(shift, "D")
            pid = f"LC08_L2SP_{path_row}_{str(day).replace('-', '')}_20200901_02_T1"
            scene = folder / pid
            scene.mkdir(exist_ok=True)
            for b, n in enumerate(C2_BANDS):
                v = (
                    15000
                    + 600 * b
                    + 1000 * k * (b % 3 - 1)
                    + 3000 * np.sin(2 * np.pi * ex / 4000.0 + k) * np.cos(2 * np.pi * ey / 3000.0)
                    + 1500 * np.sin(2 * np.pi * (ex + ey) / 2500.0 + b + 2 * k)
                )
                _write_band(
                    scene / f"{pid}_SR_B{n}.TIF",
                    np.round(v).astype(np.uint16),
                    f"EPSG:{epsg}",
                    transform,
                )
            qa = np.full((h, w), C2_CLEAR, np.uint16)
            qa[:2] = C2_FILL  # a fill edge, as scenes have
            _write_band(scene / f"{pid}_QA_PIXEL.TIF", qa, f"EPSG:{epsg}", transform, 1)
            _write_band(
                scene / f"{pid}_QA_RADSAT.TIF",
                np.zeros((h, w), np.uint16),
                f"EPSG:{epsg}",
                transform,
            )
            (scene / f"{pid}_MTL.txt").write_text(
                MTL.format(
                    pid=pid,
                    date=str(day),
                    files="\n".join(
                        f'    FILE_NAME_BAND_{n} = "{pid}_SR_B{n}.TIF"' for n in C2_BANDS
                    ),
                    params="\n".join(
                        f"    REFLECTANCE_MULT_BAND_{n} = 2.75e-05\n"
                        f"    REFLECTANCE_ADD_BAND_{n} = -0.2"
                        for n in range(1, 8)
                    ),
                )
            )
    return folder


# -- the suite -------------------------------------------------------------------------------


@dataclass
class Reference:
    """An uninterrupted run: where it wrote, how long it took."""

    path: Path
    seconds: float
    first: float = 0.0  # train: seconds until the first last.ckpt
    writes: int = 0  # train: last.ckpt writes seen


class Suite:
    """Inputs, uninterrupted reference runs (made when a case first needs them) and the cases.

    Args:
        work: the work folder (emptied first).
        kills: kills per program.
        seed: the random seed of kill points and choices.
        chain: kills per trial at most (a killed rerun is killed again).
        quick: fewer fill levels and rounds.
    """

    def __init__(
        self, work: Path, kills: int = 20, seed: int = 0, chain: int = 3, quick: bool = False
    ) -> None:
        self.work = work
        self.kills, self.chain, self.quick = kills, max(1, chain), quick
        self.rng = random.Random(seed)
        self.env = environment(work)
        self.refs: dict[str, Reference] = {}
        self._world: Any = None
        self._stms: dict[str, dict[str, Path]] | None = None
        self._c2: Path | None = None
        self.checkpoints: dict[str, Path] = {}
        self.log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)

    # inputs

    @property
    def world(self) -> Any:
        """The tiny demo world."""
        if self._world is None:
            from bsrlc.data.demo import generate

            self._world = generate("tiny", self.work / "world" / "tiny")
        return self._world

    @property
    def stms(self) -> dict[str, dict[str, Path]]:
        """The tiny world's STMs: {sensor: {period: path}}."""
        if self._stms is None:
            from bsrlc.demo import build_stms

            self._stms = build_stms(self.world, progress=False)
        return self._stms

    @property
    def c2(self) -> Path:
        """The folder of C2 scenes."""
        if self._c2 is None:
            self._c2 = c2_scenes(self.work / "c2")
        return self._c2

    # command lines

    def stm_tiled_cmd(self, out: Path, scenes: Path | None = None) -> list[str]:
        """The tiled ingest of the C2 scenes (6 tiles of 100 px)."""
        return [
            PY,
            "-m",
            "bsrlc.stm",
            "source=landsat_c2",
            f"scenes={scenes or self.c2}",
            "grid.crs=EPSG:3035",
            "grid.resolution=30",
            "grid.tile_size=3000",
            f"grid.bounds={self._c2_bounds()}",
            "periods={2020:[2020-01-01,2020-12-31]}",
            "metrics=[p50,mean,std,count]",
            "indices=[NDVI]",
            "block_size=50",
            f"out_dir={out}",
            "progress=false",
        ]

    def _c2_bounds(self) -> str:
        from pyproj import Transformer

        t = Transformer.from_crs("EPSG:4326", "EPSG:3035", always_xy=True)
        xs, ys = t.transform([C2_AREA[0], C2_AREA[2]], [C2_AREA[1], C2_AREA[3]])
        return f"[{min(xs):.0f},{min(ys):.0f},{max(xs):.0f},{max(ys):.0f}]"

    def stm_grid_cmd(self, out: Path) -> list[str]:
        """The same-grid path: the tiny world's Landsat scenes, two periods."""
        return [
            PY,
            "-m",
            "bsrlc.stm",
            "sensor=demo_landsat",
            f"scenes={self.world.root / 'scenes' / 'landsat'}",
            "periods={2019:[2018-01-01,2020-12-31],2013:[2012-01-01,2014-12-31]}",
            "metrics=[min,p25,p50,p75,max,mean,std,count]",
            "indices=[NDVI,NDBI]",
            f"out_dir={out}",
            "progress=false",
        ]

    def train_args(self, task: str) -> list[str]:
        """A tiny classifier or SR training (``last.ckpt`` after every step it can be)."""
        w, s = self.world, self.stms
        if task == "cls":
            return [
                "experiment=classify_demo",
                f"data.raster={s['sentinel2']['2019']}",
                f"data.points={w.root / 'points' / 'points_2019.gpkg'}",
                "data.cache_dir=null",
                "data.batch_size=32",
                "data.block_size=32",
                "logger=csv",
                "trainer.max_epochs=3",
                "trainer.log_every_n_steps=3",
                "model.net.channels=[8,8,8,8,8,8]",
                "callbacks.model_checkpoint.last_every_n_train_steps=1",
                "test=false",
            ]
        return [
            "experiment=sr_demo",
            f"data.lr_path={s['landsat']['2019']}",
            f"data.hr_path={s['sentinel2']['2019']}",
            f"data.test_region={w.root / 'regions.geojson'}",
            "data.patch_size=16",
            "data.batch_size=4",
            "data.samples_per_epoch=16",
            "data.cache_dir=null",
            "logger=csv",
            "trainer.val_check_interval=3",
            "trainer.log_every_n_steps=3",
            "model.pretrain_steps=4",
            "model.adversarial_steps=6",
            "model.adv_ramp_steps=2",
            "model.ema_decay=0.9",
            "model.generator.channels=8",
            "model.generator.n_blocks=1",
            "model.discriminator.channels=[8,8,8,8,8]",
            "model.panel_every_n_epochs=0",
            "callbacks.model_checkpoint.last_every_n_train_steps=1",
            "test=false",
        ]

    def train_cmd(self, task: str, log_dir: Path, resume: bool = False) -> list[str]:
        """``train.py`` writing its run under ``log_dir``."""
        extra = ["ckpt_path=last"] if resume else []
        return [PY, "train.py", *self.train_args(task), f"paths.log_dir={log_dir}", *extra]

    def predict_args(self, src: Path | None = None) -> list[str]:
        """``sr+classify`` of the tiny world's 2019 Landsat STM (9 SR units, 144 map tiles)."""
        return [
            f"model={self.checkpoint('cls')}",
            f"sr_model={self.checkpoint('sr')}",
            f"input={src or self.stms['landsat']['2019']}",
            "pipeline=sr+classify",
            "sr_unit=24",
            "tile=16",
            "probabilities=true",
            "progress=false",
        ]

    def predict_cmd(self, out: Path, *args: str, src: Path | None = None) -> list[str]:
        """``predict.py`` into ``out``."""
        return [PY, "predict.py", *(args or self.predict_args(src)), f"out_dir={out}"]

    # references

    def run(self, cmd: Sequence[str], trigger: Callable[[float], bool] | None = None) -> Run:
        """Run a command (see :func:`execute`)."""
        return execute(cmd, self.env, trigger)

    def reference(self, key: str) -> Reference:
        """An uninterrupted run (made once): stm_tiled, stm_grid, train_cls, train_sr, predict."""
        if key in self.refs:
            return self.refs[key]
        path = self.work / "ref" / key
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        first, writes = 0.0, 0
        self.log(f"[faults] reference run: {key}")
        if key.startswith("train_"):
            task = key.split("_", 1)[1]
            watch = mtime_of("*/runs/*/checkpoints/last.ckpt", path)
            seen: list[float] = []
            stamps: set[int] = set()

            def note(elapsed: float) -> bool:
                stamp = watch()
                if stamp is not None:
                    if not seen:
                        seen.append(elapsed)
                    stamps.add(stamp)
                return False

            res = self.run(self.train_cmd(task, path), note)
            first = seen[0] if seen else res.seconds / 2
            writes = len(stamps)
        elif key == "stm_tiled":
            res = self.run(self.stm_tiled_cmd(path))
        elif key == "stm_grid":
            res = self.run(self.stm_grid_cmd(path))
        elif key == "predict":
            res = self.run(self.predict_cmd(path))
        else:
            raise KeyError(key)
        if res.rc != 0:
            raise SystemExit(f"reference run {key} failed:\n{res.shell()}\n{res.tail(3000)}")
        self.refs[key] = Reference(path, res.seconds, first, writes)
        return self.refs[key]

    def checkpoint(self, task: str) -> Path:
        """The reference training's last.ckpt (cls or sr)."""
        if task not in self.checkpoints:
            ref = self.reference(f"train_{task}")
            self.checkpoints[task] = next(ref.path.glob("*/runs/*/checkpoints/last.ckpt"))
        return self.checkpoints[task]


# -- kill -9 ---------------------------------------------------------------------------------


@dataclass
class KillProgram:
    """How to run, kill and judge one program."""

    start: Callable[[Path], list[str]]  # first run of a trial in its folder
    again: Callable[[Path], list[str]]  # the rerun (resume)
    first_trigger: Callable[[Path], Callable[[float], bool]]
    next_trigger: Callable[[Path], Callable[[float], bool]]
    diff: Callable[[Path], str | None]  # why the trial's final output differs (None: equal)
    scan: Callable[[Path], list[Path]]  # where temporary files would be


def kill_trials(suite: Suite, case: Case, prog: KillProgram, kills: int) -> None:
    """Trials until ``kills`` kills: kill, kill the rerun (up to ``suite.chain`` kills), finish."""
    trial = 0
    while case.n["kills"] < kills and trial < 3 * kills + 3:
        folder = suite.work / case.name / f"trial_{trial:02d}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        want = min(1 + trial % suite.chain, kills - case.n["kills"])
        record: dict[str, Any] = {"trial": trial, "kills_at_s": []}
        final: Run | None = None
        for j in range(want):
            cmd = prog.start(folder) if j == 0 else prog.again(folder)
            trigger = prog.first_trigger(folder) if j == 0 else prog.next_trigger(folder)
            run = case.check(suite.run(cmd, trigger), f"trial {trial}, run {j}")
            if not run.killed:
                final = run
                break
            record["kills_at_s"].append(round(run.seconds, 2))
        done = len(record["kills_at_s"])
        trial += 1
        if done == 0:
            record["note"] = "finished before the kill point; not counted"
            case.trials.append(record)
            continue
        case.add("kills", done)
        if final is None:
            final = case.check(suite.run(prog.again(folder)), f"trial {trial - 1}, final rerun")
        record["final_rc"] = final.rc
        if final.rc != 0:
            key = "clear_error" if final.clear_error else "lost_data"
            case.add(key, done)
            record["result"] = key
            case.finding(key, final, f"trial {trial - 1}: the rerun after {done} kill(s) failed")
        else:
            why = prog.diff(folder)
            record["result"] = "equal" if why is None else f"unequal: {why}"
            if why is None:
                case.add("resumed_equal", done)
            else:
                case.add("lost_data", done)
                case.finding(
                    "unequal",
                    final,
                    f"trial {trial - 1} ({done} kill(s) at {record['kills_at_s']} s): {why}",
                )
        found = case.scan(*prog.scan(folder), note=f"trial {trial - 1}")
        record["leftovers"] = [str(p) for p in found]
        case.trials.append(record)
        suite.log(f"[faults] {case.name} trial {trial - 1}: {done} kill(s), {record['result']}")


def _uniform_kill(
    suite: Suite, ref: Reference, lo: float = 0.15, hi: float = 0.8
) -> Callable[[float], bool]:
    # up to 0.8 of the reference's time: a rerun on a less loaded machine finishes sooner
    return at_time(suite.rng.uniform(lo, hi) * ref.seconds)


def kill_stm_tiled(suite: Suite, case: Case) -> None:
    """Kill -9 the tiled ingest of C2 scenes."""
    ref = suite.reference("stm_tiled")
    out = lambda d: d / "out"  # noqa: E731
    kill_trials(
        suite,
        case,
        KillProgram(
            start=lambda d: suite.stm_tiled_cmd(out(d)),
            again=lambda d: suite.stm_tiled_cmd(out(d)),
            first_trigger=lambda d: _uniform_kill(suite, ref),
            next_trigger=lambda d: _uniform_kill(suite, ref),
            diff=lambda d: dirs_diff(ref.path, out(d), ["*.vrt", "*/*.tif"]),
            scan=lambda d: [out(d)],
        ),
        suite.kills,
    )


def kill_stm_grid(suite: Suite, case: Case) -> None:
    """Kill -9 the same-grid STM path."""
    ref = suite.reference("stm_grid")
    out = lambda d: d / "out"  # noqa: E731

    def trigger(d: Path) -> Callable[[float], bool]:
        # the run is short and mostly start-up: half of the kills follow what it writes (a
        # period's staged file appears, is published; the next one...), half are timed
        if suite.rng.random() < 0.5:
            return _uniform_kill(suite, ref)

        def written() -> tuple[int, int]:
            names = [p.name for p in out(d).glob("*.tif*")] if out(d).exists() else []
            return sum(n.startswith(".") for n in names), sum(not n.startswith(".") for n in names)

        return AfterChanges(written, suite.rng.randint(1, 3), suite.rng.uniform(0, 0.3))

    kill_trials(
        suite,
        case,
        KillProgram(
            start=lambda d: suite.stm_grid_cmd(out(d)),
            again=lambda d: suite.stm_grid_cmd(out(d)),
            first_trigger=trigger,
            next_trigger=trigger,
            diff=lambda d: dirs_diff(ref.path, out(d), ["*.tif"]),
            scan=lambda d: [out(d)],
        ),
        suite.kills,
    )


def _kill_train(suite: Suite, case: Case, task: str) -> None:
    ref = suite.reference(f"train_{task}")
    logs = lambda d: d / "logs"  # noqa: E731
    ckpt = "*/runs/*/checkpoints/last.ckpt"
    training = max(ref.seconds - ref.first, 1.0)

    def first(d: Path) -> Callable[[float], bool]:
        # after the first last.ckpt (so that there is a run to resume): half of the kills just
        # after a random last.ckpt write (inside training), half at a random time after the
        # first one (the end of training and the shutdown too)
        if suite.rng.random() < 0.5 and ref.writes > 1:
            n = suite.rng.randint(1, ref.writes)
            return AfterChanges(mtime_of(ckpt, logs(d)), n, suite.rng.uniform(0, 0.2))
        return AfterChanges(mtime_of(ckpt, logs(d)), 1, suite.rng.uniform(0, training))

    def later(d: Path) -> Callable[[float], bool]:
        if suite.rng.random() < 0.25:  # while starting: composing, finding the run, restoring
            return at_time(suite.rng.uniform(0.3, 1.0) * ref.first)
        return AfterChanges(mtime_of(ckpt, logs(d)), 1, suite.rng.uniform(0, training / 2))

    def diff(d: Path) -> str | None:
        why = train_diff(ref.path, logs(d))
        stray = [
            p
            for p in logs(d).glob("*/runs/*")
            if p.is_dir() and not (p / "checkpoints" / "last.ckpt").exists()
        ]
        if stray:  # a run folder a kill left before the resume moved into the old one
            case.add("stray_run_folders", len(stray))
            case.finding("stray_run_folder", note=str(stray))
        return why

    kill_trials(
        suite,
        case,
        KillProgram(
            start=lambda d: suite.train_cmd(task, logs(d)),
            again=lambda d: suite.train_cmd(task, logs(d), resume=True),
            first_trigger=first,
            next_trigger=later,
            diff=diff,
            scan=lambda d: [logs(d)],
        ),
        suite.kills,
    )


def kill_train_cls(suite: Suite, case: Case) -> None:
    """Kill -9 the tiny classifier's training; resume with ckpt_path=last."""
    _kill_train(suite, case, "cls")


def kill_train_sr(suite: Suite, case: Case) -> None:
    """Kill -9 the tiny SR training; resume with ckpt_path=last."""
    _kill_train(suite, case, "sr")


PREDICT_OUTPUTS = ("*.tif", "class_areas.csv")


def kill_predict(suite: Suite, case: Case) -> None:
    """Kill -9 predict.py (sr+classify)."""
    ref = suite.reference("predict")
    out = lambda d: d / "out"  # noqa: E731
    kill_trials(
        suite,
        case,
        KillProgram(
            start=lambda d: suite.predict_cmd(out(d)),
            again=lambda d: suite.predict_cmd(out(d)),
            first_trigger=lambda d: _uniform_kill(suite, ref),
            next_trigger=lambda d: _uniform_kill(suite, ref),
            diff=lambda d: dirs_diff(ref.path, out(d), PREDICT_OUTPUTS),
            scan=lambda d: [out(d)],
        ),
        suite.kills,
    )


# -- a full disk -----------------------------------------------------------------------------


class Tmpfs:
    """A small tmpfs mounted at ``path`` (root only); ``mounted`` says whether that worked."""

    def __init__(self, path: Path, size_mb: int) -> None:
        self.path, self.size_mb = path, size_mb
        self.mounted = False
        self.filler = path / "filler.bin"

    def __enter__(self) -> Tmpfs:
        self.path.mkdir(parents=True, exist_ok=True)
        res = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m", "tmpfs", str(self.path)],
            capture_output=True,
            text=True,
        )
        self.mounted = res.returncode == 0
        return self

    def __exit__(self, *exc: object) -> None:
        if self.mounted:
            res = subprocess.run(["umount", str(self.path)], capture_output=True)
            if res.returncode != 0:
                subprocess.run(["umount", "-l", str(self.path)], capture_output=True)

    def fill(self, free: int) -> int:
        """Fill the file system until about ``free`` bytes are left; the bytes left."""
        self.release()
        left = shutil.disk_usage(self.path).free - free
        with open(self.filler, "wb") as f:
            chunk = b"\0" * 2**20
            while left > 0:
                n = min(left, len(chunk))
                try:
                    f.write(chunk[:n])
                    f.flush()
                except OSError:
                    break
                left -= n
        return shutil.disk_usage(self.path).free

    def release(self) -> None:
        """Free the space again."""
        self.filler.unlink(missing_ok=True)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


ENOSPC_WRAPPER = """
import errno, os, runpy, sys
import numpy as np
after, calls, real = int(os.environ["FAULTS_ENOSPC_AFTER"]), [0], np.save
def save(path, arr, *a, **kw):
    calls[0] += 1
    if calls[0] > after:
        raise OSError(errno.ENOSPC, "No space left on device")
    return real(path, arr, *a, **kw)
np.save = save
sys.argv = ["predict.py", *sys.argv[1:]]
runpy.run_path("predict.py", run_name="__main__")
"""
"""``predict.py`` whose tile writes fail with ENOSPC after ``FAULTS_ENOSPC_AFTER`` of them (a
full disk simulated where no tmpfs can be mounted)."""


def _judge_disk_failure(case: Case, run: Run, folder: Path, record: dict[str, Any]) -> None:
    line = run.last_line
    record["error"] = line
    names_folder = str(folder) in line
    says_space = "free" in line and ("need" in line or "disk full" in line)
    if run.clear_error and names_folder and says_space:
        case.add("clear_error")
        if "need" not in line:
            case.add("error_without_space_needed")
    else:
        case.add("unclear_error")
        case.finding(
            "unclear_disk_error",
            run,
            f"want one line naming {folder} and the free space (needed): {line!r}",
        )


def disk_full(suite: Suite, case: Case) -> None:
    """Each program's output folder on a tmpfs filled to several levels of its output's size."""
    mnt = suite.work / case.name / "mnt"
    fractions = (0.05, 0.6, 1.5) if suite.quick else (0.02, 0.3, 0.6, 1.0, 1.5, 3.0)
    with Tmpfs(mnt, 20) as fs:
        case.extra["tmpfs"] = fs.mounted
        if not fs.mounted:
            suite.log("[faults] disk_full: cannot mount a tmpfs; simulating ENOSPC in predict")
            return _disk_full_simulated(suite, case)
        programs: list[tuple[str, Callable[[Path], list[str]], Sequence[str]]] = [
            ("predict", suite.predict_cmd, PREDICT_OUTPUTS),
            ("stm_tiled", suite.stm_tiled_cmd, ["*.vrt", "*/*.tif"]),
        ]
        for key, cmd, patterns in programs:
            ref = suite.reference(key)
            size = _size(ref.path)
            for frac in fractions:
                out = mnt / f"{key}_{frac:g}"
                record: dict[str, Any] = {"program": key, "free_fraction_of_output": frac}
                record["free_bytes"] = fs.fill(int(frac * size))
                first = case.check(suite.run(cmd(out)), f"{key} at {frac:g}")
                record["rc"] = first.rc
                if first.rc == 0:
                    why = dirs_diff(ref.path, out, patterns)
                    record["result"] = "fit" if why is None else f"unequal: {why}"
                    case.add("fit")
                    if why is not None:
                        case.add("lost_data")
                        case.finding("unequal", first, f"{key}, {frac:g} x output free: {why}")
                else:
                    _judge_disk_failure(case, first, out, record)
                    found = case.scan(out, store_ok=True, note=f"{key} after the failed run")
                    record["leftovers_after_failure"] = [str(p) for p in found]
                    fs.release()
                    again = case.check(suite.run(cmd(out)), f"{key} rerun after {frac:g}")
                    why = dirs_diff(ref.path, out, patterns) if again.rc == 0 else "failed"
                    record["result"] = "resumed equal" if why is None else f"rerun: {why}"
                    if why is None:
                        case.add("resumed_equal")
                    else:
                        case.add("lost_data")
                        case.finding("rerun_unequal", again, f"{key}, {frac:g}: {why}")
                case.scan(out, note=f"{key} at {frac:g}")
                case.trials.append(record)
                suite.log(f"[faults] disk_full {key} {frac:g}: {record['result']}")
                fs.release()
                shutil.rmtree(out, ignore_errors=True)


def _disk_full_simulated(suite: Suite, case: Case) -> None:
    ref = suite.reference("predict")
    for after in (0, 4, 60) if suite.quick else (0, 2, 4, 9, 30, 60, 120):
        out = suite.work / case.name / f"sim_{after}"
        env = {**suite.env, "FAULTS_ENOSPC_AFTER": str(after)}
        cmd = [PY, "-c", ENOSPC_WRAPPER, *suite.predict_args(), f"out_dir={out}"]
        first = case.check(execute(cmd, env), f"ENOSPC after {after} tiles")
        record: dict[str, Any] = {"enospc_after_tiles": after, "rc": first.rc}
        if first.rc != 0:
            _judge_disk_failure(case, first, out, record)
            case.scan(out, store_ok=True, note=f"after ENOSPC at tile {after}")
        again = case.check(suite.run(suite.predict_cmd(out)), f"rerun after {after}")
        why = dirs_diff(ref.path, out, PREDICT_OUTPUTS) if again.rc == 0 else "failed"
        record["result"] = "resumed equal" if why is None else f"rerun: {why}"
        case.add("resumed_equal" if why is None else "lost_data")
        if why is not None:
            case.finding("rerun_unequal", again, why)
        case.scan(out, note=f"ENOSPC at {after}")
        case.trials.append(record)


# -- two predicts on one out_dir -------------------------------------------------------------


def concurrent(suite: Suite, case: Case) -> None:
    """Two ``predict.py`` on one out_dir, the second started a random moment after the first."""
    import threading

    ref = suite.reference("predict")
    for i in range(1 if suite.quick else 4):
        out = suite.work / case.name / f"round_{i}" / "out"
        cmd = suite.predict_cmd(out)
        runs: list[Run] = []
        first = threading.Thread(target=lambda c=cmd, rs=runs: rs.append(suite.run(c)))
        first.start()
        delay = suite.rng.uniform(0, 0.6) * ref.seconds
        time.sleep(delay)
        runs.append(suite.run(cmd))
        first.join()
        record: dict[str, Any] = {"round": i, "second_after_s": round(delay, 1)}
        record["rcs"] = [r.rc for r in runs]
        ok = True
        for r in runs:
            case.check(r, f"round {i}")
            if r.rc == 0:
                continue
            if r.clear_error and "another process" in r.last_line:
                case.add("clear_error")
                record.setdefault("refused", []).append(r.last_line)
            else:
                ok = False
                case.finding("concurrent_failure", r, f"round {i}")
        why = (
            dirs_diff(ref.path, out, PREDICT_OUTPUTS)
            if any(r.rc == 0 for r in runs)
            else "none finished"
        )
        record["result"] = "equal" if why is None and ok else f"unequal: {why}"
        case.add("resumed_equal" if why is None and ok else "lost_data")
        if why is not None:
            case.finding("unequal", runs[-1], f"round {i}: {why}")
        case.scan(out, note=f"round {i}")
        case.trials.append(record)
        suite.log(f"[faults] concurrent round {i}: {record['result']} {record['rcs']}")


# -- truncated checkpoints -------------------------------------------------------------------


def _truncate(src: Path, dst: Path, size: int) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes()[:size])
    return dst


def _judge_refusal(case: Case, run: Run, what: str, must: str = "") -> bool:
    """A one-line error (naming ``must``) counts as clear; anything else is a finding."""
    if run.clear_error and must in run.last_line:
        case.add("clear_error")
        return True
    if run.rc == 0:
        case.add("accepted")
        case.finding("accepted", run, f"{what}: exit status 0")
    else:
        case.add("unclear_error")
        case.finding("unclear_error", run, f"{what}: want one 'error: ...' line naming {must!r}")
    return False


def truncated_predict(
    suite: Suite, case: Case, ckpt: Path, src: Path, sizes: Iterable[int], role: str = "model"
) -> None:
    """``predict.py`` given a truncated copy of ``ckpt`` as ``role`` (model or sr_model)."""
    for size in sizes:
        folder = suite.work / case.name / f"predict_{role}_{size}"
        bad = _truncate(ckpt, folder / f"truncated_{size}.ckpt", size)
        out = folder / "out"
        if role == "model":
            args = [f"model={bad}", f"input={src}", "pipeline=classify", "progress=false"]
        else:
            args = [*suite.predict_args(), f"sr_model={bad}"]
        run = case.check(suite.run([PY, "predict.py", *args, f"out_dir={out}"]), f"{role} {size} B")
        ok = _judge_refusal(case, run, f"predict {role}= truncated to {size} B", str(bad))
        case.trials.append(
            {"what": f"predict {role}", "bytes": size, "clear": ok, "error": run.last_line}
        )
        case.scan(folder, note=f"predict {role} {size} B")


def truncated_ckpt(suite: Suite, case: Case) -> None:
    """A truncated last.ckpt resumed with ckpt_path=last; truncated models given to predict."""
    ref = suite.reference("train_cls")
    full = suite.checkpoint("cls").stat().st_size
    sizes = [full // 2] if suite.quick else [0, 1000, full // 2, full - 100]
    for size in sizes:
        logs = suite.work / case.name / f"train_{size}" / "logs"
        shutil.copytree(ref.path, logs)
        last = next(logs.glob("*/runs/*/checkpoints/last.ckpt"))
        _truncate(last, last, size)
        run = case.check(suite.run(suite.train_cmd("cls", logs, resume=True)), f"train {size} B")
        ok = _judge_refusal(
            case, run, f"ckpt_path=last, last.ckpt truncated to {size} B", "last.ckpt"
        )
        case.trials.append(
            {"what": "train ckpt_path=last", "bytes": size, "clear": ok, "error": run.last_line}
        )
        case.scan(logs, note=f"train {size} B")
    src = suite.stms["sentinel2"]["2019"]
    truncated_predict(suite, case, suite.checkpoint("cls"), src, sizes, "model")
    sr_full = suite.checkpoint("sr").stat().st_size
    truncated_predict(
        suite,
        case,
        suite.checkpoint("sr"),
        src,
        [sr_full // 2] if suite.quick else [0, sr_full // 2],
        "sr_model",
    )


# -- inputs rewritten with their old mtime ---------------------------------------------------


def _rewrite(path: Path, content: bytes) -> None:
    """Give ``path`` other content and its old atime/mtime back (as ``cp -p`` or ``rsync -t``)."""
    st = path.stat()
    path.write_bytes(content)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _other_pixels(src: Path, dst: Path) -> Path:
    """The same raster (grid, bands, tags) with other pixels: rows shifted by a quarter."""
    import numpy as np
    import rasterio

    with rasterio.open(src) as s:
        profile, data = s.profile, s.read()
        tags, desc = s.tags(), s.descriptions
        scales, offsets = s.scales, s.offsets
    data = np.roll(data, data.shape[1] // 4, axis=1)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(dst, "w", **profile) as d:
        d.write(data)
        d.update_tags(**tags)
        d.scales, d.offsets = scales, offsets
        for i, n in enumerate(desc, start=1):
            d.set_band_description(i, n)
    return dst


def rewritten_input(suite: Suite, case: Case) -> None:
    """Kill a run, rewrite an input with other content and its old mtime, rerun, compare."""
    base = suite.work / case.name
    s2, ls19, ls13 = (
        suite.stms["sentinel2"]["2019"],
        suite.stms["landsat"]["2019"],
        suite.stms["landsat"]["2013"],
    )
    other_s2 = _other_pixels(s2, base / "other" / s2.name).read_bytes()
    cls_args = lambda src: [  # noqa: E731
        f"model={suite.checkpoint('cls')}",
        f"input={src}",
        "pipeline=classify",
        "tile=16",
        "probabilities=true",
        "progress=false",
    ]
    trials = [
        # name, original, other content, args(src), kill when (store glob, count), outputs
        (
            "predict classify, killed mid-map",
            s2,
            other_s2,
            cls_args,
            f".{s2.stem}_map.tif.tiles/u*.0.npy",
            10,
        ),
        (
            "predict sr+classify, killed mid-SR",
            ls19,
            ls13.read_bytes(),
            suite.predict_args,
            f".{ls19.stem}_sr.tif.tiles/u*.0.npy",
            2,
        ),
        (
            "predict sr+classify, killed mid-map (SR output done)",
            ls19,
            ls13.read_bytes(),
            suite.predict_args,
            f".{ls19.stem}_map.tif.tiles/u*.0.npy",
            10,
        ),
    ]
    for k, (name, original, other, make_args, store, n) in enumerate(trials):
        folder = base / f"trial_{k}"
        src = folder / "in" / original.name
        src.parent.mkdir(parents=True)
        shutil.copy2(original, src)
        out = folder / "out"
        record: dict[str, Any] = {"trial": name}
        killed = case.check(
            suite.run(
                [PY, "predict.py", *make_args(src), f"out_dir={out}"],
                AfterChanges(count_of(store, out), n, 0.0, limit=None),
            )
        )
        record["killed"] = killed.killed
        if not killed.killed:
            record["result"] = "finished before the kill; not counted"
            case.trials.append(record)
            continue
        case.add("kills")
        _rewrite(src, other)
        again = case.check(suite.run([PY, "predict.py", *make_args(src), f"out_dir={out}"]))
        fresh_src = folder / "fresh_in" / original.name
        fresh_src.parent.mkdir(parents=True)
        fresh_src.write_bytes(other)
        fresh = case.check(
            suite.run([PY, "predict.py", *make_args(fresh_src), f"out_dir={folder / 'fresh'}"])
        )
        _judge_rewrite(
            suite,
            case,
            record,
            name,
            again,
            fresh,
            [PY, "predict.py", *make_args(src), f"out_dir={out}", "overwrite=true"],
            lambda f=folder, o=out: dirs_diff(f / "fresh", o, PREDICT_OUTPUTS),
        )
        case.scan(out, note=name)
        case.trials.append(record)
        suite.log(f"[faults] rewritten_input {name}: {record['result']}")
    _rewritten_scene(suite, case)


def _judge_rewrite(
    suite: Suite,
    case: Case,
    record: dict[str, Any],
    name: str,
    again: Run,
    fresh: Run,
    overwrite_cmd: list[str],
    compare: Callable[[], str | None],
) -> None:
    """Judge the rerun after a rewrite.

    Equal to a fresh run, or a clear refusal naming overwrite=true (then ``overwrite_cmd`` must
    give the fresh run's output); anything else is lost data.
    """
    if fresh.rc != 0:
        why: str | None = "fresh run failed"
    elif again.rc == 0:
        why = compare()
        record["result"] = "equal to a fresh run" if why is None else f"unequal: {why}"
    elif again.clear_error and "overwrite=true" in again.last_line:
        case.add("clear_error")
        record["refused"] = again.last_line
        redo = case.check(suite.run(overwrite_cmd), f"{name}: overwrite=true")
        why = "overwrite=true failed" if redo.rc != 0 else compare()
        record["result"] = (
            "refused; overwrite=true equal to a fresh run"
            if why is None
            else (f"refused; overwrite=true unequal: {why}")
        )
        if why is None:
            case.add("overwrite_equal")
            return
    else:
        why = "rerun failed"
    record.setdefault("result", f"unequal: {why}")
    if why is None:
        case.add("resumed_equal")
    else:
        case.add("lost_data")
        case.finding("stale_reuse", again, f"{name}: {why}")


def _rewritten_scene(suite: Suite, case: Case) -> None:
    """The tiled ingest killed after its first tiles; a band file rewritten with its old mtime."""
    name = "stm tiled, killed after the first tiles, a band rewritten"
    folder = suite.work / case.name / "trial_stm"
    scenes = folder / "scenes"
    shutil.copytree(suite.c2, scenes)
    out = folder / "out"
    record: dict[str, Any] = {"trial": name}
    killed = case.check(
        suite.run(
            suite.stm_tiled_cmd(out, scenes), AfterChanges(count_of("*/X*_Y*.tif", out), 2, 0.0)
        )
    )
    record["killed"] = killed.killed
    if not killed.killed:
        record["result"] = "finished before the kill; not counted"
        case.trials.append(record)
        return
    case.add("kills")
    dirs = sorted(p for p in scenes.iterdir() if p.is_dir())
    band = next(dirs[0].glob("*_SR_B4.TIF"))
    other = next(dirs[1].glob("*_SR_B4.TIF")).read_bytes()  # another date, same path: same grid
    _rewrite(band, other)
    again = case.check(suite.run(suite.stm_tiled_cmd(out, scenes)))
    fresh = case.check(suite.run(suite.stm_tiled_cmd(folder / "fresh", scenes)))
    _judge_rewrite(
        suite,
        case,
        record,
        name,
        again,
        fresh,
        [*suite.stm_tiled_cmd(out, scenes), "overwrite=true"],
        lambda: dirs_diff(folder / "fresh", out, ["*/*.tif"]),
    )
    case.scan(out, note=name)
    case.trials.append(record)
    suite.log(f"[faults] rewritten_input {name}: {record['result']}")


# -- odd rasters -----------------------------------------------------------------------------


def odd_rasters(src: Path, folder: Path) -> dict[str, Path]:
    """Variants of an STM a 10 m classifier should refuse or warn about, by name."""
    import numpy as np
    import rasterio
    from affine import Affine

    from bsrlc.raster import write_cog

    with rasterio.open(src) as s:
        data, crs, t, nodata = s.read(), s.crs, s.transform, s.nodata
        desc = list(s.descriptions)
    folder.mkdir(parents=True, exist_ok=True)
    h = data.shape[1]
    variants = {
        "epsg4326_degrees": (data, "EPSG:4326", Affine(1e-4, 0, 15.0, 0, -1e-4, 55.0)),
        "pixels_10x20m": (data, crs, Affine(t.a, 0, t.c, 0, 2 * t.e, t.f)),
        "south_up": (data[:, ::-1], crs, Affine(t.a, 0, t.c, 0, -t.e, t.f + t.e * h)),
        "all_saturated": (np.full_like(data, np.iinfo(data.dtype).max), crs, t),
        "all_nodata": (np.full_like(data, nodata), crs, t),
        "7x7px": (
            np.ascontiguousarray(data[:, 90:97, 90:97]),
            crs,
            Affine(t.a, 0, t.c + 90 * t.a, 0, t.e, t.f + 90 * t.e),
        ),
    }
    return {
        name: write_cog(
            folder / f"{name}_2019.tif", arr, crs=c, transform=tr, nodata=nodata, descriptions=desc
        )
        for name, (arr, c, tr) in variants.items()
    }


def judge_input(case: Case, name: str, run: Run) -> str:
    """Refused (one-line error), warned (a warning on stderr), silent, or failed."""
    if run.rc == 0:
        if "warn" in run.err.lower():
            case.add("warned")
            return "warned"
        case.add("silent_inputs")
        on_stdout = "warn" in run.out.lower()
        if on_stdout:
            case.add("warned_on_stdout_only")
        case.finding(
            "silent_input",
            run,
            f"{name}: exit status 0 without a warning on stderr"
            + (" (a warning went to stdout)" if on_stdout else ""),
        )
        return "silent" + (" (warned on stdout)" if on_stdout else "")
    if run.clear_error:
        case.add("clear_error")
        return "refused"
    case.add("unclear_error")
    case.finding("unclear_error", run, name)
    return "failed"


def odd_inputs(
    suite: Suite, case: Case, ckpt: Path, src: Path, names: Iterable[str] | None = None
) -> None:
    """``predict.py pipeline=classify`` on each odd variant of ``src``."""
    rasters = odd_rasters(src, suite.work / case.name / "in")
    for name, path in rasters.items():
        if names is not None and name not in names:
            continue
        out = suite.work / case.name / name
        args = [f"model={ckpt}", f"input={path}", "pipeline=classify", "progress=false"]
        run = case.check(suite.run([PY, "predict.py", *args, f"out_dir={out}"]), name)
        result = judge_input(case, name, run)
        case.trials.append(
            {"input": name, "rc": run.rc, "result": result, "stderr_last": run.last_line}
        )
        case.scan(out, note=name)
        suite.log(f"[faults] odd raster {name}: {result}")


def odd_rasters_case(suite: Suite, case: Case) -> None:
    """Odd rasters given to the tiny classifier."""
    odd_inputs(suite, case, suite.checkpoint("cls"), suite.stms["sentinel2"]["2019"])


# -- the report ------------------------------------------------------------------------------

RUNNERS: dict[str, Callable[[Suite, Case], None]] = {
    "kill_stm_tiled": kill_stm_tiled,
    "kill_stm_grid": kill_stm_grid,
    "kill_train_cls": kill_train_cls,
    "kill_train_sr": kill_train_sr,
    "kill_predict": kill_predict,
    "disk_full": disk_full,
    "concurrent": concurrent,
    "truncated_ckpt": truncated_ckpt,
    "rewritten_input": rewritten_input,
    "odd_rasters": odd_rasters_case,
}


def summary(cases: Sequence[Case], seconds: float, extra_leftovers: int = 0) -> dict[str, Any]:
    """report.json: totals, then each case's counts, trials and findings."""
    kill_cases = [c for c in cases if c.name.startswith("kill_")]
    total = lambda key, cs=cases: sum(c.n[key] for c in cs)  # noqa: E731
    return {
        "kills": {
            "total": total("kills", kill_cases),
            "resumed_equal": total("resumed_equal", kill_cases),
            "clear_error": total("clear_error", kill_cases),
            "lost_data": total("lost_data", kill_cases),
        },
        "tracebacks": total("tracebacks"),
        "leftovers": total("leftovers") + extra_leftovers,
        "silent_inputs": total("silent_inputs"),
        "lost_data": total("lost_data"),
        "clear_errors": total("clear_error"),
        "seconds": round(seconds, 1),
        "cases": {c.name: c.report() for c in cases},
    }


def table(cases: Sequence[Case]) -> str:
    """One row per case."""
    cols = ["case", *COUNTERS, "runs", "min"]
    rows = [
        [c.name, *(str(c.n[k]) for k in COUNTERS), str(c.runs), f"{c.seconds / 60:.1f}"]
        for c in cases
    ]
    widths = [max(len(r[i]) for r in [cols, *rows]) for i in range(len(cols))]

    def fmt(r: list[str]) -> str:
        return "  ".join(
            x.ljust(w) if i == 0 else x.rjust(w)
            for i, (x, w) in enumerate(zip(r, widths, strict=True))
        )

    return "\n".join([fmt(cols), *(fmt(r) for r in rows)])


def write_report(
    args: argparse.Namespace,
    done: Sequence[Case],
    seconds: float,
    bundles_before: set[str],
    kills: int,
    partial: bool,
) -> dict[str, Any]:
    """Write report.json (whole: to a temporary name, then renamed); after every case."""
    new_bundles = sorted(bundle_dirs() - bundles_before)
    report = summary(done, seconds, len(new_bundles))
    report["temp_dir_leftovers"] = new_bundles
    report["settings"] = {
        "kills": kills,
        "chain": args.chain,
        "seed": args.seed,
        "quick": args.quick,
        "cases": [c.name for c in done],
        "partial": partial,
    }
    args.report.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.report.with_name(f".{args.report.name}.tmp")
    tmp.write_text(json.dumps(report, indent=1, default=str))
    os.replace(tmp, args.report)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run the cases and write the report; exit status 1 when a case found a problem."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--kills", type=int, default=None, help="kills per program (default 20; 3 with --quick)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="3 kills per program (unless --kills), fewer levels"
    )
    parser.add_argument("--chain", type=int, default=3, help="kills per trial at most (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cases", default=",".join(CASES), help=f"comma list of {', '.join(CASES)}"
    )
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "faults" / "work")
    parser.add_argument("--report", type=Path, default=ROOT / "outputs" / "faults" / "report.json")
    args = parser.parse_args(argv)
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in names if c not in RUNNERS]
    if unknown or not names:
        parser.error(f"unknown case(s) {unknown}; choose from {', '.join(CASES)}")
    kills = args.kills if args.kills is not None else 3 if args.quick else 20
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    suite = Suite(args.work, kills=kills, seed=args.seed, chain=args.chain, quick=args.quick)
    before = bundle_dirs()
    t0 = time.monotonic()
    done: list[Case] = []
    for name in names:
        case = Case(name)
        t = time.monotonic()
        try:
            RUNNERS[name](suite, case)
        except Exception as err:  # the suite's own failure: recorded, the other cases still run
            import traceback

            case.add("suite_errors")
            case.finding("suite_error", note="".join(traceback.format_exception(err))[-3000:])
            suite.log(f"[faults] {name}: the suite itself failed: {err!r}")
        case.seconds = time.monotonic() - t
        done.append(case)
        suite.log(f"[faults] {name}: {case.n} in {case.seconds / 60:.1f} min")
        partial = len(done) < len(names)
        report = write_report(args, done, time.monotonic() - t0, before, kills, partial)
    print(table(done))
    print(f"report: {args.report}")
    short = {k: v for k, v in report.items() if k != "cases"}
    short["cases"] = {c.name: {**c.n, **{k: v for k, v in c.extra.items()}} for c in done}
    print(json.dumps(short, default=str))
    bad = report["tracebacks"] + report["leftovers"] + report["silent_inputs"] + report["lost_data"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
