"""The HMM / Viterbi pass over periods removes flicker and keeps supported change."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bsrlc.errors import ConfigError
from bsrlc.inference.temporal import smooth_probabilities, transition_matrix, viterbi


def _brute_force(log_ev, log_a, log_pi):
    t_len, k = log_ev.shape
    best, arg = -np.inf, None
    for seq in itertools.product(range(k), repeat=t_len):
        s = log_pi[seq[0]] + log_ev[0, seq[0]]
        s += sum(log_a[seq[t - 1], seq[t]] + log_ev[t, seq[t]] for t in range(1, t_len))
        if s > best:
            best, arg = s, seq
    return np.array(arg)


def test_viterbi_equals_exhaustive_search():
    rng = np.random.default_rng(0)
    t_len, k, n = 4, 3, 200
    log_ev = np.log(rng.dirichlet(np.ones(k), size=(t_len, n))).transpose(0, 2, 1)
    a = rng.dirichlet(np.ones(k) * 2, size=k)
    pi = rng.dirichlet(np.ones(k))
    path = viterbi(log_ev, np.log(a), np.log(pi))
    for i in range(n):
        np.testing.assert_array_equal(
            path[:, i], _brute_force(log_ev[:, :, i], np.log(a), np.log(pi))
        )


def test_smoothing_removes_a_weak_flip_and_keeps_strong_change():
    # pixel 0: class 0, a weak flip to 1 in period 2, back to 0: flicker
    # pixel 1: class 0, then confidently class 1 from period 2 on: real change
    proba = np.array(
        [
            [[0.9, 0.1], [0.98, 0.02]],
            [[0.45, 0.55], [0.05, 0.95]],
            [[0.9, 0.1], [0.05, 0.95]],
            [[0.9, 0.1], [0.05, 0.95]],
        ]
    ).transpose(0, 2, 1)  # (T, K, N)
    independent = proba.argmax(1)
    assert independent[:, 0].tolist() == [0, 1, 0, 0]
    smoothed = smooth_probabilities(proba, ["a", "b"], stay=0.8)
    assert smoothed[:, 0].tolist() == [0, 0, 0, 0]
    assert smoothed[:, 1].tolist() == [0, 1, 1, 1]
    # independent periods (stay=0): the independent maps come back, whatever the priors
    priors = [[0.7, 0.3], [0.6, 0.4], [0.5, 0.5], [0.5, 0.5]]
    free = smooth_probabilities(proba, ["a", "b"], stay=0.0, priors=priors)
    np.testing.assert_array_equal(free, independent)


def test_transition_matrix_overrides_and_errors():
    names = ["built", "open", "green"]
    # sticky chain: stay, else redraw from the period's priors
    a = transition_matrix(names, 0.8, priors=[0.1, 0.2, 0.7])
    np.testing.assert_allclose(a[0], [0.8 + 0.02, 0.04, 0.14])
    np.testing.assert_allclose([0.1, 0.2, 0.7] @ a, [0.1, 0.2, 0.7])  # keeps the shares
    a = transition_matrix(names, 0.8, {"built": {"green": 0.0}})
    np.testing.assert_allclose(a.sum(1), 1.0)
    assert a[0, 2] == 0.0 and a[0, 0] > 0.8
    with pytest.raises(ConfigError, match="unknown class 'water'"):
        transition_matrix(names, 0.8, {"water": {"built": 0.1}})
    with pytest.raises(ConfigError, match="stay"):
        transition_matrix(names, 1.5)


def _noisy_series(rng, truth, k=3, strength=1.2):
    """(T, K, N) posteriors of noisy, independent evidence for class sequences truth (T, N)."""
    logits = rng.normal(0, 1, size=(*truth.shape, k))
    logits[np.arange(truth.shape[0])[:, None], np.arange(truth.shape[1])[None], truth] += strength
    p = np.exp(logits)
    return (p / p.sum(-1, keepdims=True)).transpose(0, 2, 1)


def test_parameters_chosen_on_validation_points_follow_the_data():
    from bsrlc.inference.temporal import select_parameters

    rng = np.random.default_rng(5)
    names = ["a", "b", "c"]
    t_len, n = 4, 3000
    period = rng.integers(0, t_len, n)
    # stable land: smoothing helps, a sticky chain is chosen and accuracy rises
    stable = np.repeat(rng.integers(0, 3, n)[None], t_len, 0)
    proba = _noisy_series(rng, stable)
    out = select_parameters(proba, period, stable[period, np.arange(n)], names)
    assert out["stay"] >= 0.5
    by = {(c["stay"], c["evidence_weight"]): c for c in out["candidates"]}
    chosen = by[(out["stay"], out["evidence_weight"])]
    assert chosen["accuracy"] > by[(0.0, 1.0)]["accuracy"] + 0.05
    assert chosen["flicker"] < by[(0.0, 1.0)]["flicker"]
    # land that changes every period at random: smoothing costs accuracy and is not chosen
    chaotic = rng.integers(0, 3, (t_len, n))
    proba = _noisy_series(rng, chaotic)
    out = select_parameters(proba, period, chaotic[period, np.arange(n)], names)
    by = {(c["stay"], c["evidence_weight"]): c for c in out["candidates"]}
    assert by[(out["stay"], out["evidence_weight"])]["accuracy"] >= by[(0.9, 1.0)]["accuracy"]
    assert out["stay"] <= 0.5


def test_settings_that_move_class_areas_are_not_chosen():
    """Stable validation points favour a sticky chain; the maps also hold a one-period state
    (a construction site on 40 % of the pixels) that a sticky chain erases: the area check
    keeps the chosen setting from erasing it."""
    from bsrlc.inference.temporal import select_parameters

    rng = np.random.default_rng(7)
    names = ["a", "b", "c"]
    t_len, n, m = 4, 3000, 4000
    period = rng.integers(0, t_len, n)
    stable = np.repeat(rng.integers(0, 3, n)[None], t_len, 0)
    proba = _noisy_series(rng, stable)
    series = np.repeat(rng.choice([0, 2], m)[None], t_len, 0)
    series[2, : int(0.4 * m)] = 1  # one period of "b" on 40 % of the pixels
    sample = _noisy_series(rng, series, strength=1.5)
    labels = stable[period, np.arange(n)]

    free = select_parameters(
        proba, period, labels, names, flicker_sample=sample, area_tolerance=np.inf
    )
    checked = select_parameters(proba, period, labels, names, flicker_sample=sample)
    by = {(c["stay"], c["evidence_weight"]): c for c in checked["candidates"]}
    assert by[(free["stay"], free["evidence_weight"])]["area_change"] > 0.15  # erases "b"
    chosen = by[(checked["stay"], checked["evidence_weight"])]
    assert chosen["area_change"] <= 0.15
    assert abs(by[(0.0, 1.0)]["area_change"]) < 1e-6  # the independent maps always qualify
    # no tolerance at all: only settings that leave every period's shares as they are
    exact = select_parameters(
        proba, period, labels, names, flicker_sample=sample, area_tolerance=0.0
    )
    assert exact["stay"] == 0.0 or by[(exact["stay"], exact["evidence_weight"])]["area_change"] == 0
    with pytest.raises(ConfigError, match="area_tolerance"):
        select_parameters(proba, period, labels, names, area_tolerance=-1)
