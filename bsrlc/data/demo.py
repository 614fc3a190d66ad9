"""The demo world: a small, deterministic, realistic region with a known truth.

Nothing can be downloaded, so bsrlc generates the data its demo and tests run on. The world is a
piece of EPSG:3035 with a Sentinel-2-like 10 m grid and a Landsat-like 30 m grid nested in it
(each 30 m pixel covers exactly 3x3 10 m pixels). A town with houses and gardens, apartment
blocks, industrial roofs, streets, a railway and a highway grows over four periods (a suburb,
an industrial park, an airport that starts as a construction site). Around it lie fields with
crop phenology, grassland, forest, a lake and a river.

For every period the generator writes per-date 6-band scenes (int16 reflectance x 10000) with
clouds, cloud shadows and QA masks: Landsat-like scenes at 30 m every period (TM/ETM+/OLI gains
and offsets, point-spread blur, 3x3 area aggregation, noise, Landsat-7 SLC-off gaps after
2003-05-31, QA_PIXEL bits) and Sentinel-2-like scenes at 10 m in the latest period (SCL classes).
It also writes the 10 m truth maps, reference points per class (GeoPackage) and a spatially
held-out test block that no training step may see.

Run ``python -m bsrlc.data.demo size=demo out_dir=data/demo``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from scipy import ndimage

from bsrlc import BANDS

log = logging.getLogger(__name__)

CRS = "EPSG:3035"
SCALE = 3
REFLECTANCE_SCALE = 10000
SCENE_NODATA = -9999

# Detailed surface covers (what the spectra are made of) and the urban legend they map to.
FOREST, GRASS, CROP_A, CROP_B, WATER, BARE, GARDEN = 1, 2, 3, 4, 5, 6, 7
ROOF_RED, ROOF_GREY, ROOF_IND, ROAD, RAIL, OPEN_ART, CONSTRUCTION = 9, 10, 11, 12, 13, 14, 15
COVER_NAMES = {
    FOREST: "forest",
    GRASS: "grassland",
    CROP_A: "cereal",
    CROP_B: "maize",
    WATER: "water",
    BARE: "bare soil",
    GARDEN: "garden",
    ROOF_RED: "tiled roof",
    ROOF_GREY: "grey roof",
    ROOF_IND: "industrial roof",
    ROAD: "road",
    RAIL: "railway",
    OPEN_ART: "open artificial surface",
    CONSTRUCTION: "construction site",
}
RESIDENTIAL, INDUSTRIAL, OPEN_SPACE, NON_BUILT = 1, 2, 3, 4
URBAN_CLASSES = {
    RESIDENTIAL: "residential buildings",
    INDUSTRIAL: "industrial buildings",
    OPEN_SPACE: "artificial open spaces",
    NON_BUILT: "non built-up",
}
URBAN_COLOURS = {
    0: (0, 0, 0, 0),
    RESIDENTIAL: (230, 25, 75, 255),
    INDUSTRIAL: (145, 30, 180, 255),
    OPEN_SPACE: (128, 128, 128, 255),
    NON_BUILT: (190, 230, 160, 255),
}
COVER_TO_URBAN = np.full(16, NON_BUILT, dtype=np.uint8)
COVER_TO_URBAN[[ROOF_RED, ROOF_GREY]] = RESIDENTIAL
COVER_TO_URBAN[ROOF_IND] = INDUSTRIAL
COVER_TO_URBAN[[ROAD, RAIL, OPEN_ART, CONSTRUCTION]] = OPEN_SPACE
COVER_TO_URBAN[0] = 0

# Reflectance spectra (BLU, GRN, RED, NIR, SW1, SW2). Vegetation has an off-season and a peak
# spectrum mixed by a phenology curve; everything else is constant through the year.
_SPECTRA = {
    WATER: (0.060, 0.055, 0.035, 0.020, 0.012, 0.008),
    BARE: (0.100, 0.130, 0.170, 0.240, 0.320, 0.280),
    ROOF_RED: (0.080, 0.100, 0.170, 0.210, 0.270, 0.220),
    ROOF_GREY: (0.120, 0.130, 0.140, 0.170, 0.210, 0.200),
    ROOF_IND: (0.240, 0.260, 0.270, 0.290, 0.310, 0.270),
    ROAD: (0.060, 0.070, 0.080, 0.100, 0.130, 0.120),
    RAIL: (0.090, 0.100, 0.110, 0.150, 0.190, 0.170),
    OPEN_ART: (0.150, 0.170, 0.190, 0.230, 0.270, 0.240),
    CONSTRUCTION: (0.140, 0.170, 0.210, 0.270, 0.350, 0.310),
}
_VEG_OFF = (0.060, 0.080, 0.090, 0.200, 0.240, 0.170)
_VEG_PEAK = (0.030, 0.070, 0.035, 0.420, 0.200, 0.090)
_FOREST_OFF = (0.030, 0.045, 0.035, 0.220, 0.140, 0.070)
_FOREST_PEAK = (0.025, 0.050, 0.025, 0.330, 0.150, 0.065)
_SOIL = (0.080, 0.110, 0.150, 0.220, 0.300, 0.260)
# (peak day of year, width in days, minimum greenness) of each vegetated cover.
_PHENOLOGY = {
    FOREST: (180, 70, 0.2),
    GRASS: (150, 60, 0.3),
    GARDEN: (160, 70, 0.45),
    CROP_A: (165, 28, 0.0),
    CROP_B: (215, 30, 0.0),
}

# Landsat sensor models: per-band gain and offset relative to Sentinel-2 reflectance.
_LANDSAT_SENSORS = {
    "LT05": ((1.07, 1.03, 0.96, 1.03, 0.95, 0.99), (0.015, 0.008, 0.004, -0.004, 0.010, 0.006)),
    "LE07": ((1.06, 1.02, 0.97, 1.04, 0.96, 0.99), (0.013, 0.007, 0.004, -0.002, 0.010, 0.006)),
    "LC08": ((1.04, 1.02, 0.98, 1.05, 0.96, 0.97), (0.008, 0.006, 0.002, -0.006, 0.012, 0.008)),
}
SLC_FAILURE = dt.date(2003, 5, 31)


@dataclass(frozen=True)
class DemoSpec:
    """What to generate.

    Attributes:
        size: the 10 m grid is ``size x size`` pixels (a multiple of 3).
        periods: the years at the centre of each 3-year STM window.
        landsat_per_year: Landsat acquisitions per year.
        s2_per_year: Sentinel-2 acquisitions per year (latest period only).
        points_per_class: training reference points per class and period.
        test_points_per_class: held-out test points per class and period.
        seed: the random seed; the same spec always gives the same files.
        origin: (x, y) of the top-left corner in EPSG:3035, on the 30 m grid.
        block: the held-out test block as fractions (row0, col0, row1, col1) of the extent.
    """

    size: int
    periods: tuple[int, ...] = (2001, 2007, 2013, 2019)
    landsat_per_year: int = 5
    s2_per_year: int = 6
    points_per_class: int = 400
    test_points_per_class: int = 100
    seed: int = 42
    origin: tuple[float, float] = (5_250_000.0, 4_060_020.0)
    block: tuple[float, float, float, float] = (0.41, 0.53, 0.69, 0.81)


SIZES: dict[str, DemoSpec] = {
    "demo": DemoSpec(size=768),
    "tiny": DemoSpec(
        size=192, landsat_per_year=2, s2_per_year=3, points_per_class=60, test_points_per_class=20
    ),
}


@dataclass
class DemoWorld:
    """Paths and facts of a generated world (also written as ``world.json``).

    Attributes:
        root: the world's folder.
        spec: what was generated.
        crs: the CRS.
        transform_10m: the Sentinel-2-like grid's transform.
        transform_30m: the Landsat-like grid's transform.
        test_block_10m: held-out block in 10 m pixels (row0, col0, row1, col1), a multiple of 3.
        test_block_bounds: the same block in CRS coordinates (left, bottom, right, top).
        scenes: sensor -> list of scene files.
        truth: year -> truth map at 10 m.
        points: year -> reference point GeoPackage.
    """

    root: Path
    spec: DemoSpec
    crs: str
    transform_10m: tuple[float, ...]
    transform_30m: tuple[float, ...]
    test_block_10m: tuple[int, int, int, int]
    test_block_bounds: tuple[float, float, float, float]
    scenes: dict[str, list[str]] = field(default_factory=dict)
    truth: dict[int, str] = field(default_factory=dict)
    points: dict[int, str] = field(default_factory=dict)

    @classmethod
    def load(cls, root: str | Path) -> DemoWorld:
        """Read ``world.json`` of a generated world.

        Args:
            root: the world's folder.

        Returns:
            The world's description.
        """
        root = Path(root)
        raw = json.loads((root / "world.json").read_text())
        raw["root"] = root
        raw["spec"] = DemoSpec(
            **{  # type: ignore[arg-type]
                k: tuple(v) if isinstance(v, list) else v
                for k, v in raw["spec"].items()  # JSON lists back to tuples
            }
        )
        raw["truth"] = {int(k): v for k, v in raw["truth"].items()}
        raw["points"] = {int(k): v for k, v in raw["points"].items()}
        for key in ("transform_10m", "transform_30m", "test_block_10m", "test_block_bounds"):
            raw[key] = tuple(raw[key])
        return cls(**raw)

    def construction_site(self) -> tuple[str, tuple[slice, slice]] | None:
        """The airport's construction site: the period it is under construction, and its pixels.

        Returns:
            (period label, (rows, cols) of the 10 m grid), or None when no period falls between
            the start of construction and the finished airport.
        """
        first, last = self.spec.periods[0], self.spec.periods[-1]
        start = first + round(0.6 * max(last - first, 1))
        during = [p for p in self.spec.periods if start <= p < last]
        if not during:
            return None
        return str(during[0]), _box(self.spec.size, AIRPORT_BOX)

    def to_json(self) -> str:
        """Serialise, with paths relative to the world's folder.

        Returns:
            JSON text.
        """
        data = asdict(self)
        data.pop("root")
        return json.dumps(data, indent=2, default=str)


# ----------------------------------------------------------------------------------------------
# Landscape and town
# ----------------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    """Zero-mean, unit-variance noise with features about ``scale`` pixels across."""
    coarse = max(4, round(n / scale) + 3)
    field_ = rng.standard_normal((coarse, coarse))
    out = ndimage.zoom(field_, n / (coarse - 3), order=3)[:n, :n]
    out = np.asarray(out, dtype=np.float32)
    return (out - out.mean()) / (out.std() + 1e-6)


def _line_mask(
    n: int, p0: tuple[float, float], p1: tuple[float, float], width: float
) -> np.ndarray:
    """Pixels within ``width/2`` of the line through p0 and p1 (fractions of the extent)."""
    rr, cc = np.mgrid[0:n, 0:n].astype(np.float32) + 0.5
    r0, c0 = p0[0] * n, p0[1] * n
    r1, c1 = p1[0] * n, p1[1] * n
    dr, dc = r1 - r0, c1 - c0
    norm = math.hypot(dr, dc)
    dist = np.abs((rr - r0) * dc - (cc - c0) * dr) / norm
    return dist < width / 2


AIRPORT_BOX = (0.74, 0.42, 0.94, 0.95)  # the airport: a construction site first, then built


def _box(n: int, box: tuple[float, float, float, float]) -> tuple[slice, slice]:
    """A (rows, cols) slice for a box given as fractions (row0, col0, row1, col1)."""
    r0, c0, r1, c1 = (round(v * n) for v in box)
    return slice(r0, r1), slice(c0, c1)


def _base_landscape(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Fields, grassland, forest, a lake and a river; returns (cover, parcel id)."""
    from scipy.spatial import cKDTree

    n_parcels = max(12, (n // 45) ** 2)
    seeds = rng.uniform(0, n, size=(n_parcels, 2))
    rr, cc = np.mgrid[0:n, 0:n]
    _, parcel = cKDTree(seeds).query(np.stack([rr.ravel(), cc.ravel()], axis=1) + 0.5)
    parcel = parcel.reshape(n, n).astype(np.int32)
    kinds = rng.choice(
        [FOREST, GRASS, CROP_A, CROP_B, BARE], size=n_parcels, p=[0.25, 0.25, 0.25, 0.2, 0.05]
    )
    cover = kinds[parcel].astype(np.uint8)
    forest = _smooth_noise(rng, n, n / 6) > 1.0
    cover[forest] = FOREST
    # A lake and a meandering river.
    lake = ((rr - 0.82 * n) / (0.09 * n)) ** 2 + ((cc - 0.14 * n) / (0.12 * n)) ** 2 < 1
    cover[lake] = WATER
    t = np.linspace(0, 1, 4 * n)
    river_r = (0.05 + 0.9 * t) * n
    river_c = (0.03 + 0.12 * np.sin(6.0 * t) + 0.05 * t) * n
    river = np.zeros((n, n), dtype=bool)
    width = max(2, n // 150)
    for r, c in zip(river_r.astype(int), river_c.astype(int), strict=True):
        if 0 <= r < n and 0 <= c < n:
            river[max(r - width, 0) : r + width, max(c - width, 0) : c + width] = True
    cover[river] = WATER
    return cover, parcel


def _houses(
    rng: np.random.Generator, cover: np.ndarray, region: tuple[slice, slice], density: float
) -> None:
    """A residential district: 1-pixel streets every 13 px, 2x2 houses in gardens between."""
    sub = cover[region]
    h, w = sub.shape
    sub[:] = GARDEN
    rr, cc = np.mgrid[0:h, 0:w]
    streets = (rr % 13 == 0) | (cc % 13 == 0)
    # Houses: 2x2 (20 m) on a 4-pixel lattice inside each block, some plots left empty.
    lot_r, lot_c = (rr % 13 - 1) // 4, (cc % 13 - 1) // 4
    in_house = ((rr % 13 - 1) % 4 >= 1) & ((rr % 13 - 1) % 4 <= 2)
    in_house &= ((cc % 13 - 1) % 4 >= 1) & ((cc % 13 - 1) % 4 <= 2)
    in_house &= (rr % 13 >= 1) & (cc % 13 >= 1) & (lot_r < 3) & (lot_c < 3)
    plot_id = (rr // 4) * 1000 + cc // 4
    keep = rng.random(int(plot_id.max()) + 1) < density
    roof_kind = np.where(rng.random(int(plot_id.max()) + 1) < 0.6, ROOF_RED, ROOF_GREY)
    houses = in_house & keep[plot_id] & ~streets
    sub[houses] = roof_kind[plot_id][houses]
    sub[streets] = ROAD


def _apartments(rng: np.random.Generator, cover: np.ndarray, region: tuple[slice, slice]) -> None:
    """A dense centre: 2-pixel avenues every 20 px, blocks of flats around courtyards."""
    sub = cover[region]
    h, w = sub.shape
    rr, cc = np.mgrid[0:h, 0:w]
    sub[:] = OPEN_ART
    br, bc = rr % 20, cc % 20
    ring = ((br >= 3) & (br <= 17) & (bc >= 3) & (bc <= 17)) & ~(
        (br >= 6) & (br <= 14) & (bc >= 6) & (bc <= 14)
    )
    courtyard = (br >= 7) & (br <= 13) & (bc >= 7) & (bc <= 13)
    sub[courtyard] = GARDEN
    block_id = (rr // 20) * 1000 + cc // 20
    kinds = np.where(rng.random(int(block_id.max()) + 1) < 0.5, ROOF_RED, ROOF_GREY)
    sub[ring] = kinds[block_id][ring]
    sub[(br < 2) | (bc < 2)] = ROAD


def _industry(rng: np.random.Generator, cover: np.ndarray, region: tuple[slice, slice]) -> None:
    """Large roofs on yards and car parks, separated by 2-pixel roads."""
    sub = cover[region]
    h, w = sub.shape
    sub[:] = OPEN_ART
    rr, cc = np.mgrid[0:h, 0:w]
    sub[(rr % 30 < 2) | (cc % 36 < 2)] = ROAD
    for r0 in range(2, h - 4, 30):
        for c0 in range(2, w - 4, 36):
            bh = int(rng.integers(8, 24))
            bw = int(rng.integers(10, 30))
            dr = int(rng.integers(1, max(2, 28 - bh)))
            dc = int(rng.integers(1, max(2, 34 - bw)))
            sub[r0 + dr : min(r0 + dr + bh, h), c0 + dc : min(c0 + dc + bw, w)] = ROOF_IND
            # A lawn strip along some plots keeps industrial areas from being uniform.
            if rng.random() < 0.4:
                sub[r0 + 26 : min(r0 + 28, h), c0 + 2 : min(c0 + 34, w)] = GRASS


def _airport(cover: np.ndarray, region: tuple[slice, slice], built: bool) -> None:
    """A construction site, then runway, taxiway, aprons and a terminal."""
    sub = cover[region]
    h, w = sub.shape
    if not built:
        sub[:] = CONSTRUCTION
        sub[h // 2 - 3 : h // 2 + 3, :] = BARE
        return
    sub[:] = GRASS
    sub[h // 2 - 3 : h // 2 + 3, w // 20 : w - w // 20] = OPEN_ART  # runway, 60 m
    sub[h // 2 + 10 : h // 2 + 12, w // 10 : w - w // 10] = OPEN_ART  # taxiway
    sub[h // 2 + 12 : h // 2 + 30, w // 3 : 2 * w // 3] = OPEN_ART  # apron
    sub[h // 2 + 30 : h // 2 + 42, w // 3 + 6 : 2 * w // 3 - 6] = ROOF_IND  # terminal
    sub[h // 2 + 42 : h // 2 + 44, :] = ROAD


def landscape(spec: DemoSpec) -> dict[int, np.ndarray]:
    """Generate the 10 m cover map of every period.

    Args:
        spec: what to generate.

    Returns:
        year -> (size, size) uint8 cover codes.
    """
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 1]))
    n = spec.size
    base, parcel = _base_landscape(rng, n)
    p_first = spec.periods[0]
    p_last = spec.periods[-1]
    span = max(p_last - p_first, 1)

    def at(frac: float) -> int:
        return p_first + round(frac * span)

    # Each development: (year it exists from, drawing function). Years are placed relative to
    # the periods so that growth happens between them whatever periods are configured.
    steps: list[tuple[int, Callable[[np.ndarray, np.random.Generator], None]]] = [
        (p_first, lambda c, g: _houses(g, c, _box(n, (0.22, 0.18, 0.58, 0.52)), 0.85)),
        (p_first, lambda c, g: _apartments(g, c, _box(n, (0.30, 0.26, 0.48, 0.44)))),
        (p_first, lambda c, g: _industry(g, c, _box(n, (0.10, 0.20, 0.21, 0.50)))),
        (p_first, lambda c, g: _industry(g, c, _box(n, (0.58, 0.64, 0.67, 0.78)))),
        (p_first, lambda c, g: _houses(g, c, _box(n, (0.43, 0.55, 0.56, 0.62)), 0.8)),
        (at(0.3), lambda c, g: _houses(g, c, _box(n, (0.30, 0.62, 0.56, 0.80)), 0.9)),
        (at(0.6), lambda c, g: _industry(g, c, _box(n, (0.04, 0.56, 0.19, 0.82)))),
        (at(0.6), lambda c, g: _airport(c, _box(n, AIRPORT_BOX), built=False)),
        (p_last, lambda c, g: _airport(c, _box(n, AIRPORT_BOX), built=True)),
        (at(0.9), lambda c, g: _houses(g, c, _box(n, (0.60, 0.12, 0.70, 0.38)), 0.9)),
    ]
    lines = [
        (p_first, (0.0, 0.08), (1.0, 0.70), 2.0, RAIL),  # railway, 20 m
        (p_first, (0.40, 0.0), (0.36, 1.0), 2.0, ROAD),  # highway, 20 m
        (p_first, (0.0, 0.48), (1.0, 0.52), 1.0, ROAD),  # country road, 10 m
        (at(0.3), (0.20, 0.60), (0.62, 0.86), 1.0, ROAD),  # suburb connection
        (at(0.6), (0.62, 0.30), (0.74, 0.70), 2.0, ROAD),  # airport road
        (at(0.9), (0.55, 0.0), (0.70, 0.45), 1.0, ROAD),  # new district road
    ]
    out: dict[int, np.ndarray] = {}
    for year in spec.periods:
        cover = base.copy()
        # Crop rotation: each period, some fields swap crop type.
        rot = np.random.default_rng(np.random.SeedSequence([spec.seed, 2, year]))
        swap = rot.random(int(parcel.max()) + 1) < 0.5
        crops = np.isin(cover, [CROP_A, CROP_B]) & swap[parcel]
        cover[crops] = np.where(cover[crops] == CROP_A, CROP_B, CROP_A)
        for k, (since, draw) in enumerate(steps):
            if year >= since:
                draw(cover, np.random.default_rng(np.random.SeedSequence([spec.seed, 3, k])))
        for since, p0, p1, width, kind in lines:
            if year >= since:
                cover[_line_mask(n, p0, p1, width)] = kind
        out[year] = cover
    return out


# ----------------------------------------------------------------------------------------------
# Spectra and sensors
# ----------------------------------------------------------------------------------------------


def _greenness(cover_kind: int, doy: float) -> float:
    peak, width, floor = _PHENOLOGY[cover_kind]
    return floor + (1 - floor) * math.exp(-0.5 * ((doy - peak) / width) ** 2)


def spectra_table(doy: float) -> np.ndarray:
    """Reflectance of every cover on a day of the year.

    Args:
        doy: day of the year.

    Returns:
        (16, 6) float32 table indexed by cover code.
    """
    table = np.zeros((16, len(BANDS)), dtype=np.float32)
    for code, spec in _SPECTRA.items():
        table[code] = spec
    veg_off, veg_peak = np.array(_VEG_OFF), np.array(_VEG_PEAK)
    for code in (GRASS, GARDEN):
        g = _greenness(code, doy)
        table[code] = (1 - g) * veg_off + g * veg_peak
    for code in (CROP_A, CROP_B):
        g = _greenness(code, doy)
        table[code] = (1 - g) * np.array(_SOIL) + g * veg_peak
    g = _greenness(FOREST, doy)
    table[FOREST] = (1 - g) * np.array(_FOREST_OFF) + g * np.array(_FOREST_PEAK)
    return table


def _surface(
    cover: np.ndarray, doy: float, variation: np.ndarray, band_jitter: np.ndarray
) -> np.ndarray:
    """(6, n, n) surface reflectance on a day: cover spectra times within-class variation."""
    table = spectra_table(doy)
    refl = table[cover]  # (n, n, 6)
    refl = np.moveaxis(refl, -1, 0) * variation[None] * band_jitter
    return refl.astype(np.float32)


def _clouds(
    rng: np.random.Generator, n: int, feature_px: float, shadow_shift: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cloud and shadow masks and a cloud opacity field for one date."""
    cover_frac = rng.choice([0.0, 0.05, 0.2, 0.4, 0.6], p=[0.25, 0.25, 0.25, 0.15, 0.1])
    noise = _smooth_noise(rng, n, feature_px)
    if cover_frac == 0:
        empty = np.zeros((n, n), dtype=bool)
        return empty, empty, np.zeros((n, n), np.float32)
    thr = np.quantile(noise, 1 - cover_frac)
    cloud = noise > thr
    opacity = np.clip((noise - thr) / 0.5, 0.3, 1.0).astype(np.float32) * cloud
    shadow = np.roll(cloud, (shadow_shift, shadow_shift * 2 // 3), axis=(0, 1)) & ~cloud
    return cloud, shadow, opacity


def _apply_clouds(
    refl: np.ndarray, cloud: np.ndarray, shadow: np.ndarray, opacity: np.ndarray
) -> np.ndarray:
    bright = np.array([0.45, 0.44, 0.45, 0.48, 0.35, 0.25], dtype=np.float32)[:, None, None]
    out = refl * (1 - opacity) + bright * opacity
    return np.where(shadow[None], out * 0.35, out)


def _to_int16(refl: np.ndarray) -> np.ndarray:
    return np.clip(np.round(refl * REFLECTANCE_SCALE), -2000, 16000).astype(np.int16)


def _landsat_sensor(date: dt.date, index: int) -> str:
    """Which Landsat flies on a date (alternating where two were in orbit)."""
    if date.year >= 2013:
        return "LC08" if index % 2 == 0 else "LE07"
    if date.year == 2012:
        return "LE07"
    return "LT05" if index % 2 == 0 else "LE07"


def _slc_gaps(rng: np.random.Generator, n: int) -> np.ndarray:
    """Landsat-7 SLC-off stripes: ~2-pixel gaps every ~12 pixels along the scan direction."""
    rr, cc = np.mgrid[0:n, 0:n].astype(np.float32)
    theta = math.radians(8.0)
    u = rr * math.cos(theta) + cc * math.sin(theta) + rng.uniform(0, 12)
    return np.mod(u, 12.3) < 2.0


def _dates(rng: np.random.Generator, year: int, per_year: int) -> list[dt.date]:
    doys = np.sort(rng.choice(np.arange(90, 300), size=per_year, replace=False))
    return [dt.date(year, 1, 1) + dt.timedelta(days=int(d) - 1) for d in doys]


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def _write(
    path: Path,
    array: np.ndarray,
    transform: Affine,
    nodata: float | None,
    descriptions: tuple[str, ...] | None = None,
    tags: dict[str, str] | None = None,
    colormap: dict[int, tuple[int, int, int, int]] | None = None,
) -> None:
    if array.ndim == 2:
        array = array[None]
    count, h, w = array.shape
    block = 256 if min(h, w) >= 256 else 64
    profile = {
        "driver": "GTiff",
        "width": w,
        "height": h,
        "count": count,
        "dtype": array.dtype.name,
        "crs": CRS,
        "transform": transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "compress": "DEFLATE",
        "predictor": 2 if array.dtype.kind in "iu" else 1,
    }
    with rasterio.open(path, "w", **profile) as dst:
        if colormap:  # before the pixels: GDAL fixes the photometric tag at the first write
            dst.write_colormap(1, colormap)
        dst.write(array)
        if descriptions:
            for i, d in enumerate(descriptions, start=1):
                dst.set_band_description(i, d)
        if tags:
            dst.update_tags(**tags)


def _sample_points(
    rng: np.random.Generator,
    truth: np.ndarray,
    allowed: np.ndarray,
    per_class: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified random pixels per class among ``allowed``: (rows, cols, classes)."""
    rows, cols, classes = [], [], []
    for code in URBAN_CLASSES:
        r, c = np.nonzero((truth == code) & allowed)
        if r.size == 0:
            continue
        pick = rng.choice(r.size, size=min(per_class, r.size), replace=False)
        rows.append(r[pick])
        cols.append(c[pick])
        classes.append(np.full(pick.size, code, dtype=np.uint8))
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(classes)


def _readme(world: DemoWorld, n_scenes: dict[str, int], counts: dict[int, dict[str, str]]) -> str:
    s = world.spec
    lines = [
        f"# bsrlc demo world ({s.size} x {s.size} px at 10 m, seed {s.seed})",
        "",
        "Generated by `python -m bsrlc.data.demo`; deterministic for a given size and seed.",
        "",
        f"- CRS {world.crs}; 10 m grid origin {world.transform_10m[2]:.0f}, "
        f"{world.transform_10m[5]:.0f}; the 30 m grid shares the origin, so every 30 m pixel "
        "covers exactly 3 x 3 10 m pixels.",
        f"- Periods {', '.join(map(str, s.periods))}: each a 3-year window (year-1 .. year+1).",
        f"- `scenes/landsat/`: {n_scenes['landsat']} Landsat-like scenes at 30 m, "
        "`{LT05,LE07,LC08}_YYYYMMDD.tif` (6 bands BLU GRN RED NIR SW1 SW2, int16 reflectance "
        "x 10000, nodata -9999) with `_QA_PIXEL.tif` masks (Collection 2 bits: 0 fill, 1 dilated "
        "cloud, 3 cloud, 4 shadow, 6 clear, 7 water). LE07 scenes after 2003-05-31 have SLC-off "
        "gaps (fill). The sensor model differs from Sentinel-2: per-band gain/offset, PSF blur, "
        "3x3 area aggregation and noise.",
        f"- `scenes/sentinel2/`: {n_scenes['sentinel2']} Sentinel-2-like scenes at 10 m in the "
        f"latest period only, `S2A_YYYYMMDD.tif` with `_SCL.tif` scene classification masks.",
        "- `truth/truth_YYYY.tif`: 10 m class maps (1 residential buildings, 2 industrial "
        "buildings, 3 artificial open spaces, 4 non built-up; colour table); "
        "`truth/cover_YYYY.tif`: the detailed surface covers behind them.",
        "- `points/points_YYYY.gpkg`: reference points (`class`, `split` = train/test, `year`) "
        "at 10 m pixel centres, stratified by class; `test` points lie in the held-out block, "
        "`train` points outside it and at least 12 px (120 m) away from it.",
        f"- `regions.geojson`: the held-out test block, rows/cols {world.test_block_10m} of the "
        f"10 m grid, bounds {tuple(round(v) for v in world.test_block_bounds)}. No training "
        "step may read pixels inside it.",
        "- `world.json`: all of the above, machine-readable.",
        "",
        "Reference points per period and class (train / test):",
        "",
    ]
    for year, per in counts.items():
        lines.append(f"- {year}: " + ", ".join(f"{k}: {v}" for k, v in per.items()))
    return "\n".join(lines) + "\n"


def generate(
    size: str | DemoSpec, out_dir: str | Path, overwrite: bool = False, seed: int | None = None
) -> DemoWorld:
    """Generate the demo world into ``out_dir`` (atomically: a folder appears whole or not at all).

    Args:
        size: ``"demo"``, ``"tiny"`` or a :class:`DemoSpec`.
        out_dir: destination folder.
        overwrite: replace an existing world; otherwise an existing complete world is reused.
        seed: override the spec's seed.

    Returns:
        The generated world's description.

    Raises:
        ValueError: for an unknown size name.
    """
    import geopandas as gpd
    from shapely.geometry import box as shp_box

    logging.getLogger("pyogrio").setLevel(logging.WARNING)

    if isinstance(size, str):
        if size not in SIZES:
            raise ValueError(f"unknown demo size {size!r}; choose one of {', '.join(SIZES)}")
        spec = SIZES[size]
    else:
        spec = size
    if seed is not None:
        spec = DemoSpec(**{**asdict(spec), "seed": seed})
    out_dir = Path(out_dir)
    if (out_dir / "world.json").exists() and not overwrite:
        world = DemoWorld.load(out_dir)
        if world.spec == spec:
            log.info("demo world already in %s (pass overwrite=true to regenerate)", out_dir)
            return world
    t0 = time.perf_counter()
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("scenes/landsat", "scenes/sentinel2", "truth", "points"):
        (tmp / sub).mkdir(parents=True)

    n = spec.size
    if n % SCALE:
        raise ValueError(f"demo size {n} is not a multiple of {SCALE}")
    x0, y0 = spec.origin
    t10 = Affine(10.0, 0.0, x0, 0.0, -10.0, y0)
    t30 = Affine(30.0, 0.0, x0, 0.0, -30.0, y0)
    br0, bc0, br1, bc1 = (SCALE * round(f * n / SCALE) for f in spec.block)
    bounds = (x0 + bc0 * 10.0, y0 - br1 * 10.0, x0 + bc1 * 10.0, y0 - br0 * 10.0)
    world = DemoWorld(
        root=out_dir,
        spec=spec,
        crs=CRS,
        transform_10m=tuple(t10)[:6],
        transform_30m=tuple(t30)[:6],
        test_block_10m=(br0, bc0, br1, bc1),
        test_block_bounds=bounds,
    )

    covers = landscape(spec)
    rng_var = np.random.default_rng(np.random.SeedSequence([spec.seed, 4]))
    # Within-class variation, fixed in time: smooth (soil, canopy density) and per-pixel.
    variation = (
        1.0
        + 0.06 * _smooth_noise(rng_var, n, 6)
        + 0.035 * rng_var.standard_normal((n, n)).astype(np.float32)
    ).astype(np.float32)
    blur_sigma = 1.4  # Landsat point-spread function, in 10 m pixels, before 3x3 aggregation

    # Truth maps and reference points.
    counts: dict[int, dict[str, str]] = {}
    block_mask = np.zeros((n, n), dtype=bool)
    block_mask[br0:br1, bc0:bc1] = True
    buffer = 12
    near_block = np.zeros((n, n), dtype=bool)
    near_block[max(br0 - buffer, 0) : br1 + buffer, max(bc0 - buffer, 0) : bc1 + buffer] = True
    for year, cover in covers.items():
        truth = COVER_TO_URBAN[cover]
        _write(tmp / f"truth/truth_{year}.tif", truth, t10, 0, ("CLASS",), colormap=URBAN_COLOURS)
        _write(tmp / f"truth/cover_{year}.tif", cover, t10, 0, ("COVER",))
        world.truth[year] = f"truth/truth_{year}.tif"
        rng_pts = np.random.default_rng(np.random.SeedSequence([spec.seed, 5, year]))
        edge = np.zeros((n, n), dtype=bool)
        edge[8:-8, 8:-8] = True  # keep points a patch away from the raster border
        r_tr, c_tr, k_tr = _sample_points(rng_pts, truth, edge & ~near_block, spec.points_per_class)
        r_te, c_te, k_te = _sample_points(
            rng_pts, truth, edge & block_mask, spec.test_points_per_class
        )
        rows = np.concatenate([r_tr, r_te])
        cols = np.concatenate([c_tr, c_te])
        xs = x0 + (cols + 0.5) * 10.0
        ys = y0 - (rows + 0.5) * 10.0
        gdf = gpd.GeoDataFrame(
            {
                "class": np.concatenate([k_tr, k_te]).astype(np.int32),
                "class_name": [URBAN_CLASSES[int(k)] for k in np.concatenate([k_tr, k_te])],
                "split": ["train"] * len(r_tr) + ["test"] * len(r_te),
                "year": np.full(rows.size, year, dtype=np.int32),
            },
            geometry=gpd.points_from_xy(xs, ys),
            crs=CRS,
        )
        gdf.to_file(tmp / f"points/points_{year}.gpkg", driver="GPKG", layer="points")
        world.points[year] = f"points/points_{year}.gpkg"
        counts[year] = {
            URBAN_CLASSES[k]: f"{int((k_tr == k).sum())} / {int((k_te == k).sum())}"
            for k in URBAN_CLASSES
        }
    gpd.GeoDataFrame(
        {"name": ["test_block"], "split": ["test"]}, geometry=[shp_box(*bounds)], crs=CRS
    ).to_file(tmp / "regions.geojson", driver="GeoJSON")

    # Scenes.
    world.scenes = {"landsat": [], "sentinel2": []}
    n30 = n // SCALE
    for year in spec.periods:
        cover = covers[year]
        for sensor_kind in ("landsat", "sentinel2"):
            if sensor_kind == "sentinel2" and year != spec.periods[-1]:
                continue
            per_year = spec.landsat_per_year if sensor_kind == "landsat" else spec.s2_per_year
            rng = np.random.default_rng(
                np.random.SeedSequence([spec.seed, 6, year, int(sensor_kind == "landsat")])
            )
            dates = [d for y in (year - 1, year, year + 1) for d in _dates(rng, y, per_year)]
            for i, date in enumerate(dates):
                doy = date.timetuple().tm_yday
                jitter = (1 + 0.015 * rng.standard_normal(6)).astype(np.float32)[:, None, None]
                refl = _surface(cover, doy, variation, jitter)
                stamp = date.strftime("%Y%m%d")
                if sensor_kind == "sentinel2":
                    refl = refl + 0.004 * rng.standard_normal(refl.shape).astype(np.float32)
                    cloud, shadow, opacity = _clouds(rng, n, n / 5, 10)
                    refl = _apply_clouds(refl, cloud, shadow, opacity)
                    ndvi = (refl[3] - refl[2]) / (refl[3] + refl[2] + 1e-6)
                    scl = np.where(ndvi > 0.3, 4, 5).astype(np.uint8)
                    scl[cover == WATER] = 6
                    scl[shadow] = 3
                    scl[cloud] = np.where(opacity[cloud] > 0.6, 9, 8)
                    name = f"S2A_{stamp}"
                    _write(
                        tmp / f"scenes/sentinel2/{name}.tif",
                        _to_int16(refl),
                        t10,
                        SCENE_NODATA,
                        BANDS,
                        {"SENSOR": "S2A", "DATE": date.isoformat()},
                    )
                    _write(tmp / f"scenes/sentinel2/{name}_SCL.tif", scl, t10, None, ("SCL",))
                    world.scenes["sentinel2"].append(f"scenes/sentinel2/{name}.tif")
                    continue
                sensor = _landsat_sensor(date, i)
                gain, offset = (
                    np.asarray(v, np.float32)[:, None, None] for v in _LANDSAT_SENSORS[sensor]
                )
                blurred = ndimage.gaussian_filter(refl, sigma=(0, blur_sigma, blur_sigma))
                lr = blurred.reshape(6, n30, SCALE, n30, SCALE).mean(axis=(2, 4))
                lr = gain * lr + offset + 0.006 * rng.standard_normal(lr.shape).astype(np.float32)
                cloud, shadow, opacity = _clouds(rng, n30, n30 / 5, 4)
                lr = _apply_clouds(lr, cloud, shadow, opacity)
                qa = np.full((n30, n30), 1 << 6, dtype=np.uint16)  # clear
                water30 = (cover == WATER).reshape(n30, SCALE, n30, SCALE).mean(axis=(1, 3)) > 0.5
                qa[water30] |= 1 << 7
                qa[shadow] = 1 << 4
                qa[cloud] = (1 << 3) | (1 << 1)
                dn = _to_int16(lr)
                if sensor == "LE07" and date > SLC_FAILURE:
                    gaps = _slc_gaps(rng, n30)
                    dn[:, gaps] = SCENE_NODATA
                    qa[gaps] = 1
                name = f"{sensor}_{stamp}"
                _write(
                    tmp / f"scenes/landsat/{name}.tif",
                    dn,
                    t30,
                    SCENE_NODATA,
                    BANDS,
                    {"SENSOR": sensor, "DATE": date.isoformat()},
                )
                _write(tmp / f"scenes/landsat/{name}_QA_PIXEL.tif", qa, t30, None, ("QA_PIXEL",))
                world.scenes["landsat"].append(f"scenes/landsat/{name}.tif")

    n_scenes = {k: len(v) for k, v in world.scenes.items()}
    (tmp / "world.json").write_text(world.to_json())
    (tmp / "README").write_text(_readme(world, n_scenes, counts))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    log.info(
        "demo world %s (%dx%d px, %d Landsat + %d Sentinel-2 scenes) in %.1f s -> %s",
        "custom" if isinstance(size, DemoSpec) else size,
        n,
        n,
        n_scenes["landsat"],
        n_scenes["sentinel2"],
        time.perf_counter() - t0,
        out_dir,
    )
    return world


def _main() -> None:
    from omegaconf import DictConfig

    from bsrlc.cli import hydra_entry
    from bsrlc.config import conf_dir

    @hydra_entry(config_path=conf_dir(), config_name="demo_world")
    def main(cfg: DictConfig) -> None:
        from bsrlc.errors import ConfigError

        if cfg.size not in SIZES:
            raise ConfigError(f"size={cfg.size}: unknown demo size; use one of {', '.join(SIZES)}")
        generate(cfg.size, cfg.out_dir, overwrite=bool(cfg.overwrite), seed=cfg.seed)

    main()


if __name__ == "__main__":
    _main()
