"""FORCE datacubes in: Level-2 ARD as a source of the tiled ingest, TSA STMs used as they are.

**Level-2 datacubes** (``python -m bsrlc.stm source=force scenes=CUBE periods=...``,
:func:`discover_force`): a folder with ``datacube-definition.prj`` and ``X####_Y####/`` tile
folders of ``YYYYMMDD_LEVEL2_SENSOR_BOA.tif`` (+ ``..._QAI.tif``) per date and sensor (LND04,
LND05, LND07, LND08, LND09, SEN2A, SEN2B...). Each BOA file is one
:class:`~bsrlc.stm.sources.SourceScene` whose bands are bands of that file, read band by band
(``SourceScene.band_index``) by the same WarpReader as the other sources: on the cube's own grid
the warp is an identity (the STMs hold the cube's values), on another grid (``grid.*``) BOA is
warped window by window like any scene. The grid is the cube's (:func:`cube_grid`: CRS, origin
and tile size of the definition, the BOA's pixel size), so the output tiles are the cube's
tiles, unless ``grid.*`` says otherwise.

- BOA: int16 reflectance x 10000, nodata -9999 (FORCE Level-2 format; scale 1e-4, offset 0);
  bands by their names (Landsat: BLUE GREEN RED NIR SWIR1 SWIR2; Sentinel-2: BLUE GREEN RED
  REDEDGE1 REDEDGE2 REDEDGE3 BROADNIR NIR SWIR1 SWIR2), else by position. bsrlc's NIR is
  Landsat NIR and Sentinel-2 BROADNIR (B08, like ``source=sentinel2_l2a``); the other Sentinel-2
  bands get the L2A ids B05, B06, B07 and B8A (FORCE's NIR).
- QAI: int16 bit flags, decoded at native resolution by ``force_qai`` (:mod:`bsrlc.stm.qa`) with
  FORCE's documented layout (Level-2 format, "Quality Assurance Information"): bit 0 valid data
  (1 = no data), 1-2 cloud state (0 clear, 1 less confident / buffered, 2 confident, 3 cirrus),
  3 cloud shadow, 4 snow, 5 water, 6-7 aerosol state, 8 subzero, 9 saturation, 10 high sun
  zenith, 11-12 illumination, 13 slope, 14 water vapour. Excluded: no data, any cloud state,
  shadow, snow, subzero, saturation (water is clear). A QAI that is not int16 is refused at
  discovery, naming the file, what it looks like and the decoder that fits (item 4).
- Valid range: BOA within [-10000, 10000] (reflectance -1..1), as conf/sensor/force.yaml.

Note: FORCE >= 3 writes ``datacube-definition.prj`` tagged as ``PROJECTION``,
``ORIGIN_GEO_X/Y``, ``ORIGIN_MAP_X/Y``, ``TILE_SIZE_X/Y`` (and ``BLOCK_SIZE_X/Y``); older
versions write 7 plain lines. :func:`cube_grid` reads both (and the ``ORIGIN_X`` / ``TILE_SIZE``
tags of :meth:`bsrlc.stm.grid.TargetGrid.from_force_cube`).

**TSA STM outputs** (``python -m bsrlc.stm source=force_tsa scenes=TSA_CUBE``,
:func:`adapt_tsa`): files ``YYYY-YYYY_DDD-DDD_HL_TSA_SENSOR_IDX_STM.tif`` in the cube's tile
folders, one per index / band (``IDX``: BLU, GRN, ..., NDV...), with one band per statistic of
the TSA parameter ``STM =`` (MIN, Q01-Q99, MAX, AVG, STD, RNG, IQR, SKW, KRT, NUM). Nothing is
recomputed: one VRT per period points at the files with bsrlc's STM band names, so train.py and
predict.py read them like ``python -m bsrlc.stm`` output. Mapping (:data:`TSA_INDEX`,
:data:`TSA_METRIC`):

==========================  =====================================================
FORCE                       bsrlc
==========================  =====================================================
BLU GRN RED NIR SW1 SW2     the same band names
RE1 RE2 RE3 BNR             RE1 RE2 RE3 BNR (kept)
NDV NDB NDW MNW SAV EVI     NDVI NDBI NDWI MNDWI SAVI EVI
NBR TCB TCG TCW             the same
ARV SRV NDS TCD SMA ...     ARVI SARVI NDSI, others kept as they are
MIN MAX STD                 _MIN _MAX _STD
Qnn                         _Pnn (Q50 -> _P50, the median)
AVG                         _MEAN
RNG IQR SKW KRT             _RNG _IQR _SKW _KRT (no bsrlc metric; kept)
NUM                         CLEAR_COUNT (last band, once; scale 1)
==========================  =====================================================

Band order: each index in FORCE's order, each statistic in the file's order, CLEAR_COUNT last
(bsrlc's band-major layout). Values stay FORCE's int16 x 10000 (bsrlc's scaling too): the VRT
sets GDAL scale 1e-4 (1 for CLEAR_COUNT), offset 0, and maps FORCE's nodata -9999 to bsrlc's
-32768 (a ``ComplexSource`` ``NODATA``; CLEAR_COUNT gets 0 there, through a ``LUT``).
Assumption: every statistic but NUM is scaled by 10000 (FORCE scales reflectance and indices by
10000; the scaling of SKW / KRT is not documented).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import rasterio

from bsrlc.errors import ConfigError, InputError
from bsrlc.raster import open_raster
from bsrlc.stm.compose import OUT_NODATA, OUT_SCALE
from bsrlc.stm.grid import TILE_ID_RE, TargetGrid
from bsrlc.stm.qa import _fits, _looks_like
from bsrlc.stm.sources import Discovery, MaskLayer, SourceScene

log = logging.getLogger(__name__)

FORCE_NODATA = -9999
"""FORCE's nodata value of BOA, QAI-derived and TSA products."""

FORCE_SCALE = 1e-4
"""BOA (and TSA reflectance / index) scale: reflectance = DN * 1e-4."""

FORCE_VALID_RANGE = (-10000.0, 10000.0)
"""Valid BOA DNs (reflectance -1..1), as conf/sensor/force.yaml."""

LANDSAT_BOA = ("BLUE", "GREEN", "RED", "NIR", "SWIR1", "SWIR2")
SENTINEL2_BOA = (
    "BLUE",
    "GREEN",
    "RED",
    "REDEDGE1",
    "REDEDGE2",
    "REDEDGE3",
    "BROADNIR",
    "NIR",
    "SWIR1",
    "SWIR2",
)
"""FORCE Level-2 BOA bands in file order (Level-2 format documentation)."""

BOA_NAMES = {
    "LANDSAT": {
        "BLUE": "BLU",
        "GREEN": "GRN",
        "RED": "RED",
        "NIR": "NIR",
        "SWIR1": "SW1",
        "SWIR2": "SW2",
    },
    "SENTINEL2": {
        "BLUE": "BLU",
        "GREEN": "GRN",
        "RED": "RED",
        "BROADNIR": "NIR",
        "SWIR1": "SW1",
        "SWIR2": "SW2",
        "REDEDGE1": "B05",
        "REDEDGE2": "B06",
        "REDEDGE3": "B07",
        "NIR": "B8A",
    },
}
"""FORCE BOA band name -> bsrlc band, by sensor family."""

TSA_INDEX = {
    "NDV": "NDVI",
    "NDB": "NDBI",
    "NDW": "NDWI",
    "MNW": "MNDWI",
    "SAV": "SAVI",
    "ARV": "ARVI",
    "SRV": "SARVI",
    "NDS": "NDSI",
}
"""FORCE TSA index code -> bsrlc name (codes not listed keep their name)."""

TSA_ORDER = (
    "BLU GRN RED NIR SW1 SW2 RE1 RE2 RE3 BNR NDV EVI NBR ARV SAV SRV TCB TCG TCW TCD NDB NDW "
    "MNW NDS SMA"
).split()
"""FORCE's index order (TSA documentation), used for the band order of the VRT."""

TSA_METRIC = {"MIN": "MIN", "MAX": "MAX", "AVG": "MEAN", "STD": "STD", "NUM": "CLEAR_COUNT"}
"""FORCE STM statistic -> bsrlc metric suffix (``Qnn`` -> ``Pnn``; others kept)."""

_BOA = re.compile(r"^(\d{8})_LEVEL2_([A-Z0-9]{5})_BOA\.(tif|tiff|dat)$", re.IGNORECASE)
_TSA = re.compile(
    r"^(\d{4})-(\d{4})_(\d{3})-(\d{3})_HL_TSA_([A-Z0-9-]{5})_([A-Z0-9]{3})_STM\.(tif|tiff|dat)$",
    re.IGNORECASE,
)
_STAT = re.compile(r"^(MIN|MAX|AVG|STD|RNG|IQR|SKW|KRT|NUM|Q\d{2})$")


# --------------------------------------------------------------------------------------------
# the cube


def cube_grid(path: str | Path, resolution: float = 30.0) -> TargetGrid:
    """The grid of a FORCE datacube, from its ``datacube-definition.prj``.

    Args:
        path: the definition file or the cube folder.
        resolution: the pixel size of the products to read (a cube may hold 10 m and 30 m).

    Returns:
        The grid; its tile ids are the cube's ``X####_Y####`` folders.

    Raises:
        InputError: for a missing or unreadable definition.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "datacube-definition.prj"
    if not path.is_file():
        raise InputError(
            f"{path}: FORCE datacube definition not found; point scenes= at the cube folder "
            "that holds datacube-definition.prj (FORCE writes it into every cube)"
        )
    tags: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().isupper() and " " not in key.strip():
            tags[key.strip()] = value.strip()
    if "ORIGIN_MAP_X" not in tags:
        grid = TargetGrid.from_force_cube(path, resolution=resolution)
        return dataclasses.replace(grid, crs=_crs_of(grid.crs))
    try:
        sx = float(tags["TILE_SIZE_X"])
        sy = float(tags.get("TILE_SIZE_Y", sx))
        if abs(sx - sy) > 1e-6:
            raise ValueError(f"tiles of {sx:g} x {sy:g}: only square tiles are supported")
        return TargetGrid(
            crs=_crs_of(tags["PROJECTION"]),
            resolution=resolution,
            tile_size=sx,
            origin=(float(tags["ORIGIN_MAP_X"]), float(tags["ORIGIN_MAP_Y"])),
        )
    except (KeyError, ValueError) as err:
        raise InputError(
            f"{path}: not a FORCE datacube definition ({type(err).__name__}: {err}); it needs "
            "PROJECTION, ORIGIN_MAP_X, ORIGIN_MAP_Y and TILE_SIZE_X"
        ) from None


_EPSG_TAIL = re.compile(r'AUTHORITY\["EPSG",\s*"(\d+)"\]\]\s*$')


def _crs_of(wkt: str) -> str:
    """``EPSG:n`` for a cube's WKT that names its EPSG code, else the WKT.

    FORCE writes GDAL's WKT1 with ``TOWGS84[0,...]``, which pyproj does not match to EPSG:3035
    although the WKT ends with ``AUTHORITY["EPSG","3035"]``; taken as written, the grid's CRS
    would differ from the one GDAL reads from the cube's GeoTIFFs (EPSG:3035), and every
    identity read would become a reprojection.
    """
    m = _EPSG_TAIL.search(wkt.strip())
    return f"EPSG:{m.group(1)}" if m else wkt


@dataclass
class ForceCube:
    """What :func:`discover_force` found.

    Attributes:
        path: the cube folder.
        grid: the cube's grid at the BOA's pixel size (or the asked one).
        discovery: the BOA scenes (one per tile, date and sensor), skipped lines, products.
    """

    path: Path
    grid: TargetGrid
    discovery: Discovery


def _family(sensor: str) -> str:
    return "SENTINEL2" if sensor.upper().startswith("SEN2") else "LANDSAT"


def _boa_bands(path: Path, sensor: str) -> tuple[dict[str, int], float, str, float | None]:
    """Bsrlc band -> 1-based band of a BOA file; its pixel size, dtype and nodata."""
    try:
        with open_raster(path) as src:
            names = [(d or "").strip().upper() for d in src.descriptions]
            count, res, dtype, nodata = src.count, abs(src.transform.a), src.dtypes[0], src.nodata
    except InputError:
        raise
    except rasterio.errors.RasterioIOError as err:
        raise InputError(
            f"{path}: cannot open the BOA file ({str(err).splitlines()[0]}); re-run FORCE "
            "Level-2 for this date or remove the file"
        ) from None
    family = _family(sensor)
    order = SENTINEL2_BOA if family == "SENTINEL2" else LANDSAT_BOA
    if not any(n in BOA_NAMES[family] for n in names):
        if count != len(order):
            raise InputError(
                f"{path}: {count} bands without names, but FORCE {sensor} BOA has {len(order)} "
                f"({', '.join(order)}); the file is not a FORCE Level-2 BOA"
            )
        names = list(order)
    out: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in BOA_NAMES[family]:
            out.setdefault(BOA_NAMES[family][n], i + 1)
    return out, res, dtype, nodata


def _check_qai(path: Path) -> None:
    """Refuse a QAI that is not int16, naming the file, what it looks like and the decoder."""
    try:
        with open_raster(path) as src:
            dtype = src.dtypes[0]
            if dtype == "int16":
                return
            h, w = src.height, src.width
            step = max(1, max(h, w) // 256)
            sample = src.read(1, out_shape=(max(1, h // step), max(1, w // step)))
    except rasterio.errors.RasterioIOError as err:
        raise InputError(
            f"{path}: cannot open the QAI file ({str(err).splitlines()[0]}); re-run FORCE "
            "Level-2 for this date or remove its BOA"
        ) from None
    fit = _fits(sample)
    how = (
        f"; it fits decoder {fit}: ingest such files with their own source (source=landsat_c2 "
        "for QA_PIXEL, sentinel2_l2a for SCL)"
        if fit and fit != "force_qai"
        else "; give FORCE's own *_QAI.tif"
    )
    raise InputError(
        f"{path}: QAI is {dtype}{_looks_like(sample)}, but FORCE writes QAI as int16 bit flags "
        f"(decoder force_qai){how}"
    )


def discover_force(
    path: str | Path,
    on_error: str = "fail",
    resolution: float | None = None,
    sensors: Sequence[str] | None = None,
) -> ForceCube:
    """The BOA scenes of a FORCE Level-2 datacube and its grid.

    Args:
        path: the cube folder (``datacube-definition.prj`` + ``X####_Y####/``).
        on_error: ``fail`` raises on the first bad file; ``skip`` leaves the scene out.
        resolution: only BOA files of this pixel size, and the grid's resolution (None: the
            pixel size of the first BOA; a cube of mixed sizes then needs it).
        sensors: only these FORCE sensors (``LND08``, ``SEN2A``...); None: all.

    Returns:
        The cube.

    Raises:
        ConfigError: for an unknown ``on_error``.
        InputError: for a missing definition or no BOA files, a BOA without its QAI, a QAI that
            is not int16 or an unreadable file (``on_error=fail``).
    """
    if on_error not in ("fail", "skip"):
        raise ConfigError(f"on_error={on_error}: use fail or skip")
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: FORCE cube folder not found; set scenes= to the cube folder")
    cube_grid(path)  # the definition exists and parses
    wanted = {s.upper() for s in sensors} if sensors else None
    scenes: list[SourceScene] = []
    skipped: list[str] = []
    res_seen: set[float] = set()
    tiles = sorted(p for p in path.iterdir() if p.is_dir() and TILE_ID_RE.match(p.name))
    for tile in tiles:
        for boa in sorted(tile.iterdir()):
            m = _BOA.match(boa.name)
            if m is None:
                continue
            date_s, sensor = m.group(1), m.group(2).upper()
            if wanted is not None and sensor not in wanted:
                continue
            try:
                date = dt.datetime.strptime(date_s, "%Y%m%d").date()
                qai = boa.with_name(boa.name[: m.start(3) - 5] + "_QAI." + m.group(3))
                if not qai.is_file():
                    raise InputError(
                        f"{qai}: QAI file missing for {boa.name} (FORCE's cloud and quality "
                        "flags); copy it from the Level-2 output or remove the BOA"
                    )
                bands, res, _, nodata = _boa_bands(boa, sensor)
                if resolution is not None and abs(res - resolution) > 1e-6:
                    continue
                _check_qai(qai)
            except ValueError:
                err = InputError(f"{boa}: {date_s} is not a date; FORCE names files YYYYMMDD_...")
                if on_error == "fail":
                    raise err from None
                skipped.append(str(err))
                continue
            except InputError as err:
                if on_error == "fail":
                    raise
                log.warning("skipped: %s", err)
                skipped.append(str(err))
                continue
            res_seen.add(res)
            scenes.append(
                SourceScene(
                    id=f"{tile.name}/{boa.stem}",
                    date=date,
                    product="force",
                    sensor=sensor,
                    bands=dict.fromkeys(bands, boa),
                    masks=(MaskLayer(qai, "force_qai"),),
                    scale=dict.fromkeys(bands, FORCE_SCALE),
                    offset=dict.fromkeys(bands, 0.0),
                    nodata=float(nodata) if nodata is not None else float(FORCE_NODATA),
                    valid_range=FORCE_VALID_RANGE,
                    metadata=boa,
                    band_index=bands,
                )
            )
    if not scenes and not skipped:
        raise InputError(
            f"{path}: no FORCE Level-2 BOA files (X####_Y####/YYYYMMDD_LEVEL2_SENSOR_BOA.tif"
            f"{', sensors ' + ', '.join(sorted(wanted)) if wanted else ''}"
            f"{f', {resolution:g} m' if resolution else ''}) found; point scenes= at the cube"
        )
    if resolution is None and len(res_seen) > 1:
        raise ConfigError(
            f"{path}: BOA files of {' and '.join(f'{r:g} m' for r in sorted(res_seen))} in one "
            "cube; pick one with grid.resolution=..."
        )
    res = resolution if resolution is not None else (res_seen.pop() if res_seen else 30.0)
    scenes.sort(key=lambda s: (s.date, s.id))
    return ForceCube(path, cube_grid(path, res), Discovery(scenes, skipped, ["force"]))


# --------------------------------------------------------------------------------------------
# TSA STM outputs


def tsa_band_name(index: str, stat: str) -> str:
    """Bsrlc's band name of a FORCE TSA STM band.

    Args:
        index: FORCE index code (``BLU``, ``NDV``...).
        stat: FORCE statistic (``Q25``, ``AVG``, ``NUM``...).

    Returns:
        e.g. ``BLU_P25``, ``NDVI_MEAN``; ``CLEAR_COUNT`` for NUM.
    """
    stat = stat.upper()
    if stat == "NUM":
        return "CLEAR_COUNT"
    suffix = f"P{int(stat[1:])}" if re.fullmatch(r"Q\d{2}", stat) else TSA_METRIC.get(stat, stat)
    return f"{TSA_INDEX.get(index.upper(), index.upper())}_{suffix}"


@dataclass
class _TsaFile:
    path: Path
    tile: str
    index: str
    stats: list[str]
    transform: rasterio.Affine
    shape: tuple[int, int]
    crs: rasterio.crs.CRS
    dtype: str
    nodata: float | None


def _tsa_stats(
    path: Path, descriptions: Sequence[str | None], stm: Sequence[str] | None
) -> list[str]:
    names = [(d or "").strip().upper() for d in descriptions]
    if names and all(_STAT.match(n) for n in names):
        return names
    if stm:
        given = [str(s).strip().upper() for s in stm]
        bad = [s for s in given if not _STAT.match(s)]
        if bad:
            raise ConfigError(
                f"force_stm={list(stm)}: {', '.join(bad)} is no FORCE STM statistic (MIN, Q01-Q99, "
                "MAX, AVG, STD, RNG, IQR, SKW, KRT, NUM)"
            )
        if len(given) != len(names):
            raise InputError(
                f"{path}: {len(names)} bands, but force_stm lists {len(given)} statistics; give "
                "the STM = line of the TSA parameter file that made it"
            )
        return given
    raise InputError(
        f"{path}: bands are not named by statistic ({', '.join(n or '?' for n in names)}); set "
        "force_stm=[...] to the STM = line of the TSA parameter file, e.g. "
        "force_stm=[Q25,Q50,Q75,AVG,STD]"
    )


def adapt_tsa(
    folder: str | Path,
    out_dir: str | Path,
    name: str = "force",
    stm: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Point VRTs with bsrlc's STM band names at FORCE TSA STM outputs (nothing recomputed).

    Args:
        folder: the TSA output cube (``X####_Y####/`` folders, or a folder of STM files).
        out_dir: where the VRTs go (``{out_dir}/{name}_{label}.vrt``).
        name: VRT prefix.
        stm: the TSA parameter file's ``STM =`` list, for files whose bands have no names.

    Returns:
        label -> VRT. The label is the year range (``2018_2020``), plus the DOY range where it
        is not the whole year (``2018_2020_091-273``) and the FORCE sensor where a folder holds
        several (``2018_2020_LNDLG``).

    Raises:
        InputError: for a folder without TSA STM files, files on different grids or of another
            statistic layout than their period's others.
        ConfigError: for a bad ``stm`` list.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(
            f"{folder}: FORCE TSA folder not found; set scenes= to the TSA output cube"
        )
    groups: dict[tuple[str, str, str, str, str], list[_TsaFile]] = {}
    for p in sorted(folder.rglob("*_STM.*")):
        m = _TSA.match(p.name)
        if m is None:
            continue
        y0, y1, d0, d1, sensor, index = m.groups()[:6]
        with open_raster(p) as src:
            f = _TsaFile(
                p,
                p.parent.name,
                index.upper(),
                _tsa_stats(p, src.descriptions, stm),
                src.transform,
                (src.height, src.width),
                src.crs,
                src.dtypes[0],
                src.nodata,
            )
        groups.setdefault((y0, y1, d0, d1, sensor.upper()), []).append(f)
    if not groups:
        raise InputError(
            f"{folder}: no FORCE TSA STM files (YYYY-YYYY_DDD-DDD_HL_TSA_SENSOR_IDX_STM.tif); "
            "point scenes= at the TSA output cube (run TSA with OUTPUT_STM = TRUE)"
        )
    sensors_per_period: dict[tuple[str, ...], set[str]] = {}
    for y0, y1, d0, d1, sensor in groups:
        sensors_per_period.setdefault((y0, y1, d0, d1), set()).add(sensor)
    out: dict[str, Path] = {}
    for (y0, y1, d0, d1, sensor), files in sorted(groups.items()):
        label = f"{y0}_{y1}"
        if (d0, d1) != ("001", "365"):
            label += f"_{d0}-{d1}"
        if len(sensors_per_period[(y0, y1, d0, d1)]) > 1:
            label += f"_{sensor}"
        start = dt.date(int(y0), 1, 1) + dt.timedelta(days=int(d0) - 1)
        end = dt.date(int(y1), 1, 1) + dt.timedelta(days=min(int(d1), 365) - 1)
        tags = {
            "SENSOR": name,
            "SOURCE": "FORCE TSA STM",
            "FORCE_SENSOR": sensor,
            "START": start.isoformat(),
            "END": end.isoformat(),
            "SCALE": str(1 / OUT_SCALE),
            "NODATA_MEANING": "no clear observation (FORCE nodata -9999)",
        }
        out[label] = _write_tsa_vrt(files, Path(out_dir) / f"{name}_{label}.vrt", tags)
    return out


def _write_tsa_vrt(files: list[_TsaFile], out: Path, tags: dict[str, str]) -> Path:
    first = files[0]
    res = (first.transform.a, first.transform.e)
    for f in files[1:]:
        if f.crs != first.crs or (f.transform.a, f.transform.e) != res or f.dtype != first.dtype:
            raise InputError(
                f"{f.path}: not on the grid of {first.path} (CRS, pixel size or dtype differ); "
                "TSA outputs of one period must come from one cube"
            )
    layouts = {tuple(f.stats) for f in files}
    if len(layouts) > 1:
        raise InputError(
            f"{out}: the period's files have different statistics ({sorted(layouts)}); run TSA "
            "with one STM = list for the whole period"
        )
    stats = list(layouts.pop())
    order = {c: i for i, c in enumerate(TSA_ORDER)}
    indices = sorted({f.index for f in files}, key=lambda c: (order.get(c, len(order)), c))
    bands: list[tuple[str, str, int, float]] = []  # (description, index, 1-based band, scale)
    for idx in indices:
        for k, stat in enumerate(stats):
            if stat != "NUM":
                bands.append((tsa_band_name(idx, stat), idx, k + 1, 1 / OUT_SCALE))
    if "NUM" in stats:
        bands.append(("CLEAR_COUNT", indices[0], stats.index("NUM") + 1, 1.0))
    x0 = min(f.transform.c for f in files)
    y0 = max(f.transform.f for f in files)
    x1 = max(f.transform.c + f.shape[1] * res[0] for f in files)
    y1 = min(f.transform.f + f.shape[0] * res[1] for f in files)
    width, height = round((x1 - x0) / res[0]), round((y1 - y0) / res[1])
    gdal_type = {"int16": "Int16", "int32": "Int32", "float32": "Float32", "uint16": "UInt16"}.get(
        first.dtype, "Float32"
    )
    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    ET.SubElement(root, "SRS").text = first.crs.to_wkt()
    ET.SubElement(root, "GeoTransform").text = f"{x0!r}, {res[0]!r}, 0.0, {y0!r}, 0.0, {res[1]!r}"
    meta = ET.SubElement(root, "Metadata")
    metrics = [tsa_band_name("X", s)[2:].lower() for s in stats if s != "NUM"]
    tags = {
        **tags,
        "METRICS": ",".join(metrics),
        "INDICES": ",".join(TSA_INDEX.get(i, i) for i in indices),
        "N_TILES": str(len({f.tile for f in files})),
    }
    for key, value in tags.items():
        ET.SubElement(meta, "MDI", key=key).text = value
    out_dir = out.parent.resolve()
    for b, (desc, idx, src_band, scale) in enumerate(bands):
        band = ET.SubElement(root, "VRTRasterBand", dataType=gdal_type, band=str(b + 1))
        ET.SubElement(band, "Description").text = desc
        ET.SubElement(band, "NoDataValue").text = str(OUT_NODATA)
        ET.SubElement(band, "Offset").text = "0.0"
        ET.SubElement(band, "Scale").text = repr(float(scale))
        for f in (f for f in files if f.index == idx):
            src = ET.SubElement(band, "ComplexSource")
            rel = os.path.relpath(f.path.resolve(), out_dir)
            ET.SubElement(src, "SourceFilename", relativeToVRT="1").text = Path(rel).as_posix()
            ET.SubElement(src, "SourceBand").text = str(src_band)
            h, w = f.shape
            ET.SubElement(src, "SrcRect", xOff="0", yOff="0", xSize=str(w), ySize=str(h))
            xoff = round((f.transform.c - x0) / res[0])
            yoff = round((f.transform.f - y0) / res[1])
            ET.SubElement(
                src, "DstRect", xOff=str(xoff), yOff=str(yoff), xSize=str(w), ySize=str(h)
            )
            nod = f.nodata if f.nodata is not None else FORCE_NODATA
            if desc == "CLEAR_COUNT":  # FORCE's nodata (negative) -> 0 observations, as bsrlc
                ET.SubElement(src, "LUT").text = f"{min(nod, -1):g}:0,0:0,32767:32767"
            else:  # transparent: the pixel keeps the band's nodata, bsrlc's -32768
                ET.SubElement(src, "NODATA").text = f"{nod:g}"
    ET.indent(root)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        ET.ElementTree(root).write(tmp, encoding="utf-8")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("%s: %d bands over %d files (%s)", out, len(bands), len(files), ", ".join(indices))
    return out


__all__ = [
    "BOA_NAMES",
    "FORCE_NODATA",
    "FORCE_VALID_RANGE",
    "TSA_INDEX",
    "TSA_METRIC",
    "ForceCube",
    "adapt_tsa",
    "cube_grid",
    "discover_force",
    "tsa_band_name",
]
