"""Shared fixtures: the tiny demo world, generated once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory):
    """The tiny demo world (192x192 px at 10 m), generated once."""
    from bsrlc.data.demo import generate

    root = tmp_path_factory.mktemp("world") / "tiny"
    return generate("tiny", root)


@pytest.fixture(scope="session", autouse=True)
def _chip_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep chip caches of the tests out of the user's cache folder."""
    path = tmp_path_factory.mktemp("chips")
    os.environ["BSRLC_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session", autouse=True)
def _run_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep run folders of the tests (train.py subprocesses too) out of the user's runs."""
    path = tmp_path_factory.mktemp("runs")
    os.environ["BSRLC_ROOT"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_stms(tiny_world):
    """STMs of every period and sensor of the tiny world: {sensor: {label: path}}."""
    from bsrlc.demo import build_stms

    return build_stms(tiny_world, progress=False)


def compose_train(overrides: list[str], tmp_path: Path):
    """Compose conf/train.yaml like `python train.py` would, for an in-process run."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from bsrlc.config import conf_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.root_dir = str(tmp_path)
        cfg.paths.work_dir = str(tmp_path)
        del cfg.hydra
    GlobalHydra.instance().clear()
    return cfg


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory, tiny_world, tiny_stms):
    """A tiny SR checkpoint and a tiny classifier checkpoint (Sentinel-2 2019), trained once."""
    from bsrlc.training import train

    root = tmp_path_factory.mktemp("ckpts")
    sr_cfg = compose_train(
        [
            "experiment=sr_demo",
            f"data.lr_path={tiny_stms['landsat']['2019']}",
            f"data.hr_path={tiny_stms['sentinel2']['2019']}",
            f"data.test_region={tiny_world.root / 'regions.geojson'}",
            "data.patch_size=16",
            "data.batch_size=4",
            "data.samples_per_epoch=8",
            "data.cache_dir=null",
            "logger=csv",
            "trainer.max_steps=2",
            "model.discriminator=null",
            "model.generator.channels=8",
            "model.generator.n_blocks=1",
            "test=false",
        ],
        root / "sr",
    )
    train(sr_cfg)
    cls_cfg = compose_train(
        [
            "experiment=classify_demo",
            f"data.raster={tiny_stms['sentinel2']['2019']}",
            f"data.points={tiny_world.root / 'points' / 'points_2019.gpkg'}",
            "data.cache_dir=null",
            "data.block_size=32",
            "logger=csv",
            "trainer.max_epochs=1",
            "model.net.channels=[8,8,8,8,8,8]",
            "test=false",
        ],
        root / "cls",
    )
    train(cls_cfg)
    return root / "sr" / "checkpoints" / "last.ckpt", root / "cls" / "checkpoints" / "last.ckpt"
