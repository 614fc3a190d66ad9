"""Map a whole raster with a centre-patch classifier, tile by tile, densely.

Each tile is read with a halo of ``patch_size // 2`` pixels (mirrored at the raster's edges),
classified in one dense pass (``forward_dense``: identical to classifying every pixel's own
patch) and written at once, so memory depends on the tile size only. Networks without a dense
form (the padded seed variant) classify each pixel's patch in batches. Pixels whose input is
nodata are nodata (0) in the map.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rasterio.windows import Window
from tqdm.auto import tqdm

from bsrlc.data.legend import Legend
from bsrlc.raster import COGWriter, band_indices, block_windows, open_raster, raster_info

log = logging.getLogger(__name__)


def read_with_halo(
    src: Any, indices: Sequence[int], window: Window, halo: int, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Read a window grown by ``halo`` on every side, mirroring beyond the raster's edges.

    Args:
        src: an open rasterio dataset.
        indices: 1-based bands.
        window: the core window.
        halo: pixels added on every side.
        scale: reflectance scale of the stored values.

    Returns:
        ((bands, h + 2*halo, w + 2*halo) float32 reflectance, (same rows, cols) bool valid).
    """
    r0, c0 = int(window.row_off) - halo, int(window.col_off) - halo
    r1 = int(window.row_off + window.height) + halo
    c1 = int(window.col_off + window.width) + halo
    rr0, cc0 = max(r0, 0), max(c0, 0)
    rr1, cc1 = min(r1, src.height), min(c1, src.width)
    raw = src.read(list(indices), window=Window(cc0, rr0, cc1 - cc0, rr1 - rr0))
    valid = np.ones(raw.shape[1:], bool)
    if src.nodata is not None:
        valid &= ~(raw == src.nodata).any(axis=0)
    data = raw.astype(np.float32) * np.float32(scale)
    valid &= np.isfinite(data).all(axis=0)
    pad = ((rr0 - r0, r1 - rr1), (cc0 - c0, c1 - cc1))
    if any(p for pair in pad for p in pair):
        mode = "reflect" if min(data.shape[1:]) > max(max(pad)) else "edge"
        data = np.pad(data, ((0, 0), *pad), mode=mode)
        valid = np.pad(valid, pad, mode=mode)
    return data, valid


@torch.no_grad()
def classify_tile(
    net: torch.nn.Module, x: torch.Tensor, halo: int, batch_size: int = 4096
) -> torch.Tensor:
    """Logits of every core pixel of a normalised tile with its halo.

    Args:
        net: the classifier (dense if it has ``forward_dense``).
        x: (C, h + 2*halo, w + 2*halo).
        halo: the halo.
        batch_size: patches per batch for networks without a dense form.

    Returns:
        (K, h, w) logits.
    """
    if hasattr(net, "forward_dense"):
        return net.forward_dense(x[None])[0]
    p = 2 * halo + 1
    h = x.shape[1] - 2 * halo
    rows = []
    for r in range(h):  # one row of patches at a time keeps memory at w * C * p * p
        strip = x[:, r : r + p]  # (C, p, W + 2 halo)
        patches = F.unfold(strip[None], p)[0].T.reshape(-1, x.shape[0], p, p)
        rows.append(torch.cat([net(b) for b in patches.split(batch_size)]).T)
    return torch.stack(rows, dim=1)  # (K, h, w)


def classify_raster(
    net: torch.nn.Module,
    src_path: str | Path,
    dst_path: str | Path,
    bands: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
    legend: Legend,
    halo: int,
    input_scale: float = 1e-4,
    tile: int = 512,
    probabilities: bool = False,
    device: str = "cpu",
    overwrite: bool = True,
    progress: bool = True,
) -> Path:
    """Write a class map (uint8 codes, colour table, 0 = nodata) of a feature raster.

    Args:
        net: the trained classifier in eval mode.
        src_path: the feature raster (the bands the model was trained on, found by name).
        dst_path: the output COG.
        bands: input band descriptions, in the model's order.
        mean: per-band normalisation mean (reflectance).
        std: per-band normalisation std.
        legend: class codes, names and colours.
        halo: the model's halo (``patch_size // 2``).
        input_scale: reflectance scale of the input's stored values.
        tile: core tile edge in pixels.
        probabilities: also write ``<dst>_proba.tif`` (uint8 probability x 255 per class, and a
            last band with the confidence, the top probability).
        device: torch device.
        overwrite: replace existing outputs.
        progress: show a progress bar.

    Returns:
        The class map's path.
    """
    info = raster_info(src_path)
    idx = band_indices(info, bands)
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    dst_path = Path(dst_path)
    windows = block_windows(info.width, info.height, tile)
    common: dict[str, Any] = {
        "crs": info.crs,
        "transform": info.transform,
        "width": info.width,
        "height": info.height,
        "overwrite": overwrite,
    }
    names = {f"CLASS_{c.code}": c.name for c in legend.classes}
    writer = COGWriter(
        dst_path,
        count=1,
        dtype="uint8",
        nodata=0,
        descriptions=["CLASS"],
        colormap=legend.colormap(),
        tags={"LEGEND": legend.name, **names},
        **common,
    )
    proba_writer = None
    if probabilities:
        proba_writer = COGWriter(
            dst_path.with_name(dst_path.stem + "_proba.tif"),
            count=len(legend) + 1,
            dtype="uint8",
            nodata=255,
            descriptions=[f"P_{c.name.upper().replace(' ', '_')}" for c in legend.classes]
            + ["CONFIDENCE"],
            tags={"SCALE": str(1 / 254)},
            **common,
        )
    try:
        with open_raster(src_path) as src:
            for window in tqdm(windows, desc=dst_path.name, disable=not progress, unit="tile"):
                data, valid = read_with_halo(src, idx, window, halo, input_scale)
                x = (torch.from_numpy(data) - m) / s
                x[:, ~torch.from_numpy(valid)] = 0.0  # nodata -> the band mean
                logits = classify_tile(net, x.to(device), halo).float().cpu()
                core_valid = valid[
                    halo : halo + int(window.height), halo : halo + int(window.width)
                ]
                codes = legend.code_of(logits.argmax(0).numpy())
                codes[~core_valid] = 0
                writer.write(codes[None], window)
                if proba_writer is not None:
                    proba = torch.softmax(logits, 0).numpy()
                    out = np.round(np.concatenate([proba, proba.max(0, keepdims=True)]) * 254)
                    out = out.astype(np.uint8)
                    out[:, ~core_valid] = 255
                    proba_writer.write(out, window)
    except BaseException:
        writer.abort()
        if proba_writer is not None:
            proba_writer.abort()
        raise
    writer.close()
    if proba_writer is not None:
        proba_writer.close()
    return dst_path
