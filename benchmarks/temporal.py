"""Temporal encoding: encoded batches from the compact store vs from the scenes, and data waits.

    python benchmarks/temporal.py [--quick] [--scenes 40] [--size 512] [--batch 256]

Writes a synthetic year of ``--scenes`` 6-band int16 scenes (tiled DEFLATE GeoTIFFs as the demo
world writes them, reflectance x 10000 with phenology and noise) with cloud masks (about 35 %
cloudy, a couple of same-day pairs), builds the per tile-year observation store
(:mod:`bsrlc.timeseries.store`) and times, side by side in this process, building encoded
``(batch, 7, 365)`` batches of random pixels:

* ``store``: ``PointSeries.__getitems__`` (one vectorised gather from the memory-mapped store)
  + ``encode`` (scatter, on the GPU when there is one);
* ``scenes``: the same batch made from the scenes each time: every scene's window around the
  batch's pixels read and QA-decoded (``window_observations``, the store builder's own code, so
  both apply the same rules), the batch's pixels picked, packed and encoded; random pixels
  span the tile, so the window is the tile;
* ``scenes_pointwise``: reading only each pixel's 1 x 1 window of every scene, timed on the
  first ``--pointwise-px`` pixels of one batch and scaled to the batch size.

Batches are built with ``--threads`` torch threads (default 1, as in a DataLoader worker; on a
loaded machine several threads spin on tiny scatters).

The encodings of the two are compared (``identical``). Then a small training loop (a 1-D conv
net on the encoding, CPU unless a GPU is there) draws batches from a DataLoader over the store
and reports the share of step time spent waiting for data: ``wait_share`` with the batches
gathered inline (``num_workers=0``: the setting for a CPU run on few cores, where a worker
process competes with the step for the same cores) and ``wait_share_1_worker`` with one
DataLoader worker (the setting with a GPU and spare cores). ``vs_from_scenes`` = scenes
time / store time per batch (medians). Dense-vs-compact sizes are reported too. The last line
is one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window

from bsrlc.stm.compose import SceneReader, SensorConfig, StmPlan
from bsrlc.timeseries.encoding import PointSeries, collate_packed, encode
from bsrlc.timeseries.store import (
    N_DAYS,
    Observations,
    ObservationStore,
    build_store,
    folder_source,
    plan_sources,
    window_observations,
)

BANDS = ["BLU", "GRN", "RED", "NIR", "SW1", "SW2"]
SENSOR = SensorConfig(name="synthetic", scale=1e-4, decoder="valid", mask_suffix="_QA")
YEAR = 2019


def write_year(folder: Path, n_scenes: int, size: int, seed: int = 0) -> None:
    """Synthetic scenes of one year with cloud masks (nonzero = clear)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    base = rng.integers(300, 3000, (len(BANDS), 1, 1)) + rng.normal(0, 200, (1, size, size))
    greenness = rng.random((size, size))  # vegetated share of each pixel
    doys = np.sort(rng.choice(np.arange(1, 365), n_scenes - 2, replace=False))
    pairs = doys[[len(doys) // 3, 2 * len(doys) // 3]]
    doys = np.concatenate([doys, pairs])  # two same-day pairs (overlapping orbits)
    block = 256 if size >= 256 else 64
    prof = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "crs": "EPSG:3035",
        "transform": from_origin(4_000_000, 3_000_000, 30, 30),
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "compress": "DEFLATE",
        "predictor": 2,
    }
    low = max(size // 32, 2)
    for k, doy in enumerate(doys):
        date = dt.date(YEAR, 1, 1) + dt.timedelta(days=int(doy) - 1)
        season = np.sin(np.pi * (doy - 80) / 200) if 80 < doy < 280 else 0.0
        refl = base.copy()
        refl[3] += 2500 * season * greenness  # NIR greens up
        refl[2] -= 300 * season * greenness
        refl += rng.normal(0, 60, refl.shape)
        cloud_field = np.kron(rng.random((low, low)), np.ones((size // low + 1,) * 2))
        clear = (cloud_field[:size, :size] > 0.35).astype(np.uint8)
        name = f"SYN{k % 2}_{date:%Y%m%d}"
        with rasterio.open(
            folder / f"{name}.tif", "w", count=6, dtype="int16", nodata=-9999, **prof
        ) as dst:
            dst.write(np.clip(refl, -2000, 16000).astype(np.int16))
            for i, b in enumerate(BANDS, 1):
                dst.set_band_description(i, b)
        with rasterio.open(folder / f"{name}_QA.tif", "w", count=1, dtype="uint8", **prof) as dst:
            dst.write(clear[None])


def from_scenes(
    plans: Sequence[StmPlan],
    readers: Sequence[SceneReader],
    rows: np.ndarray,
    cols: np.ndarray,
    device: torch.device,
) -> torch.Tensor:
    """One encoded batch made from the scenes: read the window around the pixels, pick them."""
    r0, c0 = int(rows.min()), int(cols.min())
    win = Window(c0, r0, int(cols.max()) - c0 + 1, int(rows.max()) - r0 + 1)
    counts, day, values, _ = window_observations(plans, readers, win)
    ptr = np.concatenate([[0], np.cumsum(counts)])
    pix = (rows - r0) * int(win.width) + (cols - c0)
    n = ptr[pix + 1] - ptr[pix]
    obs_idx = np.concatenate([np.arange(ptr[p], ptr[p + 1]) for p in pix])
    sample = np.repeat(np.arange(len(pix)), n)
    obs = Observations(values[obs_idx], day[obs_idx], sample, (len(pix),))
    return encode(obs, n_bands=len(BANDS), device=device)


def from_scenes_pointwise(
    plans: Sequence[StmPlan],
    readers: Sequence[SceneReader],
    rows: np.ndarray,
    cols: np.ndarray,
    device: torch.device,
) -> torch.Tensor:
    """One encoded batch from the scenes, reading each pixel's 1 x 1 window of every scene."""
    parts = [
        window_observations(plans, readers, Window(int(c), int(r), 1, 1))
        for r, c in zip(rows, cols, strict=True)
    ]
    sample = np.repeat(np.arange(len(parts)), [int(p[0][0]) for p in parts])
    obs = Observations(
        np.concatenate([p[2] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        sample,
        (len(parts),),
    )
    return encode(obs, n_bands=len(BANDS), device=device)


class TinyTempCNN(torch.nn.Module):
    """A small 1-D conv net on the (bands + 1, 365) encoding (the step the loader feeds)."""

    def __init__(self, c_in: int, n_classes: int = 4) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv1d(c_in, 16, 5, stride=2, padding=2),
            torch.nn.ReLU(),
            torch.nn.Conv1d(16, 16, 5, stride=2, padding=2),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool1d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(16, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of encodings."""
        return self.net(x)


def train_wait_share(
    ds: PointSeries, batch: int, steps: int, workers: int, device: torch.device
) -> dict:
    """Train ``steps`` steps; time spent waiting for the loader vs the whole step."""
    torch.manual_seed(0)
    model = TinyTempCNN(len(BANDS) + 1).to(device)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=batch,
        shuffle=True,
        collate_fn=collate_packed,
        num_workers=workers,
        persistent_workers=workers > 0,
        drop_last=True,
    )
    it = iter(loader)
    next(it)  # worker start-up is not a per-step cost
    wait = step = 0.0
    done = 0
    while done < steps:
        t0 = time.perf_counter()
        try:
            b = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        t1 = time.perf_counter()
        x = encode(b, n_bands=len(BANDS), device=device)
        loss = torch.nn.functional.cross_entropy(
            model(x), torch.as_tensor(b["label"], device=device)
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        wait += t1 - t0
        step += t2 - t0
        done += 1
    return {
        "wait_share": wait / step,
        "step_ms": 1000 * step / steps,
        "wait_ms": 1000 * wait / steps,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (< 2 min on 2 cores)")
    ap.add_argument("--scenes", type=int, default=None, help="scenes in the year (40; quick 30)")
    ap.add_argument("--size", type=int, default=None, help="tile edge in px (1024; quick 256)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--batches", type=int, default=None, help="store batches timed (50; 20)")
    ap.add_argument("--scene-batches", type=int, default=None, help="from-scenes batches (5; 3)")
    ap.add_argument("--steps", type=int, default=None, help="training steps (100; 30)")
    ap.add_argument("--pointwise-px", type=int, default=None, help="pointwise pixels (256; 32)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--workdir", default=None, help="where the scenes go (default: a temp dir)")
    args = ap.parse_args()
    q = args.quick
    n_scenes = args.scenes or (30 if q else 40)
    size = args.size or (256 if q else 1024)
    n_batches = args.batches or (20 if q else 50)
    n_scene_batches = args.scene_batches or (3 if q else 5)
    steps = args.steps or (30 if q else 100)
    n_pw = min(args.pointwise_px or (32 if q else 256), args.batch)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bsrlc_temporal_"))
    try:
        t0 = time.perf_counter()
        write_year(work / "scenes", n_scenes, size)
        t_write = time.perf_counter() - t0
        src = folder_source(work / "scenes", SENSOR, BANDS, YEAR)
        t0 = time.perf_counter()
        [path] = build_store([src], work / "obs", YEAR, overwrite=True)
        t_build = time.perf_counter() - t0
        store = ObservationStore(path)
        store_bytes = sum(f.stat().st_size for f in path.iterdir())
        dense_bytes = size * size * len(BANDS) * N_DAYS * 2  # int16 dense cube

        rng = np.random.default_rng(1)
        rows = rng.integers(0, size, (n_batches, args.batch))
        cols = rng.integers(0, size, (n_batches, args.batch))
        labels = rng.integers(0, 4, size * 4)
        ds = PointSeries(
            store, rng.integers(0, size, size * 4), rng.integers(0, size, size * 4), labels
        )
        batch_ds = PointSeries(store, rows.reshape(-1), cols.reshape(-1))

        # store: gather + encode, per batch
        encode(batch_ds.__getitems__(range(args.batch)), n_bands=6, device=device)  # warm-up
        t_store = []
        for k in range(n_batches):
            t0 = time.perf_counter()
            b = batch_ds.__getitems__(range(k * args.batch, (k + 1) * args.batch))
            x_store = encode(b, n_bands=len(BANDS), device=device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t_store.append(time.perf_counter() - t0)
            if k == 0:
                first_store = x_store

        plans = plan_sources([src], YEAR)
        readers = [SceneReader(p) for p in plans]
        t_scenes = []
        for k in range(n_scene_batches):
            t0 = time.perf_counter()
            x_sc = from_scenes(plans, readers, rows[k], cols[k], device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t_scenes.append(time.perf_counter() - t0)
            if k == 0:
                identical = bool(torch.equal(x_sc, first_store))
        t0 = time.perf_counter()
        x_pw = from_scenes_pointwise(plans, readers, rows[0, :n_pw], cols[0, :n_pw], device)
        t_pointwise = (time.perf_counter() - t0) * args.batch / n_pw
        identical &= bool(torch.equal(x_pw, first_store[:n_pw]))
        for r in readers:
            r.close()

        med_store, med_scenes = statistics.median(t_store), statistics.median(t_scenes)
        workers = train_wait_share(ds, args.batch, steps, workers=1, device=device)
        inline = train_wait_share(ds, args.batch, steps, workers=0, device=device)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    result = {
        "benchmark": "temporal",
        "vs_from_scenes": round(med_scenes / med_store, 1),
        "wait_share": round(inline["wait_share"], 4),
        "wait_share_1_worker": round(workers["wait_share"], 4),
        "vs_from_scenes_pointwise": round(t_pointwise / med_store, 1),
        "identical": identical,
        "quick": q,
        "device": device.type,
        "scenes": n_scenes,
        "tile_px": size,
        "batch": args.batch,
        "obs_per_pixel": round(store.meta["n_obs"] / (size * size), 2),
        "empty_pixels": store.n_empty,
        "store_mb": round(store_bytes / 2**20, 2),
        "dense_int16_mb": round(dense_bytes / 2**20, 1),
        "dense_vs_store": round(dense_bytes / store_bytes, 1),
        "batch_ms": {
            "store": round(1000 * med_store, 3),
            "scenes": round(1000 * med_scenes, 1),
            "scenes_pointwise": round(1000 * t_pointwise, 1),
        },
        "train_step_ms": {
            "workers_1": round(workers["step_ms"], 2),
            "inline": round(inline["step_ms"], 2),
        },
        "build_s": round(t_build, 2),
        "write_scenes_s": round(t_write, 2),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
    }
    print(
        f"store {result['batch_ms']['store']} ms/batch, scenes {result['batch_ms']['scenes']} "
        f"ms/batch ({result['vs_from_scenes']}x), pointwise "
        f"{result['batch_ms']['scenes_pointwise']} ms; "
        f"wait share {result['wait_share']:.1%} (inline), "
        f"{result['wait_share_1_worker']:.1%} (1 worker); store {result['store_mb']} MB vs dense "
        f"{result['dense_int16_mb']} MB"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
