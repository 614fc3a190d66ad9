"""Scenes as delivered, warped onto the target grid window by window while they are read.

No scene is ever copied to disk or read whole. For one window of the target grid (an odc-geo
:class:`~odc.geo.geobox.GeoBox`, from :func:`bsrlc.stm.grid.windows`) and one scene:

- each band file is read only in the source window that the target window needs (plus the
  resampling kernel's reach, :func:`source_roi`), and warped with GDAL (``rasterio.warp``) onto
  the window: ``bilinear`` by default, or ``cubic``, ``average``, ``nearest``. The kernel width
  is pinned per source (:func:`kernel_scale`) and GDAL's chunking heuristic is off
  (:data:`WARP_OPTIONS`), so a window gets exactly the DNs ``rasterio.warp.reproject`` of the
  whole file onto that window gives;
- raw values that are fill or outside the product's valid range (saturation) become nodata
  *before* the warp, so they never leak into interpolated neighbours, and a target pixel whose
  kernel reaches one of them is not used (it would be valued from its other neighbours only);
- QA bands are decoded to clear / not clear at their **native** resolution first (a decoder of
  :mod:`bsrlc.stm.qa` or any callable), the 0/1 result is averaged onto the window (the clear
  fraction of each target pixel's area; beyond the QA raster's edge counts as not clear) and
  thresholded (``min_clear_fraction``, default 1: every native QA pixel under the target pixel
  is clear). Bit fields are never interpolated. QA layers on one grid (Landsat QA_PIXEL +
  QA_RADSAT) are combined before that single warp;
- a target pixel is clear where the QA passes and every band has data there.

:class:`WarpReader` returns ``(bands, rows, cols)`` raw DNs plus a ``(rows, cols)`` clear mask;
each scene carries its per-band ``scale`` and ``offset`` (reflectance = DN * scale + offset).

Products (:func:`discover_sources` finds them in a folder, nested or flat):

- ``landsat_c2``: USGS Collection 2 Level-2 scenes as delivered (``*_SR_B*.TIF``,
  ``*_QA_PIXEL.TIF``, ``*_QA_RADSAT.TIF``, ``*_MTL.txt`` or ``*_MTL.json``), any path/row and
  UTM zone; date, spacecraft (band mapping) and scale/offset come from the MTL;
- ``sentinel2_l2a``: Sentinel-2 L2A as delivered, SAFE layout or flat, JP2 or GeoTIFF, 10 m and
  20 m bands and SCL at 20 m; the quantification value and (processing baseline >= 04.00) the
  ``BOA_ADD_OFFSET`` per band come from ``MTD_MSIL2A.xml``;
- any other files: :func:`scene_from_files`.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import math
import re
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
import rasterio.warp
from affine import Affine
from odc.geo import xy_
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry
from odc.geo.overlap import GbxPointTransform, compute_reproject_roi, get_scale_at_point
from odc.geo.roi import roi_is_empty
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.windows import Window
from scipy import ndimage

from bsrlc.errors import ConfigError, InputError
from bsrlc.raster import open_raster
from bsrlc.stm.qa import check_options, get_decoder, takes_path

log = logging.getLogger(__name__)

COMMON_BANDS = ("BLU", "GRN", "RED", "NIR", "SW1", "SW2")
"""The band names every product maps to (blue, green, red, NIR, SWIR 1, SWIR 2)."""

_TM = {"BLU": 1, "GRN": 2, "RED": 3, "NIR": 4, "SW1": 5, "SW2": 7}
_OLI = {"BLU": 2, "GRN": 3, "RED": 4, "NIR": 5, "SW1": 6, "SW2": 7}
LANDSAT_BANDS: dict[str, dict[str, int]] = {
    "LANDSAT_4": _TM,
    "LANDSAT_5": _TM,
    "LANDSAT_7": _TM,
    "LANDSAT_8": _OLI,
    "LANDSAT_9": _OLI,
}
"""Collection 2 SR band number of each common band, by ``SPACECRAFT_ID``."""

LANDSAT_C2_VALID_RANGE = (7273, 43636)
"""Valid raw DNs of Collection 2 Level-2 surface reflectance (reflectance -0.2 .. 1.0)."""

LANDSAT_RADSAT_EXTRA_BITS = {"LANDSAT_4": (9,), "LANDSAT_5": (9,), "LANDSAT_7": (9,)}
"""QA_RADSAT bits flagged besides the bands' own (bit n-1 = band n saturated): TM/ETM+ bit 9
dropped pixel; OLI bit 11 (terrain occlusion) is left to QA_PIXEL's fill."""

S2_BAND_IDS = (
    "B01",
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B09",
    "B10",
    "B11",
    "B12",
)
"""Sentinel-2 bands in the order of ``band_id`` 0..12 in ``MTD_MSIL2A.xml``."""

S2_COMMON = {"BLU": "B02", "GRN": "B03", "RED": "B04", "NIR": "B08", "SW1": "B11", "SW2": "B12"}
"""The Sentinel-2 band of each common band (NIR: B08 at 10 m)."""

S2_VALID_RANGE = (1, 65534)
"""Valid L2A raw DNs (0 = no data, 65535 = saturated)."""

RESAMPLING_NAMES = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average")
_KERNEL_RADIUS = {
    "nearest": 1,
    "bilinear": 1,
    "cubic": 2,
    "cubic_spline": 2,
    "lanczos": 3,
    "average": 1,
}

WARP_OPTIONS = {"SRC_FILL_RATIO_HEURISTICS": "NO"}
"""GDAL warp options of every warp. GDAL splits a warp into chunks where the source window is
sparsely used, and where it splits depends on the source's extent; each chunk gets its own
approximate transformer (0.125 px), so a window cut out of a scene would not give the pixels a
warp of the whole scene gives. Without the heuristic a window is warped as one chunk (memory
allowing): the same values as ``rasterio.warp.reproject`` of the whole file onto that window."""

Decoder = Callable[..., np.ndarray]
Product = Literal["landsat_c2", "sentinel2_l2a"]
PRODUCTS: tuple[str, ...] = ("landsat_c2", "sentinel2_l2a")


# --------------------------------------------------------------------------------------------
# scenes


@dataclass(frozen=True)
class MaskLayer:
    """A QA file and how to decode it to clear (True) / not clear at its native resolution.

    Attributes:
        path: the QA file (its first band is used).
        decoder: a decoder name of :mod:`bsrlc.stm.qa` or a callable ``(qa, **options) -> bool``
            (module-level or a ``functools.partial`` of one, so scenes stay picklable).
        options: keyword options of the decoder.
        reason: what a not-clear pixel of this layer is counted as: ``qa`` (clouds, shadows,
            snow...) or ``saturation`` (QA_RADSAT).
    """

    path: Path
    decoder: str | Decoder
    options: Mapping[str, Any] = field(default_factory=dict)
    reason: Literal["qa", "saturation"] = "qa"

    def decode(self, qa: np.ndarray) -> np.ndarray:
        """Decode a block of the QA band.

        Args:
            qa: raw QA values (native resolution).

        Returns:
            bool array of the same shape, True where clear.

        Raises:
            InputError: if the decoder returns another shape (or, from the decoder, if the
                file is not its product).
        """
        fn = get_decoder(self.decoder) if isinstance(self.decoder, str) else self.decoder
        opts = dict(self.options)
        if takes_path(fn):  # the decoder checks its product and names the file
            opts["path"] = self.path
        clear = np.asarray(fn(qa, **opts), dtype=bool)
        if clear.shape != qa.shape:
            raise InputError(
                f"{self.path}: decoder {self.decoder} returned shape {clear.shape} for a "
                f"{qa.shape} block; a decoder must return one bool per QA pixel"
            )
        return clear


@dataclass(frozen=True)
class SourceScene:
    """One acquisition as delivered: band files in any CRS and resolution, QA files, scaling.

    Attributes:
        id: product / scene id.
        date: acquisition date.
        product: ``landsat_c2``, ``sentinel2_l2a`` or ``files``.
        sensor: spacecraft (``LANDSAT_8``, ``SENTINEL-2A``...).
        bands: band name -> single-band file, in output order (common names ``BLU``..``SW2``
            first where the product has them).
        masks: QA layers; a target pixel is clear only where every layer says so.
        scale: band name -> reflectance = DN * scale + offset.
        offset: band name -> see ``scale``.
        nodata: raw fill value of the band files (None: the file's own, else 0 for integers
            and NaN for floats).
        valid_range: (lo, hi) valid raw DNs; others are treated as nodata before warping.
        metadata: the metadata file the scene was described by (MTL, MTD, STAC JSON), if any.
        band_index: band name -> 1-based band of its file, for bands inside multi-band files
            (a FORCE BOA, a multi-band STAC asset); bands not listed are band 1.
    """

    id: str
    date: dt.date
    product: str
    sensor: str
    bands: Mapping[str, Path]
    masks: tuple[MaskLayer, ...] = ()
    scale: Mapping[str, float] = field(default_factory=dict)
    offset: Mapping[str, float] = field(default_factory=dict)
    nodata: float | None = None
    valid_range: tuple[float, float] | None = None
    metadata: Path | None = None
    band_index: Mapping[str, int] = field(default_factory=dict)

    def bidx(self, band: str) -> int:
        """The 1-based band of ``band`` in its file (1 unless :attr:`band_index` says otherwise).

        Args:
            band: a band name of :attr:`bands`.

        Returns:
            The band number.
        """
        return int(self.band_index.get(band, 1))

    @property
    def qa(self) -> Path | None:
        """The first QA file (QA_PIXEL, SCL), or None."""
        return self.masks[0].path if self.masks else None

    @property
    def files(self) -> list[Path]:
        """Every file the scene reads (bands, then QA)."""
        return [*self.bands.values(), *(m.path for m in self.masks)]

    def common_scale(self, bands: Sequence[str] | None = None) -> tuple[float, float]:
        """The single (scale, offset) of the given bands.

        Args:
            bands: band names (None: all).

        Returns:
            (scale, offset).

        Raises:
            InputError: if the bands have different scales or offsets.
        """
        names = list(bands or self.bands)
        pairs = {(self.scale.get(b, 1.0), self.offset.get(b, 0.0)) for b in names}
        if len(pairs) != 1:
            raise InputError(
                f"{self.metadata or self.id}: bands {', '.join(names)} have different "
                f"scale/offset {sorted(pairs)}; apply them per band"
            )
        return pairs.pop()


def scene_from_files(
    bands: Mapping[str, str | Path],
    date: dt.date | str,
    masks: Sequence[MaskLayer] = (),
    scene_id: str | None = None,
    sensor: str = "unknown",
    scale: float | Mapping[str, float] = 1.0,
    offset: float | Mapping[str, float] = 0.0,
    nodata: float | None = None,
    valid_range: tuple[float, float] | None = None,
) -> SourceScene:
    """A scene from any single-band files (any CRS and resolution each).

    Args:
        bands: band name -> file.
        date: acquisition date (date or ``YYYY-MM-DD``).
        masks: QA layers.
        scene_id: the scene's id (default: the first band file's stem).
        sensor: free text.
        scale: one scale for all bands or one per band.
        offset: one offset for all bands or one per band.
        nodata: raw fill value (None: the files' own).
        valid_range: valid raw DNs (None: all).

    Returns:
        The scene.

    Raises:
        ConfigError: for no bands or a date that does not parse.
    """
    if not bands:
        raise ConfigError("scene_from_files: no band files given")
    paths = {str(k): Path(v) for k, v in bands.items()}
    if isinstance(date, str):
        try:
            date = dt.date.fromisoformat(date)
        except ValueError:
            raise ConfigError(f"date={date}: not a date; write it as YYYY-MM-DD") from None
    return SourceScene(
        id=scene_id or next(iter(paths.values())).stem,
        date=date,
        product="files",
        sensor=sensor,
        bands=paths,
        masks=tuple(masks),
        scale=scale if isinstance(scale, Mapping) else dict.fromkeys(paths, float(scale)),
        offset=offset if isinstance(offset, Mapping) else dict.fromkeys(paths, float(offset)),
        nodata=nodata,
        valid_range=valid_range,
    )


# --------------------------------------------------------------------------------------------
# warping


def resampling_of(name: str | Resampling) -> Resampling:
    """The rasterio resampling of a name.

    Args:
        name: one of :data:`RESAMPLING_NAMES` (or a rasterio ``Resampling``).

    Returns:
        The enum member.

    Raises:
        ConfigError: for an unknown name.
    """
    if isinstance(name, Resampling):
        return name
    key = str(name).lower()
    if key not in RESAMPLING_NAMES:
        raise ConfigError(
            f"resampling={name}: unknown; use one of {', '.join(RESAMPLING_NAMES)} "
            "(bilinear is the default)"
        )
    return Resampling[key]


def source_roi(
    src: GeoBox,
    dst: GeoBox,
    resampling: str | Resampling = "bilinear",
    shrink: float | None = None,
) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """The part of a source raster that a target window needs, and the part it fills.

    The source region is the target's footprint in source pixels (odc-geo's
    :func:`~odc.geo.overlap.compute_reproject_roi`) padded by the resampling kernel's reach,
    scaled like GDAL scales it when the target pixels are coarser than the source's.

    Args:
        src: the source raster's GeoBox.
        dst: the target window's GeoBox.
        resampling: the resampling used.
        shrink: source pixels per target pixel (the kernel's widening, 1 / :func:`kernel_scale`);
            None: estimated here.

    Returns:
        ((rows, cols) of the source, (rows, cols) of the target) as slices, or None when the
        two do not overlap.
    """
    rs = resampling_of(resampling)
    if shrink is None:
        first = compute_reproject_roi(src, dst, padding=1)
        if roi_is_empty(first.roi_dst) or roi_is_empty(first.roi_src):
            return None
        shrink = float(first.scale) if first.scale else 1.0
    shrink = max(1.0, shrink)
    pad = math.ceil(_KERNEL_RADIUS[rs.name] * shrink) + 1
    info = compute_reproject_roi(src, dst, padding=pad)
    if roi_is_empty(info.roi_dst) or roi_is_empty(info.roi_src):
        return None
    (r0, c0), (r1, c1) = info.roi_src, info.roi_dst
    return (slice(r0.start, r0.stop), slice(c0.start, c0.stop)), (
        slice(r1.start, r1.stop),
        slice(c1.start, c1.stop),
    )


def kernel_scale(src: GeoBox, dst: GeoBox) -> tuple[float, float]:
    """GDAL's ``XSCALE``/``YSCALE`` for warping a raster onto a grid.

    The scale is target pixels per source pixel along each axis, at the source's centre, at
    most 1. GDAL otherwise derives the kernel's width from the bounding boxes of each warp
    chunk, which a rotation between the CRSs inflates and which changes with the window: the
    same target pixel would get different values in different windows (OSGeo/gdal#7750).
    Computed once per source and target resolution, the kernel is the same in every window.
    Values within 2 % of 1 (UTM scale factor, small distortions) are 1: plain bilinear/cubic
    without widening.

    Args:
        src: the source raster's GeoBox.
        dst: any window of the target grid (only its CRS and resolution matter).

    Returns:
        (xscale, yscale), each in (0, 1].
    """
    tr = GbxPointTransform(src, dst)
    centre = xy_(src.shape.x / 2, src.shape.y / 2)
    sx, sy = get_scale_at_point(centre, tr).xy
    out = []
    for v in (sx, sy):
        v = 1.0 if v >= 0.98 else round(float(v), 4)
        out.append(v)
    return out[0], out[1]


def _fill_value(dtype: np.dtype, nodata: float | None) -> float:
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        return nodata
    return float("nan") if np.dtype(dtype).kind == "f" else 0


def _aligned(src: GeoBox, dst: GeoBox) -> bool:
    """Whether two GeoBoxes share one pixel grid (CRS, pixel size, whole-pixel offset)."""
    a, b = src.affine, dst.affine
    if a.b or a.d or b.b or b.d or abs(a.a - b.a) > 1e-9 or abs(a.e - b.e) > 1e-9:
        return False
    dx, dy = (b.c - a.c) / a.a, (b.f - a.f) / a.e
    if abs(dx - round(dx)) > 1e-6 or abs(dy - round(dy)) > 1e-6:
        return False
    return src.crs == dst.crs


def warp_array(
    data: np.ndarray,
    src: GeoBox,
    dst: GeoBox,
    resampling: str | Resampling = "bilinear",
    src_nodata: float | None = None,
    dst_nodata: float | None = None,
    dtype: Any = None,
    num_threads: int = 1,
    scale: tuple[float, float] | None = None,
) -> np.ndarray:
    """Warp an in-memory block onto a target GeoBox with GDAL (``rasterio.warp.reproject``).

    Args:
        data: (rows, cols) source block.
        src: the block's GeoBox.
        dst: the target GeoBox.
        resampling: resampling name.
        src_nodata: source value excluded from the kernel (None: none).
        dst_nodata: value of target pixels that get no source data.
        dtype: target dtype (default: the source's).
        num_threads: GDAL warp threads.
        scale: GDAL's ``XSCALE``, ``YSCALE`` (:func:`kernel_scale`); None: GDAL's own guess.

    Returns:
        (rows, cols) array on ``dst``.
    """
    opts: dict[str, Any] = dict(WARP_OPTIONS)
    if scale is not None:
        opts.update(XSCALE=scale[0], YSCALE=scale[1])
    fill = _fill_value(np.dtype(dtype or data.dtype), dst_nodata)
    out = np.full(dst.shape.yx, fill, dtype=dtype or data.dtype)
    rasterio.warp.reproject(
        data,
        out,
        src_transform=src.affine,
        src_crs=src.crs.to_wkt() if src.crs is not None else None,
        src_nodata=src_nodata,
        dst_transform=dst.affine,
        dst_crs=dst.crs.to_wkt() if dst.crs is not None else None,
        dst_nodata=fill,
        resampling=resampling_of(resampling),
        num_threads=num_threads,
        **opts,
    )
    return out


@dataclass
class SceneWindow:
    """One scene read onto one target window.

    Attributes:
        data: (bands, rows, cols) raw DNs (``fill`` where a band has no data).
        clear: (rows, cols) bool: ``has_data & qa_clear``.
        bands: the band names, in ``data`` order.
        fill: per band, the value of pixels without data.
        has_data: (rows, cols) bool: every band has data (not fill, not outside the scene,
            not outside the valid range at native resolution).
        qa_clear: (rows, cols) bool: the QA layers (QA_PIXEL and QA_RADSAT, SCL...) pass.
        filled: (rows, cols) bool: ``has_data`` counting fill only (not the valid range);
            None: the same as ``has_data``.
        qa_only: (rows, cols) bool: the QA layers other than saturation pass; None: the same
            as ``qa_clear``.
    """

    data: np.ndarray
    clear: np.ndarray
    bands: list[str]
    fill: list[float] = field(default_factory=list)
    has_data: np.ndarray | None = None
    qa_clear: np.ndarray | None = None
    filled: np.ndarray | None = None
    qa_only: np.ndarray | None = None

    def exclusions(self) -> np.ndarray:
        """Observations not clear here, each counted under the first reason that applies.

        Returns:
            int64 counts of (fill, qa, saturation, range), like
            :data:`bsrlc.stm.compose.EXCLUSION_REASONS`.
        """
        has = self.clear if self.has_data is None else self.has_data
        qa = np.ones_like(has) if self.qa_clear is None else self.qa_clear
        filled = has if self.filled is None else self.filled
        qa_only = qa if self.qa_only is None else self.qa_only
        return np.array(
            [
                np.count_nonzero(~filled),
                np.count_nonzero(filled & ~qa_only),
                np.count_nonzero(filled & qa_only & ~qa),
                np.count_nonzero(filled & qa & ~has),
            ],
            np.int64,
        )


@dataclass
class _Invalid:
    """Native pixels of a band block that were fill or out of range (True)."""

    key: tuple
    invalid: np.ndarray
    block: GeoBox
    reach: int
    scale: tuple[float, float]
    fill: np.ndarray | None = None  # the fill alone, where the valid range added pixels

    def merge(self, other: _Invalid) -> None:
        """Add another band's invalid pixels on the same source block."""
        if self.fill is not None or other.fill is not None:
            mine = self.invalid if self.fill is None else self.fill
            self.fill = mine | (other.invalid if other.fill is None else other.fill)
        self.invalid |= other.invalid


class WarpReader:
    """Reads scenes onto target windows, keeping files open between windows.

    Not thread-safe: use one reader per thread (GDAL releases the GIL while it reads and warps,
    so threads reading different scenes overlap well).

    Args:
        resampling: reflectance resampling (``bilinear`` default, ``cubic``, ``average``...).
        min_clear_fraction: a target pixel is clear when at least this fraction of its area is
            clear in the native QA (1.0: all of it).
        apply_valid_range: treat raw DNs outside a scene's ``valid_range`` as nodata.
        num_threads: GDAL warp threads per warp.
        max_open: files kept open (least recently used closed first).

    Raises:
        ConfigError: for an unknown resampling or a fraction outside (0, 1].
    """

    def __init__(
        self,
        resampling: str = "bilinear",
        min_clear_fraction: float = 1.0,
        apply_valid_range: bool = True,
        num_threads: int = 1,
        max_open: int = 256,
    ) -> None:
        self.resampling = resampling_of(resampling)
        if not 0 < min_clear_fraction <= 1:
            raise ConfigError(
                f"min_clear_fraction={min_clear_fraction}: must be in (0, 1] (1: the whole "
                "target pixel must be clear in the native QA)"
            )
        self.min_clear_fraction = float(min_clear_fraction)
        self.apply_valid_range = apply_valid_range
        self.num_threads = num_threads
        self.max_open = max_open
        self._open: OrderedDict[Path, tuple[rasterio.io.DatasetReader, GeoBox]] = OrderedDict()
        self._scales: dict[tuple[Path, str, tuple[float, float]], tuple[float, float]] = {}
        self._rois: dict[tuple, Any] = {}

    def __enter__(self) -> WarpReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every open file."""
        for ds, _ in self._open.values():
            ds.close()
        self._open.clear()

    def _ds(self, path: Path) -> tuple[rasterio.io.DatasetReader, GeoBox]:
        hit = self._open.get(path)
        if hit is not None:
            self._open.move_to_end(path)
            return hit
        while len(self._open) >= self.max_open:
            self._open.popitem(last=False)[1][0].close()
        ds = open_raster(path)
        if ds.crs is None:
            ds.close()
            raise InputError(
                f"{path}: raster has no CRS, so it cannot be placed on the grid; assign one "
                "(e.g. gdal_edit.py -a_srs EPSG:32633) or re-download the scene"
            )
        hit = self._open[path] = (ds, GeoBox.from_rio(ds))
        return hit

    def _scale(self, path: Path, src: GeoBox, dst: GeoBox) -> tuple[float, float]:
        key = (path, str(dst.crs), (dst.resolution.x, dst.resolution.y))
        hit = self._scales.get(key)
        if hit is None:
            hit = self._scales[key] = kernel_scale(src, dst)
        return hit

    def _roi(
        self, path: Path, src: GeoBox, dst: GeoBox, rs: Resampling
    ) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
        """source_roi, once per source grid and window (a scene's bands share their grid)."""
        scale = self._scale(path, src, dst)
        key = (str(src.crs), src.affine, src.shape.yx, dst.affine, dst.shape.yx, rs, scale)
        if key not in self._rois:
            if len(self._rois) > 4096:
                self._rois.clear()
            self._rois[key] = source_roi(src, dst, rs, shrink=1.0 / min(scale))
        return self._rois[key]

    def footprint(self, scene: SourceScene, crs: Any) -> Geometry:
        """The outline of a scene's first band, in another CRS.

        Args:
            scene: the scene.
            crs: the CRS to return it in.

        Returns:
            The footprint polygon.
        """
        _, gbox = self._ds(next(iter(scene.bands.values())))
        return gbox.footprint(crs, npoints=50)

    def overlaps(self, scene: SourceScene, geobox: GeoBox) -> bool:
        """Whether a scene has pixels in a target window (cheap: no pixel is read).

        Args:
            scene: the scene.
            geobox: the target window.

        Returns:
            True if the scene's first band overlaps the window.
        """
        path = next(iter(scene.bands.values()))
        _, gbox = self._ds(path)
        return self._roi(path, gbox, geobox, self.resampling) is not None

    def _read_block(self, path: Path, window: Window, bidx: int = 1) -> np.ndarray:
        ds, _ = self._ds(path)
        if not 1 <= bidx <= ds.count:
            raise InputError(
                f"{path}: has {ds.count} band(s), band {bidx} was asked for; the file is not the "
                "product its metadata describes: fix the catalog or re-download the file"
            )
        try:
            return ds.read(bidx, window=window)
        except RasterioIOError as err:
            first = str(err).splitlines()[0] if str(err) else "read error"
            raise InputError(
                f"{path}: cannot read rows {window.row_off}..{window.row_off + window.height}, "
                f"cols {window.col_off}..{window.col_off + window.width} ({first}); the file is "
                "truncated or damaged: re-download the scene"
            ) from None

    def read_band(
        self,
        path: Path,
        geobox: GeoBox,
        nodata: float | None = None,
        valid_range: tuple[float, float] | None = None,
        resampling: str | Resampling | None = None,
        bidx: int = 1,
    ) -> np.ndarray:
        """Warp one band of a file onto a target window, reading only the source pixels it needs.

        Args:
            path: a raster file.
            geobox: the target window.
            nodata: raw fill value (None: the file's own, else 0 / NaN).
            valid_range: raw DNs outside it become nodata before the warp.
            resampling: None: the reader's.
            bidx: the 1-based band of the file to read.

        Returns:
            (rows, cols) in the band's dtype, ``nodata`` where no source data reaches.
        """
        return self._band(path, geobox, nodata, valid_range, resampling, bidx)[0]

    def _band(
        self,
        path: Path,
        geobox: GeoBox,
        nodata: float | None,
        valid_range: tuple[float, float] | None,
        resampling: str | Resampling | None = None,
        bidx: int = 1,
    ) -> tuple[np.ndarray, _Invalid | None]:
        """read_band, plus the native pixels that were fill or out of range (None: none)."""
        ds, src = self._ds(path)
        dtype = ds.dtypes[bidx - 1] if 1 <= bidx <= ds.count else ds.dtypes[0]
        nod = _fill_value(dtype, ds.nodata if nodata is None else nodata)
        rs = self.resampling if resampling is None else resampling_of(resampling)
        roi = self._roi(path, src, geobox, rs)
        if roi is None:
            return np.full(geobox.shape.yx, nod, dtype=dtype), None
        rows, cols = roi[0]
        block = self._read_block(path, Window.from_slices(rows, cols), bidx)
        invalid = np.isnan(block) if isinstance(nod, float) and math.isnan(nod) else block == nod
        fill = None
        if valid_range is not None:
            lo, hi = valid_range
            with np.errstate(invalid="ignore"):
                out_of_range = ((block < lo) | (block > hi)) & ~invalid
            if out_of_range.any():
                fill = invalid.copy()
                invalid |= out_of_range
                block[invalid] = nod
        scale = self._scale(path, src, geobox)
        # warped without a source nodata: GDAL's kernels without masks are 2-3x faster than its
        # masked general case, and every target pixel whose kernel reaches an invalid native
        # pixel is dropped below (``_valid_fraction``), so the fill never reaches a used value
        warped = warp_array(
            block, src[rows, cols], geobox, rs, None, nod, num_threads=self.num_threads, scale=scale
        )
        if not invalid.any():
            return warped, None
        # how far (in source pixels) the kernel reaches from a target pixel's area; on the
        # source's own grid (a FORCE cube on its grid) every kernel sits on a pixel centre with
        # weight 1 there and 0 on the neighbours, so it reaches nothing
        reach = (
            0
            if rs is Resampling.nearest or _aligned(src, geobox)
            else math.ceil(_KERNEL_RADIUS[rs.name] / min(scale))
        )
        key = (str(src.crs), src.affine, src.shape.yx, rows.start, rows.stop, cols.start, cols.stop)
        return warped, _Invalid(key, invalid, src[rows, cols], reach, scale, fill)

    def _valid_fraction(
        self, bad: _Invalid, geobox: GeoBox, invalid: np.ndarray | None = None
    ) -> np.ndarray:
        """The share of each target pixel clear of invalid native pixels and their kernel reach."""
        invalid = bad.invalid if invalid is None else invalid
        if bad.reach > 0:
            size = 2 * bad.reach + 1
            invalid = ndimage.binary_dilation(invalid, np.ones((size, size), bool))
        return warp_array(
            (~invalid).astype(np.float32),
            bad.block,
            geobox,
            Resampling.average,
            None,
            float("nan"),
            num_threads=self.num_threads,
            scale=bad.scale,
        )

    def clear_fraction(self, layers: Sequence[MaskLayer], geobox: GeoBox) -> np.ndarray:
        """Decode QA layers on one grid at native resolution and average them onto a window.

        Beyond the edge of the QA raster counts as not clear, so a target pixel that reaches
        past a scene's edge (where the reflectance kernel would run out of pixels) is not 1.

        Args:
            layers: QA layers whose files share one grid (decoded masks are combined with AND).
            geobox: the target window.

        Returns:
            (rows, cols) float32 clear fraction; NaN where the QA has no pixels.
        """
        return self._clear_fractions(layers, geobox)[0]

    def _clear_fractions(
        self, layers: Sequence[MaskLayer], geobox: GeoBox
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """clear_fraction of all layers, and of the non-saturation layers.

        The second is None where no saturation layer flags a pixel of the window (the same).
        """
        _, src = self._ds(layers[0].path)
        roi = self._roi(layers[0].path, src, geobox, Resampling.average)
        if roi is None:
            return np.full(geobox.shape.yx, np.nan, np.float32), None
        rows, cols = roi[0]
        window = Window.from_slices(rows, cols)
        base: np.ndarray | None = None
        saturation: np.ndarray | None = None
        for layer in layers:
            decoded = layer.decode(self._read_block(layer.path, window))
            if layer.reason == "saturation":
                saturation = decoded if saturation is None else saturation & decoded
            else:
                base = decoded if base is None else base & decoded
        if base is None:
            assert saturation is not None
            base = np.ones_like(saturation)
        flagged = saturation is not None and not saturation.all()
        clear = base & saturation if flagged else base
        frac = self._average_clear(clear, src, rows, cols, geobox, layers[0].path)
        if not flagged:
            return frac, None
        return frac, self._average_clear(base, src, rows, cols, geobox, layers[0].path)

    def _average_clear(
        self, clear: np.ndarray, src: GeoBox, rows: slice, cols: slice, geobox: GeoBox, path: Path
    ) -> np.ndarray:
        """Average a native clear mask (of ``src[rows, cols]``) onto a target window."""
        # a ring of "not clear" where the window meets the raster's edge
        ring = 1 + math.ceil(max(abs(geobox.resolution.x) / abs(src.resolution.x), 1.0))
        h, w = src.shape.yx
        top, left = ring * (rows.start == 0), ring * (cols.start == 0)
        bottom, right = ring * (rows.stop >= h), ring * (cols.stop >= w)
        clear = np.pad(clear, ((top, bottom), (left, right)), constant_values=False)
        block = GeoBox(
            clear.shape,
            src.affine * Affine.translation(cols.start - left, rows.start - top),
            src.crs,
        )
        return warp_array(
            clear.astype(np.float32),
            block,
            geobox,
            Resampling.average,
            None,
            float("nan"),
            num_threads=self.num_threads,
            scale=self._scale(path, src, geobox),
        )

    def read(
        self,
        scene: SourceScene,
        geobox: GeoBox,
        bands: Sequence[str] | None = None,
        out: np.ndarray | None = None,
    ) -> SceneWindow:
        """Read a scene onto a target window.

        Args:
            scene: the scene.
            geobox: the target window (e.g. from :func:`bsrlc.stm.grid.windows`).
            bands: band names to read, in this order (None: all of the scene's).
            out: (bands, rows, cols) array to write the DNs into (e.g. ``stack[t]`` of a
                (time, bands, rows, cols) stack); cast to its dtype. None: a new array.

        Returns:
            The window's raw DNs and clear mask.

        Raises:
            InputError: for a missing band, a file without CRS, an unreadable block, a QA file
                on another grid than its siblings or a decoder of the wrong shape (each naming
                the file).
        """
        names = list(scene.bands) if bands is None else list(bands)
        missing = [b for b in names if b not in scene.bands]
        if missing:
            raise InputError(
                f"{scene.metadata or scene.id}: scene has no band(s) {', '.join(missing)} "
                f"(it has {', '.join(scene.bands)}); drop the scene or fix bands="
            )
        dtypes = [self._band_dtype(scene, b) for b in names]
        if out is None:
            out = np.empty((len(names), *geobox.shape.yx), np.result_type(*dtypes))
        elif out.shape != (len(names), *geobox.shape.yx):
            raise ValueError(f"out has shape {out.shape}, not {(len(names), *geobox.shape.yx)}")
        has = np.ones(geobox.shape.yx, bool)
        fills = []
        vr = scene.valid_range if self.apply_valid_range else None
        bad: dict[tuple, _Invalid] = {}  # per source grid: native pixels invalid in any band
        for i, name in enumerate(names):
            path = scene.bands[name]
            ds, _ = self._ds(path)
            nod = _fill_value(
                self._band_dtype(scene, name), ds.nodata if scene.nodata is None else scene.nodata
            )
            band, invalid = self._band(path, geobox, nod, vr, None, scene.bidx(name))
            has &= ~np.isnan(band) if band.dtype.kind == "f" else band != nod
            out[i] = band
            fills.append(nod)
            if invalid is not None:
                seen = bad.get(invalid.key)
                if seen is None:
                    bad[invalid.key] = invalid
                else:
                    seen.merge(invalid)
        # a target pixel whose kernel reaches a fill, saturated or out-of-range native pixel
        # would carry a value from its other neighbours only: not used
        filled = None  # counting fill only: where the valid range excluded pixels too
        for invalid in bad.values():
            if invalid.fill is not None:
                filled = has.copy() if filled is None else filled
                with np.errstate(invalid="ignore"):
                    filled &= self._valid_fraction(invalid, geobox, invalid.fill) >= 1 - 1e-4
        if filled is not None:
            for invalid in bad.values():
                if invalid.fill is None:
                    with np.errstate(invalid="ignore"):
                        filled &= self._valid_fraction(invalid, geobox) >= 1 - 1e-4
        for invalid in bad.values():
            with np.errstate(invalid="ignore"):
                has &= self._valid_fraction(invalid, geobox) >= 1 - 1e-4
        masks = scene.masks
        if not masks:  # no QA: where the first band has data (and the scene's edge)
            first = scene.bands[names[0]]
            ds, _ = self._ds(first)
            nod = _fill_value(
                self._band_dtype(scene, names[0]),
                ds.nodata if scene.nodata is None else scene.nodata,
            )
            masks = (MaskLayer(first, functools.partial(has_data, nodata=nod)),)
        qa = np.ones(geobox.shape.yx, bool)
        qa_only = None  # without the saturation layers: where they flag pixels
        thr = self.min_clear_fraction - 1e-4
        for group in self._mask_groups(masks):
            frac, base = self._clear_fractions(group, geobox)
            with np.errstate(invalid="ignore"):
                if base is not None or qa_only is not None:
                    qa_only = qa.copy() if qa_only is None else qa_only
                    qa_only &= (frac if base is None else base) >= thr
                qa &= frac >= thr
        return SceneWindow(out, has & qa, names, fills, has, qa, filled, qa_only)

    def _band_dtype(self, scene: SourceScene, band: str) -> np.dtype:
        ds, _ = self._ds(scene.bands[band])
        i = scene.bidx(band)
        return np.dtype(ds.dtypes[i - 1] if 1 <= i <= ds.count else ds.dtypes[0])

    def _mask_groups(self, masks: Sequence[MaskLayer]) -> list[list[MaskLayer]]:
        groups: dict[tuple, list[MaskLayer]] = {}
        for m in masks:
            _, gbox = self._ds(m.path)
            key = (str(gbox.crs), tuple(gbox.affine), gbox.shape.yx)
            groups.setdefault(key, []).append(m)
        return list(groups.values())


# --------------------------------------------------------------------------------------------
# QA helpers


def has_data(band: np.ndarray, nodata: float) -> np.ndarray:
    """The mask of a scene without QA: where a band is not nodata (not NaN).

    Args:
        band: raw values.
        nodata: the fill value.

    Returns:
        bool array, True where there is data.
    """
    band = np.asarray(band)
    if isinstance(nodata, float) and math.isnan(nodata):
        return ~np.isnan(band)
    return np.asarray(band != nodata)


def radsat_clear(qa: np.ndarray, bits: Sequence[int] = ()) -> np.ndarray:
    """Landsat Collection 2 QA_RADSAT: clear where none of the given bits is set.

    Bit n-1 flags band n saturated; TM/ETM+ bit 9 a dropped pixel.

    Args:
        qa: the QA_RADSAT band.
        bits: the bits that make a pixel unusable.

    Returns:
        bool array, True where clear.
    """
    mask = 0
    for b in bits:
        mask |= 1 << int(b)
    return (np.asarray(qa).astype(np.uint32) & mask) == 0


# --------------------------------------------------------------------------------------------
# discovery


@dataclass
class Discovery:
    """What :func:`discover_sources` found.

    Attributes:
        scenes: the usable scenes, by date then id.
        skipped: one line per scene left out (with ``on_error="skip"``).
        products: the product types found.
    """

    scenes: list[SourceScene]
    skipped: list[str]
    products: list[str]


def detect_products(folder: str | Path) -> list[str]:
    """The product types in a folder (searched recursively).

    Args:
        folder: a folder of scenes as delivered.

    Returns:
        A subset of :data:`PRODUCTS`, in that order.
    """
    folder = Path(folder)
    found = []
    if _first(folder, ("*_MTL.txt", "*_MTL.json", "*_SR_B[0-9].TIF", "*_SR_B[0-9].tif")):
        found.append("landsat_c2")
    if _first(folder, ("MTD_MSIL2A.xml", "*.SAFE")) or any(
        _S2_FILE.match(p.name) for p in folder.rglob("*")
    ):
        found.append("sentinel2_l2a")
    return found


def _first(folder: Path, patterns: Iterable[str]) -> bool:
    return any(next(folder.rglob(p), None) is not None for p in patterns)


def discover_sources(
    folder: str | Path,
    product: str | None = None,
    on_error: str = "fail",
    boa_offset: float | None = None,
) -> Discovery:
    """Find the scenes in a folder as delivered and describe them.

    Args:
        folder: a folder (nested or flat) of Landsat C2 L2 and/or Sentinel-2 L2A scenes.
        product: ``landsat_c2`` or ``sentinel2_l2a``; None detects (all types found).
        on_error: ``fail`` raises on the first bad scene; ``skip`` leaves it out, logs one
            line and lists it in :attr:`Discovery.skipped`.
        boa_offset: Sentinel-2 only: the BOA_ADD_OFFSET (DN) to use for scenes whose metadata
            is not beside them; None = read it from ``MTD_MSIL2A.xml``.

    Returns:
        The scenes found.

    Raises:
        InputError: for a missing folder, a folder without scenes, or (``on_error=fail``) a
            scene with a missing band, QA or metadata file, a Level-1 or unknown product, or an
            unknown Sentinel-2 processing baseline.
        ConfigError: for an unknown ``product`` or ``on_error``.
    """
    folder = Path(folder)
    if on_error not in ("fail", "skip"):
        raise ConfigError(f"on_error={on_error}: use fail or skip")
    if product is not None and product not in PRODUCTS:
        raise ConfigError(
            f"source={product}: unknown product; use one of {', '.join(PRODUCTS)} "
            "(or leave it unset to detect)"
        )
    if not folder.is_dir():
        raise InputError(f"{folder}: scene folder not found; set scenes= to a folder of scenes")
    products = [product] if product else detect_products(folder)
    if not products:
        raise InputError(
            f"{folder}: no Landsat Collection 2 Level-2 (*_MTL.txt/json, *_SR_B*.TIF) or "
            "Sentinel-2 L2A (MTD_MSIL2A.xml, *_B02_10m.jp2) scenes found; point scenes= at "
            "the folder the scenes were unpacked into"
        )
    scenes: list[SourceScene] = []
    skipped: list[str] = []
    for prod in products:
        finder = _landsat_c2_scenes if prod == "landsat_c2" else _s2_l2a_scenes
        for make in finder(folder, boa_offset):
            try:
                scenes.append(make())
            except InputError as err:
                if on_error == "fail":
                    raise
                log.warning("skipped: %s", err)
                skipped.append(str(err))
    if not scenes and not skipped:
        raise InputError(
            f"{folder}: no {' or '.join(products)} scenes found; point scenes= at the folder "
            "the scenes were unpacked into"
        )
    scenes.sort(key=lambda s: (s.date, s.id))
    return Discovery(scenes, skipped, products)


# -- Landsat Collection 2 Level-2 ---------------------------------------------------------------


def parse_mtl(path: str | Path) -> dict[str, Any]:
    """Read a Landsat MTL file (ODL ``.txt`` or ``.json``) into nested dicts.

    Groups stay separate: Level-1 and Level-2 groups reuse key names (``REFLECTANCE_MULT_BAND_n``)
    with different values.

    Args:
        path: ``*_MTL.txt`` or ``*_MTL.json``.

    Returns:
        The ``LANDSAT_METADATA_FILE`` group: group name -> {key: value (str)}.

    Raises:
        InputError: if the file is not an MTL.
    """
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        raise InputError(f"{path}: cannot read the MTL ({err.strerror})") from None
    if path.suffix.lower() == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(
                f"{path}: MTL is not valid JSON ({err.msg}, line {err.lineno}); re-download "
                "the scene's _MTL.json"
            ) from None
        root = doc.get("LANDSAT_METADATA_FILE") if isinstance(doc, dict) else None
    else:
        stack: list[dict[str, Any]] = [{}]
        for line in text.splitlines():
            if "=" not in line:
                continue
            key, value = (s.strip() for s in line.split("=", 1))
            value = value.strip('"')
            if key == "GROUP":
                child: dict[str, Any] = {}
                stack[-1][value] = child
                stack.append(child)
            elif key == "END_GROUP":
                if len(stack) > 1:
                    stack.pop()
            else:
                stack[-1][key] = value
        root = stack[0].get("LANDSAT_METADATA_FILE")
    if not isinstance(root, dict):
        raise InputError(
            f"{path}: not a Landsat MTL (no LANDSAT_METADATA_FILE group); re-download the "
            "scene's _MTL.txt or _MTL.json"
        )
    return root


def _find_file(folder: Path, name: str) -> Path | None:
    path = folder / name
    if path.is_file():
        return path
    lower = name.lower()
    return next((p for p in folder.iterdir() if p.name.lower() == lower), None)


def _landsat_c2_scenes(folder: Path, _: float | None) -> list[Callable[[], SourceScene]]:
    mtls: dict[tuple[Path, str], Path] = {}
    for pattern in ("*_MTL.json", "*_MTL.txt"):  # JSON first: kept when both are there
        for p in sorted(folder.rglob(pattern)):
            mtls.setdefault((p.parent, p.name.rsplit("_MTL", 1)[0]), p)
    makers: list[Callable[[], SourceScene]] = [
        functools.partial(_landsat_c2_scene, p) for p in mtls.values()
    ]
    seen = {key for key in mtls}
    orphans: dict[tuple[Path, str], Path] = {}
    for p in sorted(folder.rglob("*_SR_B*")):
        m = re.match(r"(.+)_SR_B\d+\.tiff?$", p.name, re.IGNORECASE)
        if m and (p.parent, m.group(1)) not in seen:
            orphans.setdefault((p.parent, m.group(1)), p)
    makers += [functools.partial(_missing_mtl, p) for p in orphans.values()]
    return makers


def _missing_mtl(band: Path) -> SourceScene:
    pid = re.sub(r"_SR_B\d+\.tiff?$", "", band.name, flags=re.IGNORECASE)
    raise InputError(
        f"{band.parent / (pid + '_MTL.txt')}: metadata file missing for scene {pid} (it gives "
        "date, spacecraft and scale); copy the scene's _MTL.txt or _MTL.json beside its bands"
    )


def _landsat_c2_scene(mtl: Path) -> SourceScene:
    meta = parse_mtl(mtl)
    contents = meta.get("PRODUCT_CONTENTS", {})
    attrs = meta.get("IMAGE_ATTRIBUTES", {})
    params = meta.get("LEVEL2_SURFACE_REFLECTANCE_PARAMETERS", {})
    pid = contents.get("LANDSAT_PRODUCT_ID") or mtl.name.split("_MTL")[0]
    level = str(contents.get("PROCESSING_LEVEL", ""))
    collection = str(contents.get("COLLECTION_NUMBER", "02")).lstrip("0")
    if not level.startswith("L2") or not params:
        raise InputError(
            f"{mtl}: {pid} is a Level-1 product (PROCESSING_LEVEL {level or 'unknown'}, no "
            "LEVEL2_SURFACE_REFLECTANCE_PARAMETERS); order Collection 2 Level-2 (L2SP) scenes"
        )
    if collection != "2":
        raise InputError(
            f"{mtl}: {pid} is Collection {collection}, not Collection 2; order Collection 2 "
            "Level-2 scenes (Collection 1 is retired)"
        )
    craft = str(attrs.get("SPACECRAFT_ID", "")).upper()
    if craft not in LANDSAT_BANDS:
        raise InputError(
            f"{mtl}: SPACECRAFT_ID {craft or 'missing'} is not a Landsat with surface "
            f"reflectance ({', '.join(LANDSAT_BANDS)}); remove the scene"
        )
    try:
        date = dt.date.fromisoformat(str(attrs.get("DATE_ACQUIRED", "")))
    except ValueError:
        raise InputError(
            f"{mtl}: DATE_ACQUIRED {attrs.get('DATE_ACQUIRED')!r} is not a date; re-download "
            "the scene's MTL"
        ) from None
    bands: dict[str, Path] = {}
    scale: dict[str, float] = {}
    offset: dict[str, float] = {}
    for name, n in LANDSAT_BANDS[craft].items():
        fname = contents.get(f"FILE_NAME_BAND_{n}", f"{pid}_SR_B{n}.TIF")
        path = _find_file(mtl.parent, fname)
        if path is None:
            raise InputError(
                f"{mtl.parent / fname}: band file missing ({name} = SR_B{n} of {craft}); "
                "unpack the whole scene archive"
            )
        try:
            scale[name] = float(params[f"REFLECTANCE_MULT_BAND_{n}"])
            offset[name] = float(params[f"REFLECTANCE_ADD_BAND_{n}"])
        except (KeyError, ValueError):
            raise InputError(
                f"{mtl}: no REFLECTANCE_MULT/ADD_BAND_{n} in LEVEL2_SURFACE_REFLECTANCE_"
                "PARAMETERS; re-download the scene's MTL"
            ) from None
        bands[name] = path
    qa_name = contents.get("FILE_NAME_QUALITY_L1_PIXEL", f"{pid}_QA_PIXEL.TIF")
    qa = _find_file(mtl.parent, qa_name)
    if qa is None:
        raise InputError(
            f"{mtl.parent / qa_name}: QA file missing (QA_PIXEL, the cloud mask of {pid}); "
            "unpack it from the scene archive or drop the scene"
        )
    masks = [MaskLayer(qa, "landsat_qa_pixel")]
    rs_name = contents.get("FILE_NAME_QUALITY_L1_RADIOMETRIC_SATURATION", f"{pid}_QA_RADSAT.TIF")
    radsat = _find_file(mtl.parent, rs_name)
    if radsat is not None:
        bits = tuple(n - 1 for n in LANDSAT_BANDS[craft].values())
        bits += LANDSAT_RADSAT_EXTRA_BITS.get(craft, ())
        masks.append(
            MaskLayer(radsat, functools.partial(radsat_clear, bits=bits), reason="saturation")
        )
    else:
        log.info("%s: no QA_RADSAT; saturation is caught by the valid range only", pid)
    return SourceScene(
        id=pid,
        date=date,
        product="landsat_c2",
        sensor=craft,
        bands=bands,
        masks=tuple(masks),
        scale=scale,
        offset=offset,
        nodata=0,
        valid_range=LANDSAT_C2_VALID_RANGE,
        metadata=mtl,
    )


# -- Sentinel-2 L2A -------------------------------------------------------------------------------

_S2_FILE = re.compile(
    r"^(?:L2A_)?(?P<tile>T\d{2}[A-Z]{3})_(?P<time>\d{8}T\d{6})_(?P<band>B\d[0-9A]|SCL)"
    r"(?:_(?P<res>\d{2})m)?\.(?:jp2|tif|tiff)$",
    re.IGNORECASE,
)
_S2_BASELINE_IN_NAME = re.compile(r"_N(\d{2})(\d{2})_")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_mtd_l2a(path: str | Path) -> dict[str, Any]:
    """The parts of a Sentinel-2 ``MTD_MSIL2A.xml`` that reading needs.

    Args:
        path: the product metadata file.

    Returns:
        ``baseline`` (float or None), ``quantification`` (float), ``offsets`` (band -> DN),
        ``spacecraft``, ``start`` (str) and ``uri`` (the product name).

    Raises:
        InputError: if the file is not XML.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as err:
        raise InputError(
            f"{path}: not readable XML ({err}); re-download the product's MTD_MSIL2A.xml"
        ) from None
    out: dict[str, Any] = {
        "baseline": None,
        "quantification": 10000.0,
        "offsets": {},
        "spacecraft": "SENTINEL-2",
        "start": "",
        "uri": "",
    }
    for el in root.iter():
        tag, text = _local(el.tag), (el.text or "").strip()
        if tag == "PROCESSING_BASELINE":
            try:
                out["baseline"] = float(text)
            except ValueError:
                out["baseline"] = None
        elif tag == "BOA_QUANTIFICATION_VALUE" and text:
            out["quantification"] = float(text)
        elif tag == "BOA_ADD_OFFSET" and text:
            bid = int(el.attrib.get("band_id", "-1"))
            if 0 <= bid < len(S2_BAND_IDS):
                out["offsets"][S2_BAND_IDS[bid]] = float(text)
        elif tag == "SPACECRAFT_NAME" and text:
            out["spacecraft"] = text.upper()
        elif tag == "PRODUCT_START_TIME" and text:
            out["start"] = text
        elif tag == "PRODUCT_URI" and text:
            out["uri"] = text
    return out


def _s2_l2a_scenes(folder: Path, boa_offset: float | None) -> list[Callable[[], SourceScene]]:
    groups: dict[tuple[str, str], dict[str, list[tuple[int, Path]]]] = {}
    for p in sorted(folder.rglob("*")):
        m = _S2_FILE.match(p.name)
        if m is None or not p.is_file():
            continue
        key = (m.group("tile").upper(), m.group("time").upper())
        res = int(m.group("res") or 0)
        groups.setdefault(key, {}).setdefault(m.group("band").upper(), []).append((res, p))
    return [
        functools.partial(_s2_l2a_scene, tile, time, files, boa_offset)
        for (tile, time), files in sorted(groups.items())
    ]


def _s2_metadata(first: Path, tile: str, time: str) -> Path | None:
    """The MTD_MSIL2A.xml of a scene: in a SAFE root above its files, or beside them."""
    for parent in [first.parent, *list(first.parents)[:5]]:
        for cand in sorted(parent.glob("*MTD_MSIL2A*.xml")):
            uri = parse_mtd_l2a(cand)["uri"].upper()
            if not uri or (tile in uri and time in uri):
                return cand
    return None


def _s2_l2a_scene(
    tile: str, time: str, files: dict[str, list[tuple[int, Path]]], boa_offset: float | None
) -> SourceScene:
    scene_id = f"{tile}_{time}"
    # finest resolution of each band (10 m over the 20 m / 60 m copies); 0 = no suffix
    best = {b: sorted(v, key=lambda rp: (rp[0] == 0, rp[0]))[0][1] for b, v in files.items()}
    first = next(iter(best.values()))
    missing = [c for c in COMMON_BANDS if S2_COMMON[c] not in best]
    if missing:
        need = ", ".join(f"{S2_COMMON[c]} ({c})" for c in missing)
        raise InputError(
            f"{first.parent}: Sentinel-2 scene {scene_id} lacks band file(s) {need}; unpack "
            "the whole product"
        )
    if "SCL" not in best:
        raise InputError(
            f"{first.parent / (scene_id + '_SCL_20m.jp2')}: QA file missing (SCL, the scene "
            f"classification of {scene_id}); copy it beside the bands or drop the scene"
        )
    mtd = _s2_metadata(first, tile, time)
    meta = parse_mtd_l2a(mtd) if mtd is not None else None
    baseline = meta["baseline"] if meta else None
    if baseline is None:
        names = [p.name for p in first.parents] + [first.name]
        found = next((m for n in names if (m := _S2_BASELINE_IN_NAME.search(n))), None)
        if found:
            baseline = float(f"{found.group(1)}.{found.group(2)}")
    if baseline is None and boa_offset is None:
        where = mtd or first.parent / "MTD_MSIL2A.xml"
        raise InputError(
            f"{where}: unknown Sentinel-2 processing baseline for {scene_id} (no "
            "PROCESSING_BASELINE in MTD_MSIL2A.xml, no _Nxxxx_ in the product name); copy the "
            "product's MTD_MSIL2A.xml beside its bands, or give the BOA offset (-1000 for "
            "baseline >= 04.00, 0 before)"
        )
    quant = meta["quantification"] if meta else 10000.0
    offsets: dict[str, float] = {}
    if boa_offset is not None and not (meta and meta["offsets"]):
        offsets = dict.fromkeys(S2_BAND_IDS, float(boa_offset))
    elif baseline is not None and baseline >= 4.0:
        if not meta or not meta["offsets"]:
            where = mtd or first.parent / "MTD_MSIL2A.xml"
            raise InputError(
                f"{where}: processing baseline {baseline:05.2f} of {scene_id} needs the "
                "BOA_ADD_OFFSET values of MTD_MSIL2A.xml, which are missing; copy the "
                "product's MTD_MSIL2A.xml beside its bands, or give the BOA offset (-1000)"
            )
        offsets = meta["offsets"]
    date = dt.datetime.strptime(time[:8], "%Y%m%d").date()
    native = {c: S2_COMMON[c] for c in COMMON_BANDS}
    native.update({b: b for b in S2_BAND_IDS if b in best and b not in S2_COMMON.values()})
    bands = {name: best[b] for name, b in native.items()}
    spacecraft = meta["spacecraft"] if meta else "SENTINEL-2"
    return SourceScene(
        id=scene_id,
        date=date,
        product="sentinel2_l2a",
        sensor=spacecraft,
        bands=bands,
        masks=(MaskLayer(best["SCL"], "sentinel2_scl"),),
        scale=dict.fromkeys(bands, 1.0 / quant),
        offset={name: offsets.get(b, 0.0) / quant for name, b in native.items()},
        nodata=0,
        valid_range=S2_VALID_RANGE,
        metadata=mtd,
    )


def check_mask_options(scene: SourceScene) -> None:
    """Check that a scene's named decoders exist and take their options.

    Args:
        scene: the scene.

    Raises:
        ConfigError: for an unknown decoder or option.
    """
    for m in scene.masks:
        if isinstance(m.decoder, str):
            check_options(m.decoder, m.options)


__all__ = [
    "COMMON_BANDS",
    "LANDSAT_BANDS",
    "LANDSAT_C2_VALID_RANGE",
    "PRODUCTS",
    "RESAMPLING_NAMES",
    "S2_BAND_IDS",
    "S2_COMMON",
    "S2_VALID_RANGE",
    "WARP_OPTIONS",
    "Discovery",
    "MaskLayer",
    "SceneWindow",
    "SourceScene",
    "WarpReader",
    "check_mask_options",
    "detect_products",
    "discover_sources",
    "has_data",
    "kernel_scale",
    "parse_mtd_l2a",
    "parse_mtl",
    "radsat_clear",
    "resampling_of",
    "scene_from_files",
    "source_roi",
    "warp_array",
]
