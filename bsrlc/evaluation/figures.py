"""Figures for reports and loggers (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence

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
