"""The generated land-cover world (bsrlc.data.landcover_world): truth, phenology, observations."""

from __future__ import annotations

import itertools
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from bsrlc.data import landcover_world as lw
from bsrlc.stm.compose import discover_scenes

BANDS = ["BLU", "GRN", "RED", "NIR", "SW1", "SW2"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> lw.LandcoverWorld:
    return lw.generate("tiny", tmp_path_factory.mktemp("lcw") / "tiny")


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


_DAYS: dict[tuple[Path, int], tuple[dict[str, np.ndarray], dict]] = {}


def _clear_days(world: lw.LandcoverWorld, year: int) -> tuple[dict[str, np.ndarray], dict]:
    """Clear masks per day (union of the sensors) from the QA files, and the scene stacks."""
    if (world.root, year) in _DAYS:
        return _DAYS[world.root, year]
    days: dict[str, np.ndarray] = {}
    scenes: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for rel in world.scenes["sentinel2"] + world.scenes["landsat"]:
        path = world.root / rel
        stamp = path.stem.split("_")[1]
        if not stamp.startswith(str(year)):
            continue
        if "sentinel2" in rel:
            clear = np.isin(_read(path.with_name(path.stem + "_SCL.tif"))[0], (4, 5, 6))
        else:
            qa = _read(path.with_name(path.stem + "_QA_PIXEL.tif"))[0]
            clear = (qa & 0b111011) == 0
        days[stamp] = days[stamp] | clear if stamp in days else clear
        scenes.setdefault(stamp, []).append((_read(path), clear))
    _DAYS[world.root, year] = days, scenes
    return days, scenes


def test_same_seed_same_world_and_another_seed_another(tmp_path):
    spec = lw.LandcoverSpec(
        size=30,
        years=(2015, 2016),
        s2_from=2016,
        landsat_sparse=3,
        landsat_dense=2,
        s2_per_year=3,
        field_px=6.0,
        points_per_class=4,
        test_points_per_class=2,
        buffer_px=1,
    )
    a = lw.generate(spec, tmp_path / "a")
    b = lw.generate(spec, tmp_path / "b")
    c = lw.generate(spec, tmp_path / "c", seed=8)
    files = sorted(p.relative_to(a.root) for p in a.root.rglob("*.tif"))
    assert len(files) == 2 * 2 + 2 * (3 + 2 + 3)  # truth + cover per year, scene + mask each
    for rel in files:
        np.testing.assert_array_equal(_read(a.root / rel), _read(b.root / rel))
    pa = gpd.read_file(a.root / a.points[2016])
    pb = gpd.read_file(b.root / b.points[2016])
    assert pa.geometry.equals(pb.geometry) and (pa["class"] == pb["class"]).all()
    assert a.scenes == b.scenes and a.stats == b.stats
    assert a.scenes != c.scenes  # other orbits and dates
    assert not np.array_equal(_read(a.root / a.truth[2016]), _read(c.root / c.truth[2016]))
    assert not (tmp_path / "a.partial").exists()
    # An existing world of the same spec is reused, not rewritten.
    mtime = (a.root / "world.json").stat().st_mtime_ns
    lw.generate(spec, tmp_path / "a")
    assert (a.root / "world.json").stat().st_mtime_ns == mtime


def test_unknown_size_is_refused_in_one_line(tmp_path):
    from bsrlc.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^size=huge: unknown .* use one of tiny, demo$"):
        lw.generate("huge", tmp_path / "x")


def test_crops_rotate_per_field_and_follow_the_rules(world):
    land = lw.build_landscape(world.spec)
    arable = np.nonzero(land.kind == lw.C_WHEAT)[0]
    years = world.spec.years
    for year in years:  # the written cover maps are the landscape's, the truth their classes
        cover = _read(world.root / world.cover[year])[0]
        np.testing.assert_array_equal(cover, land.cover_map(year))
        truth = _read(world.root / world.truth[year])[0]
        np.testing.assert_array_equal(truth, lw.COVER_TO_CLASS[cover])
    for y0, y1 in itertools.pairwise(years):
        c0, c1 = land.cover_of(y0)[arable], land.cover_of(y1)[arable]
        changed = float(np.mean(c0 != c1))
        assert changed > 0.75, (y0, y1, changed)
        assert not np.any((c0 == lw.C_RAPE) & (c1 == lw.C_RAPE))  # never rapeseed twice
        assert not np.any((c0 == lw.C_BEET) & (c1 == lw.C_BEET))
        assert np.all(c1[c0 == lw.C_RAPE] != lw.C_MAIZE)  # rapeseed -> cereals only
    # Every crop occurs every year, and permanent covers stay put.
    for year in years:
        present = set(np.unique(land.cover_of(year)[arable]).tolist())
        assert present == set(lw.CROPS)
    fixed = np.isin(land.kind, [lw.C_GRASS, lw.C_BROADLEAF, lw.C_CONIFER, lw.C_WATER])
    assert all(
        np.array_equal(land.cover_of(years[0])[fixed], land.cover_of(y)[fixed]) for y in years
    )


def test_a_bog_is_drained_and_one_restored_during_the_series(world):
    land = lw.build_landscape(world.spec)
    years = world.spec.years
    for name, before, after in (
        ("drained", lw.BOG_INTACT, lw.BOG_DRAINED),
        ("restored", lw.BOG_DRAINED, lw.BOG_INTACT),
    ):
        ev = world.events[name]
        rows, cols = np.nonzero(land.parcel == ev["parcel"])
        assert rows.size >= 9  # a parcel of some size
        for year in years:
            truth = _read(world.root / world.truth[year])[0][rows, cols]
            assert np.all(truth == (after if year >= ev["year"] else before)), (name, year)
        assert years[0] < ev["year"] <= years[-1]
    assert world.events["drained"]["year"] < world.events["restored"]["year"]
    # Drained bog is drier than intact bog (higher SWIR in summer), wetter in spring when intact.
    st = lw.year_state(land, world.spec, years[-1])
    intact = st.cover == lw.C_BOG
    drained = st.cover == lw.C_BOG_DRAINED
    summer, spring = lw.parcel_reflectance(st, 200), lw.parcel_reflectance(st, 90)
    assert summer[drained, 4].mean() > summer[intact, 4].mean() + 0.04
    assert spring[intact, 3].mean() < spring[drained, 3].mean()  # flooded moss: low NIR


def test_dense_years_have_many_more_clear_observations(world):
    spec = world.spec
    mean = {}
    for year in spec.years:
        days, _ = _clear_days(world, year)
        count = np.sum(list(days.values()), axis=0)
        mean[year] = float(count.mean())
        assert mean[year] == pytest.approx(world.stats[year]["clear_per_pixel"], abs=0.01)
        n_s2 = world.stats[year]["sentinel2_scenes"]
        assert (n_s2 > 0) == (year >= spec.s2_from)
    sparse = [m for y, m in mean.items() if y < spec.s2_from]
    dense = [m for y, m in mean.items() if y >= spec.s2_from]
    assert all(6 <= m <= 15 for m in sparse), mean
    assert all(28 <= m <= 70 for m in dense), mean
    assert min(dense) > 3 * max(sparse)
    # Landsat-7 scenes after the SLC failure have gaps (fill in QA and nodata in the bands).
    le07 = [p for p in world.scenes["landsat"] if Path(p).name.startswith("LE07")]
    assert le07
    qa = _read(world.root / Path(le07[0]).with_name(Path(le07[0]).stem + "_QA_PIXEL.tif"))[0]
    fill = qa == 1
    assert 0.1 < fill.mean() < 0.25
    assert np.all(_read(world.root / le07[0])[:, fill] == lw.SCENE_NODATA)


def _peak_days(world: lw.LandcoverWorld, year: int) -> dict[int, float]:
    """Day of the peak of the median NDVI of each crop's clear pixels, from the scenes."""
    cover = _read(world.root / world.cover[year])[0]
    _, scenes = _clear_days(world, year)
    out = {}
    for crop in lw.CROPS:
        where = cover == crop
        series = []
        for stamp, stack in sorted(scenes.items()):
            vals = []
            for dn, clear in stack:
                ok = where & clear
                if ok.sum() >= 20:
                    vals.append(np.median(lw.ndvi(np.moveaxis(dn[:, ok], 0, -1) * 1e-4)))
            if vals:
                doy = (
                    np.datetime64(f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:]}")
                    - np.datetime64(f"{year}-01-01")
                ).astype(int) + 1
                series.append((doy, float(np.mean(vals))))
        if len(series) < 10:  # too few fields of this crop in the tiny world this year
            continue
        d, v = np.array(series).T
        smooth = np.convolve(v, np.ones(3) / 3, mode="same")  # a 3-date running mean
        out[crop] = float(d[np.argmax(smooth)])
    return out


def test_crops_differ_by_the_timing_of_their_peak(world):
    year = world.spec.years[-1]
    peaks = _peak_days(world, year)
    diffs = [abs(a - b) for a, b in itertools.combinations(peaks.values(), 2)]
    assert np.mean(diffs) > 20, peaks
    assert peaks[lw.C_MAIZE] - peaks[lw.C_WHEAT] > 50, peaks
    assert peaks[lw.C_BARLEY] - peaks[lw.C_WHEAT] > 15, peaks
    assert len(peaks) >= 5
    # ... more than by their annual level: the crops' mean NDVI over the season is alike.
    land = lw.build_landscape(world.spec)
    st = lw.year_state(land, world.spec, year)
    doys = np.arange(1, 366, 5)
    curves = np.array([lw.ndvi(lw.parcel_reflectance(st, d)) for d in doys])
    level = {c: float(np.median(curves[:, st.cover == c])) for c in lw.CROPS}
    assert max(level.values()) - min(level.values()) < 0.25, level


def test_grassland_is_mown_on_its_own_dates(world):
    land = lw.build_landscape(world.spec)
    st = lw.year_state(land, world.spec, world.spec.years[-1])
    ids = np.nonzero((st.cover == lw.C_GRASS) & np.isfinite(st.cuts[:, 1]))[0]
    assert ids.size >= 3
    first = st.cuts[ids, 0]
    assert np.ptp(first) > 10  # parcels are cut on different days
    p = ids[0]
    before = lw.ndvi(lw.parcel_reflectance(st, first[0] - 1)[p])
    after = lw.ndvi(lw.parcel_reflectance(st, first[0] + 2)[p])
    later = lw.ndvi(lw.parcel_reflectance(st, first[0] + 30)[p])
    assert before - after > 0.15 and later - after > 0.15  # cut, then regrowth


def test_points_per_year_are_stratified_and_split_by_the_block(world):
    from bsrlc.data.legend import load_legend
    from bsrlc.data.points import read_points

    legend = load_legend(world.root / world.legend)
    assert [c.code for c in legend.classes] == list(lw.CLASSES)
    read = read_points(world.root / world.points[world.spec.years[0]], legend=legend)
    assert set(read["class"]) == set(lw.CLASSES)  # bsrlc reads them with the world's legend
    r0, c0, r1, c1 = world.test_block
    b = world.spec.buffer_px
    x0, y0 = world.spec.origin
    for year in world.spec.years:
        pts = gpd.read_file(world.root / world.points[year])
        truth = _read(world.root / world.truth[year])[0]
        cols = ((pts.geometry.x - x0) / 30 - 0.5).round().astype(int).to_numpy()
        rows = ((y0 - pts.geometry.y) / 30 - 0.5).round().astype(int).to_numpy()
        np.testing.assert_array_equal(truth[rows, cols], pts["class"].to_numpy())
        inside = (rows >= r0) & (rows < r1) & (cols >= c0) & (cols < c1)
        near = (rows >= r0 - b) & (rows < r1 + b) & (cols >= c0 - b) & (cols < c1 + b)
        test = (pts["split"] == "test").to_numpy()
        assert np.all(inside[test]) and not np.any(near[~test])
        counts = pts[~test]["class"].value_counts()
        assert set(counts.index) == set(lw.CLASSES)  # every class has training points
        assert counts.max() == world.spec.points_per_class
        assert set(pts[test]["class"]) >= {lw.CEREALS, lw.BOG_INTACT, lw.BOG_DRAINED, lw.WATER}
        assert (pts["year"] == year).all()


def test_scenes_are_readable_by_the_timeseries_store(world, tmp_path):
    from bsrlc.timeseries.__main__ import sensor_config
    from bsrlc.timeseries.store import ObservationStore, build_store, day_index, folder_source

    year = world.spec.years[-1]
    root = world.root / "scenes"
    s2 = folder_source(root / "sentinel2", sensor_config("demo_sentinel2"), BANDS, year)
    ls = folder_source(root / "landsat", sensor_config("demo_landsat"), BANDS, year)
    [path] = build_store([s2, ls], tmp_path, year)
    st = ObservationStore(path)
    days, scenes = _clear_days(world, year)
    expected = np.sum(list(days.values()), axis=0)
    n = world.spec.size
    np.testing.assert_array_equal(st.counts(np.arange(n * n)).reshape(n, n), expected)
    # A pixel's observations are its clear days, Sentinel-2 first where both are clear.
    r, c = 40, 30
    obs = st.gather(st.pixel_index([r], [c]))
    stamps = sorted(s for s, m in days.items() if m[r, c])
    assert [int(d) for d in obs.day] == [
        day_index(np.datetime64(f"{s[:4]}-{s[4:6]}-{s[6:]}").astype(object)) for s in stamps
    ]
    for k, s in enumerate(stamps):
        dn = next(dn for dn, clear in scenes[s] if clear[r, c])  # S2 is listed first
        assert obs.values[k].tolist() == dn[:, r, c].tolist()
    # bsrlc.stm finds the same scenes.
    assert len(discover_scenes(root / "landsat", sensor_config("demo_landsat"), BANDS)) == len(
        world.scenes["landsat"]
    )
