"""Figures for reports and loggers (matplotlib, no display needed).

SR figures (:func:`sr_figure`) show LR | bicubic | SR | HR crops at native resolution: integer
nearest-neighbour zoom, drawn 1:1, one stretch shared by the four panels of an example. Crops
are chosen by content (:func:`pick_crops` over class shares, :func:`line_energy` for roads,
:func:`local_variance` for dense roofs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def figure_to_array(fig: plt.Figure) -> np.ndarray:
    """Render a figure to an (H, W, 3) uint8 array and close it.

    Args:
        fig: the figure.

    Returns:
        The RGB pixels.
    """
    fig.canvas.draw()
    arr = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return arr


def confusion_figure(cm: np.ndarray, names: Sequence[str], title: str) -> np.ndarray:
    """A confusion matrix heat map with counts and row-normalised colours.

    Args:
        cm: (K, K) counts, reference rows, predicted columns.
        names: class names.
        title: the title.

    Returns:
        (H, W, 3) uint8 image.
    """
    k = len(names)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * k, 1.2 + 1.0 * k), dpi=100)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{int(cm[i, j])}",
                ha="center",
                va="center",
                color="white" if norm[i, j] > 0.5 else "black",
                fontsize=9,
            )
    short = [n if len(n) < 14 else n[:12] + "…" for n in names]
    ax.set_xticks(range(k), short, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(k), short, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return figure_to_array(fig)


# -- super-resolution figures ------------------------------------------------------------------

SR_TITLES = ("LR (its pixels)", "bicubic", "SR", "HR")


@dataclass
class SRExample:
    """One row of an SR figure: the same place in LR, bicubic, SR and HR, as RGB reflectance.

    Attributes:
        label: what the crop shows, e.g. ``road``.
        lr: (3, h, w) LR crop.
        bicubic: (3, s*h, s*w) bicubic upsampling of the LR crop.
        sr: (3, s*h, s*w) super-resolved crop.
        hr: (3, s*h, s*w) reference crop (NaN where nodata).
        origin: the crop's top-left HR pixel (row, col) in its raster, if known.
    """

    label: str
    lr: np.ndarray
    bicubic: np.ndarray
    sr: np.ndarray
    hr: np.ndarray
    origin: tuple[int, int] | None = None


@dataclass
class SRFigure:
    """What :func:`sr_figure` wrote.

    Attributes:
        path: the PNG.
        panel_px: each panel's edge in pixels (HR crop edge x ``zoom``).
        zoom: screen pixels per HR pixel (an LR pixel is ``scale * zoom``).
        limits: per example, the (low, high) reflectance per band its four panels share.
        boxes: per example, the (left, top) pixel of each panel in the PNG, in panel order.
        crops: per example, its label and origin.
    """

    path: Path
    panel_px: int
    zoom: int
    limits: list[tuple[np.ndarray, np.ndarray]]
    boxes: list[list[tuple[int, int]]]
    crops: list[tuple[str, tuple[int, int] | None]]


def stretch_limits(
    hr: np.ndarray, low: float = 2.0, high: float = 98.0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-band percentiles of a reference image, to stretch every panel of an example alike.

    Args:
        hr: (C, H, W) reflectance (NaN ignored).
        low: lower percentile.
        high: upper percentile.

    Returns:
        (C,) low and (C,) high values; ``high > low`` in every band.
    """
    flat = hr.reshape(hr.shape[0], -1).astype(np.float64)
    if not np.isfinite(flat).any():
        return np.zeros(hr.shape[0]), np.ones(hr.shape[0])
    lo, hi = np.nanpercentile(flat, [low, high], axis=1)
    lo, hi = np.nan_to_num(lo), np.nan_to_num(hi, nan=1.0)
    return lo, np.maximum(hi, lo + 1e-6)


def apply_stretch(img: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Linear stretch of (C, H, W) reflectance to (H, W, C) uint8; NaN becomes black.

    Args:
        img: (C, H, W) reflectance.
        lo: (C,) value shown as 0.
        hi: (C,) value shown as 255.

    Returns:
        (H, W, C) uint8.
    """
    lo = np.asarray(lo, np.float64)[:, None, None]
    hi = np.asarray(hi, np.float64)[:, None, None]
    x = np.clip((img.astype(np.float64) - lo) / (hi - lo), 0.0, 1.0)
    return np.rint(np.nan_to_num(x, nan=0.0) * 255).astype(np.uint8).transpose(1, 2, 0)


def zoom_nearest(img: np.ndarray, factor: int) -> np.ndarray:
    """Integer nearest-neighbour upsampling of an (H, W, C) image (each pixel a block).

    Args:
        img: (H, W, C).
        factor: pixels per input pixel.

    Returns:
        (factor H, factor W, C).
    """
    return img.repeat(factor, 0).repeat(factor, 1)


def sr_figure(
    examples: Sequence[SRExample],
    path: str | Path,
    scale: int = 3,
    min_panel_px: int = 400,
    low: float = 2.0,
    high: float = 98.0,
    titles: Sequence[str] = SR_TITLES,
    title: str | None = None,
    dpi: int = 100,
) -> SRFigure:
    """Write LR | bicubic | SR | HR panels of several examples at native resolution.

    Each panel is its crop magnified by an integer nearest-neighbour zoom (the smallest giving
    ``min_panel_px`` pixels or more) and drawn 1:1 into the PNG, so no pixel is resampled: an LR
    pixel is a ``scale * zoom`` block, an HR pixel a ``zoom`` block. The four panels of an
    example share one stretch, the ``low``-``high`` percentiles of its HR crop per band, so
    brightness and colour differences between the panels are real.

    Args:
        examples: the rows (crops of the same HR size).
        path: the PNG to write.
        scale: HR pixels per LR pixel.
        min_panel_px: the least panel width in pixels.
        low: lower percentile of the stretch.
        high: upper percentile of the stretch.
        titles: the column titles.
        title: a title over the figure.
        dpi: the PNG's dots per inch (text size; the pixel layout does not depend on it).

    Returns:
        What was written (path, panel size, the stretches, where the panels are).

    Raises:
        ValueError: for no examples, or crops whose sizes do not fit together.
    """
    if not examples:
        raise ValueError("no examples to draw")
    h, w = examples[0].hr.shape[1:]
    for ex in examples:
        shapes = [ex.bicubic.shape[1:], ex.sr.shape[1:], ex.hr.shape[1:]]
        if any(s != (h, w) for s in shapes) or ex.lr.shape[1:] != (h // scale, w // scale):
            raise ValueError(
                f"{ex.label}: LR {ex.lr.shape[1:]}, bicubic, SR, HR {shapes}; need LR "
                f"(h, w) and the others ({scale} h, {scale} w), the same for every example"
            )
    zoom = -(-min_panel_px // min(h, w))
    ph, pw = h * zoom, w * zoom
    gap, left, top, bottom = 8, 44, 40 if title is None else 72, 8
    row_gap = 12
    width = left + 4 * pw + 3 * gap + gap
    height = top + len(examples) * ph + (len(examples) - 1) * row_gap + bottom
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="white")
    limits, boxes = [], []
    for i, ex in enumerate(examples):
        lo, hi = stretch_limits(ex.hr, low, high)
        limits.append((lo, hi))
        y = top + i * (ph + row_gap)  # from the top, in pixels
        row_boxes = []
        panels = [
            zoom_nearest(apply_stretch(ex.lr, lo, hi), scale * zoom),
            *(zoom_nearest(apply_stretch(a, lo, hi), zoom) for a in (ex.bicubic, ex.sr, ex.hr)),
        ]
        for j, img in enumerate(panels):
            x = left + j * (pw + gap)
            ax = fig.add_axes((x / width, 1 - (y + ph) / height, pw / width, ph / height))
            ax.imshow(img, interpolation="none", resample=False)
            ax.set_axis_off()
            row_boxes.append((x, y))
            if i == 0:
                fig.text(
                    (x + pw / 2) / width,
                    1 - (y - 6) / height,
                    titles[j],
                    ha="center",
                    va="bottom",
                    fontsize=14,
                )
        boxes.append(row_boxes)
        fig.text(
            (left / 2) / width,
            1 - (y + ph / 2) / height,
            ex.label,
            rotation=90,
            ha="center",
            va="center",
            fontsize=14,
        )
    if title is not None:
        fig.text(0.5, 1 - 10 / height, title, ha="center", va="top", fontsize=13)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, facecolor="white")
    plt.close(fig)
    return SRFigure(out, pw, zoom, limits, boxes, [(ex.label, ex.origin) for ex in examples])


# -- choosing crops by content ---------------------------------------------------------------


def _brightness(img: np.ndarray) -> np.ndarray:
    """Mean over bands of (C, H, W), NaN as the image mean; (H, W) unchanged."""
    b = img.mean(0) if img.ndim == 3 else img
    b = b.astype(np.float64)
    return np.where(np.isfinite(b), b, np.nanmean(b) if np.isfinite(b).any() else 0.0)


def line_energy(img: np.ndarray, length: int = 15) -> np.ndarray:
    """How much a pixel lies on a long thin line of contrast (a road, a railway).

    The ridge response across a line (how much darker, or brighter, a pixel is than both pixels
    1, 2 and 3 pixels away on either side: lines up to 5 pixels wide; a step edge, like a field
    boundary, has one side equal and scores 0) is averaged along the line over ``length``
    pixels, in four directions; the strongest direction is weighted by the squared coherence of
    the local gradients (structure tensor, Gaussian sigma 3 pixels), 1 where they all point one
    way, near 0 in isotropic texture: a road scores, a lattice of roofs does not.

    Args:
        img: (C, H, W) or (H, W) HR image.
        length: pixels along the line.

    Returns:
        (H, W) score, >= 0.
    """
    from scipy import ndimage

    b = _brightness(img)
    h, w = b.shape
    pad = 3
    padded = np.pad(b, pad, mode="edge")

    def shifted(dy: int, dx: int) -> np.ndarray:
        return padded[pad + dy : pad + dy + h, pad + dx : pad + dx + w]

    per_dir = []
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):  # line directions
        ny, nx = dx, -dy  # across the line
        ridge = np.zeros_like(b)
        for k in (1, 2, 3):
            fwd, back = shifted(k * ny, k * nx), shifted(-k * ny, -k * nx)
            dark = np.minimum(fwd - b, back - b)  # darker than both sides
            bright = np.minimum(b - fwd, b - back)  # brighter than both sides
            ridge += np.maximum(dark, 0) + np.maximum(bright, 0)
        kernel = np.zeros((length, length))
        c = length // 2
        for t in range(-c, c + 1):
            kernel[c + t * dy, c + t * dx] = 1.0 / length
        per_dir.append(ndimage.convolve(ridge, kernel, mode="nearest"))
    # coherence of the local gradients (structure tensor): 1 where they all point one way (a
    # line), near 0 where they point every way (a lattice of roofs, a grid of streets, noise)
    gy, gx = np.gradient(b)
    jxx = ndimage.gaussian_filter(gx * gx, 3.0)
    jyy = ndimage.gaussian_filter(gy * gy, 3.0)
    jxy = ndimage.gaussian_filter(gx * gy, 3.0)
    coherence = np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / (jxx + jyy + 1e-12)
    return np.max(per_dir, axis=0) * coherence**2


def local_variance(img: np.ndarray, size: int = 3) -> np.ndarray:
    """Variance in a ``size`` x ``size`` neighbourhood, summed over bands (texture: dense roofs).

    Args:
        img: (C, H, W) or (H, W) HR image.
        size: the neighbourhood edge.

    Returns:
        (H, W) score, >= 0.
    """
    from scipy import ndimage

    x = img if img.ndim == 3 else img[None]
    total = np.zeros(x.shape[1:])
    for band in x:
        b = _brightness(band)
        mean = ndimage.uniform_filter(b, size, mode="nearest")
        total += np.maximum(ndimage.uniform_filter(b * b, size, mode="nearest") - mean**2, 0)
    return total


def content_scores(hr: np.ndarray) -> dict[str, np.ndarray]:
    """Score maps for choosing crops without a land-cover map: a road and a dense suburb.

    Args:
        hr: (C, H, W) HR image.

    Returns:
        ``{"road": line energy, "dense suburb": local variance}``.
    """
    return {"road": line_energy(hr), "dense suburb": local_variance(hr)}


def pick_crops(
    scores: Mapping[str, np.ndarray],
    size: int,
    align: int = 1,
    taken: Sequence[tuple[int, int]] = (),
    min_mean: float | None = None,
) -> dict[str, tuple[int, int]]:
    """The crop of highest total score for each map, in turn, none overlapping another.

    Args:
        scores: label -> (H, W) score map (e.g. a class share, :func:`line_energy`); maps are
            used in order, each picking among the windows the earlier ones left.
        size: crop edge in pixels (a multiple of ``align``).
        align: crop corners on multiples of this (3: whole LR pixels).
        taken: top-left corners of crops (of the same size) already chosen elsewhere.
        min_mean: leave a label out when its best window's mean score is below this.

    Returns:
        label -> (row, col) of the crop's top-left pixel; labels without a free window (or
        none scoring ``min_mean``) are left out.

    Raises:
        ValueError: for a crop larger than the maps or not a multiple of ``align``.
    """
    picked: dict[str, tuple[int, int]] = {}
    chosen = list(taken)
    for label, score in scores.items():
        h, w = score.shape
        if size > min(h, w) or size % align:
            raise ValueError(f"crop {size} px: need <= {min(h, w)} and a multiple of {align}")
        s = np.nan_to_num(score.astype(np.float64))
        cum = np.zeros((h + 1, w + 1))
        cum[1:, 1:] = s.cumsum(0).cumsum(1)
        rows = np.arange(0, h - size + 1, align)
        cols = np.arange(0, w - size + 1, align)
        r, c = np.meshgrid(rows, cols, indexing="ij")
        total = cum[r + size, c + size] - cum[r, c + size] - cum[r + size, c] + cum[r, c]
        free = np.ones_like(total, bool)
        for pr, pc in chosen:
            free &= (np.abs(r - pr) >= size) | (np.abs(c - pc) >= size)
        if not free.any():
            continue
        k = np.argmax(np.where(free, total, -np.inf))
        if min_mean is not None and total.flat[k] < min_mean * size * size:
            continue
        picked[label] = (int(r.flat[k]), int(c.flat[k]))
        chosen.append(picked[label])
    return picked
