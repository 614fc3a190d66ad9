"""Wall-to-wall map scores and flicker, checked against counts done by hand."""

from __future__ import annotations

import numpy as np
import pytest

from bsrlc.data.legend import Legend
from bsrlc.evaluation.maps import flicker, wall_to_wall


def test_wall_to_wall_scores_are_area_proportions():
    legend = Legend.from_config("urban")
    res, ind, opn, non = legend.codes
    truth = np.array([[res, res, non, non], [non, non, non, non], [ind, ind, ind, 0]], np.uint8)
    pred = np.array([[res, res, res, res], [non, non, non, opn], [ind, ind, non, ind]], np.uint8)
    out = wall_to_wall(pred, truth, legend)
    # 11 valid pixels (the truth's nodata pixel is left out), 7 right
    assert out["area_oa"] == pytest.approx(7 / 11)
    names = legend.names
    assert out["area_ratio"][names[0]] == pytest.approx(4 / 2)  # 4 mapped, 2 true
    assert out["users_accuracy"][names[0]] == pytest.approx(2 / 4)
    assert out["producers_accuracy"][names[0]] == pytest.approx(1.0)
    assert out["producers_accuracy"][names[1]] == pytest.approx(2 / 3)
    assert out["area_ratio"][names[3]] == pytest.approx(4 / 6)
    assert np.isnan(out["area_ratio"][names[2]])  # mapped but absent from the truth
    assert out["users_accuracy"][names[2]] == 0.0


def test_flicker_counts_a_to_b_to_a_only():
    a = np.array([[1, 1, 1, 1]], np.uint8)
    b = np.array([[2, 1, 2, 1]], np.uint8)
    c = np.array([[1, 1, 2, 0]], np.uint8)
    # pixel 0 flickers (1 -> 2 -> 1), pixel 1 never changes, pixel 2 changes once (1 -> 2),
    # pixel 3 is nodata in the last period
    assert flicker([a, b, c]) == pytest.approx(1 / 3)
    assert flicker([a, b]) == 0.0
