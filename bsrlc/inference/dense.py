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
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from bsrlc.data.legend import Legend
from bsrlc.errors import InputError
from bsrlc.inference.jobs import (
    OutputSpec,
    RasterJob,
    model_digest,
    run_local,
    source_fingerprint,
)
from bsrlc.raster import band_indices, block_windows, category_names, open_raster, raster_info

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


class ClassifyJob(RasterJob):
    """A class map (and optionally its probabilities) of a feature raster, in tiles.

    Each unit is one ``tile`` x ``tile`` window of the map, read with its halo and classified in
    one dense pass (see the module docstring).

    Args:
        src_path: the feature raster (the bands the model was trained on, found by name).
        dst_path: the class map COG.
        bands: input band descriptions, in the model's order.
        mean: per-band normalisation mean (reflectance).
        std: per-band normalisation std.
        legend: class codes, names and colours.
        halo: the model's halo (``patch_size // 2``).
        input_scale: reflectance scale of the input's stored values.
        tile: unit edge in pixels.
        probabilities: also write ``<dst>_proba.tif`` (uint8 probability x 254 per class, and a
            last band with the confidence, the top probability; 255 = nodata).
        model_id: identifies the model in the resume manifest (:func:`model_digest`).
    """

    def __init__(
        self,
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
        model_id: str = "",
    ) -> None:
        self.src_path, self.dst_path = Path(src_path), Path(dst_path)
        info = raster_info(self.src_path)
        self.indices = band_indices(info, bands)
        self.mean = np.asarray(mean, np.float32)[:, None, None]
        self.std = np.asarray(std, np.float32)[:, None, None]
        self.legend, self.halo, self.input_scale = legend, int(halo), float(input_scale)
        self.tile, self.model_id = int(tile), model_id
        self.units = block_windows(info.width, info.height, self.tile)
        grid = {
            "crs": info.crs,
            "transform": info.transform,
            "width": info.width,
            "height": info.height,
        }
        names = {f"CLASS_{c.code}": c.name for c in legend.classes}
        # GIS-readable classes: colour table, category names (index = code), MODE overviews
        categories = category_names(
            {c.code: c.name for c in legend.classes}, None if 0 in legend.codes else 0
        )
        self.outputs = [
            OutputSpec(
                self.dst_path,
                count=1,
                dtype="uint8",
                nodata=0,
                descriptions=["CLASS"],
                colormap=legend.colormap(),
                categories=categories,
                tags={"LEGEND": legend.name, **names},
                **grid,
            )
        ]
        if probabilities:
            self.outputs.append(
                OutputSpec(
                    self.dst_path.with_name(self.dst_path.stem + "_proba.tif"),
                    count=len(legend) + 1,
                    dtype="uint8",
                    nodata=255,
                    descriptions=[f"P_{c.name.upper().replace(' ', '_')}" for c in legend.classes]
                    + ["CONFIDENCE"],
                    tags={"SCALE": str(1 / 254)},
                    **grid,
                )
            )
        self._src: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_src": None}  # open files stay in their process

    def fingerprint(self) -> dict[str, Any]:
        """The source, the model and the plan (see :class:`~bsrlc.inference.jobs.TileStore`)."""
        return {
            "task": "classify",
            "source": source_fingerprint(self.src_path),
            "model": self.model_id,
            "bands": self.indices,
            "halo": self.halo,
            "tile": self.tile,
        }

    def compute(self, index: int, net: torch.nn.Module, device: torch.device) -> list[np.ndarray]:
        """Classify one tile.

        Args:
            index: the unit.
            net: the classifier.
            device: where it runs.

        Returns:
            The codes (1, h, w) and, with probabilities, (K + 1, h, w) uint8.

        Raises:
            InputError: if the raster cannot be read there (corrupt or truncated).
        """
        if self._src is None:
            self._src = open_raster(self.src_path)
        window, halo = self.units[index], self.halo
        try:
            data, valid = read_with_halo(self._src, self.indices, window, halo, self.input_scale)
        except RasterioIOError as err:
            raise InputError(
                f"{self.src_path}: cannot read rows {window.row_off}-"
                f"{window.row_off + window.height} ({err}); the file is corrupt or truncated, "
                "re-create it"
            ) from None
        data -= self.mean
        data /= self.std
        data[:, ~valid] = 0.0  # nodata -> the band mean
        x = torch.from_numpy(data).to(device)
        logits = classify_tile(net, x, halo).float().cpu()
        core_valid = valid[halo : halo + int(window.height), halo : halo + int(window.width)]
        codes = self.legend.code_of(logits.argmax(0).numpy())
        codes[~core_valid] = 0
        out = [codes[None].astype(np.uint8)]
        if len(self.outputs) > 1:
            proba = torch.softmax(logits, 0).numpy()
            scaled = np.round(np.concatenate([proba, proba.max(0, keepdims=True)]) * 254)
            scaled = scaled.astype(np.uint8)
            scaled[:, ~core_valid] = 255
            out.append(scaled)
        return out


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

    Runs :class:`ClassifyJob` in this process (:func:`~bsrlc.inference.jobs.run_local`):
    finished tiles of an interrupted run are reused.

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
        probabilities: also write ``<dst>_proba.tif`` (see :class:`ClassifyJob`).
        device: torch device.
        overwrite: replace existing outputs (and discard finished tiles).
        progress: show a progress bar.

    Returns:
        The class map's path.

    Raises:
        InputError: if the map exists and ``overwrite`` is false.
    """
    job = ClassifyJob(
        src_path,
        dst_path,
        bands,
        mean,
        std,
        legend,
        halo,
        input_scale,
        tile,
        probabilities,
        model_id=model_digest(net),
    )
    if not overwrite and job.outputs[0].path.exists():
        raise InputError(f"{job.outputs[0].path}: output exists; pass overwrite=true")
    return run_local(job, net, device, overwrite=overwrite, progress=progress)[0]
