"""Prediction and classification training take each raster's reflectance scaling from the raster.

- a model trained on int16 reflectance x 10000 maps the same data stored as float reflectance,
  or as uint16 with GDAL scale/offset tags (Sentinel-2 L2A style), to the same output (SR and
  classification, checkpoints and bundles);
- a raster whose values are no reflectance after scaling is refused in one line naming the file
  and ``input_scale=`` (``data.input_scale=`` in training);
- bundles carry ``input_offset`` (older ones without it mean 0);
- classification training scales its rasters the same way, stores the scaling in the checkpoint
  and caches its chips under ``paths.root_dir``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from affine import Affine

from bsrlc.data.legend import Legend
from bsrlc.errors import ConfigError, InputError
from bsrlc.inference.checks import grid_signature, input_scaling, prepare_input
from bsrlc.inference.loading import build_from_config

ROOT = Path(__file__).resolve().parents[1]
BANDS = ["BLU_P50", "GRN_P50", "RED_P50"]
LR_T = Affine(30, 0, 4_500_000, 0, -30, 3_000_000)
HR_T = Affine(10, 0, 4_500_000, 0, -10, 3_000_000)


def _reflectance(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(3, h, w) smooth, textured reflectance 0.02-0.45 (float64)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0.03, 0.35, (3, h // 4 + 1, w // 4 + 1))
    field = np.kron(coarse, np.ones((4, 4)))[:, :h, :w]
    return np.clip(field + rng.normal(0, 0.03, (3, h, w)), 0.02, 0.45)


def _write(path: Path, array: np.ndarray, transform: Affine, nodata=None, scale=None, offset=None):
    profile = {
        "driver": "GTiff",
        "width": array.shape[2],
        "height": array.shape[1],
        "count": array.shape[0],
        "dtype": array.dtype.name,
        "crs": "EPSG:3035",
        "transform": transform,
        "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
        dst.descriptions = tuple(BANDS)
        if scale is not None:
            dst.scales = (scale,) * array.shape[0]
            dst.offsets = (offset,) * array.shape[0]
    return path


def _encodings(folder: Path, refl: np.ndarray, transform: Affine) -> dict[str, Path]:
    """The same reflectance (and nodata pixels) stored four ways.

    ``dn``: int16 x 10000 without tags; ``float``: float32 reflectance (NaN nodata); ``tagged``:
    uint16 with GDAL scale 1e-4 and offset -0.1; ``dn_in_float``: the int16 values as float32
    (no reflectance: implausible without ``input_scale=1e-4``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    dn = np.rint(refl * 10000).astype(np.int16)
    hole = np.zeros(dn.shape[1:], bool)
    hole[2:4, 5:7] = True  # a few nodata pixels, in every encoding
    dn[:, hole] = -32768
    as_float = (dn.astype(np.float64) * 1e-4).astype(np.float32)
    as_float[:, hole] = np.nan
    tagged = (dn.astype(np.int32) + 1000).astype(np.uint16)
    tagged[:, hole] = 0
    raw = dn.astype(np.float32)
    raw[:, hole] = np.nan
    return {
        "dn": _write(folder / "dn.tif", dn, transform, -32768),
        "float": _write(folder / "float.tif", as_float, transform, float("nan")),
        "tagged": _write(folder / "tagged.tif", tagged, transform, 0, 1e-4, -0.1),
        "dn_in_float": _write(folder / "dn_in_float.tif", raw, transform, float("nan")),
    }


def _stats(refl: np.ndarray) -> tuple[list[float], list[float]]:
    return refl.mean(axis=(1, 2)).tolist(), refl.std(axis=(1, 2)).tolist()


def _sr_checkpoint(path: Path, refl: np.ndarray, raster: Path, offset: float = 0.0) -> Path:
    """A small SR generator "trained" on int16 x 1e-4 (+ offset): constructed, not fitted."""
    torch.manual_seed(0)
    cfg = {
        "_target_": "bsrlc.models.sr.SRResNet",
        "in_bands": 3,
        "channels": 8,
        "n_blocks": 1,
        "scale": 3,
    }
    net = build_from_config(cfg)
    mean, std = _stats(refl)
    meta = {
        "task": "sr",
        "bands": BANDS,
        "scale": 3,
        "mean": mean,
        "std": std,
        "receptive_field": int(net.receptive_field),
        "input_scale": 1e-4,
        "input_offset": offset,
        "grid": grid_signature(raster),
    }
    state = {f"generator.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"generator": cfg}, "bsrlc": meta}, path)
    return path


def _cls_checkpoint(path: Path, refl: np.ndarray, raster: Path) -> Path:
    """A small centre-patch classifier "trained" on int16 x 1e-4: constructed, not fitted."""
    torch.manual_seed(1)
    legend = Legend.from_config("urban")
    cfg = {
        "_target_": "bsrlc.models.centre_patch.CentrePatchCNN",
        "in_channels": 3,
        "n_classes": len(legend),
        "channels": [8, 8],
        "patch_size": 7,
    }
    net = build_from_config(cfg)
    mean, std = _stats(refl)
    meta = {
        "task": "classify",
        "bands": BANDS,
        "mean": mean,
        "std": std,
        "legend": legend.to_config(),
        "patch_size": 7,
        "halo": 3,
        "dense": True,
        "temperature": 1.0,
        "train_priors": [1.0 / len(legend)] * len(legend),
        "input_scale": 1e-4,
        "input_offset": 0.0,
        "grid": grid_signature(raster),
    }
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"net": cfg}, "bsrlc": meta}, path)
    return path


def _predict_cfg(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from bsrlc.config import conf_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=f"{conf_dir()}/predict", version_base="1.3"):
        cfg = compose("predict", ["progress=false", *overrides])
    GlobalHydra.instance().clear()
    return cfg


def _run(model: Path, raster: Path, out: Path, *extra: str) -> dict:
    from bsrlc.predict import predict

    return predict(_predict_cfg([f"model={model}", f"input={raster}", f"out_dir={out}", *extra]))


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


@pytest.fixture(scope="module")
def lr_world(tmp_path_factory):
    """A 30 m raster in four encodings and SR / classifier models trained on its int16 form."""
    root = tmp_path_factory.mktemp("scaling")
    refl = _reflectance(30, 36)
    files = _encodings(root / "lr", refl, LR_T)
    sr = _sr_checkpoint(root / "sr.ckpt", refl, files["dn"])
    hr_refl = _reflectance(36, 42, seed=5)
    hr_files = _encodings(root / "hr", hr_refl, HR_T)
    cls = _cls_checkpoint(root / "cls.ckpt", hr_refl, hr_files["dn"])
    return SimpleNamespace(root=root, lr=files, hr=hr_files, sr=sr, cls=cls)


def test_sr_maps_float_and_tagged_inputs_as_the_int16_it_was_trained_on(lr_world, tmp_path):
    from bsrlc.export import export_bundle

    outs = {}
    for kind in ("dn", "float", "tagged"):
        res = _run(lr_world.sr, lr_world.lr[kind], tmp_path / kind, "pipeline=sr")
        outs[kind] = _read(res["sr"][kind])
    ref = outs["dn"]
    assert (ref == -32768).any() and (ref != -32768).mean() > 0.9  # the holes stay nodata
    for kind in ("float", "tagged"):
        assert np.array_equal(outs[kind] == -32768, ref == -32768), kind
        diff = np.abs(outs[kind].astype(np.int32) - ref.astype(np.int32))
        assert diff.max() <= 1, (kind, diff.max())  # the same up to int16 rounding
    # a bundle maps them alike too (torch and ONNX Runtime)
    bundle = export_bundle(lr_world.sr, tmp_path / "bundle")
    for backend in ("torch", "onnxruntime"):
        res = _run(
            bundle, lr_world.lr["float"], tmp_path / backend, "pipeline=sr", f"backend={backend}"
        )
        diff = np.abs(_read(res["sr"]["float"]).astype(np.int32) - ref.astype(np.int32))
        assert diff.max() <= 1, (backend, diff.max())
    # the old fixed 1e-4 on float reflectance is refused instead of mapping values 1e-4 off
    with pytest.raises(InputError) as err:
        _run(
            lr_world.sr,
            lr_world.lr["float"],
            tmp_path / "forced",
            "pipeline=sr",
            "input_scale=1e-4",
        )
    msg = str(err.value)
    assert "float.tif" in msg and "input_scale=" in msg and "far below reflectance" in msg
    assert "\n" not in msg and "trained on values x 0.0001" in msg
    assert not (tmp_path / "forced" / "float_sr.tif").exists()


def test_classification_maps_float_and_tagged_inputs_alike(lr_world, tmp_path):
    from bsrlc.export import export_bundle

    extra = ("pipeline=classify", "probabilities=true", "priors=none")
    maps, probas = {}, {}
    for kind in ("dn", "float", "tagged"):
        _run(lr_world.cls, lr_world.hr[kind], tmp_path / kind, *extra)
        maps[kind] = _read(tmp_path / kind / f"{kind}_map.tif")
        probas[kind] = _read(tmp_path / kind / f"{kind}_map_proba.tif").astype(np.int32)
    assert (maps["dn"] == 0).any() and len(np.unique(maps["dn"])) > 2
    for kind in ("float", "tagged"):
        assert np.array_equal(maps[kind], maps["dn"]), kind
        assert np.abs(probas[kind] - probas["dn"]).max() <= 1, kind
    bundle = export_bundle(lr_world.cls, tmp_path / "bundle")
    _run(bundle, lr_world.hr["tagged"], tmp_path / "bundled", *extra)
    assert np.array_equal(_read(tmp_path / "bundled" / "tagged_map.tif"), maps["dn"])
    # DN stored as float are no reflectance: refused; given their scale they map as the int16
    with pytest.raises(InputError, match=r"dn_in_float\.tif: .*set input_scale="):
        _run(lr_world.cls, lr_world.hr["dn_in_float"], tmp_path / "raw", *extra)
    _run(lr_world.cls, lr_world.hr["dn_in_float"], tmp_path / "raw", *extra, "input_scale=1e-4")
    assert np.array_equal(_read(tmp_path / "raw" / "dn_in_float_map.tif"), maps["dn"])


def test_a_uint16_raster_with_scale_offset_tags_is_read_as_reflectance(lr_world, caplog):
    model = SimpleNamespace(
        bands=BANDS, mean=[0.2] * 3, std=[0.1] * 3, meta={"input_scale": 1e-4, "task": "sr"}
    )
    with caplog.at_level(logging.INFO, logger="bsrlc.inference.checks"):
        scaling = prepare_input(lr_world.lr["tagged"], model, "SR")[0]
    assert (scaling.scale, scaling.offset, scaling.source) == (
        1e-4,
        -0.1,
        "GDAL scale/offset tags",
    )
    assert "trained on values x 0.0001: converted" in caplog.text
    # the window reader applies the offset: the same reflectance as the int16 file
    from bsrlc.inference.sr import _window_reader

    with rasterio.open(lr_world.lr["tagged"]) as a, rasterio.open(lr_world.lr["dn"]) as b:
        ra, na = _window_reader(a, [1, 2, 3], scaling.scale, scaling.offset)(0, 30, 0, 36)
        rb, nb = _window_reader(b, [1, 2, 3], 1e-4)(0, 30, 0, 36)
    assert np.array_equal(na, nb) and np.abs(ra - rb)[:, ~na].max() < 1e-6
    # an override replaces the tags (offset 0); a bad one is refused in one line
    assert input_scaling(lr_world.lr["dn"], model, "SR", 1e-4).source == "input_scale"
    with pytest.raises(InputError, match=r"input_scale=-1: give a positive number"):
        input_scaling(lr_world.lr["dn"], model, "SR", -1)
    from bsrlc.predict import input_scale_override

    assert input_scale_override(None) is None and input_scale_override("1e-4") == 1e-4
    with pytest.raises(ConfigError, match="input_scale=abc"):
        input_scale_override("abc")


def test_an_implausible_raster_is_a_one_line_error_on_the_command_line(lr_world, tmp_path):
    res = subprocess.run(
        [
            sys.executable,
            "predict.py",
            f"model={lr_world.cls}",
            f"input={lr_world.hr['dn']}",
            f"out_dir={tmp_path / 'out'}",
            "input_scale=1",  # int16 x 10000 taken as reflectance: up to 4500
            "progress=false",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert (
        "dn.tif" in lines[0]
        and "input_scale=" in lines[0]
        and "outside the reflectance" in lines[0]
    )
    assert not (tmp_path / "out" / "dn_map.tif").exists()


def test_bundles_keep_input_offset_and_old_bundles_mean_zero(lr_world, tmp_path):
    from bsrlc.export import _digest, export_bundle, load_bundle
    from bsrlc.predict import load_model

    refl = _reflectance(30, 36)
    ckpt = _sr_checkpoint(tmp_path / "offset.ckpt", refl, lr_world.lr["dn"], offset=-0.1)
    bundle = export_bundle(ckpt, tmp_path / "bundle", zip_bundle=True)
    with load_bundle(bundle) as b:
        assert (b.metadata["input_scale"], b.metadata["input_offset"]) == (1e-4, -0.1)
    assert load_model(bundle).meta["input_offset"] == -0.1
    assert load_model(tmp_path / "bundle").meta["input_offset"] == -0.1
    # a bundle written before input_offset was recorded: offset 0, and it still verifies
    folder = tmp_path / "bundle"
    meta = json.loads((folder / "metadata.json").read_text())
    del meta["input_offset"]
    meta["content_hash"] = _digest(folder, meta)
    (folder / "metadata.json").write_text(json.dumps(meta))
    assert load_model(folder).meta["input_offset"] == 0.0


def _points(path: Path, n: int = 240, seed: int = 0) -> Path:
    """CSV points on the HR grid (cells 5..31 x 5..37), classes 1-3, test left of column 12."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(5, 31, n)
    cols = rng.integers(5, 37, n)
    frame = pd.DataFrame(
        {
            "x": HR_T.c + (cols + 0.5) * HR_T.a,
            "y": HR_T.f + (rows + 0.5) * HR_T.e,
            "class": rng.integers(1, 4, n),
            "split": np.where(cols < 12, "test", "train"),
        }
    ).drop_duplicates(["x", "y"])
    frame.to_csv(path, index=False)
    return path


def test_classification_training_scales_each_raster_and_stores_the_scaling(lr_world, tmp_path):
    from bsrlc.data.classify import PointPatchDataModule
    from bsrlc.tasks.classify import CentrePatchTask

    points = _points(tmp_path / "points.csv")
    legend = {"name": "three", "classes": [{"code": c, "name": f"c{c}"} for c in (1, 2, 3)]}
    kw = {
        "points": str(points),
        "bands": BANDS,
        "legend": legend,
        "points_crs": "EPSG:3035",
        "patch_size": 5,
        "block_size": 8,
        "buffer": 0,
        "min_points_per_class": None,
        "nodata_points": "fill",
        "augment": False,
    }
    dms = {}
    for kind in ("dn", "float", "tagged"):
        dm = PointPatchDataModule(str(lr_world.hr[kind]), cache_dir=str(tmp_path / kind), **kw)
        dm.prepare_data()
        dm.setup("fit")
        dms[kind] = dm
    assert {(s.scale, s.offset) for s in dms["float"].input_scaling[0]} == {(1.0, 0.0)}
    assert {(s.scale, s.offset) for s in dms["tagged"].input_scaling[0]} == {(1e-4, -0.1)}
    ref = dms["dn"]
    for kind in ("float", "tagged"):
        dm = dms[kind]
        assert dm.counts == ref.counts, kind
        np.testing.assert_allclose(dm.norm_stats["mean"], ref.norm_stats["mean"], atol=1e-6)
        np.testing.assert_allclose(dm.norm_stats["std"], ref.norm_stats["std"], atol=1e-6)
        a = next(iter(dm.train_dataloader()))["image"]
        b = next(iter(ref.train_dataloader()))["image"]
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4)  # normalised units
    # the task stores the (first) raster's scaling with the weights
    task = CentrePatchTask(
        net={
            "_target_": "bsrlc.models.centre_patch.CentrePatchCNN",
            "channels": [4, 4],
            "patch_size": 5,
        }
    )
    task._trainer = SimpleNamespace(datamodule=dms["tagged"])
    task.setup("fit")
    ckpt: dict = {}
    task.on_save_checkpoint(ckpt)
    assert (ckpt["bsrlc"]["input_scale"], ckpt["bsrlc"]["input_offset"]) == (1e-4, -0.1)
    restored = CentrePatchTask(net=dict(task.hparams.net))
    restored.on_load_checkpoint(ckpt)
    assert (restored.input_scale, restored.input_offset) == (1e-4, -0.1)
    # DN stored as float: refused before anything is cached, naming data.input_scale
    bad = PointPatchDataModule(
        str(lr_world.hr["dn_in_float"]), cache_dir=str(tmp_path / "bad"), **kw
    )
    with pytest.raises(InputError, match=r"dn_in_float\.tif: .*data\.input_scale=") as err:
        bad.prepare_data()
    assert "\n" not in str(err.value) and "[LR, HR]" not in str(err.value)
    assert not list((tmp_path / "bad").glob("*.npy"))
    given = PointPatchDataModule(
        str(lr_world.hr["dn_in_float"]), cache_dir=str(tmp_path / "given"), input_scale=1e-4, **kw
    )
    assert given.input_scaling[0][0].scale == 1e-4
    with pytest.raises(ConfigError, match=r"data\.input_scale=\[1, 2\]"):
        PointPatchDataModule(str(lr_world.hr["dn"]), input_scale=[1, 2], **kw)


def test_classification_chip_caches_default_outside_the_checkout(monkeypatch, tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from bsrlc.config import conf_dir

    def cache_dir():
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
            cfg = compose("train", ["experiment=classify_demo"], return_hydra_config=True)
        GlobalHydra.instance().clear()
        assert cfg.data.input_scale is None
        return Path(cfg.data.cache_dir)

    monkeypatch.delenv("BSRLC_ROOT", raising=False)
    path = cache_dir()
    assert not path.resolve().is_relative_to(ROOT), path
    assert path == Path.home() / "bsrlc-runs" / "cache" / "chips"
    monkeypatch.setenv("BSRLC_ROOT", str(tmp_path))
    assert cache_dir() == tmp_path / "cache" / "chips"


def _mixed(path: Path, refl: np.ndarray, counts: np.ndarray, tagged: bool) -> Path:
    """bsrlc STM style: reflectance bands tagged x 1e-4 (+ -0.1 when ``tagged``, as uint16) and
    a CLEAR_COUNT band tagged x 1."""
    dn = np.rint(refl * 10000) + (1000 if tagged else 0)
    data = np.concatenate([dn, counts[None]]).astype(np.uint16 if tagged else np.int16)
    profile = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": 4,
        "dtype": data.dtype.name,
        "crs": "EPSG:3035",
        "transform": HR_T,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = (*BANDS, "CLEAR_COUNT")
        dst.scales = (1e-4, 1e-4, 1e-4, 1.0)
        dst.offsets = (-0.1 if tagged else 0.0,) * 3 + (0.0,)
    return path


def test_bands_with_different_tags_each_keep_their_own_scaling(tmp_path):
    """A classifier on reflectance plus CLEAR_COUNT (x 1) trains and maps both encodings alike."""
    from bsrlc.data.classify import PointPatchDataModule
    from bsrlc.export import export_bundle
    from bsrlc.tasks.classify import CentrePatchTask

    refl = _reflectance(36, 42, seed=7)
    counts = np.random.default_rng(3).integers(5, 40, refl.shape[1:])
    files = {
        k: _mixed(tmp_path / f"{k}.tif", refl, counts, k == "tagged") for k in ("dn", "tagged")
    }
    points = _points(tmp_path / "points.csv")
    legend = {"name": "three", "classes": [{"code": c, "name": f"c{c}"} for c in (1, 2, 3)]}
    bands = [*BANDS, "CLEAR_COUNT"]
    dms = {}
    for kind, path in files.items():
        dms[kind] = dm = PointPatchDataModule(
            str(path),
            str(points),
            bands=bands,
            legend=legend,
            points_crs="EPSG:3035",
            patch_size=5,
            block_size=8,
            buffer=0,
            min_points_per_class=None,
            augment=False,
            cache_dir=str(tmp_path / f"c_{kind}"),
        )
        dm.prepare_data()
        dm.setup("fit")
    pairs = [(s.scale, s.offset) for s in dms["tagged"].input_scaling[0]]
    assert pairs == [(1e-4, -0.1)] * 3 + [(1.0, 0.0)]
    np.testing.assert_allclose(dms["dn"].norm_stats["mean"], dms["tagged"].norm_stats["mean"])
    assert dms["dn"].norm_stats["mean"][3] == pytest.approx(counts[5:31, 5:37].mean(), rel=0.2)
    a = next(iter(dms["tagged"].train_dataloader()))["image"]
    b = next(iter(dms["dn"].train_dataloader()))["image"]
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4)
    task = CentrePatchTask(
        net={
            "_target_": "bsrlc.models.centre_patch.CentrePatchCNN",
            "channels": [4, 4],
            "patch_size": 5,
        }
    )
    task._trainer = SimpleNamespace(datamodule=dms["tagged"])
    task.setup("fit")
    ckpt: dict = {}
    task.on_save_checkpoint(ckpt)
    assert ckpt["bsrlc"]["input_scale"] == [1e-4, 1e-4, 1e-4, 1.0]
    assert ckpt["bsrlc"]["input_offset"] == [-0.1, -0.1, -0.1, 0.0]
    # predict: a classifier on the four bands maps both files alike, from a bundle too
    torch.manual_seed(2)
    cfg = {
        "_target_": "bsrlc.models.centre_patch.CentrePatchCNN",
        "in_channels": 4,
        "n_classes": 3,
        "channels": [8, 8],
        "patch_size": 7,
    }
    net = build_from_config(cfg)
    meta = {
        "task": "classify",
        "bands": bands,
        "mean": dms["dn"].norm_stats["mean"],
        "std": dms["dn"].norm_stats["std"],
        "legend": Legend.from_config(legend).to_config(),
        "patch_size": 7,
        "halo": 3,
        "dense": True,
        "temperature": 1.0,
        "train_priors": [1 / 3] * 3,
        "input_scale": [1e-4] * 3 + [1.0],
        "input_offset": [0.0] * 4,
        "grid": grid_signature(files["dn"]),
    }
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    model = tmp_path / "mixed.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": {"net": cfg}, "bsrlc": meta}, model)
    extra = ("pipeline=classify", "priors=none")
    _run(model, files["dn"], tmp_path / "p_dn", *extra)
    ref = _read(tmp_path / "p_dn" / "dn_map.tif")
    assert len(np.unique(ref)) > 1
    _run(model, files["tagged"], tmp_path / "p_tagged", *extra)
    assert np.array_equal(_read(tmp_path / "p_tagged" / "tagged_map.tif"), ref)
    bundle = export_bundle(model, tmp_path / "bundle")
    assert json.loads((bundle / "metadata.json").read_text())["input_scale"][3] == 1.0
    _run(bundle, files["tagged"], tmp_path / "p_bundle", *extra)
    assert np.array_equal(_read(tmp_path / "p_bundle" / "tagged_map.tif"), ref)
