"""Faults the fault-injection suite (scripts/faults.py, ``make faults``) found, fixed and kept fixed.

Each test re-creates the state a ``kill -9`` (or a full disk) left and checks the rerun.
"""

from __future__ import annotations

import json

import pytest


def _classify_args(world, stms, *extra):
    return [
        "experiment=classify_demo",
        f"data.raster={stms['sentinel2']['2019']}",
        f"data.points={world.root / 'points' / 'points_2019.gpkg'}",
        "data.cache_dir=null",
        "data.batch_size=32",
        "data.block_size=32",
        "logger=csv",
        "trainer.max_epochs=1",
        "trainer.log_every_n_steps=3",
        "model.net.channels=[8,8,8,8,8,8]",
        "callbacks.model_checkpoint.last_every_n_train_steps=2",
        "test=false",
        *extra,
    ]


def test_a_run_killed_after_its_final_checkpoint_resumes_to_its_metrics(
    tmp_path, tiny_world, tiny_stms
):
    """Killed between the final ``last.ckpt`` and ``metrics.json``: the resumed run has nothing
    left to fit and logs nothing; it used to stop with "optimized_metric=val/macro_f1 was not
    logged"."""
    from bsrlc.training import run
    from tests.conftest import compose_train

    args = _classify_args(tiny_world, tiny_stms)
    first = tmp_path / "logs" / "classify_demo" / "runs" / "first"
    value = run(compose_train(args, first))
    assert value is not None
    written = json.loads((first / "metrics.json").read_text())
    (first / "metrics.json").unlink()  # the kill came before it was written
    again = run(compose_train([*args, "ckpt_path=last"], tmp_path))
    assert again == pytest.approx(value, abs=1e-6)
    resumed = json.loads((first / "metrics.json").read_text())
    assert resumed.keys() == written.keys()
    for key, v in written.items():
        if key != "time/fit_s":
            assert resumed[key] == pytest.approx(v, abs=1e-6), key
