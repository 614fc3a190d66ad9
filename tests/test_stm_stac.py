"""Local STAC catalogs as a source of the tiled ingest (bsrlc.stm.stac).

The Collection 2 Level-2 scenes of tests/test_stm_archive.py (one EPSG:3035 field per date,
warped into UTM 33 and UTM 34 as per-band SR files, QA_PIXEL, QA_RADSAT, MTL) are described by a
STAC ItemCollection written with pystac (eo, raster and proj extensions); ingested with
``stac=`` they must give the STMs of ``source=landsat_c2`` on the same files.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio

from bsrlc.errors import InputError
from bsrlc.stm.archive import ingest_folder
from bsrlc.stm.grid import windows
from bsrlc.stm.sources import WarpReader, discover_sources
from bsrlc.stm.stac import discover_stac, odc_load, read_items
from tests.test_stm_archive import BAND_NUMBERS, GRID, _c2_scene, _original

PERIODS = {"2020": ["2020-01-01", "2020-12-31"]}
METRICS = ["min", "p50", "max", "mean", "std"]
COMMON = ("blue", "green", "red", "nir08", "swir16", "swir22")  # Landsat 8/9 SR_B2..SR_B7
EXT = [
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
]


def _item(folder: Path, proj: bool = True, multiband: Path | None = None) -> pystac.Item:
    """A STAC item (eo / raster / proj) of one C2 scene folder, hrefs relative to the JSON."""
    pid = folder.name
    date = dt.date(int(pid[17:21]), int(pid[21:23]), int(pid[23:25]))
    with rasterio.open(folder / f"{pid}_SR_B2.TIF") as src:
        epsg, shape, tr = src.crs.to_epsg(), [src.height, src.width], list(src.transform)[:6]
        west, south, east, north = rasterio.warp.transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    geom = {
        "type": "Polygon",
        "coordinates": [
            [[west, south], [east, south], [east, north], [west, north], [west, south]]
        ],
    }
    props = {"platform": "landsat-8"}
    if proj:
        props.update({"proj:epsg": epsg, "proj:shape": shape, "proj:transform": tr})
    item = pystac.Item(
        pid,
        geom,
        [west, south, east, north],
        dt.datetime.combine(date, dt.time(10)),
        props,
        stac_extensions=list(EXT),
    )
    tif = pystac.MediaType.COG
    for common, n in zip(COMMON, BAND_NUMBERS, strict=True):
        item.add_asset(
            common,
            pystac.Asset(
                str(folder / f"{pid}_SR_B{n}.TIF"),
                media_type=tif,
                roles=["data"],
                extra_fields={
                    "eo:bands": [{"name": f"SR_B{n}", "common_name": common}],
                    "raster:bands": [
                        {"data_type": "uint16", "nodata": 0, "scale": 2.75e-5, "offset": -0.2}
                    ],
                },
            ),
        )
    for key, name in (("qa_pixel", "QA_PIXEL"), ("qa_radsat", "QA_RADSAT")):
        item.add_asset(
            key,
            pystac.Asset(
                str(folder / f"{pid}_{name}.TIF"),
                media_type=tif,
                roles=["cloud" if key == "qa_pixel" else "saturation"],
                extra_fields={"raster:bands": [{"data_type": "uint16"}]},
            ),
        )
    item.add_asset(
        "mtl.txt",
        pystac.Asset(str(folder / f"{pid}_MTL.txt"), media_type="text/plain", roles=["metadata"]),
    )
    return item


def _write_collection(items: list[pystac.Item], path: Path) -> Path:
    pystac.ItemCollection(items).save_object(dest_href=str(path))
    return path


@pytest.fixture(scope="module")
def stac_world(tmp_path_factory):
    """C2 scenes in UTM 33 and 34 and a STAC ItemCollection of them."""
    root = tmp_path_factory.mktemp("stac")
    truth, fields = _original()
    folders = []
    for date, data in fields.items():
        nxt = (dt.date.fromisoformat(date) + dt.timedelta(days=1)).isoformat()
        folders.append(_c2_scene(root / "c2", truth, data, date, 32633, (17.85, 18.02), "190025"))
        folders.append(_c2_scene(root / "c2", truth, data, nxt, 32634, (17.98, 18.15), "189025"))
    coll = _write_collection([_item(f) for f in folders], root / "items.json")
    return {"root": root, "folders": folders, "collection": coll, "truth": truth}


def test_items_read_as_scenes(stac_world):
    found = discover_stac(stac_world["collection"])
    assert len(found.scenes) == 6 and found.products == ["landsat_c2"]
    s = found.scenes[0]
    assert list(s.bands) == ["BLU", "GRN", "RED", "NIR", "SW1", "SW2"]
    assert s.bands["NIR"].name.endswith("_SR_B5.TIF") and s.bands["SW2"].name.endswith("_B7.TIF")
    assert s.scale["RED"] == 2.75e-5 and s.offset["RED"] == -0.2 and s.nodata == 0
    assert s.masks[0].decoder == "landsat_qa_pixel" and len(s.masks) == 2
    assert s.masks[1].decoder.keywords["bits"] == (1, 2, 3, 4, 5, 6)
    assert s.valid_range == (7273, 43636)
    # the same as the MTL-driven scene of source=landsat_c2
    c2 = {x.id: x for x in discover_sources(stac_world["root"] / "c2").scenes}[s.id]
    assert dict(c2.bands) == dict(s.bands) and c2.date == s.date
    assert [m.path for m in c2.masks] == [m.path for m in s.masks]


def test_stac_ingest_equals_landsat_c2_ingest(stac_world, tmp_path):
    """stac= on the ItemCollection and source=landsat_c2 on the folder of the same files, two
    UTM zones onto EPSG:3035 tiles: the same STM tiles, value for value."""
    kw = {"grid": GRID, "metrics": METRICS, "progress": False}
    kw["tiles"] = ["X0326_Y0278", "X0326_Y0279"]  # both zones overlap there
    t0 = time.perf_counter()
    a = ingest_folder(stac_world["collection"], tmp_path / "stac", PERIODS, source="stac", **kw)
    t_stac = time.perf_counter() - t0
    b = ingest_folder(
        stac_world["root"] / "c2", tmp_path / "c2", PERIODS, source="landsat_c2", **kw
    )
    assert a["2020"].name == "landsat_2020.vrt"
    tiles_a = sorted((tmp_path / "stac" / "landsat_2020").glob("*.tif"))
    tiles_b = sorted((tmp_path / "c2" / "landsat_2020").glob("*.tif"))
    assert [p.name for p in tiles_a] == [p.name for p in tiles_b] and len(tiles_a) == 2
    covered = overlap = 0
    for pa, pb in zip(tiles_a, tiles_b, strict=True):
        with rasterio.open(pa) as ra, rasterio.open(pb) as rb:
            assert ra.descriptions == rb.descriptions and ra.scales == rb.scales
            da, db = ra.read().astype(int), rb.read().astype(int)
            assert np.abs(da - db).max() <= 1, (pa.name, np.abs(da - db).max())  # rounding
            covered += int((da[-1] > 0).sum())
            overlap += int((da[-1] == 6).sum())  # both zones: each date twice
    assert covered > 120_000 and overlap > 20_000  # measured 153822, 49131, (covered, overlap)
    with rasterio.open(a["2020"]) as va, rasterio.open(b["2020"]) as vb:
        assert va.shape == vb.shape and va.transform == vb.transform
    assert t_stac < 120


def test_item_without_projection_is_refused_in_one_line(stac_world, tmp_path, caplog):
    folders = stac_world["folders"]
    coll = _write_collection(
        [_item(folders[0], proj=False), _item(folders[1])], tmp_path / "noproj.json"
    )
    with pytest.raises(InputError, match="no projection information") as err:
        discover_stac(coll)
    msg = str(err.value)
    assert "\n" not in msg and folders[0].name in msg and str(coll) in msg
    assert "proj:code" in msg and "add the projection extension" in msg
    found = discover_stac(coll, on_error="skip")
    assert len(found.scenes) == 1 and len(found.skipped) == 1


def test_catalog_with_links_and_bad_files(stac_world, tmp_path):
    """A Catalog with child items (saved self-contained) reads like the ItemCollection; a
    missing file, invalid JSON and a GeoJSON that is no STAC each give one line."""
    cat = pystac.Catalog("c2", "C2 scenes")
    for f in stac_world["folders"][:2]:
        cat.add_item(_item(f))
    cat.normalize_hrefs(str(tmp_path / "cat"))
    cat.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    items = read_items(tmp_path / "cat" / "catalog.json")
    assert sorted(i.id for i in items) == sorted(f.name for f in stac_world["folders"][:2])
    assert len(discover_stac(tmp_path / "cat" / "catalog.json").scenes) == 2
    with pytest.raises(InputError, match="STAC file not found"):
        read_items(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        read_items(bad)
    bad.write_text(json.dumps({"type": "Topology"}))
    with pytest.raises(InputError, match="no STAC Catalog"):
        read_items(bad)


def test_remote_assets_are_refused(stac_world, tmp_path):
    item = _item(stac_world["folders"][0])
    item.assets["red"].href = "https://example.com/LC08_SR_B4.TIF"
    coll = _write_collection([item], tmp_path / "remote.json")
    with pytest.raises(InputError, match="not a local file"):
        discover_stac(coll)


def test_odc_stac_load_of_the_same_items(stac_world):
    """The catalog loads with odc.stac onto a tile's GeoBox (proj / eo / raster fields are what
    odc-stac needs) and gives the DNs WarpReader gives (both GDAL bilinear); the timings behind
    the loader choice (bsrlc/stm/stac.py) are printed, not asserted."""
    tile = GRID.tile("X0326_Y0278")
    scenes = discover_stac(stac_world["collection"]).scenes
    t0 = time.perf_counter()
    ds = odc_load(stac_world["collection"], tile.geobox, COMMON)
    arr = ds.to_array().values  # (band, time, y, x), time in date order like scenes
    t_odc = time.perf_counter() - t0
    assert arr.shape == (6, 6, *tile.geobox.shape.yx)
    t0 = time.perf_counter()
    with WarpReader() as reader:
        ours = np.stack([reader.read_band(s.bands["RED"], tile.geobox, nodata=0) for s in scenes])
        for _, win in windows(tile.geobox, 256):
            for s in scenes:
                if reader.overlaps(s, win):
                    reader.read(s, win)
    t_warp = time.perf_counter() - t0
    print(f"odc.stac.load 6 bands {t_odc:.2f} s; WarpReader bands + QA {t_warp:.2f} s")
    for t, s in enumerate(scenes):
        both = (ours[t] > 0) & (arr[2, t] > 0)
        assert both.sum() > 20_000
        diff = np.abs(ours[t].astype(int) - arr[2, t].astype(int))[both]
        # UTM 33 scenes: identical; UTM 34 (further from EPSG:3035's meridian): odc-stac's
        # warp differs by a few DN (median 2-3, its own transformer / kernel width)
        assert np.median(diff) <= (0 if "_190025_" in s.id else 4), (s.id, np.median(diff))


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "bsrlc.stm", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_cli_stac(stac_world, tmp_path):
    out = tmp_path / "stm"
    res = _cli(
        f"stac={stac_world['collection']}",
        "grid.tile_size=15000",
        "grid.tiles=[X0326_Y0278]",
        "periods={2020:[2020-01-01,2020-12-31]}",
        "metrics=[p50]",
        f"out_dir={out}",
        "progress=false",
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [str(out / "landsat_2020.vrt")]
    with rasterio.open(out / "landsat_2020" / "X0326_Y0278.tif") as src:
        assert src.descriptions[0] == "BLU_P50" and src.count == 7
