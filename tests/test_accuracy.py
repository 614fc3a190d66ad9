"""Area-adjusted accuracy (Olofsson et al. 2014 worked example) and classification metrics."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from affine import Affine
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_cohen_kappa,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from bsrlc.data.legend import Legend
from bsrlc.errors import InputError
from bsrlc.evaluation.accuracy import (
    area_adjusted_accuracy,
    assess_map,
    classification_metrics,
    confusion_matrix,
    count_classes,
)
from bsrlc.raster import write_cog

# Olofsson et al. (2014), section 5 (Tables 8-9): map rows, reference columns.
NAMES = ["deforestation", "forest gain", "stable forest", "stable non-forest"]
COUNTS = [[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]]
MAPPED = [200_000, 150_000, 3_200_000, 6_450_000]


@pytest.fixture(scope="module")
def paper():
    return area_adjusted_accuracy(COUNTS, MAPPED, pixel_area=0.09, class_names=NAMES)


def test_olofsson_worked_example(paper) -> None:
    assert paper.overall == pytest.approx(0.9465, abs=5e-4)
    assert paper.users[0] == pytest.approx(0.88, abs=1e-9)
    assert paper.producers[0] == pytest.approx(0.749, abs=1e-3)
    assert paper.area[0] == pytest.approx(21_158, abs=5)  # ha
    assert paper.area_ci[0] == pytest.approx(6_158, abs=5)  # 95% half-width, ha
    assert paper.mapped_area[0] == pytest.approx(18_000)
    # the rest of the paper's table: areas and CIs of the other classes
    np.testing.assert_allclose(paper.area[1:], [11_686, 285_770, 581_386], atol=5)
    np.testing.assert_allclose(paper.area_ci[1:], [3_756, 15_510, 16_282], atol=5)
    # and its accuracies with 95% CIs (two decimals in the paper)
    np.testing.assert_allclose(paper.users, [0.88, 0.73, 0.93, 0.96], atol=5e-3)
    np.testing.assert_allclose(paper.users_ci, [0.07, 0.10, 0.04, 0.02], atol=5e-3)
    np.testing.assert_allclose(paper.producers, [0.75, 0.85, 0.93, 0.96], atol=6e-3)
    np.testing.assert_allclose(paper.producers_ci, [0.21, 0.25, 0.03, 0.02], atol=6e-3)
    assert paper.overall_ci == pytest.approx(0.02, abs=5e-3)
    # estimated proportions sum to 1 and the areas to the mapped total
    assert paper.proportions.sum() == pytest.approx(1.0)
    assert paper.area.sum() == pytest.approx(paper.mapped_area.sum())
    assert paper.total_area == pytest.approx(900_000)


def test_report_outputs(paper) -> None:
    md = paper.to_markdown("ha")
    assert "| deforestation | 0.880 ± 0.074 | 0.749 ± 0.213 | 18,000.0 | 21,157.8 ± 6,157.6 |" in md
    assert "0.0176" in md and "Overall accuracy 0.947 ± 0.018" in md
    d = json.loads(json.dumps(paper.to_dict()))
    assert d["classes"]["deforestation"]["area"] == pytest.approx(21_157.76, abs=0.01)
    assert d["n_samples"] == 640


def test_degenerate_strata() -> None:
    # a stratum with one sample: estimates, but no standard error
    one = area_adjusted_accuracy([[1, 0], [2, 8]], [10, 90], 1.0)
    assert one.users[0] == 1.0 and np.isnan(one.users_se[0])
    # a mapped class without any sample has no unbiased estimate
    with pytest.raises(ValueError, match="no reference sample"):
        area_adjusted_accuracy([[0, 0], [2, 8]], [10, 90], 1.0, ["a", "b"])
    # an unmapped, unsampled class is fine (NaN accuracies, zero area)
    empty = area_adjusted_accuracy([[5, 1, 0], [2, 8, 0], [0, 0, 0]], [10, 90, 0], 1.0)
    assert np.isnan(empty.users[2]) and empty.area[2] == 0
    with pytest.raises(ValueError, match="do not match"):
        area_adjusted_accuracy([[1, 2]], [1, 2], 1.0)


def test_classification_metrics_by_hand() -> None:
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    m = classification_metrics(y_true, y_pred, 4)  # class 3 occurs nowhere
    assert m["oa"] == pytest.approx(4 / 6)
    np.testing.assert_allclose(m["precision"], [1 / 2, 2 / 3, 1, 0])
    np.testing.assert_allclose(m["recall"], [1 / 2, 1, 1 / 2, 0])
    np.testing.assert_allclose(m["f1"], [1 / 2, 4 / 5, 2 / 3, 0])
    assert m["macro_f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    # kappa: p_o = 2/3, p_e = (2*2 + 2*3 + 2*1) / 36 = 1/3 -> 0.5
    assert m["kappa"] == pytest.approx(0.5)
    assert m["support"] == [2, 2, 2, 0]
    assert m["confusion"] == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    # the same as torchmetrics (what training logs)
    t, p = torch.from_numpy(y_true), torch.from_numpy(y_pred)
    assert m["macro_f1"] == pytest.approx(float(multiclass_f1_score(p, t, 4, average="macro")))
    assert m["oa"] == pytest.approx(float(multiclass_accuracy(p, t, 4, average="micro")))
    assert m["kappa"] == pytest.approx(float(multiclass_cohen_kappa(p, t, 4)))
    np.testing.assert_allclose(m["precision"], multiclass_precision(p, t, 4, average="none"))
    np.testing.assert_allclose(m["recall"], multiclass_recall(p, t, 4, average="none"))
    with pytest.raises(ValueError, match="indices"):
        confusion_matrix(np.array([0, 4]), np.array([0, 1]), 4)


def _toy_map() -> tuple[np.ndarray, Affine, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """A 40x50 urban map at 10 m: 1 in the top left block, 2 top right, 4 below, nodata strip."""
    m = np.full((40, 50), 4, np.uint8)
    m[:20, :25] = 1
    m[:20, 25:] = 2
    m[:, -2:] = 0  # nodata
    t = Affine(10, 0, 4_000_000, 0, -10, 3_000_000)
    rows = np.array([1, 5, 10, 3, 8, 30, 35, 25, 0, 39, 5, 50])  # last: outside the map
    cols = np.array([1, 5, 10, 30, 40, 5, 45, 20, 27, 0, 49, 3])  # (5, 49): nodata
    ref = np.array([1, 1, 4, 2, 2, 4, 4, 3, 1, 4, 2, 4])
    xs, ys = t * (cols + 0.5, rows + 0.5)
    return m, t, (np.asarray(xs), np.asarray(ys), ref)


def test_assess_map_array_and_file(tmp_path, caplog) -> None:
    legend = Legend.from_config("urban")
    m, t, points = _toy_map()
    assert count_classes(m, legend).tolist() == [500, 460, 0, 960]
    with caplog.at_level(logging.WARNING):
        res = assess_map(m, points, legend, transform=t)
    assert "1 points outside the map and 1 on nodata" in caplog.text
    # map rows: 1 -> refs (1, 1, 4), 2 -> (2, 2, 1), 4 -> (4, 4, 3, 4)
    expected = np.zeros((4, 4), int)
    for mi, ri in ((0, 0), (0, 0), (0, 3), (1, 1), (1, 1), (1, 0), (3, 3), (3, 3), (3, 2), (3, 3)):
        expected[mi, ri] += 1
    np.testing.assert_array_equal(res.counts, expected)
    np.testing.assert_allclose(res.mapped_area, np.array([500, 460, 0, 960]) * 0.01)  # ha
    assert res.area_unit == "ha" and res.pixel_area == pytest.approx(0.01)
    path = tmp_path / "map.tif"
    write_cog(path, m, crs="EPSG:3035", transform=t, nodata=0, colormap=legend.colormap())
    from_file = assess_map(path, points, legend)
    np.testing.assert_array_equal(from_file.counts, res.counts)
    assert from_file.overall == pytest.approx(res.overall)


def test_assess_map_errors() -> None:
    legend = Legend.from_config("urban")
    m, t, (xs, ys, ref) = _toy_map()
    with pytest.raises(InputError, match=r"unknown class code\(s\) 9"):
        assess_map(m, (xs, ys, np.where(ref == 3, 9, ref)), legend, transform=t, source="p.gpkg")
    with pytest.raises(InputError, match="none of"):
        assess_map(m, (xs + 1e6, ys, ref), legend, transform=t)
    bad = m.copy()
    bad[0, 0] = 7
    with pytest.raises(InputError, match=r"map codes \[7\]"):
        assess_map(bad, (xs, ys, ref), legend, transform=t)
    keep = ref != 2  # no point left on map class 2
    with pytest.raises(InputError, match="industrial buildings"):
        assess_map(m, (xs[keep][:3], ys[keep][:3], ref[keep][:3]), legend, transform=t)
