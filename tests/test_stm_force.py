"""FORCE datacubes in (bsrlc.stm.force): Level-2 BOA + QAI cubes ingested on the cube's own grid,
and TSA STM outputs used as STMs through a VRT with bsrlc's band names.

Synthetic cubes in tmp_path: a FORCE >= 3 ``datacube-definition.prj`` (EPSG:3035, tagged
origin and tile size), two 3 km tiles of 100 x 100 px at 30 m, Landsat BOA (int16 x 10000,
nodata -9999, bands named BLUE..SWIR2) and QAI (int16 bit flags) for three dates.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import CRS

from bsrlc.errors import InputError
from bsrlc.raster import raster_info
from bsrlc.stm.archive import ingest_folder
from bsrlc.stm.force import adapt_tsa, cube_grid, discover_force, tsa_band_name

ORIGIN = (4_500_000.0, 3_100_000.0)
TILE = 3000.0
RES = 30
N = int(TILE / RES)
BANDS = ("BLUE", "GREEN", "RED", "NIR", "SWIR1", "SWIR2")
DATES = ("20190605", "20190715", "20190820")
WKT = CRS("EPSG:3035").to_wkt("WKT1_GDAL")
CLOUD, SHADOW, NODATA_BIT, WATER = 1 << 2, 1 << 3, 1, 1 << 5  # cloud state 2 = confident


def _definition(folder: Path, legacy: bool = False) -> None:
    if legacy:
        text = f"{WKT}\n-25.0\n60.0\n{ORIGIN[0]}\n{ORIGIN[1]}\n{TILE}\n{TILE / 10}\n"
    else:
        text = (
            f"PROJECTION = {WKT}\nORIGIN_GEO_X = -25.000000\nORIGIN_GEO_Y = 60.000000\n"
            f"ORIGIN_MAP_X = {ORIGIN[0]:.6f}\nORIGIN_MAP_Y = {ORIGIN[1]:.6f}\n"
            f"TILE_SIZE_X = {TILE:.6f}\nTILE_SIZE_Y = {TILE:.6f}\n"
            f"BLOCK_SIZE_X = {TILE:.6f}\nBLOCK_SIZE_Y = 300.000000\n"
        )
    (folder / "datacube-definition.prj").write_text(text)


def _write(path: Path, data: np.ndarray, ix: int, iy: int, names=None, nodata=None) -> None:
    data = data if data.ndim == 3 else data[None]
    transform = Affine(RES, 0, ORIGIN[0] + ix * TILE, 0, -RES, ORIGIN[1] - iy * TILE)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        crs=WKT,
        transform=transform,
        nodata=nodata,
        compress="lzw",
    ) as dst:
        dst.write(data)
        for i, name in enumerate(names or ()):
            dst.set_band_description(i + 1, name)


def _cube(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Two tiles x three Landsat 8 dates; returns per tile the (t, b, h, w) BOA and clear mask."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    _definition(root)
    truth = {}
    for ix in (0, 1):
        tid = f"X{ix:04d}_Y0000"
        (root / tid).mkdir()
        boas, clears = [], []
        for k, date in enumerate(DATES):
            boa = rng.integers(100, 6000, (6, N, N)).astype(np.int16)
            qai = np.zeros((N, N), np.int16)
            qai[10 + 10 * k : 30 + 10 * k, 20:60] |= CLOUD
            qai[50:60, 5 + k : 25 + k] |= SHADOW
            qai[70:90, 70:90] |= WATER  # water is clear
            qai[:, : 3 * k] |= NODATA_BIT  # a strip without data
            boa[:, :, : 3 * k] = -9999
            stem = f"{date}_LEVEL2_LND08"
            _write(root / tid / f"{stem}_BOA.tif", boa, ix, 0, BANDS, nodata=-9999)
            _write(root / tid / f"{stem}_QAI.tif", qai, ix, 0, nodata=1)
            boas.append(boa)
            clears.append((qai & (NODATA_BIT | CLOUD | SHADOW)) == 0)
        truth[tid] = (np.stack(boas), np.stack(clears))
    return truth


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    root = tmp_path_factory.mktemp("force") / "level2"
    return root, _cube(root)


def test_cube_grid_reads_tagged_and_legacy_definitions(tmp_path):
    _definition(tmp_path)
    grid = cube_grid(tmp_path)
    assert (
        grid.origin == ORIGIN
        and grid.tile_size == TILE
        and CRS(grid.crs).to_epsg(min_confidence=20) == 3035
    )
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    _definition(legacy, legacy=True)
    assert cube_grid(legacy) == grid
    assert cube_grid(tmp_path, resolution=10).resolution == 10
    with pytest.raises(InputError, match="datacube-definition.prj"):
        cube_grid(tmp_path / "nope")


def test_discover_reads_boa_band_by_band(cube):
    root, _ = cube
    found = discover_force(root)
    assert found.grid.resolution == 30 and found.grid.origin == ORIGIN
    scenes = found.discovery.scenes
    assert len(scenes) == 6 and {s.sensor for s in scenes} == {"LND08"}
    s = scenes[0]
    assert list(s.bands) == ["BLU", "GRN", "RED", "NIR", "SW1", "SW2"]
    assert [s.bidx(b) for b in s.bands] == [1, 2, 3, 4, 5, 6]
    assert s.masks[0].decoder == "force_qai" and s.masks[0].path.name.endswith("_QAI.tif")
    assert s.scale["RED"] == 1e-4 and s.nodata == -9999
    with pytest.raises(InputError, match="sensors LND07"):
        discover_force(root, sensors=["LND07"])


def test_force_cube_stms_on_the_cube_grid_are_numpy_stms(cube, tmp_path):
    """The cube ingested on its own grid (identity warp): per tile, min / median / max of the
    clear BOA DNs (QAI decoded: cloud, shadow and no data out, water kept) exactly as numpy."""
    root, truth = cube
    vrts = ingest_folder(
        root, tmp_path, {"2019": ["2019-01-01", "2019-12-31"]}, source="force",
        metrics=["min", "p50", "max"], progress=False,
    )  # fmt: skip
    assert vrts["2019"].name == "force_2019.vrt"
    for tid, (boa, clear) in truth.items():
        with rasterio.open(tmp_path / "force_2019" / f"{tid}.tif") as src:
            got = src.read()
            assert src.descriptions[:3] == ("BLU_MIN", "BLU_P50", "BLU_MAX")
            assert src.transform.c == ORIGIN[0] + int(tid[1:5]) * TILE and src.shape == (N, N)
        count = clear.sum(0)
        np.testing.assert_array_equal(got[-1], count)
        vals = np.where(clear[:, None], boa.astype(float), np.nan)  # (t, b, h, w)
        with np.errstate(all="ignore"), __import__("warnings").catch_warnings():
            __import__("warnings").simplefilter("ignore")
            ref = np.stack([np.nanmin(vals, 0), np.nanmedian(vals, 0), np.nanmax(vals, 0)], 1)
        ref = ref.reshape(18, N, N)
        ok = count > 0
        assert ok.mean() > 0.9 and (count == 3).mean() > 0.5
        diff = np.abs(got[:-1][:, ok].astype(float) - ref[:, ok])
        assert diff[0::3].max() == 0 and diff[2::3].max() == 0  # MIN, MAX: the DNs themselves
        assert diff[1::3].max() <= 0.5  # P50 of two values: x.5 rounded either way
        assert (got[:-1][:, ~ok] == -32768).all()


def test_qai_of_another_dtype_and_missing_qai_are_refused(tmp_path):
    root = tmp_path / "cube"
    _cube(root, seed=1)
    qai = root / "X0000_Y0000" / f"{DATES[1]}_LEVEL2_LND08_QAI.tif"
    _write(qai, np.full((N, N), 21824, np.uint16), 0, 0)  # a Landsat C2 QA_PIXEL
    with pytest.raises(InputError) as err:
        discover_force(root)
    msg = str(err.value)
    assert "\n" not in msg and str(qai) in msg and "uint16" in msg and "int16" in msg
    assert "landsat_qa_pixel" in msg, msg
    found = discover_force(root, on_error="skip").discovery
    assert len(found.scenes) == 5 and len(found.skipped) == 1
    qai.unlink()
    with pytest.raises(InputError, match="QAI file missing") as err:
        discover_force(root)
    assert str(qai) in str(err.value)


# --------------------------------------------------------------------------------------------
# TSA


STATS = ("Q25", "Q50", "Q75", "AVG", "STD", "NUM")


def _tsa(root: Path, named: bool = True) -> dict[tuple[str, str], np.ndarray]:
    rng = np.random.default_rng(3)
    root.mkdir(parents=True, exist_ok=True)
    _definition(root)
    data = {}
    for ix in (0, 1):
        tid = f"X{ix:04d}_Y0000"
        (root / tid).mkdir(parents=True, exist_ok=True)
        for idx in ("BLU", "NDV"):
            arr = rng.integers(-2000, 9000, (len(STATS), N, N)).astype(np.int16)
            arr[-1] = rng.integers(0, 40, (N, N))
            arr[:, :5, :5] = -9999  # no observation
            name = f"2018-2020_001-365_HL_TSA_LNDLG_{idx}_STM.tif"
            _write(root / tid / name, arr, ix, 0, STATS if named else None, nodata=-9999)
            data[(tid, idx)] = arr
    return data


def test_tsa_band_names():
    assert tsa_band_name("BLU", "Q25") == "BLU_P25" and tsa_band_name("NDV", "AVG") == "NDVI_MEAN"
    assert tsa_band_name("MNW", "Q05") == "MNDWI_P5" and tsa_band_name("TCW", "STD") == "TCW_STD"
    assert (
        tsa_band_name("SW1", "NUM") == "CLEAR_COUNT" and tsa_band_name("ARV", "IQR") == "ARVI_IQR"
    )


def test_tsa_stms_become_a_vrt_with_bsrlc_band_names(tmp_path):
    data = _tsa(tmp_path / "tsa")
    vrts = adapt_tsa(tmp_path / "tsa", tmp_path / "stm")
    assert list(vrts) == ["2018_2020"] and vrts["2018_2020"].name == "force_2018_2020.vrt"
    want = (
        *(f"BLU_{m}" for m in ("P25", "P50", "P75", "MEAN", "STD")),
        *(f"NDVI_{m}" for m in ("P25", "P50", "P75", "MEAN", "STD")),
        "CLEAR_COUNT",
    )
    with rasterio.open(vrts["2018_2020"]) as src:
        assert src.descriptions == want and src.shape == (N, 2 * N)
        assert src.scales == (1e-4,) * 10 + (1.0,) and src.nodata == -32768
        assert (
            src.tags()["METRICS"] == "p25,p50,p75,mean,std" and src.tags()["START"] == "2018-01-01"
        )
        got = src.read()
    for ix, tid in enumerate(("X0000_Y0000", "X0001_Y0000")):
        part = got[:, :, ix * N : (ix + 1) * N]
        for k, idx in enumerate(("BLU", "NDV")):
            ref = data[(tid, idx)]
            valid = ref[0] != -9999
            np.testing.assert_array_equal(part[5 * k : 5 * k + 5][:, valid], ref[:5][:, valid])
            assert (part[5 * k : 5 * k + 5][:, ~valid] == -32768).all()
        count = data[(tid, "BLU")][-1]
        np.testing.assert_array_equal(part[-1], np.where(count == -9999, 0, count))
    info = raster_info(vrts["2018_2020"])  # how train.py / predict.py find bands
    assert info.descriptions == want


def test_tsa_without_band_names_needs_the_stm_list(tmp_path):
    _tsa(tmp_path / "tsa", named=False)
    with pytest.raises(InputError, match="force_stm="):
        adapt_tsa(tmp_path / "tsa", tmp_path / "stm")
    vrts = adapt_tsa(tmp_path / "tsa", tmp_path / "stm", stm=list(STATS))
    with rasterio.open(vrts["2018_2020"]) as src:
        assert src.descriptions[0] == "BLU_P25" and src.descriptions[-1] == "CLEAR_COUNT"
    with pytest.raises(InputError, match="no FORCE TSA STM files"):
        adapt_tsa(tmp_path / "stm", tmp_path / "x")


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "bsrlc.stm", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_cli_force_and_force_tsa(cube, tmp_path):
    root, _ = cube
    out = tmp_path / "stm"
    res = _cli(
        "source=force",
        f"scenes={root}",
        "periods={2019:[2019-01-01,2019-12-31]}",
        "metrics=[p50]",
        f"out_dir={out}",
        "progress=false",
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [str(out / "force_2019.vrt")]
    assert sorted(p.name for p in (out / "force_2019").glob("*.tif")) == [
        "X0000_Y0000.tif",
        "X0001_Y0000.tif",
    ]
    _tsa(tmp_path / "tsa")
    res = _cli("source=force_tsa", f"scenes={tmp_path / 'tsa'}", f"out_dir={out}")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [str(out / "force_2018_2020.vrt")]
