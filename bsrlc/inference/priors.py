"""Class-prior correction of probability maps (Saerens, Latinne & Decaestecker 2002).

A classifier trained on a balanced point sample (or with a class-weighted loss) learns the
priors of that sample, not those of the landscape, so rare classes are over-mapped. Given the
priors the classifier was trained under, the posteriors are re-weighted to other priors:
``p'(c|x) ∝ p(c|x) * prior_new(c) / prior_train(c)``. The new priors are given by the user or
estimated from the map itself by expectation-maximisation: the mean re-weighted posterior over
the map's pixels is the next prior estimate, iterated to a fixed point.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def reweight(
    proba: np.ndarray, train_priors: Sequence[float], priors: Sequence[float]
) -> np.ndarray:
    """Posteriors under other class priors.

    Args:
        proba: (..., K) class probabilities under ``train_priors``.
        train_priors: (K,) priors the classifier was trained under.
        priors: (K,) target priors.

    Returns:
        (..., K) re-weighted probabilities, rows summing to 1.
    """
    w = np.asarray(priors, np.float64) / np.maximum(np.asarray(train_priors, np.float64), 1e-12)
    out = np.asarray(proba, np.float64) * w
    return out / np.maximum(out.sum(-1, keepdims=True), 1e-12)


def em_priors(
    proba: np.ndarray,
    train_priors: Sequence[float],
    max_iter: int = 200,
    tol: float = 1e-6,
) -> np.ndarray:
    """Estimate the class priors of the mapped area from its posteriors (Saerens et al. 2002).

    Args:
        proba: (N, K) class probabilities of the map's pixels (a random subsample suffices).
        train_priors: (K,) priors the classifier was trained under.
        max_iter: iteration limit.
        tol: stop when no prior moves by more than this.

    Returns:
        (K,) estimated priors, summing to 1.

    Raises:
        ValueError: for an empty or misshaped probability array.
    """
    p = np.asarray(proba, np.float64)
    train = np.asarray(train_priors, np.float64)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] != train.size:
        raise ValueError(f"proba must be (N, {train.size}) with N > 0, got {p.shape}")
    train = train / train.sum()
    priors = train.copy()
    for _ in range(max_iter):
        new = reweight(p, train, priors).mean(0)
        done = np.abs(new - priors).max() < tol
        priors = new
        if done:
            break
    return priors


def prior_offset(train_priors: Sequence[float], priors: Sequence[float]) -> np.ndarray:
    """The logit offset that turns posteriors under ``train_priors`` into ones under ``priors``.

    Adding ``log(priors / train_priors)`` to logits is :func:`reweight` before the softmax.

    Args:
        train_priors: (K,) priors the classifier was trained under.
        priors: (K,) target priors.

    Returns:
        (K,) offsets.
    """
    t = np.maximum(np.asarray(train_priors, np.float64), 1e-12)
    p = np.maximum(np.asarray(priors, np.float64), 1e-12)
    return np.log(p / p.sum()) - np.log(t / t.sum())


def area_matching_offset(
    logits: np.ndarray, shares: Sequence[float], max_iter: int = 100, tol: float = 1e-3
) -> np.ndarray:
    """Logit offsets whose arg max maps each class on the given share of the pixels.

    The Bayes decision (arg max of prior-corrected posteriors) maps a confusable rare class on
    less than its area, and a common one on more: it trades area for accuracy. For area
    statistics the map's class shares should equal the estimated ones. With the other classes'
    offsets fixed, class ``c`` wins a pixel when ``z_c + b_c > max_j (z_j + b_j)``, so the
    ``b_c`` that gives it share ``s_c`` is a quantile of ``max_j (z_j + b_j) - z_c``; cycling
    over the classes (Gauss-Seidel) converges in a few rounds.

    Args:
        logits: (N, K) logits of a pixel sample (already prior-corrected, if wanted).
        shares: (K,) target share of each class.
        max_iter: rounds over the classes at most.
        tol: stop when every share is within this of its target.

    Returns:
        (K,) offsets to add to ``logits``.

    Raises:
        ValueError: for misshaped input.
    """
    z = np.asarray(logits, np.float64)
    target = np.asarray(shares, np.float64)
    if z.ndim != 2 or z.shape[1] != target.size or z.shape[0] == 0:
        raise ValueError(f"logits must be (N, {target.size}) with N > 0, got {z.shape}")
    target = target / target.sum()
    k = target.size
    offset = np.zeros(k)
    for _ in range(max_iter):
        for c in range(k):
            others = np.delete(z + offset, c, axis=1).max(1) - z[:, c]
            offset[c] = np.quantile(others, target[c]) if target[c] > 0 else -1e6
        mapped = np.bincount((z + offset).argmax(1), minlength=k) / z.shape[0]
        if np.abs(mapped - target).max() < tol:
            break
    return offset - offset[target > 0].mean()
