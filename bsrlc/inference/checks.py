"""Inputs checked against what a model was trained on, before anything is computed.

A model learns at one pixel size, on north-up grids in metres, from reflectance in a certain
range. A raster that breaks one of these is mapped without complaint but wrongly (a south-up
raster agrees with the north-up map on 3/4 of its pixels, an all-saturated one maps to one
class), so :func:`check_input` refuses what cannot work and warns about what looks wrong:

- refused: a CRS in other units than the training grid's (degrees for a model trained in
  metres), a pixel size more than ``PIXEL_TOLERANCE`` off the training pixel size, non-square
  pixels, a south-up or rotated transform, a raster without any valid pixel;
- refused: values that are no reflectance after scaling (:func:`input_scaling`: each raster's
  scaling by the training rules of :mod:`bsrlc.data.reflectance`, ``input_scale=`` to override;
  a raster stored otherwise than the training data, e.g. float reflectance for a model trained
  on int16 x 1e-4, is converted and fine);
- warned: more than ``NODATA_WARN`` of the pixels nodata, more than ``SATURATED_WARN`` at the
  data type's limit (saturated or clipped), more than ``RANGE_WARN`` outside the training
  range (band mean +- ``RANGE_STD`` standard deviations), a raster smaller than the model's
  receptive field.

The training grid is recorded in checkpoints and bundles as ``grid`` (:func:`grid_signature`);
models without it are checked for orientation, square pixels and content only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.enums import Resampling

from bsrlc.data.reflectance import (
    FEATURE_RANGE,
    PLAUSIBLE,
    Scaling,
    band_scalings,
    check_band_reflectance,
    raster_scaling,
)
from bsrlc.errors import InputError
from bsrlc.raster import band_indices, open_raster, raster_info

log = logging.getLogger(__name__)

PIXEL_TOLERANCE = 0.05  # relative difference of pixel size accepted
NODATA_WARN = 0.5
SATURATED_WARN = 0.01
RANGE_WARN = 0.05
RANGE_STD = 6.0
SAMPLE_EDGE = 512  # the content checks read a decimated view of at most this many pixels a side
SCALE_KEY = "input_scale"  # predict's override of the input rasters' scaling


def _units(crs: Any) -> str:
    if crs is None:
        return "none"
    if crs.is_geographic:
        return "degree"
    units = (crs.linear_units or "unknown").lower()
    return "metre" if units in {"metre", "meter", "m", "metres", "meters"} else units


def grid_signature(path: str | Path) -> dict[str, Any]:
    """What a model learns of its input grid: CRS units, pixel size, orientation.

    Args:
        path: a training raster.

    Returns:
        ``{"crs_units", "pixel_size": [x, y], "north_up": bool}``.
    """
    info = raster_info(path)
    t = info.transform
    return {
        "crs_units": _units(info.crs),
        "pixel_size": [abs(float(t.a)), abs(float(t.e))],
        "north_up": bool(t.b == 0 and t.d == 0 and t.a > 0 and t.e < 0),
    }


def check_grid(path: str | Path, meta: dict[str, Any], what: str) -> None:
    """Refuse a raster whose grid the model cannot have learnt.

    Args:
        path: the input raster.
        meta: the model's metadata (``grid`` if recorded).
        what: the model's role, for messages.

    Raises:
        InputError: naming the problem and the fix.
    """
    info = raster_info(path)
    t = info.transform
    if t.b != 0 or t.d != 0:
        raise InputError(
            f"{path}: rotated grid (transform {tuple(t)[:6]}); the {what} model needs a north-up "
            "grid: warp it first (gdalwarp -t_srs <its CRS> in.tif out.tif)"
        )
    if t.e > 0 or t.a < 0:
        raise InputError(
            f"{path}: {'south-up' if t.e > 0 else 'east-to-west'} grid; the {what} model needs "
            "a north-up grid: warp it first (gdalwarp in.tif out.tif writes north-up)"
        )
    x, y = abs(float(t.a)), abs(float(t.e))
    if abs(x - y) > PIXEL_TOLERANCE * max(x, y):
        raise InputError(
            f"{path}: non-square pixels ({x:g} x {y:g}); resample to square pixels "
            f"(gdalwarp -tr {max(x, y):g} {max(x, y):g})"
        )
    grid = meta.get("grid")
    if not grid:
        return
    units = _units(info.crs)
    if units != grid["crs_units"]:
        raise InputError(
            f"{path}: CRS in {units} ({info.crs}), the {what} model was trained on a grid in "
            f"{grid['crs_units']}; warp it to a projected CRS (gdalwarp -t_srs EPSG:<code> -tr "
            f"{grid['pixel_size'][0]:g} {grid['pixel_size'][1]:g})"
        )
    want = float(grid["pixel_size"][0])
    if abs(x - want) > PIXEL_TOLERANCE * want:
        raise InputError(
            f"{path}: {x:g} {units} pixels, the {what} model was trained on {want:g}; resample "
            f"it (gdalwarp -tr {want:g} {want:g}) or use a model trained at this pixel size"
        )


def check_content(
    path: str | Path,
    bands: list[str],
    mean: list[float],
    std: list[float],
    context: int,
    what: str,
    input_scale: float | Sequence[float] = 1e-4,
    input_offset: float | Sequence[float] = 0.0,
) -> dict[str, float]:
    """Warn about a raster that looks unlike the training data; refuse one without data.

    Reads a decimated view of the model's bands (at most ``SAMPLE_EDGE`` pixels a side).

    Args:
        path: the input raster.
        bands: the model's bands.
        mean: their training means (reflectance).
        std: their training standard deviations.
        context: the model's receptive field in input pixels (0: none).
        what: the model's role, for messages.
        input_scale: reflectance per stored value (one, or one per band).
        input_offset: reflectance of a stored 0 (one, or one per band).

    Returns:
        ``{"nodata", "saturated", "out_of_range"}`` shares of the sampled pixel values.

    Raises:
        InputError: if the raster holds no valid pixel.
    """
    info = raster_info(path)
    idx = band_indices(info, bands)
    step = max(1, int(np.ceil(max(info.width, info.height) / SAMPLE_EDGE)))
    shape = (len(idx), max(1, info.height // step), max(1, info.width // step))
    try:
        with open_raster(path) as src:
            data = src.read(idx, out_shape=shape, resampling=Resampling.nearest)  # as stored
    except Exception as err:  # GDAL's read errors come in several classes (CPLE_*, IOError)
        raise _unreadable(path, err) from None
    valid = np.ones(data.shape, bool) if info.nodata is None else data != info.nodata
    valid &= np.isfinite(data) if data.dtype.kind == "f" else True
    if not valid.any():
        raise InputError(
            f"{path}: every pixel of the {what} model's bands is nodata ({info.nodata}); "
            "check the file (an empty tile or the wrong nodata value)"
        )
    shares = {"nodata": float(1 - valid.all(0).mean())}
    if data.dtype.kind in "iu":
        lim = np.iinfo(data.dtype)
        at_limit = ((data == lim.max) | (data == lim.min)) & valid
        shares["saturated"] = float(at_limit.any(0).mean())
    else:
        shares["saturated"] = 0.0
    scale = np.asarray(input_scale, np.float64).reshape(-1, 1, 1)
    offset = np.asarray(input_offset, np.float64).reshape(-1, 1, 1)
    refl = data.astype(np.float64) * scale + offset
    lo = np.asarray(mean)[:, None, None] - RANGE_STD * np.asarray(std)[:, None, None]
    hi = np.asarray(mean)[:, None, None] + RANGE_STD * np.asarray(std)[:, None, None]
    outside = ((refl < lo) | (refl > hi)) & valid
    shares["out_of_range"] = float(outside.any(0)[valid.all(0)].mean()) if valid.all(0).any() else 0
    if shares["nodata"] > NODATA_WARN:
        log.warning("%s: %.0f %% of the pixels are nodata", path, 100 * shares["nodata"])
    if shares["saturated"] > SATURATED_WARN:
        log.warning(
            "%s: %.1f %% of the pixels are at the data type's limit (saturated or clipped); "
            "their classes are unreliable",
            path,
            100 * shares["saturated"],
        )
    if shares["out_of_range"] > RANGE_WARN:
        log.warning(
            "%s: %.1f %% of the pixels lie outside the %s model's training range (band mean "
            "+- %g std) after scaling %s; if the scaling is wrong, set %s=",
            path,
            100 * shares["out_of_range"],
            what,
            RANGE_STD,
            _describe(_pairs(scale, offset)),
            SCALE_KEY,
        )
    if context and min(info.width, info.height) < context:
        log.warning(
            "%s: %d x %d px, smaller than the %s model's %d px receptive field: the map is "
            "made mostly from padding",
            path,
            info.width,
            info.height,
            what,
            context,
        )
    return shares


def _unreadable(path: str | Path, err: Exception) -> InputError:
    """The one-line error of a raster whose pixels cannot be read."""
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return InputError(
        f"{path}: cannot read its pixels ({reason}); the file is corrupt or truncated, re-create it"
    )


def model_scaling(meta: dict[str, Any], n_bands: int) -> list[tuple[float, float]] | None:
    """How the model's training raster was stored, per band, from its metadata.

    Args:
        meta: the model's metadata (``input_scale``, ``input_offset``: numbers, or lists with
            one per band; models written before ``input_offset`` was recorded mean offset 0).
        n_bands: the model's band count.

    Returns:
        (scale, offset) per band, or None when the model does not record it.
    """
    scale, offset = meta.get("input_scale"), meta.get("input_offset") or 0.0
    if scale is None:
        return None
    scales = list(scale) if isinstance(scale, list | tuple) else [scale] * n_bands
    offsets = list(offset) if isinstance(offset, list | tuple) else [offset] * n_bands
    if len(scales) != n_bands or len(offsets) != n_bands:
        return None
    return [(float(a), float(b)) for a, b in zip(scales, offsets, strict=True)]


def _pairs(scale: np.ndarray, offset: np.ndarray) -> list[tuple[float, float]]:
    """(scale, offset) per band of broadcastable scale and offset arrays."""
    a, b = np.broadcast_arrays(scale, offset)
    return [(float(x), float(y)) for x, y in zip(a.ravel(), b.ravel(), strict=True)]


def _describe(pairs: Sequence[tuple[float, float]]) -> str:
    """``x 0.0001``, ``x 0.0001 + -0.1``, or ``per band x 0.0001, x 1``."""
    shown = [f"x {a:g}" + (f" + {b:g}" if b else "") for a, b in dict.fromkeys(pairs)]
    return shown[0] if len(shown) == 1 else "per band " + ", ".join(shown)


def input_scaling(
    path: str | Path, model: Any, what: str, override: float | None = None
) -> Scaling:
    """The input raster's reflectance scaling, checked: the scaling prediction applies.

    The raster is scaled by the rules training uses (:func:`~bsrlc.data.reflectance.raster_scaling`:
    ``override`` if given, else its GDAL scale/offset tags, else 1 for float and 1e-4 for
    integer data), so the model sees the reflectance it was trained on however either raster is
    stored: a float reflectance raster and its int16 x 1e-4 copy give the same input. The
    model's normalisation statistics are reflectance, so the model's own stored scaling
    (``input_scale``, ``input_offset``) is not applied to the input; it is named in the log when
    the encodings differ and in the error.

    Args:
        path: the input raster.
        model: the loaded model (``bands``, ``meta``).
        what: the model's role, for messages.
        override: ``input_scale=`` of the command line (reflectance per stored value, offset
            0), or None to take it from the raster.

    Returns:
        The scaling.

    Raises:
        InputError: one line naming the file and ``input_scale=`` when the raster's values,
            scaled, are no plausible reflectance (or its bands carry different scale tags).
    """
    return _scalings(path, model, what, override, per_band=False)[0]


def input_band_scalings(
    path: str | Path, model: Any, what: str, override: float | None = None
) -> list[Scaling]:
    """:func:`input_scaling` per band, for classifiers (normalised band by band).

    As in classification training (:func:`~bsrlc.data.reflectance.band_scalings`), bands with
    different GDAL scale/offset tags (bsrlc's STMs: reflectance x 1e-4, CLEAR_COUNT x 1) each
    take their own; bands tagged ``x 1`` among them are not checked as reflectance, and the
    others are checked against :data:`~bsrlc.data.reflectance.FEATURE_RANGE` (indices reach
    -1).

    Args:
        path: the input raster.
        model: the loaded model (``bands``, ``meta``).
        what: the model's role, for messages.
        override: ``input_scale=`` of the command line, or None.

    Returns:
        One scaling per model band.

    Raises:
        InputError: as :func:`input_scaling`.
    """
    return _scalings(path, model, what, override, per_band=True)


def _scalings(
    path: str | Path, model: Any, what: str, override: float | None, per_band: bool
) -> list[Scaling]:
    info = raster_info(path)
    bands = list(model.bands)
    if per_band:
        scalings = band_scalings(info, bands, override, key=SCALE_KEY)
    else:
        scalings = [raster_scaling(info, bands, override, key=SCALE_KEY)] * len(bands)
    trained = model_scaling(model.meta, len(bands))
    note = f"the {what} model was trained on values {_describe(trained)}" if trained else ""
    plausible = FEATURE_RANGE if per_band else PLAUSIBLE  # as in training (classifier features)
    try:
        check_band_reflectance(info, bands, scalings, key=SCALE_KEY, note=note, plausible=plausible)
    except InputError:
        raise
    except Exception as err:  # GDAL's read errors come in several classes (CPLE_*, IOError)
        raise _unreadable(path, err) from None
    found = [(sc.scale, sc.offset) for sc in scalings]
    how = "; ".join(dict.fromkeys(sc.describe() for sc in scalings))
    if trained is not None and found != trained:
        log.info(
            "%s: reflectance = value %s; the %s model was trained on values %s: converted",
            info.name,
            how,
            what,
            _describe(trained),
        )
    else:
        log.info("%s: reflectance = value %s", info.name, how)
    return scalings


def check_input(
    path: str | Path,
    model: Any,
    what: str,
    scaling: Scaling | Sequence[Scaling] | None = None,
) -> dict[str, float]:
    """:func:`check_grid` and :func:`check_content` for a loaded model (checkpoint or bundle).

    Args:
        path: the input raster.
        model: the loaded model (``bands``, ``mean``, ``std``, ``meta``).
        what: the model's role, for messages.
        scaling: the raster's scaling, one or one per band (None: from the raster by the
            training rules, per band, without the reflectance check of :func:`input_scaling`;
            :func:`prepare_input` runs both).

    Returns:
        The content shares of :func:`check_content`.
    """
    if isinstance(scaling, Scaling):
        scaling = [scaling] * len(model.bands)
    return _check(path, model, what, scaling, None, None)[1]


def prepare_input(
    path: str | Path,
    model: Any,
    what: str,
    override: float | None = None,
    per_band: bool = False,
) -> list[Scaling]:
    """Check an input raster for a model and find the scaling to read it with (predict).

    :func:`check_grid`, then :func:`input_scaling` (:func:`input_band_scalings` with
    ``per_band``; refusing values that are no reflectance), then :func:`check_content` on the
    scaled values.

    Args:
        path: the input raster.
        model: the loaded model.
        what: the model's role, for messages.
        override: ``input_scale=`` of the command line, or None.
        per_band: bands may differ in scaling (classifiers); else one scaling for the raster.

    Returns:
        The raster's scaling to reflectance, one per model band.
    """
    return _check(path, model, what, None, override, per_band)[0]


def _check(
    path: str | Path,
    model: Any,
    what: str,
    scalings: Sequence[Scaling] | None,
    override: float | None,
    per_band: bool | None,
) -> tuple[list[Scaling], dict[str, float]]:
    """The checks; ``per_band`` None: find the scalings without the reflectance check."""
    meta = model.meta
    check_grid(path, meta, what)
    if scalings is None and per_band is None:
        scalings = band_scalings(raster_info(path), list(model.bands), override, key=SCALE_KEY)
    elif scalings is None:
        scalings = _scalings(path, model, what, override, per_band)
    if meta.get("halo") is not None:  # a classifier: its patch
        context = 2 * int(meta["halo"]) + 1
    else:
        context = int(meta.get("receptive_field") or 0)
    shares = check_content(
        path,
        list(model.bands),
        list(model.mean),
        list(model.std),
        context,
        what,
        [sc.scale for sc in scalings],
        [sc.offset for sc in scalings],
    )
    return list(scalings), shares


def training_grid(task: Any, attribute: str) -> dict[str, Any] | None:
    """The :func:`grid_signature` of the raster a task is trained on, for its checkpoint.

    Args:
        task: the LightningModule (its trainer's datamodule holds the raster paths).
        attribute: the datamodule's attribute with the raster path (or a list: the first).

    Returns:
        The signature, or None outside a fit with such a datamodule.
    """
    trainer = getattr(task, "_trainer", None)
    value = getattr(getattr(trainer, "datamodule", None), attribute, None)
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    if value is None:
        return None
    try:
        return grid_signature(value)
    except Exception:  # a checkpoint is never lost over its optional metadata
        log.warning("%s: grid not recorded in the checkpoint", value)
        return None
