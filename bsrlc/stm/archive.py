"""Archives in: scenes as delivered, in any CRS, composited into STM tiles of the target grid.

``python -m bsrlc.stm scenes=DIR source=landsat_c2|sentinel2_l2a|auto grid.*=... periods=...``
(:func:`ingest`). The scenes of a folder (:func:`bsrlc.stm.sources.discover_sources`: any
path/row, UTM zone or product layout) are laid over the tiles of a
:class:`~bsrlc.stm.grid.TargetGrid` that cover the area (``grid.bounds``, ``grid.region`` or
the union of the scenes' footprints). Each tile x period is one task: the tile is cut into
windows (:func:`bsrlc.stm.grid.windows`), every scene that overlaps a window is warped onto it
(:class:`~bsrlc.stm.sources.WarpReader`: only the source pixels the window needs, QA decoded at
native resolution), and the window's (time, bands, rows, cols) stack is reduced by the same
numba kernel as the same-grid path (:func:`bsrlc.stm.metrics.compute_stm_int16`, with
:data:`~bsrlc.stm.compose.OUT_SCALE` and :data:`~bsrlc.stm.compose.OUT_NODATA`). No scene is
copied to disk; a reader thread warps window k+1 while the kernel reduces window k.

Outputs (the band layout, int16 scaling, CLEAR_COUNT, GDAL scale/offset and descriptions of
the same-grid STM files):

- ``{out_dir}/{name}_{label}/X####_Y####.tif``: one COG per tile and period (the folder named
  like the VRT, so products and resolutions written to one ``out_dir`` never share tiles),
  written atomically (a
  temporary file renamed when complete, so a killed or failed tile leaves no ``.tif``);
- ``{out_dir}/{name}_{label}.vrt``: one VRT mosaic per period over its tiles (relative paths).

A rerun skips the tiles that exist (a finished tile is never rewritten unless
``overwrite=True``) and computes only the missing ones. Scenes whose footprint misses every
tile of the area are skipped and counted. Bad scenes (no CRS, a truncated or corrupt file,
a QA file its decoder refuses; a date outside every period) raise a one-line
:class:`~bsrlc.errors.InputError` naming the file, or with ``on_error="skip"`` are left out,
logged and counted.

Where the scenes of a tile x period share one scale/offset (one product), their raw DNs are
reduced with it, exactly like the same-grid path; otherwise (e.g. Sentinel-2 baselines before
and after 04.00 in one period) each scene is converted to float32 reflectance first.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import logging
import os
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from odc.geo import CRS
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry, unary_union
from tqdm.auto import tqdm

from bsrlc.errors import ConfigError, DiskFullError, InputError, check_free_space, format_bytes
from bsrlc.raster import COGWriter, open_raster
from bsrlc.stm.compose import (
    OUT_NODATA,
    OUT_SCALE,
    _set_scales,
    _set_threads,
    check_valid_range,
    parse_date,
    stm_tags,
)
from bsrlc.stm.grid import TargetGrid, Tile, resolve_area, windows
from bsrlc.stm.indices import IndexMatrices, index_matrices
from bsrlc.stm.metrics import MetricSpec, compute_stm_int16, parse_metrics
from bsrlc.stm.sources import (
    SourceScene,
    WarpReader,
    check_mask_options,
    discover_sources,
    resampling_of,
)

log = logging.getLogger(__name__)

PRODUCT_NAMES = {
    "landsat_c2": "landsat",
    "sentinel2_l2a": "sentinel2",
    "files": "stm",
    "stac": "stac",
    "force": "force",
}
"""Output name prefix of each product (``{name}_{label}.vrt``)."""

EXCLUSION_REASONS = ("fill", "qa", "saturation", "range")
"""Why observations are excluded, each counted once under the first that applies (as the
same-grid path counts them): ``fill`` (fill value or outside the scene, under the resampling
kernel), ``qa`` (QA_PIXEL, SCL, QAI decoded at native resolution), ``saturation`` (QA_RADSAT)
and ``range`` (a native pixel outside the product's valid range under the kernel)."""


# --------------------------------------------------------------------------------------------
# plan


@dataclass(frozen=True)
class TileTask:
    """One output: a tile in a period.

    Attributes:
        tile: tile id (``X0012_Y0034``).
        label: period label.
        scenes: indices into :attr:`ArchivePlan.scenes` of the period's scenes that overlap
            the tile, by date.
        path: the output COG.
    """

    tile: str
    label: str
    scenes: tuple[int, ...]
    path: Path


@dataclass
class ArchivePlan:
    """Everything a tile task needs (picklable: scattered to Dask workers).

    Attributes:
        scenes: the usable scenes, by date.
        grid: the target grid.
        bands: band names to composite (each scene's, e.g. ``BLU``..``SW2``).
        spec: parsed metrics.
        idx: spectral index coefficients over ``bands``.
        name: output name prefix (``landsat``, ``sentinel2``).
        periods: label -> (start, end) of the window (unbounded ends: the first/last scene).
        resampling: reflectance resampling.
        min_clear_fraction: see :class:`~bsrlc.stm.sources.WarpReader`.
        block_size: window edge in pixels.
        on_error: ``fail`` or ``skip`` for a scene that cannot be read.
        skipped: one line per scene left out before any tile was computed.
        overviews: internal overviews in each tile COG.
    """

    scenes: list[SourceScene]
    grid: TargetGrid
    bands: list[str]
    spec: MetricSpec
    idx: IndexMatrices
    name: str
    periods: dict[str, tuple[dt.date, dt.date]]
    resampling: str = "bilinear"
    min_clear_fraction: float = 1.0
    block_size: int = 512
    on_error: str = "fail"
    skipped: list[str] = field(default_factory=list)
    overviews: bool = False

    @property
    def descriptions(self) -> list[str]:
        """Output band names: ``{BAND}_{METRIC}`` band-major, then indices, then CLEAR_COUNT."""
        layers = [*self.bands, *self.idx.names]
        return [*(f"{b}_{m.upper()}" for b in layers for m in self.spec.names), "CLEAR_COUNT"]


@dataclass
class TileResult:
    """What one tile task did.

    Attributes:
        task: the task.
        status: ``written`` or ``kept`` (it existed and overwrite is false).
        observations: scene x pixel observations looked at.
        excluded: observations excluded per reason of :data:`EXCLUSION_REASONS`.
        failed: one line per scene left out while reading (``on_error="skip"``).
        failed_scenes: their indices into :attr:`ArchivePlan.scenes`.
    """

    task: TileTask
    status: str
    observations: int = 0
    excluded: np.ndarray = field(default_factory=lambda: np.zeros(2, np.int64))
    failed: list[str] = field(default_factory=list)
    failed_scenes: list[int] = field(default_factory=list)


def scene_label(scene: SourceScene) -> Path | str:
    """The file that names a scene in messages: its metadata, else its first band file."""
    return scene.metadata or next(iter(scene.bands.values()), scene.id)


def check_periods(
    periods: Mapping[str, Sequence[Any]], dates: Sequence[dt.date]
) -> dict[str, tuple[dt.date, dt.date]]:
    """Parse ``periods`` (label -> [start, end], None = unbounded).

    Args:
        periods: the periods.
        dates: the scenes' dates (unbounded ends become the first / last of them).

    Returns:
        label -> (start, end).

    Raises:
        ConfigError: for a period that is not a pair of dates, or start after end.
    """
    if not periods:
        raise ConfigError("periods: empty; give label -> [start, end], e.g. {2019: [...]}")
    out = {}
    first, last = (min(dates), max(dates)) if dates else (dt.date.min, dt.date.max)
    for label, window in periods.items():
        if isinstance(window, str) or len(window) != 2:
            raise ConfigError(f"periods.{label}: expected [start, end], got {window!r}")
        d0 = parse_date(window[0], f"periods.{label} start") if window[0] is not None else first
        d1 = parse_date(window[1], f"periods.{label} end") if window[1] is not None else last
        if d0 > d1:
            raise ConfigError(f"periods.{label}: start {d0} is after end {d1}; swap them")
        out[str(label)] = (d0, d1)
    return out


def _check_files(scene: SourceScene, grid_crs: Any) -> Geometry:
    """Open every file of a scene (CRS present, readable header); its footprint on the grid."""
    check_mask_options(scene)
    footprint = None
    for path in scene.files:
        with open_raster(path) as src:
            if src.crs is None:
                raise InputError(
                    f"{path}: raster has no CRS, so it cannot be placed on the grid; assign "
                    "one (e.g. gdal_edit.py -a_srs EPSG:32633) or re-download the scene"
                )
            if footprint is None:
                footprint = GeoBox.from_rio(src).footprint(grid_crs, npoints=50)
    assert footprint is not None
    return footprint


def plan_archive(
    scenes: Sequence[SourceScene],
    out_dir: str | Path,
    periods: Mapping[str, Sequence[Any]],
    grid: TargetGrid | None = None,
    bands: Sequence[str] | None = None,
    metrics: Sequence[str] | MetricSpec = ("min", "p25", "p50", "p75", "max"),
    indices: Sequence[str] = (),
    name: str | None = None,
    bounds: Sequence[float] | None = None,
    region: str | Path | None = None,
    tiles: Sequence[str] | None = None,
    valid_range: Sequence[float] | None = None,
    resampling: str = "bilinear",
    min_clear_fraction: float = 1.0,
    block_size: int = 512,
    on_error: str = "fail",
    overviews: bool = False,
) -> tuple[ArchivePlan, list[TileTask], dict[str, int]]:
    """Check the scenes and lay the grid's tiles over the area: one task per tile x period.

    Args:
        scenes: the scenes (e.g. :attr:`bsrlc.stm.sources.Discovery.scenes`).
        out_dir: the output folder.
        periods: label -> [start, end] (inclusive ``YYYY-MM-DD``; None = unbounded).
        grid: the target grid (default: EPSG:3035, 30 m, 30 km tiles).
        bands: band names to composite (default: the first scene's).
        metrics: metric names (see :func:`bsrlc.stm.metrics.parse_metrics`).
        indices: spectral indices (``NDVI``...).
        name: output name prefix (default: by product, ``landsat`` / ``sentinel2``).
        bounds: the area as [left, bottom, right, top] in the grid's CRS.
        region: the area as a vector file.
        tiles: only these tile ids (of the area's tiles).
        valid_range: [lo, hi] raw DNs for every scene instead of its product's range.
        resampling: reflectance resampling (bilinear, cubic, average...).
        min_clear_fraction: share of a target pixel that must be clear in the native QA.
        block_size: window edge in pixels.
        on_error: ``fail`` raises on the first bad scene, ``skip`` leaves it out.
        overviews: internal overviews in each tile (off by default, as FORCE's tiles: they
            take ~60 % of a tile's write time; build them on the period's VRT if needed).

    Returns:
        (plan, tasks, counts): counts of ``scenes``, ``outside_area``, ``outside_periods``,
        ``bad`` scenes and ``empty`` tile x period pairs (no scene).

    Raises:
        ConfigError: for bad periods, metrics, indices, bands or settings.
        InputError: for a bad scene (``on_error="fail"``), no scene in a period or the area.
    """
    grid = grid or TargetGrid()
    if on_error not in ("fail", "skip"):
        raise ConfigError(f"on_error={on_error}: use fail or skip")
    if block_size < 16:
        raise ConfigError(f"block_size={block_size}: too small; use 128..1024")
    resampling_of(resampling)
    if not 0 < min_clear_fraction <= 1:
        raise ConfigError(f"min_clear_fraction={min_clear_fraction}: must be in (0, 1]")
    if not scenes:
        raise InputError("no scenes to composite; point scenes= at a folder of scenes")
    bands = list(bands) if bands else list(scenes[0].bands)
    if isinstance(bands, str) or not all(isinstance(b, str) for b in bands):
        raise ConfigError(f"bands={bands}: give a list of band names, e.g. [BLU, GRN, RED]")
    spec = parse_metrics(metrics)
    idx = index_matrices(list(indices), bands)
    vr = check_valid_range(valid_range)
    if name is None:
        products = sorted({s.product for s in scenes})
        if len(products) > 1:
            raise ConfigError(
                f"scenes: {' and '.join(products)} scenes in one run; set source= to one "
                "product (or name= for a mixed output)"
            )
        name = PRODUCT_NAMES.get(products[0], products[0])
    counts = {"scenes": 0, "outside_area": 0, "outside_periods": 0, "bad": 0, "empty": 0}
    skipped: list[str] = []

    def bad(msg: str) -> None:
        if on_error == "fail":
            raise InputError(msg)
        log.warning("skipped: %s", msg)
        skipped.append(msg)
        counts["bad"] += 1

    ranges = check_periods(periods, [s.date for s in scenes])
    usable: list[tuple[SourceScene, Geometry]] = []
    for s in sorted(scenes, key=lambda s: (s.date, s.id)):
        missing = [b for b in bands if b not in s.bands]
        if missing:
            bad(
                f"{scene_label(s)}: scene {s.id} has no band(s) {', '.join(missing)} (it has "
                f"{', '.join(s.bands)}); drop the scene or fix bands="
            )
            continue
        if not any(d0 <= s.date <= d1 for d0, d1 in ranges.values()):
            if on_error == "fail":
                raise InputError(
                    f"{scene_label(s)}: scene {s.id} of {s.date} lies outside every period "
                    f"({', '.join(f'{k}: {a}..{b}' for k, (a, b) in ranges.items())}); widen "
                    "periods=, move the scene out of scenes=, or set on_error=skip"
                )
            log.info("%s: %s lies outside every period; left out", s.id, s.date)
            counts["outside_periods"] += 1
            continue
        try:
            footprint = _check_files(s, grid.odc_crs)
        except InputError as err:
            bad(str(err))
            continue
        if vr is not None:
            s = dataclasses.replace(s, valid_range=vr)
        usable.append((s, footprint))
    if not usable:
        first = f"{scene_label(scenes[0])}: " if len(scenes) == 1 else ""
        raise InputError(
            f"{first}no scene left to composite: of {len(scenes)}, {counts['bad']} bad and "
            f"{counts['outside_periods']} outside every period "
            f"({', '.join(f'{k}: {a}..{b}' for k, (a, b) in ranges.items())}); fix or replace "
            "the scenes, or widen periods="
        )
    if bounds is not None or region is not None:
        area: Geometry | None = resolve_area(grid, bounds, region)
    else:
        area = unary_union([fp for _, fp in usable])
    assert area is not None
    all_tiles = grid.tiles(area)
    if tiles:
        wanted = {str(t).strip() for t in tiles}
        unknown = wanted - {t.id for t in all_tiles}
        if unknown:
            raise ConfigError(
                f"tiles={sorted(wanted)}: {', '.join(sorted(unknown))} not in the area's tiles "
                f"({len(all_tiles)}: {', '.join(t.id for t in all_tiles[:6])}...); fix tiles="
            )
        all_tiles = [t for t in all_tiles if t.id in wanted]
    # scenes per tile (footprints padded by a pixel: the warp's own check decides per window)
    pad = grid.resolution
    per_tile: dict[str, list[int]] = {t.id: [] for t in all_tiles}
    kept: list[SourceScene] = []
    for s, fp in usable:
        hits = [t.id for t in all_tiles if fp.intersects(t.geobox.extent.buffer(pad))]
        if not hits:
            log.info("%s: footprint misses every tile of the area; left out", s.id)
            counts["outside_area"] += 1
            continue
        for tid in hits:
            per_tile[tid].append(len(kept))
        kept.append(s)
    if not kept:
        raise InputError(
            f"{scene_label(usable[0][0])}: none of the {len(usable)} scenes overlaps the area "
            f"({area.boundingbox} in {grid.crs}); fix grid.bounds / grid.region or scenes="
        )
    counts["scenes"] = len(kept)
    out_dir = Path(out_dir)
    tasks: list[TileTask] = []
    for label, (d0, d1) in ranges.items():
        in_period = [i for i, s in enumerate(kept) if d0 <= s.date <= d1]
        if not in_period:
            span = f"{kept[0].date}..{kept[-1].date}"
            raise InputError(
                f"{scene_label(kept[0])}: no scene of the area between {d0} and {d1} (period "
                f"{label}; {len(kept)} scenes, dates {span}); widen the period or add scenes"
            )
        chosen = set(in_period)
        for t in all_tiles:
            idx_t = tuple(i for i in per_tile[t.id] if i in chosen)
            if not idx_t:
                counts["empty"] += 1
                continue
            folder = out_dir / f"{name}_{label}"
            tasks.append(TileTask(t.id, label, idx_t, folder / f"{t.id}.tif"))
    plan = ArchivePlan(
        kept,
        grid,
        bands,
        spec,
        idx,
        name,
        ranges,
        resampling=resampling,
        min_clear_fraction=float(min_clear_fraction),
        block_size=int(block_size),
        on_error=on_error,
        skipped=skipped,
        overviews=bool(overviews),
    )
    return plan, tasks, counts


# --------------------------------------------------------------------------------------------
# one tile


class _SceneFailed(Exception):
    """A scene could not be read onto a window (wraps the InputError)."""

    def __init__(self, index: int, err: InputError) -> None:
        super().__init__(str(err))
        self.index = index
        self.err = err


def _scale_of(plan: ArchivePlan, scenes: Sequence[SourceScene]) -> tuple[float, float] | None:
    """The one (scale, offset) of the scenes' bands, or None when they differ."""
    pairs = {
        (float(s.scale.get(b, 1.0)), float(s.offset.get(b, 0.0)))
        for s in scenes
        for b in plan.bands
    }
    return pairs.pop() if len(pairs) == 1 else None


def _read_window(
    plan: ArchivePlan,
    reader: WarpReader,
    scenes: Sequence[tuple[int, SourceScene]],
    gbox: GeoBox,
    dtype: np.dtype,
    common: tuple[float, float] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (time, bands, rows, cols) stack and (time, rows, cols) clear mask of one window.

    Only the scenes that overlap the window are stacked. Returns the exclusion counts too.
    """
    h, w = gbox.shape.yx
    over = []
    for i, s in scenes:
        try:
            if reader.overlaps(s, gbox):
                over.append((i, s))
        except InputError as err:
            raise _SceneFailed(i, err) from None
    stack = np.empty((len(over), len(plan.bands), h, w), dtype)  # (t, b, h, w)
    clear = np.zeros((len(over), h, w), np.bool_)  # (t, h, w)
    counts = np.zeros(len(EXCLUSION_REASONS), np.int64)
    for t, (i, s) in enumerate(over):
        try:
            got = reader.read(s, gbox, plan.bands, out=stack[t])
        except InputError as err:
            raise _SceneFailed(i, err) from None
        clear[t] = got.clear
        counts += got.exclusions()
        if common is None:  # per-scene scaling: float32 reflectance
            for b, name in enumerate(plan.bands):
                band = stack[t, b]
                band *= np.float32(s.scale.get(name, 1.0))
                band += np.float32(s.offset.get(name, 0.0))
    return stack, clear, counts


SAMPLE_EDGE = 2**16
SAMPLE_CHUNK = 2**14
SAMPLE_CHUNKS = 8


@functools.lru_cache(maxsize=65536)
def _file_signature(path: str, size: int, mtime_ns: int) -> str:
    """Size and a BLAKE2b of the file's first and last 64 KiB and 8 chunks of 16 KiB between."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update(str(size).encode())
    with open(path, "rb") as f:
        starts = [0, max(0, size - SAMPLE_EDGE)]
        starts += [size * (k + 1) // (SAMPLE_CHUNKS + 1) for k in range(SAMPLE_CHUNKS)]
        for k, start in enumerate(starts):
            f.seek(start)
            digest.update(f.read(SAMPLE_EDGE if k < 2 else SAMPLE_CHUNK))
    return digest.hexdigest()


def file_signature(path: str | os.PathLike[str]) -> str:
    """A cheap content signature of a scene file (``?`` for one that cannot be read here).

    Size and modification time miss a file rewritten with both kept (``cp -p``, ``rsync -t``);
    a full digest reads the whole archive on every rerun. The signature reads about 256 KiB:
    the size, the first and last 64 KiB (a GeoTIFF's header and its tile offsets and byte
    counts, which change with any recompressed tile) and 8 chunks between. It is cached per
    (path, size, mtime, ctime) within a process.

    Args:
        path: the file.

    Returns:
        A hex digest.
    """
    try:
        st = os.stat(path)
        return _file_signature(os.fspath(path), st.st_size, st.st_mtime_ns ^ st.st_ctime_ns)
    except OSError:
        return "?"


def inputs_digest(scenes: Sequence[SourceScene]) -> str:
    """A digest of the scenes' files by content (:func:`file_signature`), not by path.

    Args:
        scenes: the scenes a tile was computed from, in date order.

    Returns:
        A hex digest (the ``INPUTS_DIGEST`` tag of a tile).
    """
    digest = hashlib.blake2b(digest_size=16)
    for s in scenes:
        files = [*s.bands.values(), *(m.path for m in s.masks)]
        if s.metadata is not None:
            files.append(s.metadata)
        digest.update(s.id.encode())
        for f in dict.fromkeys(str(f) for f in files):  # multi-band files once
            digest.update(file_signature(f).encode())
    return digest.hexdigest()


def _tags(
    plan: ArchivePlan, task: TileTask, scenes: Sequence[SourceScene], left_out: Sequence[str]
) -> dict[str, str]:
    d0, d1 = plan.periods[task.label]
    return {
        **stm_tags(plan.name, d0, d1, scenes, plan.spec, plan.idx),
        "TILE": task.tile,
        "RESAMPLING": plan.resampling,
        "MIN_CLEAR_FRACTION": f"{plan.min_clear_fraction:g}",
        "LEFT_OUT": ",".join(left_out),  # scenes that failed while being read (on_error=skip)
        "INPUTS_DIGEST": inputs_digest(scenes),  # the scenes' files by content
    }


def stale_reason(plan: ArchivePlan, task: TileTask) -> str | None:
    """Why a finished tile is not what this run would write (None: it is).

    A tile is kept on a rerun; one finished from other scenes (e.g. scenes added to the
    folder since), other metrics, resampling or grid would mix two inputs in one mosaic.

    Args:
        plan: this run's plan.
        task: the tile x period, whose file exists.

    Returns:
        A short reason, or None.
    """
    with open_raster(task.path) as src:
        tags = src.tags()
        descriptions = list(src.descriptions)
        gbox = plan.grid.tile(task.tile).geobox
        same_grid = (
            src.crs is not None
            and CRS(src.crs.to_wkt()) == gbox.crs
            and src.transform.almost_equals(gbox.affine)
            and src.shape == gbox.shape.yx
        )
    if not same_grid:
        return "another grid"
    if descriptions != plan.descriptions:
        return "other bands or metrics"
    if tags.get("RESAMPLING", plan.resampling) != plan.resampling:
        return f"resampling {tags.get('RESAMPLING')}, not {plan.resampling}"
    used = {x for key in ("SCENES", "LEFT_OUT") for x in tags.get(key, "").split(",") if x}
    wanted = {plan.scenes[i].id for i in task.scenes}
    if used != wanted:
        added, gone = len(wanted - used), len(used - wanted)
        return f"{added} scene(s) not in it, {gone} in it not in this run"
    if "INPUTS_DIGEST" in tags:  # tiles written before the tag was: scene ids only
        by_id = {s.id: s for s in plan.scenes}
        scenes = [by_id[x] for x in tags.get("SCENES", "").split(",") if x in by_id]
        if inputs_digest(scenes) != tags["INPUTS_DIGEST"]:
            return "scene files rewritten since (same scene ids, other content)"
    return None


def _compute_tile(
    plan: ArchivePlan,
    task: TileTask,
    indices: Sequence[int],
    progress: bool,
    left_out: Sequence[str] = (),
) -> tuple[int, np.ndarray]:
    """Write one tile from the given scenes; (observations, exclusion counts)."""
    tile: Tile = plan.grid.tile(task.tile)
    gbox = tile.geobox
    scenes = [(i, plan.scenes[i]) for i in indices]
    common = _scale_of(plan, [s for _, s in scenes])
    reader = WarpReader(plan.resampling, plan.min_clear_fraction)
    # numeric type of the raw stack: the band files' common dtype (float32 when rescaling)
    dtypes = []
    for _, s in scenes:
        for b in plan.bands:
            with open_raster(s.bands[b]) as src:
                i = s.bidx(b)
                dtypes.append(np.dtype(src.dtypes[i - 1] if i <= src.count else src.dtypes[0]))
    dtype = np.result_type(*dtypes) if common is not None else np.dtype(np.float32)
    scale, offset = common if common is not None else (1.0, 0.0)
    descriptions = plan.descriptions
    wins = list(windows(gbox, plan.block_size))
    excluded = np.zeros(len(EXCLUSION_REASONS), np.int64)
    observations = 0

    def read(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _read_window(plan, reader, scenes, wins[k][1], dtype, common)

    try:
        with (
            COGWriter(
                task.path,
                crs=plan.grid.odc_crs.to_wkt(),
                transform=gbox.affine,
                width=gbox.shape.x,
                height=gbox.shape.y,
                count=len(descriptions),
                dtype="int16",
                nodata=OUT_NODATA,
                descriptions=descriptions,
                tags=_tags(plan, task, [s for _, s in scenes], left_out),
                band_tags=[{"SCALE": str(1 / OUT_SCALE)}] * (len(descriptions) - 1)
                + [{"SCALE": "1"}],
                overwrite=True,
                overviews=plan.overviews,
            ) as writer,
            ThreadPoolExecutor(1, thread_name_prefix="ingest-read") as pool,
            tqdm(
                total=len(wins), desc=f"{task.label}/{task.tile}", disable=not progress, unit="win"
            ) as bar,
        ):
            _set_scales(
                writer, [1 / OUT_SCALE] * (len(descriptions) - 1) + [1.0], [0.0] * len(descriptions)
            )
            pending = pool.submit(read, 0)
            for k, (window, _) in enumerate(wins):
                stack, clear, counts = pending.result()
                if k + 1 < len(wins):
                    pending = pool.submit(read, k + 1)
                block = compute_stm_int16(
                    stack,
                    clear,
                    plan.spec,
                    plan.idx,
                    scale=scale,
                    offset=offset,
                    nodata=None,  # fill and out-of-range pixels are already not clear
                    out_scale=OUT_SCALE,
                    fill=OUT_NODATA,
                )
                writer.write(block, window)
                excluded += counts
                observations += clear.shape[0] * clear.shape[1] * clear.shape[2]
                bar.update()
    finally:
        reader.close()
    return observations, excluded


def ingest_tile(
    plan: ArchivePlan, task: TileTask, overwrite: bool = False, progress: bool = False
) -> TileResult:
    """Compute one tile x period and write its COG atomically (a Dask task).

    With ``on_error="skip"``, a scene that fails while being read is left out and the tile is
    computed again without it (nothing half-written is ever published).

    Args:
        plan: the plan.
        task: the tile and period.
        overwrite: recompute a tile that exists; otherwise it is kept.
        progress: a progress bar over the tile's windows.

    Returns:
        What was done.

    Raises:
        InputError: for a scene that cannot be read (``on_error="fail"``), naming its file.
    """
    if task.path.exists() and not overwrite:
        return TileResult(task, "kept")
    indices = list(task.scenes)
    failed: list[str] = []
    gone: list[int] = []
    while True:
        try:
            left_out = [plan.scenes[i].id for i in gone]
            obs, excluded = _compute_tile(plan, task, indices, progress, left_out)
        except _SceneFailed as err:
            if plan.on_error == "fail":
                raise err.err from None
            log.warning("skipped: %s", err.err)
            failed.append(str(err.err))
            gone.append(err.index)
            indices.remove(err.index)
            if not indices:
                return TileResult(task, "empty", failed=failed, failed_scenes=gone)
            continue
        return TileResult(task, "written", obs, excluded, failed, gone)


# --------------------------------------------------------------------------------------------
# engines


def _run_local(
    plan: ArchivePlan,
    tasks: Sequence[TileTask],
    overwrite: bool,
    progress: bool,
    done: Callable[[TileResult], None],
) -> None:
    bad: set[int] = set()  # scenes found bad in one tile are not read again in the others
    for task in tasks:
        if bad.intersection(task.scenes):
            task = dataclasses.replace(task, scenes=tuple(i for i in task.scenes if i not in bad))
        if not task.scenes:
            done(TileResult(task, "empty"))
            continue
        res = ingest_tile(plan, task, overwrite, progress)
        bad.update(res.failed_scenes)
        done(res)


def _run_dask(
    plan: ArchivePlan,
    tasks: Sequence[TileTask],
    overwrite: bool,
    progress: bool,
    done: Callable[[TileResult], None],
    address: str,
) -> None:
    """One ``dask.distributed`` task per tile x period, a bounded number in flight."""
    import itertools

    from dask.distributed import Client, as_completed

    try:
        client = Client(address, timeout="20s")
    except (OSError, TimeoutError) as err:
        raise ConfigError(
            f"dask_address={address}: cannot connect to a Dask scheduler ({err}); start one or "
            "set dask_address=null to run locally"
        ) from None
    with client, tqdm(total=len(tasks), desc="tiles", disable=not progress, unit="tile") as bar:
        remote_plan = client.scatter(plan, broadcast=True)
        limit = max(2, 2 * sum(client.nthreads().values()))
        todo = iter(tasks)

        def submit(task: TileTask) -> Any:
            return client.submit(ingest_tile, remote_plan, task, overwrite, False, pure=False)

        running = as_completed([submit(t) for t in itertools.islice(todo, limit)])
        for fut in running:
            done(fut.result())
            bar.update()
            nxt = next(todo, None)
            if nxt is not None:
                running.add(submit(nxt))


# --------------------------------------------------------------------------------------------
# VRT mosaics


def write_vrt(
    tiles: Sequence[str | Path], out: str | Path, tags: Mapping[str, str] | None = None
) -> Path:
    """A VRT mosaic of tiles on one grid (band descriptions, nodata, scale/offset kept).

    Written without GDAL's Python bindings: the XML of ``gdalbuildvrt`` for non-overlapping
    tiles (one ``SimpleSource`` per tile and band, paths relative to the VRT), atomically.

    Args:
        tiles: tile COGs with the same CRS, resolution, bands and dtype.
        out: the ``.vrt`` file.
        tags: dataset metadata (default: the first tile's, less the per-tile ones).

    Returns:
        ``out``.

    Raises:
        InputError: for no tiles or tiles on different grids.
    """
    out = Path(out)
    paths = [Path(p) for p in tiles]
    if not paths:
        raise InputError(f"{out}: no tiles to mosaic; nothing was computed for this period")
    infos = []
    for p in paths:
        with open_raster(p) as src:
            infos.append(
                {
                    "path": p,
                    "crs": src.crs,
                    "transform": src.transform,
                    "shape": (src.height, src.width),
                    "count": src.count,
                    "dtype": src.dtypes[0],
                    "nodata": src.nodata,
                    "descriptions": src.descriptions,
                    "scales": src.scales,
                    "offsets": src.offsets,
                    "block": src.block_shapes[0],
                    "tags": src.tags(),
                }
            )
    first = infos[0]
    res = (first["transform"].a, first["transform"].e)
    for info in infos[1:]:
        same = (
            info["crs"] == first["crs"]
            and (info["transform"].a, info["transform"].e) == res
            and info["count"] == first["count"]
            and info["dtype"] == first["dtype"]
        )
        if not same:
            raise InputError(
                f"{info['path']}: not on the grid of {first['path']} (CRS, pixel size, bands or "
                "dtype differ); remove the stray tile or rerun with overwrite=true"
            )
    x0 = min(i["transform"].c for i in infos)
    y0 = max(i["transform"].f for i in infos)
    x1 = max(i["transform"].c + i["shape"][1] * res[0] for i in infos)
    y1 = min(i["transform"].f + i["shape"][0] * res[1] for i in infos)
    width, height = round((x1 - x0) / res[0]), round((y1 - y0) / res[1])
    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    srs = ET.SubElement(root, "SRS")  # no axis mapping: GDAL takes x/y (traditional GIS) order
    srs.text = first["crs"].to_wkt()
    ET.SubElement(root, "GeoTransform").text = f"{x0!r}, {res[0]!r}, 0.0, {y0!r}, 0.0, {res[1]!r}"
    meta = ET.SubElement(root, "Metadata")
    drop = {
        "TILE",
        "SCENES",
        "N_SCENES",
        "FIRST_DATE",
        "LAST_DATE",
        "AREA_OR_POINT",
        "INPUTS_DIGEST",
    }
    md = (
        dict(tags)
        if tags is not None
        else {k: v for k, v in first["tags"].items() if k not in drop}
    )
    md["N_TILES"] = str(len(infos))
    for k, v in md.items():
        ET.SubElement(meta, "MDI", key=k).text = str(v)
    gdal_type = {
        "int16": "Int16",
        "uint16": "UInt16",
        "uint8": "Byte",
        "int32": "Int32",
        "float32": "Float32",
        "float64": "Float64",
    }[first["dtype"]]
    out_dir = out.parent.resolve()
    for b in range(first["count"]):
        band = ET.SubElement(root, "VRTRasterBand", dataType=gdal_type, band=str(b + 1))
        if first["descriptions"][b]:
            ET.SubElement(band, "Description").text = first["descriptions"][b]
        if first["nodata"] is not None:
            ET.SubElement(band, "NoDataValue").text = f"{first['nodata']:g}"
        ET.SubElement(band, "Offset").text = repr(float(first["offsets"][b]))
        ET.SubElement(band, "Scale").text = repr(float(first["scales"][b]))
        for info in infos:
            src = ET.SubElement(band, "SimpleSource")
            rel = os.path.relpath(Path(info["path"]).resolve(), out_dir)
            ET.SubElement(src, "SourceFilename", relativeToVRT="1").text = Path(rel).as_posix()
            ET.SubElement(src, "SourceBand").text = str(b + 1)
            h, w = info["shape"]
            by, bx = info["block"]
            ET.SubElement(
                src,
                "SourceProperties",
                RasterXSize=str(w),
                RasterYSize=str(h),
                DataType=gdal_type,
                BlockXSize=str(bx),
                BlockYSize=str(by),
            )
            ET.SubElement(src, "SrcRect", xOff="0", yOff="0", xSize=str(w), ySize=str(h))
            xoff = round((info["transform"].c - x0) / res[0])
            yoff = round((info["transform"].f - y0) / res[1])
            ET.SubElement(
                src, "DstRect", xOff=str(xoff), yOff=str(yoff), xSize=str(w), ySize=str(h)
            )
    ET.indent(root)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        ET.ElementTree(root).write(tmp, encoding="utf-8")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


# --------------------------------------------------------------------------------------------
# the whole run


def _clean_partials(folders: Sequence[Path]) -> int:
    """Remove temporary files a killed run left (``.X####_Y####.tif.*.partial*``)."""
    n = 0
    for folder in folders:
        if folder.is_dir():
            for p in folder.glob(".X*_Y*.tif.*.partial*"):
                p.unlink(missing_ok=True)
                n += 1
    return n


def _iter_results(results: Sequence[TileResult], label: str) -> Iterator[TileResult]:
    return (r for r in results if r.task.label == label)


def ingest(
    scenes: Sequence[SourceScene],
    out_dir: str | Path,
    periods: Mapping[str, Sequence[Any]],
    *,
    grid: TargetGrid | None = None,
    bands: Sequence[str] | None = None,
    metrics: Sequence[str] | MetricSpec = ("min", "p25", "p50", "p75", "max"),
    indices: Sequence[str] = (),
    name: str | None = None,
    bounds: Sequence[float] | None = None,
    region: str | Path | None = None,
    tiles: Sequence[str] | None = None,
    valid_range: Sequence[float] | None = None,
    resampling: str = "bilinear",
    min_clear_fraction: float = 1.0,
    block_size: int = 512,
    on_error: str = "fail",
    overviews: bool = False,
    overwrite: bool = False,
    workers: int | None = None,
    dask_address: str | None = None,
    progress: bool = True,
    skipped: Sequence[str] = (),
) -> dict[str, Path]:
    """Composite scenes in any CRS into STM tiles of the grid, one VRT mosaic per period.

    Args:
        scenes: the scenes (any CRS, resolution and product).
        out_dir: the output folder.
        periods: label -> [start, end].
        grid: the target grid (default EPSG:3035, 30 m, 30 km tiles).
        bands: bands to composite (default: the first scene's).
        metrics: metric names.
        indices: spectral indices.
        name: output prefix of the VRTs (default: by product).
        bounds: the area, [left, bottom, right, top] in the grid's CRS (default: the scenes).
        region: the area as a vector file.
        tiles: only these tile ids.
        valid_range: [lo, hi] raw DNs instead of each product's range.
        resampling: reflectance resampling.
        min_clear_fraction: share of a target pixel clear in the native QA.
        block_size: window edge in pixels.
        on_error: ``fail`` or ``skip`` for bad scenes.
        overviews: internal overviews in each tile COG (see :func:`plan_archive`).
        overwrite: recompute tiles that exist (otherwise they are kept: a rerun computes only
            the missing ones).
        workers: kernel threads (None: all cores).
        dask_address: a ``dask.distributed`` scheduler: one task per tile x period.
        progress: progress bars (per tile locally, over tiles with Dask).
        skipped: lines of scenes discovery left out (counted in the log).

    Returns:
        label -> the period's VRT.

    Raises:
        ConfigError: for bad settings.
        InputError: for bad scenes (``on_error="fail"``) or no scene in a period.
    """
    out_dir = Path(out_dir)
    plan, tasks, counts = plan_archive(
        scenes,
        out_dir,
        periods,
        grid,
        bands,
        metrics,
        indices,
        name,
        bounds,
        region,
        tiles,
        valid_range,
        resampling,
        min_clear_fraction,
        block_size,
        on_error,
        overviews,
    )
    counts["bad"] += len(skipped)
    removed = _clean_partials([out_dir / f"{plan.name}_{label}" for label in plan.periods])
    if removed:
        log.info("removed %d temporary files of an interrupted run", removed)
    todo = [t for t in tasks if overwrite or not t.path.exists()]
    n_kept = len(tasks) - len(todo)
    if not overwrite:
        stale = [(t, r) for t in tasks if t.path.exists() and (r := stale_reason(plan, t))]
        if stale:
            (first, why), n = stale[0], len(stale)
            raise InputError(
                f"{first.path}: finished by an earlier run from other inputs ({why}; {n} of "
                f"{n_kept} finished tiles differ); set overwrite=true to recompute them, or "
                "out_dir= to a new folder"
            )
    log.info(
        "%s: %d scenes on %d tile x period outputs (%s, %g m, %g km tiles): %d to compute, %d "
        "finished before (kept); scenes left out: %d outside the area, %d outside every period, "
        "%d bad",
        plan.name,
        counts["scenes"],
        len(tasks),
        plan.grid.crs,
        plan.grid.resolution,
        plan.grid.tile_size / 1000,
        len(todo),
        n_kept,
        counts["outside_area"],
        counts["outside_periods"],
        counts["bad"],
    )
    computed = [t for t in todo if t.scenes]
    raw = len(computed) * plan.grid.tile_pixels**2 * len(plan.descriptions) * 2  # int16
    check_free_space(
        out_dir,
        raw // 4,
        f"the {len(computed)} STM tiles to compute ({format_bytes(raw)} uncompressed, rarely "
        "compressed below a quarter)",
    )
    results: list[TileResult] = []
    threads = _set_threads(workers)
    try:
        if dask_address:
            _run_dask(plan, todo, overwrite, progress, results.append, dask_address)
        else:
            _run_local(plan, todo, overwrite, progress, results.append)
    except DiskFullError as err:
        n_done = sum(t.path.exists() for t in tasks)
        raise DiskFullError(
            f"{err}; {n_done} of {len(tasks)} tiles are finished and kept (the rerun computes "
            "the others)"
        ) from None
    finally:
        _set_threads(threads)
    failed = sorted({f for r in results for f in r.failed})
    written = sum(r.status == "written" for r in results)
    log.info(
        "%s: %d tiles written, %d kept, %d without readable scenes; %d scenes failed while "
        "reading (left out)",
        plan.name,
        written,
        n_kept + sum(r.status == "kept" for r in results),
        sum(r.status == "empty" for r in results),
        len(failed),
    )
    out: dict[str, Path] = {}
    for label, (d0, d1) in plan.periods.items():
        done = [r for r in _iter_results(results, label) if r.status == "written"]
        obs = sum(r.observations for r in done)
        exc = sum((r.excluded for r in done), np.zeros(len(EXCLUSION_REASONS), np.int64))
        if done:
            log.info(
                "%s %s..%s: %d observations in %d tiles, %d used (CLEAR_COUNT); excluded: fill "
                "(or outside the scene) %d, QA %d, saturation (QA_RADSAT) %d, out of the valid "
                "range %d",
                plan.name,
                d0,
                d1,
                obs,
                len(done),
                obs - int(exc.sum()),
                *(int(v) for v in exc),
            )
        paths = [t.path for t in tasks if t.label == label and t.path.exists()]
        vrt = out_dir / f"{plan.name}_{label}.vrt"
        if not paths:
            raise InputError(
                f"{vrt}: no tile of period {label} could be computed; every scene failed while "
                f"being read ({len(failed)}, e.g. {failed[0] if failed else 'none'}); fix or "
                "replace the scenes"
            )
        out[label] = write_vrt(paths, vrt)
    return out


def detect_source(path: str | Path) -> str | None:
    """The kind of input at a path (``stac``, ``force``; None: C2 / S2 scenes, detected later).

    A ``.json`` file is a STAC catalog, a folder with ``datacube-definition.prj`` a FORCE cube.

    Args:
        path: ``scenes=`` / ``stac=``.

    Returns:
        ``stac``, ``force`` or None.
    """
    p = Path(path)
    if p.suffix.lower() == ".json" and not p.is_dir():
        return "stac"
    if p.is_dir() and (p / "datacube-definition.prj").is_file():
        return "force"
    return None


def ingest_folder(
    folder: str | Path,
    out_dir: str | Path,
    periods: Mapping[str, Sequence[Any]],
    source: str | None = None,
    boa_offset: float | None = None,
    on_error: str = "fail",
    **kwargs: Any,
) -> dict[str, Path]:
    """:func:`ingest` of the scenes of a folder as delivered (:func:`discover_sources`).

    Args:
        folder: Landsat C2 L2 and/or Sentinel-2 L2A scenes, nested or flat; a local STAC
            catalog / ItemCollection JSON (``source="stac"``, :mod:`bsrlc.stm.stac`); or a
            FORCE Level-2 datacube (``source="force"``, :mod:`bsrlc.stm.force`).
        out_dir: the output folder.
        periods: label -> [start, end].
        source: ``landsat_c2``, ``sentinel2_l2a``, ``stac``, ``force`` or None / ``auto``
            (detect: a ``.json`` file is a STAC catalog, a folder with
            ``datacube-definition.prj`` a FORCE cube, anything else C2 / S2 scenes).
        boa_offset: Sentinel-2 BOA_ADD_OFFSET for scenes without metadata.
        on_error: ``fail`` or ``skip``.
        **kwargs: passed to :func:`ingest`; for ``force`` without ``grid``, the cube's grid.

    Returns:
        label -> the period's VRT.
    """
    product = None if source in (None, "", "auto") else source
    if product is None:
        product = detect_source(folder)
    if product == "stac":
        from bsrlc.stm.stac import discover_stac

        found = discover_stac(folder, on_error)
    elif product == "force":
        from bsrlc.stm.force import discover_force

        cube = discover_force(
            folder,
            on_error,
            resolution=kwargs.pop("cube_resolution", None),
            sensors=kwargs.pop("force_sensors", None),
        )
        found = cube.discovery
        if kwargs.get("grid") is None:
            kwargs["grid"] = cube.grid
    else:
        found = discover_sources(folder, product, on_error, boa_offset)
    return ingest(
        found.scenes, out_dir, periods, on_error=on_error, skipped=found.skipped, **kwargs
    )


__all__ = [
    "EXCLUSION_REASONS",
    "PRODUCT_NAMES",
    "ArchivePlan",
    "TileResult",
    "TileTask",
    "check_periods",
    "detect_source",
    "ingest",
    "ingest_folder",
    "ingest_tile",
    "plan_archive",
    "stale_reason",
    "write_vrt",
]
