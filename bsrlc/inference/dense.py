"""Map a whole raster with a centre-patch classifier, tile by tile, densely.

Each tile is read with a halo of ``patch_size // 2`` pixels (mirrored at the raster's edges),
classified in one dense pass (``forward_dense``: identical to classifying every pixel's own
patch) and written at once, so memory depends on the tile size only. Networks without a dense
form (the padded seed variant) classify each pixel's patch in batches. Pixels whose input is
nodata are nodata (0) in the map.
"""

from __future__ import annotations

import json
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
from bsrlc.errors import ConfigError, InputError
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
    src: Any,
    indices: Sequence[int],
    window: Window,
    halo: int,
    scale: float | Sequence[float],
    offset: float | Sequence[float] = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Read a window grown by ``halo`` on every side, mirroring beyond the raster's edges.

    Args:
        src: an open rasterio dataset.
        indices: 1-based bands.
        window: the core window.
        halo: pixels added on every side.
        scale: reflectance per stored value, one or one per band.
        offset: reflectance of a stored 0 (reflectance = value x scale + offset), one or one
            per band.

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
    data = raw.astype(np.float32) * _per_band(scale)
    if np.any(np.asarray(offset) != 0):
        data += _per_band(offset)
    valid &= np.isfinite(data).all(axis=0)
    pad = ((rr0 - r0, r1 - rr1), (cc0 - c0, c1 - cc1))
    if any(p for pair in pad for p in pair):
        mode = "reflect" if min(data.shape[1:]) > max(max(pad)) else "edge"
        data = np.pad(data, ((0, 0), *pad), mode=mode)
        valid = np.pad(valid, pad, mode=mode)
    return data, valid


def _per_band(value: float | Sequence[float]) -> np.float32 | np.ndarray:
    """A number as float32, or one per band as a (bands, 1, 1) float32 array."""
    if np.ndim(value) == 0:
        return np.float32(value)  # type: ignore[arg-type]
    return np.asarray(value, np.float32).reshape(-1, 1, 1)


def _number_or_list(value: float | Sequence[float]) -> float | list[float]:
    """A scaling as a number, or a list with one per band (for pickling and fingerprints)."""
    if np.ndim(value) == 0:
        return float(value)  # type: ignore[arg-type]
    values = [float(v) for v in value]  # type: ignore[union-attr]
    return values[0] if len(set(values)) == 1 else values


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


def class_map_output(path: Path, legend: Legend, grid: dict[str, Any]) -> OutputSpec:
    """The output of a uint8 class map: colour table, category names, legend tags.

    Args:
        path: the map's path.
        legend: its classes.
        grid: ``crs``, ``transform``, ``width`` and ``height``.

    Returns:
        The output spec (GIS-readable classes; MODE overviews come with the colour table).
    """
    categories = category_names(
        {c.code: c.name for c in legend.classes}, None if 0 in legend.codes else 0
    )
    return OutputSpec(
        Path(path),
        count=1,
        dtype="uint8",
        nodata=0,
        descriptions=["CLASS"],
        colormap=legend.colormap(),
        categories=categories,
        tags={"LEGEND": legend.name, **{f"CLASS_{c.code}": c.name for c in legend.classes}},
        **grid,
    )


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
        input_scale: reflectance per stored value of the input, one or one per band
            (reflectance = value x ``input_scale`` + ``input_offset``;
            :func:`bsrlc.inference.checks.input_band_scalings` finds both from the raster).
        tile: unit edge in pixels.
        probabilities: also write ``<dst>_proba.tif`` (uint8 probability x 254 per class, and a
            last band with the confidence, the top probability; 255 = nodata).
        model_id: identifies the model in the resume manifest (:func:`model_digest`).
        temperature: calibration temperature of the logits (from training).
        logit_offset: (K,) added to the calibrated logits: the class-prior correction
            (:func:`correct_priors`), None for none. Probabilities are written after it.
        decision_offset: (K,) further added before the arg max only (``decision=area``).
        input_offset: reflectance of a stored 0 of the input, one or one per band.
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
        input_scale: float | Sequence[float] = 1e-4,
        tile: int = 512,
        probabilities: bool = False,
        model_id: str = "",
        temperature: float = 1.0,
        logit_offset: Sequence[float] | None = None,
        decision_offset: Sequence[float] | None = None,
        input_offset: float | Sequence[float] = 0.0,
    ) -> None:
        self.src_path, self.dst_path = Path(src_path), Path(dst_path)
        self.input_scale = _number_or_list(input_scale)
        self.input_offset = _number_or_list(input_offset)
        self.temperature = float(temperature)
        self.logit_offset = None if logit_offset is None else [float(v) for v in logit_offset]
        self.decision_offset = (
            None if decision_offset is None else [float(v) for v in decision_offset]
        )
        info = raster_info(self.src_path)
        self.indices = band_indices(info, bands)
        self.mean = np.asarray(mean, np.float32)[:, None, None]
        self.std = np.asarray(std, np.float32)[:, None, None]
        self.legend, self.halo = legend, int(halo)
        self.tile, self.model_id = int(tile), model_id
        self.units = block_windows(info.width, info.height, self.tile)
        grid = {
            "crs": info.crs,
            "transform": info.transform,
            "width": info.width,
            "height": info.height,
        }
        self.outputs = [class_map_output(self.dst_path, legend, grid)]
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
        # Logits of whole units kept by sample_logits when it classifies the whole raster for
        # the prior estimate, so that mapping it does not classify it a second time.
        self._kept: dict[int, tuple[torch.Tensor, np.ndarray]] = {}

    def __getstate__(self) -> dict[str, Any]:
        # open files stay in their process; kept logits are not shipped to workers
        return {**self.__dict__, "_src": None, "_kept": {}}

    def fingerprint(self) -> dict[str, Any]:
        """The source, the model and the plan (see :class:`~bsrlc.inference.jobs.TileStore`)."""
        return {
            "task": "classify",
            "source": source_fingerprint(self.src_path),
            "model": self.model_id,
            "bands": self.indices,
            "scaling": [self.input_scale, self.input_offset],
            "halo": self.halo,
            "tile": self.tile,
            "temperature": self.temperature,
            "logit_offset": self.logit_offset,
            "decision_offset": self.decision_offset,
        }

    def logits(
        self, index: int, net: torch.nn.Module, device: torch.device
    ) -> tuple[torch.Tensor, np.ndarray]:
        """Calibrated logits of one tile (before any prior correction).

        Args:
            index: the unit.
            net: the classifier.
            device: where it runs.

        Returns:
            ((K, h, w) float logits / temperature on the CPU, (h, w) bool valid input).

        Raises:
            InputError: if the raster cannot be read there (corrupt or truncated).
        """
        kept = self._kept.pop(index, None)
        if kept is not None:
            return kept
        return self.window_logits(self.units[index], net, device)

    def window_logits(
        self, window: Window, net: torch.nn.Module, device: torch.device
    ) -> tuple[torch.Tensor, np.ndarray]:
        """Calibrated logits of any window of the raster (see :meth:`logits`).

        Args:
            window: the window.
            net: the classifier.
            device: where it runs.

        Returns:
            ((K, h, w) logits, (h, w) bool valid input).

        Raises:
            InputError: if the raster cannot be read there (corrupt or truncated).
        """
        if self._src is None:
            self._src = open_raster(self.src_path)
        halo = self.halo
        try:
            data, valid = read_with_halo(
                self._src, self.indices, window, halo, self.input_scale, self.input_offset
            )
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
        logits = classify_tile(net, x, halo).float().cpu() / self.temperature
        core_valid = valid[halo : halo + int(window.height), halo : halo + int(window.width)]
        return logits, core_valid

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
        logits, core_valid = self.logits(index, net, device)
        if self.logit_offset is not None:
            logits += torch.tensor(self.logit_offset, dtype=logits.dtype)[:, None, None]
        decide = logits
        if self.decision_offset is not None:
            decide = logits + torch.tensor(self.decision_offset, dtype=logits.dtype)[:, None, None]
        codes = self.legend.code_of(decide.argmax(0).numpy())
        codes[~core_valid] = 0
        out = [codes[None].astype(np.uint8)]
        if len(self.outputs) > 1:
            proba = torch.softmax(logits, 0).numpy()
            scaled = np.round(np.concatenate([proba, proba.max(0, keepdims=True)]) * 254)
            scaled = scaled.astype(np.uint8)
            scaled[:, ~core_valid] = 255
            out.append(scaled)
        return out


def lattice_windows(
    width: int, height: int, n: int, window: int, rng: np.random.Generator
) -> list[Window]:
    """``n`` windows on a regular lattice over the raster, at a random offset.

    A systematic sample: every part of the raster is represented, so class shares of a
    clustered landscape (towns, industrial zones) vary far less between draws than with
    windows placed independently at random (in a 768 px demo map, rare-class shares from 48
    random 64 px windows were off by up to 45 %; from the lattice, mostly within 10 %).

    Args:
        width: raster width.
        height: raster height.
        n: about how many windows.
        window: window edge.
        rng: draws the lattice's offset.

    Returns:
        The windows (clipped to the raster).
    """
    ny = max(1, round(float(np.sqrt(n * height / width))))
    nx = max(1, int(np.ceil(n / ny)))
    step_y, step_x = height / ny, width / nx
    r0 = rng.uniform(0, max(step_y - window, 0.0))
    c0 = rng.uniform(0, max(step_x - window, 0.0))
    out = []
    for i in range(ny):
        for j in range(nx):
            r, c = int(r0 + i * step_y), int(c0 + j * step_x)
            out.append(Window(c, r, min(window, width - c), min(window, height - r)))
    return out


def sample_logits(
    job: ClassifyJob,
    net: torch.nn.Module,
    device: str | torch.device = "cpu",
    max_pixels: int = 200_000,
    window: int = 64,
    seed: int = 0,
    whole_below: int = 4_000_000,
) -> np.ndarray:
    """Calibrated logits of a raster's valid pixels: all of them, or a systematic sample.

    A raster of up to ``whole_below`` pixels is classified whole; its units' logits are kept
    in the job, so mapping it afterwards costs no second pass. A larger raster is represented
    by ``max_pixels`` pixels in windows on a regular lattice (:func:`lattice_windows`).

    Args:
        job: the classification job of the raster.
        net: the classifier.
        device: where it runs.
        max_pixels: the sample size of a large raster (before nodata is left out).
        window: edge of the sampled windows.
        seed: seed of the lattice's offset.
        whole_below: rasters with fewer pixels than this are used whole.

    Returns:
        (N, K) float64 logits (before any prior correction).

    Raises:
        InputError: if the sampled windows hold no valid pixel.
    """
    info = raster_info(job.src_path)
    dev = torch.device(device)
    parts = []
    if info.width * info.height <= max(whole_below, max_pixels):
        windows = list(job.units)
        for i, w in enumerate(windows):
            logits, valid = job.window_logits(w, net, dev)
            job._kept[i] = (logits, valid)
            parts.append(logits.numpy()[:, valid].T)
    else:
        n = max(1, max_pixels // (window * window))
        rng = np.random.default_rng(seed)
        windows = lattice_windows(info.width, info.height, n, window, rng)
        for w in windows:
            logits, valid = job.window_logits(w, net, dev)
            parts.append(logits.numpy()[:, valid].T)
    z = np.concatenate(parts).astype(np.float64)
    if z.shape[0] == 0:
        raise InputError(
            f"{job.src_path}: no valid pixel in {len(windows)} sampled windows; is the raster "
            "all nodata?"
        )
    return z


def correct_priors(
    job: ClassifyJob,
    net: torch.nn.Module,
    train_priors: Sequence[float] | None,
    priors: str | Sequence[float] | dict[str, float] = "em",
    decision: str = "argmax",
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> dict[str, Any]:
    """Set a job's class-prior correction and decision rule from the raster itself.

    ``priors="em"`` estimates the raster's class shares from the classifier's own calibrated
    posteriors on a pixel sample (:func:`~bsrlc.inference.priors.em_priors`, Saerens et al.
    2002); a list or a ``{class name: share}`` mapping gives them; ``"none"`` keeps the training
    priors. ``decision="area"`` then shifts the arg max so that the map's class shares equal
    those priors (:func:`~bsrlc.inference.priors.area_matching_offset`).

    Args:
        job: the job to set (``logit_offset`` and ``decision_offset``).
        net: the classifier.
        train_priors: (K,) priors the classifier was trained under (None: uniform).
        priors: ``em``, ``none``, shares per class (in legend order) or per class name.
        decision: ``argmax`` (Bayes: most probable class) or ``area`` (class shares kept).
        device: where the sample is classified.
        seed: seed of the pixel sample.

    Returns:
        ``{"priors": {name: share}, "train_priors": {...}, "decision": str}``.

    Raises:
        ConfigError: for an unknown option or shares that do not fit the legend.
    """
    from bsrlc.inference.priors import area_matching_offset, em_priors, prior_offset

    names = job.legend.names
    k = len(names)
    train = np.asarray(train_priors if train_priors is not None else [1.0 / k] * k, np.float64)
    if decision not in {"argmax", "area"}:
        raise ConfigError(f"decision={decision}: use argmax or area")
    if isinstance(priors, str) and priors not in {"em", "none"}:
        raise ConfigError(f"priors={priors}: use em, none, or shares per class")
    z = None
    if isinstance(priors, str) and priors == "none":
        target = train / train.sum()
    elif isinstance(priors, str):
        z = sample_logits(job, net, device, seed=seed)
        p = np.exp(z - z.max(1, keepdims=True))
        target = em_priors(p / p.sum(1, keepdims=True), train)
    else:
        if isinstance(priors, dict):
            unknown = sorted(set(priors) - set(names))
            if unknown:
                raise ConfigError(f"priors: unknown class(es) {unknown}; the legend has {names}")
            given = [float(priors.get(n, 0.0)) for n in names]
        else:
            given = [float(v) for v in priors]
        if len(given) != k or min(given) < 0 or sum(given) <= 0:
            raise ConfigError(f"priors={list(given)}: give {k} non-negative shares ({names})")
        target = np.asarray(given) / sum(given)
    offset = prior_offset(train, target)
    if len(job.outputs) > 1:  # the priors the written probabilities are under (temporal pass)
        job.outputs[1].tags["PRIORS"] = json.dumps([round(float(v), 6) for v in target])
    job.logit_offset = None if isinstance(priors, str) and priors == "none" else offset.tolist()
    job.decision_offset = None
    if decision == "area":
        if z is None:
            z = sample_logits(job, net, device, seed=seed)
        job.decision_offset = area_matching_offset(z + offset, target).tolist()
    return {
        "priors": {n: float(v) for n, v in zip(names, target, strict=True)},
        "train_priors": {n: float(v) for n, v in zip(names, train / train.sum(), strict=True)},
        "decision": decision,
    }


def classify_raster(
    net: torch.nn.Module,
    src_path: str | Path,
    dst_path: str | Path,
    bands: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
    legend: Legend,
    halo: int,
    input_scale: float | Sequence[float] = 1e-4,
    tile: int = 512,
    probabilities: bool = False,
    device: str = "cpu",
    overwrite: bool = True,
    progress: bool = True,
    temperature: float = 1.0,
    train_priors: Sequence[float] | None = None,
    priors: str | Sequence[float] | dict[str, float] = "none",
    decision: str = "argmax",
    input_offset: float | Sequence[float] = 0.0,
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
        input_scale: reflectance per stored value of the input, one or one per band.
        tile: core tile edge in pixels.
        probabilities: also write ``<dst>_proba.tif`` (see :class:`ClassifyJob`).
        device: torch device.
        overwrite: replace existing outputs (and discard finished tiles).
        progress: show a progress bar.
        temperature: calibration temperature (the checkpoint's ``temperature``).
        train_priors: priors the classifier was trained under (the checkpoint's).
        priors: class-prior correction, see :func:`correct_priors`.
        decision: ``argmax`` or ``area``, see :func:`correct_priors`.
        input_offset: reflectance of a stored 0 of the input, one or one per band.

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
        temperature=temperature,
        input_offset=input_offset,
    )
    correction = correct_priors(job, net, train_priors, priors, decision, device)
    if correction["decision"] != "argmax" or priors != "none":
        log.info(
            "%s: class priors %s (%s)",
            src_path,
            ", ".join(f"{k} {v:.3f}" for k, v in correction["priors"].items()),
            priors if isinstance(priors, str) else "given",
        )
    if not overwrite and job.outputs[0].path.exists():
        raise InputError(f"{job.outputs[0].path}: output exists; pass overwrite=true")
    return run_local(job, net, device, overwrite=overwrite, progress=progress)[0]
