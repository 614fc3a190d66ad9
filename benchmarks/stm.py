"""STM compositing speed: bsrlc's kernel vs numpy.nanpercentile on the same stack.

    python benchmarks/stm.py [--quick]

Builds a random stack of >= 30 dates x 6 bands x 512 x 512 with about half the observations
masked (and some pixels with none clear), computes p10/p25/p50/p75/p90 with
``bsrlc.stm.compute_stm_block`` (after one warm-up call that compiles the numba kernel) and with
``numpy.nanpercentile`` (linear interpolation) side by side, and compares the values in int16
units (reflectance x 10000). --quick times numpy on a 128-row slice of the same stack (bsrlc on
the same slice too, so the ratio is like for like). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import numpy as np

from bsrlc.stm.metrics import compute_stm_block, parse_metrics

PCTS = [10, 25, 50, 75, 90]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="time numpy on a 128-row slice")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    t_len, bands, size = 30, 6, 512
    stack = (rng.integers(0, 6000, size=(t_len, bands, size, size)) * 1e-4).astype(np.float32)
    masked = rng.random((t_len, size, size)) < 0.5
    masked[:, :4, :4] = True  # pixels without any clear observation
    stack[np.broadcast_to(masked[:, None], stack.shape)] = np.nan
    rows = 128 if args.quick else size
    sub = np.ascontiguousarray(stack[:, :, :rows])
    spec = parse_metrics([f"p{q}" for q in PCTS])

    compute_stm_block(sub[:, :, :8, :8], spec)  # compile (cached on disk after the first run)
    t0 = time.perf_counter()
    ours, _ = compute_stm_block(sub, spec)
    t_ours = time.perf_counter() - t0

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
        ref = np.nanpercentile(sub, PCTS, axis=0)  # (q, bands, rows, cols)
    t_numpy = time.perf_counter() - t0

    ours_q = ours.reshape(bands, len(PCTS), rows, size).transpose(1, 0, 2, 3)
    a = np.round(ours_q * 10000)
    b = np.round(ref * 10000)
    both = ~np.isnan(b)
    assert np.array_equal(np.isnan(a), np.isnan(b)), "nodata pixels differ"
    max_diff = float(np.abs(a[both] - b[both]).max())
    mpix = rows * size / 1e6
    print(f"stack {t_len} dates x {bands} bands x {rows} x {size}, ~50% masked")
    print(f"{os.cpu_count()} cores")
    print(f"bsrlc kernel:        {t_ours:8.3f} s")
    print(f"numpy.nanpercentile: {t_numpy:8.3f} s")
    print(
        json.dumps(
            {
                "benchmark": "stm",
                "speedup_vs_numpy_nanpercentile": round(t_numpy / t_ours, 1),
                "max_abs_diff": max_diff,
                "mpix_per_s": round(mpix / t_ours, 2),
                "numpy_mpix_per_s": round(mpix / t_numpy, 4),
                "dates": t_len,
                "bands": bands,
                "rows": rows,
                "cols": size,
                "percentiles": PCTS,
            }
        )
    )


if __name__ == "__main__":
    main()
