"""Stored values to reflectance: which scale a raster's pixels take, and a check that it fits.

STMs are stored in many ways: int16 reflectance x 10000 (FORCE, bsrlc's own STMs), uint16 with
GDAL scale/offset tags (Sentinel-2 L2A since baseline 04.00: ``DN x 1e-4 - 0.1``), float32
reflectance (0-1). A model is trained on reflectance, so each raster is scaled by the first of
these that applies (:func:`raster_scaling`):

1. the configured scale (``data.input_scale``), when given;
2. the raster's GDAL scale/offset tags (``gdalinfo`` shows them as ``Offset: ..., Scale: ...``),
   when any selected band has them;
3. 1 for floating-point rasters (taken as reflectance);
4. 1e-4 for integer rasters (reflectance x 10000).

Prediction scales its input rasters by the same rules (``input_scale=`` on the ``predict.py``
command line overrides them), so a model trained on one encoding maps another encoding of the
same reflectance (:func:`bsrlc.inference.checks.input_scaling`).

A wrong scale trains without complaint on values 10000 times off (float reflectance x 1e-4
gives normalisation statistics of ~1e-5), so :func:`check_reflectance` reads a decimated view
of the raster and refuses values outside a plausible reflectance range after scaling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rasterio.enums import Resampling

from bsrlc.errors import InputError
from bsrlc.raster import RasterInfo, band_indices, open_raster

DN_SCALE = 1e-4
"""Reflectance per stored unit of an integer raster without scale/offset tags."""

PLAUSIBLE = (-0.5, 2.0)
"""Reflectance range the 1st and 99th percentiles of every band must lie in after scaling."""

FEATURE_RANGE = (-1.1, 2.0)
"""The range for classifier features, which may hold normalised-difference indices (-1..1,
e.g. NDVI_MIN over water) next to reflectance: a wrong scale is still 10000 times off."""

TOO_SMALL = 1e-3
"""The largest band's 99th percentile must reach this (a float 0-1 raster scaled by 1e-4
peaks at 1e-4)."""

SAMPLE_EDGE = 512
"""The range check reads a decimated view of at most this many pixels a side."""

SCALE_KEY = "data.input_scale"
"""The config key that overrides the scale (named in messages)."""


@dataclass(frozen=True)
class Scaling:
    """Reflectance = stored value x ``scale`` + ``offset``.

    Attributes:
        scale: reflectance per stored unit.
        offset: reflectance of a stored 0.
        source: why this scale was chosen (for logs and messages).
    """

    scale: float
    offset: float
    source: str

    def describe(self) -> str:
        """The scaling in words, e.g. ``"x 0.0001 + -0.1 (GDAL scale/offset tags)"``."""
        offset = f" + {self.offset:g}" if self.offset else ""
        return f"x {self.scale:g}{offset} ({self.source})"


def raster_scaling(
    info: RasterInfo,
    bands: Sequence[str],
    override: float | None = None,
    key: str = SCALE_KEY,
) -> Scaling:
    """The scaling of a raster's selected bands, by the rules of the module docstring.

    Args:
        info: the raster.
        bands: the selected band descriptions.
        override: the configured scale (offset 0), or None to decide from the raster.
        key: the setting that gives ``override`` (named in messages and as the source):
            ``data.input_scale`` in training, ``input_scale`` in predict.

    Returns:
        The scaling.

    Raises:
        InputError: if the selected bands carry different scale/offset tags (one scaling
            applies to every band of a raster), or the override is not a positive number.
    """
    if override is not None:
        value = float(override)
        if not math.isfinite(value) or value <= 0:
            raise InputError(f"{key}={override}: give a positive number (or null)")
        return Scaling(value, 0.0, key)
    idx = band_indices(info, bands)
    with open_raster(info.path) as src:
        scales = [float(src.scales[i - 1]) for i in idx]
        offsets = [float(src.offsets[i - 1]) for i in idx]
        kind = np.dtype(src.dtypes[idx[0] - 1]).kind
    if any(s != 1.0 for s in scales) or any(o != 0.0 for o in offsets):
        pairs = sorted({(s, o) for s, o in zip(scales, offsets, strict=True)})
        if len(pairs) > 1:
            shown = ", ".join(f"x {s:g} + {o:g}" for s, o in pairs[:4])
            raise InputError(
                f"{info.name}: the selected bands have different GDAL scale/offset tags "
                f"({shown}); bsrlc scales all bands of a raster alike: rewrite the file with "
                f"one scale (gdal_translate -unscale -ot Float32) or set {key}="
            )
        return Scaling(scales[0], offsets[0], "GDAL scale/offset tags")
    if kind == "f":
        return Scaling(1.0, 0.0, "floating-point values taken as reflectance")
    return Scaling(DN_SCALE, 0.0, "integer values without scale/offset tags: reflectance x 10000")


def reflectance_range(
    info: RasterInfo, bands: Sequence[str], scaling: Scaling
) -> tuple[float, float] | None:
    """The smallest 1st and largest 99th percentile of the selected bands, as reflectance.

    Reads a decimated view (at most :data:`SAMPLE_EDGE` pixels a side, nearest neighbour);
    nodata and non-finite pixels are left out.

    Args:
        info: the raster.
        bands: the selected band descriptions.
        scaling: the scaling to apply.

    Returns:
        (low, high), or None when the view holds no valid pixel.
    """
    idx = band_indices(info, bands)
    step = max(1, math.ceil(max(info.width, info.height) / SAMPLE_EDGE))
    shape = (len(idx), max(1, info.height // step), max(1, info.width // step))
    with open_raster(info.path) as src:
        data = src.read(idx, out_shape=shape, resampling=Resampling.nearest)
    valid = np.ones(shape[1:], bool)
    if data.dtype.kind == "f":
        valid &= np.isfinite(data).all(0)
    if info.nodata is not None and not np.isnan(info.nodata):
        valid &= (data != info.nodata).all(0)
    if not valid.any():
        return None
    values = data[:, valid].astype(np.float64) * scaling.scale + scaling.offset
    low = np.percentile(values, 1, axis=1)
    high = np.percentile(values, 99, axis=1)
    return float(low.min()), float(high.max())


def check_reflectance(
    info: RasterInfo,
    bands: Sequence[str],
    scaling: Scaling,
    role: str = "",
    key: str = SCALE_KEY,
    note: str = "",
    plausible: tuple[float, float] = PLAUSIBLE,
) -> tuple[float, float] | None:
    """Refuse a raster whose values are no reflectance after scaling.

    Args:
        info: the raster.
        bands: the selected band descriptions.
        scaling: its scaling.
        role: ``"LR"``, ``"HR"`` or ``""``, for the message.
        key: the setting named as the fix (``data.input_scale`` in training, ``input_scale``
            in predict).
        note: added to the message in parentheses (e.g. how a model's training data was
            stored).
        plausible: the range the percentiles must lie in (:data:`FEATURE_RANGE` for
            classifier features).

    Returns:
        The range of :func:`reflectance_range` (None: no valid pixel in the sample).

    Raises:
        InputError: one line naming the file, the range found, the scaling used and ``key``
            as the fix.
    """
    found = reflectance_range(info, bands, scaling)
    if found is None:
        return None
    low, high = found
    if plausible[0] <= low and high <= plausible[1] and high >= TOO_SMALL:
        return found
    what = f"{role} raster " if role else ""
    hint = (
        "values far below reflectance"
        if high < TOO_SMALL
        else f"values outside the reflectance range {plausible[0]:g} to {plausible[1]:g}"
    )
    pair = "; [LR, HR] for two scales" if role in {"LR", "HR"} else ""
    extra = f" ({note})" if note else ""
    raise InputError(
        f"{info.name}: {what}1st-99th percentile {low:.4g} to {high:.4g} after scaling "
        f"{scaling.describe()}: {hint}; set {key}= to the reflectance of one stored "
        f"unit (1e-4 for reflectance x 10000, 1 for reflectance{pair}){extra}"
    )


def band_scalings(
    info: RasterInfo,
    bands: Sequence[str],
    override: float | None = None,
    key: str = SCALE_KEY,
) -> list[Scaling]:
    """Each selected band's scaling, for models that normalise every band on its own.

    A classifier's features may mix reflectance with other bands: bsrlc's STMs tag reflectance
    and indices x 1e-4 but CLEAR_COUNT x 1. Per-band normalisation absorbs any per-band scale,
    so such a raster is usable as long as prediction scales it as training did. The rules are
    :func:`raster_scaling`'s when ``override`` is given or the selected bands carry the same
    GDAL scale/offset tags (or none); when their tags differ, each band takes its own.

    Args:
        info: the raster.
        bands: the selected band descriptions.
        override: the configured scale of every band (offset 0), or None.
        key: the setting that gives ``override`` (see :func:`raster_scaling`).

    Returns:
        One scaling per band, in ``bands`` order.
    """
    if override is None:
        idx = band_indices(info, bands)
        with open_raster(info.path) as src:
            pairs = [(float(src.scales[i - 1]), float(src.offsets[i - 1])) for i in idx]
        if len(set(pairs)) > 1:
            return [Scaling(s, o, "GDAL scale/offset tags of each band") for s, o in pairs]
    return [raster_scaling(info, bands, override, key)] * len(bands)


def check_band_reflectance(
    info: RasterInfo,
    bands: Sequence[str],
    scalings: Sequence[Scaling],
    key: str = SCALE_KEY,
    note: str = "",
    plausible: tuple[float, float] = PLAUSIBLE,
) -> None:
    """:func:`check_reflectance` of each group of bands that share a scaling.

    In a raster whose bands carry different tags, the bands tagged ``x 1 + 0`` (counts such as
    CLEAR_COUNT, flags) are declared by the file as plain values and are not checked.

    Args:
        info: the raster.
        bands: the selected band descriptions.
        scalings: their scalings (:func:`band_scalings`).
        key: the setting named as the fix.
        note: added to the message (see :func:`check_reflectance`).
        plausible: the range the percentiles must lie in (see :func:`check_reflectance`).

    Raises:
        InputError: as :func:`check_reflectance`, for the first group that fails.
    """
    groups: dict[Scaling, list[str]] = {}
    for band, scaling in zip(bands, scalings, strict=True):
        groups.setdefault(scaling, []).append(band)
    for scaling, names in groups.items():
        if len(groups) > 1 and (scaling.scale, scaling.offset) == (1.0, 0.0):
            continue
        check_reflectance(info, names, scaling, key=key, note=note, plausible=plausible)
