"""Raster input and output shared by every step: grid checks, band lookup and atomic COG writing.

Georeferencing travels with the data: readers return the CRS and transform next to the array, and
writers take them back. Outputs are written to a temporary name next to the destination and renamed
only when complete, so a killed run never leaves a file that looks finished.

An input raster may be one file (GeoTIFF, VRT, anything GDAL reads) or a *raster group*: files on
one grid whose bands are found by description across them, written with ``+`` between the paths
(``stm_2019_P50.tif+stm_2019_P25.tif``) or, in YAML, as a nested list. :func:`resolve_raster`
turns a group into a small VRT that stacks the bands of every file (see :func:`stack_rasters`);
everything downstream reads that VRT like any raster.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import uuid
import warnings
import xml.etree.ElementTree as ET
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

from bsrlc.errors import InputError, disk_full_error, free_bytes, is_disk_full, missing_file_fix

GDAL_COG_OPTIONS: dict[str, Any] = {
    "driver": "COG",
    "compress": "DEFLATE",
    "predictor": 2,
    "blocksize": 256,
    "level": 3,
    "overview_resampling": "NEAREST",
    "BIGTIFF": "IF_SAFER",
    "num_threads": "ALL_CPUS",
}
"""Creation options of every COG written. DEFLATE (readable by every GIS) at level 3: on STM
tiles as large as level 6's (within 2 %) and a third faster; compressed on all cores."""

VERIFY_BELOW = 64 * 2**20
"""Free bytes below which :class:`COGWriter` reads a COG back before publishing it."""

STAGE_COMPRESSION: dict[str, Any] = {"compress": "ZSTD", "zstd_level": 1}
"""Compression of the staged raster a COG is converted from: written and read once, so the
fastest codec (ZSTD level 1 writes as fast as no compression at ~80 % of the size)."""

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
        sources: the member files of a raster group (:func:`stack_rasters`), else empty.
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
    sources: tuple[Path, ...] = ()

    @property
    def name(self) -> str:
        """How to name the raster in messages: its member files joined by ``+`` for a group."""
        return (
            GROUP_SEPARATOR.join(str(p) for p in self.sources) if self.sources else str(self.path)
        )

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
        path: the raster file, or a raster group (``a.tif+b.tif``, see :func:`resolve_raster`;
            stacked into a VRT in :func:`default_vrt_dir`).

    Returns:
        An open rasterio dataset (use it as a context manager).

    Raises:
        InputError: if the file does not exist or is not a readable raster.
    """
    path = resolve_raster(path)
    if not path.exists():
        fix = missing_file_fix(path, "check the path in your config or command line")
        raise InputError(f"{path}: file not found; {fix}")
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


def _info(src: rasterio.io.DatasetReader, path: Path, require_crs: bool) -> RasterInfo:
    """The :class:`RasterInfo` of an open dataset (``sources`` from a group VRT's metadata)."""
    raw = src.tags().get(GROUP_TAG)
    sources = tuple(Path(p) for p in json.loads(raw)) if raw else ()
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
        sources=sources,
    )
    if require_crs and src.crs is None:
        raise InputError(
            f"{info.name}: raster has no CRS; assign one (e.g. gdal_edit.py -a_srs EPSG:3035) first"
        )
    return info


def raster_info(path: str | os.PathLike[str], require_crs: bool = True) -> RasterInfo:
    """Read the grid and band layout of a raster without reading its pixels.

    Args:
        path: the raster file, or a raster group (see :func:`resolve_raster`).
        require_crs: raise if the raster has no CRS.

    Returns:
        The raster's :class:`RasterInfo`; for a group, ``path`` is the VRT that stacks it and
        ``sources`` its files.

    Raises:
        InputError: if the file is unreadable, or has no CRS while one is required.
    """
    path = resolve_raster(path)
    with open_raster(path) as src:
        return _info(src, path, require_crs)


# ---------------------------------------------------------------------------------------------
# Raster groups: bands of several files on one grid, stacked into a VRT

GROUP_SEPARATOR = "+"
"""Joins the files of a raster group in one string: ``a.tif+b.tif``."""

GROUP_TAG = "BSRLC_GROUP"
"""Dataset metadata item of a group VRT: its member files as a JSON list."""

RasterSpec = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
"""A raster as configs give it: a path, ``a.tif+b.tif``, or a list of paths (a group)."""

_GDAL_TYPES = {
    "uint8": "Byte",
    "int8": "Int8",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "uint64": "UInt64",
    "int64": "Int64",
    "float32": "Float32",
    "float64": "Float64",
}


def default_vrt_dir() -> Path:
    """Where group VRTs go unless a caller gives a folder.

    ``$BSRLC_CACHE/vrt`` if that variable is set, else ``~/.cache/bsrlc/vrt``.

    Returns:
        The folder.
    """
    cache = os.environ.get("BSRLC_CACHE")
    return Path(cache) / "vrt" if cache else Path.home() / ".cache" / "bsrlc" / "vrt"


def raster_members(spec: RasterSpec) -> list[Path]:
    """The files of a raster as configs give it: one file, or the files of a group.

    A string naming an existing file is that file, even if its name holds a ``+``; any other
    string with ``+`` is a group of the paths between them. A list (a nested list in a period
    list) is a group too; its items may themselves be ``a+b`` strings.

    Args:
        spec: the raster.

    Returns:
        One path for a single raster (not checked here), the files for a group.

    Raises:
        InputError: for a group with an empty, missing or repeated member, or a folder in it.
    """
    if isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec)
        if GROUP_SEPARATOR not in text or Path(text).exists():
            return [Path(text)]
        parts = [p.strip() for p in text.split(GROUP_SEPARATOR)]
    else:
        items = list(spec)
        text = GROUP_SEPARATOR.join(os.fspath(i) for i in items)
        parts = [str(m) for item in items for m in raster_members(item)]
    if len(parts) == 1:
        return [Path(parts[0])]
    if not all(parts):
        raise InputError(
            f"{text}: empty path in a raster group; join its files as a.tif+b.tif, without "
            "spaces or a trailing +"
        )
    missing = [p for p in parts if not Path(p).exists()]
    if missing:
        raise InputError(
            f"{text}: no such file, and as a raster group (files joined by +) its file(s) "
            f"{', '.join(missing)} do not exist; fix the path(s)"
        )
    folders = [p for p in parts if Path(p).is_dir()]
    if folders:
        raise InputError(
            f"{text}: {folders[0]} is a folder; a raster group joins files (a.tif+b.tif)"
        )
    resolved = [Path(p).resolve() for p in parts]
    twice = sorted({parts[i] for i, r in enumerate(resolved) if resolved.count(r) > 1})
    if twice:
        raise InputError(
            f"{text}: {', '.join(twice)} given twice in a raster group; list each file once"
        )
    return [Path(p) for p in parts]


def group_name(members: Sequence[str | os.PathLike[str]]) -> str:
    """A readable name of a raster group: its files' stems joined by ``+``.

    Args:
        members: the files.

    Returns:
        ``a+b`` for ``a.tif`` and ``b.tif``; ``a+4more`` when the joined stems exceed 100
        characters. A single file's stem for one file.
    """
    stems = [Path(m).stem for m in members]
    name = GROUP_SEPARATOR.join(stems)
    return name if len(name) <= 100 else f"{stems[0]}{GROUP_SEPARATOR}{len(stems) - 1}more"


def resolve_raster(spec: RasterSpec, vrt_dir: str | os.PathLike[str] | None = None) -> Path:
    """The one raster path of a raster as configs give it.

    A single file (a GeoTIFF, a VRT, any raster GDAL opens) is returned as is; a group
    (``a.tif+b.tif`` or a list) is stacked by :func:`stack_rasters`.

    Args:
        spec: the raster (see :func:`raster_members`).
        vrt_dir: where a group's VRT goes (default :func:`default_vrt_dir`).

    Returns:
        The path to open.

    Raises:
        InputError: for a bad group (see :func:`raster_members` and :func:`stack_rasters`).
    """
    members = raster_members(spec)
    if len(members) == 1:
        return members[0]
    return stack_rasters(members, vrt_dir)


def _num(value: float) -> str:
    """A nodata value as VRT XML writes it (``nan``, ``-9999``, ``0.5``)."""
    if math.isnan(value):
        return "nan"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def stack_rasters(
    paths: Sequence[str | os.PathLike[str]], vrt_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Stack the bands of files on one grid into a VRT, bands in file order.

    Band descriptions, scale, offset, units and band metadata are carried over; a single-band
    file without a description gets its file stem as band description (one file per metric).
    The VRT has one data type (the files' common one, e.g. int16 and float32 give float32) and
    one nodata value (the first file's that has one; other files' nodata values are mapped to
    it). It refers to the files by absolute path and is named after their stems and a digest of
    its content and of the files' sizes and modification times: written once (atomically),
    reused while the files are unchanged, and a changed file gives a new VRT, so chip caches
    and resumable predictions keyed on the path never mix old and new pixels.

    Args:
        paths: the files (at least two).
        vrt_dir: where the VRT goes (default :func:`default_vrt_dir`).

    Returns:
        The VRT.

    Raises:
        InputError: naming the files, for files on different grids, a band description found
            in two files, an unreadable file or one without CRS, or a folder that is not
            writable.
    """
    files = [Path(p) for p in paths]
    name = GROUP_SEPARATOR.join(str(p) for p in files)
    infos: list[RasterInfo] = []
    extras: list[dict[str, Any]] = []
    for f in files:
        with open_raster(f) as src:
            infos.append(_info(src, f, require_crs=True))
            extras.append(
                {
                    "scales": src.scales,
                    "offsets": src.offsets,
                    "units": src.units,
                    "blocks": src.block_shapes,
                    "dtypes": src.dtypes,
                    "tags": [src.tags(b) for b in range(1, src.count + 1)],
                }
            )
    check_same_grid(infos, f"files of the raster group {name}")
    seen: dict[str, Path] = {}
    descriptions: list[list[str]] = []
    for info in infos:
        descs = list(info.descriptions)
        if info.count == 1 and not descs[0]:
            descs = [info.path.stem]
        for d in descs:
            if d and d in seen:
                raise InputError(
                    f"{seen[d]} and {info.path}: both have a band {d!r}; bands of a raster group "
                    "are found by description, so each must be in one file only: drop one file "
                    "from the group or give its bands other descriptions"
                )
            seen[d] = info.path
        descriptions.append(descs)
    dtype = np.result_type(*[np.dtype(t) for e in extras for t in e["dtypes"]]).name
    if dtype not in _GDAL_TYPES:
        raise InputError(f"{name}: files of data type {dtype} cannot be stacked; convert them")
    nodata = next((i.nodata for i in infos if i.nodata is not None), None)
    ref = infos[0]
    root = ET.Element("VRTDataset", rasterXSize=str(ref.width), rasterYSize=str(ref.height))
    if ref.crs is not None:
        ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2").text = ref.crs.to_wkt()
    ET.SubElement(root, "GeoTransform").text = ", ".join(repr(v) for v in ref.transform.to_gdal())
    meta = ET.SubElement(root, "Metadata")
    ET.SubElement(meta, "MDI", key=GROUP_TAG).text = json.dumps([str(f) for f in files])
    band = 0
    for info, extra, descs in zip(infos, extras, descriptions, strict=True):
        src_file = str(info.path.resolve())
        for b in range(1, info.count + 1):
            band += 1
            el = ET.SubElement(root, "VRTRasterBand", dataType=_GDAL_TYPES[dtype], band=str(band))
            if extra["tags"][b - 1]:
                bmeta = ET.SubElement(el, "Metadata")
                for key, value in sorted(extra["tags"][b - 1].items()):
                    ET.SubElement(bmeta, "MDI", key=key).text = value
            ET.SubElement(el, "Description").text = descs[b - 1]
            if nodata is not None:
                ET.SubElement(el, "NoDataValue").text = _num(nodata)
            if extra["units"][b - 1]:
                ET.SubElement(el, "UnitType").text = extra["units"][b - 1]
            if extra["offsets"][b - 1] != 0:
                ET.SubElement(el, "Offset").text = repr(float(extra["offsets"][b - 1]))
            if extra["scales"][b - 1] != 1:
                ET.SubElement(el, "Scale").text = repr(float(extra["scales"][b - 1]))
            own = info.nodata
            remap = own is not None and nodata is not None and not _same_value(own, nodata)
            source = ET.SubElement(el, "ComplexSource" if remap else "SimpleSource")
            ET.SubElement(source, "SourceFilename", relativeToVRT="0").text = src_file
            ET.SubElement(source, "SourceBand").text = str(b)
            by, bx = extra["blocks"][b - 1]
            ET.SubElement(
                source,
                "SourceProperties",
                RasterXSize=str(info.width),
                RasterYSize=str(info.height),
                DataType=_GDAL_TYPES[extra["dtypes"][b - 1]],
                BlockXSize=str(bx),
                BlockYSize=str(by),
            )
            rect = {"xOff": "0", "yOff": "0", "xSize": str(info.width), "ySize": str(info.height)}
            ET.SubElement(source, "SrcRect", **rect)
            ET.SubElement(source, "DstRect", **rect)
            if remap:
                ET.SubElement(source, "NODATA").text = _num(own)  # type: ignore[arg-type]
    ET.indent(root)
    text = ET.tostring(root, encoding="unicode") + "\n"
    digest = hashlib.sha256(text.encode())
    for f in files:
        st = f.stat()
        digest.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    folder = Path(vrt_dir) if vrt_dir is not None else default_vrt_dir()
    dst = folder / f"{group_name(files)}.{digest.hexdigest()[:12]}.vrt"
    if dst.exists() and dst.read_text() == text:
        return dst
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        os.replace(tmp, dst)  # atomic: concurrent runs (DDP ranks) write the same text
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise InputError(
            f"{folder}: cannot write the VRT of the raster group {name} ({err.strerror}); "
            "set cache_dir (training) or out_dir (predict) to a writable folder"
        ) from None
    return dst


def _same_value(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


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
            f"{info.name}: missing band(s) {', '.join(missing)} ({_has(info)}: {have}); "
            "select bands that exist, add the file that has them to the raster group "
            "(a.tif+b.tif) or rebuild the STMs with them"
        )
    return [lookup[n] for n in names]


def _has(info: RasterInfo) -> str:
    return "files have" if info.sources else "file has"


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
                    f"{info.name}: no band matches {pat!r} "
                    f"({_has(info)}: {', '.join(info.descriptions)}); fix the band selection"
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
                f"{info.name}: CRS {info.crs} differs from {ref.name} ({ref.crs}); "
                f"reproject all {what} to one grid first (e.g. gdalwarp -t_srs)"
            )
        if not info.transform.almost_equals(ref.transform, precision=1e-6) or (
            info.width,
            info.height,
        ) != (ref.width, ref.height):
            raise InputError(
                f"{info.name}: grid {info.width}x{info.height} at {tuple(info.transform)[:6]} "
                f"differs from {ref.name} ({ref.width}x{ref.height} at {tuple(ref.transform)[:6]});"
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
    pair = f"{lr.name} and {hr.name}"
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
        overviews: bool = True,
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
            overviews: build internal overviews (most of the conversion's time on rasters
                of many bands; tiles of a mosaic can leave them to the mosaic).

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
        self._overviews = overviews
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
            "BIGTIFF": "IF_SAFER",
        }
        if width * height * count > 1:
            profile.update(STAGE_COMPRESSION)
        try:
            self._dst = rasterio.open(self._stage, "w", **profile)
        except rasterio.errors.RasterioIOError:  # a GDAL built without ZSTD
            profile.pop("zstd_level", None)
            profile.update(compress="DEFLATE", zlevel=1)
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
        try:
            self._dst.write(array.astype(self._dst.dtypes[0], copy=False), window=window)
        except Exception as err:  # GDAL's write errors: RasterioIOError, CPLE_*Error
            failed = self._failed(err, array.nbytes)
            if failed is err:
                raise
            raise failed from None

    def _failed(self, err: Exception, need: int = 0) -> Exception:
        """A one-line :class:`~bsrlc.errors.DiskFullError` for a full disk, else ``err``.

        Checked before the temporary files are removed (they hold the space the write took).
        """
        if is_disk_full(err, self.path.parent, need):
            return disk_full_error(self.path.parent, self.path.name)
        return err

    def close(self) -> Path:
        """Convert the staged raster to a COG and publish it at the destination.

        Returns:
            The destination path.

        Raises:
            DiskFullError: if the disk fills up (nothing is published; the temporary files are
                removed).
        """
        try:
            self._dst.close()  # flushes GDAL's cache: the stage's last blocks are written here
            rasterio.shutil.copy(
                self._stage,
                self._final_tmp,
                **{
                    **GDAL_COG_OPTIONS,
                    "blocksize": self._blocksize,
                    "overview_resampling": self._resampling,
                    **({} if self._overviews else {"overviews": "NONE"}),
                },
            )
        except Exception as err:  # GDAL's write errors: RasterioIOError, CPLE_*Error
            failed = self._failed(err)
            self.abort()
            if failed is err:
                raise
            raise failed from None
        finally:
            self._stage.unlink(missing_ok=True)
        if 0 <= free_bytes(self.path.parent) < VERIFY_BELOW and not self._readable():
            # GDAL can finish a copy onto a full disk without an error and leave a truncated
            # file; on a nearly full disk the COG is read back before it is published
            self.abort()
            raise disk_full_error(self.path.parent, self.path.name)
        self._atomic.__exit__(None, None, None)
        return self.path

    def _readable(self) -> bool:
        """Whether every block of the converted COG reads back."""
        try:
            with rasterio.open(self._final_tmp) as src:
                for _, window in src.block_windows(1):
                    src.read(window=window)
        except Exception:  # GDAL's read errors: RasterioIOError, CPLE_*Error
            return False
        return True

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
