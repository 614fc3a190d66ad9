"""Faults the fault-injection suite (scripts/faults.py, ``make faults``) found, fixed and kept fixed.

Each test re-creates the state a ``kill -9`` (or a full disk) left and checks the rerun.
"""

from __future__ import annotations

import json

import numpy as np
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


def test_tiled_stm_refuses_tiles_of_a_scene_rewritten_with_its_old_mtime(tmp_path):
    """A band file replaced by other content with its old mtime and size (``cp -p``) after the
    first tiles were finished: the rerun kept them (they named the same scene ids) and mixed
    old and new content in one mosaic. Now the tiles' INPUTS_DIGEST tells them apart."""
    import os
    import shutil

    import rasterio

    from bsrlc.errors import InputError
    from bsrlc.stm.archive import ingest_folder
    from tests.test_stm_archive import GRID, PERIODS, _c2_scene, _original

    truth, fields = _original()
    src = tmp_path / "scenes"
    for date, data in fields.items():
        _c2_scene(src, truth, data, date, 32633, (17.85, 18.15), "190025")
    kw = {"grid": GRID, "metrics": ["p50"], "progress": False, "tiles": ["X0325_Y0278"]}
    out = tmp_path / "out"
    ingest_folder(src, out, PERIODS, **kw)
    tile = out / "landsat_2020" / "X0325_Y0278.tif"
    ingest_folder(src, out, PERIODS, **kw)  # unchanged scenes: the tile is kept
    dirs = sorted(p for p in src.iterdir() if p.is_dir())
    band = next(dirs[0].glob("*_SR_B4.TIF"))
    other = next(dirs[1].glob("*_SR_B4.TIF"))
    st = band.stat()
    band.write_bytes(other.read_bytes())
    os.utime(band, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(InputError, match=r"X0325_Y0278.tif: finished by an earlier run from other"):
        ingest_folder(src, out, PERIODS, **kw)
    with pytest.raises(InputError, match=r"scene files rewritten since.*overwrite=true"):
        ingest_folder(src, out, PERIODS, **kw)
    ingest_folder(src, out, PERIODS, **kw, overwrite=True)
    fresh = tmp_path / "fresh"
    shutil.copytree(src, tmp_path / "copy")  # content counts, not paths
    ingest_folder(tmp_path / "copy", fresh, PERIODS, **kw)
    with rasterio.open(tile) as a, rasterio.open(fresh / "landsat_2020" / tile.name) as b:
        assert a.tags() == b.tags()
        np.testing.assert_array_equal(a.read(), b.read())


def _predict(*args):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    return subprocess.run(
        [sys.executable, "predict.py", *args, "progress=false"],
        cwd=root,
        capture_output=True,
        text=True,
    )


def test_predict_refuses_an_output_of_an_input_rewritten_with_its_old_mtime(
    tmp_path, tiny_stms, checkpoints
):
    """A run killed after its SR output was written, the input rewritten (``cp -p``): the rerun
    kept the SR output of the old content and mapped it. Outputs now carry INPUTS_DIGEST (input
    content and model), and an existing output made from other content is refused."""
    import os
    import shutil

    import rasterio

    _, cls = checkpoints
    src = tmp_path / "in" / "s2_2019.tif"
    src.parent.mkdir()
    shutil.copy2(tiny_stms["sentinel2"]["2019"], src)
    args = [f"model={cls}", f"input={src}", "pipeline=classify", "tile=16"]
    out = tmp_path / "out"
    first = _predict(*args, f"out_dir={out}")
    assert first.returncode == 0, first.stderr[-2000:]
    again = _predict(*args, f"out_dir={out}")  # the same content: kept
    assert again.returncode == 0 and "exists; skipped" in again.stderr + again.stdout
    with rasterio.open(src) as s:
        profile, data, tags = s.profile, s.read(), s.tags()
        desc, scales, offsets = s.descriptions, s.scales, s.offsets
    st = src.stat()
    other = tmp_path / "other.tif"
    with rasterio.open(other, "w", **profile) as d:
        d.write(np.roll(data, data.shape[1] // 4, axis=1))
        d.update_tags(**tags)
        d.scales, d.offsets = scales, offsets
        for i, n in enumerate(desc, start=1):
            d.set_band_description(i, n)
    src.write_bytes(other.read_bytes())
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    refused = _predict(*args, f"out_dir={out}")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {out / 's2_2019_map.tif'}: exists, made from other input")
    assert "overwrite=true" in line
    redone = _predict(*args, f"out_dir={out}", "overwrite=true")
    assert redone.returncode == 0, redone.stderr[-2000:]
    fresh_src = tmp_path / "fresh_in" / "s2_2019.tif"
    fresh_src.parent.mkdir()
    shutil.copy(other, fresh_src)
    fresh = _predict(
        f"model={cls}",
        f"input={fresh_src}",
        "pipeline=classify",
        "tile=16",
        f"out_dir={tmp_path / 'fresh'}",
    )
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    with rasterio.open(out / "s2_2019_map.tif") as a:
        with rasterio.open(tmp_path / "fresh" / "s2_2019_map.tif") as b:
            assert a.tags() == b.tags() and "INPUTS_DIGEST" in a.tags()
            np.testing.assert_array_equal(a.read(), b.read())


def test_predict_warnings_go_to_stderr_not_stdout(capsys):
    """predict.py logs to stdout (Hydra's job_logging: stdout): the warning about a 7 x 7 px
    input went there bare, and a run on such an input looked silent on stderr."""
    import logging
    import sys

    from bsrlc.console import warnings_to_stderr

    root = logging.getLogger()
    old_level = root.level
    out = logging.StreamHandler(sys.stdout)  # as Hydra's stdout job logging
    root.addHandler(out)
    root.setLevel(logging.INFO)
    try:
        warnings_to_stderr()
        warnings_to_stderr()  # idempotent
        log = logging.getLogger("bsrlc.inference.checks")
        log.info("7x7.tif: reflectance = value x 0.0001")
        log.warning("7x7.tif: 7 x 7 px, smaller than the model's 15 px receptive field")
        captured = capsys.readouterr()
    finally:
        for h in [h for h in root.handlers if getattr(h, "_bsrlc_warnings", False)]:
            root.removeHandler(h)
        root.removeHandler(out)
        root.setLevel(old_level)
    assert captured.out == "7x7.tif: reflectance = value x 0.0001\n"
    assert captured.err == (
        "warning: 7x7.tif: 7 x 7 px, smaller than the model's 15 px receptive field\n"
    )


def test_cog_writer_reads_back_a_cog_written_onto_a_nearly_full_disk(tmp_path, monkeypatch):
    """The tiled STM on a full tmpfs published a tile GDAL had truncated without an error
    ("TIFFReadDirectory: Failed to read directory"); the rerun kept it and stopped on it."""
    import rasterio.shutil
    from affine import Affine

    from bsrlc import raster
    from bsrlc.errors import DiskFullError
    from bsrlc.raster import COGWriter

    real_copy = rasterio.shutil.copy

    def truncating_copy(src, dst, **kwargs):
        real_copy(src, dst, **kwargs)
        with open(dst, "r+b") as f:
            f.truncate(f.seek(0, 2) // 2)

    def write(path):
        with COGWriter(
            path,
            crs="EPSG:3035",
            transform=Affine(30, 0, 0, 0, -30, 0),
            width=300,
            height=300,
            count=2,
            dtype="int16",
        ) as w:
            w.write(_noise((2, 300, 300)))

    monkeypatch.setattr(rasterio.shutil, "copy", truncating_copy)
    write(tmp_path / "plenty.tif")  # plenty of space: not read back (as before)
    monkeypatch.setattr(raster, "free_bytes", lambda folder: 1000)
    with pytest.raises(DiskFullError, match="disk full while writing a.tif"):
        write(tmp_path / "a.tif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plenty.tif"]
    monkeypatch.setattr(rasterio.shutil, "copy", real_copy)
    write(tmp_path / "b.tif")  # a whole COG on a nearly full disk is published
    assert (tmp_path / "b.tif").is_file()
