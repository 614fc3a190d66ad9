"""Raster input and output shared by every step: grid checks, band lookup and atomic COG writing.

Georeferencing travels with the data: readers return the CRS and transform next to the array, and
writers take them back. Outputs are written to a temporary name next to the destination and renamed
only when complete, so a killed run never leaves a file that looks finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# GDAL's block cache defaults to 5 % of the RAM and is filled by window reads and COG writes:
# 1.2 GB on a 24 GB machine, 6 GB on a 128 GB GPU node, for no speed-up when rasters stream
# window by window. 256 MB keeps memory bounded by the tile size (set GDAL_CACHEMAX to change;
# GDAL reads it when the cache is first used).
os.environ.setdefault("GDAL_CACHEMAX", "256")
from types import TracebackType
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from bsrlc.errors import InputError

GDAL_COG_OPTIONS: dict[str, Any] = {
    "driver": "COG",
    "compress": "DEFLATE",
    "predictor": 2,
    "blocksize": 256,
    "overview_resampling": "NEAREST",
    "BIGTIFF": "IF_SAFER",
}

CLASS_OVERVIEW_RESAMPLING = "MODE"
"""Overview resampling of class maps: the most frequent class of each block (nodata ignored)."""

CATEGORY_NAMES_TAG = "CATEGORY_NAMES"
"""Band-1 metadata item holding a class map's category names as a JSON list (index = code).

GDAL's own category names and raster attribute tables live in a ``.aux.xml`` sidecar for
GeoTIFF (GDAL < 3.12), which a COG must not depend on; this item is stored in the TIFF's
GDAL_METADATA tag and travels with the file. :func:`read_category_names` reads it back.
"""


@dataclass(frozen=True)
class RasterInfo:
    """The grid and band layout of a raster file.

    Attributes:
        path: the file.
        crs: its coordinate reference system (None if it has none).
        transform: pixel-to-map affine transform.
        width: columns.
        height: rows.
        count: number of bands.
        dtype: data type of the first band.
        nodata: the nodata value (None if unset).
        descriptions: band descriptions (names), '' where unset.
    """

    path: Path
    crs: CRS | None
    transform: Affine
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    descriptions: tuple[str, ...]

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) in CRS units, both positive."""
        return (abs(self.transform.a), abs(self.transform.e))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units."""
        left, top = self.transform.c, self.transform.f
        right = left + self.transform.a * self.width
        bottom = top + self.transform.e * self.height
        return (left, min(bottom, top), right, max(bottom, top))


def open_raster(path: str | os.PathLike[str]) -> rasterio.io.DatasetReader:
    """Open a raster for reading, with a one-line error for missing or unreadable files.

    Args:
        path: the raster file.

    Returns:
        An open rasterio dataset (use it as a context manager).

    Raises:
        InputError: if the file does not exist or is not a readable raster.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found; check the path in your config or command line")
    try:
        with warnings.catch_warnings():
            # a missing CRS/transform is reported by raster_info with its fix, not as a warning
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as err:
        msg = str(err).splitlines()[0] if str(err) else "unreadable"
        raise InputError(
            f"{path}: not a readable raster ({msg}); re-create or re-download the file"
        ) from None


def raster_info(path: str | os.PathLike[str], require_crs: bool = True) -> RasterInfo:
    """Read the grid and band layout of a raster without reading its pixels.

    Args:
        path: the raster file.
        require_crs: raise if the raster has no CRS.

    Returns:
        The raster's :class:`RasterInfo`.

    Raises:
        InputError: if the file is unreadable, or has no CRS while one is required.
    """
    with open_raster(path) as src:
        if require_crs and src.crs is None:
            raise InputError(
                f"{path}: raster has no CRS; assign one (e.g. gdal_edit.py -a_srs EPSG:3035) first"
            )
        return RasterInfo(
            path=Path(path),
            crs=src.crs,
            transform=src.transform,
            width=src.width,
            height=src.height,
            count=src.count,
            dtype=src.dtypes[0],
            nodata=src.nodata,
            descriptions=tuple(d or "" for d in src.descriptions),
        )


def band_indices(info: RasterInfo, names: Sequence[str]) -> list[int]:
    """Find bands by their descriptions, in the order asked for.

    Args:
        info: the raster's layout.
        names: wanted band descriptions (e.g. ``["BLU_P50", "GRN_P50"]``).

    Returns:
        1-based band indices for rasterio, in the order of ``names``.

    Raises:
        InputError: naming the missing bands and the bands the file has.
    """
    lookup = {d: i + 1 for i, d in enumerate(info.descriptions)}
    missing = [n for n in names if n not in lookup]
    if missing:
        have = ", ".join(d for d in info.descriptions if d) or "no band descriptions"
        raise InputError(
            f"{info.path}: missing band(s) {', '.join(missing)} (file has: {have}); "
            "select bands that exist or rebuild the STMs with them"
        )
    return [lookup[n] for n in names]


def expand_band_patterns(info: RasterInfo, patterns: Sequence[str]) -> list[str]:
    """Expand shell-style band patterns (``*_P50``) against a raster's band descriptions.

    Args:
        info: the raster's layout.
        patterns: band names or fnmatch patterns, in the order wanted.

    Returns:
        Matching band descriptions; a pattern's matches keep the file's order.

    Raises:
        InputError: if a pattern matches no band.
    """
    import fnmatch

    out: list[str] = []
    for pat in patterns:
        if any(ch in pat for ch in "*?["):
            hits = [d for d in info.descriptions if fnmatch.fnmatchcase(d, pat)]
            if not hits:
                raise InputError(
                    f"{info.path}: no band matches {pat!r} "
                    f"(file has: {', '.join(info.descriptions)}); fix the band selection"
                )
            out.extend(h for h in hits if h not in out)
        elif pat not in out:
            out.append(pat)
    band_indices(info, out)  # raise for plain names that do not exist
    return out


def check_same_grid(infos: Sequence[RasterInfo], what: str = "rasters") -> None:
    """Check that rasters share one CRS and pixel grid (transform and size).

    Args:
        infos: the rasters' layouts.
        what: how to call them in the error.

    Raises:
        InputError: naming the first raster that differs from the first one and how.
    """
    if not infos:
        return
    ref = infos[0]
    for info in infos[1:]:
        if info.crs != ref.crs:
            raise InputError(
                f"{info.path}: CRS {info.crs} differs from {ref.path} ({ref.crs}); "
                f"reproject all {what} to one grid first (e.g. gdalwarp -t_srs)"
            )
        if not info.transform.almost_equals(ref.transform, precision=1e-6) or (
            info.width,
            info.height,
        ) != (ref.width, ref.height):
            raise InputError(
                f"{info.path}: grid {info.width}x{info.height} at {tuple(info.transform)[:6]} "
                f"differs from {ref.path} ({ref.width}x{ref.height} at {tuple(ref.transform)[:6]});"
                f" resample all {what} to one grid first (gdalwarp -tap -tr)"
            )


def check_aligned(lr: RasterInfo, hr: RasterInfo, scale: int) -> None:
    """Check that a high-resolution grid nests exactly in a low-resolution one.

    The HR pixel size must be the LR pixel size divided by ``scale`` and the HR origin must lie on
    an LR pixel corner, so that each LR pixel covers exactly ``scale x scale`` HR pixels.

    Args:
        lr: the low-resolution raster (e.g. Landsat at 30 m).
        hr: the high-resolution raster (e.g. Sentinel-2 at 10 m).
        scale: the resolution ratio.

    Raises:
        InputError: naming both files and what does not match.
    """
    pair = f"{lr.path} and {hr.path}"
    if lr.crs != hr.crs:
        raise InputError(
            f"{pair}: CRS differ ({lr.crs} vs {hr.crs}); reproject one onto the other's grid "
            "(gdalwarp -t_srs ... -tap) before pairing"
        )
    if lr.transform.b != 0 or lr.transform.d != 0 or hr.transform.b != 0 or hr.transform.d != 0:
        raise InputError(f"{pair}: rotated grids are not supported; warp to a north-up grid first")
    lrx, lry = lr.res
    hrx, hry = hr.res
    if not (np.isclose(lrx, hrx * scale) and np.isclose(lry, hry * scale)):
        raise InputError(
            f"{pair}: pixel sizes {lrx:g} and {hrx:g} are not in ratio {scale}; "
            f"resample the HR raster to {lrx / scale:g} (gdalwarp -tr -tap)"
        )
    dx = (hr.transform.c - lr.transform.c) / lrx
    dy = (lr.transform.f - hr.transform.f) / lry
    if not (np.isclose(dx, round(dx), atol=1e-6) and np.isclose(dy, round(dy), atol=1e-6)):
        raise InputError(
            f"{pair}: the HR origin is not on the LR pixel grid (offset {dx % 1:.3f}, "
            f"{dy % 1:.3f} LR pixels); warp the HR raster onto the LR extent "
            f"(gdalwarp -te <LR bounds> -tr {hrx:g} {hry:g}) so the grids nest"
        )


@contextlib.contextmanager
def atomic_path(dst: str | os.PathLike[str], overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``dst``; rename it to ``dst`` only if the block succeeds.

    Args:
        dst: the final output path.
        overwrite: replace an existing ``dst``; otherwise raise.

    Yields:
        The temporary path to write to.

    Raises:
        InputError: if ``dst`` exists and ``overwrite`` is false, or its folder is not writable.
    """
    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise InputError(f"{dst}: output exists; pass overwrite=true or choose another out_dir")
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"{dst.parent}: cannot create output folder ({err.strerror})") from None
    if not os.access(dst.parent, os.W_OK):
        raise InputError(f"{dst.parent}: output folder is not writable; choose another out_dir")
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        yield tmp
        os.replace(tmp, dst)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".aux.xml")):
            if leftover.exists():
                leftover.unlink()


class COGWriter:
    """Stream windows into a raster and publish it as a Cloud-Optimised GeoTIFF on success.

    Windows are written to a tiled GeoTIFF under a temporary name; :meth:`close` converts it to a
    COG (overviews included) under another temporary name and renames that to the destination.
    If the block raises, nothing appears at the destination.

    A class map (one given a ``colormap`` or ``categories``) gets overviews resampled with
    MODE, the most frequent class of each block; other rasters keep NEAREST unless
    ``overview_resampling`` says otherwise.

    Example:
        >>> with COGWriter(path, profile, descriptions=names) as w:  # doctest: +SKIP
        ...     w.write(block, Window(0, 0, 256, 256))
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        crs: CRS | str | None,
        transform: Affine,
        width: int,
        height: int,
        count: int,
        dtype: str | np.dtype[Any],
        nodata: float | None = None,
        descriptions: Sequence[str] | None = None,
        colormap: dict[int, tuple[int, int, int, int]] | None = None,
        categories: Sequence[str] | None = None,
        tags: dict[str, str] | None = None,
        band_tags: Sequence[dict[str, str]] | None = None,
        overwrite: bool = True,
        blocksize: int = 256,
        overview_resampling: str | None = None,
    ) -> None:
        """Open the staged raster.

        Args:
            path: destination.
            crs: coordinate reference system.
            transform: pixel-to-map transform.
            width: columns.
            height: rows.
            count: bands.
            dtype: data type.
            nodata: nodata value.
            descriptions: band names, one per band.
            colormap: colour table for band 1 (uint8 class maps).
            categories: category names of a single-band class map, index = class code (see
                :func:`category_names`), stored as band-1 metadata :data:`CATEGORY_NAMES_TAG`.
            tags: dataset-level metadata.
            band_tags: metadata per band.
            overwrite: replace an existing destination.
            blocksize: COG tile size.
            overview_resampling: GDAL resampling of the overviews (default MODE for class maps,
                NEAREST otherwise).

        Raises:
            ValueError: for descriptions that do not match the band count, or categories on a
                multi-band raster.
            InputError: if the destination exists and ``overwrite`` is false, or its folder is
                not writable.
        """
        if categories is not None and count != 1:
            raise ValueError(f"category names are for single-band class maps, not {count} bands")
        if descriptions is not None and len(descriptions) != count:
            raise ValueError(f"{len(descriptions)} descriptions for {count} bands")
        class_map = colormap is not None or categories is not None
        self._resampling = overview_resampling or (
            CLASS_OVERVIEW_RESAMPLING if class_map else GDAL_COG_OPTIONS["overview_resampling"]
        )
        self.path = Path(path)
        self._atomic = atomic_path(self.path, overwrite=overwrite)
        self._final_tmp = self._atomic.__enter__()
        self._stage = self._final_tmp.with_name(self._final_tmp.name + ".stage.tif")
        self._colormap = colormap
        self._blocksize = blocksize
        profile: dict[str, Any] = {
            "driver": "GTiff",
            "crs": crs,
            "transform": transform,
            "width": width,
            "height": height,
            "count": count,
            "dtype": np.dtype(dtype).name,
            "nodata": nodata,
            "tiled": True,
            "blockxsize": blocksize,
            "blockysize": blocksize,
            "compress": "DEFLATE" if width * height * count > 1 else None,
            "BIGTIFF": "IF_SAFER",
        }
        self._dst = rasterio.open(self._stage, "w", **profile)
        if descriptions is not None:
            for i, name in enumerate(descriptions, start=1):
                self._dst.set_band_description(i, name)
        if tags:
            self._dst.update_tags(**tags)
        if categories is not None:
            names = json.dumps([str(c) for c in categories], ensure_ascii=False)
            self._dst.update_tags(1, **{CATEGORY_NAMES_TAG: names})
        if band_tags:
            for i, bt in enumerate(band_tags, start=1):
                self._dst.update_tags(i, **bt)
        if colormap is not None:
            self._dst.write_colormap(1, colormap)

    def write(self, array: np.ndarray, window: Window | None = None) -> None:
        """Write a (bands, rows, cols) block at ``window`` (the whole raster if None).

        Args:
            array: the block, with the raster's band count.
            window: where it goes.
        """
        self._dst.write(array.astype(self._dst.dtypes[0], copy=False), window=window)

    def close(self) -> Path:
        """Convert the staged raster to a COG and publish it at the destination.

        Returns:
            The destination path.
        """
        self._dst.close()
        try:
            rasterio.shutil.copy(
                self._stage,
                self._final_tmp,
                **{
                    **GDAL_COG_OPTIONS,
                    "blocksize": self._blocksize,
                    "overview_resampling": self._resampling,
                },
            )
        finally:
            self._stage.unlink(missing_ok=True)
        self._atomic.__exit__(None, None, None)
        return self.path

    def abort(self) -> None:
        """Discard everything written; the destination is left untouched."""
        if not self._dst.closed:
            self._dst.close()
        self._stage.unlink(missing_ok=True)
        with contextlib.suppress(RuntimeError):
            self._atomic.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> COGWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_cog(
    path: str | os.PathLike[str],
    array: np.ndarray,
    *,
    crs: CRS | str | None,
    transform: Affine,
    nodata: float | None = None,
    descriptions: Sequence[str] | None = None,
    colormap: dict[int, tuple[int, int, int, int]] | None = None,
    categories: Sequence[str] | None = None,
    tags: dict[str, str] | None = None,
    overwrite: bool = True,
    overview_resampling: str | None = None,
) -> Path:
    """Write a whole (bands, rows, cols) or (rows, cols) array as a COG, atomically.

    Args:
        path: destination.
        array: the pixels.
        crs: coordinate reference system.
        transform: pixel-to-map transform.
        nodata: nodata value.
        descriptions: band names.
        colormap: colour table for band 1 (uint8 class maps).
        categories: category names of a class map, index = class code (see
            :func:`category_names`).
        tags: dataset-level metadata.
        overwrite: replace an existing file.
        overview_resampling: GDAL resampling of the overviews (default MODE for class maps,
            those given a colormap or categories; NEAREST otherwise).

    Returns:
        The destination path.

    Raises:
        InputError: if ``path`` exists and ``overwrite`` is false, or its folder is not writable.
    """
    if array.ndim == 2:
        array = array[None]
    with COGWriter(
        path,
        crs=crs,
        transform=transform,
        width=array.shape[2],
        height=array.shape[1],
        count=array.shape[0],
        dtype=array.dtype,
        nodata=nodata,
        descriptions=descriptions,
        colormap=colormap,
        categories=categories,
        tags=tags,
        overwrite=overwrite,
        overview_resampling=overview_resampling,
    ) as w:
        w.write(array)
    return Path(path)


def category_names(
    classes: Mapping[int, str], nodata: int | None = 0, nodata_name: str = "nodata"
) -> list[str]:
    """Category names of a uint8 class map in GDAL's layout: list index = class code.

    Args:
        classes: class code -> name (e.g. ``{c.code: c.name for c in legend.classes}``).
        nodata: the nodata code (None if the map has none).
        nodata_name: what to call it.

    Returns:
        Names for codes 0..max code; codes without a class are ''.

    Raises:
        ValueError: for a code outside 0..255 or a class that uses the nodata code.
    """
    codes = [*classes, *([] if nodata is None else [nodata])]
    bad = sorted({int(c) for c in codes if not 0 <= int(c) <= 255})
    if bad:
        raise ValueError(f"class codes {bad} outside 0..255 (uint8 class maps)")
    if nodata is not None and nodata in classes:
        raise ValueError(f"class code {nodata} is the nodata code")
    names = [""] * (max(int(c) for c in codes) + 1) if codes else []
    for code, name in classes.items():
        names[int(code)] = str(name)
    if nodata is not None:
        names[int(nodata)] = nodata_name
    return names


def read_category_names(path: str | os.PathLike[str]) -> list[str] | None:
    """The category names a class map was written with (:data:`CATEGORY_NAMES_TAG`).

    Args:
        path: the class map.

    Returns:
        Names indexed by class code, or None if the file has none.

    Raises:
        InputError: if the file is missing, unreadable, or its category names are not a JSON
            list of strings.
    """
    with open_raster(path) as src:
        raw = src.tags(1).get(CATEGORY_NAMES_TAG)
    if raw is None:
        return None
    try:
        names = json.loads(raw)
    except json.JSONDecodeError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InputError(
            f"{path}: band 1 {CATEGORY_NAMES_TAG} is not a JSON list of names; "
            "re-write the map with bsrlc or remove the item"
        )
    return names


def block_windows(width: int, height: int, size: int) -> list[Window]:
    """Split a raster into non-overlapping square windows of at most ``size`` pixels.

    Args:
        width: raster columns.
        height: raster rows.
        size: window edge in pixels.

    Returns:
        Windows in row-major order, the last row/column clipped to the raster.
    """
    return [
        Window(c, r, min(size, width - c), min(size, height - r))
        for r in range(0, height, size)
        for c in range(0, width, size)
    ]
