"""Maps over time: accuracy at reference points, class areas, change, figures and animations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from bsrlc.data.legend import Legend
from bsrlc.data.points import points_to_pixels, read_points
from bsrlc.evaluation.accuracy import (
    AreaAccuracy,
    area_adjusted_accuracy,
    classification_metrics,
    confusion_matrix,
)
from bsrlc.evaluation.figures import figure_to_array, plt


def read_map(path: str | Path) -> tuple[np.ndarray, Any]:
    """Read a class map and its transform.

    Args:
        path: a uint8 class map.

    Returns:
        (codes (rows, cols), transform).
    """
    with rasterio.open(path) as src:
        return src.read(1), src.transform


def evaluate_at_points(
    map_path: str | Path, points_path: str | Path, legend: Legend, split: str | None = "test"
) -> dict[str, Any]:
    """OA, macro F1, kappa and per-class scores of a map at reference points.

    Args:
        map_path: the class map.
        points_path: reference points (same CRS as the map or reprojectable).
        legend: the legend.
        split: use only points whose ``split`` column equals this (None: all).

    Returns:
        Metrics (see :func:`~bsrlc.evaluation.accuracy.classification_metrics`, the training
        logs' definitions; ``confusion`` has reference rows) plus ``n``, the points scored.
    """
    codes, transform = read_map(map_path)
    with rasterio.open(map_path) as src:
        crs = src.crs
    pts = read_points(points_path)
    if split is not None and "split" in pts.columns:
        pts = pts[pts["split"] == split]
    pts = pts.to_crs(crs)
    rows, cols = points_to_pixels(pts.geometry.x.to_numpy(), pts.geometry.y.to_numpy(), transform)
    pred = codes[rows, cols]
    ok = pred != 0
    y_true = legend.index_of(pts["class"].to_numpy()[ok])
    y_pred = legend.index_of(pred[ok])
    out: dict[str, Any] = classification_metrics(y_true, y_pred, len(legend))
    out["n"] = int(ok.sum())
    return out


def stratified_area_accuracy(
    map_codes: np.ndarray,
    truth_codes: np.ndarray,
    legend: Legend,
    per_class: int,
    pixel_area: float,
    seed: int = 0,
) -> AreaAccuracy:
    """Draw a stratified random sample by map class, label it from the truth, estimate areas.

    This is the sampling design of Olofsson et al. (2014): strata are the mapped classes, the
    reference label of each sampled pixel comes from a better source (here the truth map).

    Args:
        map_codes: the map (0 = nodata), over the assessed region.
        truth_codes: the reference map over the same region.
        legend: the legend.
        per_class: sample size per mapped class.
        pixel_area: area of one pixel (ha for reports).
        seed: sampling seed.

    Returns:
        The area-adjusted accuracy.
    """
    rng = np.random.default_rng(seed)
    k = len(legend)
    confusion = np.zeros((k, k), np.int64)
    mapped = np.zeros(k, np.int64)
    for i, code in enumerate(legend.codes):
        r, c = np.nonzero(map_codes == code)
        mapped[i] = r.size
        if r.size == 0:
            continue
        pick = rng.choice(r.size, size=min(per_class, r.size), replace=False)
        ref = legend.index_of(truth_codes[r[pick], c[pick]])
        ref = ref[ref >= 0]
        confusion[i] = np.bincount(ref, minlength=k)
    keep = confusion.sum(1) >= 2  # strata with too few samples cannot give standard errors
    if not keep.all():
        confusion, mapped = confusion[keep][:, keep], mapped[keep]
    names = [n for n, kk in zip(legend.names, keep, strict=True) if kk]
    return area_adjusted_accuracy(confusion, mapped, pixel_area, names)


def class_areas(maps: Mapping[str, str | Path], legend: Legend, pixel_area_ha: float) -> dict:
    """Mapped area of every class per period.

    Args:
        maps: period label -> class map.
        legend: the legend.
        pixel_area_ha: area of one pixel in hectares.

    Returns:
        period -> class name -> hectares.
    """
    out = {}
    for label, path in maps.items():
        codes, _ = read_map(path)
        counts = np.bincount(codes.ravel(), minlength=256)
        out[str(label)] = {c.name: float(counts[c.code] * pixel_area_ha) for c in legend.classes}
    return out


def areas_chart(areas: Mapping[str, Mapping[str, float]], legend: Legend, path: Path) -> Path:
    """Line chart of class areas over time.

    Args:
        areas: from :func:`class_areas`.
        legend: the legend (colours).
        path: output PNG.

    Returns:
        The PNG path.
    """
    labels = list(areas)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for c in legend.classes:
        colour = tuple(v / 255 for v in c.rgb)
        ax.plot(labels, [areas[t][c.name] for t in labels], marker="o", color=colour, label=c.name)
    ax.set_ylabel("area (ha)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Mapped class areas per period")
    fig.tight_layout()
    import imageio.v3 as iio

    iio.imwrite(path, figure_to_array(fig))
    return path


def colourise(codes: np.ndarray, legend: Legend) -> np.ndarray:
    """RGB image of a class map.

    Args:
        codes: class codes (0 = nodata, black).
        legend: the legend.

    Returns:
        (rows, cols, 3) uint8.
    """
    lut = np.zeros((256, 3), np.uint8)
    for c in legend.classes:
        lut[c.code] = c.rgb
    return lut[codes]


def change_map(before: np.ndarray, after: np.ndarray, legend: Legend) -> np.ndarray:
    """Per-pixel change code ``from * 16 + to`` (0 where unchanged or nodata).

    Args:
        before: class codes of the earlier map.
        after: class codes of the later map.
        legend: the legend (codes must be < 16).

    Returns:
        uint8 change codes.
    """
    out = (before.astype(np.uint16) * 16 + after).astype(np.uint8)
    out[(before == after) | (before == 0) | (after == 0)] = 0
    return out


def maps_gif(maps: Mapping[str, str | Path], legend: Legend, path: Path, scale: int = 1) -> Path:
    """An animated GIF of the maps over time with the period written on each frame.

    Args:
        maps: period label -> class map.
        legend: the legend.
        path: output GIF.
        scale: pixel repetition for small maps.

    Returns:
        The GIF path.
    """
    import imageio.v2 as imageio

    frames = []
    for label, p in maps.items():
        codes, _ = read_map(p)
        rgb = colourise(codes, legend)
        fig, ax = plt.subplots(figsize=(5, 5.3), dpi=100)
        ax.imshow(np.repeat(np.repeat(rgb, scale, 0), scale, 1), interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(str(label), fontsize=16)
        fig.tight_layout()
        frames.append(figure_to_array(fig))
    imageio.mimsave(path, frames, duration=1.0, loop=0)
    return path


def maps_figure(
    panels: Sequence[tuple[str, np.ndarray]], legend: Legend, path: Path, cols: int = 4
) -> Path:
    """A grid of class maps (or RGB images) with titles and the legend.

    Args:
        panels: (title, codes or RGB) pairs.
        legend: the legend.
        path: output PNG.
        cols: panels per row.

    Returns:
        The PNG path.
    """
    from matplotlib.patches import Patch

    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.3 * rows + 0.6), dpi=100)
    for ax in np.atleast_1d(axes).ravel():
        ax.set_axis_off()
    for ax, (title, img) in zip(np.atleast_1d(axes).ravel(), panels, strict=False):
        ax.imshow(colourise(img, legend) if img.ndim == 2 else img, interpolation="nearest")
        ax.set_title(title, fontsize=9)
    handles = [Patch(color=tuple(v / 255 for v in c.rgb), label=c.name) for c in legend.classes]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    import imageio.v3 as iio

    iio.imwrite(path, figure_to_array(fig))
    return path


def wall_to_wall(map_codes: np.ndarray, truth_codes: np.ndarray, legend: Legend) -> dict[str, Any]:
    """Compare a whole map with a reference map pixel by pixel: accuracy by area.

    Every pixel where both are valid counts, so the scores are area proportions (OA by area,
    user's and producer's accuracy of the area mapped / truly covered by each class), not the
    scores of a balanced point sample.

    Args:
        map_codes: the map's class codes (0 = nodata).
        truth_codes: the reference codes on the same grid (0 = nodata).
        legend: the legend.

    Returns:
        ``area_oa``, and per class name ``area_ratio`` (mapped / true area; NaN when the class
        is absent from the truth), ``users_accuracy`` and ``producers_accuracy`` (NaN when
        undefined), plus ``mapped_px`` / ``true_px``.

    Raises:
        ValueError: if the arrays differ in shape.
    """
    if map_codes.shape != truth_codes.shape:
        raise ValueError(f"map {map_codes.shape} and truth {truth_codes.shape} differ in shape")
    k = len(legend)
    pred = legend.index_of(map_codes.ravel())
    true = legend.index_of(truth_codes.ravel())
    ok = (pred >= 0) & (true >= 0)
    cm = confusion_matrix(true[ok], pred[ok], k).astype(np.float64)
    # Own ratios rather than torchmetrics' precision/recall (the same numbers where defined):
    # a class absent from map or truth has no user's/producer's accuracy (NaN here), where
    # torchmetrics reports 0, and the counts of a whole map are all these ratios need.
    mapped, truth = cm.sum(0), cm.sum(1)
    diag = np.diag(cm)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio, users, producers = mapped / truth, diag / mapped, diag / truth
    ratio[truth == 0] = np.nan  # mapped area of a class the truth lacks has no ratio

    def per_class(values: np.ndarray) -> dict[str, float]:
        return {n: float(v) for n, v in zip(legend.names, values, strict=True)}

    return {
        "area_oa": float(diag.sum() / max(cm.sum(), 1.0)),
        "area_ratio": per_class(ratio),
        "users_accuracy": per_class(users),
        "producers_accuracy": per_class(producers),
        "mapped_px": per_class(mapped),
        "true_px": per_class(truth),
    }


def flicker(maps: Sequence[np.ndarray]) -> float:
    """Share of pixels whose class changes and later changes back over an ordered series.

    A pixel flickers when some period's class differs from an earlier one and a later period
    returns to that earlier class (A -> B -> A), the pattern real land change rarely shows.
    Pixels that are nodata in any period are left out.

    Args:
        maps: class maps of the periods in time order, all on one grid.

    Returns:
        The flickering share of valid pixels (0 for fewer than three periods).
    """
    stack = np.stack([np.asarray(m) for m in maps])
    valid = (stack != 0).all(0)
    if stack.shape[0] < 3 or not valid.any():
        return 0.0
    flick = np.zeros(stack.shape[1:], bool)
    t = stack.shape[0]
    for i in range(t):
        for j in range(i + 1, t):
            moved = stack[j] != stack[i]
            for k in range(j + 1, t):
                flick |= moved & (stack[k] == stack[i])
    return float((flick & valid).sum() / valid.sum())
