"""Training end to end on the tiny world: every experiment config runs, checkpoints are usable."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from bsrlc.training import train
from tests.conftest import compose_train


def _sr_overrides(world, stms):
    return [
        "experiment=sr_demo",
        f"data.lr_path={stms['landsat']['2019']}",
        f"data.hr_path={stms['sentinel2']['2019']}",
        f"data.test_region={world.root / 'regions.geojson'}",
        "data.patch_size=16",
        "data.batch_size=4",
        "data.samples_per_epoch=16",
        "data.cache_dir=null",
        "logger=csv",
        "trainer.val_check_interval=3",
        "model.pretrain_steps=2",
        "model.adversarial_steps=4",
        "model.adv_ramp_steps=2",
        "model.generator.channels=8",
        "model.generator.n_blocks=1",
        "model.discriminator.channels=[8,8,8,8,8]",
        "model.panel_every_n_epochs=1",
    ]


def test_sr_gan_counts_batches_not_optimizer_steps(tmp_path, tiny_world, tiny_stms):
    cfg = compose_train(_sr_overrides(tiny_world, tiny_stms), tmp_path)
    metrics = train(cfg)
    # 6 batches: 2 generator-only, then 4 with a discriminator step each
    assert metrics["train/adv_weight"] == 1.0
    for key in (
        "test/psnr",
        "test/bicubic_psnr",
        "test/bicubic_harmonised_psnr",
        "test/psnr_gain_bicubic_harmonised",
        "test/sam",
        "test/ssim",
        "test/ergas",
    ):
        assert key in metrics, key
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 6
    assert ckpt["bsrlc"]["task"] == "sr" and len(ckpt["bsrlc"]["bands"]) == 18
    assert any(k.startswith("generator_ema.") for k in ckpt["state_dict"])
    assert len(ckpt["optimizer_states"]) == 2
    assert list((tmp_path / "panels").glob("val_panel_*.png"))
    assert json.loads((tmp_path / "metrics.json").read_text())["test/psnr"] > 0


def _classify_overrides(world, stms, extra=()):
    return [
        "experiment=classify_demo",
        f"data.raster={stms['sentinel2']['2019']}",
        f"data.points={world.root / 'points' / 'points_2019.gpkg'}",
        "data.cache_dir=null",
        "data.batch_size=32",
        "data.block_size=32",
        "logger=csv",
        "trainer.max_epochs=1",
        *extra,
    ]


@pytest.mark.parametrize(
    "extra",
    [
        ["model.net.channels=[8,8,8,8,8,8]"],
        ["model.net.attention=true", "model.net.channels=[8,8,8,8]", "model.net.attn_dim=16"],
        ["model=pixel_mlp", "data.balance=sampler"],
    ],
    ids=["cnn", "attention", "pixel_mlp"],
)
def test_classifier_trains_and_tests(tmp_path, tiny_world, tiny_stms, extra):
    cfg = compose_train(_classify_overrides(tiny_world, tiny_stms, extra), tmp_path)
    metrics = train(cfg)
    for key in (
        "test/oa",
        "test/macro_f1",
        "test/kappa",
        "val/macro_f1",
        "test/f1_residential_buildings",
        "test/recall_non_built-up",
    ):
        assert key in metrics, key
    assert (tmp_path / "test_confusion.csv").read_text().startswith("reference\\predicted,")
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["bsrlc"]["task"] == "classify"
    assert ckpt["bsrlc"]["legend"]["classes"][0]["name"] == "residential buildings"


def test_train_cli_help_lists_groups():
    res = subprocess.run([sys.executable, "train.py", "--help"], capture_output=True, text=True)
    assert res.returncode == 0
    for group in ("experiment:", "trainer:", "logger:", "data:", "model:", "debug:"):
        assert group in res.stdout


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="known gap: a run stopped by a smaller trainer.max_steps ends its epoch in Lightning's "
    "fit loop (epoch marked complete), so the resumed run starts the next epoch and draws other "
    "batches (weights differ by ~5e-5); a kill -9 resume is exact (tests/test_resume.py)",
)
def test_resume_continues_exactly_with_the_same_wandb_run(tmp_path, tiny_world, tiny_stms):
    base = [
        o
        for o in _sr_overrides(tiny_world, tiny_stms)
        if not o.startswith(("model.adversarial_steps", "logger="))
    ]
    # 8 steps of phases; the learning rates follow the phases, not trainer.max_steps, so a run
    # stopped at 4 and resumed goes on as the uninterrupted run
    base += [
        "logger=wandb",
        "trainer.val_check_interval=4",
        "test=false",
        "model.panel_every_n_epochs=0",
        "model.adversarial_steps=6",
    ]
    full = compose_train(base, tmp_path / "full")
    train(full)
    first = compose_train([*base, "trainer.max_steps=4"], tmp_path / "part")
    train(first)
    run_id = (tmp_path / "part" / "wandb_id.txt").read_text()
    assert (tmp_path / "full" / "wandb_id.txt").read_text() != run_id  # separate runs
    resumed = compose_train(
        [*base, f"ckpt_path={tmp_path / 'part' / 'checkpoints' / 'last.ckpt'}"],
        tmp_path / "part",
    )
    train(resumed)
    assert (tmp_path / "part" / "wandb_id.txt").read_text() == run_id  # the same W&B run
    sessions = sorted((tmp_path / "part" / "wandb").glob("offline-run-*"))
    assert len(sessions) == 2 and all(f"-{run_id}" in d.name for d in sessions)
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "part" / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 8
    for key, value in a["state_dict"].items():
        assert torch.allclose(value.float(), b["state_dict"][key].float(), atol=1e-5), key


def test_train_cli_bad_input_is_one_line(tmp_path):
    for extra, message in (
        ([f"data.lr_path={tmp_path / 'missing.tif'}"], "missing.tif: file not found"),
        (["experiment=classify_demo", "data.balance=bogus"], "data.balance=bogus"),
    ):
        cmd = [
            sys.executable,
            "train.py",
            "experiment=sr_demo",
            "logger=csv",
            f"hydra.run.dir={tmp_path}",
            *extra,
        ]
        res = subprocess.run(cmd, capture_output=True, text=True)
        assert res.returncode == 2, res.stderr[-2000:]
        last = res.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and message in last
        assert "Traceback" not in res.stderr


def test_many_loggers_and_the_bundle_artifact(tmp_path, tiny_world, tiny_stms, monkeypatch):
    import wandb

    wandb.finish()  # a run left open by another test would be reused by the logger
    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = [
        o
        for o in _classify_overrides(
            tiny_world,
            tiny_stms,
            [
                "model=centre_patch_attention",
                "model.net.channels=[8,8,8,8]",
                "model.net.attn_dim=16",
            ],
        )
        if not o.startswith("logger=")
    ]
    cfg = compose_train([*overrides, "logger=many", "export_bundle=true"], tmp_path)
    train(cfg)
    assert list(tmp_path.rglob("metrics.csv"))  # CSV
    assert list(tmp_path.rglob("events.out.tfevents.*"))  # TensorBoard
    runs = list((tmp_path / "wandb").glob("offline-run-*"))  # W&B, offline
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    meta = json.loads((tmp_path / "bundle" / "metadata.json").read_text())
    assert meta["task"] == "classify" and meta["content_hash"]
    # the bundle went into the run as a model artifact (uploaded by `wandb sync`); W&B's
    # service process writes the run record asynchronously, so wait for it
    import time

    import wandb

    wandb.finish()
    wanted = (f"{cfg.task_name}-bundle".encode(), meta["content_hash"].encode())
    deadline = time.monotonic() + 60
    while True:
        record = next(runs[0].glob("*.wandb")).read_bytes()
        if all(w in record for w in wanted) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert all(w in record for w in wanted)


def test_points_with_class_names_train_like_codes(tmp_path, tiny_world, tiny_stms):
    import geopandas as gpd

    from bsrlc.data.classify import PointPatchDataModule
    from bsrlc.data.legend import Legend

    legend = Legend.from_config("urban")
    pts = gpd.read_file(tiny_world.root / "points" / "points_2019.gpkg")
    named = pts.assign(**{"class": [legend.names[legend.index_of([c])[0]] for c in pts["class"]]})
    named.to_file(tmp_path / "named.gpkg")
    sizes = []
    for points in (tiny_world.root / "points" / "points_2019.gpkg", tmp_path / "named.gpkg"):
        dm = PointPatchDataModule(str(tiny_stms["sentinel2"]["2019"]), str(points), block_size=32)
        dm.setup("fit")
        sizes.append({k: len(v) for k, v in dm._datasets.items()})
    assert sizes[0] == sizes[1] and sizes[0]["train"] > 0
