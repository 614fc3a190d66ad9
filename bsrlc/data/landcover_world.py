"""The land-cover demo world: annual truth of a crop / grassland / forest / peat-bog landscape.

A second generated world, next to the urban one of :mod:`bsrlc.data.demo`, for annual land-cover
mapping from time series (BSRLC+ style). It lives on the 30 m grid only (EPSG:3035) and spans
several years, each with its own truth:

- **Fields** (Voronoi parcels) with a crop per year from rotation rules: winter wheat, winter
  barley and spring barley (*cereals*), rapeseed, maize, sugar beet and potato (*root crops*).
  Each crop has its own calendar (sowing, green-up, senescence, harvest; rapeseed flowers
  yellow in May), shifted per field and year by up to two weeks and per year by the weather.
  Winter crops show as young green in the autumn before their year, some spring crops follow a
  catch crop; winter cover and harvest dates vary per field.
- **Grassland** mown two to four times a year (one late cut for extensive meadows) on each
  parcel's own dates; **broadleaf** (leaf-on / leaf-off, autumn colour) and **coniferous** forest;
  **water** (lake, river, pond); reed **marsh** flooded in spring; **bare land** (quarry, sand
  pit); a village and a hamlet (**artificial surfaces**).
- A **raised bog**: intact parts (wet moss, spring flooding, a low late NIR peak), drained parts
  (drier peat, heath and birch with a stronger summer peak) and a peat-extraction field (bare
  peat). One intact parcel is drained in a middle year, one drained parcel is rewetted (restored)
  in a late year (``events`` in ``world.json``).

The classes differ by *when* things happen more than by any single-date or annual-median
spectrum: the crops share one green-canopy and one soil spectrum and differ in their calendars.

Observations follow the satellite eras: in years before ``s2_from`` only Landsat-like scenes
(TM/ETM+/OLI gains and offsets, Landsat-7 SLC-off gaps after 2003-05-31, clouds and shadows with
QA_PIXEL bits; ~10 clear dates per pixel), from ``s2_from`` on also dense Sentinel-2-like scenes
(5-day revisit, SCL masks; ~50 clear dates per pixel). Clouds are more frequent in winter and a
thin haze at cloud edges is not flagged, as with real masks. All scenes are int16 reflectance
x 10000 on the same 30 m grid, named like the urban world's (``conf/sensor/demo_landsat.yaml``,
``demo_sentinel2.yaml``), so ``python -m bsrlc.stm`` and ``python -m bsrlc.timeseries`` read them.

Truth per year (``truth/truth_YYYY.tif``, codes of :data:`CLASSES`, written to ``legend.yaml``)
and the detailed cover behind it (``truth/cover_YYYY.tif``), reference points per year
(``points/points_YYYY.gpkg``: ``class``, ``class_name``, ``cover``, ``split``, ``year``), stratified
by class, ``test`` points in the held-out block of ``regions.geojson`` and ``train`` points at
least ``buffer_px`` away from it.

Run ``python -m bsrlc.data.landcover_world size=demo out_dir=data/landcover_demo``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from affine import Affine
from scipy import ndimage

from bsrlc import BANDS
from bsrlc.data.demo import (
    _LANDSAT_SENSORS,
    CRS,
    SCENE_NODATA,
    SLC_FAILURE,
    _slc_gaps,
    _smooth_noise,
    _to_int16,
    _write,
)

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------
# Legend: the codes of conf/legend/landcover.yaml, plus 14 for drained / extracted peat bog.
# ----------------------------------------------------------------------------------------------

ARTIFICIAL, CEREALS, RAPESEED, MAIZE, ROOT_CROPS, GRASSLAND = 1, 2, 3, 4, 5, 6
BROADLEAF, CONIFEROUS, BOG_INTACT, WETLAND, WATER, BARE, BOG_DRAINED = 7, 8, 10, 11, 12, 13, 14
CLASSES: dict[int, tuple[str, str]] = {
    ARTIFICIAL: ("artificial surfaces", "#e6194b"),
    CEREALS: ("cereals", "#ffe119"),
    RAPESEED: ("rapeseed", "#f0e442"),
    MAIZE: ("maize", "#f58231"),
    ROOT_CROPS: ("root crops", "#aa6e28"),
    GRASSLAND: ("grassland", "#bfef45"),
    BROADLEAF: ("broadleaf forest", "#3cb44b"),
    CONIFEROUS: ("coniferous forest", "#1b5e20"),
    BOG_INTACT: ("intact peat bog", "#8c564b"),
    WETLAND: ("other wetland", "#46f0f0"),
    WATER: ("water", "#4363d8"),
    BARE: ("bare land", "#d2b48c"),
    BOG_DRAINED: ("drained or extracted peat bog", "#5c3317"),
}
"""code -> (name, colour) of the world's legend (``legend.yaml`` in the world's folder)."""
CROP_CLASSES = (CEREALS, RAPESEED, MAIZE, ROOT_CROPS)

# Detailed covers (what the spectra and calendars are made of).
(
    C_BUILT,
    C_WHEAT,
    C_BARLEY,
    C_RAPE,
    C_MAIZE,
    C_BEET,
    C_GRASS,
    C_BROADLEAF,
    C_CONIFER,
    C_BOG,
    C_BOG_DRAINED,
    C_PEAT_CUT,
    C_MARSH,
    C_WATER,
    C_SAND,
    C_BOG_REWETTED,
    C_POTATO,
    C_WBARLEY,
) = range(1, 19)
COVER_NAMES = {
    C_BUILT: "built-up",
    C_WHEAT: "winter wheat",
    C_BARLEY: "spring barley",
    C_RAPE: "winter rapeseed",
    C_MAIZE: "maize",
    C_BEET: "sugar beet",
    C_GRASS: "mown grassland",
    C_BROADLEAF: "broadleaf forest",
    C_CONIFER: "coniferous forest",
    C_BOG: "intact raised bog",
    C_BOG_DRAINED: "drained bog",
    C_PEAT_CUT: "peat extraction",
    C_MARSH: "reed marsh",
    C_WATER: "water",
    C_SAND: "quarry / sand",
    C_BOG_REWETTED: "rewetted bog",
    C_POTATO: "potato",
    C_WBARLEY: "winter barley",
}
COVER_TO_CLASS = np.zeros(19, dtype=np.uint8)
for _cov, _cls in {
    C_BUILT: ARTIFICIAL,
    C_WHEAT: CEREALS,
    C_BARLEY: CEREALS,
    C_RAPE: RAPESEED,
    C_MAIZE: MAIZE,
    C_BEET: ROOT_CROPS,
    C_POTATO: ROOT_CROPS,
    C_WBARLEY: CEREALS,
    C_GRASS: GRASSLAND,
    C_BROADLEAF: BROADLEAF,
    C_CONIFER: CONIFEROUS,
    C_BOG: BOG_INTACT,
    C_BOG_REWETTED: BOG_INTACT,
    C_BOG_DRAINED: BOG_DRAINED,
    C_PEAT_CUT: BOG_DRAINED,
    C_MARSH: WETLAND,
    C_WATER: WATER,
    C_SAND: BARE,
}.items():
    COVER_TO_CLASS[_cov] = _cls
CROPS = (C_WHEAT, C_BARLEY, C_RAPE, C_MAIZE, C_BEET, C_POTATO, C_WBARLEY)

# Crop rotation: previous crop -> probabilities of this year's crop (order of CROPS).
_ROTATION = {
    C_WHEAT: (0.10, 0.15, 0.20, 0.15, 0.10, 0.10, 0.20),
    C_BARLEY: (0.25, 0.00, 0.30, 0.15, 0.15, 0.15, 0.00),
    C_RAPE: (0.60, 0.10, 0.00, 0.00, 0.00, 0.00, 0.30),
    C_MAIZE: (0.40, 0.25, 0.00, 0.20, 0.00, 0.05, 0.10),
    C_BEET: (0.55, 0.35, 0.00, 0.00, 0.00, 0.00, 0.10),
    C_POTATO: (0.55, 0.25, 0.00, 0.00, 0.00, 0.00, 0.20),
    C_WBARLEY: (0.10, 0.10, 0.50, 0.15, 0.10, 0.05, 0.00),
}
_CROP_START = (0.25, 0.12, 0.13, 0.15, 0.10, 0.10, 0.15)

# Endmember spectra (BLU, GRN, RED, NIR, SW1, SW2), surface reflectance.
_E = {
    "crop": (0.030, 0.065, 0.035, 0.440, 0.210, 0.095),  # every green crop canopy
    "grass": (0.035, 0.075, 0.045, 0.390, 0.230, 0.115),
    "leaf": (0.025, 0.050, 0.028, 0.380, 0.170, 0.075),  # broadleaf canopy
    "needle": (0.018, 0.032, 0.020, 0.230, 0.100, 0.045),
    "sedge": (0.030, 0.060, 0.040, 0.260, 0.110, 0.050),  # bog vegetation
    "heath": (0.030, 0.055, 0.040, 0.330, 0.190, 0.095),  # heather, birch, purple moor grass
    "reed": (0.030, 0.065, 0.040, 0.360, 0.200, 0.095),
    "dry": (0.080, 0.110, 0.140, 0.280, 0.330, 0.240),  # ripe or dead vegetation, stubble, hay
    "flower": (0.050, 0.170, 0.150, 0.420, 0.250, 0.130),  # flowering rapeseed
    "soil": (0.070, 0.100, 0.130, 0.190, 0.270, 0.230),
    "litter": (0.045, 0.060, 0.070, 0.170, 0.200, 0.130),  # forest floor, bare branches
    "moss": (0.030, 0.050, 0.050, 0.150, 0.080, 0.040),  # wet Sphagnum
    "dry_peat": (0.050, 0.065, 0.080, 0.150, 0.200, 0.150),
    "bare_peat": (0.040, 0.050, 0.060, 0.090, 0.150, 0.130),
    "water": (0.050, 0.055, 0.035, 0.020, 0.012, 0.008),
    "sand": (0.140, 0.180, 0.220, 0.270, 0.330, 0.290),
    "impervious": (0.100, 0.110, 0.120, 0.150, 0.190, 0.170),
}
_EM = {k: np.asarray(v, dtype=np.float32) for k, v in _E.items()}
_CANOPIES = ("crop", "grass", "leaf", "needle", "sedge", "heath", "reed", "flower")

# Crop calendars (day of year, for a field without timing shift): winter greenness, green-up
# midpoint, senescence midpoint, harvest, peak green fraction, sowing (winter crops: autumn before).
_CALENDAR = {
    C_WHEAT: {"winter": 0.25, "up": 100, "sen": 178, "harvest": 208, "amp": 0.92, "sow": 280},
    C_BARLEY: {"winter": 0.0, "up": 140, "sen": 192, "harvest": 222, "amp": 0.88, "sow": 95},
    C_RAPE: {"winter": 0.40, "up": 85, "sen": 170, "harvest": 198, "amp": 0.90, "sow": 240},
    C_MAIZE: {"winter": 0.0, "up": 178, "sen": 258, "harvest": 285, "amp": 0.92, "sow": 120},
    C_BEET: {"winter": 0.0, "up": 158, "sen": 330, "harvest": 290, "amp": 0.95, "sow": 95},
    C_POTATO: {"winter": 0.0, "up": 160, "sen": 228, "harvest": 255, "amp": 0.85, "sow": 110},
    C_WBARLEY: {"winter": 0.30, "up": 92, "sen": 165, "harvest": 192, "amp": 0.88, "sow": 265},
}
_RAPE_FLOWER = (127.0, 9.0, 0.55)  # (peak day, width in days, share of the canopy in flower)
_WINTER_SOWN = (C_WHEAT, C_RAPE, C_WBARLEY)

# Where things are, as fractions (row0, col0, row1, col1) of the extent.
_QUARRY = (0.04, 0.04, 0.14, 0.18)
_SAND_PIT = (0.80, 0.56, 0.86, 0.64)
_VILLAGE = (0.10, 0.40, 0.30, 0.62)
_HAMLET = (0.64, 0.42, 0.78, 0.52)
_WOOD_BROADLEAF = (0.30, 0.04, 0.46, 0.24)
_WOOD_CONIFER = (0.04, 0.62, 0.16, 0.78)
_WOOD_BLOCK = (0.61, 0.27, 0.83, 0.35)  # broadleaf above its middle, coniferous below
_LAKE = ((0.72, 0.14), (0.09, 0.08))  # centre, radii
_POND = ((0.22, 0.88), (0.06, 0.05))
_BOG = ((0.66, 0.80), (0.24, 0.17))
_BOG_ZONES = (0.80, 0.905)  # columns: intact west of the first, drained, extraction east


@dataclass(frozen=True)
class LandcoverSpec:
    """What to generate.

    Attributes:
        size: the 30 m grid is ``size x size`` pixels.
        years: the years with scenes, truth and points.
        s2_from: the first year with Sentinel-2-like scenes; earlier years are Landsat-only.
        landsat_sparse: Landsat acquisitions per Landsat-only year.
        landsat_dense: Landsat acquisitions per year with Sentinel-2.
        s2_per_year: Sentinel-2 acquisitions per year (from ``s2_from``).
        field_px: mean parcel width in pixels.
        points_per_class: training points per class and year (fewer where a class is rarer).
        test_points_per_class: held-out test points per class and year.
        buffer_px: training points keep this distance (pixels) from the held-out block.
        seed: the random seed; the same spec always gives the same files.
        origin: (x, y) of the top-left corner in EPSG:3035, on the 30 m grid.
        block: the held-out test block as fractions (row0, col0, row1, col1) of the extent.
    """

    size: int
    years: tuple[int, ...] = (2012, 2013, 2014, 2015, 2016, 2017, 2018, 2019)
    s2_from: int = 2016
    landsat_sparse: int = 20
    landsat_dense: int = 20
    s2_per_year: int = 60
    field_px: float = 11.0
    points_per_class: int = 60
    test_points_per_class: int = 30
    buffer_px: int = 4
    seed: int = 7
    origin: tuple[float, float] = (4_300_020.0, 3_400_020.0)
    block: tuple[float, float, float, float] = (0.60, 0.05, 0.84, 0.95)


SIZES: dict[str, LandcoverSpec] = {
    "demo": LandcoverSpec(size=384),
    "tiny": LandcoverSpec(
        size=96,
        years=(2014, 2015, 2016, 2017),
        landsat_sparse=16,
        landsat_dense=14,
        s2_per_year=40,
        field_px=8.0,
        points_per_class=30,
        test_points_per_class=10,
        buffer_px=2,
    ),
}


@dataclass
class LandcoverWorld:
    """Paths and facts of a generated land-cover world (also written as ``world.json``).

    Attributes:
        root: the world's folder.
        spec: what was generated.
        crs: the CRS.
        transform_30m: the grid's transform.
        test_block: the held-out block in pixels (row0, col0, row1, col1).
        test_block_bounds: the same block in CRS coordinates (left, bottom, right, top).
        legend: ``legend.yaml`` (the codes of the truth maps).
        scenes: sensor (``landsat``, ``sentinel2``) -> scene files.
        truth: year -> truth map.
        cover: year -> detailed cover map.
        points: year -> reference point GeoPackage.
        events: what changes in the bog: ``drained`` and ``restored``, each a year and parcel.
        stats: per year: scene counts, mean clear observations per pixel, class shares.
    """

    root: Path
    spec: LandcoverSpec
    crs: str
    transform_30m: tuple[float, ...]
    test_block: tuple[int, int, int, int]
    test_block_bounds: tuple[float, float, float, float]
    legend: str = "legend.yaml"
    scenes: dict[str, list[str]] = field(default_factory=dict)
    truth: dict[int, str] = field(default_factory=dict)
    cover: dict[int, str] = field(default_factory=dict)
    points: dict[int, str] = field(default_factory=dict)
    events: dict[str, dict[str, int]] = field(default_factory=dict)
    stats: dict[int, dict[str, object]] = field(default_factory=dict)

    @classmethod
    def load(cls, root: str | Path) -> LandcoverWorld:
        """Read ``world.json`` of a generated world.

        Args:
            root: the world's folder.

        Returns:
            The world's description.
        """
        root = Path(root)
        raw = json.loads((root / "world.json").read_text())
        raw["root"] = root
        raw["spec"] = LandcoverSpec(
            **{  # type: ignore[arg-type]
                k: tuple(v) if isinstance(v, list) else v
                for k, v in raw["spec"].items()  # JSON lists back to tuples
            }
        )
        for key in ("truth", "cover", "points", "stats"):
            raw[key] = {int(k): v for k, v in raw[key].items()}
        for key in ("transform_30m", "test_block", "test_block_bounds"):
            raw[key] = tuple(raw[key])
        return cls(**raw)

    def to_json(self) -> str:
        """Serialise, with paths relative to the world's folder.

        Returns:
            JSON text.
        """
        data = asdict(self)
        data.pop("root")
        return json.dumps(data, indent=2, default=str)


# ----------------------------------------------------------------------------------------------
# Landscape: parcels and their cover per year
# ----------------------------------------------------------------------------------------------


def _box_mask(n: int, box: tuple[float, float, float, float]) -> np.ndarray:
    r0, c0, r1, c1 = (round(v * n) for v in box)
    out = np.zeros((n, n), dtype=bool)
    out[r0:r1, c0:c1] = True
    return out


def _ellipse(n: int, centre: tuple[float, float], radii: tuple[float, float]) -> np.ndarray:
    rr, cc = (np.mgrid[0:n, 0:n].astype(np.float32) + 0.5) / n
    return ((rr - centre[0]) / radii[0]) ** 2 + ((cc - centre[1]) / radii[1]) ** 2 < 1


@dataclass
class Landscape:
    """The parcels and what grows on them.

    Attributes:
        parcel: (n, n) int32 parcel id of every pixel.
        kind: (P,) the parcel's permanent kind (a cover code; ``C_WHEAT`` for arable land,
            ``C_BOG`` for any part of the bog).
        calendar_years: the calendar years the rotation covers (one before the first year to
            one after the last).
        crop: (Y, P) the crop of every arable parcel per calendar year (0 elsewhere).
        catch: (Y, P) a catch crop before this year's spring crop.
        bog_state: (Y, P) bog cover per calendar year (0 off the bog).
        events: ``drained`` / ``restored``: year and parcel.
    """

    parcel: np.ndarray
    kind: np.ndarray
    calendar_years: list[int]
    crop: np.ndarray
    catch: np.ndarray
    bog_state: np.ndarray
    events: dict[str, dict[str, int]]

    def cover_of(self, year: int) -> np.ndarray:
        """(P,) the cover code of every parcel in a year."""
        y = self.calendar_years.index(year)
        cover = self.kind.copy()
        arable = self.crop[y] > 0
        cover[arable] = self.crop[y][arable]
        bog = self.bog_state[y] > 0
        cover[bog] = self.bog_state[y][bog]
        return cover

    def cover_map(self, year: int) -> np.ndarray:
        """(n, n) uint8 cover codes of a year."""
        return self.cover_of(year)[self.parcel].astype(np.uint8)


def build_landscape(spec: LandcoverSpec) -> Landscape:
    """Lay out the parcels and draw every parcel's cover for every year.

    Args:
        spec: what to generate.

    Returns:
        The landscape.
    """
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 1]))
    n = spec.size
    n_seeds = max(16, round((n / spec.field_px) ** 2))
    # Jittered lattice seeds: fields of similar size, not the very uneven cells of random seeds.
    k = math.ceil(math.sqrt(n_seeds))
    step = n / k
    g = (np.arange(k) + 0.5) * step
    seeds = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    seeds = seeds + rng.uniform(-0.35, 0.35, seeds.shape) * step
    rr, cc = np.mgrid[0:n, 0:n]
    _, vor = cKDTree(seeds).query(np.stack([rr.ravel(), cc.ravel()], axis=1) + 0.5)
    vor = vor.reshape(n, n).astype(np.int64)

    # Regions drawn over the fields; each region x Voronoi cell becomes a parcel.
    region = np.zeros((n, n), dtype=np.int64)  # 0 open land (arable, grassland, forest)
    forest_noise = _smooth_noise(rng, n, n / 5)
    conifer_noise = _smooth_noise(rng, n, n / 4)
    bog = _ellipse(n, *_BOG)
    region[bog] = C_BOG
    for box, code in ((_QUARRY, C_SAND), (_SAND_PIT, C_SAND)):
        region[_box_mask(n, box)] = code
    for box in (_VILLAGE, _HAMLET):
        region[_box_mask(n, box)] = C_BUILT
    region[_box_mask(n, _WOOD_BROADLEAF)] = C_BROADLEAF
    region[_box_mask(n, _WOOD_CONIFER)] = C_CONIFER
    wood = _box_mask(n, _WOOD_BLOCK)
    mid = round(0.5 * (_WOOD_BLOCK[0] + _WOOD_BLOCK[2]) * n)
    region[wood & (rr < mid)] = C_BROADLEAF
    region[wood & (rr >= mid)] = C_CONIFER
    water = _ellipse(n, *_LAKE) | _ellipse(n, *_POND)
    # A meandering river, 2 px wide, from the top edge into the lake.
    t = np.linspace(0, 1, 6 * n)
    river_r = t * _LAKE[0][0] * n
    river_c = (0.30 + 0.06 * np.sin(7.0 * t) - 0.16 * t) * n
    river = np.zeros((n, n), dtype=bool)
    for r, c in zip(river_r.astype(int), river_c.astype(int), strict=True):
        river[max(r - 1, 0) : r + 1, max(c - 1, 0) : c + 1] = True
    marsh = ndimage.binary_dilation(water, iterations=max(2, n // 40)) & ~water & ~river
    region[marsh & (region == 0)] = C_MARSH
    region[water | river] = C_WATER

    key = region * (vor.max() + 1) + vor
    uniq, inv = np.unique(key, return_inverse=True)
    parcel = inv.reshape(n, n).astype(np.int32)
    n_parcels = uniq.size
    p_region = (uniq // (vor.max() + 1)).astype(np.int64)
    idx = np.arange(n_parcels)
    sizes = np.bincount(parcel.ravel(), minlength=n_parcels).astype(np.float64)
    mean_of = lambda a: np.bincount(parcel.ravel(), a.ravel(), n_parcels) / sizes  # noqa: E731
    p_forest = mean_of(forest_noise)
    p_conifer = mean_of(conifer_noise)
    p_col = mean_of(cc.astype(np.float64) + 0.5) / n
    p_row = mean_of(rr.astype(np.float64) + 0.5) / n

    kind = np.zeros(n_parcels, dtype=np.uint8)
    open_land = p_region == 0
    is_forest = open_land & (p_forest > 1.0)
    kind[is_forest] = np.where(p_conifer[is_forest] > 0.2, C_CONIFER, C_BROADLEAF)
    farm = open_land & ~is_forest
    grass = farm & (rng.random(n_parcels) < 0.25)
    kind[grass] = C_GRASS
    kind[farm & ~grass] = C_WHEAT  # arable; the crop is drawn per year below
    kind[~open_land] = p_region[~open_land]

    # Rotation over the calendar years, one either side of the generated years.
    years = list(range(spec.years[0] - 1, spec.years[-1] + 2))
    n_y = len(years)
    crop = np.zeros((n_y, n_parcels), dtype=np.uint8)
    arable = idx[kind == C_WHEAT]
    crops = np.array(CROPS, dtype=np.uint8)
    crop[0, arable] = rng.choice(crops, size=arable.size, p=_CROP_START)
    for y in range(1, n_y):
        for prev in CROPS:
            ids = arable[crop[y - 1, arable] == prev]
            crop[y, ids] = rng.choice(crops, size=ids.size, p=_ROTATION[prev])
    spring = np.isin(crop, [C_BARLEY, C_MAIZE, C_BEET, C_POTATO])
    catch = spring & (rng.random(crop.shape) < 0.4)

    # The bog: zones by column, then a drainage and a restoration event.
    on_bog = kind == C_BOG
    state = np.zeros(n_parcels, dtype=np.uint8)
    state[on_bog & (p_col < _BOG_ZONES[0])] = C_BOG
    state[on_bog & (p_col >= _BOG_ZONES[0]) & (p_col < _BOG_ZONES[1])] = C_BOG_DRAINED
    state[on_bog & (p_col >= _BOG_ZONES[1])] = C_PEAT_CUT
    outside_block = (p_row < spec.block[0] - 0.03) | (p_row > spec.block[2] + 0.03)
    big = sizes >= np.median(sizes[on_bog]) if on_bog.any() else sizes > 0
    events: dict[str, dict[str, int]] = {}
    bog_state = np.zeros((n_y, n_parcels), dtype=np.uint8)
    bog_state[:] = state
    n_years = len(spec.years)
    for name, before, after, when in (
        ("drained", C_BOG, C_BOG_DRAINED, spec.years[n_years // 4] if n_years > 1 else None),
        ("restored", C_BOG_DRAINED, C_BOG_REWETTED, spec.years[(3 * n_years) // 4]),
    ):
        if when is None or n_years < 2:
            continue
        cand = idx[(state == before) & outside_block & big]
        if cand.size == 0:
            cand = idx[state == before]
        if cand.size == 0:
            continue
        # The one nearest the bog's centre row, for a stable choice.
        pick = int(cand[np.argmin(np.abs(p_row[cand] - _BOG[0][0]))])
        bog_state[years.index(when) :, pick] = after
        events[name] = {"year": int(when), "parcel": pick}
    return Landscape(parcel, kind, years, crop, catch, bog_state, events)


# ----------------------------------------------------------------------------------------------
# Phenology: the reflectance of every parcel on a day
# ----------------------------------------------------------------------------------------------


def _rise(doy: float, mid: np.ndarray | float, width: float) -> np.ndarray:
    """A logistic step from 0 to 1 around ``mid`` (width: days from 27% to 73%)."""
    return np.asarray(1.0 / (1.0 + np.exp(-(doy - np.asarray(mid, np.float64)) / width)))


@dataclass
class YearState:
    """Everything the reflectance of a year's dates needs, per parcel.

    Attributes:
        cover: (P,) cover codes.
        next_crop: (P,) next year's crop (0 off arable land).
        catch: (P,) this year's spring crop follows a catch crop.
        catch_next: (P,) next year's does (sown after this year's harvest).
        shift: (P,) timing shift in days (weather of the year + the field's own).
        amp: (P,) peak green fraction factor.
        cuts: (P, 4) mowing days of grassland (NaN: no cut).
        green_share: (P,) vegetation share of built-up parcels.
        soil: (P,) brightness of the parcel's background (soil, peat, litter, sand; dark humus
            to bright loess), the same every year.
        canopy: (P, 6) per-band factor of the parcel's vegetation spectrum (variety, vigour,
            nutrition), drawn per year.
        cover_level: (P,) 0..1, how green a field is over winter (winter crops, catch crops).
        late: (P,) days the senescence and harvest come later than green-up implies.
    """

    cover: np.ndarray
    next_crop: np.ndarray
    catch: np.ndarray
    catch_next: np.ndarray
    shift: np.ndarray
    amp: np.ndarray
    cuts: np.ndarray
    green_share: np.ndarray
    soil: np.ndarray
    canopy: np.ndarray
    cover_level: np.ndarray
    late: np.ndarray


def year_state(land: Landscape, spec: LandcoverSpec, year: int) -> YearState:
    """Draw the year's timing of every parcel (field jitter, weather, mowing dates).

    Args:
        land: the landscape.
        spec: the spec (for the seed).
        year: the year.

    Returns:
        The year's state.
    """
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 2, year]))
    y = land.calendar_years.index(year)
    p = land.kind.size
    weather = float(np.clip(rng.normal(0, 5), -10, 10))
    shift = weather + np.clip(rng.normal(0, 6, p), -14, 14)
    amp = np.clip(rng.normal(1.0, 0.08, p), 0.78, 1.12)
    # Management: winter cover (sowing date, frost, catch-crop success) and the harvest date
    # vary per field independently of green-up, so levels and season lengths overlap between
    # crops and their timing tells them apart.
    cover_level = rng.uniform(0.0, 1.0, p)
    late = np.clip(rng.normal(0, 6, p), -12, 12)
    n_cuts = rng.choice([1, 2, 3, 4], size=p, p=[0.2, 0.3, 0.35, 0.15])
    first = np.where(n_cuts == 1, rng.normal(190, 10, p), rng.normal(140, 8, p))
    gap = rng.uniform(35, 50, p)
    cuts = first[:, None] + gap[:, None] * np.arange(4)[None]
    cuts[np.arange(4)[None] >= n_cuts[:, None]] = np.nan
    cuts[cuts > 290] = np.nan
    fixed = np.random.default_rng(np.random.SeedSequence([spec.seed, 3]))
    green_share = fixed.uniform(0.1, 0.4, p)
    soil = fixed.uniform(0.7, 1.4, p)
    canopy = np.clip(1 + rng.normal(0, 0.07, (p, len(BANDS))), 0.8, 1.2)
    return YearState(
        cover=land.cover_of(year),
        next_crop=land.crop[y + 1],
        catch=land.catch[y],
        catch_next=land.catch[y + 1],
        shift=shift,
        amp=amp,
        cuts=cuts,
        green_share=green_share,
        soil=soil,
        canopy=canopy,
        cover_level=cover_level,
        late=late,
    )


def _crop_fractions(st: YearState, ids: np.ndarray, code: int, doy: float) -> dict[str, np.ndarray]:
    """Fractions (green canopy, ripe/dry, flower, soil rest) of one crop's parcels on a day."""
    cal = _CALENDAR[code]
    s = st.shift[ids]
    amp = cal["amp"] * st.amp[ids]
    up = _rise(doy, cal["up"] + s, 8.0)
    lvl = st.cover_level[ids]
    sen = _rise(doy, cal["sen"] + s + st.late[ids], 6.0)
    winter = np.minimum(cal["winter"] * (0.4 + 1.2 * lvl), 0.6)
    if code not in _WINTER_SOWN:  # a catch crop until spring ploughing
        winter = np.where(st.catch[ids], (0.15 + 0.3 * lvl) * (1 - _rise(doy, 85.0 + s, 5.0)), 0.0)
    canopy = winter + (amp - winter) * up
    green = canopy * (1 - sen)
    dry = canopy * sen
    flower = np.zeros_like(green)
    if code == C_RAPE:
        peak, width, share = _RAPE_FLOWER
        flower = green * share * np.exp(-0.5 * ((doy - peak - s) / width) ** 2)
        green = green - flower
    harvest = cal["harvest"] + s + st.late[ids]
    after = doy >= harvest
    if after.any():
        since = doy - harvest
        stubble = 0.45 * np.exp(-since / 25.0)
        nxt = st.next_crop[ids]
        regrow = np.zeros_like(s)
        for winter_crop in _WINTER_SOWN:
            sow = _CALENDAR[winter_crop]["sow"] + s
            regrow = np.where(nxt == winter_crop, 0.3 * _rise(doy, sow + 25.0, 8.0), regrow)
        catch_next = st.catch_next[ids] & (harvest < 235)
        regrow = np.where(catch_next, 0.35 * _rise(doy, harvest + 35.0, 8.0), regrow)
        green = np.where(after, regrow, green)
        dry = np.where(after, stubble * (1 - regrow), dry)
        flower = np.where(after, 0.0, flower)
    return {"green": green, "dry": dry, "flower": flower}


def parcel_reflectance(st: YearState, doy: float) -> np.ndarray:
    """Surface reflectance of every parcel on a day of the year.

    Args:
        st: the year's state.
        doy: day of the year.

    Returns:
        (P, 6) float32 reflectance (BLU GRN RED NIR SW1 SW2).
    """
    p = st.cover.size
    out = np.zeros((p, len(BANDS)), dtype=np.float32)

    def mix(ids: np.ndarray, parts: list[tuple[np.ndarray | float, str]], rest: str) -> None:
        total = np.zeros(ids.size)
        acc = np.zeros((ids.size, len(BANDS)))
        soil = st.soil[ids, None]
        for frac, em in parts:
            f = np.clip(np.broadcast_to(np.asarray(frac, np.float64), (ids.size,)), 0, 1)
            total = total + f
            factor = st.canopy[ids] if em in _CANOPIES else soil if em == "dry" else 1.0
            acc += f[:, None] * _EM[em][None] * factor
        over = np.maximum(total, 1.0)  # fractions summing above 1 are scaled down
        acc /= over[:, None]
        rest_f = 1 - total / over
        out[ids] = acc + rest_f[:, None] * _EM[rest][None] * (1.0 if rest == "water" else soil)

    for code in np.unique(st.cover):
        ids = np.nonzero(st.cover == code)[0]
        s = st.shift[ids]
        if code in CROPS:
            f = _crop_fractions(st, ids, int(code), doy)
            mix(ids, [(f["green"], "crop"), (f["dry"], "dry"), (f["flower"], "flower")], "soil")
        elif code == C_GRASS:
            base = 0.30 + 0.60 * st.amp[ids] * (_rise(doy, 95 + s, 10) - _rise(doy, 300 + s, 10))
            cuts = st.cuts[ids]
            past = np.where(cuts <= doy, cuts, -np.inf).max(axis=1)  # the latest cut so far
            since = doy - past
            regrow = np.where(np.isfinite(past), 0.3 + 0.7 * np.clip(since / 28.0, 0, 1), 1.0)
            green = base * regrow
            hay = np.where(np.isfinite(past), (base - green) * np.exp(-since / 6.0), 0.0)
            mix(ids, [(green, "grass"), (hay, "dry")], "litter")
        elif code == C_BROADLEAF:
            on = _rise(doy, 122 + s, 6) - _rise(doy, 292 + s, 7)
            colour = 0.8 * _rise(doy, 280 + s, 6) * (1 - _rise(doy, 305 + s, 6))
            mix(ids, [(0.12 + 0.82 * on, "leaf"), (colour, "dry")], "litter")
        elif code == C_CONIFER:
            g = 0.80 + 0.15 * (_rise(doy, 130 + s, 12) - _rise(doy, 280 + s, 12))
            mix(ids, [(g, "needle")], "litter")
        elif code in (C_BOG, C_BOG_REWETTED):
            green = 0.22 + 0.28 * (_rise(doy, 155 + s, 12) - _rise(doy, 262 + s, 12))
            wet = 0.08 if code == C_BOG else 0.20
            flood = 0.25 if code == C_BOG else 0.40
            water = wet + flood * (1 - _rise(doy, 120 + s, 10)) + 0.10 * _rise(doy, 300, 10)
            mix(ids, [(green, "sedge"), (water, "water")], "moss")
        elif code == C_BOG_DRAINED:
            green = 0.18 + 0.50 * (_rise(doy, 138 + s, 8) - _rise(doy, 255 + s, 8))
            dry = 0.25 * _rise(doy, 255 + s, 8)
            mix(ids, [(green, "heath"), (dry, "dry")], "dry_peat")
        elif code == C_PEAT_CUT:
            mix(ids, [(0.08 * (1 - _rise(doy, 120, 10)), "water")], "bare_peat")
        elif code == C_MARSH:
            green = 0.05 + 0.75 * (_rise(doy, 162 + s, 9) - _rise(doy, 272 + s, 8))
            dead = 0.55 * (1 - _rise(doy, 150 + s, 10)) + 0.45 * _rise(doy, 280 + s, 10)
            mix(ids, [(green, "reed"), (dead, "dry")], "water")
        elif code == C_WATER:
            algae = 0.06 * (_rise(doy, 180, 10) - _rise(doy, 250, 10))
            mix(ids, [(algae, "grass")], "water")
        elif code == C_SAND:
            mix(ids, [], "sand")
        elif code == C_BUILT:
            g = 0.3 + 0.7 * (_rise(doy, 105, 10) - _rise(doy, 295, 10))
            mix(ids, [(st.green_share[ids] * g, "grass")], "impervious")
    return out


def ndvi(refl: np.ndarray) -> np.ndarray:
    """NDVI of reflectance with bands last (or first for 3-D stacks of scenes: ``(6, ...)``).

    Args:
        refl: (..., 6) reflectance.

    Returns:
        NDVI.
    """
    red, nir = refl[..., 2], refl[..., 3]
    return (nir - red) / (nir + red + 1e-6)


# ----------------------------------------------------------------------------------------------
# Acquisitions, clouds and sensors
# ----------------------------------------------------------------------------------------------


def _landsat_platforms(year: int) -> list[str]:
    """The Landsats delivering data in a year (Landsat 5 until 2011, 7 from 1999, 8 from 2013)."""
    out = []
    if year <= 2011:
        out.append("LT05")
    if 1999 <= year <= 2021:
        out.append("LE07")
    if year >= 2013:
        out.append("LC08")
    return out or ["LC08"]


def acquisitions(spec: LandcoverSpec, year: int) -> list[tuple[str, str, dt.date]]:
    """The year's acquisitions: (kind, platform, date), on 16-day (Landsat) / 5-day (S2) orbits.

    Args:
        spec: the spec.
        year: the year.

    Returns:
        (``landsat`` or ``sentinel2``, platform, date), sorted by date.
    """
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 4, year]))
    start = dt.date(year, 1, 1)
    n_days = (dt.date(year + 1, 1, 1) - start).days
    out: list[tuple[str, str, dt.date]] = []
    platforms = _landsat_platforms(year)
    phase = int(rng.integers(0, 16))
    orbit = [
        (plat, d)
        for i, plat in enumerate(platforms)
        for d in range((phase + 8 * i) % 16, n_days, 16)
    ]
    n_l = spec.landsat_sparse if year < spec.s2_from else spec.landsat_dense
    keep = rng.choice(len(orbit), size=min(n_l, len(orbit)), replace=False)
    out += [("landsat", orbit[k][0], start + dt.timedelta(days=orbit[k][1])) for k in keep]
    if year >= spec.s2_from:
        phase = int(rng.integers(0, 5))
        days = list(range(phase, n_days, 5))
        keep = rng.choice(len(days), size=min(spec.s2_per_year, len(days)), replace=False)
        for k in keep:
            plat = "S2A" if (days[k] // 5) % 2 == 0 else "S2B"
            out.append(("sentinel2", plat, start + dt.timedelta(days=days[k])))
    return sorted(out, key=lambda a: (a[2], a[0]))


def _clouds(
    rng: np.random.Generator, n: int, doy: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cloud and shadow masks and an opacity field (thin unflagged haze at cloud edges)."""
    winter = 0.5 * (1 + math.cos(2 * math.pi * (doy - 15) / 365))  # 1 in January, 0 in July
    summer_p = np.array([0.32, 0.25, 0.18, 0.12, 0.08, 0.05])
    winter_p = np.array([0.10, 0.12, 0.18, 0.20, 0.22, 0.18])
    p = (1 - winter) * summer_p + winter * winter_p
    frac = float(rng.choice([0.0, 0.05, 0.2, 0.4, 0.7, 0.95], p=p / p.sum()))
    noise = _smooth_noise(rng, n, max(6.0, n / 5))
    if frac == 0:
        empty = np.zeros((n, n), dtype=bool)
        return empty, empty, np.zeros((n, n), np.float32)
    thr = float(np.quantile(noise, 1 - frac))
    cloud = noise > thr
    opacity = np.clip((noise - thr) / 0.5, 0.3, 1.0).astype(np.float32) * cloud
    haze = (noise > thr - 0.15) & ~cloud
    opacity = np.where(haze, 0.06, opacity).astype(np.float32)
    shift = max(2, n // 40)
    shadow = np.roll(cloud, (shift, shift * 2 // 3), axis=(0, 1)) & ~cloud
    return cloud, shadow, opacity


def _apply_clouds(
    refl: np.ndarray, cloud: np.ndarray, shadow: np.ndarray, opacity: np.ndarray
) -> np.ndarray:
    bright = np.array([0.45, 0.44, 0.45, 0.48, 0.35, 0.25], dtype=np.float32)[:, None, None]
    out = refl * (1 - opacity) + bright * opacity
    return np.where(shadow[None], out * 0.35, out)


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def _legend_yaml() -> str:
    lines = [
        "# The land-cover world's legend (bsrlc.data.landcover_world): the codes of",
        "# conf/legend/landcover.yaml, with 10 for intact (or rewetted) peat bog and 14 for",
        "# drained or extracted peat bog; 9 (mixed forest) does not occur.",
        "name: landcover_world",
        "nodata: 0",
        "classes:",
    ]
    for code, (name, colour) in CLASSES.items():
        lines.append(f'  - {{code: {code}, name: {name}, colour: "{colour}"}}')
    lines += ["drop: null", "merge: null"]
    return "\n".join(lines) + "\n"


def _colours() -> dict[int, tuple[int, int, int, int]]:
    out: dict[int, tuple[int, int, int, int]] = {0: (0, 0, 0, 0)}
    for code, (_, colour) in CLASSES.items():
        c = colour.lstrip("#")
        out[code] = (int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16), 255)
    return out


def _sample_points(
    rng: np.random.Generator, truth: np.ndarray, allowed: np.ndarray, per_class: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified random pixels per class among ``allowed``: (rows, cols)."""
    rows, cols = [], []
    for code in CLASSES:
        r, c = np.nonzero((truth == code) & allowed)
        if r.size == 0:
            continue
        pick = np.sort(rng.choice(r.size, size=min(per_class, r.size), replace=False))
        rows.append(r[pick])
        cols.append(c[pick])
    if not rows:
        return np.zeros(0, int), np.zeros(0, int)
    return np.concatenate(rows), np.concatenate(cols)


def _readme(world: LandcoverWorld) -> str:
    s = world.spec
    lines = [
        f"# bsrlc land-cover world ({s.size} x {s.size} px at 30 m, seed {s.seed})",
        "",
        "Generated by `python -m bsrlc.data.landcover_world`; deterministic for a size and seed.",
        "See the module docstring for what it models.",
        "",
        f"- CRS {world.crs}, 30 m grid, origin {world.transform_30m[2]:.0f}, "
        f"{world.transform_30m[5]:.0f}.",
        f"- Years {', '.join(map(str, s.years))}; Sentinel-2-like scenes from {s.s2_from}.",
        "- `scenes/landsat/{LT05,LE07,LC08}_YYYYMMDD.tif` + `_QA_PIXEL.tif` "
        "(conf/sensor/demo_landsat.yaml); `scenes/sentinel2/{S2A,S2B}_YYYYMMDD.tif` + "
        "`_SCL.tif` (demo_sentinel2.yaml), both at 30 m on the same grid; int16 reflectance "
        "x 10000, bands BLU GRN RED NIR SW1 SW2, nodata -9999.",
        "- `truth/truth_YYYY.tif`: classes of `legend.yaml`; `truth/cover_YYYY.tif`: the "
        "detailed covers (crop types etc., codes in world.json's README section below).",
        "- `points/points_YYYY.gpkg`: `class`, `class_name`, `cover`, `split` (train/test), "
        f"`year`; test points in the held-out block {world.test_block} (rows/cols), train "
        f"points at least {s.buffer_px} px from it. `regions.geojson`: the block.",
        "",
        "Covers: " + ", ".join(f"{k} {v}" for k, v in COVER_NAMES.items()),
        "",
        "Bog events: "
        + ", ".join(f"{k} in {v['year']} (parcel {v['parcel']})" for k, v in world.events.items()),
        "",
        "Per year: scenes (Landsat / Sentinel-2), mean clear observations per pixel:",
        "",
    ]
    for year, st in world.stats.items():
        lines.append(
            f"- {year}: {st['landsat_scenes']} / {st['sentinel2_scenes']} scenes, "
            f"{st['clear_per_pixel']:.1f} clear dates per pixel"
        )
    return "\n".join(lines) + "\n"


def generate(
    size: str | LandcoverSpec,
    out_dir: str | Path,
    overwrite: bool = False,
    seed: int | None = None,
) -> LandcoverWorld:
    """Generate the land-cover world into ``out_dir`` (the folder appears whole or not at all).

    Args:
        size: ``"demo"``, ``"tiny"`` or a :class:`LandcoverSpec`.
        out_dir: destination folder.
        overwrite: replace an existing world; otherwise an existing one of the same spec is
            reused.
        seed: override the spec's seed.

    Returns:
        The generated world's description.

    Raises:
        ConfigError: for an unknown size name or years that are not increasing.
    """
    import geopandas as gpd
    from shapely.geometry import box as shp_box

    from bsrlc.errors import ConfigError

    logging.getLogger("pyogrio").setLevel(logging.WARNING)
    if isinstance(size, str):
        if size not in SIZES:
            raise ConfigError(f"size={size}: unknown land-cover world size; use one of tiny, demo")
        spec = SIZES[size]
    else:
        spec = size
    if seed is not None:
        spec = LandcoverSpec(**{**asdict(spec), "seed": int(seed)})
    if list(spec.years) != sorted(set(spec.years)) or not spec.years:
        raise ConfigError(f"years={list(spec.years)}: give increasing, distinct years")
    out_dir = Path(out_dir)
    if (out_dir / "world.json").exists() and not overwrite:
        world = LandcoverWorld.load(out_dir)
        if world.spec == spec:
            log.info("land-cover world already in %s (overwrite=true regenerates)", out_dir)
            return world
    t0 = time.perf_counter()
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("scenes/landsat", "scenes/sentinel2", "truth", "points"):
        (tmp / sub).mkdir(parents=True)

    n = spec.size
    x0, y0 = spec.origin
    t30 = Affine(30.0, 0.0, x0, 0.0, -30.0, y0)
    br0, bc0, br1, bc1 = (round(f * n) for f in spec.block)
    bounds = (x0 + bc0 * 30.0, y0 - br1 * 30.0, x0 + bc1 * 30.0, y0 - br0 * 30.0)
    land = build_landscape(spec)
    world = LandcoverWorld(
        root=out_dir,
        spec=spec,
        crs=CRS,
        transform_30m=tuple(t30)[:6],
        test_block=(br0, bc0, br1, bc1),
        test_block_bounds=bounds,
        events=land.events,
    )
    (tmp / "legend.yaml").write_text(_legend_yaml())
    gpd.GeoDataFrame(
        {"name": ["test_block"], "split": ["test"]}, geometry=[shp_box(*bounds)], crs=CRS
    ).to_file(tmp / "regions.geojson", driver="GeoJSON")

    block = np.zeros((n, n), dtype=bool)
    block[br0:br1, bc0:bc1] = True
    b = spec.buffer_px
    near = np.zeros((n, n), dtype=bool)
    near[max(br0 - b, 0) : br1 + b, max(bc0 - b, 0) : bc1 + b] = True
    inner = np.zeros((n, n), dtype=bool)
    inner[2:-2, 2:-2] = True  # keep points off the raster border
    rng_var = np.random.default_rng(np.random.SeedSequence([spec.seed, 5]))
    # Within-class variation fixed in time: smooth (soil, canopy density) and per pixel.
    variation = (
        1.0
        + 0.05 * _smooth_noise(rng_var, n, 8)
        + 0.03 * rng_var.standard_normal((n, n)).astype(np.float32)
    ).astype(np.float32)
    colours = _colours()
    world.scenes = {"landsat": [], "sentinel2": []}
    for year in spec.years:
        cover = land.cover_map(year)
        truth = COVER_TO_CLASS[cover]
        _write(tmp / f"truth/truth_{year}.tif", truth, t30, 0, ("CLASS",), colormap=colours)
        _write(tmp / f"truth/cover_{year}.tif", cover, t30, 0, ("COVER",))
        world.truth[year] = f"truth/truth_{year}.tif"
        world.cover[year] = f"truth/cover_{year}.tif"
        rng_pts = np.random.default_rng(np.random.SeedSequence([spec.seed, 6, year]))
        r_tr, c_tr = _sample_points(rng_pts, truth, inner & ~near, spec.points_per_class)
        r_te, c_te = _sample_points(rng_pts, truth, inner & block, spec.test_points_per_class)
        rows, cols = np.concatenate([r_tr, r_te]), np.concatenate([c_tr, c_te])
        classes = truth[rows, cols].astype(np.int32)
        gpd.GeoDataFrame(
            {
                "class": classes,
                "class_name": [CLASSES[int(k)][0] for k in classes],
                "cover": cover[rows, cols].astype(np.int32),
                "split": ["train"] * len(r_tr) + ["test"] * len(r_te),
                "year": np.full(rows.size, year, dtype=np.int32),
            },
            geometry=gpd.points_from_xy(x0 + (cols + 0.5) * 30.0, y0 - (rows + 0.5) * 30.0),
            crs=CRS,
        ).to_file(tmp / f"points/points_{year}.gpkg", driver="GPKG", layer="points")
        world.points[year] = f"points/points_{year}.gpkg"

        state = year_state(land, spec, year)
        rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 7, year]))
        water = np.isin(cover, [C_WATER])
        clear_count = np.zeros((n, n), dtype=np.int32)
        seen: dict[str, np.ndarray] = {}  # date -> clear mask (one count per day)
        n_kind = {"landsat": 0, "sentinel2": 0}
        for kind, platform, date in acquisitions(spec, year):
            doy = date.timetuple().tm_yday
            table = parcel_reflectance(state, doy)
            # Moisture, view angle, residual atmosphere: a brightness factor per parcel and date.
            table *= (1 + 0.04 * rng.standard_normal((table.shape[0], 1))).astype(np.float32)
            refl = np.moveaxis(table[land.parcel], -1, 0) * variation[None]
            refl = ndimage.gaussian_filter(refl, sigma=(0, 0.45, 0.45))  # mixed edge pixels
            cloud, shadow, opacity = _clouds(rng, n, doy)
            stamp = date.strftime("%Y%m%d")
            name = f"{platform}_{stamp}"
            if kind == "sentinel2":
                refl = refl + 0.004 * rng.standard_normal(refl.shape).astype(np.float32)
                refl = _apply_clouds(refl, cloud, shadow, opacity)
                scl = np.where(ndvi(np.moveaxis(refl, 0, -1)) > 0.3, 4, 5).astype(np.uint8)
                scl[water] = 6
                scl[shadow] = 3
                scl[cloud] = np.where(opacity[cloud] > 0.6, 9, 8)
                clear = np.isin(scl, (4, 5, 6))
                folder, mask_name, mask = "sentinel2", f"{name}_SCL.tif", np.asarray(scl)
                dn = _to_int16(refl)
            else:
                gain, offset = (
                    np.asarray(v, np.float32)[:, None, None] for v in _LANDSAT_SENSORS[platform]
                )
                refl = gain * refl + offset
                refl = refl + 0.006 * rng.standard_normal(refl.shape).astype(np.float32)
                refl = _apply_clouds(refl, cloud, shadow, opacity)
                qa = np.full((n, n), 1 << 6, dtype=np.uint16)  # clear
                qa[water] |= 1 << 7
                qa[shadow] = 1 << 4
                qa[cloud] = (1 << 3) | (1 << 1)
                dn = _to_int16(refl)
                if platform == "LE07" and date > SLC_FAILURE:
                    gaps = _slc_gaps(rng, n)
                    dn[:, gaps] = SCENE_NODATA
                    qa[gaps] = 1
                clear = (qa & 0b111011) == 0
                folder, mask_name, mask = "landsat", f"{name}_QA_PIXEL.tif", np.asarray(qa)
            _write(
                tmp / f"scenes/{folder}/{name}.tif",
                dn,
                t30,
                SCENE_NODATA,
                BANDS,
                {"SENSOR": platform, "DATE": date.isoformat()},
            )
            _write(tmp / f"scenes/{folder}/{mask_name}", mask, t30, None, (mask_name[-7:-4],))
            world.scenes[folder].append(f"scenes/{folder}/{name}.tif")
            n_kind[kind] += 1
            seen[stamp] = seen[stamp] | clear if stamp in seen else clear
        for clear in seen.values():
            clear_count += clear
        shares = np.bincount(truth.ravel(), minlength=16) / truth.size
        world.stats[year] = {
            "landsat_scenes": n_kind["landsat"],
            "sentinel2_scenes": n_kind["sentinel2"],
            "clear_per_pixel": round(float(clear_count.mean()), 2),
            "clear_per_pixel_min": int(clear_count.min()),
            "class_share": {CLASSES[k][0]: round(float(shares[k]), 4) for k in CLASSES},
            "points_train": len(r_tr),
            "points_test": len(r_te),
        }

    (tmp / "world.json").write_text(world.to_json())
    (tmp / "README").write_text(_readme(world))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    log.info(
        "land-cover world %s (%dx%d px, %d years, %d Landsat + %d Sentinel-2 scenes) in %.1f s "
        "-> %s",
        "custom" if isinstance(size, LandcoverSpec) else size,
        n,
        n,
        len(spec.years),
        len(world.scenes["landsat"]),
        len(world.scenes["sentinel2"]),
        time.perf_counter() - t0,
        out_dir,
    )
    return world


def _main() -> None:
    from omegaconf import DictConfig

    from bsrlc.cli import hydra_entry
    from bsrlc.config import conf_dir

    @hydra_entry(config_path=conf_dir(), config_name="landcover_world")
    def main(cfg: DictConfig) -> None:
        generate(
            str(cfg.size),
            cfg.out_dir,
            overwrite=bool(cfg.overwrite),
            seed=None if cfg.seed is None else int(cfg.seed),
        )

    main()


if __name__ == "__main__":
    _main()
