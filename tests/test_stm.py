"""STM compositing: values against numpy, QA decoders, bad input, the CLI, layouts, Dask."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine

from bsrlc.errors import ConfigError, InputError
from bsrlc.raster import write_cog
from bsrlc.stm import (
    SensorConfig,
    composite,
    compute_stm_block,
    discover_scenes,
    get_decoder,
    parse_metrics,
)

T30 = Affine(30, 0, 5_250_000, 0, -30, 4_060_020)
BANDS = ["BLU", "GRN", "RED", "NIR", "SW1", "SW2"]
SENSOR = SensorConfig(name="landsat", decoder="landsat_qa_pixel", mask_suffix="_QA_PIXEL")


def test_kernel_equals_numpy_with_masks():
    rng = np.random.default_rng(0)
    stack = rng.normal(0.2, 0.1, size=(17, 3, 20, 30)).astype(np.float32)
    clear = rng.random((17, 20, 30)) < 0.4
    clear[:, 0, 0] = False  # no observation
    clear[:, 0, 1] = False
    clear[5, 0, 1] = True  # exactly one
    stack[np.broadcast_to(~clear[:, None], stack.shape)] = np.nan
    spec = parse_metrics(
        ["min", "p10", "p25", "median", "p75", "p90", "max", "mean", "std", "count"]
    )
    out, count = compute_stm_block(stack, spec)
    out = out.reshape(3, 9, 20, 30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = {
            "min": np.nanmin(stack, 0),
            "max": np.nanmax(stack, 0),
            "mean": np.nanmean(stack, 0),
            "std": np.nanstd(stack, 0),
        }
        pct = np.nanpercentile(stack, [10, 25, 50, 75, 90], axis=0)
    np.testing.assert_allclose(out[:, 0], ref["min"], atol=1e-6)
    np.testing.assert_allclose(out[:, 1:6], pct.transpose(1, 0, 2, 3), atol=1e-6)
    np.testing.assert_allclose(out[:, 6], ref["max"], atol=1e-6)
    np.testing.assert_allclose(out[:, 7], ref["mean"], atol=1e-6)
    np.testing.assert_allclose(out[:, 8], ref["std"], atol=1e-6)
    np.testing.assert_array_equal(count, clear.sum(0))
    assert np.isnan(out[:, :, 0, 0]).all()
    assert (out[:, 8, 0, 1] == 0).all() and (out[:, 0, 0, 1] == out[:, 6, 0, 1]).all()
    assert spec.names[3] == "p50"
    with pytest.raises(ConfigError, match="unknown metric"):
        parse_metrics(["p50", "mode"])


def test_qa_decoders_on_bit_patterns():
    qa = np.array(
        [1 << 6, 1, 1 << 1, 1 << 2, 1 << 3, 1 << 4, 1 << 5, (1 << 6) | (1 << 7)], np.uint16
    )
    np.testing.assert_array_equal(
        get_decoder("landsat_qa_pixel")(qa), [True, False, False, False, False, False, False, True]
    )
    assert get_decoder("landsat_qa_pixel")(np.array([1 << 2], np.uint16), exclude_cirrus=False)[0]
    medium = np.array([(1 << 6) | (2 << 8)], np.uint16)
    assert not get_decoder("landsat_qa_pixel")(medium, exclude_medium_cloud_confidence=True)[0]
    scl = np.arange(12, dtype=np.uint8)
    np.testing.assert_array_equal(np.nonzero(get_decoder("sentinel2_scl")(scl))[0], [4, 5, 6])
    assert get_decoder("sentinel2_scl")(np.array([7], np.uint8), include_unclassified=True)[0]
    qai = np.array(
        [0, 1, 1 << 1, 2 << 1, 1 << 3, 1 << 4, 1 << 5, 1 << 8, 1 << 9, 1 << 10], np.int16
    )
    np.testing.assert_array_equal(
        get_decoder("force_qai")(qai),
        [True, False, False, False, False, False, True, False, False, True],
    )
    np.testing.assert_array_equal(get_decoder("valid")(np.array([0, 1, 2])), [False, True, True])
    np.testing.assert_array_equal(
        get_decoder("valid")(np.array([0, 1, 2]), clear_values=[2]), [False, False, True]
    )
    with pytest.raises(ConfigError, match="unknown decoder"):
        get_decoder("modis")


def make_scenes(folder, n=6, size=(20, 24), per_band=False, seed=0):
    """Scenes with QA_PIXEL masks; returns (reflectance (n,6,h,w) with NaN where not clear)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    refl = np.full((n, 6, *size), np.nan, np.float32)
    for t in range(n):
        dn = rng.integers(100, 5000, size=(6, *size)).astype(np.int16)
        qa = np.full(size, 1 << 6, np.uint16)
        qa[rng.random(size) < 0.3] = 1 << 3  # clouds
        qa[0, :3] = 1 << 3  # never clear
        dn[:, 1, 1] = -9999  # nodata in one scene... in every scene here
        stamp = f"LC08_2019{t + 1:02d}15"
        if per_band:
            for b, name in enumerate(BANDS):
                write_cog(
                    folder / f"{stamp}_{name}.tif",
                    dn[b],
                    crs="EPSG:3035",
                    transform=T30,
                    nodata=-9999,
                )
        else:
            write_cog(
                folder / f"{stamp}.tif",
                dn,
                crs="EPSG:3035",
                transform=T30,
                nodata=-9999,
                descriptions=BANDS,
            )
        write_cog(folder / f"{stamp}_QA_PIXEL.tif", qa, crs="EPSG:3035", transform=T30)
        ok = (qa == 1 << 6) & (dn != -9999).all(0)
        refl[t][:, ok] = dn[:, ok] * 1e-4
    return refl


def test_composite_file_matches_numpy(tmp_path):
    refl = make_scenes(tmp_path / "scenes")
    scenes = discover_scenes(tmp_path / "scenes", SENSOR, BANDS)
    assert len(scenes) == 6 and scenes[0].date.isoformat() == "2019-01-15"
    out = composite(
        scenes,
        tmp_path / "out" / "landsat_2019.tif",
        BANDS,
        ["p25", "p50", "std"],
        SENSOR,
        indices=["NDVI"],
        progress=False,
    )
    with rasterio.open(out) as src:
        assert src.descriptions[:3] == ("BLU_P25", "BLU_P50", "BLU_STD")
        assert src.descriptions[-4:] == ("NDVI_P25", "NDVI_P50", "NDVI_STD", "CLEAR_COUNT")
        assert src.transform == T30 and src.crs.to_epsg() == 3035
        assert src.nodata == -32768 and src.dtypes[0] == "int16"
        data = src.read()
        assert src.tags()["N_SCENES"] == "6"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p50 = np.nanpercentile(refl, 50, axis=0)
        ndvi = (refl[:, 3] - refl[:, 2]) / (refl[:, 3] + refl[:, 2])
        ndvi_p25 = np.nanpercentile(ndvi, 25, axis=0)
    empty = np.isnan(p50[0])
    assert empty[0, :3].all() and empty[1, 1]
    assert (data[:-1][:, empty] == -32768).all() and (data[-1][empty] == 0).all()
    got = data[1:18:3][:, ~empty].astype(float)
    assert np.abs(got - np.round(p50[:, ~empty] * 10000)).max() <= 1
    assert np.abs(data[18][~empty] - np.round(ndvi_p25[~empty] * 10000)).max() <= 1
    np.testing.assert_array_equal(data[-1], (~np.isnan(refl[:, 0])).sum(0))


def test_one_file_per_band_layout(tmp_path):
    make_scenes(tmp_path / "a", n=3, seed=1)
    make_scenes(tmp_path / "b", n=3, per_band=True, seed=1)
    multi = composite(
        discover_scenes(tmp_path / "a", SENSOR, BANDS),
        tmp_path / "m.tif",
        BANDS,
        ["p50"],
        SENSOR,
        progress=False,
    )
    per_band = discover_scenes(
        tmp_path / "b", SENSOR, BANDS, band_file_pattern="{scene}_{band}.tif"
    )
    assert len(per_band) == 3 and len(per_band[0].files) == 6
    single = composite(per_band, tmp_path / "s.tif", BANDS, ["p50"], SENSOR, progress=False)
    with rasterio.open(multi) as a, rasterio.open(single) as b:
        np.testing.assert_array_equal(a.read(), b.read())


def test_dask_cluster_gives_the_same_result(tmp_path):
    from dask.distributed import LocalCluster

    make_scenes(tmp_path / "s", n=3, size=(40, 40))
    scenes = discover_scenes(tmp_path / "s", SENSOR, BANDS)
    local = composite(
        scenes, tmp_path / "l.tif", BANDS, ["p50"], SENSOR, block_size=16, progress=False
    )
    with LocalCluster(n_workers=1, processes=False, threads_per_worker=2) as cluster:
        remote = composite(
            scenes,
            tmp_path / "d.tif",
            BANDS,
            ["p50"],
            SENSOR,
            block_size=16,
            dask_address=cluster.scheduler_address,
            progress=False,
        )
    with rasterio.open(local) as a, rasterio.open(remote) as b:
        np.testing.assert_array_equal(a.read(), b.read())


def _no_output(tmp_path):
    return not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


def test_bad_inputs_fail_in_one_line_without_output(tmp_path):
    make_scenes(tmp_path / "s", n=3)
    scenes = discover_scenes(tmp_path / "s", SENSOR, BANDS)
    out = tmp_path / "out" / "x.tif"
    with pytest.raises(ConfigError, match="date window is empty"):
        composite(scenes, out, BANDS, ["p50"], SENSOR, start="2020-01-01", end="2019-01-01")
    with pytest.raises(InputError, match="no scene between 2010-01-01 and 2010-12-31") as err:
        composite(scenes, out, BANDS, ["p50"], SENSOR, start="2010-01-01", end="2010-12-31")
    assert str(tmp_path / "s") in str(err.value)
    with pytest.raises(InputError, match="missing band"):
        composite(scenes, out, [*BANDS[:5], "TIR"], ["p50"], SENSOR)
    # a scene on another grid
    write_cog(
        tmp_path / "s" / "LC08_20190701.tif",
        np.zeros((6, 20, 24), np.int16),
        crs="EPSG:3035",
        transform=T30 * Affine.translation(1, 0),
        descriptions=BANDS,
    )
    write_cog(
        tmp_path / "s" / "LC08_20190701_QA_PIXEL.tif",
        np.zeros((20, 24), np.uint16),
        crs="EPSG:3035",
        transform=T30,
    )
    with pytest.raises(InputError, match="LC08_20190701.tif: grid") as err:
        composite(discover_scenes(tmp_path / "s", SENSOR, BANDS), out, BANDS, ["p50"], SENSOR)
    assert "\n" not in str(err.value)
    # a mask of another shape
    write_cog(
        tmp_path / "s" / "LC08_20190701.tif",
        np.zeros((6, 20, 24), np.int16),
        crs="EPSG:3035",
        transform=T30,
        descriptions=BANDS,
    )
    write_cog(
        tmp_path / "s" / "LC08_20190701_QA_PIXEL.tif",
        np.zeros((10, 12), np.uint16),
        crs="EPSG:3035",
        transform=T30,
    )
    with pytest.raises(InputError, match="mask is 12x10 but its scene"):
        composite(discover_scenes(tmp_path / "s", SENSOR, BANDS), out, BANDS, ["p50"], SENSOR)
    # a scene without mask
    (tmp_path / "s" / "LC08_20190701_QA_PIXEL.tif").unlink()
    with pytest.raises(InputError, match="QA mask of .* not found"):
        discover_scenes(tmp_path / "s", SENSOR, BANDS)
    # another CRS
    (tmp_path / "s" / "LC08_20190701.tif").unlink()
    write_cog(
        tmp_path / "s" / "LC08_20190801.tif",
        np.zeros((6, 20, 24), np.int16),
        crs="EPSG:32634",
        transform=T30,
        descriptions=BANDS,
    )
    write_cog(
        tmp_path / "s" / "LC08_20190801_QA_PIXEL.tif",
        np.zeros((20, 24), np.uint16),
        crs="EPSG:32634",
        transform=T30,
    )
    with pytest.raises(InputError, match="CRS EPSG:32634 differs"):
        composite(discover_scenes(tmp_path / "s", SENSOR, BANDS), out, BANDS, ["p50"], SENSOR)
    assert _no_output(tmp_path)


def test_cli_end_to_end_on_the_tiny_world(tmp_path, tiny_world):
    out = tmp_path / "stm"
    cmd = [
        sys.executable,
        "-m",
        "bsrlc.stm",
        f"scenes={tiny_world.root}/scenes/landsat",
        f"out_dir={out}",
        "periods={2007:[2006-01-01,2008-12-31],2019:[2018-01-01,2020-12-31]}",
        "metrics=[p25,p50,p75,count]",
        "progress=false",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    with rasterio.open(out / "landsat_2019.tif") as src:
        assert src.descriptions[:3] == ("BLU_P25", "BLU_P50", "BLU_P75")
        assert src.descriptions[-1] == "CLEAR_COUNT" and src.count == 19
        assert src.res == (30.0, 30.0) and src.crs.to_epsg() == 3035
        assert src.read(19).min() >= 1  # the demo world leaves no pixel without a clear view
    assert (out / "landsat_2007.tif").exists()
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "bsrlc.stm",
            f"scenes={tiny_world.root}/scenes/landsat",
            f"out_dir={out}",
            "label=1990",
            "start=1989-01-01",
            "end=1991-12-31",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1
    assert not (out / "landsat_1990.tif").exists()
