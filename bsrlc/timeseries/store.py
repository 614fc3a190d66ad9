"""A compact per tile-year store of clear observations (day-indexed sparse layout).

The annual land-cover models (BSRLC+) take, per pixel and year, a 365-day series per band in
which each clear observation sits at its day and every other day is 0. Dense, that is
``bands x 365`` values per pixel: a 3000 x 3000 tile-year of 6 bands is about 40 GB as int16,
although a pixel has a few dozen clear days at most. This module keeps only the observations
and :mod:`bsrlc.timeseries.encoding` scatters them into the dense encoding per batch.

Layout of one tile-year, a folder ``{out_dir}/{tile}_{year}.obs/`` (written as
``.obs.partial`` and renamed when complete, so it appears whole or not at all):

- ``ptr.npy``: int64 (H*W + 1,), CSR pointers: pixel ``p = row * W + col`` owns observations
  ``ptr[p]:ptr[p + 1]`` (row-major pixel order; a pixel without clear observation has none);
- ``day.npy``: uint16 (n_obs,), the day index 1..365 (see below), ascending within a pixel;
- ``values.npy``: int16 (n_obs, bands), surface reflectance x 10000 (each source's DNs scaled
  by its ``sensor.scale``/``offset``, so sensors with other DN encodings, such as Landsat C2's
  ``x 2.75e-5 - 0.2``, are stored alike; rounded and clipped to +-32767);
- ``sensor.npy``: uint8 (n_obs,), the index of the source the observation came from;
- ``meta.json``: year, bands, sources (names, scene counts), tile id, size, window offset in
  the scenes' grid, CRS, transform, ``n_obs``, ``n_empty`` (pixels without any clear
  observation in the year) and the rules below.

Every file is a plain ``.npy`` array, opened memory-mapped for reading: a batch reads only its
pixels' observations, DataLoader workers share the page cache and nothing is decompressed
(zarr is not installed here; for random access by pixel an uncompressed memmap is also the
fastest layout). ``day``, ``values`` and ``sensor`` are written strip by strip as they are made
(their length is known only at the end), which ``numpy.lib.format`` cannot do: see
:class:`_NpyAppender`.

Rules (each tested in tests/test_timeseries.py):

- **Clear**: exactly the observations the STM step uses (:class:`bsrlc.stm.compose.SceneReader`:
  not fill, QA clear, not saturated, within ``valid_range``).
- **Leap years**: 29 February is merged into 28 February (day 59; both observed: the same-day
  rule below), and every later day takes its non-leap index, so day 60 is 1 March and day 365
  is 31 December in every year: the same calendar day has the same index in all years, which
  is what phenology needs (folding day 366 into 365 instead would shift March-December by one).
- **Two scenes of one source on one day** (overlapping orbits, duplicated deliveries): the mean
  of the clear ones, rounded half to even.
- **Two sources on one day** (e.g. Sentinel-2 and Landsat): the source listed first wins where
  it is clear (list the higher-resolution one first); elsewhere the next one's.
- **Scenes straddling tiles**: a tile reads only its window of each scene (windowed reading), so
  every scene contributes to each tile exactly its pixels inside that tile.
- **Dates**: scenes are dated from their names (``sensor.date_regex``); a name without a date
  fails with the file named (:func:`bsrlc.stm.compose.discover_scenes`). From a folder, scenes
  of other years are skipped (a folder usually holds an archive); a scene listed explicitly
  whose date lies outside the year fails.
- **Bands**: every source gives every band (same output names); a band missing in one sensor's
  files fails with the file named (:func:`bsrlc.stm.compose.plan_stm`).
- **No clear observation in the year**: the pixel keeps an empty range (its encoding is all
  zero, observed flag 0 included); such pixels are counted (``n_empty`` in meta.json, logged)
  and :meth:`ObservationStore.counts` shows them per pixel.

Tiles: with ``tile_size`` (pixels) the scenes' grid is cut into tiles ``X{i:04d}_Y{j:04d}``
(column and row tile index from the grid's upper-left corner); without it the whole grid is one
tile ``X0000_Y0000``. Scenes as delivered (any CRS and resolution; Landsat C2, Sentinel-2 L2A,
STAC, files) go through :func:`build_archive_store` instead: each is warped onto the tiles of a
:class:`bsrlc.stm.grid.TargetGrid` (tile ids as ``python -m bsrlc.stm source=...`` names them)
with the STM ingest's reader, strip by strip, each scene with its own scale and offset.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from bsrlc.errors import ConfigError, InputError
from bsrlc.stm.compose import (
    BandsArg,
    Scene,
    SceneReader,
    SensorConfig,
    StmPlan,
    discover_scenes,
    plan_stm,
    split_bands,
)

log = logging.getLogger(__name__)

N_DAYS = 365
"""Days in the encoding (leap years: 29 February merged into 28 February)."""
VALUE_SCALE = 1e-4
"""Reflectance per stored unit of ``values``."""
FORMAT = "bsrlc-observations-1"
SUFFIX = ".obs"


def day_index(date: dt.date) -> int:
    """The day's index 1..365: its day of year, with 29 February merged into 28 February.

    Args:
        date: the acquisition date.

    Returns:
        1..365; 1 March is 60 and 31 December is 365 in every year.
    """
    doy = date.timetuple().tm_yday
    leap = date.year % 4 == 0 and (date.year % 100 != 0 or date.year % 400 == 0)
    if leap and doy >= 60:  # 29 Feb (60) -> 59, 1 Mar (61) -> 60, ..., 31 Dec (366) -> 365
        return doy - 1
    return doy


@dataclass(frozen=True)
class Source:
    """One sensor's scenes for the store, all on the store's grid.

    Attributes:
        name: recorded in meta.json (``sensor.npy`` holds the source's position in the list).
        scenes: the scenes (from :func:`bsrlc.stm.compose.discover_scenes`).
        sensor: how to read them (QA decoder, scale/offset, valid range).
        bands: output band name -> band name in the files (or a list of names); the output
            names must be the same for every source.
    """

    name: str
    scenes: Sequence[Scene]
    sensor: SensorConfig
    bands: BandsArg


def folder_source(
    folder: str | Path,
    sensor: SensorConfig,
    bands: BandsArg,
    year: int,
    name: str | None = None,
    glob: str = "*.tif",
    band_file_pattern: str | None = None,
) -> Source:
    """The scenes of one year in a folder, as a :class:`Source` (other years are skipped).

    Args:
        folder: the scene folder (see :func:`bsrlc.stm.compose.discover_scenes`).
        sensor: the sensor's reading rules.
        bands: the bands.
        year: the year.
        name: the source's name (None: ``sensor.name``).
        glob: which files are scenes.
        band_file_pattern: for one file per band.

    Returns:
        The source.

    Raises:
        InputError: for a folder without scenes of the year (naming it and the years it has),
            or a scene name without a date.
    """
    scenes = discover_scenes(folder, sensor, bands, glob, band_file_pattern)
    chosen = [s for s in scenes if s.date.year == year]
    if not chosen:
        years = sorted({s.date.year for s in scenes})
        raise InputError(
            f"{folder}: no scene of {year} ({len(scenes)} scenes of years "
            f"{', '.join(map(str, years))}); set year= to one of them or point scenes= at "
            "another folder"
        )
    log.info(
        "%s: %d scenes of %d (%d of other years skipped)",
        folder,
        len(chosen),
        year,
        len(scenes) - len(chosen),
    )
    return Source(name or sensor.name, chosen, sensor, bands)


def _check_year(sources: Sequence[Source], year: int) -> None:
    for src in sources:
        for scene in src.scenes:
            if scene.date.year != year:
                raise InputError(
                    f"{scene.files[0]}: dated {scene.date} (from its name), outside {year}; "
                    f"drop it from the list, or pass its folder (scenes of other years are "
                    f"skipped there), or set year={scene.date.year}"
                )


def plan_sources(sources: Sequence[Source], year: int) -> list[StmPlan]:
    """Check the sources before anything is written: year, bands, grids, masks.

    Args:
        sources: the sources, in priority order.
        year: the year every scene must fall in.

    Returns:
        One plan per source (for :class:`bsrlc.stm.compose.SceneReader`).

    Raises:
        InputError: for a scene outside the year, a band missing in a sensor's files, sources
            on different grids, a mask of another shape (each naming the file).
        ConfigError: for no source, sources with different band names, or more than 255.
    """
    if not sources:
        raise ConfigError("scenes: no source given; set scenes=FOLDER (and sensor=)")
    if len(sources) > 255:
        raise ConfigError(f"{len(sources)} sources: at most 255 fit sensor.npy's uint8; merge some")
    _check_year(sources, year)
    names0 = split_bands(sources[0].bands)[0]
    plans = []
    for src in sources:
        names = split_bands(src.bands)[0]
        if names != names0:
            raise ConfigError(
                f"source {src.name}: bands {names} differ from {sources[0].name}'s {names0}; "
                "give every source the same output band names (map file names with a dict)"
            )
        if not src.scenes:
            raise InputError(f"source {src.name}: no scenes of {year}; drop it or add scenes")
        plans.append(plan_stm(src.scenes, src.bands, ["count"], [], src.sensor))
    ref = plans[0].grid
    for p in plans[1:]:
        g = p.grid
        if (
            g.crs != ref.crs
            or (g.width, g.height) != (ref.width, ref.height)
            or not (g.transform.almost_equals(ref.transform, precision=1e-6))
        ):
            raise InputError(
                f"{g.path}: grid {g.width}x{g.height} at {tuple(g.transform)[:6]} ({g.crs}) "
                f"differs from {ref.path} ({ref.width}x{ref.height} at "
                f"{tuple(ref.transform)[:6]}, {ref.crs}); put all sources on one grid first "
                "(python -m bsrlc.stm source=... grids archives; gdalwarp -tap -tr otherwise)"
            )
    return plans


def _to_store_units(stack: np.ndarray, sensor: SensorConfig) -> np.ndarray:
    """Raw DNs (t, b, h, w) -> reflectance x 10000 as int16 (float32 arithmetic)."""
    scale = np.float32(sensor.scale / VALUE_SCALE)
    offset = np.float32(sensor.offset / VALUE_SCALE)
    out = stack.astype(np.float32)
    out *= scale
    out += offset
    np.rint(out, out=out)
    np.clip(out, -32767, 32767, out=out)
    return out.astype(np.int16)


def merge_observations(
    days: Sequence[np.ndarray],
    refl: Sequence[np.ndarray],
    clear: Sequence[np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Merge the sources' scenes of one window into one observation per pixel and day.

    Applies the same-day and source-priority rules of the module docstring.

    Args:
        days: per source, (t,) day index of each scene.
        refl: per source, (t, bands, h, w) int16 reflectance x 10000.
        clear: per source, (t, h, w) bool.

    Returns:
        (counts, day, values, sensor): int64 (h*w,) observations per pixel; uint16 (n,) day
        index; int16 (n, bands) reflectance x 10000; uint8 (n,) source index; sorted by pixel,
        then day.
    """
    shapes = [c.shape[1:] for c in clear]
    h, w = shapes[0]
    n_bands = next((r.shape[1] for r in refl if r.ndim == 4), 0)
    all_days = np.unique(np.concatenate([np.asarray(d, np.int64) for d in days]))
    slot_of = {int(d): i for i, d in enumerate(all_days)}  # ascending: obs come out day-sorted
    vals = np.zeros((len(all_days), n_bands, h, w), np.int16)
    ok = np.zeros((len(all_days), h, w), np.bool_)
    sens = np.zeros((len(all_days), h, w), np.uint8)
    for k, (d_k, r_k, c_k) in enumerate(zip(days, refl, clear, strict=True)):
        d_k = np.asarray(d_k)
        for d in np.unique(d_k):
            ts = np.flatnonzero(d_k == d)
            slot = slot_of[int(d)]
            if len(ts) == 1:
                v, c = r_k[ts[0]], c_k[ts[0]]
            else:  # one source, several scenes on one day: mean of the clear ones
                c_t = c_k[ts]
                n = c_t.sum(axis=0)
                total = (r_k[ts].astype(np.float32) * c_t[:, None]).sum(axis=0)
                v = np.rint(total / np.maximum(n, 1)).astype(np.int16)
                c = n > 0
            new = c & ~ok[slot]  # sources are in priority order: fill only what is still empty
            if new.any():
                np.copyto(vals[slot], v, where=new[None])
                ok[slot] |= new
                sens[slot][new] = k
    ok_pd = ok.reshape(len(all_days), h * w).T  # (pixels, days)
    pix, slot_idx = np.nonzero(ok_pd)  # row-major over (pixel, day): sorted by pixel, then day
    counts = np.bincount(pix, minlength=h * w).astype(np.int64)
    values = vals.reshape(len(all_days), n_bands, h * w)[slot_idx, :, pix]
    day = all_days[slot_idx].astype(np.uint16)
    sensor = sens.reshape(len(all_days), h * w)[slot_idx, pix]
    return counts, day, values, sensor


def window_observations(
    plans: Sequence[StmPlan], readers: Sequence[SceneReader], window: Window
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The clear observations of one window of on-grid scenes, per pixel (row-major) and day.

    Args:
        plans: one plan per source, in priority order.
        readers: a :class:`~bsrlc.stm.compose.SceneReader` per plan.
        window: the window of the grid.

    Returns:
        See :func:`merge_observations`.
    """
    days, refl, clear = [], [], []
    for p, reader in zip(plans, readers, strict=True):
        stack, c = reader.read(window)
        refl.append(_to_store_units(stack, p.sensor))
        clear.append(c)
        days.append(np.array([day_index(s.date) for s in p.scenes]))
        del stack
    return merge_observations(days, refl, clear)


class _NpyAppender:
    """A ``.npy`` file written in pieces along its first axis, the length fixed at close.

    Hand-written because numpy's ``.npy`` writers need the shape up front and the number of
    observations is known only after the last strip. The header is reserved at a fixed size
    (padded with spaces, which the format allows) and rewritten with the final shape.

    Args:
        path: the file.
        dtype: the array's dtype.
        tail: the shape after the first axis.
    """

    HEADER = 128  # bytes, magic and length included; a multiple of 64 as the format asks

    def __init__(self, path: Path, dtype: Any, tail: tuple[int, ...] = ()) -> None:
        self.path, self.dtype, self.tail, self.n = path, np.dtype(dtype), tail, 0
        self.f = open(path, "wb")  # closed in close()
        self.f.write(self._header(10**15))

    def _header(self, n: int) -> bytes:
        shape = (n, *self.tail)
        text = repr(
            {
                "descr": np.lib.format.dtype_to_descr(self.dtype),
                "fortran_order": False,
                "shape": shape,
            }
        )
        body = text.encode("latin1")
        pad = self.HEADER - 10 - len(body) - 1
        if pad < 0:
            raise ValueError(f"{self.path}: header too long for shape {shape}")
        return (
            b"\x93NUMPY\x01\x00"
            + (self.HEADER - 10).to_bytes(2, "little")
            + body
            + (b" " * pad + b"\n")
        )

    def append(self, a: np.ndarray) -> None:
        """Append rows (shape ``(k, *tail)``)."""
        a = np.ascontiguousarray(a, dtype=self.dtype)
        self.f.write(a.tobytes())
        self.n += a.shape[0]

    def close(self) -> None:
        """Write the final header and close."""
        self.f.seek(0)
        self.f.write(self._header(self.n))
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()


def tiles(height: int, width: int, tile_size: int | None) -> Iterator[tuple[str, Window]]:
    """The tiles of a grid: ``(id, window)``, row by row.

    Args:
        height: grid rows.
        width: grid columns.
        tile_size: tile edge in pixels; None = one tile.

    Yields:
        ``("X{i:04d}_Y{j:04d}", window)``; edge tiles are cut at the grid's edge.
    """
    size_r = height if tile_size is None else int(tile_size)
    size_c = width if tile_size is None else int(tile_size)
    if size_r <= 0 or size_c <= 0:
        raise ConfigError(f"tile_size={tile_size}: must be a positive number of pixels (or null)")
    for j, r0 in enumerate(range(0, height, size_r)):
        for i, c0 in enumerate(range(0, width, size_c)):
            yield (
                f"X{i:04d}_Y{j:04d}",
                Window(c0, r0, min(size_c, width - c0), min(size_r, height - r0)),
            )


def store_path(out_dir: str | Path, tile: str, year: int) -> Path:
    """The folder of one tile-year: ``{out_dir}/{tile}_{year}.obs``."""
    return Path(out_dir) / f"{tile}_{year}{SUFFIX}"


Strips = Callable[[int, int], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
"""``(first row, rows) -> (counts, day, values, sensor)`` of full-width strips of a tile."""


def _write_store(
    path: Path,
    h: int,
    w: int,
    n_bands: int,
    strips: Strips,
    meta: dict[str, Any],
    strip_pixels: int,
) -> Path:
    """Write a store folder atomically from full-width row strips (row-major pixel order)."""
    tmp = path.with_name(path.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    ptr = np.lib.format.open_memmap(tmp / "ptr.npy", mode="w+", dtype=np.int64, shape=(h * w + 1,))
    ptr[0] = 0
    day_f = _NpyAppender(tmp / "day.npy", np.uint16)
    val_f = _NpyAppender(tmp / "values.npy", np.int16, (n_bands,))
    sen_f = _NpyAppender(tmp / "sensor.npy", np.uint8)
    rows = max(1, strip_pixels // max(w, 1))
    n_obs = n_empty = 0
    t0 = time.perf_counter()
    try:
        for r0 in range(0, h, rows):
            nr = min(rows, h - r0)
            counts, day, values, sensor = strips(r0, nr)
            p0 = r0 * w
            ptr[p0 + 1 : p0 + nr * w + 1] = n_obs + np.cumsum(counts)
            n_obs += int(counts.sum())
            n_empty += int(np.count_nonzero(counts == 0))
            day_f.append(day)
            val_f.append(values)
            sen_f.append(sensor)
    finally:
        for f in (day_f, val_f, sen_f):
            f.close()
    ptr.flush()
    del ptr
    meta = {
        "format": FORMAT,
        **meta,
        "height": h,
        "width": w,
        "value_scale": VALUE_SCALE,
        "n_days": N_DAYS,
        "n_obs": n_obs,
        "n_empty": n_empty,
        "rules": {
            "leap": "29 Feb merged into 28 Feb (day 59); later days take their non-leap index",
            "same_day_one_source": "mean of the clear scenes",
            "same_day_sources": "first source in the list wins where clear",
        },
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    year = meta["year"]
    log.info(
        "%s: %d x %d px, %d observations (%.1f per pixel), %d pixels without a clear "
        "observation in %d, %.1f s",
        path,
        h,
        w,
        n_obs,
        n_obs / max(h * w, 1),
        n_empty,
        year,
        time.perf_counter() - t0,
    )
    if n_empty:
        log.warning(
            "%s: %d of %d pixels have no clear observation in %d (all-zero series, observed "
            "flag 0); add scenes or mask them out of training",
            path,
            n_empty,
            h * w,
            year,
        )
    return path


def build_tile(
    plans: Sequence[StmPlan],
    sources: Sequence[Source],
    year: int,
    tile: str,
    window: Window,
    path: str | Path,
    strip_pixels: int = 256 * 256,
) -> Path:
    """Write the store of one tile-year of on-grid scenes (atomically).

    Args:
        plans: from :func:`plan_sources`.
        sources: the sources (for names and meta.json).
        year: the year.
        tile: the tile id.
        window: the tile's window in the scenes' grid.
        path: the store folder to create.
        strip_pixels: pixels read at once (full-width row strips keep the row-major pixel
            order); memory ~ scenes x bands x strip_pixels x 8 B.

    Returns:
        The store folder.
    """
    h, w = int(window.height), int(window.width)
    readers = [SceneReader(p) for p in plans]

    def strips(r0: int, nr: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        win = Window(window.col_off, window.row_off + r0, w, nr)
        return window_observations(plans, readers, win)

    grid = plans[0].grid
    transform = grid.transform * grid.transform.translation(window.col_off, window.row_off)
    meta: dict[str, Any] = {
        "year": int(year),
        "tile": tile,
        "window": [int(window.col_off), int(window.row_off), w, h],
        "crs": grid.crs.to_string() if grid.crs is not None else None,
        "transform": list(transform)[:6],
        "bands": list(plans[0].bands),
        "sources": [
            {
                "name": s.name,
                "n_scenes": len(s.scenes),
                "scenes": [str(x.files[0]) for x in s.scenes],
            }
            for s in sources
        ],
    }
    try:
        return _write_store(Path(path), h, w, len(plans[0].bands), strips, meta, strip_pixels)
    finally:
        for r in readers:
            r.close()


def build_store(
    sources: Sequence[Source],
    out_dir: str | Path,
    year: int,
    tile_size: int | None = None,
    tiles_wanted: Sequence[str] | None = None,
    overwrite: bool = False,
    strip_pixels: int = 256 * 256,
) -> list[Path]:
    """Build the observation stores of one year, one per tile.

    Args:
        sources: the sources in priority order (the first wins on a shared day).
        out_dir: where the ``{tile}_{year}.obs`` folders go.
        year: the year.
        tile_size: tile edge in pixels; None = the whole grid as one tile.
        tiles_wanted: only these tile ids; None = all.
        overwrite: rebuild existing stores (otherwise they are kept).
        strip_pixels: see :func:`build_tile`.

    Returns:
        The store folders (built or kept).

    Raises:
        InputError: see :func:`plan_sources`; for a tile id that is not on the grid.
        ConfigError: see :func:`plan_sources`.
    """
    plans = plan_sources(sources, year)
    grid = plans[0].grid
    all_tiles = dict(tiles(grid.height, grid.width, tile_size))
    chosen = list(all_tiles) if tiles_wanted is None else [str(t) for t in tiles_wanted]
    for t in chosen:
        if t not in all_tiles:
            raise ConfigError(
                f"tiles: {t} is not a tile of the {grid.width}x{grid.height} grid with "
                f"tile_size={tile_size} ({len(all_tiles)} tiles, {next(iter(all_tiles))}..."
                f"{list(all_tiles)[-1]}); fix tiles= or tile_size="
            )
    out = []
    for t in chosen:
        path = store_path(out_dir, t, year)
        if path.exists() and not overwrite:
            log.info("%s exists: kept (overwrite=true rebuilds it)", path)
        else:
            build_tile(plans, sources, year, t, all_tiles[t], path, strip_pixels)
        out.append(path)
    return out


@dataclass
class Observations:
    """The observations of a batch of pixels, packed (the compact form batches travel in).

    Attributes:
        values: int16 (n, bands), reflectance x 10000.
        day: (n,) day index 1..365.
        sample: int64 (n,), the flat index of the pixel in the batch each observation is of.
        shape: the batch's pixel shape (``(B,)`` for points, ``(B, p, p)`` for patches).
        sensor: uint8 (n,) source index, or None.
    """

    values: Any
    day: Any
    sample: Any
    shape: tuple[int, ...]
    sensor: Any = None


class ObservationStore:
    """Reads one tile-year store (memory-mapped).

    Args:
        path: the ``.obs`` folder.

    Raises:
        InputError: for a missing or incomplete store (naming it and how to build it).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta_file = self.path / "meta.json"
        if not meta_file.is_file():
            hint = (
                " (a .partial folder: an interrupted build)"
                if self.path.with_name(self.path.name + ".partial").exists()
                else ""
            )
            raise InputError(
                f"{self.path}: not an observation store (no meta.json){hint}; build it with "
                "python -m bsrlc.timeseries scenes=DIR year=YYYY out=DIR"
            )
        self.meta: dict[str, Any] = json.loads(meta_file.read_text())
        if self.meta.get("format") != FORMAT:
            raise InputError(
                f"{meta_file}: format {self.meta.get('format')!r}, expected {FORMAT!r}; rebuild "
                "it with python -m bsrlc.timeseries ... overwrite=true"
            )
        try:
            self.ptr = np.load(self.path / "ptr.npy", mmap_mode="r")
            self.day = np.load(self.path / "day.npy", mmap_mode="r")
            self.values = np.load(self.path / "values.npy", mmap_mode="r")
            self.sensor = np.load(self.path / "sensor.npy", mmap_mode="r")
        except (OSError, ValueError) as err:
            raise InputError(
                f"{self.path}: damaged store ({err}); rebuild it with python -m bsrlc.timeseries "
                "... overwrite=true"
            ) from None
        self.height, self.width = int(self.meta["height"]), int(self.meta["width"])
        n = int(self.meta["n_obs"])
        if (
            self.ptr.shape != (self.height * self.width + 1,)
            or len(self.day) != n
            or (self.values.shape != (n, len(self.bands)))
            or len(self.sensor) != n
            or int(self.ptr[-1]) != n
        ):
            raise InputError(
                f"{self.path}: arrays do not match meta.json (truncated?); rebuild it with "
                "python -m bsrlc.timeseries ... overwrite=true"
            )

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the path only (spawned DataLoader workers reopen the memory maps)."""
        return {"path": str(self.path)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Reopen the store (see :meth:`__getstate__`)."""
        self.__init__(state["path"])  # type: ignore[misc]

    @property
    def bands(self) -> list[str]:
        """Band names."""
        return list(self.meta["bands"])

    @property
    def year(self) -> int:
        """The year."""
        return int(self.meta["year"])

    @property
    def n_empty(self) -> int:
        """Pixels without any clear observation in the year."""
        return int(self.meta["n_empty"])

    def pixel_index(self, rows: Any, cols: Any) -> np.ndarray:
        """Flat pixel indices of (row, col) pairs of the tile.

        Args:
            rows: row indices (any shape).
            cols: column indices (same shape).

        Returns:
            int64 ``row * width + col``, same shape.

        Raises:
            InputError: for a pixel outside the tile.
        """
        r, c = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
        bad = (r < 0) | (r >= self.height) | (c < 0) | (c >= self.width)
        if bad.any():
            k = int(np.flatnonzero(bad.reshape(-1))[0])
            raise InputError(
                f"{self.path}: pixel (row {int(r.reshape(-1)[k])}, col {int(c.reshape(-1)[k])}) "
                f"outside the {self.height}x{self.width} tile; use the tile that holds it"
            )
        return r * self.width + c

    def rowcol(self, xs: Any, ys: Any) -> tuple[np.ndarray, np.ndarray]:
        """Pixel rows and columns of map coordinates (in the store's CRS), e.g. of points.

        Args:
            xs: x coordinates.
            ys: y coordinates.

        Returns:
            (rows, cols) int64; pixels outside the tile are refused by :meth:`pixel_index`.
        """
        from affine import Affine

        inv = ~Affine(*self.meta["transform"])
        cols, rows = inv * (np.asarray(xs, np.float64), np.asarray(ys, np.float64))
        return np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)

    def counts(self, index: Any) -> np.ndarray:
        """Clear observations per pixel (0: an all-zero series).

        Args:
            index: flat pixel indices (any shape).

        Returns:
            int64, the same shape.
        """
        idx = np.asarray(index, np.int64)
        return self.ptr[idx + 1] - self.ptr[idx]

    def gather(self, index: Any) -> Observations:
        """The observations of a batch of pixels, packed.

        Args:
            index: flat pixel indices, shape ``(B,)`` or ``(B, ...)`` (e.g. a patch per sample).

        Returns:
            The packed observations; ``sample`` indexes ``index`` flattened.
        """
        idx = np.asarray(index, np.int64)
        flat = idx.reshape(-1)
        start = self.ptr[flat]
        counts = self.ptr[flat + 1] - start
        total = int(counts.sum())
        sample = np.repeat(np.arange(flat.size, dtype=np.int64), counts)
        # ragged ranges without a Python loop: start of each run + position within it
        first = np.cumsum(counts) - counts
        obs = np.repeat(start - first, counts) + np.arange(total, dtype=np.int64)
        return Observations(
            values=self.values[obs],
            day=self.day[obs],
            sample=sample,
            shape=tuple(idx.shape),
            sensor=self.sensor[obs],
        )

    def dense(self, index: Any) -> np.ndarray:
        """The dense int16 (…, bands, 365) series of some pixels, for checks and small jobs.

        Args:
            index: flat pixel indices.

        Returns:
            int16 reflectance x 10000, 0 on unobserved days.
        """
        obs = self.gather(index)
        n = int(np.prod(obs.shape))
        out = np.zeros((n, len(self.bands), N_DAYS), np.int16)
        out[obs.sample, :, obs.day.astype(np.int64) - 1] = obs.values
        return out.reshape(*obs.shape, len(self.bands), N_DAYS)


# ----------------------------------------------------------------------------------------------
# Scenes as delivered (any CRS and resolution), warped onto the target grid's tiles


def build_archive_store(
    sources: Sequence[tuple[str, Sequence[Any]]],
    out_dir: str | Path,
    year: int,
    grid: Any = None,
    tiles_wanted: Sequence[str] | None = None,
    bands: Sequence[str] = ("BLU", "GRN", "RED", "NIR", "SW1", "SW2"),
    resampling: str = "bilinear",
    min_clear_fraction: float = 1.0,
    fine: bool = False,
    overwrite: bool = False,
    strip_pixels: int = 256 * 256,
) -> list[Path]:
    """Observation stores of scenes as delivered, warped onto the tiles of a target grid.

    The scenes are read as :mod:`bsrlc.stm.archive` reads them (:class:`bsrlc.stm.sources.
    WarpReader`: QA decoded at native resolution, reflectance warped window by window, no
    full-scene copy), each with its own scale/offset (Landsat C2, Sentinel-2 baselines). A
    scene straddling tiles gives each tile the part of it inside the tile.

    Args:
        sources: ``(name, scenes)`` per source in priority order; scenes are
            :class:`bsrlc.stm.sources.SourceScene` (``discover_sources(...).scenes``, a STAC
            catalog's, or :func:`bsrlc.stm.sources.scene_from_files`).
        out_dir: where the ``{tile}_{year}.obs`` folders go.
        year: the year every scene must fall in.
        grid: a :class:`bsrlc.stm.grid.TargetGrid` (default: EPSG:3035, 30 m, 30 km tiles).
        tiles_wanted: tile ids; None = every tile the scenes touch.
        bands: band names (every scene must have them).
        resampling: reflectance resampling.
        min_clear_fraction: share of a target pixel that must be clear in the native QA.
        fine: use the tiles' fine (10 m) pixels instead of the coarse ones.
        overwrite: rebuild existing stores.
        strip_pixels: pixels read at once.

    Returns:
        The store folders.

    Raises:
        InputError: for a scene outside the year or without a band (naming it).
        ConfigError: for no scenes, more than 255 sources or a bad grid setting.
    """
    from bsrlc.stm.grid import TargetGrid, area_from_rasters
    from bsrlc.stm.sources import WarpReader

    grid = grid or TargetGrid()
    if not sources or not any(len(sc) for _, sc in sources):
        raise ConfigError("scenes: no source given; set scenes=FOLDER (and source=)")
    if len(sources) > 255:
        raise ConfigError(f"{len(sources)} sources: at most 255 fit sensor.npy's uint8; merge some")
    bands = list(bands)
    for _, scenes in sources:
        for sc in scenes:
            where = sc.metadata or next(iter(sc.bands.values()), sc.id)
            if sc.date.year != year:
                raise InputError(
                    f"{where}: scene {sc.id} dated {sc.date}, outside {year}; drop it or set "
                    f"year={sc.date.year}"
                )
            missing = [b for b in bands if b not in sc.bands]
            if missing:
                raise InputError(
                    f"{where}: scene {sc.id} has no band(s) {', '.join(missing)} (it has "
                    f"{', '.join(sc.bands)}); every sensor needs every band: drop the scene or "
                    "fix bands="
                )
    if tiles_wanted is None:
        firsts = [next(iter(sc.bands.values())) for _, scs in sources for sc in scs]
        chosen = [t.id for t in grid.tiles(area_from_rasters(firsts, grid.crs))]
    else:
        chosen = [str(t) for t in tiles_wanted]
    out = []
    for tid in chosen:
        path = store_path(out_dir, tid, year)
        if path.exists() and not overwrite:
            log.info("%s exists: kept (overwrite=true rebuilds it)", path)
            out.append(path)
            continue
        tile = grid.tile(tid)
        gbox = tile.fine if fine else tile.geobox
        reader = WarpReader(resampling, min_clear_fraction)
        over = [[s for s in scs if reader.overlaps(s, gbox)] for _, scs in sources]
        h, w = gbox.shape.yx

        def strips(
            r0: int, nr: int, gbox: Any = gbox, over: Any = over, reader: Any = reader
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
            sub = gbox[r0 : r0 + nr, :]
            sw = sub.shape.x
            days, refl, clear = [], [], []
            for scenes in over:
                here = [s for s in scenes if reader.overlaps(s, sub)]
                stack = np.zeros((len(here), len(bands), nr, sw), np.float32)
                c = np.zeros((len(here), nr, sw), np.bool_)
                for t, s in enumerate(here):
                    c[t] = reader.read(s, sub, bands, out=stack[t]).clear
                    for b, name in enumerate(bands):  # each scene's own scale and offset
                        stack[t, b] *= np.float32(s.scale.get(name, 1.0) / VALUE_SCALE)
                        stack[t, b] += np.float32(s.offset.get(name, 0.0) / VALUE_SCALE)
                np.rint(stack, out=stack)
                np.clip(stack, -32767, 32767, out=stack)
                days.append(np.array([day_index(s.date) for s in here], np.int64))
                refl.append(stack.astype(np.int16))
                clear.append(c)
            return merge_observations(days, refl, clear)

        meta: dict[str, Any] = {
            "year": int(year),
            "tile": tid,
            "window": None,
            "crs": str(grid.crs),
            "transform": list(gbox.affine)[:6],
            "bands": bands,
            "resampling": resampling,
            "min_clear_fraction": min_clear_fraction,
            "sources": [
                {"name": name, "n_scenes": len(sc), "scenes": [s.id for s in sc]}
                for (name, _), sc in zip(sources, over, strict=True)
            ],
        }
        try:
            out.append(_write_store(path, h, w, len(bands), strips, meta, strip_pixels))
        finally:
            reader.close()
    return out
