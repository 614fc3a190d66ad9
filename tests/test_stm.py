"""STM compositing: values against numpy, QA decoders, indices, bad input, the CLI, layouts, Dask."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from bsrlc.errors import ConfigError, InputError
from bsrlc.raster import write_cog
from bsrlc.stm import (
    SceneReader,
    SensorConfig,
    check_options,
    composite,
    composite_periods,
    compute_index,
    compute_stm_block,
    compute_stm_int16,
    discover_scenes,
    get_decoder,
    parse_metrics,
    plan_stm,
)
from bsrlc.stm.indices import index_matrices

T30 = Affine(30, 0, 5_250_000, 0, -30, 4_060_020)
BANDS = ["BLU", "GRN", "RED", "NIR", "SW1", "SW2"]
SENSOR = SensorConfig(
    name="landsat", scale=1e-4, decoder="landsat_qa_pixel", mask_suffix="_QA_PIXEL"
)
CLEAR = 1 << 6  # QA_PIXEL "clear" bit, no exclusion bit
CLOUD = 1 << 3
ALL = ["min", "p10", "p25", "median", "p75", "p90", "max", "mean", "std", "count"]


def nan_reference(refl):
    """numpy's nan-statistics over time of a (t, b, h, w) float array: (b, 9, h, w)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
        pct = np.nanpercentile(refl, [10, 25, 50, 75, 90], axis=0).transpose(1, 0, 2, 3)
        parts = [np.nanmin(refl, 0)[:, None], pct, np.nanmax(refl, 0)[:, None]]
        parts += [np.nanmean(refl, 0)[:, None], np.nanstd(refl, 0)[:, None]]
    return np.concatenate(parts, axis=1)


def random_stack(t, b, h, w, seed=0, p_clear=0.45):
    rng = np.random.default_rng(seed)
    dn = rng.integers(-500, 9000, size=(t, b, h, w)).astype(np.int16)
    clear = rng.random((t, h, w)) < p_clear
    clear[:, 0, 0] = False  # no clear observation
    clear[:, 0, 1] = False
    clear[3, 0, 1] = True  # exactly one
    clear[:, 0, 2] = False
    clear[[1, 4], 0, 2] = True  # exactly two
    return dn, clear


@pytest.mark.parametrize("t_len", [13, 70])  # 70: past the insertion-sort cut-off (shell gaps)
def test_kernel_equals_numpy(t_len):
    dn, clear = random_stack(t_len, 6, 9, 23, seed=t_len)
    dn[2, 4, 5, 5] = -9999  # nodata in one band drops the whole observation
    clear[2, 5, 5] = True
    scale, offset = 2.75e-5, -0.2
    refl = dn * scale + offset  # float64
    ok = clear & (dn != -9999).all(1)
    refl[np.broadcast_to(~ok[:, None], refl.shape)] = np.nan
    stats, count = compute_stm_block(
        dn, clear, ALL, scale=scale, offset=offset, nodata=-9999, indices=["NDVI"], bands=BANDS
    )
    assert stats.shape == (7 * 9, 9, 23) and count.dtype == np.int32
    np.testing.assert_array_equal(count, ok.sum(0))
    ref = nan_reference(refl)  # (6, 9, h, w)
    got = stats.reshape(7, 9, 9, 23)
    np.testing.assert_allclose(got[:6], ref, atol=1e-9, equal_nan=True)
    ndvi = (refl[:, 3] - refl[:, 2]) / (refl[:, 3] + refl[:, 2])
    np.testing.assert_allclose(
        got[6], nan_reference(np.clip(ndvi, -1, 1)[:, None])[0], atol=1e-9, equal_nan=True
    )
    # all masked: NaN; one observation: min = max = every percentile, std 0; two: interpolated
    assert np.isnan(got[:, :, 0, 0]).all() and count[0, 0] == 0
    assert count[0, 1] == 1 and (got[:6, :7, 0, 1] == refl[3, :, 0, 1][:, None]).all()
    assert (got[:, 8, 0, 1] == 0).all()
    a, b = np.sort(refl[[1, 4], :, 0, 2], axis=0)
    np.testing.assert_allclose(got[:6, 3, 0, 2], (a + b) / 2, atol=1e-12)
    # the int16 path: round(value * 10000), -32768 where nothing is clear, count last
    spec = parse_metrics(ALL)
    q = compute_stm_int16(
        dn,
        clear,
        spec,
        index_matrices(["NDVI"], BANDS),
        scale=scale,
        offset=offset,
        nodata=np.full((t_len, 6), -9999.0),
    )
    assert q.dtype == np.int16 and q.shape == (7 * 9 + 1, 9, 23)
    np.testing.assert_array_equal(q[-1], ok.sum(0))
    has = count > 0
    assert (q[:-1][:, ~has] == -32768).all() and q[-1, 0, 0] == 0
    assert np.abs(q[:-1][:, has] - np.round(stats[:, has] * 10000)).max() <= 1


def test_parse_metrics():
    spec = parse_metrics(["MIN", "p2.5", "median", "count", "std"])
    assert spec.names == ("min", "p2.5", "p50", "std") and spec.count
    np.testing.assert_array_equal(spec.qs, [0, 2.5, 50, 0])
    for bad, msg in [(["mode"], "unknown metric"), (["p101"], "above p100"), ([], "empty")]:
        with pytest.raises(ConfigError, match=msg):
            parse_metrics(bad)
    with pytest.raises(ConfigError, match="twice"):
        parse_metrics(["p50", "median"])


def test_landsat_qa_pixel_bits():
    dec = get_decoder("landsat_qa_pixel")
    # clear, fill, dilated cloud, cirrus, cloud, shadow, snow, water+clear, clear+low cloud conf.
    qa = np.array(
        [CLEAR, 1, 1 << 1, 1 << 2, 1 << 3, 1 << 4, 1 << 5, CLEAR | 1 << 7, CLEAR | 1 << 8],
        np.uint16,
    )
    np.testing.assert_array_equal(dec(qa), [1, 0, 0, 0, 0, 0, 0, 1, 1])
    assert dec(np.array([1 << 2], np.uint16), exclude_cirrus=False)[0]
    assert not dec(np.array([1 << 2 | 1 << 3], np.uint16), exclude_cirrus=False)[0]
    conf = np.array([CLEAR | 1 << 8, CLEAR | 2 << 8, CLEAR | 3 << 8], np.uint16)
    np.testing.assert_array_equal(dec(conf, cloud_confidence=2), [1, 0, 0])
    shadow_conf = np.array([CLEAR | 3 << 10, CLEAR | 3 << 12, CLEAR | 3 << 14], np.uint16)
    np.testing.assert_array_equal(dec(shadow_conf, shadow_confidence=3), [0, 1, 1])
    np.testing.assert_array_equal(dec(shadow_conf, snow_confidence=3), [1, 0, 1])
    np.testing.assert_array_equal(dec(shadow_conf, cirrus_confidence=3), [1, 1, 0])


def test_sentinel2_scl_classes():
    dec = get_decoder("sentinel2_scl")
    scl = np.arange(12, dtype=np.uint8)
    np.testing.assert_array_equal(np.nonzero(dec(scl))[0], [4, 5, 6])
    np.testing.assert_array_equal(np.nonzero(dec(scl, include_unclassified=True))[0], [4, 5, 6, 7])


def test_force_qai_bits():
    dec = get_decoder("force_qai")
    qai = np.array(
        [
            0,  # clear
            1,  # not valid
            1 << 1,  # less confident cloud
            2 << 1,  # confident cloud
            3 << 1,  # cirrus
            1 << 3,  # cloud shadow
            1 << 4,  # snow
            1 << 5,  # water: clear
            2 << 6,  # high aerosol: clear by default
            1 << 8,  # subzero
            1 << 9,  # saturation
            1 << 10,  # high sun zenith: clear by default
            3 << 11,  # illumination shadow: clear by default
            1 << 13,  # slope
            1 << 14,  # water vapour
        ],
        np.int16,
    )
    np.testing.assert_array_equal(dec(qai), [1, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 1])
    strict = dec(
        qai,
        exclude_high_aerosol=True,
        exclude_high_sun_zenith=True,
        exclude_poor_illumination=True,
        exclude_slope=True,
        exclude_water_vapour=True,
    )
    np.testing.assert_array_equal(strict, [1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
    assert not dec(np.array([-32768 | 1 << 3], np.int16))[0]  # bit 15 set: still decoded


def test_valid_decoder_and_registry():
    dec = get_decoder("valid")
    np.testing.assert_array_equal(dec(np.array([0, 1, 2, 255], np.uint8)), [0, 1, 1, 1])
    np.testing.assert_array_equal(dec(np.array([0, 1, 2]), clear_values=[2]), [0, 0, 1])
    with pytest.raises(ConfigError, match="unknown QA decoder"):
        get_decoder("modis")
    with pytest.raises(ConfigError, match="landsat_qa_pixel has no option.*exclude_cirus"):
        check_options("landsat_qa_pixel", {"exclude_cirus": False})
    check_options("force_qai", {"exclude_slope": True})


def test_index_registry():
    refl = np.array([[0.05], [0.08], [0.1], [0.4], [0.2], [0.1]])  # (bands, 1)
    np.testing.assert_allclose(compute_index("NDVI", refl, BANDS), [0.6])
    np.testing.assert_allclose(compute_index("ndbi", refl, BANDS), [(0.2 - 0.4) / 0.6])
    np.testing.assert_allclose(compute_index("MNDWI", refl, BANDS), [(0.08 - 0.2) / 0.28])
    evi = 2.5 * 0.3 / (0.4 + 6 * 0.1 - 7.5 * 0.05 + 1)
    np.testing.assert_allclose(compute_index("EVI", refl, BANDS), [evi])
    assert np.isnan(compute_index("NDVI", np.zeros((6, 1)), BANDS)[0])
    with pytest.raises(ConfigError, match="unknown index 'NDXX'"):
        index_matrices(["NDXX"], BANDS)
    with pytest.raises(ConfigError, match="NDBI needs band.*SW1"):
        index_matrices(["NDBI"], ["RED", "NIR"])


def make_scenes(folder, n=5, size=(20, 24), per_band=False, seed=0, prefix="LC08_2019"):
    """Scenes with QA_PIXEL masks; returns their reflectance (n, 6, h, w), NaN where not clear."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    refl = np.full((n, 6, *size), np.nan)
    for t in range(n):
        dn = rng.integers(100, 5000, size=(6, *size)).astype(np.int16)
        qa = np.full(size, CLEAR, np.uint16)
        qa[rng.random(size) < 0.3] = CLOUD
        qa[0, :3] = CLOUD  # never clear
        dn[2, 1, 1] = -9999  # nodata in one band, in every scene: no clear observation
        if t == 0:  # exactly one clear observation at (2, 2)
            qa[2, 2] = CLEAR
            dn[:, 2, 2] = [100, 200, 300, 400, 500, 600]
        else:
            qa[2, 2] = CLOUD
        stamp = f"{prefix}{t + 1:02d}15"
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
        ok = (qa == CLEAR) & (dn != -9999).all(0)
        refl[t][:, ok] = dn[:, ok] * 1e-4
    return refl


def test_composite_file_matches_numpy(tmp_path):
    refl = make_scenes(tmp_path / "scenes")
    scenes = discover_scenes(tmp_path / "scenes", SENSOR, BANDS)
    assert [s.date.isoformat() for s in scenes[:2]] == ["2019-01-15", "2019-02-15"]
    assert scenes[0].mask.name == "LC08_20190115_QA_PIXEL.tif"
    out = composite(
        scenes,
        tmp_path / "out" / "landsat_2019.tif",
        BANDS,
        ALL,
        SENSOR,
        indices=["NDVI", "NDBI"],
        block_size=16,  # several windows, clipped at the edges
        progress=False,
    )
    names = [f"{b}_{m}" for b in [*BANDS, "NDVI", "NDBI"] for m in ALL[:-1]]
    names = [n.upper().replace("MEDIAN", "P50") for n in names]
    with rasterio.open(out) as src:
        assert list(src.descriptions) == [*names, "CLEAR_COUNT"] and src.count == 8 * 9 + 1
        assert src.transform == T30 and src.crs.to_epsg() == 3035
        assert src.nodata == -32768 and set(src.dtypes) == {"int16"}
        tags = src.tags()
        data = src.read()
    assert tags["SENSOR"] == "landsat" and tags["N_SCENES"] == "5" and tags["SCALE"] == "0.0001"
    assert tags["START"] == "2019-01-15" and tags["END"] == "2019-05-15"
    ref = nan_reference(refl)  # (6, 9, h, w)
    ndvi = (refl[:, 3] - refl[:, 2]) / (refl[:, 3] + refl[:, 2])
    ndbi = (refl[:, 4] - refl[:, 3]) / (refl[:, 4] + refl[:, 3])
    ref = np.concatenate([ref, nan_reference(np.stack([ndvi, ndbi], 1))]).reshape(72, 20, 24)
    empty = np.isnan(ref[0])
    assert empty[0, :3].all() and empty[1, 1] and not empty[2, 2]
    assert (data[:-1][:, empty] == -32768).all() and (data[-1][empty] == 0).all()
    assert np.abs(data[:-1][:, ~empty] - np.round(ref[:, ~empty] * 10000)).max() <= 1
    np.testing.assert_array_equal(data[-1], (~np.isnan(refl[:, 0])).sum(0))
    assert data[-1, 2, 2] == 1 and (data[: 9 * 6 : 9, 2, 2] == [100, 200, 300, 400, 500, 600]).all()
    # an existing output is kept unless overwrite=true
    before = out.stat().st_mtime_ns
    composite(scenes, out, BANDS, ["p50"], SENSOR, progress=False)
    assert out.stat().st_mtime_ns == before
    composite(scenes, out, BANDS, ["p50"], SENSOR, overwrite=True, progress=False)
    with rasterio.open(out) as src:
        assert src.count == 7


def test_one_file_per_band_and_band_mapping(tmp_path):
    make_scenes(tmp_path / "a", n=3, seed=1)
    make_scenes(tmp_path / "b", n=3, per_band=True, seed=1)
    multi = composite(
        discover_scenes(tmp_path / "a", SENSOR, BANDS),
        tmp_path / "m.tif",
        BANDS,
        ["p50", "std"],
        SENSOR,
        progress=False,
    )
    per_band = discover_scenes(
        tmp_path / "b", SENSOR, BANDS, band_file_pattern="{scene}_{band}.tif"
    )
    assert len(per_band) == 3 and [f.name for f in per_band[0].files][:2] == [
        "LC08_20190115_BLU.tif",
        "LC08_20190115_GRN.tif",
    ]
    single = composite(per_band, tmp_path / "s.tif", BANDS, ["p50", "std"], SENSOR, progress=False)
    # bands by number, renamed: output RED_P50 is band 3 of the files
    by_number = composite(
        discover_scenes(tmp_path / "a", SENSOR, BANDS),
        tmp_path / "n.tif",
        {"RED": 3, "NIR": "NIR"},
        ["p50"],
        SENSOR,
        indices=["NDVI"],
        progress=False,
    )
    one = discover_scenes(tmp_path / "b", SENSOR, ["NIR"], band_file_pattern="{scene}_{band}.tif")
    assert one[0].per_band and [f.name for f in one[0].files] == ["LC08_20190115_NIR.tif"]
    nir = composite(one, tmp_path / "nir.tif", ["NIR"], ["p50", "std"], SENSOR, progress=False)
    with rasterio.open(multi) as a, rasterio.open(single) as b, rasterio.open(by_number) as c:
        np.testing.assert_array_equal(a.read(), b.read())
        assert c.descriptions == ("RED_P50", "NIR_P50", "NDVI_P50", "CLEAR_COUNT")
        np.testing.assert_array_equal(c.read(1), a.read(5))  # RED_P50 of the 6-band output
        np.testing.assert_array_equal(c.read(4), a.read(13))
        with rasterio.open(nir) as d:
            got, ref = d.read(), a.read([7, 8, 13])
        # RED is nodata at (1, 1): that drops the pixel from the 6-band STM, not from NIR alone
        assert (ref[:, 1, 1] == [-32768, -32768, 0]).all() and got[2, 1, 1] > 0
        got[:, 1, 1] = ref[:, 1, 1]
        np.testing.assert_array_equal(got, ref)
    # a list of files (masks in it are skipped) or one file; few open files read the same
    listed = discover_scenes(sorted((tmp_path / "a").glob("*.tif")), SENSOR, BANDS)
    assert [s.id for s in listed] == ["LC08_20190115", "LC08_20190215", "LC08_20190315"]
    assert len(discover_scenes(str(tmp_path / "a" / "LC08_20190215.tif"), SENSOR, BANDS)) == 1
    plan = plan_stm(listed, BANDS, ["p50"], [], SENSOR)
    few, many = SceneReader(plan, max_open=2), SceneReader(plan)
    window = Window(3, 2, 10, 7)
    for got, ref in zip(few.read(window), many.read(window), strict=True):
        assert got.shape[-2:] == (7, 10)
        np.testing.assert_array_equal(got, ref)
    assert len(few._open) <= 2 and len(many._open) == 6
    few.close()
    many.close()


def test_dask_cluster_gives_the_same_result(tmp_path):
    from dask.distributed import LocalCluster

    make_scenes(tmp_path / "s", n=3, size=(40, 40))
    scenes = discover_scenes(tmp_path / "s", SENSOR, BANDS)
    kw = {"block_size": 16, "progress": False, "indices": ["NDVI"]}
    local = composite(scenes, tmp_path / "l.tif", BANDS, ["p25", "mean"], SENSOR, **kw)
    with LocalCluster(
        n_workers=1, processes=False, threads_per_worker=2, dashboard_address=None
    ) as cluster:
        remote = composite(
            scenes,
            tmp_path / "d.tif",
            BANDS,
            ["p25", "mean"],
            SENSOR,
            dask_address=cluster.scheduler_address,
            **kw,
        )
    with rasterio.open(local) as a, rasterio.open(remote) as b:
        np.testing.assert_array_equal(a.read(), b.read())
        assert a.descriptions == b.descriptions and b.transform == T30


def _fails(tmp_path, exc, match, names, fn, *args, **kwargs):
    """fn raises exc with a one-line message matching and naming `names`, and writes nothing."""
    with pytest.raises(exc, match=match) as err:
        fn(*args, **kwargs)
    msg = str(err.value)
    assert "\n" not in msg
    for name in names:
        assert str(name) in msg, msg
    out = tmp_path / "out"
    assert not out.exists() or not list(out.iterdir())
    return msg


def _scene(folder, stamp, *, bands=BANDS, crs="EPSG:3035", transform=T30, shape=(20, 24), qa=None):
    write_cog(
        folder / f"{stamp}.tif",
        np.ones((len(bands), *shape), np.int16),
        crs=crs,
        transform=transform,
        descriptions=bands,
    )
    qa_shape = shape if qa is None else qa
    write_cog(
        folder / f"{stamp}_QA_PIXEL.tif",
        np.full(qa_shape, CLEAR, np.uint16),
        crs=crs,
        transform=transform,
    )


def test_bad_dates_and_windows(tmp_path):
    make_scenes(tmp_path / "s", n=3)
    scenes = discover_scenes(tmp_path / "s", SENSOR, BANDS)
    out = tmp_path / "out" / "x.tif"
    _fails(
        tmp_path, ConfigError, "date window is empty", ["2020-01-01", "2019-01-01"],
        composite, scenes, out, BANDS, ["p50"], SENSOR, start="2020-01-01", end="2019-01-01",
    )  # fmt: skip
    _fails(
        tmp_path, InputError, "no scene between 2010-01-01 and 2010-12-31", [tmp_path / "s"],
        composite, scenes, out, BANDS, ["p50"], SENSOR, start="2010-01-01", end="2010-12-31",
    )  # fmt: skip
    _fails(
        tmp_path, ConfigError, "not a date", ["2019-13-01"],
        composite, scenes, out, BANDS, ["p50"], SENSOR, start="2019-13-01",
    )  # fmt: skip
    # several periods: one without scenes fails them all before anything is written
    _fails(
        tmp_path, InputError, "no scene between 1990", [tmp_path / "s"],
        composite_periods, scenes, tmp_path / "out",
        {"2019": ["2019-01-01", "2019-12-31"], "1990": ["1990-01-01", "1990-12-31"]},
        bands=BANDS, metrics=["p50"], sensor=SENSOR,
    )  # fmt: skip
    (tmp_path / "empty").mkdir()
    _fails(
        tmp_path, InputError, "no scene files matching", [tmp_path / "empty"],
        discover_scenes, tmp_path / "empty", SENSOR, BANDS,
    )  # fmt: skip


def test_bad_grids_masks_and_bands(tmp_path):
    s = tmp_path / "s"
    make_scenes(s, n=2)
    out = tmp_path / "out" / "x.tif"

    def run():
        return composite(discover_scenes(s, SENSOR, BANDS), out, BANDS, ["p50"], SENSOR)

    bad = s / "LC08_20190701.tif"
    _scene(s, "LC08_20190701", transform=T30 * Affine.translation(1, 0))  # shifted grid
    _fails(tmp_path, InputError, "differs from", [bad, "resample"], run)
    _scene(s, "LC08_20190701", crs="EPSG:32634")  # another CRS
    _fails(tmp_path, InputError, "CRS EPSG:32634 differs", [bad, "reproject"], run)
    _scene(s, "LC08_20190701", shape=(10, 12))  # another size
    _fails(tmp_path, InputError, "grid 12x10", [bad], run)
    _scene(s, "LC08_20190701", qa=(10, 12))  # a mask of another shape
    _fails(
        tmp_path,
        InputError,
        "mask is 12x10 but its scene",
        [bad.with_name(bad.stem + "_QA_PIXEL.tif")],
        run,
    )
    _scene(s, "LC08_20190701", bands=BANDS[:5])  # a band missing in one scene
    _fails(tmp_path, InputError, r"band\(s\) SW2 missing", [bad, "BLU, GRN, RED, NIR, SW1"], run)
    (s / "LC08_20190701_QA_PIXEL.tif").unlink()  # a scene without its mask
    _fails(
        tmp_path,
        InputError,
        "QA mask of .* not found",
        [s / "LC08_20190701_QA_PIXEL.tif", bad],
        run,
    )
    bad.unlink()
    write_cog(s / "LC08_x.tif", np.ones((6, 20, 24), np.int16), crs="EPSG:3035", transform=T30)
    write_cog(
        s / "LC08_x_QA_PIXEL.tif", np.ones((20, 24), np.uint16), crs="EPSG:3035", transform=T30
    )
    _fails(tmp_path, InputError, "no date in the name", [s / "LC08_x.tif"], run)
    (s / "LC08_x.tif").unlink()
    (s / "LC08_x_QA_PIXEL.tif").unlink()
    assert run().exists()  # the folder is fine again


def test_bad_per_band_files_and_config(tmp_path):
    b = tmp_path / "b"
    make_scenes(b, n=2, per_band=True)
    (b / "LC08_20190215_NIR.tif").unlink()
    _fails(
        tmp_path, InputError, "band file of scene LC08_20190215 not found",
        [b / "LC08_20190215_NIR.tif"],
        discover_scenes, b, SENSOR, BANDS, band_file_pattern="{scene}_{band}.tif",
    )  # fmt: skip
    _fails(
        tmp_path, ConfigError, "must contain {scene} and {band}", ["{scene}.tif"],
        discover_scenes, b, SENSOR, BANDS, band_file_pattern="{scene}.tif",
    )  # fmt: skip
    _fails(
        tmp_path, InputError, "scene file not found", [b / "nope.tif"],
        discover_scenes, [b / "nope.tif"], SENSOR, BANDS,
    )  # fmt: skip
    scenes = discover_scenes(
        [b / "LC08_20190115_BLU.tif"], SENSOR, BANDS, band_file_pattern="{scene}_{band}.tif"
    )
    typo = SensorConfig(decoder="landsat_qa_pixel", decoder_options={"cloud_conf": 2})
    _fails(
        tmp_path, ConfigError, "has no option", ["cloud_conf", "cloud_confidence"],
        composite, scenes, tmp_path / "out" / "x.tif", BANDS, ["p50"], typo,
    )  # fmt: skip


def test_force_scene_suffix_pairs_boa_with_qai(tmp_path):
    force = SensorConfig(
        name="force",
        decoder="force_qai",
        scene_suffix="_BOA",
        mask_suffix="_QAI",
        date_regex=r"^(\d{8})",
    )
    write_cog(
        tmp_path / "20190715_LEVEL2_LND08_BOA.tif",
        np.full((6, 4, 4), 1000, np.int16),
        crs="EPSG:3035",
        transform=T30,
        nodata=-9999,
    )
    qai = np.zeros((4, 4), np.int16)
    qai[0, 0] = 2 << 1  # confident cloud
    write_cog(tmp_path / "20190715_LEVEL2_LND08_QAI.tif", qai, crs="EPSG:3035", transform=T30)
    scenes = discover_scenes(tmp_path, force, BANDS, glob="*_BOA.tif")
    assert [s.mask.name for s in scenes] == ["20190715_LEVEL2_LND08_QAI.tif"]
    out = composite(
        scenes,
        tmp_path / "o.tif",
        {b: k + 1 for k, b in enumerate(BANDS)},
        ["max"],
        force,
        progress=False,
    )
    with rasterio.open(out) as src:
        assert src.read(1)[0, 0] == -32768 and src.read(1)[1, 1] == 1000 and src.read(7)[0, 0] == 0


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "bsrlc.stm", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_end_to_end(tmp_path):
    refl = make_scenes(tmp_path / "scenes", n=6)
    out = tmp_path / "stm"
    res = _cli(
        "sensor=demo_landsat",
        f"scenes={tmp_path / 'scenes'}",
        f"out_dir={out}",
        "periods={2019:[2019-01-01,2019-03-31],2020:[2019-04-01,2019-12-31]}",
        "metrics=[p25,median,std,count]",
        "indices=[NDVI]",
        "block_size=16",
        "progress=false",
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [str(out / "landsat_2019.tif"), str(out / "landsat_2020.tif")]
    with rasterio.open(out / "landsat_2020.tif") as src:
        assert src.descriptions[:3] == ("BLU_P25", "BLU_P50", "BLU_STD")
        assert src.descriptions[-4:] == ("NDVI_P25", "NDVI_P50", "NDVI_STD", "CLEAR_COUNT")
        assert src.count == 22 and set(src.dtypes) == {"int16"} and src.nodata == -32768
        assert src.crs.to_epsg() == 3035 and src.transform == T30
        tags = src.tags()
        assert tags["START"] == "2019-04-01" and tags["END"] == "2019-12-31"
        assert tags["FIRST_DATE"] == "2019-04-15" and tags["N_SCENES"] == "3"
        data = src.read()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = np.nanpercentile(refl[3:], [25, 50], axis=0)  # (2, 6, h, w), scenes Apr..Jun
        std = np.nanstd(refl[3:], axis=0)
    has = data[-1] > 0
    np.testing.assert_array_equal(data[-1], (~np.isnan(refl[3:, 0])).sum(0))
    assert np.abs(data[0:18:3][:, has] - np.round(ref[0][:, has] * 1e4)).max() <= 1
    assert np.abs(data[1:18:3][:, has] - np.round(ref[1][:, has] * 1e4)).max() <= 1
    assert np.abs(data[2:18:3][:, has] - np.round(std[:, has] * 1e4)).max() <= 1
    assert (data[:-1][:, ~has] == -32768).all()
    # one window, the label defaulting to the year of end
    res = _cli(
        "sensor=demo_landsat",
        f"scenes={tmp_path / 'scenes'}",
        f"out_dir={out}",
        "end=2021-06-30",
        "metrics=[p50]",
        "progress=false",
    )
    assert res.returncode == 0, res.stderr
    with rasterio.open(out / "landsat_2021.tif") as src:
        assert src.count == 7 and src.tags()["N_SCENES"] == "6"


def test_cli_errors_are_one_line_without_output(tmp_path):
    make_scenes(tmp_path / "scenes", n=2)
    out = tmp_path / "stm"
    common = ["sensor=demo_landsat", f"scenes={tmp_path / 'scenes'}", f"out_dir={out}"]
    cases = [
        (["label=1990", "start=1989-01-01", "end=1991-12-31"], "no scene between"),
        (["end=2019-12-31", "metrics=[p50,mode]"], "unknown metric"),
        ([f"scenes={tmp_path / 'nope'}", "end=2019-12-31"], "scene folder not found"),
    ]
    for extra, msg in cases:
        res = _cli(*common, *extra)
        err = res.stderr.strip()
        assert res.returncode == 2, (extra, res.stderr)
        assert err.startswith("error: ") and len(err.splitlines()) == 1 and msg in err, err
    assert not out.exists() or not list(out.iterdir())
    res = _cli("sensor=demo_landsat")  # scenes is required
    assert res.returncode == 2 and "scenes: required" in res.stderr
    res = _cli("--help")
    assert res.returncode == 0 and "periods" in res.stdout and "sensor" in res.stdout
