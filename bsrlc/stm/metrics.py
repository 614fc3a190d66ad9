"""Per-pixel statistics over clear observations, compiled with numba.

``numpy.nanpercentile`` on a (time, bands, rows, cols) stack with NaNs falls back to a Python
loop over pixels and is one to two orders of magnitude slower than needed for whole countries.
This kernel gathers each pixel's clear values once, sorts them with an insertion sort (stacks
are short: tens of dates), and reads every requested statistic off the sorted values, in
parallel over pixels. Percentiles use numpy's default linear interpolation, so results equal
``nanpercentile`` up to float rounding.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np

from bsrlc.errors import ConfigError

MIN, MAX, MEAN, STD, PCT = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class MetricSpec:
    """Parsed metric names.

    Attributes:
        names: the metric names as given (``min``, ``p25``, ...), without ``count``.
        kinds: kind code per metric (MIN, MAX, MEAN, STD, PCT).
        qs: the percentile (0-100) of PCT metrics, 0 otherwise.
        count: whether a clear-observation count was asked for.
    """

    names: tuple[str, ...]
    kinds: np.ndarray
    qs: np.ndarray
    count: bool


def parse_metrics(names: Sequence[str]) -> MetricSpec:
    """Parse metric names: min, max, mean, std, count, median, p<N> (0 <= N <= 100).

    Args:
        names: metric names from the config.

    Returns:
        The parsed spec.

    Raises:
        ConfigError: for an unknown name.
    """
    kinds, qs, out = [], [], []
    count = False
    simple = {"min": MIN, "max": MAX, "mean": MEAN, "std": STD}
    for raw in names:
        name = str(raw).lower()
        if name == "count":
            count = True
            continue
        if name == "median":
            name = "p50"
        if name in simple:
            kinds.append(simple[name])
            qs.append(0.0)
        elif m := re.fullmatch(r"p(\d{1,3}(?:\.\d+)?)", name):
            q = float(m.group(1))
            if q > 100:
                raise ConfigError(f"metrics: {raw} is above p100")
            kinds.append(PCT)
            qs.append(q)
        else:
            raise ConfigError(
                f"metrics: unknown metric {raw!r}; use min, max, mean, std, count, pNN"
            )
        out.append(name)
    if not out and not count:
        raise ConfigError("metrics: empty; ask for at least one metric")
    return MetricSpec(tuple(out), np.array(kinds, np.int64), np.array(qs, np.float64), count)


@numba.njit(parallel=True, cache=True, nogil=True)
def _stm_kernel(
    stack: np.ndarray, kinds: np.ndarray, qs: np.ndarray, out: np.ndarray, count: np.ndarray
) -> None:  # pragma: no cover - compiled
    t_len, n_bands, h, w = stack.shape
    n_metrics = kinds.shape[0]
    for p in numba.prange(h * w):
        i = p // w
        j = p % w
        buf = np.empty(t_len, np.float64)
        n_clear = 0
        for t in range(t_len):
            if not np.isnan(stack[t, 0, i, j]):
                n_clear += 1
        count[i, j] = n_clear
        for b in range(n_bands):
            n = 0
            total = 0.0
            for t in range(t_len):
                v = stack[t, b, i, j]
                if not np.isnan(v):
                    # insertion sort while gathering
                    k = n
                    while k > 0 and buf[k - 1] > v:
                        buf[k] = buf[k - 1]
                        k -= 1
                    buf[k] = v
                    n += 1
                    total += v
            for m in range(n_metrics):
                o = b * n_metrics + m
                if n == 0:
                    out[o, i, j] = np.nan
                    continue
                kind = kinds[m]
                if kind == 0:
                    out[o, i, j] = buf[0]
                elif kind == 1:
                    out[o, i, j] = buf[n - 1]
                elif kind == 2:
                    out[o, i, j] = total / n
                elif kind == 3:
                    mean = total / n
                    ss = 0.0
                    for k in range(n):
                        d = buf[k] - mean
                        ss += d * d
                    out[o, i, j] = np.sqrt(ss / n)
                else:
                    pos = qs[m] / 100.0 * (n - 1)
                    lo = int(np.floor(pos))
                    hi = min(lo + 1, n - 1)
                    frac = pos - lo
                    out[o, i, j] = buf[lo] + (buf[hi] - buf[lo]) * frac


def compute_stm_block(stack: np.ndarray, spec: MetricSpec) -> tuple[np.ndarray, np.ndarray]:
    """Statistics of a block over time, NaN marking observations that are not clear.

    An observation is clear for all bands or for none: mark it NaN in every band (the clear
    count is read from band 0).

    Args:
        stack: (time, bands, rows, cols) float32, NaN where not clear.
        spec: the metrics to compute.

    Returns:
        (bands * metrics, rows, cols) float64 statistics (NaN where no clear observation), in
        band-major order, and the (rows, cols) int32 clear count.
    """
    if stack.ndim != 4:
        raise ValueError(f"stack must be (time, bands, rows, cols), got {stack.shape}")
    t_len, n_bands, h, w = stack.shape
    out = np.empty((n_bands * len(spec.kinds), h, w), np.float64)
    count = np.zeros((h, w), np.int32)
    if t_len == 0:
        out[:] = np.nan
        return out, count
    _stm_kernel(np.ascontiguousarray(stack, dtype=np.float32), spec.kinds, spec.qs, out, count)
    return out, count
