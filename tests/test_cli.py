"""The command line: own groups in --help without torch, one-line typo suggestions, debug configs.

How fast --help answers is measured by ``benchmarks/cli.py``, not asserted here.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from bsrlc.cli import precheck
from bsrlc.config import conf_dir
from bsrlc.errors import ConfigError
from tests.conftest import compose_train

ROOT = Path(__file__).resolve().parent.parent

ENTRIES = {
    "train": ["train.py"],
    "predict": ["predict.py"],
    "export": ["-m", "bsrlc.export"],
    "demo_world": ["-m", "bsrlc.data.demo"],
    "stm": ["-m", "bsrlc.stm"],
    "landcover_world": ["-m", "bsrlc.data.landcover_world"],
}


def _run(entry: str, *args: str, importtime: bool = False) -> subprocess.CompletedProcess[str]:
    flags = ["-X", "importtime"] if importtime else []
    return subprocess.run(
        [sys.executable, *flags, *ENTRIES[entry], *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


def _imported(stderr: str) -> set[str]:
    """Top-level packages in ``-X importtime`` output."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.split("|")[-1].strip().split(".")[0])
    return names


@pytest.mark.parametrize(
    ("entry", "own", "foreign"),
    [
        (
            "train",
            ["experiment", "trainer", "logger", "data", "model", "debug", "callbacks"],
            ["sensor", "legend", "predict", "predict/trainer"],
        ),
        ("predict", ["trainer"], ["experiment", "sensor", "model"]),
        ("export", ["paths"], ["sensor", "experiment", "trainer", "model"]),
        ("demo_world", ["paths"], ["sensor", "experiment", "trainer", "model"]),
        ("landcover_world", ["paths"], ["sensor", "experiment", "trainer", "model"]),
        ("stm", ["paths", "sensor"], ["experiment", "trainer", "model", "legend"]),
    ],
)
def test_help_lists_the_entry_points_own_groups_without_importing_torch(entry, own, foreign):
    res = _run(entry, "--help", importtime=True)
    assert res.returncode == 0, res.stderr[-2000:]
    group_lines = {
        line.split(":")[0]
        for line in res.stdout.split("== Configuration groups ==")[1]
        .split("== Config ==")[0]
        .strip()
        .splitlines()[1:]
        if ":" in line
    }
    assert set(own) <= group_lines
    assert not set(foreign) & group_lines
    imported = _imported(res.stderr)
    assert "hydra" in imported  # the check reads -X importtime output at all
    assert not {"torch", "lightning", "torchgeo"} & imported


def test_train_help_lists_debug_anomaly_and_its_header():
    res = _run("train", "--help")
    assert "debug: anomaly, default, fdr, limit, overfit, profiler" in res.stdout
    assert res.stdout.startswith("python train.py experiment=NAME")


@pytest.mark.parametrize(
    ("entry", "override", "expect"),
    [
        ("train", "trainer.max_epoch=3", "did you mean trainer.max_epochs?"),
        ("train", "experiment=clasify_demo", "did you mean classify_demo?"),
        ("train", "debug=fdrr", "did you mean fdr?"),
        ("train", "model.lrr=1", "no key 'lrr' in model (keys: _target_,"),
        ("train", "trainr.max_epochs=1", "did you mean trainer"),
        ("predict", "trainer=ddpp", "did you mean ddp?"),
        ("predict", "temporal.mod=hmm", "did you mean temporal.mode?"),
        ("export", "checkpint=a.ckpt", "did you mean checkpoint?"),
        ("demo_world", "sise=tiny", "did you mean size?"),
        ("landcover_world", "sise=tiny", "did you mean size?"),
        ("stm", "sensor=landsat_c3", "did you mean landsat_c2?"),
    ],
)
def test_a_typo_gets_one_line_with_the_closest_names_and_exit_2(entry, override, expect):
    res = _run(entry, override)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"error: {override.split('=')[0]}")
    assert expect in lines[0]


def test_an_experiment_changes_which_keys_exist():
    # data.raster exists only with the points datamodule that classify_demo selects
    precheck(conf_dir(), "train", ["experiment=classify_demo", "data.batch_size=8"])
    with pytest.raises(ConfigError, match=r"did you mean data\.batch_size\?"):
        precheck(conf_dir(), "train", ["experiment=classify_demo", "data.batch_siz=8"])


@pytest.mark.parametrize(
    "overrides",
    [
        ["+trainer.new_key=1", "++trainer.max_epochs=2", "~callbacks"],
        ["hydra.run.dir=/tmp/x", "hydra/launcher=basic"],
        ["experiment=sr_demo,classify_demo", "model.w_l1=1,2"],  # multirun sweeps
        ["experiment=glob(sr_*)"],
        ["logger=null", "logger=[csv,tensorboard]"],
        ["model.generator.channels=8", "trainer.max_epochs=2"],
    ],
)
def test_valid_overrides_pass_the_check(overrides):
    assert precheck(conf_dir(), "train", overrides) is None


def test_a_typo_in_a_sweep_is_caught_too():
    with pytest.raises(ConfigError, match="experiment=clasify_demo"):
        precheck(conf_dir(), "train", ["experiment=sr_demo,clasify_demo"])
    with pytest.raises(ConfigError, match="~trainer.foo: no key 'foo' in trainer"):
        precheck(conf_dir(), "train", ["~trainer.foo"])


def test_debug_fdr_is_only_fast_dev_run_and_anomaly_has_its_own_config(tmp_path):
    fdr = compose_train(["debug=fdr"], tmp_path)
    assert fdr.trainer.fast_dev_run is True
    assert not fdr.trainer.get("detect_anomaly", False)
    anomaly = compose_train(["debug=anomaly"], tmp_path)
    assert anomaly.trainer.detect_anomaly is True
    assert not anomaly.trainer.get("fast_dev_run", False)


def test_quiet_lightning_drops_tips_and_the_known_deprecation_only(caplog):
    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    from bsrlc.console import quiet_lightning

    with warnings.catch_warnings(record=True) as caught:
        quiet_lightning()
        warnings.warn(
            "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, "
            "TreeSpec) and treespec.is_leaf()` instead.",
            FutureWarning,
            stacklevel=1,
        )
        warnings.warn("some other deprecation", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["some other deprecation"]
    with caplog.at_level(logging.INFO):
        rank_zero_info("💡 Tip: For seamless cloud logging, try installing [litlogger]")
        rank_zero_info("GPU available: False, used: False")
    messages = [r.getMessage() for r in caplog.records]
    assert "GPU available: False, used: False" in messages
    assert not [m for m in messages if "Tip" in m]


def test_the_check_stays_out_of_a_running_hydra():
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        assert precheck(conf_dir(), "train", ["trainer.max_epoch=3"]) is None


def test_demo_runs_up_to_a_stage_and_names_the_stages(tmp_path):
    demo = [sys.executable, "-m", "bsrlc.demo", "--size", "tiny", "--no-progress"]
    dirs = ["--data-dir", str(tmp_path / "data"), "--out-dir", str(tmp_path / "out")]
    res = subprocess.run([*demo, *dirs, "stage=stm"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "data" / "tiny" / "stm").glob("*.tif")) == [
        "landsat_2001.tif",
        "landsat_2007.tif",
        "landsat_2013.tif",
        "landsat_2019.tif",
        "sentinel2_2019.tif",
    ]
    assert not (tmp_path / "out" / "runs").exists()  # nothing after the STMs
    bad = subprocess.run([*demo, *dirs, "stage=clasify"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "did you mean classify?" in bad.stderr


def test_a_missing_demo_file_names_the_command_that_makes_it(tmp_path):
    res = _run("train", "experiment=classify_demo", f"paths.data_dir={tmp_path / 'data'}")
    assert res.returncode == 2, res.stderr[-2000:]
    line = res.stderr.strip()
    assert "\n" not in line and "not found; make it with: python -m bsrlc.demo stage=" in line
