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


# -- a full disk: one line naming the folder and its free space, nothing half-written ------------


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 1 MiB tmpfs (root only; skipped where mounting is not allowed)."""
    import subprocess

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True
    )
    if res.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _noise(shape=(8, 512, 512)):
    import numpy as np

    return np.random.default_rng(0).integers(0, 10000, shape).astype("int16")


@pytest.mark.parametrize("shape", [(8, 512, 512), (8, 256, 256), (2, 400, 400)])
def test_cog_writer_on_a_full_disk_says_so_and_leaves_nothing(tiny_tmpfs, shape):
    """GDAL fails with "Write failed" or "TIFFAppendToStrip: Seek error" (no ENOSPC), in write(),
    at close or in the COG conversion, by size; each is one DiskFullError naming the folder."""
    from affine import Affine

    from bsrlc.errors import DiskFullError
    from bsrlc.raster import COGWriter

    with pytest.raises(DiskFullError) as info:
        with COGWriter(
            tiny_tmpfs / "a.tif",
            crs="EPSG:3035",
            transform=Affine(30, 0, 0, 0, -30, 0),
            width=shape[2],
            height=shape[1],
            count=shape[0],
            dtype="int16",
            nodata=-32768,
        ) as w:
            w.write(_noise(shape))
    line = str(info.value)
    assert line.startswith(f"{tiny_tmpfs}: disk full while writing a.tif (")
    assert " free)" in line and "\n" not in line
    assert list(tiny_tmpfs.iterdir()) == []


def test_cog_writer_keeps_other_write_errors(tmp_path, monkeypatch):
    """A failed write with plenty of space left is not called a full disk."""
    import rasterio.shutil
    from affine import Affine
    from rasterio.errors import RasterioIOError

    from bsrlc.raster import COGWriter

    def fail(*args, **kwargs):
        raise RasterioIOError("Write failed. See previous exception for details.")

    monkeypatch.setattr(rasterio.shutil, "copy", fail)
    with pytest.raises(RasterioIOError):
        with COGWriter(
            tmp_path / "a.tif",
            crs="EPSG:3035",
            transform=Affine(30, 0, 0, 0, -30, 0),
            width=16,
            height=16,
            count=1,
            dtype="int16",
        ) as w:
            w.write(_noise((1, 16, 16)))
    assert list(tmp_path.iterdir()) == []


def test_stm_refuses_early_when_the_disk_is_clearly_short(tmp_path, monkeypatch):
    from bsrlc import errors
    from bsrlc.errors import DiskFullError
    from bsrlc.stm import composite, discover_scenes
    from tests.test_stm import BANDS, SENSOR, make_scenes

    make_scenes(tmp_path / "scenes", n=3, seed=1)
    scenes = discover_scenes(tmp_path / "scenes", SENSOR, BANDS)
    monkeypatch.setattr(errors, "free_bytes", lambda folder: 1000)
    out = tmp_path / "out" / "landsat_2019.tif"
    with pytest.raises(DiskFullError) as info:
        composite(scenes, out, BANDS, ["p50"], SENSOR, progress=False)
    line = str(info.value)
    assert line.startswith(f"{out.parent}: 1 KiB free, but landsat_2019.tif (")
    assert "need at least about" in line and "choose another out_dir" in line
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_checkpoint_on_a_full_disk_is_one_line_and_keeps_the_last_one(tmp_path, monkeypatch):
    """torch's writer says "unexpected pos"; the .partial goes, last.ckpt stays as it was."""
    from types import SimpleNamespace

    from bsrlc import errors
    from bsrlc.errors import DiskFullError
    from bsrlc.resume import ResumableCheckpoint

    last = tmp_path / "last.ckpt"
    last.write_bytes(b"the previous checkpoint")

    def save_checkpoint(path, weights_only=False):
        with open(path, "wb") as f:
            f.write(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    trainer = SimpleNamespace(
        save_checkpoint=save_checkpoint, is_global_zero=True, global_step=3, loggers=[]
    )
    monkeypatch.setattr(errors, "free_bytes", lambda folder: 0)
    cb = ResumableCheckpoint(dirpath=str(tmp_path), save_last=True)
    with pytest.raises(DiskFullError) as info:
        cb._save_checkpoint(trainer, str(last))
    line = str(info.value)
    assert line.startswith(f"{tmp_path}: disk full while writing checkpoint last.ckpt (0 KiB")
    assert "ckpt_path=last" in line and "paths.log_dir" in line
    assert last.read_bytes() == b"the previous checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    monkeypatch.setattr(errors, "free_bytes", lambda folder: 2**40)  # plenty: not a full disk
    with pytest.raises(RuntimeError, match="unexpected pos"):
        cb._save_checkpoint(trainer, str(last))


def test_entry_points_report_a_full_disk_in_one_line(tmp_path, capsys):
    import errno

    from bsrlc.errors import exit_on_user_error

    @exit_on_user_error
    def write_table():
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "metrics.csv"))

    with pytest.raises(SystemExit) as info:
        write_table()
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path}: disk full while writing metrics.csv (")
    assert len(err.splitlines()) == 1

    @exit_on_user_error
    def other():
        raise OSError(errno.EACCES, "Permission denied")

    with pytest.raises(PermissionError):
        other()
