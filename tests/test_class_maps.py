"""Class maps that GIS users can read: MODE overviews, category names, areas of a single map."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from affine import Affine

from bsrlc.data.legend import Legend
from bsrlc.errors import InputError
from bsrlc.inference.loading import load_checkpoint
from bsrlc.raster import (
    CATEGORY_NAMES_TAG,
    category_names,
    read_category_names,
    write_cog,
)

T10 = Affine(10, 0, 500_000, 0, -10, 4_000_000)
# codes 2, 5 and 6 (gaps at 1, 3 and 4): the names list must keep index = code
LEGEND = Legend.from_config(
    {
        "name": "gappy",
        "classes": [
            {"code": 2, "name": "water", "colour": "#0000ff"},
            {"code": 5, "name": "forest", "colour": "#00aa00"},
            {"code": 6, "name": "built-up", "colour": "#ff0000"},
        ],
    }
)
EXPECTED_NAMES = ["nodata", "", "water", "", "", "forest", "built-up"]


def _crafted(n: int = 512) -> np.ndarray:
    """2x2 blocks of three pixels of one class and one of another, the odd one moving around.

    Nearest-neighbour decimation reads one fixed pixel of each block, so whichever pixel it
    reads it gets the minority class in a quarter of the blocks; MODE never does. One block is
    all nodata, one is three nodata pixels and a class.
    """
    codes = np.asarray(LEGEND.codes)
    i, j = np.mgrid[: n // 2, : n // 2]
    major = codes[(i + j) % 3]
    minor = codes[(i + j + 1) % 3]
    odd = (i + 2 * j) % 4  # which of the 4 pixels holds the minority class
    arr = np.empty((n, n), np.uint8)
    for k, (dr, dc) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        arr[dr::2, dc::2] = np.where(odd == k, minor, major)
    arr[0:2, 0:2] = 0
    arr[0:2, 2:4] = [[0, 0], [0, 5]]
    return arr


def _block_mode(arr: np.ndarray) -> np.ndarray:
    """The most frequent valid code of each 2x2 block (GDAL's MODE skips nodata), else 0."""
    blocks = arr.reshape(arr.shape[0] // 2, 2, arr.shape[1] // 2, 2).transpose(0, 2, 1, 3)
    flat = blocks.reshape(*blocks.shape[:2], 4)
    counts = np.stack([(flat == c).sum(-1) for c in range(256)], -1)
    counts[..., 0] = 0
    return np.where(counts.max(-1) > 0, counts.argmax(-1), 0).astype(np.uint8)


def test_class_map_has_mode_overviews_colours_and_category_names(tmp_path):
    arr = _crafted()
    path = write_cog(
        tmp_path / "map.tif",
        arr,
        crs="EPSG:3035",
        transform=T10,
        nodata=0,
        colormap=LEGEND.colormap(),
        categories=category_names({c.code: c.name for c in LEGEND.classes}),
    )
    with rasterio.open(path) as src:
        assert src.overviews(1) == [2]
        assert src.colormap(1)[5] == (0, 170, 0, 255)
        assert json.loads(src.tags(1)[CATEGORY_NAMES_TAG]) == EXPECTED_NAMES
    with rasterio.open(path, overview_level=0) as ov:
        level = ov.read(1)
    mode = _block_mode(arr)
    assert np.array_equal(level, mode)
    assert level[0, 0] == 0 and level[0, 1] == 5  # nodata only where the whole block is
    for dr in (0, 1):
        for dc in (0, 1):  # nearest would have read one of these
            assert (arr[dr::2, dc::2] != mode).mean() > 0.2
    assert read_category_names(path) == EXPECTED_NAMES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.tif"]  # no .aux.xml sidecar


def test_continuous_rasters_keep_nearest_overviews(tmp_path):
    arr = _crafted()
    path = write_cog(tmp_path / "sr.tif", arr, crs="EPSG:3035", transform=T10, nodata=0)
    with rasterio.open(path, overview_level=0) as ov:
        level = ov.read(1)
    assert np.array_equal(level, arr[0::2, 0::2])  # GDAL NEAREST reads each block's first pixel
    assert read_category_names(path) is None


def test_category_names_layout_and_bad_inputs(tmp_path):
    assert category_names({1: "a", 3: "c"}) == ["nodata", "a", "", "c"]
    assert category_names({1: "a"}, nodata=255, nodata_name="none")[-1] == "none"
    assert category_names({0: "a", 2: "b"}, nodata=None) == ["a", "", "b"]
    with pytest.raises(ValueError, match="outside 0..255"):
        category_names({300: "x"})
    with pytest.raises(ValueError, match="nodata code"):
        category_names({0: "x"})
    bad = tmp_path / "bad.tif"
    profile = {"driver": "GTiff", "width": 4, "height": 4, "count": 1, "dtype": "uint8"}
    with rasterio.open(bad, "w", crs="EPSG:3035", transform=T10, **profile) as dst:
        dst.write(np.ones((1, 4, 4), np.uint8))
        dst.update_tags(1, **{CATEGORY_NAMES_TAG: "water,forest"})
    with pytest.raises(InputError, match=r"bad\.tif: band 1 CATEGORY_NAMES is not a JSON list"):
        read_category_names(bad)


def test_single_input_predict_writes_class_areas(tmp_path, tiny_stms, checkpoints):
    src = tiny_stms["sentinel2"]["2019"]
    out = tmp_path / "out"
    res = subprocess.run(
        [
            sys.executable,
            "predict.py",
            f"model={checkpoints[1]}",
            f"input={src}",
            f"out_dir={out}",
            "progress=false",
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    class_map = out / f"{src.stem}_map.tif"
    with rasterio.open(class_map) as m:
        codes = m.read(1)
        pixel_ha = abs(m.transform.a * m.transform.e) / 10_000
    legend = Legend.from_config(load_checkpoint(checkpoints[1]).meta["legend"])
    assert read_category_names(class_map) == ["nodata", *legend.names]
    with open(out / "class_areas.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["period", *legend.names]
    assert len(rows) == 2 and rows[1][0] == "2019"
    expected = [f"{np.sum(codes == c) * pixel_ha:.2f}" for c in legend.codes]
    assert rows[1][1:] == expected and sum(map(float, expected)) > 0
    assert (out / "class_areas.png").stat().st_size > 0
    assert not list(out.glob("change_*.tif")) and not (out / "maps.gif").exists()
