"""Patches per second: chip cache vs the torchgeo dataset path, same patches, side by side.

    python benchmarks/chips.py [--quick]

Writes a 6-band STM-like raster (int16 COG, EPSG:3035), then reads the same random patches
(same size, same bands) through ``STMRaster`` (torchgeo, rasterio per sample) and from the
``RasterCache`` memory map (after its one-off read, which is timed separately). Prints one JSON
line last: {"benchmark": "chips", "speedup_vs_torchgeo": ..., "samples_per_s": ...}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from affine import Affine

from bsrlc.data.chips import RasterCache
from bsrlc.data.datasets import STMRaster
from bsrlc.raster import write_cog


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller raster, fewer samples")
    ap.add_argument("--patch", type=int, default=32, help="patch edge in pixels")
    args = ap.parse_args()
    torch.set_num_threads(1)
    size = 2048 if args.quick else 4096
    n_tg = 300 if args.quick else 1000
    n_cache = 20000 if args.quick else 100000
    bands = [f"{b}_P50" for b in ("BLU", "GRN", "RED", "NIR", "SW1", "SW2")]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stm.tif"
        arr = rng.integers(0, 4000, size=(6, size, size), dtype=np.int16)
        t = Affine(30, 0, 5_250_000, 0, -30, 4_060_020)
        write_cog(path, arr, crs="EPSG:3035", transform=t, nodata=-32768, descriptions=bands)
        del arr
        p = args.patch
        corners = rng.integers(0, size - p, size=(max(n_tg, n_cache), 2))

        ds = STMRaster(path, bands=bands)
        t0 = time.perf_counter()
        for r, c in corners[:n_tg]:
            x0, y0 = t * (int(c), int(r))
            ds[x0 : x0 + p * 30, y0 - p * 30 : y0]["image"].float()
        tg_rate = n_tg / (time.perf_counter() - t0)

        t0 = time.perf_counter()
        cache = RasterCache(path, bands, cache_dir=Path(tmp) / "cache", progress=False)
        fill_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for r, c in corners[:n_cache]:
            torch.from_numpy(cache.patch(int(r), int(c), p))
        cache_rate = n_cache / (time.perf_counter() - t0)
        # the same pixels both ways
        r, c = (int(v) for v in corners[0])
        x0, y0 = t * (c, r)
        ref = ds[x0 : x0 + p * 30, y0 - p * 30 : y0]["image"].numpy()
        same = bool(
            np.array_equal(ref * 1e-4, cache.patch(r, c, p))
            or np.allclose(ref * 1e-4, cache.patch(r, c, p), rtol=1e-6)
        )
    print(f"raster {size}x{size}x6 int16, patch {p}x{p}, 1 thread")
    print(f"torchgeo STMRaster: {tg_rate:8.0f} samples/s ({n_tg} samples)")
    print(f"chip cache:         {cache_rate:8.0f} samples/s ({n_cache} samples)")
    print(f"chip cache one-off read: {fill_s:.1f} s")
    print(
        json.dumps(
            {
                "benchmark": "chips",
                "speedup_vs_torchgeo": round(cache_rate / tg_rate, 1),
                "samples_per_s": round(cache_rate),
                "torchgeo_samples_per_s": round(tg_rate),
                "cache_fill_s": round(fill_s, 2),
                "patch": p,
                "bands": len(bands),
                "identical_pixels": same,
            }
        )
    )


if __name__ == "__main__":
    main()
