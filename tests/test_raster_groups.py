"""Inputs from several files: VRTs and raster groups (``a.tif+b.tif``) in training and predict."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from bsrlc.data.chips import RasterCache
from bsrlc.errors import InputError
from bsrlc.raster import (
    band_indices,
    open_raster,
    raster_info,
    raster_members,
    resolve_raster,
)

T10 = Affine(10, 0, 4_500_000, 0, -10, 3_100_000)


def _write(path, arr, names, *, transform=T10, crs="EPSG:3035", nodata=None, **extra):
    """A tiny GeoTIFF with band descriptions (and optional scales, offsets, band tags)."""
    profile = {
        "driver": "GTiff",
        "width": arr.shape[2],
        "height": arr.shape[1],
        "count": arr.shape[0],
        "dtype": arr.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": 16,
        "blockysize": 16,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)
        for i, name in enumerate(names or [], start=1):
            dst.set_band_description(i, name)
        if "scales" in extra:
            dst.scales = extra["scales"]
            dst.offsets = extra["offsets"]
        for i, tags in enumerate(extra.get("band_tags", []), start=1):
            dst.update_tags(i, **tags)
    return Path(path)


def _split(src: Path, parts: dict[str, list[str]], folder: Path) -> list[Path]:
    """Write the bands of ``src`` named in each part to a file of its own (file stem -> bands).

    A part holding one band listed as ``[""]`` gets that band (the file stem) without a
    description, as per-metric files from other tools often come.
    """
    out = []
    with rasterio.open(src) as s:
        names = list(s.descriptions)
        for stem, bands in parts.items():
            wanted = [stem] if bands == [""] else bands
            data = s.read([names.index(b) + 1 for b in wanted])
            profile = {**s.profile, "count": len(wanted), "driver": "GTiff"}
            path = folder / f"{stem}.tif"
            with rasterio.open(path, "w", **profile) as d:
                d.write(data)
                if bands != [""]:
                    d.descriptions = tuple(bands)
            out.append(path)
    return out


@pytest.fixture
def pair(tmp_path):
    """Two files on one grid (3 + 2 bands, int16, different nodata) and their stacked twin."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5000, (3, 40, 48)).astype(np.int16)
    b = rng.integers(0, 5000, (2, 40, 48)).astype(np.int16)
    a[:, 0, 0] = -9999
    b[:, 1, 1] = -32768
    scales = (1e-4, 1e-4, 1e-4)
    pa = _write(
        tmp_path / "s2_2019_vis.tif",
        a,
        ["BLU_P50", "GRN_P50", "RED_P50"],
        nodata=-9999,
        scales=scales,
        offsets=(0.0, 0.0, -0.1),
        band_tags=[{"SENSOR": "sentinel2"}],
    )
    pb = _write(tmp_path / "s2_2019_ir.tif", b, ["NIR_P50", "SW1_P50"], nodata=-32768)
    stacked = np.concatenate([a, np.where(b == -32768, -9999, b).astype(np.int16)])
    ps = _write(
        tmp_path / "stacked.tif",
        stacked,
        ["BLU_P50", "GRN_P50", "RED_P50", "NIR_P50", "SW1_P50"],
        nodata=-9999,
    )
    return pa, pb, ps


def test_group_stacks_bands_of_several_files_like_one_file(tmp_path, pair):
    pa, pb, ps = pair
    vrt_dir = tmp_path / "vrt"
    vrt = resolve_raster(f"{pa}+{pb}", vrt_dir)
    assert vrt.parent == vrt_dir and vrt.name.startswith("s2_2019_vis+s2_2019_ir.")
    info = raster_info(vrt)
    assert info.sources == (pa, pb) and info.name == f"{pa}+{pb}"
    assert info.descriptions == ("BLU_P50", "GRN_P50", "RED_P50", "NIR_P50", "SW1_P50")
    assert info.nodata == -9999 and info.dtype == "int16"
    with open_raster(vrt) as g, open_raster(ps) as s:
        # b's nodata (-32768) is mapped onto the group's (-9999, the first file's)
        assert np.array_equal(g.read(), s.read())
        assert g.scales[:3] == (1e-4, 1e-4, 1e-4) and g.offsets[2] == -0.1
        assert g.tags(1)["SENSOR"] == "sentinel2"
        assert g.crs == s.crs and g.transform == s.transform
    # bands are found by description across the files, in the order asked for
    assert band_indices(info, ["NIR_P50", "BLU_P50"]) == [4, 1]
    # the chip cache reads a group (stacked in $BSRLC_CACHE/vrt) like the stacked file
    cache = RasterCache(f"{pa}+{pb}", ["NIR_P50", "RED_P50"], cache_dir=tmp_path / "chips")
    ref = RasterCache(ps, ["NIR_P50", "RED_P50"], cache_dir=tmp_path / "chips")
    assert np.array_equal(cache.data, ref.data) and np.array_equal(cache.valid, ref.valid)
    assert not cache.valid[0, 0] and not cache.valid[1, 1]
    # a nested list (YAML) is the same group; the VRT is reused while the files are unchanged
    mtime = vrt.stat().st_mtime_ns
    assert resolve_raster([str(pa), str(pb)], vrt_dir) == vrt
    assert vrt.stat().st_mtime_ns == mtime
    # a changed file gives a new VRT (chip caches and resumed predictions keyed on the path
    # never mix old and new pixels)
    with rasterio.open(pb, "r+") as d:
        d.write(np.zeros((2, 40, 48), np.int16))
    os.utime(pb, ns=(mtime + 10**9, mtime + 10**9))
    assert resolve_raster(f"{pa}+{pb}", vrt_dir) != vrt


def test_types_are_promoted_and_single_band_files_named_after_their_stem(tmp_path, pair):
    pa, _, _ = pair
    ndv = np.random.default_rng(1).random((1, 40, 48)).astype(np.float32)
    pn = _write(tmp_path / "NDV_P50.tif", ndv, None)  # no band description, no nodata
    with open_raster(resolve_raster(f"{pa}+{pn}", tmp_path)) as g:
        assert g.descriptions[-1] == "NDV_P50" and set(g.dtypes) == {"float32"}
        assert np.array_equal(g.read(4), ndv[0]) and g.read(1)[0, 0] == -9999


def test_vrt_input_with_band_descriptions(tmp_path):
    """A VRT mosaic of two tiles (as gdalbuildvrt writes for STM tiles) is read like a GeoTIFF."""
    rng = np.random.default_rng(2)
    whole = rng.integers(0, 3000, (2, 32, 64)).astype(np.int16)
    names = ["BLU_P50", "NIR_P50"]
    left = _write(tmp_path / "X0_Y0.tif", whole[:, :, :32], names, nodata=-32768)
    right = _write(
        tmp_path / "X1_Y0.tif",
        whole[:, :, 32:],
        names,
        nodata=-32768,
        transform=T10 * T10.translation(32, 0),
    )
    bands = ""
    for b, name in enumerate(names, start=1):
        sources = "".join(
            f"<SimpleSource><SourceFilename relativeToVRT='1'>{p.name}</SourceFilename>"
            f"<SourceBand>{b}</SourceBand><SrcRect xOff='0' yOff='0' xSize='32' ySize='32'/>"
            f"<DstRect xOff='{off}' yOff='0' xSize='32' ySize='32'/></SimpleSource>"
            for p, off in ((left, 0), (right, 32))
        )
        bands += (
            f"<VRTRasterBand dataType='Int16' band='{b}'><Description>{name}</Description>"
            f"<NoDataValue>-32768</NoDataValue>{sources}</VRTRasterBand>"
        )
    with rasterio.open(left) as s:
        wkt = s.crs.to_wkt()
    vrt = tmp_path / "mosaic_2019.vrt"
    vrt.write_text(
        f"<VRTDataset rasterXSize='64' rasterYSize='32'><SRS>{wkt}</SRS>"
        f"<GeoTransform>{', '.join(map(str, T10.to_gdal()))}</GeoTransform>{bands}</VRTDataset>"
    )
    info = raster_info(vrt)
    assert info.descriptions == tuple(names) and info.sources == () and info.width == 64
    assert resolve_raster(str(vrt)) == vrt
    cache = RasterCache(vrt, ["NIR_P50"], cache_dir=tmp_path / "chips")
    assert np.array_equal(cache.data[0], whole[1])
    # a VRT can be a member of a group too
    ndv = _write(tmp_path / "NDV_P50.tif", whole[:1] // 2, ["NDV_P50"], nodata=-32768)
    g = raster_info(f"{vrt}+{ndv}")
    assert g.descriptions == ("BLU_P50", "NIR_P50", "NDV_P50")


def test_group_errors_are_one_line_naming_files_problem_and_fix(tmp_path, pair):
    pa, pb, _ = pair
    arr = np.zeros((1, 40, 48), np.int16)
    utm = _write(tmp_path / "utm.tif", arr, ["X"], crs="EPSG:32633")
    shifted = _write(tmp_path / "shifted.tif", arr, ["X"], transform=T10 * T10.translation(1, 0))
    small = _write(tmp_path / "small.tif", arr[:, :20], ["X"])
    twin = _write(tmp_path / "twin.tif", arr, ["NIR_P50"])
    cases = [
        (f"{pa}+{utm}", "utm.tif: CRS EPSG:32633 differs from .*s2_2019_vis.tif.*reproject"),
        (f"{pa}+{shifted}", "shifted.tif: grid 48x40 at .* differs from .*resample"),
        (f"{pa}+{small}", "small.tif: grid 48x20 .* differs"),
        (
            f"{pa}+{pb}+{twin}",
            "s2_2019_ir.tif and .*twin.tif: both have a band 'NIR_P50'.*drop one file",
        ),
        (f"{pa}+{tmp_path / 'nope.tif'}", r"nope.tif do not exist; fix the path"),
        (f"{pa}+", "empty path in a raster group"),
        (f"{pa}+{tmp_path}", "is a folder; a raster group joins files"),
        (f"{pa}+{pa}", "given twice"),
    ]
    for spec, pattern in cases:
        with pytest.raises(InputError, match=pattern) as err:
            resolve_raster(spec, tmp_path / "vrt")
        assert "\n" not in str(err.value)
    info = raster_info(resolve_raster(f"{pa}+{pb}", tmp_path / "vrt"))
    with pytest.raises(InputError, match=r"s2_2019_ir.tif: missing band\(s\) SW2_P50 \(files have"):
        band_indices(info, ["BLU_P50", "SW2_P50"])
    # an existing file whose name holds a + is that one file, not a group
    plus = _write(tmp_path / "a+b.tif", arr, ["X"])
    assert raster_members(str(plus)) == [plus] and resolve_raster(str(plus)) == plus


def test_datamodule_on_split_files_gives_the_samples_of_the_stacked_file(
    tmp_path, tiny_world, tiny_stms
):
    from bsrlc.data.classify import PointPatchDataModule

    src = tiny_stms["sentinel2"]["2019"]
    with rasterio.open(src) as s:
        names = list(s.descriptions)
    p25 = [n for n in names if n.endswith("_P25")]
    rest = [n for n in names if n not in p25 and n != "NIR_P75"]
    files = _split(src, {"s2_2019_P25": p25, "s2_2019_rest": rest, "NIR_P75": [""]}, tmp_path)
    group = "+".join(map(str, files))
    points = str(tiny_world.root / tiny_world.points[2019])
    bands = ["NIR_P75", "*_P50", "BLU_P25", "RED_P25"]  # across the three files
    kw = {"bands": bands, "block_size": 32, "augment": False}
    one = PointPatchDataModule(str(src), points, cache_dir=str(tmp_path / "c1"), **kw)
    split = PointPatchDataModule(group, points, cache_dir=str(tmp_path / "c2"), **kw)
    assert split.rasters[0].parent == tmp_path / "c2" / "vrt"
    assert split.data_files() == [*files, Path(points)]
    one.setup("fit")
    split.setup("fit")
    assert split.bands == one.bands and split.bands[0] == "NIR_P75"
    assert split.counts == one.counts and split.norm_stats == one.norm_stats
    for name in ("train", "val", "test"):
        a, b = one._datasets[name], split._datasets[name]
        assert len(a) == len(b) > 0
        for i in (0, len(a) // 2, len(a) - 1):
            assert all(np.array_equal(a[i][k], b[i][k]) for k in ("image", "label"))


def test_train_config_takes_groups_in_a_period_list(tmp_path, tiny_world, tiny_stms, pair):
    from hydra.utils import instantiate

    from tests.conftest import compose_train

    pa, pb, _ = pair
    cfg = compose_train(
        [
            "experiment=classify_demo",
            f"data.raster=[{pa}+{pb},{pb}+{pa}]",  # as typed in bash: no quotes
            f"data.points={tiny_world.root / tiny_world.points[2019]}",
            f"data.cache_dir={tmp_path / 'chips'}",
        ],
        tmp_path,
    )
    dm = instantiate(cfg.data)
    assert len(dm.rasters) == 2 and all(r.suffix == ".vrt" for r in dm.rasters)
    assert raster_info(dm.rasters[1]).descriptions[0] == "NIR_P50"


def _predict(*args):
    return subprocess.run(
        [sys.executable, "predict.py", *args, "progress=false"], capture_output=True, text=True
    )


def test_predict_on_split_files_gives_the_map_of_the_stacked_file(tmp_path, tiny_stms, checkpoints):
    src = tiny_stms["sentinel2"]["2019"]
    cls = checkpoints[1]
    with rasterio.open(src) as s:
        names = list(s.descriptions)
    p25 = [n for n in names if n.endswith("_P25")]
    rest = [n for n in names if n not in p25 and n != "NIR_P75"]
    files = _split(src, {"s2_2019_P25": p25, "s2_2019_rest": rest, "NIR_P75": [""]}, tmp_path)
    one = _predict(f"model={cls}", f"input={src}", f"out_dir={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr
    out = tmp_path / "split"
    res = _predict(f"model={cls}", f"input={'+'.join(map(str, files))}", f"out_dir={out}")
    assert res.returncode == 0, res.stderr
    assert "maps 2019:" in res.stdout  # the period label is found in the group's name
    with (
        rasterio.open(tmp_path / "one" / f"{src.stem}_map.tif") as a,
        rasterio.open(out / "s2_2019_P25+s2_2019_rest+NIR_P75_map.tif") as b,
    ):
        assert np.array_equal(a.read(), b.read())
        assert a.transform == b.transform and a.crs == b.crs
    assert len(list((out / ".inputs").glob("*.vrt"))) == 1
    # files on different grids: one line naming them, the problem and the fix
    other = _write(tmp_path / "utm.tif", np.zeros((1, 8, 8), np.int16), ["X"], crs="EPSG:32633")
    err = _predict(f"model={cls}", f"input={files[0]}+{other}", f"out_dir={tmp_path / 'bad'}")
    assert err.returncode == 2 and "utm.tif: CRS EPSG:32633 differs from" in err.stderr
    assert len(err.stderr.strip().splitlines()) == 1


def test_sr_datamodule_takes_groups_for_lr_and_hr(tmp_path):
    from bsrlc.data.sr import PairedSRDataModule

    rng = np.random.default_rng(3)
    hr = rng.integers(100, 3000, (3, 120, 120)).astype(np.int16)
    lr = hr.reshape(3, 40, 3, 40, 3).mean(axis=(2, 4)).round().astype(np.int16)
    t30 = Affine(30, 0, 4_500_000, 0, -30, 3_100_000)
    names = ["BLU_P50", "GRN_P50", "RED_P50"]
    paths = {}
    for key, arr, t in (("lr", lr, t30), ("hr", hr, T10)):
        paths[key] = _write(tmp_path / f"{key}.tif", arr, names, transform=t, nodata=-32768)
        paths[f"{key}_a"] = _write(tmp_path / f"{key}_a.tif", arr[:1], names[:1], transform=t)
        paths[f"{key}_b"] = _write(tmp_path / f"{key}_b.tif", arr[1:], names[1:], transform=t)
    kw = {"bands": ["*_P50"], "patch_size": 8, "samples_per_epoch": 8, "augment": False}
    one = PairedSRDataModule(paths["lr"], paths["hr"], cache_dir=tmp_path / "c1", **kw)
    split = PairedSRDataModule(
        f"{paths['lr_a']}+{paths['lr_b']}",
        [str(paths["hr_a"]), str(paths["hr_b"])],  # a YAML list is a group too
        cache_dir=tmp_path / "c2",
        **kw,
    )
    assert split.data_files() == [paths[k] for k in ("lr_a", "lr_b", "hr_a", "hr_b")]
    for a, b in zip(one._caches(), split._caches(), strict=True):
        assert np.array_equal(a.data, b.data)
    one.setup()
    split.setup()
    assert split.bands == names and split.norm_stats == one.norm_stats
