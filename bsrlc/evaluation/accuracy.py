"""Map accuracy and class areas the way map producers publish them.

Pixel counting of a classified map is biased by its errors: omission and commission do not
cancel. :func:`area_adjusted_accuracy` implements the stratified estimators of Olofsson et al.
(2014, "Good practices for estimating area and assessing accuracy of land change", Remote
Sensing of Environment 148, 42-57), with the map classes as strata: the error matrix in
estimated area proportions, overall, user's and producer's accuracy, and each class's area, all
with standard errors and 95% confidence intervals (1.96 SE). :func:`assess_map` samples a map at
reference points and counts its pixels per class to feed them. The estimators assume a
stratified random sample by map class (or simple random sampling); for points drawn by another
design they are approximations.

:func:`classification_metrics` gives the sample-based metrics every ML report shows (OA, macro F1,
Cohen's kappa, per-class precision/recall/F1), with scikit-learn's / torchmetrics' definitions.

Conventions: :func:`area_adjusted_accuracy` takes map classes as rows and reference classes as
columns (as in the paper); :func:`confusion_matrix` and the logs of the training task use
reference rows and predicted columns (as scikit-learn).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import torch
from affine import Affine
from rasterio.windows import Window
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCohenKappa,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from bsrlc.data.legend import Legend
from bsrlc.data.points import CLASS, points_to_pixels
from bsrlc.errors import InputError
from bsrlc.raster import block_windows, open_raster

log = logging.getLogger(__name__)

Z95 = 1.96
"""Normal quantile of a two-sided 95% confidence interval."""


@dataclass
class AreaAccuracy:
    """Stratified estimates of accuracy and area (Olofsson et al. 2014).

    Index i runs over map classes (strata), j over reference classes; both in ``class_names``
    order. Undefined values (a class without samples or without estimated area) are NaN.

    Attributes:
        class_names: class names, in matrix order.
        counts: (K, K) sample counts n_ij, map class rows, reference class columns.
        mapped_pixels: (K,) map pixels of each class, N_i.
        pixel_area: area of one pixel, in ``area_unit``.
        area_unit: the unit of areas (e.g. ``"ha"``).
        weights: (K,) map area proportions W_i = N_i / N.
        proportions: (K, K) estimated area proportions p_ij = W_i n_ij / n_i.
        overall: overall accuracy.
        overall_se: its standard error.
        users: (K,) user's accuracy of each map class (1 - commission error).
        users_se: their standard errors.
        producers: (K,) producer's accuracy of each reference class (1 - omission error).
        producers_se: their standard errors.
        area: (K,) estimated area of each class, p_.j * total area.
        area_se: their standard errors.
        mapped_area: (K,) the map's (pixel-counting) area of each class.
    """

    class_names: list[str]
    counts: np.ndarray
    mapped_pixels: np.ndarray
    pixel_area: float
    area_unit: str
    weights: np.ndarray
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

    @property
    def overall_ci(self) -> float:
        """95% confidence half-width of the overall accuracy."""
        return Z95 * self.overall_se

    @property
    def users_ci(self) -> np.ndarray:
        """95% confidence half-widths of the user's accuracies."""
        return Z95 * self.users_se

    @property
    def producers_ci(self) -> np.ndarray:
        """95% confidence half-widths of the producer's accuracies."""
        return Z95 * self.producers_se

    @property
    def area_ci(self) -> np.ndarray:
        """95% confidence half-widths of the estimated areas."""
        return Z95 * self.area_se

    @property
    def total_area(self) -> float:
        """The mapped area of all classes (nodata excluded)."""
        return float(self.mapped_pixels.sum() * self.pixel_area)

    @property
    def n_samples(self) -> int:
        """Sample size."""
        return int(self.counts.sum())

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON reports (NaN where undefined).

        Returns:
            ``{"overall_accuracy", "overall_accuracy_se", "overall_accuracy_ci95", "n_samples",
            "area_unit", "classes": {name: {...}}, "proportions", "counts"}``.
        """
        classes = {}
        for i, name in enumerate(self.class_names):
            classes[name] = {
                "users_accuracy": float(self.users[i]),
                "users_accuracy_se": float(self.users_se[i]),
                "users_accuracy_ci95": float(self.users_ci[i]),
                "producers_accuracy": float(self.producers[i]),
                "producers_accuracy_se": float(self.producers_se[i]),
                "producers_accuracy_ci95": float(self.producers_ci[i]),
                "area": float(self.area[i]),
                "area_se": float(self.area_se[i]),
                "area_ci95": float(self.area_ci[i]),
                "mapped_area": float(self.mapped_area[i]),
                "mapped_pixels": int(self.mapped_pixels[i]),
                "samples": int(self.counts[i].sum()),
            }
        return {
            "overall_accuracy": self.overall,
            "overall_accuracy_se": self.overall_se,
            "overall_accuracy_ci95": self.overall_ci,
            "n_samples": self.n_samples,
            "area_unit": self.area_unit,
            "total_area": self.total_area,
            "classes": classes,
            "counts": self.counts.astype(int).tolist(),
            "proportions": self.proportions.tolist(),
        }

    def to_markdown(self, area_unit: str | None = None, digits: int = 3) -> str:
        """Report tables: the error matrix in area proportions, then accuracies and areas.

        Args:
            area_unit: the unit label of areas (default: ``self.area_unit``; no conversion).
            digits: decimals of accuracies (proportions get one more).

        Returns:
            Markdown text (two tables and a summary line).
        """
        k, u = len(self.class_names), area_unit or self.area_unit
        f = f"{{:.{digits}f}}"

        def pm(value: float, half: float, fmt: str = f) -> str:
            if not math.isfinite(value):
                return "–"
            return fmt.format(value) + (f" ± {fmt.format(half)}" if math.isfinite(half) else "")

        lines = [
            f"Overall accuracy {pm(self.overall, self.overall_ci)} (95% CI), "
            f"n = {self.n_samples} reference samples, mapped area "
            f"{self.total_area:,.1f} {u}.",
            "",
            "Error matrix of estimated area proportions (rows: map, columns: reference):",
            "",
            "| map \\ reference | " + " | ".join(self.class_names) + " | W_i (total) | n_i |",
            "|---" * (k + 3) + "|",
        ]
        fp = f"{{:.{digits + 1}f}}"  # proportions need a digit more
        for i, name in enumerate(self.class_names):
            cells = " | ".join(fp.format(v) for v in self.proportions[i])
            lines.append(
                f"| {name} | {cells} | {fp.format(self.weights[i])} | {int(self.counts[i].sum())} |"
            )
        totals = " | ".join(fp.format(v) for v in self.proportions.sum(0))
        lines += [
            f"| total | {totals} | {fp.format(self.proportions.sum())} | {self.n_samples} |",
            "",
            f"| class | user's accuracy | producer's accuracy | mapped area ({u}) "
            f"| estimated area ({u}) |",
            "|---|---|---|---|---|",
        ]
        area_fmt = "{:,.1f}"
        for i, name in enumerate(self.class_names):
            lines.append(
                f"| {name} | {pm(self.users[i], self.users_ci[i])} "
                f"| {pm(self.producers[i], self.producers_ci[i])} "
                f"| {area_fmt.format(self.mapped_area[i])} "
                f"| {pm(self.area[i], self.area_ci[i], area_fmt)} |"
            )
        lines += ["", "± values are 95% confidence half-widths (1.96 SE), Olofsson et al. 2014."]
        return "\n".join(lines) + "\n"


def area_adjusted_accuracy(
    confusion: np.ndarray | Sequence[Sequence[float]],
    mapped_pixels: np.ndarray | Sequence[float],
    pixel_area: float = 1.0,
    class_names: Sequence[str] | None = None,
    area_unit: str = "ha",
) -> AreaAccuracy:
    """Stratified accuracy and area estimates with map classes as strata (Olofsson et al. 2014).

    Args:
        confusion: (K, K) sample counts n_ij: map class i (rows), reference class j (columns).
        mapped_pixels: (K,) pixels of each class in the map, N_i (the strata sizes).
        pixel_area: area of one pixel in ``area_unit`` (0.09 ha for 30 m, 0.01 ha for 10 m).
        class_names: names in matrix order (default "0", "1", ...).
        area_unit: the unit of ``pixel_area``.

    Returns:
        The estimates. Strata with a single sample get NaN standard errors (the variance
        estimators divide by n_i. - 1); classes without samples get NaN accuracies.

    Raises:
        ValueError: for mismatched shapes, negative counts, an empty map, or a mapped class
            (N_i > 0) without samples, for which no unbiased estimate exists.
    """
    n = np.asarray(confusion, dtype=np.float64)
    big_n = np.asarray(mapped_pixels, dtype=np.float64)
    k = n.shape[0] if n.ndim == 2 else -1
    if n.shape != (k, k) or big_n.shape != (k,):
        raise ValueError(f"confusion {n.shape} and mapped_pixels {big_n.shape} do not match")
    if (n < 0).any() or (big_n < 0).any():
        raise ValueError("sample counts and mapped pixels must not be negative")
    if big_n.sum() <= 0:
        raise ValueError("the map has no classified pixels")
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for {k} classes")
    n_i = n.sum(1)  # samples per stratum
    unsampled = [names[i] for i in range(k) if big_n[i] > 0 and n_i[i] == 0]
    if unsampled:
        raise ValueError(f"map class(es) {unsampled} have mapped area but no reference sample")
    w = big_n / big_n.sum()  # W_i
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(n_i[:, None] > 0, n / n_i[:, None], 0.0)  # n_ij / n_i.
        dof = np.where(n_i > 1, n_i - 1, np.nan)  # n_i. - 1 (NaN: no variance estimate)
        if (n_i == 1).any():
            log.warning("classes with a single sample get no standard error: %s", names)
        p = w[:, None] * frac  # p_ij
        p_j = p.sum(0)  # p_.j, the estimated area proportion of reference class j
        overall = float(np.trace(p))
        users = np.where(n_i > 0, np.diag(frac), np.nan)  # U_i = n_ii / n_i.
        producers = np.where(p_j > 0, np.diag(p) / p_j, np.nan)  # P_j = p_jj / p_.j
        # V(O) = sum_i W_i^2 U_i (1 - U_i) / (n_i. - 1), over sampled strata
        sampled = n_i > 0
        var_oa = np.sum((w**2 * users * (1 - users) / dof)[sampled])
        var_ua = users * (1 - users) / dof  # V(U_i)
        # the per-stratum variance term of a cell: (n_ij/n_i.)(1 - n_ij/n_i.)/(n_i. - 1)
        cell = np.where(sampled[:, None], frac * (1 - frac) / dof[:, None], 0.0)
        # V(p_.j) = sum_i W_i^2 cell_ij; the area's SE is A * SE(p_.j)
        var_pj = (w[:, None] ** 2 * cell).sum(0)
        # V(P_j) = [N_j.^2 (1-P_j)^2 U_j (1-U_j)/(n_j.-1) + P_j^2 sum_{i!=j} N_i.^2 cell_ij] / N.j^2
        n_dot_j = (big_n[:, None] * frac).sum(0)  # estimated reference totals N_.j (pixels)
        var_pa = np.full(k, np.nan)
        for j in range(k):
            if n_dot_j[j] <= 0:
                continue
            others = sum(big_n[i] ** 2 * cell[i, j] for i in range(k) if i != j)
            own = big_n[j] ** 2 * (1 - producers[j]) ** 2 * var_ua[j] if sampled[j] else 0.0
            var_pa[j] = (own + producers[j] ** 2 * others) / n_dot_j[j] ** 2
    total_area = float(big_n.sum() * pixel_area)
    return AreaAccuracy(
        class_names=names,
        counts=n,
        mapped_pixels=big_n,
        pixel_area=float(pixel_area),
        area_unit=area_unit,
        weights=w,
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


def count_classes(
    class_map: str | os.PathLike[str] | np.ndarray, legend: Legend, nodata: int | None = None
) -> np.ndarray:
    """Count the pixels of each legend class in a class map, block by block for files.

    Args:
        class_map: a single-band class raster or a 2-D array of codes.
        legend: its legend.
        nodata: the nodata code (default: the file's nodata, else the legend's).

    Returns:
        (K,) int64 pixel counts in legend order; nodata pixels are not counted.

    Raises:
        InputError: if the map holds codes the legend lacks (listing them).
    """
    tally = np.zeros(256, np.int64)
    other: dict[int, int] = {}
    source = str(class_map) if not isinstance(class_map, np.ndarray) else "class map array"

    def add(block: np.ndarray) -> None:
        values = block.ravel()
        if values.dtype == np.uint8:  # bincount is ~10x faster than np.unique
            tally[:] += np.bincount(values, minlength=256)
            return
        codes, counts = np.unique(values, return_counts=True)
        for c, m in zip(codes.tolist(), counts.tolist(), strict=True):
            if float(c).is_integer() and 0 <= c <= 255:
                tally[int(c)] += m
            else:
                other[c] = other.get(c, 0) + m

    if isinstance(class_map, np.ndarray):
        add(class_map)
        nd = legend.nodata if nodata is None else nodata
    else:
        with open_raster(class_map) as src:
            nd = int(src.nodata) if nodata is None and src.nodata is not None else nodata
            nd = legend.nodata if nd is None else nd
            for window in block_windows(src.width, src.height, 1024):
                add(src.read(1, window=window))
    if 0 <= nd <= 255:
        tally[nd] = 0
    other.pop(nd, None)
    unknown = sorted({*(c for c in range(256) if tally[c] and c not in legend.codes), *other})
    if unknown:
        raise InputError(
            f"{source}: map codes {unknown} are not in legend '{legend.name}' "
            f"(codes {legend.codes}, nodata {nd}); use the legend the map was made with"
        )
    return tally[legend.codes]


def assess_map(
    class_map: str | os.PathLike[str] | np.ndarray,
    points: gpd.GeoDataFrame | tuple[np.ndarray, np.ndarray, np.ndarray],
    legend: Legend,
    *,
    transform: Affine | None = None,
    crs: Any = None,
    nodata: int | None = None,
    pixel_area: float | None = None,
    area_unit: str = "ha",
    source: str | None = None,
) -> AreaAccuracy:
    """Accuracy and area estimates of a class map from reference points.

    The map's pixels per class (nodata excluded) are the strata sizes; each point's sample
    pair is (map class of the pixel that contains it, its reference class). Points outside the
    map or on nodata are dropped and counted in the log.

    Args:
        class_map: a single-band class raster (codes of ``legend``) or a 2-D array of codes.
        points: reference points from :func:`bsrlc.data.points.read_points` (reprojected to the
            map's CRS here), or arrays (x, y, reference code) in the map's CRS.
        legend: the legend of both the map and the points.
        transform: the array's pixel-to-map transform (files carry their own).
        crs: the array's CRS, used to reproject GeoDataFrame points (files carry their own).
        nodata: the map's nodata code (default: the file's, else the legend's).
        pixel_area: area of one pixel in ``area_unit`` (default: from the transform, in ha,
            assuming a projected CRS in metres).
        area_unit: the unit of areas.
        source: the points' file, for messages.

    Returns:
        The stratified estimates, classes in legend order.

    Raises:
        InputError: for unknown codes in map or points, a map in degrees, no point on the map,
            or a mapped class without any reference point.
    """
    array = class_map if isinstance(class_map, np.ndarray) else None
    where = "the class map array" if array is not None else str(class_map)
    if array is None:
        with open_raster(class_map) as src:
            transform, crs, (h, w) = src.transform, src.crs, src.shape
            file_nodata = src.nodata
        if crs is not None and crs.is_geographic and pixel_area is None:
            raise InputError(
                f"{class_map}: map is in degrees; reproject it to an equal-area CRS "
                "(e.g. EPSG:3035) to estimate areas"
            )
        nd = int(file_nodata) if nodata is None and file_nodata is not None else nodata
    else:
        if transform is None:
            raise InputError("assess_map: a class map array needs its transform")
        if array.ndim != 2:
            raise InputError(f"assess_map: class map array must be 2-D, got {array.shape}")
        h, w = array.shape
        nd = nodata
    nd = legend.nodata if nd is None else nd

    if isinstance(points, gpd.GeoDataFrame):
        source = source or points.attrs.get("source", "points")
        if crs is not None and points.crs is not None:
            points = points.to_crs(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
        xs, ys = points.geometry.x.to_numpy(), points.geometry.y.to_numpy()
        ref = points[CLASS].to_numpy()
    else:
        xs, ys, ref = (np.asarray(a) for a in points)
    source = source or "reference points"
    legend.validate(ref, source)
    rows, cols = points_to_pixels(xs, ys, transform)
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    map_codes = np.full(len(rows), nd, np.int64)
    if array is not None:
        map_codes[inside] = array[rows[inside], cols[inside]]
    else:
        map_codes[inside] = values_at(class_map, rows[inside], cols[inside])
    mapped = count_classes(array if array is not None else class_map, legend, nd)
    valid = inside & (map_codes != nd)
    if not valid.any():
        raise InputError(
            f"{source}: none of {len(rows)} points falls on a classified pixel of {where}; "
            "check the points' CRS and the map's extent"
        )
    if (~inside).any() or (inside & ~valid).any():
        log.warning(
            "%s: %d points outside the map and %d on nodata dropped (%d kept)",
            source,
            int((~inside).sum()),
            int((inside & ~valid).sum()),
            int(valid.sum()),
        )
    map_idx = legend.index_of(map_codes[valid])
    ref_idx = legend.index_of(np.asarray(ref, np.int64)[valid])
    k = len(legend)
    confusion = confusion_matrix(ref_idx, map_idx, k).T  # map rows, as the estimators take it
    unsampled = [legend.names[i] for i in range(k) if mapped[i] > 0 and confusion[i].sum() == 0]
    if unsampled:
        raise InputError(
            f"{source}: no reference point falls on map class(es) {unsampled}; the stratified "
            "estimators need points in every mapped class (add points, stratified by map class)"
        )
    if pixel_area is None:
        pixel_area = abs(transform.a * transform.e - transform.b * transform.d) / 10_000.0
        area_unit = "ha"
    return area_adjusted_accuracy(confusion, mapped, pixel_area, legend.names, area_unit)


def values_at(path: str | os.PathLike[str], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Band-1 values at pixels, reading only the 1024 x 1024 blocks that hold any of them.

    Args:
        path: a raster.
        rows: pixel rows, all inside the raster.
        cols: pixel columns.

    Returns:
        int64 values, one per pixel.
    """
    out = np.zeros(len(rows), np.int64)
    block = 1024
    keys = (rows // block) * (1 << 32) + cols // block
    with open_raster(path) as src:
        for key in np.unique(keys):
            sel = keys == key
            r0, c0 = int(rows[sel][0]) // block * block, int(cols[sel][0]) // block * block
            win = Window(c0, r0, min(block, src.width - c0), min(block, src.height - r0))
            data = src.read(1, window=win)
            out[sel] = data[rows[sel] - r0, cols[sel] - c0]
    return out


def _labels(values: np.ndarray | Sequence[int], n_classes: int, what: str) -> Tensor:
    """Class indices as a flat int64 tensor, checked to lie in 0..K-1."""
    a = np.asarray(values)
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{what} labels must be integer class indices, got {a.dtype}")
    a = a.astype(np.int64, copy=not a.flags.writeable).ravel()  # torch needs writable memory
    if a.size and (a.min() < 0 or a.max() >= n_classes):
        raise ValueError(
            f"{what} labels must be indices 0..{n_classes - 1}, got {a.min()}..{a.max()}"
        )
    return torch.from_numpy(a)


def _label_pair(
    y_true: np.ndarray | Sequence[int], y_pred: np.ndarray | Sequence[int], n_classes: int
) -> tuple[Tensor, Tensor]:
    """Reference and predicted indices as tensors of one length, checked to lie in 0..K-1."""
    t = _labels(y_true, n_classes, "reference")
    p = _labels(y_pred, n_classes, "predicted")
    if t.shape != p.shape:
        raise ValueError(f"{t.numel()} reference and {p.numel()} predicted labels")
    return t, p


def classification_metric_collection(
    n_classes: int, validate_args: bool = True
) -> MetricCollection:
    """The sample-based metrics, one definition for the training logs and the reports.

    Keys (the training task logs them with a ``train/``, ``val/`` or ``test/`` prefix):
    ``oa`` (micro accuracy), ``macro_f1``, ``kappa`` (Cohen's), and per-class ``f1``,
    ``precision`` and ``recall``. torchmetrics' definitions are scikit-learn's: a class's
    precision/recall/F1 is 0 when its denominator is 0, the macro F1 averages over the classes
    that occur in the reference or the predictions, and kappa is NaN when it is undefined
    (chance agreement 1: every sample of one class, in reference and predictions alike).

    Args:
        n_classes: K.
        validate_args: let torchmetrics check every batch (costly on millions of labels;
            :func:`classification_metrics` checks the range itself and turns it off).

    Returns:
        The (unprefixed) collection; update it with ``(preds, target)``.
    """
    kw = {"validate_args": validate_args}
    return MetricCollection(
        {
            "oa": MulticlassAccuracy(n_classes, average="micro", **kw),
            "macro_f1": MulticlassF1Score(n_classes, average="macro", **kw),
            "kappa": MulticlassCohenKappa(n_classes, **kw),
            "f1": MulticlassF1Score(n_classes, average="none", **kw),
            "precision": MulticlassPrecision(n_classes, average="none", **kw),
            "recall": MulticlassRecall(n_classes, average="none", **kw),
        }
    )


def confusion_metric(n_classes: int, validate_args: bool = True) -> MulticlassConfusionMatrix:
    """The confusion matrix metric of the training logs and of :func:`confusion_matrix`.

    Args:
        n_classes: K.
        validate_args: let torchmetrics check every batch.

    Returns:
        A metric whose ``compute()`` is the (K, K) count matrix, reference rows and predicted
        columns; update it with ``(preds, target)``.
    """
    return MulticlassConfusionMatrix(n_classes, validate_args=validate_args)


def confusion_matrix(
    y_true: np.ndarray | Sequence[int], y_pred: np.ndarray | Sequence[int], n_classes: int
) -> np.ndarray:
    """Counts with reference classes as rows and predictions as columns (scikit-learn's layout).

    The counts come from :func:`confusion_metric` (the training logs' matrix); torchmetrics'
    own argument checks are replaced by a range check here, which keeps whole maps (tens of
    millions of pixels) as fast as a NumPy ``bincount``.

    Args:
        y_true: reference indices 0..K-1.
        y_pred: predicted indices 0..K-1.
        n_classes: K.

    Returns:
        (K, K) int64 counts.

    Raises:
        ValueError: for indices outside 0..K-1 or arrays of different lengths.
    """
    t, p = _label_pair(y_true, y_pred, n_classes)
    if not t.numel():
        return np.zeros((n_classes, n_classes), np.int64)
    metric = confusion_metric(n_classes, validate_args=False)
    metric.update(p, t)
    return metric.compute().numpy().astype(np.int64)


def classification_metrics(
    y_true: np.ndarray | Sequence[int], y_pred: np.ndarray | Sequence[int], n_classes: int
) -> dict[str, Any]:
    """Overall accuracy, macro F1, Cohen's kappa and per-class precision, recall and F1.

    Computed by :func:`classification_metric_collection`, the metrics the training task logs,
    so a report and a training log of the same predictions agree (definitions there). The
    scores are torchmetrics' float32 values (about 7 significant digits).

    Args:
        y_true: reference indices 0..K-1.
        y_pred: predicted indices 0..K-1.
        n_classes: K.

    Returns:
        ``{"oa", "macro_f1", "kappa", "precision", "recall", "f1", "support", "confusion"}``;
        per-class values are lists of K floats, ``support`` the reference count per class and
        ``confusion`` the (K, K) matrix (reference rows) as nested lists.

    Raises:
        ValueError: for indices outside 0..K-1, arrays of different lengths, or no samples.
    """
    t, p = _label_pair(y_true, y_pred, n_classes)
    if not t.numel():
        raise ValueError("no samples to score: the reference and predicted labels are empty")
    confusion = confusion_metric(n_classes, validate_args=False)
    metrics = classification_metric_collection(n_classes, validate_args=False)
    confusion.update(p, t)
    metrics.update(p, t)
    cm = confusion.compute().numpy().astype(np.int64)
    values = metrics.compute()
    out: dict[str, Any] = {k: float(values[k]) for k in ("oa", "macro_f1", "kappa")}
    out.update({k: values[k].tolist() for k in ("precision", "recall", "f1")})
    out["support"] = cm.sum(1).tolist()
    out["confusion"] = cm.tolist()
    return out
