"""Map accuracy the way map producers publish it.

Overall, user's and producer's accuracy and class areas estimated from a stratified random
sample with the map classes as strata, with standard errors and 95% confidence intervals
(Olofsson et al. 2014, "Good practices for estimating area and assessing accuracy of land
change", Remote Sensing of Environment 148, 42-57: equations 2-11). Pixel counting of a map is
biased by its errors; these estimators are not. Also the sample-based metrics every ML report
shows (OA, macro F1, kappa, per-class precision/recall/F1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

Z95 = 1.96


@dataclass
class AreaAccuracy:
    """Stratified estimates of accuracy and area.

    Attributes:
        class_names: class names, in matrix order.
        counts: (k, k) sample counts, map class rows, reference class columns.
        proportions: (k, k) estimated area proportions p_ij.
        overall: overall accuracy.
        overall_se: its standard error.
        users: user's accuracy per map class.
        users_se: standard errors.
        producers: producer's accuracy per reference class.
        producers_se: standard errors.
        area: estimated area per class (units of ``pixel_area``).
        area_se: standard errors of the areas.
        mapped_area: the map's (pixel-counting) area per class.
    """

    class_names: list[str]
    counts: np.ndarray
    proportions: np.ndarray
    overall: float
    overall_se: float
    users: np.ndarray
    users_se: np.ndarray
    producers: np.ndarray
    producers_se: np.ndarray
    area: np.ndarray
    area_se: np.ndarray
    mapped_area: np.ndarray
    extras: dict[str, float] = field(default_factory=dict)

    @property
    def area_ci(self) -> np.ndarray:
        """95% confidence half-widths of the areas."""
        return Z95 * self.area_se

    def to_dict(self) -> dict[str, object]:
        """Plain data for JSON reports.

        Returns:
            Nested dict of floats and lists.
        """
        return {
            "overall_accuracy": self.overall,
            "overall_accuracy_ci95": Z95 * self.overall_se,
            "classes": {
                name: {
                    "users_accuracy": float(self.users[i]),
                    "users_accuracy_ci95": float(Z95 * self.users_se[i]),
                    "producers_accuracy": float(self.producers[i]),
                    "producers_accuracy_ci95": float(Z95 * self.producers_se[i]),
                    "area": float(self.area[i]),
                    "area_ci95": float(self.area_ci[i]),
                    "mapped_area": float(self.mapped_area[i]),
                }
                for i, name in enumerate(self.class_names)
            },
        }

    def to_markdown(self, area_unit: str = "ha") -> str:
        """A report table: accuracies and areas with 95% CIs.

        Args:
            area_unit: the unit of the areas.

        Returns:
            Markdown text.
        """
        lines = [
            f"Overall accuracy {self.overall:.3f} ± {Z95 * self.overall_se:.3f} (95% CI)",
            "",
            f"| class | user's acc. | producer's acc. | mapped area ({area_unit}) "
            f"| estimated area ({area_unit}) |",
            "|---|---|---|---|---|",
        ]
        for i, name in enumerate(self.class_names):
            lines.append(
                f"| {name} | {self.users[i]:.3f} ± {Z95 * self.users_se[i]:.3f} "
                f"| {self.producers[i]:.3f} ± {Z95 * self.producers_se[i]:.3f} "
                f"| {self.mapped_area[i]:,.1f} | {self.area[i]:,.1f} ± {self.area_ci[i]:,.1f} |"
            )
        return "\n".join(lines) + "\n"


def area_adjusted_accuracy(
    confusion: np.ndarray | Sequence[Sequence[int]],
    mapped_pixels: np.ndarray | Sequence[float],
    pixel_area: float = 1.0,
    class_names: Sequence[str] | None = None,
) -> AreaAccuracy:
    """Stratified (map classes as strata) accuracy and area estimates (Olofsson et al. 2014).

    Args:
        confusion: (k, k) sample counts n_ij, map class i (rows), reference class j (columns).
        mapped_pixels: (k,) pixels of each class in the map (the strata sizes N_i).
        pixel_area: area of one pixel (e.g. 0.09 ha for 30 m).
        class_names: names in matrix order.

    Returns:
        The estimates.

    Raises:
        ValueError: for mismatched shapes or a stratum with fewer than 2 samples.
    """
    n = np.asarray(confusion, dtype=np.float64)
    big_n = np.asarray(mapped_pixels, dtype=np.float64)
    k = n.shape[0]
    if n.shape != (k, k) or big_n.shape != (k,):
        raise ValueError(f"confusion {n.shape} and mapped_pixels {big_n.shape} do not match")
    n_i = n.sum(1)
    if (n_i < 2).any():
        raise ValueError("every map class needs at least 2 samples for standard errors")
    w = big_n / big_n.sum()
    frac = n / n_i[:, None]  # n_ij / n_i.
    p = w[:, None] * frac  # eq. 4
    overall = float(np.trace(p))  # eq. 1
    users = np.diag(frac)  # eq. 2
    p_j = p.sum(0)
    producers = np.divide(np.diag(p), p_j, out=np.zeros(k), where=p_j > 0)  # eq. 3
    # eq. 5 (OA), 6 (UA), 7 (PA), 10 (area proportions)
    var_oa = np.sum(w**2 * users * (1 - users) / (n_i - 1))
    var_ua = users * (1 - users) / (n_i - 1)
    strat = frac * (1 - frac) / (n_i - 1)[:, None]  # (n_ij/n_i.)(1 - n_ij/n_i.)/(n_i. - 1)
    var_pj = (w[:, None] ** 2 * strat).sum(0)
    n_dot_j = (big_n[:, None] * frac).sum(0)  # estimated reference totals N.j
    var_pa = np.zeros(k)
    for j in range(k):
        if n_dot_j[j] == 0:
            continue
        others = sum(big_n[i] ** 2 * strat[i, j] for i in range(k) if i != j)
        var_pa[j] = (
            big_n[j] ** 2 * (1 - producers[j]) ** 2 * users[j] * (1 - users[j]) / (n_i[j] - 1)
            + producers[j] ** 2 * others
        ) / n_dot_j[j] ** 2
    total_area = big_n.sum() * pixel_area
    return AreaAccuracy(
        class_names=list(class_names or [str(i) for i in range(k)]),
        counts=n,
        proportions=p,
        overall=overall,
        overall_se=float(np.sqrt(var_oa)),
        users=users,
        users_se=np.sqrt(var_ua),
        producers=producers,
        producers_se=np.sqrt(var_pa),
        area=p_j * total_area,
        area_se=np.sqrt(var_pj) * total_area,
        mapped_area=big_n * pixel_area,
    )


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts with reference classes as rows and predictions as columns.

    Args:
        y_true: reference indices 0..K-1.
        y_pred: predicted indices 0..K-1.
        n_classes: K.

    Returns:
        (K, K) int64 counts.
    """
    idx = np.asarray(y_true, np.int64) * n_classes + np.asarray(y_pred, np.int64)
    return np.bincount(idx, minlength=n_classes**2).reshape(n_classes, n_classes)


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int
) -> dict[str, float | list[float]]:
    """Overall accuracy, macro F1, Cohen's kappa and per-class precision/recall/F1.

    Args:
        y_true: reference indices.
        y_pred: predicted indices.
        n_classes: K.

    Returns:
        ``{"oa", "macro_f1", "kappa", "precision", "recall", "f1"}``.
    """
    cm = confusion_matrix(y_true, y_pred, n_classes).astype(np.float64)
    total = cm.sum()
    tp = np.diag(cm)
    precision = np.divide(tp, cm.sum(0), out=np.zeros(n_classes), where=cm.sum(0) > 0)
    recall = np.divide(tp, cm.sum(1), out=np.zeros(n_classes), where=cm.sum(1) > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(n_classes), where=denom > 0)
    oa = tp.sum() / total if total else 0.0
    expected = (cm.sum(0) * cm.sum(1)).sum() / total**2 if total else 0.0
    kappa = (oa - expected) / (1 - expected) if expected < 1 else 0.0
    return {
        "oa": float(oa),
        "macro_f1": float(f1.mean()),
        "kappa": float(kappa),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
    }
