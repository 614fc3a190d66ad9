"""The point-patch datamodule: several periods, nodata per band, legend options, warnings."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import rasterio

from bsrlc.data.classify import PointPatchDataModule
from bsrlc.inference.resample import nearest_upsample

BANDS = [f"{b}_P50" for b in ("BLU", "GRN", "RED", "NIR", "SW1", "SW2")]


@pytest.fixture(scope="module")
def nn_periods(tmp_path_factory, tiny_world, tiny_stms):
    """10 m nearest-neighbour Landsat STMs of two periods with their points."""
    out = tmp_path_factory.mktemp("nn")
    rasters, points = [], []
    for y in ("2007", "2019"):
        rasters.append(
            str(nearest_upsample(tiny_stms["landsat"][y], out / f"nn_{y}.tif", BANDS, 3))
        )
        points.append(str(tiny_world.root / tiny_world.points[int(y)]))
    return rasters, points


def _xy(ds):
    """Map coordinates of every patch centre of a split (a ConcatDataset of PointPatches)."""
    xs, ys = [], []
    for part in ds.datasets:
        t = part.cache.info.transform
        xs.append(t.c + (part.cols + 0.5) * t.a)
        ys.append(t.f + (part.rows + 0.5) * t.e)
    return np.concatenate(xs), np.concatenate(ys)


def test_several_periods_train_one_model_without_leaks(nn_periods):
    rasters, points = nn_periods
    one = PointPatchDataModule(rasters[1], points[1], bands=BANDS, block_size=32)
    one.setup("fit")
    both = PointPatchDataModule(rasters, points, bands=BANDS, block_size=32)
    both.setup("fit")
    assert both.counts["rasters"] == 2
    assert both.counts["train"] > 1.3 * one.counts["train"]
    assert both.counts["points"] == 2 * one.counts["points"]
    # the validation blocks are the same locations in both periods: no training patch of
    # either period reaches a validation or test point of either period
    tx, ty = _xy(both._datasets["train"])
    for split in ("val", "test"):
        ex, ey = _xy(both._datasets[split])
        d = np.maximum(np.abs(tx[:, None] - ex[None]), np.abs(ty[:, None] - ey[None]))
        assert d.min() > both.buffer * 10.0 - 1e-6
    assert len(both.norm_stats["mean"]) == len(BANDS)


def test_points_one_file_for_every_raster_and_mismatched_lists(nn_periods):
    from bsrlc.errors import ConfigError

    rasters, points = nn_periods
    dm = PointPatchDataModule(rasters, points[1], bands=BANDS, block_size=32)
    assert len(dm._pairs()) == 2
    with pytest.raises(ConfigError, match="3 files for 2 rasters"):
        PointPatchDataModule(rasters, [points[0]] * 3, bands=BANDS)


def test_nodata_points_counted_per_band_skipped_or_filled(tmp_path, tiny_world, tiny_stms, caplog):
    src = tmp_path / "holes.tif"
    shutil.copy(tiny_stms["sentinel2"]["2019"], src)
    with rasterio.open(src, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as ds:
        band = list(ds.descriptions).index("NIR_P50") + 1
        arr = ds.read(band)
        arr[:, 60:80] = ds.nodata  # a stripe of one band is nodata
        ds.write(arr, band)
    pts = str(tiny_world.root / tiny_world.points[2019])
    clean = PointPatchDataModule(
        str(tiny_stms["sentinel2"]["2019"]), pts, bands=BANDS, block_size=32
    )
    clean.setup("fit")
    with caplog.at_level(logging.WARNING):
        skip = PointPatchDataModule(str(src), pts, bands=BANDS, block_size=32)
        skip.setup("fit")
    per_band = skip.counts["dropped_nodata_per_band"]
    assert per_band["NIR_P50"] == skip.counts["dropped_nodata"] > 0
    assert all(n == 0 for b, n in per_band.items() if b != "NIR_P50")
    assert "NIR_P50" in caplog.text and "nodata_points=fill" in caplog.text
    fill = PointPatchDataModule(str(src), pts, bands=BANDS, block_size=32, nodata_points="fill")
    fill.setup("fit")
    kept = sum(fill.counts[k] for k in ("train", "val", "test"))
    assert kept > sum(skip.counts[k] for k in ("train", "val", "test"))
    # filled pixels are the band mean: 0 after normalisation (validation/test: no augmentation)
    nir, checked = BANDS.index("NIR_P50"), 0
    for split in ("val", "test"):
        for part in fill._datasets[split].datasets:
            h = part.patch // 2
            for i in range(len(part)):
                cols = np.arange(int(part.cols[i]) - h, int(part.cols[i]) + h + 1)
                hole = (cols >= 60) & (cols < 80)
                if hole.any() and not hole.all():
                    x = part[i]["image"][nir].numpy()
                    assert np.all(x[:, hole] == 0.0) and np.any(x[:, ~hole] != 0.0)
                    checked += 1
    assert checked > 0


def test_legend_drop_and_rare_class_warning_in_the_datamodule(tiny_world, tiny_stms, caplog):
    pts = str(tiny_world.root / tiny_world.points[2019])
    raster = str(tiny_stms["sentinel2"]["2019"])
    with caplog.at_level(logging.INFO):
        dm = PointPatchDataModule(
            raster,
            pts,
            bands=BANDS,
            block_size=32,
            legend={"preset": "urban", "drop": [2], "merge": None},
            min_points_per_class=10_000,
        )
        dm.setup("fit")
    assert dm.num_classes == 3 and "industrial buildings" not in dm.legend.names
    assert dm.counts["dropped_by_legend"] > 0
    assert "dropped (legend.drop)" in caplog.text
    assert "residential buildings" in caplog.text and "fewer than" in caplog.text


def test_conflicting_labels_in_one_pixel_are_refused(tmp_path, tiny_world, tiny_stms):
    import geopandas as gpd

    from bsrlc.errors import InputError

    pts = gpd.read_file(tiny_world.root / tiny_world.points[2019])
    twin = pts.iloc[[0]].copy()
    twin["class"] = 4 if int(pts["class"].iloc[0]) != 4 else 1
    gpd.pd.concat([pts, twin]).to_file(tmp_path / "conflict.gpkg")
    gpd.pd.concat([pts, pts.iloc[[0]]]).to_file(tmp_path / "repeat.gpkg")
    raster = str(tiny_stms["sentinel2"]["2019"])
    dm = PointPatchDataModule(raster, str(tmp_path / "conflict.gpkg"), bands=BANDS, block_size=32)
    with pytest.raises(InputError, match="1 pixel.* hold points of different classes") as err:
        dm.setup("fit")
    assert "\n" not in str(err.value)
    dm = PointPatchDataModule(raster, str(tmp_path / "repeat.gpkg"), bands=BANDS, block_size=32)
    dm.setup("fit")
    assert dm.counts["repeated_points"] == 1
