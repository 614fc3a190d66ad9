"""EM prior correction recovers the priors of a shifted population."""

from __future__ import annotations

import numpy as np

from bsrlc.inference.priors import area_matching_offset, em_priors, prior_offset, reweight


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


def test_prior_offset_equals_reweighting():
    rng = np.random.default_rng(2)
    _, proba = _population(rng, [1 / 3] * 3, 1000)
    train, target = [0.5, 0.3, 0.2], [0.1, 0.3, 0.6]
    z = np.log(proba) + prior_offset(train, target)
    shifted = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    np.testing.assert_allclose(shifted, reweight(proba, train, target), atol=1e-12)


def test_area_matching_maps_each_class_on_its_share():
    rng = np.random.default_rng(3)
    true = np.array([0.8, 0.15, 0.05])
    y, proba = _population(rng, true, 40_000)
    z = np.log(proba) + prior_offset([1 / 3] * 3, true)
    bayes = np.bincount(z.argmax(1), minlength=3) / len(y)
    # the Bayes decision under-maps the confusable rare class...
    assert bayes[2] < 0.8 * true[2]
    offset = area_matching_offset(z, true)
    shares = np.bincount((z + offset).argmax(1), minlength=3) / len(y)
    # ...the area-matched decision maps every class on its share
    np.testing.assert_allclose(shares, true, atol=0.005)


def test_temperature_fit_calibrates_overconfident_logits():
    import torch

    from bsrlc.tasks.classify import fit_temperature

    rng = np.random.default_rng(4)
    y, proba = _population(rng, [1 / 3] * 3, 20_000)
    logits = torch.from_numpy(np.log(proba) * 3.0)  # calibrated logits made 3x overconfident
    t = fit_temperature(logits, torch.from_numpy(y))
    assert abs(t - 3.0) < 0.15
    assert fit_temperature(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)) == 1.0
