"""Compositing scenes into spectral-temporal metric (STM) rasters, window by window.

Scenes are found in a folder (or given as a list), dated from their file names, filtered to a
date window, checked to share one grid, and read window by window so memory depends on the
window size and the number of scenes, never on the raster size. Each window's stack is masked
with the scene's QA decoder and the sensor's nodata, scaled to reflectance, extended by spectral
indices and reduced by the numba kernel in :mod:`bsrlc.stm.metrics`. Windows run on the local
cores, or as tasks on a Dask cluster when a scheduler address is configured.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window
from tqdm.auto import tqdm

from bsrlc.errors import ConfigError, InputError
from bsrlc.raster import (
    COGWriter,
    RasterInfo,
    band_indices,
    block_windows,
    check_same_grid,
    open_raster,
    raster_info,
)
from bsrlc.stm.indices import compute_index, index_bands
from bsrlc.stm.metrics import MetricSpec, compute_stm_block, parse_metrics
from bsrlc.stm.qa import get_decoder

log = logging.getLogger(__name__)

OUT_NODATA = -32768
OUT_SCALE = 10000


@dataclass(frozen=True)
class Scene:
    """One acquisition.

    Attributes:
        id: the scene's name (file stem).
        date: acquisition date.
        files: the band files: one multi-band file, or one file per band (in band order).
        mask: the QA mask file.
    """

    id: str
    date: dt.date
    files: tuple[Path, ...]
    mask: Path


@dataclass
class SensorConfig:
    """How to read one sensor's scenes.

    Attributes:
        name: used in output file names (``{name}_{label}.tif``).
        scale: reflectance = DN * scale + offset.
        offset: see ``scale``.
        decoder: QA decoder name (see :mod:`bsrlc.stm.qa`).
        decoder_options: keyword options of the decoder.
        mask_suffix: the mask of ``X.tif`` is ``X{mask_suffix}.tif``.
        date_regex: regex whose first group is the date in the file name.
        date_format: strptime format of that group.
    """

    name: str = "landsat"
    scale: float = 1e-4
    offset: float = 0.0
    decoder: str = "valid"
    decoder_options: dict[str, Any] = field(default_factory=dict)
    mask_suffix: str = "_QA"
    date_regex: str = r"(\d{8})"
    date_format: str = "%Y%m%d"


def _parse_date(value: Any, what: str) -> dt.date:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"{what}={value}: not a date; use YYYY-MM-DD") from None


def discover_scenes(
    scenes: str | Path | Sequence[str | Path],
    sensor: SensorConfig,
    bands: Sequence[str],
    glob: str = "*.tif",
    band_file_pattern: str | None = None,
) -> list[Scene]:
    """Find scenes and their masks.

    Args:
        scenes: a folder, or a list of scene files (or, with ``band_file_pattern``, scene ids
            or any one of their band files).
        sensor: the sensor's reading rules.
        bands: the bands wanted (for the one-file-per-band layout).
        glob: which files in a folder are scenes (mask files are excluded automatically).
        band_file_pattern: for one file per band, e.g. ``"{scene}_{band}.tif"``; None when each
            scene is one multi-band file.

    Returns:
        Scenes sorted by date.

    Raises:
        InputError: if a folder is missing or a scene has no date or no mask.
    """
    date_re = re.compile(sensor.date_regex)
    if isinstance(scenes, (str, Path)) and Path(scenes).is_dir():
        folder = Path(scenes)
        candidates = sorted(folder.glob(glob))
    elif isinstance(scenes, (str, Path)):
        raise InputError(f"{scenes}: scene folder not found; set scenes= to a folder or a list")
    else:
        candidates = [Path(s) for s in scenes]
    found: dict[str, Scene] = {}
    for path in candidates:
        if path.stem.endswith(sensor.mask_suffix):
            continue
        if band_file_pattern:
            scene_id = _scene_id_from_band_file(path, band_file_pattern, bands)
            if scene_id is None:
                continue
            files = tuple(
                path.parent / band_file_pattern.format(scene=scene_id, band=b) for b in bands
            )
        else:
            scene_id, files = path.stem, (path,)
        if scene_id in found:
            continue
        m = date_re.search(scene_id)
        if not m:
            raise InputError(
                f"{path}: no date in the file name matching {sensor.date_regex!r}; rename it "
                "or set sensor.date_regex"
            )
        try:
            date = dt.datetime.strptime(m.group(1), sensor.date_format).date()
        except ValueError:
            raise InputError(
                f"{path}: {m.group(1)!r} is not a date of format {sensor.date_format}"
            ) from None
        for f in files:
            if not f.exists():
                raise InputError(f"{f}: band file of scene {scene_id} not found")
        mask = path.parent / f"{scene_id}{sensor.mask_suffix}.tif"
        if not mask.exists():
            raise InputError(
                f"{mask}: QA mask of {files[0]} not found; every scene needs "
                f"{{scene}}{sensor.mask_suffix}.tif (or set sensor.mask_suffix)"
            )
        found[scene_id] = Scene(scene_id, date, files, mask)
    return sorted(found.values(), key=lambda s: (s.date, s.id))


def _scene_id_from_band_file(path: Path, pattern: str, bands: Sequence[str]) -> str | None:
    if "{band}" not in pattern or "{scene}" not in pattern:
        raise ConfigError(f"band_file_pattern={pattern}: must contain {{scene}} and {{band}}")
    regex = re.escape(pattern).replace(r"\{scene\}", "(?P<scene>.+)")
    regex = regex.replace(r"\{band\}", "(?P<band>" + "|".join(map(re.escape, bands)) + ")")
    m = re.fullmatch(regex, path.name)
    return m.group("scene") if m else None


@dataclass
class _Plan:
    scenes: list[Scene]
    grid: RasterInfo
    band_idx: list[list[int]]  # per scene, per file: 1-based indices
    bands: list[str]
    indices: list[str]
    spec: MetricSpec
    sensor: SensorConfig

    @property
    def descriptions(self) -> list[str]:
        names = [f"{b}_{m.upper()}" for b in self.bands + self.indices for m in self.spec.names]
        return [*names, "CLEAR_COUNT"]


def plan(
    scenes: Sequence[Scene],
    bands: Sequence[str],
    metrics: Sequence[str],
    indices: Sequence[str],
    sensor: SensorConfig,
) -> _Plan:
    """Check scenes, masks and bands up front, before any output is opened.

    Args:
        scenes: the window's scenes.
        bands: bands to composite, by band description (or, for one file per band, the
            bands of the pattern).
        metrics: metric names.
        indices: spectral index names.
        sensor: the sensor's reading rules.

    Returns:
        What the engine needs.

    Raises:
        InputError: for different grids or CRSs, a mask of another shape, a missing band.
    """
    spec = parse_metrics(metrics)
    for name in indices:
        index_bands(name, bands)  # raises for unknown indices or missing input bands
    infos = [raster_info(f) for s in scenes for f in s.files]
    check_same_grid(infos, "scenes")
    grid = infos[0]
    band_idx = []
    for s in scenes:
        if len(s.files) == 1:
            band_idx.append(band_indices(raster_info(s.files[0]), bands))
        else:
            band_idx.append([1] * len(s.files))
        mask = raster_info(s.mask, require_crs=False)
        if (mask.width, mask.height) != (grid.width, grid.height):
            raise InputError(
                f"{s.mask}: mask is {mask.width}x{mask.height} but its scene {s.files[0]} is "
                f"{grid.width}x{grid.height}; use the mask that belongs to the scene"
            )
    return _Plan(list(scenes), grid, band_idx, list(bands), list(indices), spec, sensor)


def composite_window(p: _Plan, window: Window) -> np.ndarray:
    """Read, mask and reduce one window.

    Args:
        p: the plan.
        window: the window.

    Returns:
        (n_outputs, rows, cols) int16 STM block.
    """
    h, w = int(window.height), int(window.width)
    nb = len(p.bands)
    stack = np.empty((len(p.scenes), nb + len(p.indices), h, w), np.float32)
    decode = get_decoder(p.sensor.decoder)
    for t, scene in enumerate(p.scenes):
        if len(scene.files) == 1:
            with open_raster(scene.files[0]) as src:
                dn = src.read(p.band_idx[t], window=window)
                nodata = src.nodata
        else:
            arrays = []
            for f in scene.files:
                with open_raster(f) as src:
                    arrays.append(src.read(1, window=window))
                    nodata = src.nodata
            dn = np.stack(arrays)
        with open_raster(scene.mask) as src:
            clear = decode(src.read(1, window=window), **p.sensor.decoder_options)
        if nodata is not None:
            clear &= ~(dn == nodata).any(axis=0)
        refl = dn.astype(np.float32) * np.float32(p.sensor.scale) + np.float32(p.sensor.offset)
        clear &= np.isfinite(refl).all(axis=0)
        stack[t, :nb] = refl
        for k, name in enumerate(p.indices):
            stack[t, nb + k] = compute_index(name, refl, p.bands)
        stack[t][:, ~clear] = np.nan
    stats, count = compute_stm_block(stack, p.spec)
    nodata_px = count == 0
    out = np.empty((stats.shape[0] + 1, h, w), np.int16)
    scaled = np.round(stats * OUT_SCALE)
    np.clip(scaled, -32767, 32767, out=scaled)
    scaled[:, nodata_px] = OUT_NODATA
    out[:-1] = scaled.astype(np.int16)
    out[-1] = np.minimum(count, 32767)
    return out


def composite(
    scenes: Sequence[Scene],
    out_path: str | Path,
    bands: Sequence[str],
    metrics: Sequence[str],
    sensor: SensorConfig,
    indices: Sequence[str] = (),
    start: dt.date | str | None = None,
    end: dt.date | str | None = None,
    block_size: int = 256,
    dask_address: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Composite the scenes of a date window into one STM COG.

    Args:
        scenes: candidate scenes (filtered to the window here).
        out_path: the output file.
        bands: bands to composite.
        metrics: metric names (``min``, ``p25``, ``mean``, ``std``, ``count``...).
        sensor: the sensor's reading rules.
        indices: spectral indices to composite too (``NDVI``...).
        start: first date (inclusive); None = no bound.
        end: last date (inclusive); None = no bound.
        block_size: window edge in pixels (memory ~ scenes x bands x block_size^2 x 4 bytes).
        dask_address: a ``dask.distributed`` scheduler to run windows on; None = local cores.
        overwrite: replace an existing output; otherwise it is kept and returned.
        progress: show a progress bar.

    Returns:
        The output path.

    Raises:
        ConfigError: for an empty date window.
        InputError: for a window without scenes or inconsistent inputs.
    """
    out_path = Path(out_path)
    d0 = _parse_date(start, "start") if start is not None else dt.date.min
    d1 = _parse_date(end, "end") if end is not None else dt.date.max
    if d0 > d1:
        raise ConfigError(f"start={d0} is after end={d1}: the date window is empty; swap them")
    chosen = [s for s in scenes if d0 <= s.date <= d1]
    if not chosen:
        span = f"{scenes[0].date}..{scenes[-1].date}" if scenes else "none"
        where = scenes[0].files[0].parent if scenes else "the scene folder"
        raise InputError(
            f"{where}: no scene between {d0} and {d1} (scenes found: {len(scenes)}, dates "
            f"{span}); widen the window or point scenes= at the right folder"
        )
    if out_path.exists() and not overwrite:
        log.info("%s exists; skipped (overwrite=true recomputes it)", out_path)
        return out_path
    p = plan(chosen, bands, metrics, indices, sensor)
    grid = p.grid
    windows = block_windows(grid.width, grid.height, block_size)
    tags = {
        "SENSOR": sensor.name,
        "START": str(chosen[0].date if start is None else d0),
        "END": str(chosen[-1].date if end is None else d1),
        "N_SCENES": str(len(chosen)),
        "SCALE": str(1 / OUT_SCALE),
        "SCENES": ",".join(s.id for s in chosen),
    }
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
        overwrite=True,
    ) as writer:
        bar = tqdm(total=len(windows), desc=out_path.name, disable=not progress, unit="win")
        for window, block in _run(p, windows, dask_address):
            writer.write(block, window)
            bar.update()
        bar.close()
    log.info(
        "%s: %d scenes, %d bands -> %s", sensor.name, len(chosen), len(p.descriptions), out_path
    )
    return out_path


def _run(
    p: _Plan, windows: list[Window], dask_address: str | None
) -> Iterable[tuple[Window, np.ndarray]]:
    """Yield (window, block) pairs, locally (numba uses every core) or on a Dask cluster."""
    if not dask_address:
        for window in windows:
            yield window, composite_window(p, window)
        return
    from dask.distributed import Client, as_completed

    with Client(dask_address) as client:
        plan_future = client.scatter(p, broadcast=True)
        futures = {client.submit(composite_window, plan_future, w, pure=False): w for w in windows}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()


def composite_periods(
    scenes: Sequence[Scene],
    out_dir: str | Path,
    periods: Mapping[str, Sequence[Any]],
    **kwargs: Any,
) -> dict[str, Path]:
    """Composite several date windows: one ``{sensor}_{label}.tif`` per period.

    Args:
        scenes: candidate scenes.
        out_dir: the output folder.
        periods: label -> (start, end).
        **kwargs: passed to :func:`composite` (bands, metrics, sensor, ...).

    Returns:
        label -> output path.
    """
    sensor: SensorConfig = kwargs["sensor"]
    out = {}
    for label, window in periods.items():
        if len(window) != 2:
            raise ConfigError(f"periods.{label}: expected [start, end], got {list(window)}")
        out[str(label)] = composite(
            scenes,
            Path(out_dir) / f"{sensor.name}_{label}.tif",
            start=window[0],
            end=window[1],
            **{k: v for k, v in kwargs.items()},
        )
    return out
