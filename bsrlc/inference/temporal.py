"""Consistent maps over time: a hidden Markov model over each pixel's per-period class.

Periods mapped independently flicker: a pixel whose probabilities are close between two classes
changes class and back between periods although nothing happened. Treating each pixel's class
sequence as a Markov chain (transition matrix ``A``; built-up land rarely reverts) and each
period's calibrated class probabilities as its evidence, the Viterbi algorithm finds the most
probable sequence of classes. Real, well-supported change survives; isolated flips whose
evidence is weaker than the transition's cost do not.

Evidence: a classifier gives posteriors ``p_t(c | x_t)`` under its period's priors ``pi_t``;
the likelihood the HMM needs is ``p(x_t | c) ∝ p_t(c | x_t) / pi_t(c)``. The HMM treats the
periods' evidence as independent, but the same pixel's errors are correlated over periods (the
same garden looks like a roof every time), so pooling them is overconfident and over-maps the
classes a pixel is often confused with; ``evidence_weight`` < 1 tempers the log-likelihoods.
:func:`select_parameters` picks ``stay`` and ``evidence_weight`` from labelled validation
points (never from the data a map is judged on), among the settings that leave each period's
class areas where the independent, prior-corrected maps put them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bsrlc.data.legend import Legend
from bsrlc.errors import ConfigError, InputError
from bsrlc.inference.dense import class_map_output
from bsrlc.inference.jobs import RasterJob, run_local, source_fingerprint
from bsrlc.raster import block_windows, open_raster, raster_info


def transition_matrix(
    names: Sequence[str],
    stay: float = 0.9,
    transitions: Mapping[str, Mapping[str, float]] | None = None,
    priors: Sequence[float] | None = None,
) -> np.ndarray:
    """A row-stochastic class transition matrix into a period.

    A "sticky" chain: a pixel keeps its class with probability ``stay``, otherwise its class
    is drawn afresh from the period's class priors, so ``stay=0`` makes the periods independent
    (the smoothed maps are the independent ones) and the chain keeps each period's class shares.

    Args:
        names: class names, in legend order.
        stay: probability that a class stays the same from one period to the next.
        transitions: explicit probabilities ``{from: {to: p}}`` that replace those cells (each
            row is then renormalised), e.g. a small probability for
            ``residential buildings -> non built-up``.
        priors: (K,) class priors of the period the chain moves into (None: uniform).

    Returns:
        (K, K) matrix, rows summing to 1.

    Raises:
        ConfigError: for a probability outside [0, 1] or an unknown class name.
    """
    k = len(names)
    if not 0.0 <= stay <= 1.0:
        raise ConfigError(f"temporal.stay={stay}: give a probability in [0, 1]")
    pi = np.full(k, 1.0 / k) if priors is None else np.asarray(priors, np.float64)
    a = stay * np.eye(k) + (1.0 - stay) * (pi / pi.sum())[None, :]
    for src, row in (transitions or {}).items():
        for dst, p in row.items():
            for name in (src, dst):
                if name not in names:
                    raise ConfigError(
                        f"temporal.transitions: unknown class {name!r}; the legend has "
                        f"{list(names)}"
                    )
            if not 0.0 <= float(p) <= 1.0:
                raise ConfigError(f"temporal.transitions.{src}.{dst}={p}: give a probability")
            a[names.index(src), names.index(dst)] = float(p)
    rows = a.sum(1, keepdims=True)
    if (rows <= 0).any():
        raise ConfigError("temporal.transitions: a class has no allowed transition; fix its row")
    return a / rows


def viterbi(
    log_evidence: np.ndarray, log_transition: np.ndarray, log_initial: np.ndarray
) -> np.ndarray:
    """Most probable class sequence of every pixel (vectorised over pixels).

    Args:
        log_evidence: (T, K, N) log-likelihood of each class at each period and pixel.
        log_transition: (K, K) log transition probabilities (from row to column), or
            (T - 1, K, K): one matrix into each period after the first.
        log_initial: (K,) log prior of the first period's class.

    Returns:
        (T, N) class indices.
    """
    t_len, k, n = log_evidence.shape
    log_a = np.broadcast_to(log_transition, (max(t_len - 1, 1), k, k))
    back = np.empty((t_len, k, n), np.uint8 if k < 256 else np.int32)
    delta = log_initial[:, None] + log_evidence[0]  # (K, N)
    for t in range(1, t_len):
        scores = delta[:, None, :] + log_a[t - 1][:, :, None]  # (K from, K to, N)
        back[t] = scores.argmax(0)
        delta = np.take_along_axis(scores, back[t][None].astype(np.intp), 0)[0] + log_evidence[t]
    path = np.empty((t_len, n), np.intp)
    path[-1] = delta.argmax(0)
    for t in range(t_len - 1, 0, -1):
        path[t - 1] = np.take_along_axis(back[t], path[t][None], 0)[0]
    return path


def smooth_probabilities(
    proba: np.ndarray,
    names: Sequence[str],
    stay: float = 0.9,
    transitions: Mapping[str, Mapping[str, float]] | None = None,
    priors: Sequence[Sequence[float]] | None = None,
    evidence_weight: float = 1.0,
    eps: float = 1e-4,
) -> np.ndarray:
    """Class indices per period from per-period posteriors, made consistent by :func:`viterbi`.

    Args:
        proba: (T, K, ...) posteriors of each period (rows over K sum to 1).
        names: class names (for ``transitions``).
        stay: see :func:`transition_matrix`.
        transitions: see :func:`transition_matrix`.
        priors: (T, K) priors each period's posteriors were computed under (None: uniform);
            the first period's are also the initial distribution.
        evidence_weight: exponent of the per-period likelihoods (1: independent evidence;
            smaller: errors correlated over periods count less).
        eps: floor of the probabilities (a probability of 0 would forbid a class outright).

    Returns:
        (T, ...) class indices.
    """
    t_len, k = proba.shape[:2]
    spatial = proba.shape[2:]
    p = np.maximum(proba.reshape(t_len, k, -1).astype(np.float64), eps)
    pi = (
        np.full((t_len, k), 1.0 / k)
        if priors is None
        else np.maximum(np.asarray(priors, np.float64), eps)
    )
    pi = pi / pi.sum(1, keepdims=True)
    if not 0.0 < evidence_weight <= 1.0:
        raise ConfigError(f"temporal.evidence_weight={evidence_weight}: give a value in (0, 1]")
    log_ev = evidence_weight * (np.log(p) - np.log(pi)[:, :, None])
    log_a = np.log(
        np.maximum(
            np.stack([transition_matrix(names, stay, transitions, pi[t]) for t in range(1, t_len)]),
            1e-12,
        )
    )
    path = viterbi(log_ev, log_a, np.log(pi[0]))
    return path.reshape(t_len, *spatial)


def _tagged_priors(path: Path, k: int) -> list[float]:
    """The priors a probability raster's posteriors are under (its PRIORS tag), else uniform."""
    with open_raster(path) as src:
        tag = src.tags().get("PRIORS")
    priors = json.loads(tag) if tag else [1.0 / k] * k
    if len(priors) != k:
        raise InputError(f"{path}: PRIORS tag has {len(priors)} values for {k} classes; rewrite it")
    return [float(v) for v in priors]


class TemporalJob(RasterJob):
    """Class maps of several periods made consistent, from their probability rasters.

    Reads the periods' ``*_proba.tif`` (written by
    :class:`~bsrlc.inference.dense.ClassifyJob` with ``probabilities=True``) window by window,
    runs :func:`smooth_probabilities` per pixel and writes one class map per period.

    Args:
        proba_paths: the periods' probability rasters, in time order (one grid).
        dst_paths: the class maps to write, one per period.
        legend: the classes, in the probability rasters' band order.
        stay: see :func:`transition_matrix`.
        transitions: see :func:`transition_matrix`.
        priors: (T, K) priors each period's probabilities were computed under (None: the
            ``PRIORS`` tag of each probability raster, written by the prior correction, else
            uniform).
        tile: unit edge in pixels.
        evidence_weight: see :func:`smooth_probabilities`.
    """

    def __init__(
        self,
        proba_paths: Sequence[Path],
        dst_paths: Sequence[Path],
        legend: Legend,
        stay: float = 0.9,
        transitions: Mapping[str, Mapping[str, float]] | None = None,
        priors: Sequence[Sequence[float]] | None = None,
        tile: int = 512,
        evidence_weight: float = 1.0,
    ) -> None:
        if len(proba_paths) != len(dst_paths) or len(proba_paths) < 2:
            raise ConfigError("temporal smoothing needs two or more periods, one output each")
        self.proba_paths = [Path(p) for p in proba_paths]
        infos = [raster_info(p) for p in self.proba_paths]
        first = infos[0]
        for info in infos[1:]:
            if (info.width, info.height, info.transform) != (
                first.width,
                first.height,
                first.transform,
            ):
                raise InputError(
                    f"{info.path}: not on the grid of {first.path}; temporal smoothing needs "
                    "every period on one grid (warp the inputs onto one grid first)"
                )
        self.k = first.count - 1  # the last band is the confidence
        self.stay = float(stay)
        self.evidence_weight = float(evidence_weight)
        self.transitions = {k: dict(v) for k, v in (transitions or {}).items()}
        transition_matrix(legend.names, self.stay, self.transitions)  # check early
        if priors is None:
            priors = [_tagged_priors(p, self.k) for p in self.proba_paths]
        self.priors = np.asarray(priors, np.float64).tolist()
        self.legend = legend
        if len(legend) != self.k:
            raise InputError(
                f"{first.path}: {self.k} class probabilities for a legend of {len(legend)} "
                "classes; the probability rasters come from another model"
            )
        self.tile = int(tile)
        self.units = block_windows(first.width, first.height, self.tile)
        grid = {
            "crs": first.crs,
            "transform": first.transform,
            "width": first.width,
            "height": first.height,
        }
        self.outputs = [class_map_output(Path(d), legend, grid) for d in dst_paths]
        self._src: list[Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_src": None}

    def fingerprint(self) -> dict[str, Any]:
        """The probability rasters, the transition matrix and the priors."""
        return {
            "task": "temporal",
            "sources": [source_fingerprint(p) for p in self.proba_paths],
            "stay": self.stay,
            "evidence_weight": self.evidence_weight,
            "transitions": self.transitions,
            "priors": self.priors,
            "tile": self.tile,
        }

    def compute(self, index: int, net: torch.nn.Module, device: torch.device) -> list[np.ndarray]:
        """Smooth one window of every period.

        Args:
            index: the unit.
            net: unused (the job needs no network).
            device: unused.

        Returns:
            One (1, h, w) uint8 class map per period.
        """
        if self._src is None:
            self._src = [open_raster(p) for p in self.proba_paths]
        window = self.units[index]
        scaled = np.stack([s.read(list(range(1, self.k + 1)), window=window) for s in self._src])
        valid = (scaled != 255).all(1)  # (T, h, w)
        proba = scaled.astype(np.float64) / 254.0
        proba /= np.maximum(proba.sum(1, keepdims=True), 1e-9)
        idx = smooth_probabilities(
            proba,
            self.legend.names,
            self.stay,
            self.transitions,
            self.priors,
            self.evidence_weight,
        )
        codes = self.legend.code_of(idx).astype(np.uint8)
        codes[~valid] = 0
        return [c[None] for c in codes]


def smooth_maps(
    proba_paths: Sequence[Path],
    dst_paths: Sequence[Path],
    legend: Legend,
    stay: float = 0.9,
    transitions: Mapping[str, Mapping[str, float]] | None = None,
    tile: int = 512,
    overwrite: bool = False,
    evidence_weight: float = 1.0,
) -> list[Path]:
    """Write consistent class maps of several periods from their probability rasters.

    Args:
        proba_paths: the periods' ``*_proba.tif``, in time order.
        dst_paths: the class maps to write.
        legend: the classes.
        stay: see :func:`transition_matrix`.
        transitions: see :func:`transition_matrix`.
        tile: unit edge in pixels.
        overwrite: recompute finished units.
        evidence_weight: see :func:`smooth_probabilities`.

    Returns:
        The written maps.
    """
    job = TemporalJob(
        proba_paths,
        dst_paths,
        legend,
        stay,
        transitions,
        tile=tile,
        evidence_weight=evidence_weight,
    )
    return run_local(job, torch.nn.Identity(), "cpu", overwrite=overwrite, progress=False)


def select_parameters(
    proba: np.ndarray,
    period: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    priors: Sequence[Sequence[float]] | None = None,
    flicker_sample: np.ndarray | None = None,
    stays: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9),
    weights: Sequence[float] = (0.5, 0.7, 1.0),
    point_weights: np.ndarray | None = None,
    area_tolerance: float = 0.15,
) -> dict[str, Any]:
    """Choose ``stay`` and ``evidence_weight`` on labelled validation points.

    Every candidate is scored by its accuracy at the points (each point labelled in one period,
    the smoothing run over the whole series of its pixel) and by how much it moves the class
    areas: the largest ``|log(share / independent share)|`` over periods and classes on
    ``flicker_sample``. Smoothing is meant to remove flicker, not to move areas: the
    independent, prior-corrected maps are the calibrated area estimates, and a candidate that
    shifts a class's share in some period by more than ``area_tolerance`` is erasing real
    change (a one-period construction site) or pooling the same pixel's correlated errors over
    periods (gardens mapped as houses in every period); it is left out. Among the remaining
    candidates within one standard error of the most accurate (the one-standard-error rule),
    the one with the least flicker wins: as smooth as the validation data allow. The
    independent maps (``stay`` 0, weight 1) always qualify.

    Args:
        proba: (T, K, N) posteriors of every period at the N validation pixels.
        period: (N,) the period index each point is labelled in.
        labels: (N,) its class index.
        names: class names.
        priors: (T, K) priors of each period's posteriors (None: uniform).
        flicker_sample: (T, K, M) posteriors at unlabelled pixels (None: the validation pixels).
        stays: candidate staying probabilities.
        weights: candidate evidence weights.
        point_weights: (N,) weight of each point in the accuracy (None: equal). Balanced
            points over-represent rare classes; weighting each point by its class's area share
            over its class's point count makes the score an accuracy by area, which is what
            the maps are judged by.
        area_tolerance: the largest allowed change of a class's log share in any period.

    Returns:
        ``{"stay", "evidence_weight", "candidates": [{stay, evidence_weight, accuracy, se,
        flicker, area_change}]}``.

    Raises:
        ConfigError: for a negative ``area_tolerance``.
    """
    from bsrlc.evaluation.maps import flicker

    if area_tolerance < 0:
        raise ConfigError(f"temporal.area_tolerance={area_tolerance}: give a value >= 0")
    n = labels.size
    sample = proba if flicker_sample is None else flicker_sample
    k, m = sample.shape[1], sample.shape[2]
    wp = np.ones(n) if point_weights is None else np.asarray(point_weights, np.float64)
    wp = wp / wp.sum()

    def log_shares(idx: np.ndarray) -> np.ndarray:  # (T, M) -> (T, K), one pixel's share floor
        counts = np.stack([np.bincount(row, minlength=k) for row in idx])
        return np.log((counts + 1.0) / (m + k))

    independent = log_shares(sample.argmax(1))
    candidates = {(float(s), float(w)) for s in stays for w in weights} | {(0.0, 1.0)}
    rows = []
    for stay, w in sorted(candidates):
        idx = smooth_probabilities(proba, names, stay, None, priors, w)
        hit = (idx[period, np.arange(n)] == labels).astype(np.float64)
        acc = float((wp * hit).sum())
        flips = smooth_probabilities(sample, names, stay, None, priors, w)
        rows.append(
            {
                "stay": stay,
                "evidence_weight": w,
                "accuracy": acc,
                "se": float(np.sqrt((wp**2 * (hit - acc) ** 2).sum())),
                "flicker": flicker(list(flips + 1)),  # indices -> codes (0 = nodata)
                "area_change": float(np.abs(log_shares(flips) - independent).max()),
            }
        )
    kept = [r for r in rows if r["area_change"] <= area_tolerance]
    best = max(kept, key=lambda r: r["accuracy"])
    ok = [r for r in kept if r["accuracy"] >= best["accuracy"] - best["se"]]
    pick = min(ok, key=lambda r: (r["flicker"], -r["accuracy"]))
    return {"stay": pick["stay"], "evidence_weight": pick["evidence_weight"], "candidates": rows}
