"""Compositing scenes into spectral-temporal metric (STM) rasters, window by window.

Scenes are found in a folder (or given as a list), dated from their file names, filtered to a
date window and checked up front (one grid and CRS, masks of the scene's shape, every band in
every scene), so bad input fails before any output is opened. The raster is then processed in
square windows: memory depends on the window size and the number of scenes, never on the
raster size. For each window the scenes' raw DNs are read into a (time, bands, rows, cols)
stack, the QA masks decoded into a (time, rows, cols) clear mask, and the numba kernel of
:mod:`bsrlc.stm.metrics` reduces both to int16 STMs in one pass (on every core). Locally, a
reader thread reads the next window while the kernel works on the current one; with a Dask
scheduler address the windows run as ``dask.distributed`` tasks instead.

An observation (one scene at one pixel) is used when, in this order of checks (each excluded
observation is counted under the first reason that applies, see :data:`EXCLUSION_REASONS`):

1. ``fill``: no band is at its file's nodata value (or NaN);
2. ``qa``: the QA decoder says clear;
3. ``saturation``: the scene's QA_RADSAT file (``sensor.radsat_suffix``, where it exists) flags
   none of the bands read as saturated;
4. ``range``: every band's raw DN lies within ``sensor.valid_range`` (inclusive, before scale
   and offset; e.g. Landsat Collection 2 SR 7273-43636).

CLEAR_COUNT is the number of used observations; the log gives the counts per reason.

Output: ``{out_dir}/{sensor}_{label}.tif``, a COG written atomically, int16
``round(value * 10000)`` for reflectance, indices and STD, nodata -32768 where a pixel has no
clear observation, and a last band CLEAR_COUNT (a plain count, 0 there; -32768 never occurs in
it). GDAL scale/offset are set per band (1e-4 / 0; CLEAR_COUNT 1 / 0), so GIS tools show
reflectance. Bands: for each band, for each metric (``BLU_MIN, BLU_P25, ..., GRN_MIN, ...``),
then the indices the same way, then CLEAR_COUNT.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import RasterioIOError
from rasterio.windows import Window
from tqdm.auto import tqdm

from bsrlc.errors import ConfigError, InputError, check_free_space, format_bytes
from bsrlc.raster import COGWriter, RasterInfo, block_windows, check_same_grid, open_raster
from bsrlc.stm.indices import IndexMatrices, index_matrices
from bsrlc.stm.metrics import MetricSpec, compute_stm_int16, parse_metrics
from bsrlc.stm.qa import check_options, get_decoder, takes_path

log = logging.getLogger(__name__)

OUT_NODATA = -32768
OUT_SCALE = 10000
EXCLUSION_REASONS = ("fill", "qa", "saturation", "range")
"""Why observations are excluded, in the order they are checked (each counted once)."""
DEFAULT_RADSAT_BITS = tuple(range(9))
"""QA_RADSAT bits checked when the band numbers are unknown: bands 1-9 (any band saturated)."""

BandsArg = Sequence[str] | Mapping[str, str | int]
"""Bands to composite: names (band descriptions, or the ``{band}`` of a per-band file pattern),
or a mapping output name -> name (or 1-based band number) in the files, e.g.
``{BLU: SR_B2, GRN: SR_B3}``."""


@dataclass(frozen=True)
class Scene:
    """One acquisition.

    Attributes:
        id: the scene's name (the file stem; for one file per band, the ``{scene}`` part).
        date: acquisition date.
        files: the band files: one multi-band file, or one file per band (in band order).
        mask: the QA mask file.
        per_band: True when ``files`` are one single-band file per band.
        radsat: the Landsat QA_RADSAT file, None where the scene has none.
    """

    id: str
    date: dt.date
    files: tuple[Path, ...]
    mask: Path
    per_band: bool = False
    radsat: Path | None = None


@dataclass
class SensorConfig:
    """How to read one sensor's scenes (``conf/sensor/*.yaml``).

    Attributes:
        name: used in output file names (``{name}_{label}.tif``).
        scale: reflectance = DN * scale + offset.
        offset: see ``scale``.
        decoder: QA decoder name (see :mod:`bsrlc.stm.qa`).
        decoder_options: keyword options of the decoder.
        mask_suffix: the mask of scene ``X`` is ``X{mask_suffix}`` with the scene's extension.
        scene_suffix: a suffix of scene names that the mask name replaces (FORCE: ``_BOA`` with
            ``mask_suffix: _QAI`` pairs ``X_BOA.tif`` with ``X_QAI.tif``); "" = none.
        date_regex: regex whose first group is the date in the scene name.
        date_format: strptime format of that group.
        valid_range: ``[lo, hi]`` raw DNs (inclusive, before scale and offset) outside which an
            observation is excluded in any band; None = no range check.
        radsat_suffix: the saturation file of scene ``X`` is ``X{radsat_suffix}`` (Landsat
            Collection 2: ``_QA_RADSAT``); used where it exists. None = no such file.
        radsat_bits: QA_RADSAT bits that exclude an observation; None = the bits of the bands
            read when their file-side names end in a band number (``SR_B4`` -> bit 3),
            otherwise :data:`DEFAULT_RADSAT_BITS`.
    """

    name: str = "landsat"
    scale: float = 1e-4
    offset: float = 0.0
    decoder: str = "valid"
    decoder_options: dict[str, Any] = field(default_factory=dict)
    mask_suffix: str = "_QA"
    date_regex: str = r"(\d{8})"
    date_format: str = "%Y%m%d"
    scene_suffix: str = ""
    valid_range: Sequence[float] | None = None
    radsat_suffix: str | None = None
    radsat_bits: Sequence[int] | None = None


def split_bands(bands: BandsArg) -> tuple[list[str], list[str]]:
    """Output band names and the names (or numbers) to look up in the files.

    Args:
        bands: a list of names, or a mapping output name -> file band name or number.

    Returns:
        (output names, file names), in the same order.

    Raises:
        ConfigError: for an empty or duplicated band list.
    """
    if isinstance(bands, str):
        bands = [bands]
    if isinstance(bands, Mapping):
        names, sources = [str(k) for k in bands], [str(v) for v in bands.values()]
    else:
        names = [str(b) for b in bands]
        sources = list(names)
    if not names:
        raise ConfigError("bands: empty; list the bands to composite (e.g. [BLU, GRN, RED])")
    if len(set(names)) != len(names):
        raise ConfigError(f"bands: {names} has duplicates; list each band once")
    return names, sources


def parse_date(value: Any, what: str) -> dt.date:
    """Parse a config date.

    Args:
        value: ``YYYY-MM-DD`` or a date.
        what: the config key, for the error.

    Returns:
        The date.

    Raises:
        ConfigError: if it does not parse.
    """
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise ConfigError(f"{what}={value}: not a date; write it as YYYY-MM-DD") from None


def discover_scenes(
    scenes: str | Path | Sequence[str | Path],
    sensor: SensorConfig,
    bands: BandsArg,
    glob: str = "*.tif",
    band_file_pattern: str | None = None,
) -> list[Scene]:
    """Find scenes, their dates and their masks.

    Args:
        scenes: a folder, or a list of scene files (for one file per band: any of a scene's
            band files). Mask files (``*{mask_suffix}.*``, ``*{radsat_suffix}.*``) are skipped.
        sensor: the sensor's reading rules.
        bands: the bands wanted (see :data:`BandsArg`); for one file per band their file names
            fill ``{band}``.
        glob: which files in a folder are scenes.
        band_file_pattern: for one file per band, e.g. ``"{scene}_{band}.tif"``; None when each
            scene is one multi-band file.

    Returns:
        Scenes sorted by date (then name).

    Raises:
        InputError: if the folder or a listed file is missing, the folder holds no scene, a
            scene has no date in its name, or a band file or mask is missing.
        ConfigError: for a band file pattern without ``{scene}`` and ``{band}``.
    """
    _, sources = split_bands(bands)
    try:
        date_re = re.compile(sensor.date_regex)
    except re.error as err:
        raise ConfigError(f"sensor.date_regex={sensor.date_regex!r}: invalid ({err})") from None
    band_re = _band_file_regex(band_file_pattern, sources) if band_file_pattern else None
    if not sensor.mask_suffix and not sensor.scene_suffix:
        raise ConfigError("sensor.mask_suffix: empty; masks are found as {scene}{mask_suffix}")
    folder: Path | None = None
    if isinstance(scenes, (str, Path)) and not Path(scenes).is_file():
        folder = Path(scenes)
        if not folder.is_dir():
            raise InputError(
                f"{folder}: scene folder not found; set scenes= to a folder or a list of files"
            )
        candidates = sorted(folder.glob(glob))
    else:
        candidates = (
            [Path(scenes)] if isinstance(scenes, (str, Path)) else [Path(s) for s in scenes]
        )
        for path in candidates:
            if not path.is_file():
                raise InputError(f"{path}: scene file not found; fix the scenes list")
    found: dict[str, Scene] = {}
    for path in candidates:
        is_mask = bool(sensor.mask_suffix) and path.stem.endswith(sensor.mask_suffix)
        is_mask |= bool(sensor.radsat_suffix) and path.stem.endswith(str(sensor.radsat_suffix))
        if is_mask or not path.is_file():
            continue
        if band_re is not None and band_file_pattern is not None:
            m = band_re.fullmatch(path.name)
            if m is None:
                if folder is None:
                    raise InputError(
                        f"{path}: not a band file of the form {band_file_pattern} for bands "
                        f"{', '.join(sources)}; fix the scenes list or band_file_pattern"
                    )
                continue
            scene_id = m.group("scene")
            files = tuple(
                path.parent / band_file_pattern.format(scene=scene_id, band=b) for b in sources
            )
        else:
            scene_id, files = path.stem, (path,)
        if scene_id in found:
            continue
        date = _scene_date(path, scene_id, sensor, date_re)
        for f in files:
            if not f.exists():
                raise InputError(
                    f"{f}: band file of scene {scene_id} not found; every scene needs all bands "
                    f"({', '.join(sources)}) as {band_file_pattern}"
                )
        base = scene_id
        if sensor.scene_suffix and base.endswith(sensor.scene_suffix):
            base = base[: -len(sensor.scene_suffix)]
        mask = path.parent / f"{base}{sensor.mask_suffix}{path.suffix}"
        if not mask.exists():
            raise InputError(
                f"{mask}: QA mask of {files[0]} not found; every scene needs its mask "
                f"{{scene}}{sensor.mask_suffix}{path.suffix} next to it (or set sensor.mask_suffix)"
            )
        radsat = None
        if sensor.radsat_suffix:
            radsat = path.parent / f"{base}{sensor.radsat_suffix}{path.suffix}"
            radsat = radsat if radsat.exists() else None
        found[scene_id] = Scene(
            scene_id, date, files, mask, per_band=band_re is not None, radsat=radsat
        )
    if not found and folder is not None:
        raise InputError(
            f"{folder}: no scene files matching {glob!r}"
            + (f" and {band_file_pattern!r}" if band_file_pattern else "")
            + "; point scenes= at the scene folder or fix glob / band_file_pattern"
        )
    return sorted(found.values(), key=lambda s: (s.date, s.id))


def _scene_date(path: Path, scene_id: str, sensor: SensorConfig, date_re: re.Pattern) -> dt.date:
    m = date_re.search(scene_id)
    if not m or not m.groups():
        raise InputError(
            f"{path}: no date in the name matching {sensor.date_regex!r}; rename the file or set "
            "sensor.date_regex (its first group is the date)"
        )
    try:
        return dt.datetime.strptime(m.group(1), sensor.date_format).date()
    except ValueError:
        raise InputError(
            f"{path}: {m.group(1)!r} is not a date of format {sensor.date_format}; fix the name "
            "or sensor.date_regex / sensor.date_format"
        ) from None


def _band_file_regex(pattern: str, sources: Sequence[str]) -> re.Pattern:
    if "{band}" not in pattern or "{scene}" not in pattern:
        raise ConfigError(
            f"band_file_pattern={pattern}: must contain {{scene}} and {{band}}, "
            "e.g. '{scene}_{band}.tif'"
        )
    regex = re.escape(pattern).replace(r"\{scene\}", "(?P<scene>.+?)")
    regex = regex.replace(r"\{band\}", "(?:" + "|".join(map(re.escape, sources)) + ")")
    return re.compile(regex)


def select_scenes(
    scenes: Sequence[Scene], start: Any = None, end: Any = None
) -> tuple[list[Scene], dt.date, dt.date]:
    """The scenes of a date window.

    Args:
        scenes: candidate scenes.
        start: first date (inclusive, ``YYYY-MM-DD`` or a date); None = no bound.
        end: last date (inclusive); None = no bound.

    Returns:
        (the scenes in the window, the window's start, its end); an unbounded end is replaced
        by the first/last chosen scene's date.

    Raises:
        ConfigError: for dates that do not parse or start after end.
        InputError: if no scene falls in the window (naming the scenes' folder).
    """
    d0 = parse_date(start, "start") if start is not None else dt.date.min
    d1 = parse_date(end, "end") if end is not None else dt.date.max
    if d0 > d1:
        raise ConfigError(f"start={d0} is after end={d1}: the date window is empty; swap them")
    chosen = [s for s in scenes if d0 <= s.date <= d1]
    if not chosen:
        folders = sorted({str(s.files[0].parent) for s in scenes}) or ["(no scenes given)"]
        span = f"dates {scenes[0].date}..{scenes[-1].date}" if scenes else "none"
        raise InputError(
            f"{', '.join(folders)}: no scene between {d0} and {d1} ({len(scenes)} scenes, "
            f"{span}); widen the window or point scenes= at the right folder"
        )
    first, last = chosen[0].date, chosen[-1].date
    return chosen, first if start is None else d0, last if end is None else d1


@dataclass
class StmPlan:
    """Everything the engine needs for one output, checked up front (picklable for Dask).

    Attributes:
        scenes: the window's scenes, by date.
        grid: the common grid (of the first scene).
        band_idx: per scene, 1-based band indices to read (one per file for per-band files).
        nodata: (scenes, bands) input nodata values, NaN where unset.
        dtype: the stack's dtype (the files' common dtype).
        bands: output band names.
        spec: parsed metrics.
        idx: spectral index coefficients.
        sensor: the sensor's reading rules.
        valid_range: the checked ``sensor.valid_range`` as (lo, hi), or None.
        radsat_mask: QA_RADSAT bits that exclude an observation (0 = none checked).
    """

    scenes: list[Scene]
    grid: RasterInfo
    band_idx: list[list[int]]
    nodata: np.ndarray
    dtype: np.dtype
    bands: list[str]
    spec: MetricSpec
    idx: IndexMatrices
    sensor: SensorConfig
    valid_range: tuple[float, float] | None = None
    radsat_mask: int = 0

    @property
    def descriptions(self) -> list[str]:
        """Output band names: ``{BAND}_{METRIC}`` band-major, then indices, then CLEAR_COUNT."""
        layers = [*self.bands, *self.idx.names]
        return [*(f"{b}_{m.upper()}" for b in layers for m in self.spec.names), "CLEAR_COUNT"]


def _file_info(path: Path) -> tuple[RasterInfo, tuple[float | None, ...]]:
    with open_raster(path) as src:
        if src.crs is None:
            raise InputError(
                f"{path}: raster has no CRS; assign one (e.g. gdal_edit.py -a_srs EPSG:3035)"
            )
        info = RasterInfo(
            path=path,
            crs=src.crs,
            transform=src.transform,
            width=src.width,
            height=src.height,
            count=src.count,
            dtype=src.dtypes[0],
            nodata=src.nodata,
            descriptions=tuple(d or "" for d in src.descriptions),
        )
        return info, tuple(src.nodatavals)


def _lookup_bands(info: RasterInfo, sources: Sequence[str], names: Sequence[str]) -> list[int]:
    lookup = {d: i + 1 for i, d in enumerate(info.descriptions) if d}
    out, missing = [], []
    for src_name, name in zip(sources, names, strict=True):
        if src_name in lookup:
            out.append(lookup[src_name])
        elif src_name.isdigit() and 1 <= int(src_name) <= info.count:
            out.append(int(src_name))
        else:
            missing.append(src_name if src_name == name else f"{src_name} (for {name})")
    if missing:
        have = ", ".join(d for d in info.descriptions if d) or "no band descriptions"
        raise InputError(
            f"{info.path}: band(s) {', '.join(missing)} missing (file has {info.count} bands: "
            f"{have}); every scene needs every band of bands=, matched by band description "
            "(or band number); drop the scene or fix bands="
        )
    return out


def plan_stm(
    scenes: Sequence[Scene],
    bands: BandsArg,
    metrics: Sequence[str] | MetricSpec,
    indices: Sequence[str],
    sensor: SensorConfig,
) -> StmPlan:
    """Check scenes, masks and bands before any output is opened.

    Args:
        scenes: the window's scenes.
        bands: bands to composite (see :data:`BandsArg`).
        metrics: metric names.
        indices: spectral index names.
        sensor: the sensor's reading rules.

    Returns:
        The plan.

    Raises:
        InputError: for scenes on different grids or CRSs, a mask of another shape or of
            another product than the decoder's (checked on a sample of each mask), a missing
            band or an unreadable file (naming it).
        ConfigError: for unknown metrics, indices, decoders or decoder options.
    """
    names, sources = split_bands(bands)
    spec = parse_metrics(metrics)
    idx = index_matrices(list(indices), names)
    check_options(sensor.decoder, sensor.decoder_options)
    valid_range = check_valid_range(sensor.valid_range)
    decoder = get_decoder(sensor.decoder)
    if not scenes:
        raise InputError("no scenes to composite; point scenes= at a folder with scenes")
    file_infos = {f: _file_info(f) for s in scenes for f in s.files}
    check_same_grid([info for info, _ in file_infos.values()], "scenes")
    grid = next(iter(file_infos.values()))[0]
    band_idx: list[list[int]] = []
    nodata = np.full((len(scenes), len(names)), np.nan)  # (scenes, bands)
    dtypes = []
    for t, s in enumerate(scenes):
        if not s.per_band:
            info, nodatavals = file_infos[s.files[0]]
            band_idx.append(_lookup_bands(info, sources, names))
            nds = [nodatavals[k - 1] for k in band_idx[-1]]
        else:
            band_idx.append([1] * len(s.files))
            nds = [file_infos[f][1][0] for f in s.files]
        nodata[t] = [np.nan if v is None else v for v in nds]
        dtypes += [file_infos[f][0].dtype for f in s.files]
        for aux in (s.mask, s.radsat):
            if aux is None:
                continue
            with open_raster(aux) as m:
                if (m.width, m.height) != (grid.width, grid.height):
                    raise InputError(
                        f"{aux}: mask is {m.width}x{m.height} but its scene {s.files[0]} is "
                        f"{grid.width}x{grid.height}; use the mask that belongs to the scene"
                    )
                if aux == s.mask and takes_path(decoder):  # refuse a wrong product up front
                    decoder(_mask_sample(m), path=s.mask, **sensor.decoder_options)
    dtype = np.result_type(*dtypes)
    radsat_mask = 0
    if any(s.radsat is not None for s in scenes):
        radsat_mask = _radsat_mask(sensor.radsat_bits, sources)
        missing = sum(s.radsat is None for s in scenes)
        if missing:
            log.info(
                "%d of %d scenes have no %s file: saturation is not checked there",
                missing,
                len(scenes),
                sensor.radsat_suffix,
            )
    return StmPlan(
        list(scenes),
        grid,
        band_idx,
        nodata,
        dtype,
        names,
        spec,
        idx,
        sensor,
        valid_range=valid_range,
        radsat_mask=radsat_mask,
    )


def _mask_sample(ds: rasterio.io.DatasetReader, size: int = 32) -> np.ndarray:
    """Full-resolution pixels of five small windows of a mask (centre and quarter points).

    Five blocks at most are read; overviews are not used (they may average bit fields).
    """
    parts = []
    for fy, fx in ((0.5, 0.5), (0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75)):
        h, w = min(size, ds.height), min(size, ds.width)
        row = min(max(int(ds.height * fy) - h // 2, 0), ds.height - h)
        col = min(max(int(ds.width * fx) - w // 2, 0), ds.width - w)
        try:
            parts.append(ds.read(1, window=Window(col, row, w, h)).reshape(-1))
        except RasterioIOError as err:
            first = str(err).splitlines()[0] if str(err) else "read error"
            raise InputError(
                f"{ds.name}: cannot read ({first}); the file is damaged: re-create or "
                "re-download it"
            ) from None
    return np.concatenate(parts)


def check_valid_range(valid_range: Any) -> tuple[float, float] | None:
    """Check a ``valid_range`` setting.

    Args:
        valid_range: ``[lo, hi]`` raw DNs (inclusive), or None.

    Returns:
        (lo, hi) as floats, or None.

    Raises:
        ConfigError: for anything but two numbers with lo <= hi.
    """
    if valid_range is None:
        return None
    try:
        lo, hi = (float(v) for v in valid_range)
    except (TypeError, ValueError):
        raise ConfigError(
            f"valid_range={valid_range!r}: expected [lo, hi] in raw DN, e.g. "
            "valid_range=[7273,43636]; null = no range check"
        ) from None
    if not lo <= hi:
        raise ConfigError(f"valid_range=[{lo:g}, {hi:g}]: lo is above hi; swap them")
    return lo, hi


def _radsat_mask(bits: Sequence[int] | None, sources: Sequence[str]) -> int:
    """The QA_RADSAT bit mask: configured bits, the bands' own (``SR_B4`` -> bit 3) or all."""
    if bits is None:
        numbers = [re.search(r"B(\d{1,2})$", str(src), re.IGNORECASE) for src in sources]
        if all(numbers):
            bits = [int(m.group(1)) - 1 for m in numbers if m]
        else:
            bits = DEFAULT_RADSAT_BITS
    mask = 0
    for b in bits:
        if not 0 <= int(b) < 16:
            raise ConfigError(f"sensor.radsat_bits: bit {b} is not 0..15; list QA_RADSAT bits")
        mask |= 1 << int(b)
    return mask


class SceneReader:
    """Reads windows of a plan's scenes, keeping the files open between windows.

    Opening a COG costs milliseconds; thousands of windows x tens of scenes add up. At most
    ``max_open`` files stay open (least recently used closed first), to stay below the
    process's file-handle limit with long per-band archives. Not thread-safe: use one reader
    per thread.

    Args:
        plan: the plan whose scenes to read.
        max_open: how many files to keep open.
    """

    def __init__(self, plan: StmPlan, max_open: int = 512) -> None:
        self.plan = plan
        self.max_open = max_open
        self._open: OrderedDict[Path, rasterio.io.DatasetReader] = OrderedDict()
        self._decode = get_decoder(plan.sensor.decoder)
        self._decode_path = takes_path(self._decode)
        self._fill = _fill_values(plan)
        self._range = _range_bounds(plan)

    def _ds(self, path: Path) -> rasterio.io.DatasetReader:
        ds = self._open.get(path)
        if ds is None:
            while len(self._open) >= self.max_open:
                self._open.popitem(last=False)[1].close()
            ds = self._open[path] = open_raster(path)
        else:
            self._open.move_to_end(path)
        return ds

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read one window of every scene.

        Args:
            window: the window.

        Returns:
            (stack, clear): (time, bands, rows, cols) raw DNs and (time, rows, cols) bool, True
            where an observation is used (see the module docstring for the checks).

        Raises:
            InputError: if a file cannot be read (naming it), a decoder refuses a mask or
                returns another shape.
        """
        stack, clear, _ = self.read_counted(window)
        return stack, clear

    def read_counted(self, window: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Read one window of every scene and count the excluded observations.

        Args:
            window: the window.

        Returns:
            (stack, clear, excluded): as :meth:`read`, plus int64 counts of the excluded
            observations per reason of :data:`EXCLUSION_REASONS`.

        Raises:
            InputError: as :meth:`read`.
        """
        p = self.plan
        h, w = int(window.height), int(window.width)
        stack = np.empty((len(p.scenes), len(p.bands), h, w), p.dtype)  # (t, b, h, w)
        clear = np.empty((len(p.scenes), h, w), np.bool_)  # (t, h, w)
        saturated = np.zeros((len(p.scenes), h, w), np.bool_) if p.radsat_mask else None
        opts = p.sensor.decoder_options
        for t, scene in enumerate(p.scenes):
            path = scene.files[0]
            try:
                if not scene.per_band:
                    self._ds(path).read(p.band_idx[t], window=window, out=stack[t])
                else:
                    for b, path in enumerate(scene.files):
                        self._ds(path).read(1, window=window, out=stack[t, b])
                path = scene.mask
                qa = self._ds(path).read(1, window=window)
                if saturated is not None and scene.radsat is not None:
                    path = scene.radsat
                    radsat = self._ds(path).read(1, window=window)
                    np.not_equal(radsat & p.radsat_mask, 0, out=saturated[t])
            except RasterioIOError as err:
                first = str(err).splitlines()[0] if str(err) else "read error"
                raise InputError(
                    f"{path}: cannot read window {window.col_off},{window.row_off} ({first}); "
                    "the file is damaged: re-create or re-download it"
                ) from None
            if self._decode_path:
                decoded = np.asarray(self._decode(qa, path=scene.mask, **opts))
            else:
                decoded = np.asarray(self._decode(qa, **opts))
            if decoded.shape != (h, w):
                raise InputError(
                    f"{scene.mask}: decoder {p.sensor.decoder} returned shape {decoded.shape} for "
                    f"a {h}x{w} window; check sensor.decoder"
                )
            clear[t] = decoded
        excluded = _exclude(stack, clear, saturated, self._fill, self._range)
        return stack, clear, excluded

    def close(self) -> None:
        """Close every open file."""
        for ds in self._open.values():
            ds.close()
        self._open.clear()


def _fill_values(p: StmPlan) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Nodata values as (time, bands, 1, 1) in the stack's dtype and where they are set.

    Returns:
        (values, has): ``has`` is None when every scene and band has a nodata value; None
        when none has a representable one (no fill check).
    """
    nd = p.nodata
    has = np.isfinite(nd)
    if np.dtype(p.dtype).kind in "iu":
        info = np.iinfo(p.dtype)
        with np.errstate(invalid="ignore"):
            has &= (nd >= info.min) & (nd <= info.max) & (nd == np.round(nd))
    if not has.any():
        return None
    vals = np.where(has, nd, 0).astype(p.dtype)[:, :, None, None]
    return vals, None if has.all() else has[:, :, None, None]


def _range_bounds(p: StmPlan) -> tuple[Any, Any] | None:
    """``valid_range`` as bounds comparable with the stack; None where a bound cannot bind."""
    if p.valid_range is None:
        return None
    lo, hi = p.valid_range
    if np.dtype(p.dtype).kind in "iu":
        info = np.iinfo(p.dtype)
        lo_i, hi_i = int(np.ceil(lo)), int(np.floor(hi))
        lo_b = p.dtype.type(lo_i) if lo_i > info.min else None
        hi_b = p.dtype.type(hi_i) if hi_i < info.max else None
        if lo_i > info.max or hi_i < info.min or lo_i > hi_i:  # nothing can be valid
            lo_b, hi_b = p.dtype.type(info.max), p.dtype.type(info.min)
        return lo_b, hi_b
    return lo, hi


def _exclude(
    stack: np.ndarray,
    clear: np.ndarray,
    saturated: np.ndarray | None,
    fill: tuple[np.ndarray, np.ndarray | None] | None,
    bounds: tuple[Any, Any] | None,
) -> np.ndarray:
    """Apply the fill, saturation and range checks to ``clear`` in place; count per reason.

    Each excluded observation is counted once, under the first reason of
    :data:`EXCLUSION_REASONS` that applies (``clear`` holds the QA decoder's verdict on entry).
    """
    counts = np.zeros(len(EXCLUSION_REASONS), np.int64)
    n_fill = 0
    is_fill = None
    if fill is not None:
        vals, has = fill
        eq = np.equal(stack, vals)  # (t, b, h, w)
        if has is not None:
            eq &= has
        is_fill = eq.any(axis=1)
        del eq
    if stack.dtype.kind == "f":  # NaN is missing too (the kernel skips it)
        nan = np.isnan(stack).any(axis=1)
        is_fill = nan if is_fill is None else np.logical_or(is_fill, nan, out=is_fill)
    if is_fill is not None:
        n_fill = int(np.count_nonzero(is_fill))
        np.greater(clear, is_fill, out=clear)  # clear and not fill
    n_used = int(np.count_nonzero(clear))
    counts[0], counts[1] = n_fill, clear.size - n_fill - n_used
    if saturated is not None:
        np.greater(clear, saturated, out=clear)
        n_ok = int(np.count_nonzero(clear))
        counts[2], n_used = n_used - n_ok, n_ok
    if bounds is not None and bounds != (None, None):
        lo, hi = bounds
        outside = np.zeros(clear.shape, np.bool_)
        if lo is not None:
            np.less(stack.min(axis=1), lo, out=outside)
        if hi is not None:
            outside |= np.greater(stack.max(axis=1), hi)
        np.greater(clear, outside, out=clear)
        counts[3] = n_used - int(np.count_nonzero(clear))
    return counts


def reduce_window(p: StmPlan, stack: np.ndarray, clear: np.ndarray) -> np.ndarray:
    """Reduce one window's stack to the int16 STM block.

    Args:
        p: the plan.
        stack: (time, bands, rows, cols) raw DNs.
        clear: (time, rows, cols) bool.

    Returns:
        (outputs, rows, cols) int16, CLEAR_COUNT last.
    """
    return compute_stm_int16(
        stack,
        clear,
        p.spec,
        p.idx,
        scale=p.sensor.scale,
        offset=p.sensor.offset,
        nodata=p.nodata,
        out_scale=OUT_SCALE,
        fill=OUT_NODATA,
    )


def composite_window(p: StmPlan, window: Window) -> np.ndarray:
    """Read and reduce one window on its own (opens and closes the files; a Dask task).

    Args:
        p: the plan.
        window: the window.

    Returns:
        (outputs, rows, cols) int16 STM block, CLEAR_COUNT last.
    """
    return _composite_window_counted(p, window)[0]


def _composite_window_counted(p: StmPlan, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """:func:`composite_window` plus the window's exclusion counts (the Dask task)."""
    reader = SceneReader(p)
    try:
        stack, clear, excluded = reader.read_counted(window)
    finally:
        reader.close()
    return reduce_window(p, stack, clear), excluded


Emit = Callable[[Window, np.ndarray, np.ndarray], None]


def _run_local(p: StmPlan, windows: Sequence[Window], emit: Emit) -> None:
    """Reduce windows in order; a reader thread reads window k+1 while k is reduced.

    GDAL decompression releases the GIL, so reading overlaps the numba kernel (which uses
    every core); at most two windows' stacks are in memory.
    """
    reader = SceneReader(p)
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="stm-read") as pool:
            pending = pool.submit(reader.read_counted, windows[0])
            for k, window in enumerate(windows):
                stack, clear, excluded = pending.result()
                if k + 1 < len(windows):
                    pending = pool.submit(reader.read_counted, windows[k + 1])
                emit(window, reduce_window(p, stack, clear), excluded)
    finally:
        reader.close()


def _run_dask(p: StmPlan, windows: Sequence[Window], emit: Emit, address: str) -> None:
    """Run windows as tasks on a Dask cluster, with a bounded number in flight."""
    from dask.distributed import Client, as_completed

    try:
        client = Client(address, timeout="20s")
    except (OSError, TimeoutError) as err:
        raise ConfigError(
            f"dask_address={address}: cannot connect to a Dask scheduler ({err}); start one or "
            "set dask_address=null to run locally"
        ) from None
    with client:
        remote_plan = client.scatter(p, broadcast=True)
        limit = max(2, 2 * sum(client.nthreads().values()))  # bounds the results held in memory
        todo = iter(windows)
        where: dict[Any, Window] = {}

        def submit(window: Window) -> Any:
            fut = client.submit(_composite_window_counted, remote_plan, window, pure=False)
            where[fut] = window
            return fut

        running = as_completed([submit(w) for w in itertools.islice(todo, limit)])
        for fut in running:
            emit(where.pop(fut), *fut.result())
            nxt = next(todo, None)
            if nxt is not None:
                running.add(submit(nxt))


def composite(
    scenes: Sequence[Scene],
    out_path: str | Path,
    bands: BandsArg,
    metrics: Sequence[str] | MetricSpec,
    sensor: SensorConfig,
    indices: Sequence[str] = (),
    start: Any = None,
    end: Any = None,
    block_size: int = 256,
    workers: int | None = None,
    dask_address: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Composite the scenes of a date window into one STM COG.

    Args:
        scenes: candidate scenes (from :func:`discover_scenes`; filtered to the window here).
        out_path: the output file.
        bands: bands to composite (see :data:`BandsArg`).
        metrics: metric names (``min``, ``p25``, ``median``, ``mean``, ``std``, ``count``...).
        sensor: the sensor's reading rules.
        indices: spectral indices to composite too (``NDVI``...; see :mod:`bsrlc.stm.indices`).
        start: first date (inclusive, ``YYYY-MM-DD``); None = no bound.
        end: last date (inclusive); None = no bound.
        block_size: window edge in pixels; memory ~ 2 x scenes x bands x block_size^2 x 2 bytes.
        workers: CPU threads of the kernel (None = all cores).
        dask_address: a ``dask.distributed`` scheduler to run windows on; None = local cores.
        overwrite: replace an existing output; otherwise it is kept (and returned).
        progress: show a progress bar over windows.

    Returns:
        The output path.

    Raises:
        ConfigError: for an empty date window or bad metrics, indices or decoder settings.
        InputError: for a window without scenes or inconsistent inputs (nothing is written).
    """
    out_path = Path(out_path)
    chosen, d0, d1 = select_scenes(scenes, start, end)
    if block_size < 16:
        raise ConfigError(f"block_size={block_size}: too small; use 128..1024")
    if out_path.exists() and not overwrite:
        log.info("%s exists; kept (overwrite=true recomputes it)", out_path)
        return out_path
    p = plan_stm(chosen, bands, metrics, indices, sensor)
    removed = clean_partials(out_path)
    if removed:
        log.info("%s: removed %d temporary files of an interrupted run", out_path, removed)
    grid = p.grid
    raw = grid.width * grid.height * len(p.descriptions) * 2  # int16
    check_free_space(
        out_path.parent,
        raw // 4,
        f"{out_path.name} ({format_bytes(raw)} uncompressed, rarely compressed below a quarter)",
    )
    windows = block_windows(grid.width, grid.height, block_size)
    tags = stm_tags(sensor.name, d0, d1, chosen, p.spec, p.idx)
    band_tags = [{"SCALE": str(1 / OUT_SCALE)}] * (len(p.descriptions) - 1) + [{"SCALE": "1"}]
    scales = [1 / OUT_SCALE] * (len(p.descriptions) - 1) + [1.0]
    excluded = np.zeros(len(EXCLUSION_REASONS), np.int64)
    threads = _set_threads(workers)
    try:
        with COGWriter(
            out_path,
            crs=grid.crs,
            transform=grid.transform,
            width=grid.width,
            height=grid.height,
            count=len(p.descriptions),
            dtype="int16",
            nodata=OUT_NODATA,
            descriptions=p.descriptions,
            tags=tags,
            band_tags=band_tags,
            overwrite=True,
        ) as writer:
            _set_scales(writer, scales, [0.0] * len(scales))
            with tqdm(
                total=len(windows), desc=out_path.name, disable=not progress, unit="win"
            ) as bar:

                def emit(window: Window, block: np.ndarray, counts: np.ndarray) -> None:
                    writer.write(block, window)
                    excluded[:] += counts
                    bar.update()

                if dask_address:
                    _run_dask(p, windows, emit, dask_address)
                else:
                    _run_local(p, windows, emit)
    finally:
        _set_threads(threads)
    log.info(
        "%s %s..%s: %d scenes -> %s (%d bands)",
        sensor.name,
        d0,
        d1,
        len(chosen),
        out_path,
        len(p.descriptions),
    )
    log.info("%s", _exclusion_summary(p, d0, d1, excluded, grid.width * grid.height))
    return out_path


def clean_partials(out_path: Path) -> int:
    """Remove the temporary files a killed run left next to ``out_path``.

    :class:`~bsrlc.raster.COGWriter` writes ``.<name>.<id>.partial`` (and its ``.stage.tif``)
    and renames it on success; a ``kill -9`` leaves them behind.

    Args:
        out_path: the output file.

    Returns:
        How many files were removed.
    """
    n = 0
    if out_path.parent.is_dir():
        for leftover in out_path.parent.glob(f".{out_path.name}.*.partial*"):
            leftover.unlink(missing_ok=True)
            n += 1
    return n


def _exclusion_summary(p: StmPlan, d0: dt.date, d1: dt.date, excluded: np.ndarray, px: int) -> str:
    """One log line: observations used and excluded per reason."""
    total = px * len(p.scenes)
    used = total - int(excluded.sum())
    rng = "off" if p.valid_range is None else f"{p.valid_range[0]:g}..{p.valid_range[1]:g}"
    radsat = p.sensor.radsat_suffix if p.radsat_mask else "no QA_RADSAT"
    return (
        f"{p.sensor.name} {d0}..{d1}: {total} observations, {used} used (CLEAR_COUNT); "
        f"excluded: fill/nodata {excluded[0]}, QA {excluded[1]}, saturation ({radsat}) "
        f"{excluded[2]}, out of valid range ({rng}) {excluded[3]}"
    )


def stm_tags(
    name: str, start: dt.date, end: dt.date, scenes: Sequence[Any], spec: Any, idx: Any
) -> dict[str, str]:
    """Dataset tags of an STM raster (both the same-grid and the tiled path write them).

    Args:
        name: the sensor / output name.
        start: the period's first day.
        end: its last day.
        scenes: the scenes used, in date order (``date`` and ``id`` attributes).
        spec: the metrics (``names``).
        idx: the indices (``names``).

    Returns:
        The tags.
    """
    return {
        "SENSOR": name,
        "START": start.isoformat(),
        "END": end.isoformat(),
        "FIRST_DATE": scenes[0].date.isoformat(),
        "LAST_DATE": scenes[-1].date.isoformat(),
        "N_SCENES": str(len(scenes)),
        "SCALE": str(1 / OUT_SCALE),
        "NODATA_MEANING": "no clear observation (CLEAR_COUNT is 0 there)",
        "METRICS": ",".join(spec.names),
        "INDICES": ",".join(idx.names),
        "SCENES": ",".join(s.id for s in scenes),
    }


def _set_scales(writer: COGWriter, scales: Sequence[float], offsets: Sequence[float]) -> None:
    """Set GDAL band scale/offset on the staged raster (the COG copy keeps them).

    COGWriter has no scales/offsets arguments yet; its staged dataset is written directly.
    """
    dst = getattr(writer, "_dst", None)
    if dst is not None:
        dst.scales = tuple(scales)
        dst.offsets = tuple(offsets)


def _set_threads(n: int | None) -> int | None:
    """Set numba's thread count for this thread; returns the previous one."""
    if n is None:
        return None
    import numba

    prev = int(numba.get_num_threads())
    numba.set_num_threads(max(1, min(int(n), int(numba.config.NUMBA_NUM_THREADS))))  # type: ignore[attr-defined]
    return prev


def composite_periods(
    scenes: Sequence[Scene],
    out_dir: str | Path,
    periods: Mapping[Any, Sequence[Any]],
    **kwargs: Any,
) -> dict[str, Path]:
    """Composite several date windows: one ``{sensor.name}_{label}.tif`` per period.

    Args:
        scenes: candidate scenes.
        out_dir: the output folder.
        periods: label -> (start, end), e.g. ``{"2019": ["2018-01-01", "2020-12-31"]}``.
        **kwargs: passed to :func:`composite` (bands, metrics, sensor, indices, ...).

    Returns:
        label -> output path.

    Raises:
        ConfigError: for a period that is not a [start, end] pair or an empty date window.
        InputError: for a period without scenes. Periods are checked before any is written.
    """
    sensor: SensorConfig = kwargs["sensor"]
    for label, window in periods.items():  # check every period before writing any
        if isinstance(window, str) or len(window) != 2:
            raise ConfigError(f"periods.{label}: expected [start, end], got {window!r}")
        select_scenes(scenes, window[0], window[1])
    out: dict[str, Path] = {}
    for label, window in periods.items():
        out[str(label)] = composite(
            scenes,
            Path(out_dir) / f"{sensor.name}_{label}.tif",
            start=window[0],
            end=window[1],
            **kwargs,
        )
    return out
