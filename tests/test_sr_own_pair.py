"""Training SR on your own pair without surprises (issue 13, item 5).

- a float (0-1) reflectance pair trains with reflectance statistics, its scale goes into the
  checkpoint, the band count comes from the data and the phases set the number of steps;
- a uint16 raster with GDAL scale/offset tags is read as reflectance;
- a wrong scale or a wrong ``in_bands`` stops the run at its start with one line;
- the learning rate follows the phases, with the values asked for at their boundaries;
- run folders and chip caches default to a folder outside the checkout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from hydra.utils import instantiate
from omegaconf import OmegaConf

from bsrlc.data.reflectance import raster_scaling
from bsrlc.data.sr import PairedSRDataModule
from bsrlc.errors import ConfigError, InputError
from bsrlc.raster import raster_info
from bsrlc.tasks.sr import SRGANTask
from bsrlc.training import size_model_from_data, steps_from_model, train
from tests.conftest import compose_train

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["BLU_P50", "GRN_P50", "RED_P50"]
X0, Y0 = 5_250_000.0, 4_060_020.0


def _write(path, array, transform, nodata=None, scales=None, offsets=None):
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
        dst.descriptions = tuple(NAMES)
        if scales is not None:
            dst.scales = tuple(scales)
            dst.offsets = tuple(offsets)


def write_pair(folder, hr_kind="float", lr_kind="float", size=60):
    """An LR/HR pair whose LR is the 3x3 mean of the HR reflectance; returns the reflectance.

    Kinds: ``float`` (float32 reflectance), ``dn`` (int16 reflectance x 10000, no tags),
    ``tagged`` (uint16 with GDAL scale 1e-4 and offset -0.1, Sentinel-2 L2A style).
    """
    rng = np.random.default_rng(3)
    hr = rng.uniform(0.02, 0.4, size=(3, 3 * size, 3 * size))
    lr = hr.reshape(3, size, 3, size, 3).mean(axis=(2, 4))
    for name, refl, res in (("lr.tif", lr, 30.0), ("hr.tif", hr, 10.0)):
        kind = lr_kind if name == "lr.tif" else hr_kind
        t = Affine(res, 0, X0, 0, -res, Y0)
        if kind == "float":
            _write(folder / name, refl.astype(np.float32), t)
        elif kind == "dn":
            _write(folder / name, np.rint(refl * 1e4).astype(np.int16), t, nodata=-32768)
        else:
            dn = np.rint((refl + 0.1) * 1e4).astype(np.uint16)
            _write(folder / name, dn, t, nodata=0, scales=[1e-4] * 3, offsets=[-0.1] * 3)
    return lr, hr


def _overrides(folder, *extra):
    return [
        "experiment=sr_demo",
        f"data.lr_path={folder / 'lr.tif'}",
        f"data.hr_path={folder / 'hr.tif'}",
        f"data.bands=[{','.join(NAMES)}]",
        "data.test_region=null",
        "data.patch_size=16",
        "data.batch_size=4",
        "data.samples_per_epoch=8",
        f"data.cache_dir={folder / 'chips'}",
        "logger=csv",
        "trainer.val_check_interval=null",
        "trainer.check_val_every_n_epoch=1",
        "model.pretrain_steps=2",
        "model.adversarial_steps=1",
        "model.adv_ramp_steps=1",
        "model.generator.channels=8",
        "model.generator.n_blocks=1",
        "model.discriminator.channels=[8,8,8,8,8]",
        "model.panel_every_n_epochs=0",
        "test=false",
        *extra,
    ]


def test_float_pair_trains_in_reflectance_and_the_data_sizes_the_model(tmp_path):
    lr, _ = write_pair(tmp_path)
    cfg = compose_train(_overrides(tmp_path), tmp_path / "run")
    assert cfg.model.generator.in_bands is None and cfg.trainer.max_steps == -1
    train(cfg)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    meta = ckpt["bsrlc"]
    # float data is reflectance: statistics of the training rows, not 1e-4 of them
    assert meta["input_scale"] == 1.0 and meta["input_offset"] == 0.0
    assert np.allclose(meta["mean"], lr.mean(axis=(1, 2)), atol=0.01)
    assert min(meta["std"]) > 0.02
    # the band count came from the data and is stored where inference reads it
    hp = ckpt["hyper_parameters"]
    assert hp["generator"]["in_bands"] == 3 and hp["discriminator"]["in_bands"] == 3
    from bsrlc.inference.loading import load_checkpoint

    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt").net.in_bands == 3
    # 2 + 1 steps from the phases; the discriminator's schedule counted its one step
    assert ckpt["global_step"] == 3
    assert [s["last_epoch"] for s in ckpt["lr_schedulers"]] == [3, 1]


def test_uint16_with_scale_offset_tags_is_reflectance(tmp_path):
    lr, hr = write_pair(tmp_path, hr_kind="tagged", lr_kind="dn")
    info = raster_info(tmp_path / "hr.tif")
    assert raster_scaling(info, NAMES).source == "GDAL scale/offset tags"
    dm = PairedSRDataModule(
        tmp_path / "lr.tif",
        tmp_path / "hr.tif",
        bands=NAMES,
        patch_size=8,
        samples_per_epoch=8,
        cache_dir=tmp_path / "c",
        augment=False,
    )
    assert dm.in_bands == 3
    scaling = dm.input_scaling
    assert (scaling["hr"].scale, scaling["hr"].offset) == (1e-4, -0.1)
    assert (scaling["lr"].scale, scaling["lr"].offset) == (1e-4, 0.0)  # int16 without tags
    dm.setup()
    assert np.allclose(dm.norm_stats["mean"], lr.mean(axis=(1, 2)), atol=0.01)
    # HR and LR patches are the same reflectance in the same units: LR = 3x3 mean of HR
    batch = next(iter(dm.val_dataloader()))
    std = torch.tensor(dm.norm_stats["std"])[None, :, None, None]
    mean = torch.tensor(dm.norm_stats["mean"])[None, :, None, None]
    down = torch.nn.functional.avg_pool2d(batch["hr"], 3) * std + mean
    assert torch.allclose(down, batch["lr"] * std + mean, atol=2e-4)
    # the offset was applied (without it the HR reflectance would be 0.1 higher)
    assert abs(float((batch["hr"] * std + mean).mean()) - hr.mean()) < 0.02


def test_a_wrong_scale_fails_in_one_line_before_anything_is_cached(tmp_path):
    def datamodule(scale):
        return PairedSRDataModule(
            tmp_path / "lr.tif",
            tmp_path / "hr.tif",
            bands=NAMES,
            cache_dir=tmp_path / "c",
            input_scale=scale,
        )

    write_pair(tmp_path)  # float reflectance
    assert datamodule(None).input_scaling["lr"].scale == 1.0
    with pytest.raises(InputError) as err:
        assert datamodule(1e-4).in_bands  # the fixed 1e-4 of old: reflectance / 10000
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(tmp_path / "lr.tif"))
    assert "far below reflectance" in message and "data.input_scale=" in message
    write_pair(tmp_path, hr_kind="dn", lr_kind="dn")
    assert datamodule(None).input_scaling["hr"].scale == 1e-4
    dm = datamodule([1e-4, 1.0])  # the HR raster's DN taken as reflectance: up to 4000
    with pytest.raises(InputError, match=r"hr\.tif: HR raster 1st-99th percentile .* outside"):
        dm.setup()
    assert not list((tmp_path / "c").glob("*.npy"))  # refused before caching


def test_mixed_scale_tags_are_refused(tmp_path):
    t = Affine(30, 0, X0, 0, -30, Y0)
    dn = np.full((3, 4, 4), 1000, np.uint16)
    _write(tmp_path / "mixed.tif", dn, t, scales=[1e-4, 1e-4, 1.0], offsets=[0, 0, 0])
    with pytest.raises(InputError, match="different GDAL scale/offset tags"):
        raster_scaling(raster_info(tmp_path / "mixed.tif"), NAMES)


def test_wrong_in_bands_is_one_line_at_the_start(tmp_path):
    write_pair(tmp_path)
    cfg = compose_train(_overrides(tmp_path, "model.generator.in_bands=4"), tmp_path / "run")
    with pytest.raises(ConfigError) as err:
        train(cfg)
    message = str(err.value)
    assert "\n" not in message
    assert "lr.tif has 3 bands" in message
    assert "model.generator.in_bands=4" in message and "model.generator.in_bands=3" in message
    assert not (tmp_path / "chips").exists() or not list((tmp_path / "chips").glob("*.npy"))
    assert not (tmp_path / "run" / "checkpoints").exists()
    # a value that agrees is accepted
    cfg = compose_train(_overrides(tmp_path, "model.discriminator.in_bands=3"), tmp_path / "r2")
    dm = instantiate(cfg.data, _recursive_=False)
    size_model_from_data(cfg, dm)
    assert cfg.model.generator.in_bands == cfg.model.discriminator.in_bands == 3


def _task(**kwargs):
    base = {
        "generator": {
            "_target_": "bsrlc.models.sr.SRResNet",
            "in_bands": 3,
            "channels": 8,
            "n_blocks": 1,
        },
        "discriminator": {
            "_target_": "bsrlc.models.sr.PatchDiscriminator",
            "in_bands": 3,
            "channels": [8, 8, 8, 8, 8],
        },
        "optimizer_g": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3},
        "optimizer_d": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 2e-3},
        "pretrain_steps": 5,
        "adversarial_steps": 4,
        "adv_ramp_steps": 2,
        "ema_decay": 0,
    }
    return SRGANTask(**{**base, **kwargs})


def test_the_learning_rate_follows_the_phases():
    task = _task(
        lr_schedule={
            "pretrain": {"shape": "cosine", "start": 1.0, "end": 0.1, "warmup": 1},
            "adversarial": {"shape": "linear", "start": 0.5, "end": 0.2},
            "discriminator": {"shape": "cosine", "start": 1.0, "end": 0.5},
        }
    )
    assert task.planned_steps() == 9
    (opt_g, opt_d), (sg, sd) = task.configure_optimizers()
    lrs_g = []
    for _ in range(10):
        lrs_g.append(opt_g.param_groups[0]["lr"])
        opt_g.step()  # no gradients: changes nothing, keeps the step order torch expects
        sg["scheduler"].step()
    lrs_d = []
    for _ in range(4):
        lrs_d.append(opt_d.param_groups[0]["lr"])
        opt_d.step()
        sd["scheduler"].step()
    # pretrain: warmup batch 0 at start / 2, cosine from 1.0 (batch 1) to 0.1 (batch 4)
    assert lrs_g[0] == pytest.approx(5e-4) and lrs_g[1] == pytest.approx(1e-3)
    assert lrs_g[2] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.75))
    assert lrs_g[4] == pytest.approx(1e-4)
    # adversarial: 0.5 at its first batch (5), linearly to 0.2 at its last (8), then held
    assert lrs_g[5:] == pytest.approx([5e-4, 4e-4, 3e-4, 2e-4, 2e-4])
    assert lrs_d == pytest.approx([2e-3, 2e-3 * 0.875, 2e-3 * 0.625, 1e-3])


def test_phases_set_max_steps_and_refuse_a_longer_run(caplog):
    task = _task(pretrain_steps=3, adversarial_steps=2)
    cfg = OmegaConf.create({"train": True, "trainer": {"max_steps": -1}})
    steps_from_model(cfg, task)
    assert cfg.trainer.max_steps == 5
    cfg.trainer.max_steps = 4  # stops early on the same schedule, with a warning
    steps_from_model(cfg, task)
    assert cfg.trainer.max_steps == 4 and "stops the run before its schedule ends" in caplog.text
    cfg.trainer.max_steps = 6
    with pytest.raises(ConfigError, match="trainer.max_steps=6 is longer than the schedule"):
        steps_from_model(cfg, task)
    with pytest.raises(ConfigError, match="adv_ramp_steps=3 is longer"):
        _task(adversarial_steps=2, adv_ramp_steps=3)
    with pytest.raises(ConfigError, match=r"lr_schedule\.pretrain\.shape=exp: use"):
        _task(lr_schedule={"pretrain": {"shape": "exp"}})
    with pytest.raises(ConfigError, match="in_bands is null"):
        _task(generator={"_target_": "bsrlc.models.sr.SRResNet", "in_bands": None})


def test_run_folders_and_caches_default_outside_the_checkout(monkeypatch, tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from bsrlc.config import conf_dir

    def folders():
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
            cfg = compose("train", ["experiment=sr_demo"], return_hydra_config=True)
        GlobalHydra.instance().clear()
        return [Path(cfg.paths.log_dir), Path(cfg.data.cache_dir), Path(cfg.hydra.run.dir)]

    monkeypatch.delenv("BSRLC_ROOT", raising=False)
    for path in folders():
        assert not path.resolve().is_relative_to(ROOT), path
        assert path.is_relative_to(Path.home() / "bsrlc-runs")
    monkeypatch.setenv("BSRLC_ROOT", str(tmp_path))
    assert all(p.is_relative_to(tmp_path) for p in folders())
