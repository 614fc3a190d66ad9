"""Tiled SR inference: tile planning, seams, georeferencing, nodata, bounded memory."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window

from bsrlc.errors import ConfigError, InputError
from bsrlc.inference.sr import (
    OUT_NODATA,
    SRJob,
    run_sr_job,
    super_resolve_array,
    super_resolve_stream,
)
from bsrlc.inference.tiling import (
    RowAccumulator,
    TilePlan,
    axis_weight_sum,
    default_blend,
    pad_border,
    plan_axis,
    plan_strips,
)
from bsrlc.models.sr import SRResNet

BANDS = ["RED_P50", "NIR_P50", "SW1_P50"]
MEAN, STD = [0.08, 0.25, 0.18], [0.04, 0.08, 0.06]


@pytest.fixture(scope="module")
def model() -> SRResNet:
    torch.manual_seed(0)
    g = SRResNet(in_bands=3, channels=8, n_blocks=1, head_kernel=5, tail_kernel=3)
    with torch.no_grad():  # make the network's output depend strongly on its context
        for p in g.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return g.eval()


def lr_reflectance(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.02, 0.4, (3, h, w)).astype(np.float32)
    return np.round(base * 10000) / 10000  # representable as int16 x 10000


# -- tile planning -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 5, 15, 16, 17, 32, 33, 100])
def test_plan_axis_covers_any_length(n):
    spans = plan_axis(n, tile=16, halo=3, blend=2)
    covered = np.zeros(n, int)
    for sp in spans:
        covered[sp.core[0] : sp.core[1]] += 1
        assert sp.read[1] - sp.read[0] == min(16, n) + 6  # same size: tiles batch
        assert 0 <= sp.keep[0] <= sp.core[0] < sp.core[1] <= sp.keep[1] <= n
        assert sp.read[0] <= sp.keep[0] and sp.keep[1] <= sp.read[1]
    assert (covered >= 1).all() and spans[-1].core[1] == n
    assert (axis_weight_sum(spans, scale=3) >= 1).all()


def test_plan_axis_within_a_strip_and_bad_arguments():
    spans = plan_axis(100, tile=16, halo=4, blend=2, start=40, stop=70)
    assert spans[0].core[0] == 40 and spans[-1].core[1] == 70
    assert spans[0].keep[0] == 40 and spans[-1].keep[1] == 70  # no blending across the strip
    assert spans[0].read[0] == 36  # context comes from the neighbouring strip
    assert len(axis_weight_sum(spans, scale=3)) == 90
    with pytest.raises(ValueError):
        plan_axis(10, tile=4, halo=1, blend=2)
    with pytest.raises(ValueError):
        plan_axis(0, tile=4, halo=1)
    assert plan_strips(100, None, 16) == [(0, 100)]
    assert plan_strips(100, 40, 16) == [(0, 40), (40, 80), (80, 100)]
    assert plan_strips(90, 40, 16) == [(0, 40), (40, 90)]  # a 10-px remainder joins


@pytest.mark.parametrize("ramp", ["cosine", "linear"])
def test_feathering_weight(ramp):
    sp = plan_axis(64, tile=16, halo=6, blend=4)[1]
    w = sp.weight(scale=3, ramp=ramp)
    lo = (sp.core[0] - sp.keep[0]) * 3
    core = w[lo : lo + 48]
    assert w.shape == ((sp.keep[1] - sp.keep[0]) * 3,) and np.all(core == 1)
    left, right = w[:lo], w[lo + 48 :]
    assert np.all((left > 0) & (left < 1)) and np.all(np.diff(left) > 0)
    assert np.all((right > 0) & (right < 1)) and np.all(np.diff(right) < 0)
    tile = TilePlan(64, 40, 16, 6, 4, ramp=ramp)
    t = next(iter(tile))
    assert t.weight(3).shape == (
        (t.rows.keep[1] - t.rows.keep[0]) * 3,
        (t.cols.keep[1] - t.cols.keep[0]) * 3,
    )
    with pytest.raises(ValueError):
        sp.weight(ramp="gauss")


def test_default_blend():
    assert default_blend(halo=12, receptive_field=10) == 2
    assert default_blend(halo=30, receptive_field=10) == 4
    assert default_blend(halo=6, receptive_field=10) == 3  # inexact: feather half the halo
    assert default_blend(halo=6, receptive_field=None) == 3


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
@pytest.mark.parametrize("shape", [(7, 9), (1, 1), (2, 30)])
def test_pad_border_equals_padding_the_whole_raster(mode, shape):
    rng = np.random.default_rng(0)
    full = rng.random((2, *shape))
    halo = 3
    padded = np.pad(
        full,
        [(0, 0), (halo, halo), (halo, halo)],
        mode={"reflect": "reflect", "replicate": "edge"}[mode],
    )
    plan = TilePlan(*shape, tile=4, halo=halo)
    for t in plan:
        win = t.read_window(*shape)
        block = full[
            :, win.row_off : win.row_off + win.height, win.col_off : win.col_off + win.width
        ]
        got = pad_border(block, t.rows.padding(shape[0]), t.cols.padding(shape[1]), mode)
        want = padded[
            :,
            t.rows.read[0] + halo : t.rows.read[1] + halo,
            t.cols.read[0] + halo : t.cols.read[1] + halo,
        ]
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError):
        pad_border(full, (1, 1), (0, 0), "wrap")


def test_row_accumulator_blends_exactly_and_streams():
    h, w, s = 23, 37, 2
    plan = TilePlan(h, w, tile=8, halo=3, blend=3, ramp="linear")
    truth = np.random.default_rng(1).random((2, h * s, w * s)).astype(np.float32)
    rows, cols = plan.weight_sums(0, s)
    acc = RowAccumulator(2, rows, cols, capacity=10)
    out = np.full_like(truth, np.nan)
    for i, tiles in enumerate(plan.rows()):
        for t in tiles:
            r = slice(t.rows.keep[0] * s, t.rows.keep[1] * s)
            c = slice(t.cols.keep[0] * s, t.cols.keep[1] * s)
            acc.add(truth[:, r, c], t.weight(s, "linear"), r.start, c.start)
        for row, block in acc.flush(plan.final_rows(i, s), chunk=5):
            assert block.shape[1] <= 5
            out[:, row : row + block.shape[1]] = block
    np.testing.assert_allclose(out, truth, rtol=1e-6)
    with pytest.raises(ValueError, match="flushed"):
        acc.add(truth[:, :2, :2], np.ones((2, 2)), 0, 0)


# -- seams -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("tile", "strip", "batch"), [(16, None, 1), (16, 32, 4), (20, 25, 3)])
def test_tiled_equals_single_pass(model, tile, strip, batch):
    lr = lr_reflectance(53, 71)  # not a multiple of any tile
    nodata = np.zeros((53, 71), bool)
    nodata[10:14, 30:41] = True
    lr[:, nodata] = -3.2768  # what the nodata DN would give: must not leak
    one = super_resolve_array(model, lr, 3, MEAN, STD, nodata, tile=128, strip=None)
    tiled = super_resolve_array(
        model, lr, 3, MEAN, STD, nodata, tile=tile, strip=strip, batch_size=batch
    )
    assert one.shape == (3, 159, 213)
    np.testing.assert_array_equal(np.isnan(one), np.isnan(tiled))
    assert np.nanmax(np.abs(one - tiled)) <= 1e-4
    # the network saw the band mean, not -3.28, at nodata: neighbours stay plausible
    assert np.nanmin(one) > -1 and np.isnan(one[:, 30:42, 90:123]).all()


def test_replicate_border_and_single_pass_of_a_tiny_raster(model):
    lr = lr_reflectance(5, 3, seed=2)
    one = super_resolve_array(model, lr, 3, MEAN, STD, tile=64, border="replicate")
    tiled = super_resolve_array(model, lr, 3, MEAN, STD, tile=2, border="replicate")
    assert one.shape == (3, 15, 9) and np.abs(one - tiled).max() <= 1e-4


def test_short_overlap_warns_and_feathers(model, caplog):
    lr = lr_reflectance(40, 40)
    with caplog.at_level(logging.WARNING):
        out = super_resolve_array(model, lr, 3, MEAN, STD, tile=16, overlap=4)
    assert "not exact" in caplog.text and np.isfinite(out).all()


def test_memory_stays_within_a_band_of_rows(model):
    """Rows are handed on as soon as done: never more than ~ a tile row of output is pending."""
    h, w, tile, s = 90, 12, 16, 3
    lr = lr_reflectance(h, w)
    read_upto, pending = [0], []

    def read(r0, r1, c0, c1):
        read_upto[0] = max(read_upto[0], r1)
        return lr[:, r0:r1, c0:c1].copy(), np.zeros((r1 - r0, c1 - c0), bool)

    done = 0
    for row, _col, block, _flags in super_resolve_stream(
        model, read, h, w, s, MEAN, STD, tile=tile, overlap=10, feather=2
    ):
        pending.append(read_upto[0] * s - done)
        done = row + block.shape[1]
    assert done == h * s and len(pending) > 5
    assert max(pending) <= s * (tile + 2 * 10 + 2 * 2)  # read ahead + blend band, not the raster


# -- rasters ---------------------------------------------------------------------------------------


def write_stm(path, lr: np.ndarray, nodata: np.ndarray, names: list[str]):
    """An STM-like GeoTIFF: int16 reflectance x 10000, nodata -32768, an extra band in front."""
    h, w = lr.shape[1:]
    dn = np.round(lr * 10000).astype(np.int16)
    extra = np.full((1, h, w), 7, np.int16)
    # the bands in another order than the model's, with a count band in front
    order = [2, 0, 1]
    data = np.concatenate([extra, dn[order]])
    data[1 + 1, nodata] = -32768  # nodata in one band only (RED_P50) is nodata for the model
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=w,
        height=h,
        count=4,
        dtype="int16",
        nodata=-32768,
        crs="EPSG:3035",
        transform=from_origin(4_321_000, 3_210_000, 30, 30),
    ) as dst:
        dst.write(data)
        for i, name in enumerate(["CLEAR_COUNT"] + [names[k] for k in order], start=1):
            dst.set_band_description(i, name)


@pytest.fixture()
def stm(tmp_path):
    lr = lr_reflectance(53, 71, seed=3)
    nodata = np.zeros((53, 71), bool)
    nodata[40:45, 3:9] = True
    nodata[0, 0] = True
    path = tmp_path / "landsat_stm.tif"
    write_stm(path, lr, nodata, BANDS)
    return path, lr, nodata


def _sr(model, src, dst, bands=BANDS, scale=3, mean=MEAN, std=STD, overwrite=False, **plan):
    """The one SR path: an SRJob run by run_sr_job (as predict.py and the demo run it)."""
    job = SRJob(src, dst, bands, scale, mean, std, **plan)
    return run_sr_job(job, model, overwrite=overwrite, progress=False)


def test_sr_job_writes_an_aligned_cog_equal_to_one_pass(model, stm, tmp_path):
    src, lr, nodata = stm
    dst = tmp_path / "out" / "sr.tif"
    # 53 x 71 LR pixels in 3 x 4 units of 20, tiles of 16 inside them: seams everywhere
    assert _sr(model, src, dst, unit=20, tile=16) == dst
    with rasterio.open(src) as a, rasterio.open(dst) as b:
        assert b.crs == a.crs
        assert (b.width, b.height) == (3 * a.width, 3 * a.height)
        assert (b.transform.c, b.transform.f) == (a.transform.c, a.transform.f)  # same corner
        assert b.transform.a == pytest.approx(10) and b.transform.e == pytest.approx(-10)
        assert b.bounds == pytest.approx(a.bounds)
        assert list(b.descriptions) == BANDS
        assert b.dtypes == ("int16",) * 3 and b.nodata == OUT_NODATA
        assert b.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert b.tags()["sr_scale"] == "3" and b.tags()["sr_source"] == src.name
        assert float(b.tags()["reflectance_scale"]) == pytest.approx(1e-4)
        out = b.read()
    hr_nodata = nodata.repeat(3, 0).repeat(3, 1)
    assert ((out == OUT_NODATA).all(0) == hr_nodata).all()
    assert not (out[:, ~hr_nodata] == OUT_NODATA).any()
    ref = super_resolve_array(model, lr, 3, MEAN, STD, nodata, tile=128, strip=None)
    diff = np.abs(out[:, ~hr_nodata].astype(np.float64) - ref[:, ~hr_nodata] * 10000)
    assert diff.max() <= 1.0  # <= 1 DN (int16 rounding) from the single float pass
    assert sorted(p.name for p in dst.parent.iterdir()) == ["sr.tif"]  # no store, no lock left


def test_sr_job_errors(model, stm, tmp_path):
    src, _, _ = stm
    dst = tmp_path / "sr.tif"
    with pytest.raises(InputError, match="BLU_P50"):
        _sr(model, src, dst, bands=["BLU_P50", "NIR_P50", "SW1_P50"])
    with pytest.raises(ConfigError, match="means"):
        _sr(model, src, dst, mean=MEAN[:2])
    with pytest.raises(ConfigError, match="x3"):
        _sr(model, src, dst, scale=2)
    other = SRResNet(in_bands=3, out_bands=2, channels=4, n_blocks=0)
    with pytest.raises(ConfigError, match="bands"):
        _sr(other, src, dst)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["landsat_stm.tif"]  # nothing written
    dst.write_bytes(b"old")
    with pytest.raises(InputError, match="exists"):
        _sr(model, src, dst)
    assert dst.read_bytes() == b"old"
    with pytest.raises(InputError, match="input"):
        _sr(model, src, src, overwrite=True)
    assert _sr(model, src, dst, overwrite=True) == dst
    with rasterio.open(dst) as b:
        assert b.count == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(model):
    lr = lr_reflectance(30, 40)
    cpu = super_resolve_array(model, lr, 3, MEAN, STD, tile=16)
    gpu = super_resolve_array(model, lr, 3, MEAN, STD, tile=16, device="cuda", batch_size=4)
    model.cpu()
    assert np.abs(cpu - gpu).max() <= 1e-3


# -- memory ----------------------------------------------------------------------------------------


BIG_SCRIPT = """
import json, resource, sys, time
import torch
from bsrlc.inference.sr import SRJob, run_sr_job
from bsrlc.models.sr import SRResNet

torch.manual_seed(0)
model = SRResNet(in_bands=6, channels=4, n_blocks=1, head_kernel=3, tail_kernel=3)
bands = ["BLU_P50", "GRN_P50", "RED_P50", "NIR_P50", "SW1_P50", "SW2_P50"]
t0 = time.perf_counter()
job = SRJob(sys.argv[1], sys.argv[2], bands, 3, [0.1] * 6, [0.05] * 6, unit=1024, tile=256)
run_sr_job(job, model, progress=False)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
print(json.dumps({"max_rss_mb": rss, "seconds": time.perf_counter() - t0}))
"""


def write_big_stm(path, n: int) -> None:
    """A 6-band int16 STM of n x n pixels, written in row blocks (never whole in memory)."""
    bands = ["BLU_P50", "GRN_P50", "RED_P50", "NIR_P50", "SW1_P50", "SW2_P50"]
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=n,
        height=n,
        count=6,
        dtype="int16",
        nodata=-32768,
        crs="EPSG:3035",
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
        transform=from_origin(4_000_000, 3_000_000, 30, 30),
    ) as dst:
        for i, b in enumerate(bands, start=1):
            dst.set_band_description(i, b)
        cols = np.arange(n)
        for r0 in range(0, n, 512):
            rows = np.arange(r0, min(n, r0 + 512))
            pattern = ((rows[:, None] // 64 + cols[None, :] // 64) % 7).astype(np.int16) * 300
            block = np.stack([pattern + 500 + 100 * b for b in range(6)])
            block[:, (rows[:, None] % 1000 < 50) & (cols[None, :] % 1000 < 50)] = -32768
            dst.write(block, window=Window(0, r0, n, len(rows)))


@pytest.mark.slow
def test_big_raster_memory_is_bounded(tmp_path):
    # 5 x 5 units of 1024 LR pixels, the last ones partial: memory is bounded by the unit, and the
    # tile store holds 15,000^2 x 6 int16 (2.7 GB) on disk before the COG is assembled
    n = 5_000
    src, dst = tmp_path / "big_stm.tif", tmp_path / "big_sr.tif"
    write_big_stm(src, n)
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(BIG_SCRIPT))
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(script), str(src), str(dst)],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - t0
    print("big raster:", result)
    assert result["max_rss_mb"] < 2048
    with rasterio.open(dst) as out:
        assert (out.width, out.height, out.count) == (3 * n, 3 * n, 6)
        corner = out.read(1, window=Window(0, 0, 300, 300))
        assert (corner[:150, :150] == OUT_NODATA).all() and (corner[150:, 150:] != OUT_NODATA).all()
