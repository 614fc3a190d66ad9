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


def test_the_same_grid_stm_removes_what_a_killed_run_left(tmp_path):
    """``python -m bsrlc.stm`` (same-grid path) killed while writing left
    ``.landsat_2019.tif.<id>.partial.stage.tif``; the rerun kept it next to the output."""
    from bsrlc.stm import composite, discover_scenes
    from tests.test_stm import BANDS, SENSOR, make_scenes

    make_scenes(tmp_path / "scenes", n=3, seed=1)
    scenes = discover_scenes(tmp_path / "scenes", SENSOR, BANDS)
    out = tmp_path / "out" / "landsat_2019.tif"
    out.parent.mkdir()
    left = [
        out.parent / ".landsat_2019.tif.832e2b89.partial.stage.tif",
        out.parent / ".landsat_2019.tif.0badc0de.partial",
    ]
    for p in left:
        p.write_bytes(b"half a raster")
    other = out.parent / ".landsat_2013.tif.1234abcd.partial"  # another output's: not ours
    other.write_bytes(b"")
    composite(scenes, out, BANDS, ["p50"], SENSOR, progress=False)
    assert out.is_file()
    assert not any(p.exists() for p in left)
    assert other.exists()
