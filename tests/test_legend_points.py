"""Legends (presets, lookups, colour maps, errors) and reference points (formats, CRS, bounds)."""

from __future__ import annotations

import logging
import warnings

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from omegaconf import OmegaConf
from pyproj import Transformer

from bsrlc.data.legend import Legend
from bsrlc.data.points import locate, point_arrays, points_to_pixels, read_points
from bsrlc.errors import ConfigError, InputError
from bsrlc.raster import raster_info, write_cog

# -- legend ------------------------------------------------------------------------------------


def test_presets_load() -> None:
    urban = Legend.from_config("urban")
    assert urban.codes == [1, 2, 3, 4] and urban.nodata == 0
    assert urban.names[2].startswith("artificial open spaces")
    land = Legend.from_config("landcover")
    assert len(land) == 13
    assert {"cereals", "rapeseed", "maize", "peatland and bog", "water"} <= set(land.names)
    assert Legend.from_config(urban.to_config()) == Legend(
        urban.name, urban.classes, urban.nodata, "config"
    )


def test_lookups_and_colormap() -> None:
    legend = Legend.from_config(
        {
            "name": "t",
            "classes": [
                {"code": 3, "name": "a", "colour": "#FF0000"},
                {"code": 7, "name": "b", "colour": [0, 128, 255]},
                {"code": 9, "name": "c", "colour": "00ff00"},
            ],
        }
    )
    assert legend.index_of(7) == 1 and legend.code_of(2) == 9
    np.testing.assert_array_equal(legend.index_of(np.array([[3, 9], [0, 5]])), [[0, 2], [-1, -1]])
    codes = legend.code_of(np.array([0, 1, 2, -1]))
    assert codes.dtype == np.uint8 and codes.tolist() == [3, 7, 9, 0]
    assert legend.name_of(9) == "c"
    assert legend.colormap() == {
        0: (0, 0, 0, 0),
        3: (255, 0, 0, 255),
        7: (0, 128, 255, 255),
        9: (0, 255, 0, 255),
    }
    with pytest.raises(ValueError, match="not in legend"):
        legend.index_of(4)
    # an OmegaConf node works as well (how Hydra passes it)
    assert Legend.from_config(OmegaConf.create(legend.to_config())).codes == [3, 7, 9]


def test_colormap_written_to_a_class_map(tmp_path) -> None:
    legend = Legend.from_config("urban")
    path = tmp_path / "map.tif"
    arr = np.array([[0, 1], [2, 4]], np.uint8)
    write_cog(path, arr, crs="EPSG:3035", transform=Affine(10, 0, 0, 0, -10, 20), nodata=0,
              colormap=legend.colormap())  # fmt: skip
    with rasterio.open(path) as src:
        assert src.colormap(1)[1] == (230, 25, 75, 255)
        assert src.colormap(1)[4] == legend.colormap()[4]


@pytest.mark.parametrize(
    ("classes", "match"),
    [
        ([{"code": 1, "name": "a"}, {"code": 1, "name": "b"}], "duplicate class codes"),
        ([{"code": 0, "name": "a"}], "nodata"),
        ([{"code": 256, "name": "a"}], "1..255"),
        ([{"code": 1, "name": "a", "colour": "red"}], "colour"),
        ([{"code": 1, "name": "a"}, {"code": 2, "name": "A"}], "duplicate class names"),
        ([{"name": "a"}], "needs a code"),
        ([], "no classes"),
    ],
)
def test_bad_legends(classes: list, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Legend.from_config({"name": "bad", "classes": classes})


def test_unknown_preset_lists_presets() -> None:
    with pytest.raises(ConfigError, match="landcover, urban"):
        Legend.from_config("nope")


def test_validate_lists_unknown_classes_and_names_the_file() -> None:
    legend = Legend.from_config("urban")
    legend.validate([1, 2, 2.0, 4], "ok.gpkg")
    with pytest.raises(InputError) as err:
        legend.validate([1, 5, 5, 9, 2], "data/points.gpkg")
    msg = str(err.value)
    assert msg.startswith("data/points.gpkg: ")
    assert "5 (2 samples), 9" in msg and "1=residential buildings" in msg
    assert "\n" not in msg


# -- points ------------------------------------------------------------------------------------

LONLAT = np.array([[13.40, 52.52], [13.41, 52.53], [13.38, 52.51], [13.45, 52.50]])
CODES = [1, 2, 3, 4]
TO_3035 = Transformer.from_crs("EPSG:4326", "EPSG:3035", always_xy=True)


def _frame() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"class": CODES, "split": ["train", "train", "test", "test"]},
        geometry=gpd.points_from_xy(LONLAT[:, 0], LONLAT[:, 1]),
        crs="EPSG:4326",
    )


@pytest.mark.parametrize(("suffix", "driver"), [(".gpkg", "GPKG"), (".geojson", "GeoJSON"),
                                                (".shp", "ESRI Shapefile"), (".csv", None)])  # fmt: skip
def test_read_points_formats_and_reprojection(tmp_path, suffix: str, driver: str | None) -> None:
    path = tmp_path / f"points{suffix}"
    if driver is None:
        pd.DataFrame({"x": LONLAT[:, 0], "y": LONLAT[:, 1], "class": CODES}).to_csv(path)
        kwargs = {"crs": "EPSG:4326"}
    else:
        _frame().to_file(path, driver=driver)
        kwargs = {}
    legend = Legend.from_config("urban")
    pts = read_points(path, legend=legend, target_crs="EPSG:3035", **kwargs)
    assert pts.crs.to_epsg() == 3035
    assert pts["class"].tolist() == CODES and pts.attrs["source"] == str(path)
    xs, ys, codes, _ = point_arrays(pts)
    ex, ey = TO_3035.transform(LONLAT[:, 0], LONLAT[:, 1])
    np.testing.assert_allclose(xs, ex, atol=1e-3)
    np.testing.assert_allclose(ys, ey, atol=1e-3)
    assert codes.dtype == np.int64


def test_csv_crs_column_and_class_names(tmp_path) -> None:
    path = tmp_path / "pts.csv"
    ex, ey = TO_3035.transform(LONLAT[2:, 0], LONLAT[2:, 1])
    pd.DataFrame(
        {
            "x": [*LONLAT[:2, 0], *ex],
            "y": [*LONLAT[:2, 1], *ey],
            "crs": ["EPSG:4326", "EPSG:4326", "EPSG:3035", "EPSG:3035"],
            "label": [
                "Residential buildings",
                "industrial buildings",
                " non built-up",
                "non built-up",
            ],
        }
    ).to_csv(path, index=False)
    legend = Legend.from_config("urban")
    pts = read_points(path, "label", legend=legend, target_crs="EPSG:3035")
    assert pts["class"].tolist() == [1, 2, 4, 4]
    xs, ys, _, _ = point_arrays(pts)
    fx, fy = TO_3035.transform(LONLAT[:, 0], LONLAT[:, 1])
    np.testing.assert_allclose(xs, fx, atol=1e-3)
    np.testing.assert_allclose(ys, fy, atol=1e-3)
    with pytest.raises(InputError, match=r"unknown class name\(s\) \['roads'\]"):
        bad = pd.read_csv(path).assign(label=["roads", "maize", "maize", "maize"][:1] * 4)
        bad.to_csv(tmp_path / "bad.csv", index=False)
        read_points(tmp_path / "bad.csv", "label", legend=legend)


def test_point_errors(tmp_path) -> None:
    legend = Legend.from_config("urban")
    with pytest.raises(InputError, match="not found"):
        read_points(tmp_path / "missing.gpkg")
    path = tmp_path / "p.gpkg"
    _frame().to_file(path)
    with pytest.raises(InputError) as err:
        read_points(path, "landuse")
    assert str(err.value).startswith(str(path)) and "['class', 'split']" in str(err.value)
    frame = _frame()
    frame["class"] = [1, 7, 7, 12]
    frame.to_file(tmp_path / "u.gpkg")
    with pytest.raises(InputError, match=r"u\.gpkg: unknown class code\(s\) 7 \(2 samples\), 12"):
        read_points(tmp_path / "u.gpkg", legend=legend)
    csv = tmp_path / "nocrs.csv"
    pd.DataFrame({"x": [1.0], "y": [2.0], "class": [1]}).to_csv(csv, index=False)
    with pytest.raises(InputError, match="need a CRS"):
        read_points(csv)
    nocrs = tmp_path / "nocrs.shp"  # (GeoJSON is always WGS 84)
    with warnings.catch_warnings():  # pyogrio warns that the file will have no CRS: intended
        warnings.simplefilter("ignore")
        gpd.GeoDataFrame({"class": [1]}, geometry=gpd.points_from_xy([1.0], [2.0])).to_file(nocrs)
    with pytest.raises(InputError, match="no CRS"):
        read_points(nocrs)
    assert read_points(nocrs, crs="EPSG:3035").crs.to_epsg() == 3035
    with pytest.raises(InputError, match="split column"):
        read_points(path, split_column="fold")


def test_points_to_pixels_floor() -> None:
    t = Affine(10, 0, 100, 0, -10, 500)
    xs = np.array([100.0, 105.0, 110.0, 109.999, 99.9])
    ys = np.array([500.0, 495.0, 490.0, 490.001, 500.0])
    rows, cols = points_to_pixels(xs, ys, t)
    assert rows.tolist() == [0, 0, 1, 0, 0] and cols.tolist() == [0, 0, 1, 0, -1]
    assert rows.dtype == np.int64
    assert points_to_pixels(np.array([]), np.array([]), t)[0].size == 0


def test_locate_drops_and_counts_outside_points(tmp_path, caplog) -> None:
    # a raster in EPSG:3035 around the first three points; the fourth lies east of it
    ex, ey = TO_3035.transform(LONLAT[:, 0], LONLAT[:, 1])
    left, top = min(ex[:3]) - 500, max(ey[:3]) + 500
    width = int((max(ex[:3]) + 500 - left) // 10)
    height = int((top - min(ey[:3]) + 500) // 10)
    t = Affine(10, 0, left, 0, -10, top)
    raster = tmp_path / "r.tif"
    write_cog(raster, np.ones((1, height, width), np.uint8), crs="EPSG:3035", transform=t)
    info = raster_info(raster)
    gpkg = tmp_path / "p.gpkg"
    _frame().to_file(gpkg)
    pts = read_points(gpkg)  # still EPSG:4326: locate reprojects
    legend = Legend.from_config("urban")
    with caplog.at_level(logging.WARNING):
        samples = locate(pts, info, legend)
    assert "1 of 4 points lie outside" in caplog.text
    assert len(samples) == 3 and samples.codes.tolist() == [1, 2, 3]
    assert samples.frame["split"].tolist() == ["train", "train", "test"]
    rows, cols = points_to_pixels(np.asarray(ex[:3]), np.asarray(ey[:3]), t)
    np.testing.assert_array_equal(samples.rows, rows)
    np.testing.assert_array_equal(samples.cols, cols)
    far = pts.iloc[[3]].copy()
    with pytest.raises(InputError, match="all 1 points lie outside"):
        locate(far, info, legend)
