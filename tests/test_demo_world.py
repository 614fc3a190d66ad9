"""Invariants of the demo world: grids, alignment, classes, growth, points, determinism."""

from __future__ import annotations

import subprocess
import sys

import geopandas as gpd
import numpy as np
import rasterio

from bsrlc.data.demo import (
    COVER_TO_URBAN,
    SIZES,
    DemoWorld,
    generate,
    landscape,
)
from bsrlc.raster import check_aligned, raster_info


def test_grids_nest_exactly(tiny_world: DemoWorld) -> None:
    l8 = raster_info(tiny_world.root / tiny_world.scenes["landsat"][0])
    s2 = raster_info(tiny_world.root / tiny_world.scenes["sentinel2"][0])
    assert l8.crs.to_epsg() == 3035 and s2.crs.to_epsg() == 3035
    assert l8.res == (30.0, 30.0) and s2.res == (10.0, 10.0)
    assert (l8.transform.c, l8.transform.f) == (s2.transform.c, s2.transform.f)
    assert (s2.width, s2.height) == (3 * l8.width, 3 * l8.height)
    check_aligned(l8, s2, 3)  # raises if they do not nest
    assert l8.descriptions == ("BLU", "GRN", "RED", "NIR", "SW1", "SW2")
    assert l8.dtype == "int16" and l8.nodata == -9999


def test_every_period_has_all_classes_and_grows(tiny_world: DemoWorld) -> None:
    built = []
    for year in tiny_world.spec.periods:
        with rasterio.open(tiny_world.root / tiny_world.truth[year]) as src:
            truth = src.read(1)
            assert src.colormap(1)[1][:3] == (230, 25, 75)
        assert set(np.unique(truth)) == {1, 2, 3, 4}
        built.append(int(np.isin(truth, [1, 2]).sum()))
    # buildings only increase (a construction site may turn into grass around an airport)
    assert built == sorted(built) and built[-1] > built[0] * 1.2


def test_structure_is_finer_than_30m() -> None:
    cover = landscape(SIZES["tiny"])[2019]
    truth = COVER_TO_URBAN[cover]
    n = truth.shape[0] // 3
    blocks = truth.reshape(n, 3, n, 3).transpose(0, 2, 1, 3).reshape(n, n, 9)
    mixed = (blocks != blocks[..., :1]).any(axis=2)
    # Houses, gardens, 1-2 px roads: many 30 m pixels hold more than one class.
    assert mixed.mean() > 0.1
    # Roads 1-2 px wide exist: road pixels with non-road on both sides.
    road = truth == 3
    thin = road[:, 1:-1] & ~road[:, :-2] & ~road[:, 2:]
    assert thin.sum() > 50


def test_landsat_sensor_model_and_slc_gaps(tiny_world: DemoWorld) -> None:
    names = [p.split("/")[-1] for p in tiny_world.scenes["landsat"]]
    assert {n[:4] for n in names} == {"LT05", "LE07", "LC08"}
    late_le07 = [p for p in tiny_world.scenes["landsat"] if "LE07_20" in p and p[-12:-8] > "2004"]
    with rasterio.open(tiny_world.root / late_le07[0]) as src:
        dn = src.read(1)
    qa_path = str(tiny_world.root / late_le07[0]).replace(".tif", "_QA_PIXEL.tif")
    with rasterio.open(qa_path) as src:
        qa = src.read(1)
    gaps = dn == -9999
    assert 0.05 < gaps.mean() < 0.35
    assert ((qa[gaps] & 1) == 1).all()  # fill bit set where the scan lines are missing


def test_scene_masks_mark_clouds(tiny_world: DemoWorld) -> None:
    cloudy = 0
    for scene in tiny_world.scenes["sentinel2"]:
        with rasterio.open(str(tiny_world.root / scene).replace(".tif", "_SCL.tif")) as src:
            scl = src.read(1)
        assert set(np.unique(scl)) <= {3, 4, 5, 6, 8, 9}
        cloudy += int(np.isin(scl, [8, 9]).any())
    assert cloudy >= 1


def test_points_split_by_held_out_block(tiny_world: DemoWorld) -> None:
    r0, c0, r1, _c1 = tiny_world.test_block_10m
    left, bottom, right, top = tiny_world.test_block_bounds
    for year in tiny_world.spec.periods:
        pts = gpd.read_file(tiny_world.root / tiny_world.points[year])
        assert pts.crs.to_epsg() == 3035
        inside = (
            (pts.geometry.x > left)
            & (pts.geometry.x < right)
            & (pts.geometry.y > bottom)
            & (pts.geometry.y < top)
        )
        assert (inside == (pts["split"] == "test")).all()
        assert set(pts.loc[pts["split"] == "test", "class"]) == {1, 2, 3, 4}
        # training points keep a 12 px (120 m) buffer from the block
        train = pts[pts["split"] == "train"]
        dx = np.maximum(np.maximum(left - train.geometry.x, train.geometry.x - right), 0)
        dy = np.maximum(np.maximum(bottom - train.geometry.y, train.geometry.y - top), 0)
        assert (np.hypot(dx, dy) >= 110).all()
        # the class column agrees with the truth map at each point
        with rasterio.open(tiny_world.root / tiny_world.truth[year]) as src:
            vals = np.array(
                [v[0] for v in src.sample(zip(pts.geometry.x, pts.geometry.y, strict=True))]
            )
        assert (vals == pts["class"].to_numpy()).all()
    assert (r1 - r0) % 3 == 0 and c0 % 3 == 0


def test_deterministic_and_reused(tmp_path, tiny_world: DemoWorld) -> None:
    again = generate("tiny", tmp_path / "again")
    for scene in tiny_world.scenes["landsat"][:3]:
        with rasterio.open(tiny_world.root / scene) as a, rasterio.open(again.root / scene) as b:
            assert np.array_equal(a.read(), b.read())
    mtime = (again.root / "world.json").stat().st_mtime_ns
    generate("tiny", tmp_path / "again")  # same spec: reused, not rewritten
    assert (again.root / "world.json").stat().st_mtime_ns == mtime
    assert (again.root / "README").read_text().startswith("# bsrlc demo world")


def test_cli(tmp_path) -> None:
    out = tmp_path / "w"
    res = subprocess.run(
        [sys.executable, "-m", "bsrlc.data.demo", "size=tiny", f"out_dir={out}"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert (out / "world.json").exists() and not (tmp_path / "w.partial").exists()
    bad = subprocess.run(
        [sys.executable, "-m", "bsrlc.data.demo", "size=huge", f"out_dir={tmp_path / 'x'}"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: size=huge")
