"""STM compositing speed: bsrlc's numba kernel vs numpy.nanpercentile on the same stack.

    python benchmarks/stm.py [--quick] [--dates 30] [--size 512]

Builds a random int16 stack of 30 dates x 6 bands x 512 x 512 (reflectance x 10000) with about
half the observations masked and a corner of pixels with none clear, and computes
p10/p25/p50/p75/p90 per pixel and band:

* bsrlc: ``compute_stm_block(dn, clear, ...)`` on the raw DNs and the clear mask (scaling to
  reflectance and masking are part of the timed call), after one warm-up call that compiles the
  kernel (or loads it from numba's cache);
* numpy: ``np.nanpercentile`` (linear interpolation) on a float32 reflectance copy with NaN where
  masked (building that copy is *not* timed, which favours numpy).

Both run on the same rows in the same process; ``--quick`` times them on the first 64 rows
(numpy needs minutes for the whole stack) and bsrlc additionally on the whole stack for
``mpix_per_s``. Values are compared in int16 units (round(reflectance x 10000)). The last line
printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import numpy as np

from bsrlc.stm.indices import index_matrices
from bsrlc.stm.metrics import compute_stm_block, compute_stm_int16, parse_metrics

PCTS = [10, 25, 50, 75, 90]
ALL = ["min", "p10", "p25", "p50", "p75", "p90", "max", "mean", "std"]
BANDS = ["BLU", "GRN", "RED", "NIR", "SW1", "SW2"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="time numpy on 64 rows only (< 2 min)")
    ap.add_argument("--dates", type=int, default=30)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    t_len, n_bands, size = args.dates, len(BANDS), args.size
    rng = np.random.default_rng(0)
    dn = rng.integers(0, 6000, size=(t_len, n_bands, size, size), dtype=np.int16)
    clear = rng.random((t_len, size, size)) >= 0.5  # (t, h, w), ~half masked
    clear[:, :8, :8] = False  # pixels without any clear observation
    rows = min(64, size) if args.quick else size
    spec = parse_metrics([f"p{q}" for q in PCTS])

    t0 = time.perf_counter()
    compute_stm_block(dn[:, :, :8, :8], clear[:, :8, :8], spec, scale=1e-4)  # compile / load
    t_warm = time.perf_counter() - t0

    dn_sub, clear_sub = dn[:, :, :rows], clear[:, :rows]
    t0 = time.perf_counter()
    ours, count = compute_stm_block(dn_sub, clear_sub, spec, scale=1e-4)
    t_ours = time.perf_counter() - t0

    refl = dn_sub.astype(np.float32) * np.float32(1e-4)  # (t, b, rows, w), NaN where masked
    refl[np.broadcast_to(~clear_sub[:, None], refl.shape)] = np.nan
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
        ref = np.nanpercentile(refl, PCTS, axis=0)  # (q, b, rows, w)
    t_numpy = time.perf_counter() - t0

    a = np.round(ours.reshape(n_bands, len(PCTS), rows, size).transpose(1, 0, 2, 3) * 10000)
    b = np.round(ref.astype(np.float64) * 10000)
    assert np.array_equal(np.isnan(a), np.isnan(b)), "pixels without observations differ"
    both = ~np.isnan(b)
    max_diff = float(np.abs(a[both] - b[both]).max())
    assert (count == clear_sub.sum(0)).all()

    t0 = time.perf_counter()  # the whole stack, percentiles only
    compute_stm_block(dn, clear, spec, scale=1e-4)
    t_full = time.perf_counter() - t0
    # the production path: 9 metrics x (6 bands + NDVI + NDBI) to int16, whole stack
    idx = index_matrices(["NDVI", "NDBI"], BANDS)
    full_spec = parse_metrics(ALL)
    t0 = time.perf_counter()
    compute_stm_int16(dn, clear, full_spec, idx, scale=1e-4, offset=0.0, nodata=None)
    t_prod = time.perf_counter() - t0

    mpix_sub, mpix_full = rows * size / 1e6, size * size / 1e6
    print(f"stack: {t_len} dates x {n_bands} bands x {size} x {size} int16, ~50% masked")
    print(f"cores: {os.cpu_count()}; numba warm-up (compile or cache load): {t_warm:.2f} s")
    print(f"timed on {rows} x {size} px: bsrlc {t_ours:.3f} s, numpy.nanpercentile {t_numpy:.2f} s")
    print(f"speedup {t_numpy / t_ours:.0f}x, max |diff| {max_diff:g} (int16 units)")
    print(f"whole stack, 5 percentiles: {t_full:.3f} s ({mpix_full / t_full:.2f} Mpx/s)")
    print(f"whole stack, 9 metrics x 8 layers -> int16: {t_prod:.3f} s")
    print(
        json.dumps(
            {
                "benchmark": "stm",
                "speedup_vs_numpy_nanpercentile": round(t_numpy / t_ours, 1),
                "max_abs_diff": max_diff,
                "mpix_per_s": round(mpix_full / t_full, 3),
                "numpy_mpix_per_s": round(mpix_sub / t_numpy, 5),
                "bsrlc_s": round(t_ours, 4),
                "numpy_s": round(t_numpy, 3),
                "compared_px": rows * size,
                "full_metrics_int16_mpix_per_s": round(mpix_full / t_prod, 3),
                "warmup_s": round(t_warm, 2),
                "dates": t_len,
                "bands": n_bands,
                "size": size,
                "percentiles": PCTS,
                "quick": args.quick,
                "cores": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
