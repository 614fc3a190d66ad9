"""EM prior correction recovers the priors of a shifted population."""

from __future__ import annotations

import numpy as np

from bsrlc.inference.priors import em_priors, reweight


def _population(rng, priors, n):
    """Samples from 1-D Gaussian classes and their exact posteriors under uniform priors."""
    means = np.array([0.0, 1.5, 3.0])
    y = rng.choice(3, size=n, p=priors)
    x = rng.normal(means[y], 1.0)
    lik = np.exp(-0.5 * (x[:, None] - means) ** 2)
    return y, lik / lik.sum(1, keepdims=True)


def test_em_recovers_shifted_priors_and_improves_accuracy():
    rng = np.random.default_rng(0)
    true = np.array([0.8, 0.15, 0.05])
    y, proba = _population(rng, true, 40_000)
    est = em_priors(proba, [1 / 3] * 3)
    assert np.abs(est - true).max() < 0.02
    naive = proba.argmax(1)
    fixed = reweight(proba, [1 / 3] * 3, est).argmax(1)
    assert (fixed == y).mean() > (naive == y).mean() + 0.05
    # the uncorrected map over-maps the rare class; the corrected one is near its true share
    assert (naive == 2).mean() > 1.5 * true[2]
    assert abs((fixed == 2).mean() - true[2]) < abs((naive == 2).mean() - true[2])


def test_em_keeps_the_training_priors_when_nothing_shifted():
    rng = np.random.default_rng(1)
    _, proba = _population(rng, [1 / 3] * 3, 30_000)
    assert np.abs(em_priors(proba, [1 / 3] * 3) - 1 / 3).max() < 0.02
