"""The target grid (bsrlc.stm.grid): nested 30/10 m pixels, stable FORCE-style tile ids, areas."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from odc.geo.geom import box

from bsrlc.errors import ConfigError, InputError
from bsrlc.stm.grid import (
    DEFAULT_ORIGIN,
    TargetGrid,
    area_from_bounds,
    area_from_rasters,
    area_from_region,
    parse_tile_id,
    resolve_area,
    tile_id,
    windows,
)


def _assert_nested(coarse, fine, f=3):
    """Every coarse pixel is exactly f x f fine pixels: same corners, integer arithmetic."""
    assert fine.shape.yx == (coarse.shape.y * f, coarse.shape.x * f)
    assert fine.crs == coarse.crs
    assert fine.affine == coarse.affine * Affine.scale(1 / f)
    rows, cols = np.mgrid[0 : coarse.shape.y + 1 : 7, 0 : coarse.shape.x + 1 : 7]
    xc, yc = coarse.affine * (cols, rows)
    xf, yf = fine.affine * (cols * f, rows * f)
    np.testing.assert_array_equal(xc, xf)  # exact, not approximately
    np.testing.assert_array_equal(yc, yf)
    # every fine pixel centre lies inside the coarse pixel it belongs to
    fr, fc = np.mgrid[0 : fine.shape.y : 5, 0 : fine.shape.x : 5]
    x, y = fine.affine * (fc + 0.5, fr + 0.5)
    cc, cr = ~coarse.affine * (x, y)
    np.testing.assert_array_equal(np.floor(cc).astype(int), fc // f)
    np.testing.assert_array_equal(np.floor(cr).astype(int), fr // f)


@pytest.mark.parametrize("index", [(0, 0), (151, 130), (12, 34), (-3, 250)])
def test_every_30m_pixel_holds_exactly_3x3_10m_pixels(index):
    grid = TargetGrid()
    tile = grid.tile(index)
    assert tile.geobox.shape.yx == (1000, 1000)
    assert tile.fine.shape.yx == (3000, 3000)
    _assert_nested(tile.geobox, tile.fine)
    assert tile.geobox.extent.boundingbox == tile.fine.extent.boundingbox


def test_area_geoboxes_nest_and_snap_to_the_grid():
    grid = TargetGrid()
    area = area_from_bounds([4_500_010, 3_200_005, 4_531_000, 3_250_000], grid.crs)
    coarse, fine = grid.geobox(area), grid.geobox(area, fine=True)
    _assert_nested(coarse, fine)
    x0, y0, x1, y1 = coarse.boundingbox
    assert x0 <= 4_500_010 and y0 <= 3_200_005 and x1 >= 4_531_000 and y1 >= 3_250_000
    ox, oy = DEFAULT_ORIGIN
    for v, o in ((x0, ox), (x1, ox), (y0, oy), (y1, oy)):
        assert (v - o) % 30 == 0  # on the grid's 30 m lattice


def test_other_resolutions_nest_too():
    grid = TargetGrid(resolution=20.0, fine_factor=2, tile_size=20_000)
    tile = grid.tile("X0003_Y0004")
    assert tile.geobox.shape.yx == (1000, 1000)
    _assert_nested(tile.geobox, tile.fine, f=2)


def test_tile_ids_are_stable():
    grid = TargetGrid()
    assert tile_id(12, 34) == "X0012_Y0034"
    assert tile_id(-1, 3) == "X-001_Y0003"
    assert parse_tile_id("X0012_Y0034") == (12, 34)
    assert parse_tile_id(tile_id(-7, 250)) == (-7, 250)
    # pinned numbers: a change of the default grid would rename every user's tiles
    t = grid.tile("X0012_Y0034")
    assert (t.ix, t.iy) == (12, 34)
    assert t.geobox.affine == Affine(30, 0, 360_000, 0, -30, 7_200_000 - 34 * 30_000)
    assert grid.tile_of_point(13.4050, 52.5200, "EPSG:4326").id == "X0151_Y0130"  # Berlin
    assert grid.tile_of_point(4_545_000, 3_285_000).id == "X0151_Y0130"
    # a point on a tile edge belongs to the tile east / south of it
    assert grid.tile_index(360_000, 6_180_000) == (12, 34)
    assert grid.tile_index(359_999.9, 6_180_000.1) == (11, 33)
    # neighbours share their edges exactly
    a, b, c = grid.tile((5, 5)), grid.tile((6, 5)), grid.tile((5, 6))
    assert a.geobox.boundingbox.right == b.geobox.boundingbox.left
    assert a.geobox.boundingbox.bottom == c.geobox.boundingbox.top


def test_tiles_cover_an_area_row_by_row():
    grid = TargetGrid()
    area = area_from_bounds([4_500_000, 3_200_000, 4_560_000, 3_250_000], grid.crs)
    tiles = grid.tiles(area)
    assert [t.id for t in tiles] == [
        "X0150_Y0131",
        "X0151_Y0131",
        "X0150_Y0132",
        "X0151_Y0132",
        "X0150_Y0133",
        "X0151_Y0133",
    ]
    union = tiles[0].geobox.extent
    for t in tiles[1:]:
        union = union.union(t.geobox.extent)
    assert union.contains(area)
    # an area that only touches a tile edge does not pull in the neighbour
    edge = area_from_bounds([4_500_000, 3_210_000, 4_530_000, 3_240_000], grid.crs)
    assert [t.id for t in grid.tiles(edge)] == ["X0150_Y0132"]


def _write_utm(path, epsg, x0, y0, shape=(60, 80), res=30.0):
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=shape[1],
        height=shape[0],
        count=1,
        dtype="uint16",
        crs=f"EPSG:{epsg}",
        transform=Affine(res, 0, x0, 0, -res, y0),
    ) as dst:
        dst.write(np.ones((1, *shape), np.uint16))


def test_union_of_inputs_in_other_crs(tmp_path):
    """Scenes in two UTM zones: the area is the union of their footprints in EPSG:3035."""
    grid = TargetGrid()
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    _write_utm(a, 32633, 780_000, 5_545_000)  # east edge of zone 33, ~50 N
    _write_utm(b, 32634, 216_000, 5_545_000)  # west edge of zone 34
    area = resolve_area(grid, inputs=[a, b])
    assert area.crs == grid.odc_crs
    for path, epsg in ((a, 32633), (b, 32634)):
        with rasterio.open(path) as src:
            x0, y0, x1, y1 = src.bounds
        corners = box(x0 + 1, y0 + 1, x1 - 1, y1 - 1, f"EPSG:{epsg}").to_crs(grid.crs)
        assert area.contains(corners)
    one = area_from_rasters([a], grid.crs)
    assert area.area > one.area
    assert abs(one.area - 60 * 80 * 900) / (60 * 80 * 900) < 0.01  # LAEA keeps areas
    tiles = grid.tiles(area)
    assert tiles and all(t.geobox.extent.intersects(area) for t in tiles)


def test_region_file_and_bounds(tmp_path):
    import geopandas as gpd
    from shapely.geometry import box as sbox

    grid = TargetGrid()
    path = tmp_path / "region.geojson"
    gpd.GeoDataFrame(geometry=[sbox(13.3, 52.4, 13.5, 52.6)], crs="EPSG:4326").to_file(path)
    area = resolve_area(grid, region=path)
    assert area.crs == grid.odc_crs
    assert {t.id for t in grid.tiles(area)} >= {"X0151_Y0130"}
    gpkg = tmp_path / "region.gpkg"
    gpd.GeoDataFrame(geometry=[sbox(13.3, 52.4, 13.5, 52.6)], crs="EPSG:4326").to_file(gpkg)
    assert abs(area_from_region(gpkg, grid.crs).area - area.area) < 1
    boxed = resolve_area(grid, bounds=[4_500_000, 3_200_000, 4_560_000, 3_250_000])
    assert boxed.area == 60_000 * 50_000


def test_force_datacube_definition(tmp_path):
    wkt = rasterio.crs.CRS.from_epsg(3035).to_wkt()
    cube = tmp_path / "cube"
    cube.mkdir()
    (cube / "datacube-definition.prj").write_text(
        f"PROJECTION = {wkt}\nORIGIN_LON = -25.000000\nORIGIN_LAT = 60.000000\n"
        "ORIGIN_X = 2456026.250000\nORIGIN_Y = 4574919.500000\nTILE_SIZE = 30000.000000\n"
        "BLOCK_SIZE = 3000.000000\n"
    )
    grid = TargetGrid.from_force_cube(cube)
    assert grid.origin == (2456026.25, 4574919.5)
    assert grid.tile("X0069_Y0043").geobox.affine.c == 2456026.25 + 69 * 30000
    legacy = tmp_path / "legacy.prj"
    legacy.write_text(f"{wkt}\n-25\n60\n2456026.25\n4574919.5\n30000\n3000\n")
    assert TargetGrid.from_force_cube(legacy) == grid
    with pytest.raises(InputError, match="datacube-definition.prj"):
        TargetGrid.from_force_cube(tmp_path / "nope")


def test_bad_grids_and_areas(tmp_path):
    with pytest.raises(ConfigError, match="tile_size"):
        TargetGrid(tile_size=30_010)
    with pytest.raises(ConfigError, match="geographic"):
        TargetGrid(crs="EPSG:4326")
    with pytest.raises(ConfigError, match="not a CRS"):
        TargetGrid(crs="EPSG:999999")
    with pytest.raises(ConfigError, match="X0012_Y0034"):
        parse_tile_id("12_34")
    with pytest.raises(ConfigError, match="left < right"):
        area_from_bounds([10, 0, 0, 10])
    with pytest.raises(ConfigError, match="both set"):
        resolve_area(TargetGrid(), bounds=[0, 0, 1, 1], region=tmp_path / "r.gpkg")
    with pytest.raises(InputError, match="region file not found"):
        area_from_region(tmp_path / "r.gpkg")
    with pytest.raises(InputError, match="no input rasters"):
        resolve_area(TargetGrid())
    nocrs = tmp_path / "nocrs.tif"
    with rasterio.open(
        nocrs, "w", driver="GTiff", width=4, height=4, count=1, dtype="uint8"
    ) as dst:
        dst.write(np.zeros((1, 4, 4), np.uint8))
    with pytest.raises(InputError, match="no CRS"):
        area_from_rasters([nocrs])


def test_windows_tile_a_geobox_exactly():
    tile = TargetGrid().tile((151, 130))
    got = list(windows(tile.geobox, 384))
    assert len(got) == 9
    covered = np.zeros((1000, 1000), int)
    for win, gbox in got:
        assert gbox.shape.yx == (win.height, win.width)
        assert gbox.affine == tile.geobox.affine * Affine.translation(win.col_off, win.row_off)
        covered[win.row_off : win.row_off + win.height, win.col_off : win.col_off + win.width] += 1
    assert (covered == 1).all()
    with pytest.raises(ConfigError, match="window size"):
        next(windows(tile.geobox, 0))
