"""Raster jobs: units equal one pass, the tile store resumes, DDP (2 CPU processes) equals one."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from bsrlc.data.legend import Legend
from bsrlc.errors import InputError
from bsrlc.inference.dense import ClassifyJob, classify_raster
from bsrlc.inference.jobs import TileStore, run_lightning, run_local
from bsrlc.inference.sr import SRJob, run_sr_job, super_resolve_array, to_int16
from bsrlc.models.centre_patch import CentrePatchCNN
from bsrlc.models.sr import SRResNet
from bsrlc.raster import write_cog

BANDS = ["BLU_P50", "GRN_P50", "RED_P50"]
LEGEND = Legend.from_config(
    {
        "name": "urban",
        "classes": [
            {"code": 1, "name": "residential", "colour": "#e6194b"},
            {"code": 2, "name": "industrial", "colour": "#911eb4"},
            {"code": 3, "name": "open", "colour": "#808080"},
            {"code": 4, "name": "non built-up", "colour": "#3cb44b"},
        ],
    }
)


def _raster(path, rows, cols, res, seed=0):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 3000, (3, rows, cols)).astype(np.int16)
    arr[:, :5, :7] = -9999  # a nodata corner
    transform = Affine(res, 0, 500_000, 0, -res, 6_000_000)
    return write_cog(
        path, arr, crs="EPSG:32633", transform=transform, nodata=-9999, descriptions=BANDS
    )


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    cls = CentrePatchCNN(3, 4, channels=(8, 8, 8, 8, 8, 8)).eval()
    sr = SRResNet(3, channels=8, n_blocks=2, scale=3).eval()
    return cls, sr


def _cls_job(src, dst, tile=24, probabilities=False):
    return ClassifyJob(
        src, dst, BANDS, [0.15] * 3, [0.08] * 3, LEGEND, 7, tile=tile, probabilities=probabilities
    )


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read()


def test_sr_units_equal_one_pass(tmp_path, nets):
    """SRJob's units (with their halo of real pixels) give what one pass over the array gives,
    and the in-process runner (the demo) writes the same bytes as Trainer.predict (predict.py)."""
    src = _raster(tmp_path / "lr.tif", 110, 95, 30.0)
    with rasterio.open(src) as ds:
        dn = ds.read()
    nodata = (dn == -9999).any(0)
    lr = dn.astype(np.float32) * 1e-4
    ref = super_resolve_array(nets[1], lr, 3, [0.15] * 3, [0.08] * 3, nodata, tile=512, strip=None)
    a = to_int16(np.nan_to_num(ref), nodata.repeat(3, 0).repeat(3, 1)).astype(int)
    job = SRJob(src, tmp_path / "units.tif", BANDS, 3, [0.15] * 3, [0.08] * 3, unit=40, tile=64)
    assert len(job.units) == 9
    units = run_sr_job(job, nets[1], progress=False)
    b = _read(units).astype(int)
    assert a.shape == b.shape == (3, 330, 285)
    assert np.abs(a - b).max() <= 1  # float rounding at the int16 step, nothing more
    assert (a != b).mean() < 1e-3
    assert np.array_equal(a == -32768, b == -32768) and (b[:, :15, :21] == -32768).all()
    with rasterio.open(units) as u, rasterio.open(src) as s:
        assert u.res == (10.0, 10.0) and u.crs == s.crs and list(u.descriptions) == BANDS
    assert not list(tmp_path.glob(".*tiles"))  # the store is gone once assembled
    job = SRJob(src, tmp_path / "trainer.tif", BANDS, 3, [0.15] * 3, [0.08] * 3, unit=40, tile=64)
    trainer = run_sr_job(job, nets[1], trainer_kwargs={"accelerator": "cpu", "devices": 1})
    assert trainer is not None and np.array_equal(_read(trainer), _read(units))
    shutil.rmtree(tmp_path / "lightning_logs", ignore_errors=True)


def test_killed_job_resumes_from_its_tiles(tmp_path, nets, caplog):
    src = _raster(tmp_path / "s2.tif", 70, 60, 10.0)
    whole = classify_raster(
        nets[0],
        src,
        tmp_path / "whole.tif",
        BANDS,
        [0.15] * 3,
        [0.08] * 3,
        LEGEND,
        7,
        tile=24,
        progress=False,
        probabilities=True,
    )
    job = _cls_job(src, tmp_path / "map.tif", probabilities=True)
    store = TileStore(job)
    calls = []

    class Killed(Exception):
        pass

    def dying(index, net, device):  # the process dies after four tiles
        if len(calls) == 4:
            raise Killed
        calls.append(index)
        return ClassifyJob.compute(job, index, net, device)

    job.compute = dying
    with pytest.raises(Killed), torch.inference_mode():
        for i in store.pending():
            store.save(i, job.compute(i, nets[0], torch.device("cpu")))
    assert not (tmp_path / "map.tif").exists() and not (tmp_path / "map_proba.tif").exists()
    del job.compute
    caplog.set_level("INFO")
    computed = []
    original = ClassifyJob.compute

    def counting(self, index, net, device):
        computed.append(index)
        return original(self, index, net, device)

    ClassifyJob.compute = counting
    try:
        run_local(_cls_job(src, tmp_path / "map.tif", probabilities=True), nets[0], progress=False)
    finally:
        ClassifyJob.compute = original
    assert sorted(computed) == [i for i in range(len(job.units)) if i not in calls]
    assert "resuming, 4 of 9 tiles done" in caplog.text
    assert np.array_equal(_read(tmp_path / "map.tif"), _read(whole))
    assert np.array_equal(_read(tmp_path / "map_proba.tif"), _read(tmp_path / "whole_proba.tif"))


def test_store_discards_tiles_of_other_inputs(tmp_path, nets, caplog):
    src = _raster(tmp_path / "s2.tif", 50, 50, 10.0)
    job = _cls_job(src, tmp_path / "map.tif")
    store = TileStore(job)
    store.save(0, job.compute(0, nets[0], torch.device("cpu")))
    assert store.pending() == list(range(1, 9))
    # the input rewritten as `cp -p` or `rsync -t` would: other pixels, same size and mtime
    before = (tmp_path / "s2.tif").stat()
    data = bytearray((tmp_path / "s2.tif").read_bytes())
    data[-200:-136] = bytes(b ^ 0xFF for b in data[-200:-136])  # in the last block's data
    (tmp_path / "s2.tif").write_bytes(bytes(data))
    os.utime(tmp_path / "s2.tif", ns=(before.st_atime_ns, before.st_mtime_ns))
    with caplog.at_level("WARNING"):
        again = TileStore(_cls_job(src, tmp_path / "map.tif"))
    assert again.pending() == list(range(9)) and "discarded" in caplog.text
    with pytest.raises(ValueError, match="not"):
        again.save(0, [np.zeros((1, 3, 3), np.uint8)])


def test_unwritable_output_folder_is_one_clear_error(tmp_path, nets):
    src = _raster(tmp_path / "s2.tif", 30, 30, 10.0)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InputError, match="cannot create output folder"):
        TileStore(_cls_job(src, blocker / "sub" / "map.tif"))


def test_truncated_raster_is_one_clear_error(tmp_path, nets):
    src = _raster(tmp_path / "s2.tif", 300, 300, 10.0)
    data = src.read_bytes()
    bad = tmp_path / "truncated.tif"
    bad.write_bytes(data[: len(data) // 2])
    job = _cls_job(bad, tmp_path / "out" / "map.tif", tile=64)
    with pytest.raises(InputError, match="corrupt or truncated"):
        run_local(job, nets[0], progress=False)
    assert not (tmp_path / "out" / "map.tif").exists()


def test_ddp_two_processes_equal_one(tmp_path, nets):
    src = _raster(tmp_path / "s2.tif", 60, 50, 10.0)
    one = run_local(
        _cls_job(src, tmp_path / "one.tif", probabilities=True), nets[0], progress=False
    )
    ddp = run_lightning(
        _cls_job(src, tmp_path / "ddp.tif", probabilities=True),
        nets[0],
        {"accelerator": "cpu", "devices": 2, "strategy": "ddp_spawn"},
        progress=False,
    )
    assert ddp is not None
    for a, b in zip(one, ddp, strict=True):
        assert np.array_equal(_read(a), _read(b))
    shutil.rmtree(tmp_path / "lightning_logs", ignore_errors=True)


@pytest.mark.slow
def test_20k_raster_maps_within_3_gb(tmp_path):
    """A 20,000 x 20,000 x 6-band input: peak RSS of the mapping process stays under 3 GB."""
    import resource
    import subprocess
    import sys

    from benchmarks.predict import make_raster

    src = make_raster(tmp_path / "big.tif", 20_000, 10.0, 6)
    script = f"""
import torch
from bsrlc.data.legend import Legend
from bsrlc.inference.dense import ClassifyJob
from bsrlc.inference.jobs import run_lightning
from bsrlc.models.centre_patch import CentrePatchCNN
from benchmarks.predict import BANDS
torch.manual_seed(0)
net = CentrePatchCNN(6, 4, channels=(8, 8, 8, 8, 8, 8)).eval()
legend = Legend.from_config({{"name": "x", "classes": [{{"code": i, "name": str(i)}} for i in (1, 2, 3, 4)]}})
job = ClassifyJob({str(src)!r}, {str(tmp_path / "map.tif")!r}, BANDS, [0.2] * 6, [0.1] * 6, legend, 7)
run_lightning(job, net, {{"accelerator": "cpu", "devices": 1}}, progress=False)
"""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert peak_mb > before / 1024 or before == 0
    print(f"20k x 20k x 6 classification: peak RSS {peak_mb:.0f} MB")
    assert peak_mb < 3072
    with rasterio.open(tmp_path / "map.tif") as m:
        assert (m.width, m.height) == (20_000, 20_000) and m.overviews(1)
        assert m.read(1, window=rasterio.windows.Window(9_000, 9_000, 64, 64)).min() >= 1


def test_a_second_process_on_the_same_output_gets_one_line(tmp_path, nets):
    """A live owner's lock refuses a second writer by name; a dead owner's lock is taken over;
    leftovers of an interrupted run are removed by the next owner."""
    import json
    import socket
    import subprocess
    import sys

    src = _raster(tmp_path / "s2.tif", 30, 30, 10.0)
    lock = tmp_path / ".map.tif.lock"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner = {"host": socket.gethostname(), "pid": sleeper.pid, "since": 0}
        lock.write_text(json.dumps(owner))
        with pytest.raises(InputError, match=f"another process \\(pid {sleeper.pid} on"):
            run_local(_cls_job(src, tmp_path / "map.tif"), nets[0], progress=False)
        assert lock.exists() and not (tmp_path / "map.tif").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    # the owner is gone now: its lock is stale; leftovers of its run go too
    store = tmp_path / ".map.tif.tiles"
    store.mkdir()
    (store / "u000000.0.abcd1234.tmp.npy").write_bytes(b"half")
    (tmp_path / ".map.tif.0123abcd.partial.stage.tif").write_bytes(b"half a COG")
    (tmp_path / ".map.tif.tiles.9f9f9f9f").mkdir()
    (out,) = run_local(_cls_job(src, tmp_path / "map.tif"), nets[0], progress=False)
    assert out.exists() and not lock.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.tif", "s2.tif"]


def test_disk_full_and_short_space_are_one_line_and_keep_the_tiles(tmp_path, nets, monkeypatch):
    import errno
    import shutil
    from collections import namedtuple

    from bsrlc.inference import jobs

    src = _raster(tmp_path / "s2.tif", 50, 50, 10.0)
    usage = namedtuple("usage", "total used free")
    real = shutil.disk_usage
    monkeypatch.setattr(jobs.shutil, "disk_usage", lambda p: usage(10**12, 10**12 - 1000, 1000))
    with pytest.raises(
        InputError, match=r"1 KiB free, but the tiles of map.tif need about \d+ KiB"
    ):
        run_local(_cls_job(src, tmp_path / "map.tif", tile=24), nets[0], progress=False)
    monkeypatch.setattr(jobs.shutil, "disk_usage", real)
    saved = []
    original = np.save

    def filling(path, arr):  # the disk fills up at the fourth tile
        if len(saved) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(path)
        original(path, arr)

    monkeypatch.setattr(jobs.np, "save", filling)
    with pytest.raises(
        InputError, match=r"disk full while writing tile 3 of map.tif.*3 of 9 tiles kept"
    ):
        run_local(_cls_job(src, tmp_path / "map.tif", tile=24), nets[0], progress=False)
    assert not list((tmp_path / ".map.tif.tiles").glob("*.tmp.npy"))
    assert not (tmp_path / ".map.tif.lock").exists()
    monkeypatch.setattr(jobs.np, "save", original)
    run_local(_cls_job(src, tmp_path / "map.tif", tile=24), nets[0], progress=False)
    assert (tmp_path / "map.tif").exists()
