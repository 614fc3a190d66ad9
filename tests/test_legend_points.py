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

from bsrlc.data.legend import Legend, remap_codes
from bsrlc.data.points import (
    locate,
    point_arrays,
    points_to_pixels,
    read_points,
    warn_rare_classes,
)
from bsrlc.errors import ConfigError, InputError
from bsrlc.raster import raster_info, write_cog

# -- legend ------------------------------------------------------------------------------------


def test_presets_load() -> None:
    urban = Legend.from_config("urban")
    assert urban.codes == [1, 2, 3, 4] and urban.nodata == 0
    assert urban.names[2].startswith("artificial open spaces")
    land = Legend.from_config("landcover")
    assert len(land) == 14
    assert {"cereals", "rapeseed", "maize", "intact peat bog", "water"} <= set(land.names)
    assert land.names[-1] == "drained or extracted peat bog"
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


# -- legend.drop / legend.merge ----------------------------------------------------------------


def test_drop_and_merge_reduce_the_legend() -> None:
    urban = Legend.from_config("urban")
    assert urban.options is None and urban.original is urban  # a plain preset is as before
    reduced = Legend.from_config({"preset": "urban", "drop": [2], "merge": {3: 4}})
    assert reduced.codes == [1, 4] and reduced.names == ["residential buildings", "non built-up"]
    assert reduced.colours == [urban.colours[0], urban.colours[3]]
    assert reduced.options is not None and reduced.original == urban
    assert reduced.options.drop == (2,) and reduced.options.mapping == {3: 4}
    assert reduced.index_of(4) == 1 and reduced.code_of(1) == 4
    # the same by names (case ignored), by the methods, and in the {name, classes} form
    by_name = Legend.from_config(
        {"preset": "urban", "drop": ["Industrial buildings"], "merge": {"artificial open spaces": "non built-up"}}
    )  # fmt: skip
    assert by_name == reduced
    assert urban.without([2]).merged({3: 4}) == reduced
    assert urban.with_options(drop=2, merge={"3": "4"}) == reduced  # one code; string codes
    full = Legend.from_config({**urban.to_config(), "drop": [2], "merge": {3: 4}})
    assert full.codes == [1, 4] and full.options is not None and full.options.mapping == {3: 4}
    # the reduced legend is self-contained in metadata: no options, two classes
    again = Legend.from_config(reduced.to_config())
    assert again.codes == [1, 4] and again.options is None
    renamed = Legend.from_config({"preset": "urban", "name": "urban3", "drop": [2]})
    assert renamed.name == "urban3" and renamed.codes == [1, 3, 4]
    # empty options change nothing
    assert Legend.from_config({"preset": "urban", "drop": [], "merge": {}}) == urban
    assert urban.with_options() is urban


def test_merge_chains_resolve_and_options_compose() -> None:
    urban = Legend.from_config("urban")
    chained = urban.merged({1: 2, 2: 3})
    assert chained.codes == [3, 4] and chained.options is not None
    assert chained.options.mapping == {1: 3, 2: 3} and chained.options.drop == ()
    # options applied one after another map the full legend's codes straight to the final ones
    stepwise = urban.merged({1: 2}).merged({2: 3})
    assert stepwise.codes == [3, 4] and stepwise.options == chained.options
    dropped_later = urban.merged({3: 4}).without([4])
    assert dropped_later.codes == [1, 2] and dropped_later.options is not None
    assert dropped_later.options.drop == (3, 4) and dropped_later.options.merge == ()
    # remapping is idempotent: merge targets are never dropped or merged again
    codes = np.array([1, 2, 3, 4, 4, 1])
    once, keep, counts = chained.options.remap(codes)
    assert once.tolist() == [3, 3, 3, 4, 4, 3] and keep.all()
    assert counts.merged == {(1, 3): 2, (2, 3): 1} and counts.dropped == {}
    twice, _, counts2 = chained.options.remap(once)
    assert twice.tolist() == once.tolist() and counts2.n_merged == 0


def test_remap_codes_counts() -> None:
    new, keep, counts = remap_codes([1, 2, 2, 3, 3, 3, 4], drop=[2, 9], merge={3: 4, 1: 4})
    assert keep.tolist() == [True, False, False, True, True, True, True]
    assert new[keep].tolist() == [4, 4, 4, 4, 4]
    assert counts.dropped == {2: 2} and counts.merged == {(3, 4): 3, (1, 4): 1}
    assert counts.as_counts() == {"dropped_by_legend": 2, "merged_by_legend": 4}
    # merges act on the original codes once (chains are Legend.with_options's job)
    assert remap_codes([1, 2], merge={1: 2, 2: 3})[0].tolist() == [2, 3]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"drop": [7]}, r"legend\.drop: unknown class 7; use a code or name of 1=residential"),
        ({"drop": ["roads"]}, r"legend\.drop: unknown class 'roads'"),
        ({"merge": {3: 9}}, r"legend\.merge: unknown class 9"),
        ({"merge": {3: 2}, "drop": [2]}, r"sends class 3 .* into 2, which legend\.drop removes"),
        ({"merge": {1: 2, 2: 3}, "drop": [3]}, r"sends class 1 .* into 2 -> 3, which legend\.dr"),
        ({"merge": {2: 4}, "drop": [2]}, r"class 2 .* is in legend\.drop and legend\.merge"),
        ({"merge": {1: 2, 2: 1}}, r"legend\.merge has the cycle 1 -> 2 -> 1"),
        ({"merge": {1: 1}}, r"merges class 1 into itself"),
        ({"drop": [1, 2, 3]}, r"leave 1 class\(es\) of 4; keep at least two"),
        ({"merge": {1: 4, 2: 4, 3: 4}}, r"leave 1 class\(es\)"),
        ({"drop": {1: 2}}, r"legend\.drop=\{1: 2\} is not a list"),
        ({"merge": [3, 4]}, r"legend\.merge=\[3, 4\] is not a mapping"),
        ({"merge": {1: 4}, "classes": []}, r"legend keys \['classes'\] do not go with 'preset'"),
        ({"dorp": [2]}, r"legend keys \['dorp'\] do not go with 'preset'"),
    ],
)
def test_bad_legend_options_are_one_line(options: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        Legend.from_config({"preset": "urban", **options})
    assert "\n" not in str(err.value) and str(err.value).startswith("config")


def test_drop_without_a_preset_says_how_to_write_it() -> None:
    # what `+data.legend.drop=[2]` leaves of `legend: urban`
    with pytest.raises(ConfigError, match=r"data\.legend=\{preset:urban,drop:\[2\]\}") as err:
        Legend.from_config({"drop": [2]})
    assert "\n" not in str(err.value)


def _points_file(tmp_path, codes: list, column: str = "class") -> str:
    n = len(codes)
    frame = gpd.GeoDataFrame(
        {column: codes},
        geometry=gpd.points_from_xy(np.linspace(13.3, 13.5, n), np.full(n, 52.5)),
        crs="EPSG:4326",
    )
    path = tmp_path / "points.gpkg"
    frame.to_file(path)
    return str(path)


def test_read_points_drops_and_merges_by_code(tmp_path, caplog) -> None:
    path = _points_file(tmp_path, [1, 2, 2, 2, 3, 3, 4, 1])
    legend = Legend.from_config({"preset": "urban", "drop": [2], "merge": {3: 4}})
    with caplog.at_level(logging.INFO, logger="bsrlc.data.points"):
        pts = read_points(path, legend=legend, target_crs="EPSG:3035")
    assert pts["class"].tolist() == [1, 4, 4, 4, 1] and pts.crs.to_epsg() == 3035
    assert pts.attrs["legend_counts"] == {"dropped_by_legend": 3, "merged_by_legend": 2}
    assert (
        f"{path}: 3 points of class 2 (industrial buildings) dropped (legend.drop)" in caplog.text
    )
    assert (
        f"{path}: 2 points of class 3 (artificial open spaces) merged into 4 (non built-up) "
        "(legend.merge)" in caplog.text
    )
    # without options: nothing dropped, zero counts
    assert read_points(path).attrs["legend_counts"] == {
        "dropped_by_legend": 0,
        "merged_by_legend": 0,
    }
    # a code the full legend lacks is still an error, listing the full legend
    (tmp_path / "bad").mkdir()
    bad = _points_file(tmp_path / "bad", [1, 2, 7])
    with pytest.raises(InputError, match=r"unknown class code\(s\) 7 .*2=industrial buildings"):
        read_points(bad, legend=legend)


def test_read_points_drops_and_merges_by_name(tmp_path, caplog) -> None:
    path = tmp_path / "pts.csv"
    pd.DataFrame(
        {
            "x": LONLAT[:, 0],
            "y": LONLAT[:, 1],
            "label": ["Residential buildings", "industrial buildings", "roads", "non built-up"],
        }
    ).to_csv(path, index=False)
    # names in the points map to codes through the full legend, so a class named in the points
    # may be dropped or merged; drop/merge themselves given by name as well
    legend = Legend.from_config(
        {
            "name": "city",
            "classes": [
                {"code": 1, "name": "residential buildings"},
                {"code": 2, "name": "industrial buildings"},
                {"code": 5, "name": "roads"},
                {"code": 4, "name": "non built-up"},
            ],
            "drop": ["industrial buildings"],
            "merge": {"roads": "non built-up"},
        }
    )
    assert legend.codes == [1, 4]
    with caplog.at_level(logging.INFO, logger="bsrlc.data.points"):
        pts = read_points(path, "label", crs="EPSG:4326", legend=legend)
    assert pts["class"].tolist() == [1, 4, 4]
    assert pts["label"].tolist() == ["Residential buildings", "roads", "non built-up"]
    assert pts.attrs["legend_counts"] == {"dropped_by_legend": 1, "merged_by_legend": 1}
    assert "1 points of class 2 (industrial buildings) dropped (legend.drop)" in caplog.text
    assert "1 points of class 5 (roads) merged into 4 (non built-up)" in caplog.text
    # names of the dropped class map through the full legend; names it lacks still raise
    pd.read_csv(path).assign(label=["maize"] * 4).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InputError, match=r"unknown class name\(s\) \['maize'\].*industrial"):
        read_points(tmp_path / "bad.csv", "label", crs="EPSG:4326", legend=legend)


def test_all_points_dropped_is_an_input_error(tmp_path) -> None:
    path = _points_file(tmp_path, [2, 2, 3])
    legend = Legend.from_config("urban").without([2, 3])
    with pytest.raises(InputError, match=r"all 3 points belong to classes in legend\.drop"):
        read_points(path, legend=legend)


def test_locate_applies_options_to_points_read_without_them(tmp_path, caplog) -> None:
    ex, ey = TO_3035.transform(LONLAT[:, 0], LONLAT[:, 1])
    left, top = min(ex) - 500, max(ey) + 500
    t = Affine(10, 0, left, 0, -10, top)
    width, height = int((max(ex) + 500 - left) // 10), int((top - min(ey) + 500) // 10)
    raster = tmp_path / "r.tif"
    write_cog(raster, np.ones((1, height, width), np.uint8), crs="EPSG:3035", transform=t)
    gpkg = tmp_path / "p.gpkg"
    _frame().to_file(gpkg)  # classes 1, 2, 3, 4
    legend = Legend.from_config("urban").with_options(drop=[2], merge={3: 4})
    with caplog.at_level(logging.INFO, logger="bsrlc.data.points"):
        samples = locate(read_points(gpkg), raster_info(raster), legend)
    assert samples.codes.tolist() == [1, 4, 4] and len(samples.frame) == 3
    assert "1 points of class 2 (industrial buildings) dropped" in caplog.text
    # points read with the reduced legend pass locate unchanged, logged once
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bsrlc.data.points"):
        again = locate(read_points(gpkg, legend=legend), raster_info(raster), legend)
    assert again.codes.tolist() == [1, 4, 4] and caplog.text.count("dropped (legend.drop)") == 1


def test_warn_rare_classes(caplog) -> None:
    legend = Legend.from_config("urban")
    with caplog.at_level(logging.WARNING, logger="bsrlc.data.points"):
        rare = warn_rare_classes(np.array([100, 3, 29, 30]), legend, 30, "pts.gpkg")
    assert rare == ["industrial buildings", "artificial open spaces"]
    assert (
        "pts.gpkg: classes with fewer than 30 training points: industrial buildings (3), "
        "artificial open spaces (29)" in caplog.text
    )
    assert "non built-up" not in caplog.text and "legend.drop" in caplog.text
    caplog.clear()
    # {code: count}, missing codes count as 0; labels -> counts with bincount
    assert warn_rare_classes({1: 50, 2: 50, 4: 50}, legend, 10, "p") == ["artificial open spaces"]
    labels = np.array([0] * 5 + [1] * 5 + [2] * 5 + [3] * 4)
    counts = np.bincount(labels, minlength=len(legend))
    assert warn_rare_classes(counts, legend, 5, "p") == ["non built-up"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bsrlc.data.points"):
        assert warn_rare_classes(counts, legend, 0, "p") == []
        assert warn_rare_classes(counts, legend, None, "p") == []
        assert warn_rare_classes(counts, legend, 3, "p") == []
    assert not caplog.text
    with pytest.raises(ValueError, match="3 counts for the 4 classes"):
        warn_rare_classes([1, 2, 3], legend, 5, "p")
    with pytest.raises(ValueError, match=r"codes \[9\] not in legend"):
        warn_rare_classes({9: 1}, legend, 5, "p")


@pytest.mark.parametrize(
    "overrides",
    [
        ["data.legend={preset:urban,drop:[2],merge:{3:4}}"],
        ["data.legend={preset:urban}", "+data.legend.drop=[2]", "+data.legend.merge={3:4}"],
        ["data.legend={preset:urban,drop:[1],merge:null}", "data.legend.drop=[2]", "data.legend.merge={3:4}"],
        ["+legend@data.legend=urban", "data.legend.drop=[2]", "data.legend.merge={3:4}"],
        ["data.legend={preset:urban,drop:['industrial buildings'],merge:{artificial open spaces:non built-up}}"],
    ],
    ids=["one-override", "append", "override-keys", "preset-group", "names"],
)  # fmt: skip
def test_hydra_legend_drop_and_merge(tmp_path, overrides: list[str]) -> None:
    from hydra.utils import instantiate

    from tests.conftest import compose_train

    cfg = compose_train(["experiment=classify_demo", *overrides], tmp_path)
    legend = cfg.data.legend
    # how PointPatchDataModule builds its legend (a shallow dict of OmegaConf nodes)
    reduced = Legend.from_config(legend if isinstance(legend, str) else dict(legend))
    assert reduced.codes == [1, 4] and reduced.options is not None
    assert reduced.options.drop == (2,) and reduced.options.mapping == {3: 4}
    dm = instantiate(cfg.data)
    assert dm.legend == reduced and dm.num_classes == 2


def test_hydra_legend_string_still_works(tmp_path) -> None:
    from tests.conftest import compose_train

    cfg = compose_train(["experiment=classify_demo"], tmp_path)
    assert cfg.data.legend == "urban"
    assert Legend.from_config(cfg.data.legend) == Legend.from_config("urban")
