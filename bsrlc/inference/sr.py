"""Tiled super-resolution of a Landsat STM raster (30 m) into a 10 m COG.

One path: :func:`run_sr_job` runs an :class:`SRJob` (``predict.py``, the demo and the tests
alike). The job splits the raster into units (``unit`` x ``unit`` LR windows, resumable and
spread over processes, :mod:`bsrlc.inference.jobs`); each unit is read with a margin of real
pixels (the model's receptive field plus the feather) and super-resolved by
:func:`super_resolve_stream`, so the result does not depend on the units.

:func:`super_resolve_stream` is the core: one row of tiles at a time (in column strips when
asked), the LR window of the tile row is read, converted to reflectance, normalised, filled
where it is nodata (with the band mean, i.e. 0 in normalised units, so no NaN reaches the
network), padded at the raster border (reflect), super-resolved tile by tile (batched,
``torch.inference_mode``, eval mode) and blended with feathered overlaps
(:mod:`bsrlc.inference.tiling`). Output rows are handed on as soon as no later tile touches
them, so memory is bounded by the tile and unit sizes, whatever the raster size.
:func:`super_resolve_array` runs it on an in-memory array (the reference the tests compare with).

The output has the input's CRS and top-left corner, a third of its pixel size (``transform``
scaled by ``1 / scale``), the input band names, int16 reflectance x 10000 and nodata -32768
wherever the LR pixel under it is nodata in any input band.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from affine import Affine
from rasterio.enums import MaskFlags
from rasterio.windows import Window
from torch import nn
from tqdm.auto import tqdm

from bsrlc.errors import ConfigError, InputError
from bsrlc.inference.jobs import (
    OutputSpec,
    RasterJob,
    model_digest,
    run_lightning,
    run_local,
    source_fingerprint,
)
from bsrlc.inference.tiling import RowAccumulator, Span, TilePlan, default_blend, pad_border
from bsrlc.raster import band_indices, block_windows, open_raster, raster_info

log = logging.getLogger(__name__)

OUT_SCALE = 10000  # int16 reflectance x 10000, as the STMs
OUT_NODATA = -32768
FALLBACK_HALO = 32  # LR pixels read around each tile when the model has no receptive_field
DEFAULT_FEATHER = 4  # LR pixels of feathered overlap beyond each tile core
DEFAULT_STRIP = 2048  # LR columns per strip (bounds memory on wide rasters)
BLOCK = 256  # output COG block size

# (LR row start, row stop, col start, col stop) ->
#     (reflectance (C, rows, cols) float32, nodata (rows, cols) bool), clipped to the raster
WindowReader = Callable[[int, int, int, int], tuple[np.ndarray, np.ndarray]]


def receptive_field(model: nn.Module) -> int | None:
    """The model's receptive field in LR pixels, if it declares one.

    Args:
        model: a generator (bsrlc's expose ``receptive_field``).

    Returns:
        The receptive field, or None.
    """
    rf = getattr(model, "receptive_field", None)
    return int(rf) if rf is not None else None


def _output_bands(model: nn.Module, in_bands: int, scale: int, device: torch.device) -> int:
    """Output band count: the ``out_bands`` attribute, or one tiny forward pass."""
    out = getattr(model, "out_bands", None)
    if out is not None:
        return int(out)
    with torch.inference_mode():
        param = next(model.parameters(), None)
        dtype = param.dtype if param is not None else torch.float32
        y = model(torch.zeros(1, in_bands, 8, 8, device=device, dtype=dtype))
    if tuple(y.shape[-2:]) != (8 * scale, 8 * scale):
        raise ConfigError(f"the model maps 8x8 pixels to {tuple(y.shape[-2:])}, not x{scale}")
    return int(y.shape[1])


def check_model(model: nn.Module, bands: int, scale: int, device: torch.device) -> None:
    """Fail in one line for a model of another scale or band count than the raster needs.

    Args:
        model: the generator, on ``device``.
        bands: the number of bands it reads.
        scale: the resolution ratio asked for.
        device: where the model is.

    Raises:
        ConfigError: if the model upsamples by another factor, or outputs other bands than it
            reads (the output is de-normalised with the input statistics).
    """
    model_scale = getattr(model, "scale", scale)
    if int(model_scale) != scale:
        raise ConfigError(f"the model upsamples x{model_scale} but scale={scale} was given")
    out_bands = _output_bands(model, bands, scale, device)
    if out_bands != bands:
        raise ConfigError(
            f"the model outputs {out_bands} bands from {bands}; the output is de-normalised "
            "with the input statistics, so it must output the bands it reads"
        )


def _halo_and_blend(rf: int | None, overlap: int | None, feather: int | None) -> tuple[int, int]:
    """The context read around tiles and the feathered part of it."""
    if overlap is None:
        blend = DEFAULT_FEATHER if feather is None else feather
        halo = (rf if rf is not None else FALLBACK_HALO) + blend
    else:
        halo = overlap
        blend = default_blend(halo, rf, DEFAULT_FEATHER) if feather is None else feather
    if halo < 0 or not 0 <= blend <= halo:
        raise ConfigError(f"overlap={halo}, feather={blend}: need 0 <= feather <= overlap")
    if rf is not None and halo - blend < rf:
        log.warning(
            "overlap %d - feather %d < receptive field %d: tile seams are feathered, not exact",
            halo,
            blend,
            rf,
        )
    return halo, blend


def super_resolve_stream(
    model: nn.Module,
    read: WindowReader,
    height: int,
    width: int,
    scale: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    tile: int = 256,
    overlap: int | None = None,
    feather: int | None = None,
    strip: int | None = DEFAULT_STRIP,
    device: str | torch.device = "cpu",
    batch_size: int = 1,
    border: str = "reflect",
    ramp: str = "cosine",
    align: int = 1,
    chunk: int | None = None,
    progress: bool = False,
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """Super-resolve a raster given as a window reader, yielding finished output blocks.

    Args:
        model: the generator, normalised LR (B, C, h, w) -> normalised HR (B, C, s*h, s*w). It
            is put in eval mode and moved to ``device``.
        read: returns (reflectance (C, rows, cols) float32, nodata (rows, cols) bool) for an LR
            window inside the raster.
        height: LR rows.
        width: LR columns.
        scale: the resolution ratio s.
        mean: per-band reflectance mean the model was trained with (LR and HR alike).
        std: per-band reflectance std.
        tile: tile core size in LR pixels.
        overlap: LR pixels of context read around each core (the halo). Default: the model's
            receptive field plus the feather, which makes tiling exact.
        feather: LR pixels of feathered blending beyond each core. Default: 4 when the halo
            leaves room (:func:`~bsrlc.inference.tiling.default_blend`).
        strip: LR columns per strip (None: the whole width in one strip).
        device: torch device.
        batch_size: tiles per forward pass.
        border: padding at the raster border, ``reflect`` or ``replicate``.
        ramp: feathering ramp, ``cosine`` or ``linear``.
        align: flush output rows in multiples of this (the writer's block height), except at
            the end.
        chunk: yield at most this many rows at a time.
        progress: show a progress bar over tiles.

    Yields:
        (first HR row, first HR column, (C, rows, cols) float32 reflectance, (rows, cols) bool
        nodata). The arrays are scratch buffers: use or copy them before the next block.

    Raises:
        ConfigError: for inconsistent statistics or sizes, or a model of another scale or band
            count.
    """
    n_bands = len(mean)
    if len(std) != n_bands:
        raise ConfigError(f"{len(mean)} means but {len(std)} stds; give one per band")
    if tile <= 0 or batch_size <= 0 or (strip is not None and strip <= 0):
        raise ConfigError(f"tile={tile}, strip={strip}, batch_size={batch_size} must be positive")
    dev = torch.device(device)
    model = model.to(dev).eval()
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32  # e.g. a half model on GPU
    check_model(model, n_bands, scale, dev)
    halo, blend = _halo_and_blend(receptive_field(model), overlap, feather)
    plan = TilePlan(height, width, tile, halo, blend, ramp, strip)
    mean_a = np.asarray(mean, np.float32)[:, None, None]  # (C, 1, 1)
    std_a = np.asarray(std, np.float32)[:, None, None]
    weights: dict[tuple[Span, int], np.ndarray] = {}

    def weight(span: Span) -> np.ndarray:  # 1-D feathering weights, cached per span
        key = (span, scale)
        if key not in weights:
            weights[key] = span.weight(scale, ramp).astype(np.float32)
        return weights[key]

    bar = tqdm(total=len(plan), unit="tile", desc="super-resolving", disable=not progress)
    with torch.inference_mode(), bar:
        for k, (x0, x1) in enumerate(plan.strips):
            row_norm, col_norm = plan.weight_sums(k, scale)
            capacity = scale * (min(tile, height) + 2 * blend) + align
            acc = _Accumulator(n_bands, row_norm, col_norm, x0, x1, scale, capacity)
            # the strip's LR columns read, padding included: [x0 - halo, x1 + halo)
            c0, c1 = max(0, x0 - halo), min(width, x1 + halo)
            pad_cols = (c0 - (x0 - halo), (x1 + halo) - c1)
            for i, tiles in enumerate(plan.rows(k)):
                rs = tiles[0].rows
                r0, r1 = rs.clipped_read(height)
                refl, nodata = read(r0, r1, c0, c1)  # (C, rows, cols), (rows, cols)
                core_rows = slice(rs.core[0] - r0, rs.core[1] - r0)
                acc.add_nodata(nodata[core_rows, x0 - c0 : x1 - c0], rs.core[0])
                x = _normalise(refl, nodata, mean_a, std_a)  # in place
                # -> (C, read rows, x1 - x0 + 2 halo): as one pass over the padded raster sees
                x = pad_border(x, rs.padding(height), pad_cols, border)
                for b in range(0, len(tiles), batch_size):
                    batch = tiles[b : b + batch_size]
                    # (B, C, th, tw); x's column 0 is LR column x0 - halo
                    inp = np.stack([x[:, :, _shift(t.cols.read, halo - x0)] for t in batch])
                    out = model(torch.from_numpy(inp).to(dev, dtype))  # (B, C, s*th, s*tw)
                    out_np = out.float().cpu().numpy()
                    out_np *= std_a
                    out_np += mean_a  # normalised -> reflectance
                    for t, y in zip(batch, out_np, strict=True):
                        ry = _crop(rs, scale)
                        cx = _crop(t.cols, scale)
                        w = np.outer(weight(rs), weight(t.cols))  # (keep rows, keep cols), HR
                        acc.add(y[:, ry, cx], w, rs.keep[0] * scale, t.cols.keep[0] * scale)
                    bar.update(len(batch))
                done = plan.final_rows(i, scale)
                if i + 1 < len(plan.row_spans):
                    done = done // align * align
                for row, block, flags in acc.flush(done, chunk):
                    yield row, x0 * scale, block, flags


def _shift(rng: tuple[int, int], by: int) -> slice:
    return slice(rng[0] + by, rng[1] + by)


def _crop(span: Span, scale: int) -> slice:
    """The keep range of a span in the output of its read range."""
    return slice((span.keep[0] - span.read[0]) * scale, (span.keep[1] - span.read[0]) * scale)


def _normalise(
    refl: np.ndarray, nodata: np.ndarray, mean: np.ndarray, std: np.ndarray
) -> np.ndarray:
    """(reflectance - mean) / std in place, 0 (the mean) at nodata and non-finite values."""
    x = refl.astype(np.float32, copy=False)
    x -= mean
    x /= std
    x[:, nodata] = 0.0  # nodata must not bleed NaN (or -3.2768) into its neighbours
    np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return x


class _Accumulator:
    """:class:`~bsrlc.inference.tiling.RowAccumulator` of a strip plus its LR nodata rows."""

    def __init__(
        self,
        bands: int,
        row_norm: np.ndarray,
        col_norm: np.ndarray,
        x0: int,
        x1: int,
        scale: int,
        capacity: int,
    ) -> None:
        self.values = RowAccumulator(bands, row_norm, col_norm, x0 * scale, capacity)
        self.scale = scale
        self.mask = np.zeros((0, x1 - x0), bool)  # LR nodata rows [mask_top, mask_top + len)
        self.mask_top = 0

    def add(self, block: np.ndarray, weight: np.ndarray, row: int, col: int) -> None:
        self.values.add(block, weight, row, col)

    def add_nodata(self, rows: np.ndarray, lr_row: int) -> None:
        """Remember the strip's LR nodata rows from ``lr_row`` on (rows already held stay)."""
        have = self.mask_top + self.mask.shape[0]
        if lr_row + rows.shape[0] > have:
            self.mask = np.concatenate([self.mask, rows[have - lr_row :]])

    def flush(self, stop: int, chunk: int | None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        s = self.scale
        for row, block in self.values.flush(stop, chunk):
            n = block.shape[1]
            lr0, lr1 = row // s, -(-(row + n) // s)
            lr_mask = self.mask[lr0 - self.mask_top : lr1 - self.mask_top]
            hr_mask = lr_mask.repeat(s, 0).repeat(s, 1)  # nearest: an HR pixel's LR pixel
            off = row - lr0 * s
            yield row, block, hr_mask[off : off + n]
        keep_from = self.values.top // s  # the LR row under the next HR row may be needed
        if keep_from > self.mask_top:
            self.mask = self.mask[keep_from - self.mask_top :]
            self.mask_top = keep_from


def super_resolve_array(
    model: nn.Module,
    lr: np.ndarray,
    scale: int,
    mean: Sequence[float],
    std: Sequence[float],
    nodata: np.ndarray | None = None,
    *,
    tile: int = 256,
    overlap: int | None = None,
    feather: int | None = None,
    strip: int | None = DEFAULT_STRIP,
    device: str | torch.device = "cpu",
    batch_size: int = 1,
    border: str = "reflect",
    ramp: str = "cosine",
) -> np.ndarray:
    """Super-resolve an in-memory LR reflectance array (tests, small rasters).

    Args:
        model: the generator (see :func:`super_resolve_stream`).
        lr: (C, H, W) reflectance.
        scale: the resolution ratio.
        mean: per-band reflectance mean.
        std: per-band reflectance std.
        nodata: optional (H, W) bool mask of nodata LR pixels.
        tile: tile core size in LR pixels (>= H and W, with ``strip`` None, for one pass).
        overlap: halo in LR pixels (default: receptive field + feather).
        feather: feathered blend width in LR pixels.
        strip: LR columns per strip (None: one strip).
        device: torch device.
        batch_size: tiles per forward pass.
        border: ``reflect`` or ``replicate`` padding at the raster border.
        ramp: ``cosine`` or ``linear`` feathering.

    Returns:
        (C, s*H, s*W) float32 reflectance, NaN where nodata.
    """
    c, h, w = lr.shape
    mask = np.zeros((h, w), bool) if nodata is None else nodata.astype(bool)
    src = lr.astype(np.float32)

    def read(r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        return src[:, r0:r1, c0:c1].copy(), mask[r0:r1, c0:c1]

    out = np.empty((c, h * scale, w * scale), np.float32)
    for row, col, block, flags in super_resolve_stream(
        model,
        read,
        h,
        w,
        scale,
        mean,
        std,
        tile=tile,
        overlap=overlap,
        feather=feather,
        strip=strip,
        device=device,
        batch_size=batch_size,
        border=border,
        ramp=ramp,
    ):
        block[:, flags] = np.nan
        out[:, row : row + block.shape[1], col : col + block.shape[2]] = block
    return out


def to_int16(block: np.ndarray, nodata: np.ndarray) -> np.ndarray:
    """Reflectance to int16 x 10000 (rounded, clipped), with -32768 where nodata.

    ``block`` is used as scratch space (modified in place) to keep memory flat.

    Args:
        block: (C, rows, cols) float32 reflectance.
        nodata: (rows, cols) bool.

    Returns:
        (C, rows, cols) int16.
    """
    block *= OUT_SCALE
    np.rint(block, out=block)
    np.clip(block, -32767, 32767, out=block)
    out = block.astype(np.int16)
    out[:, nodata] = OUT_NODATA
    return out


def _window_reader(
    ds: rasterio.io.DatasetReader, idx: list[int], input_scale: float, input_offset: float = 0.0
) -> WindowReader:
    """Read LR windows of the bands as reflectance (value x scale + offset) with nodata masks."""
    nodata_value = ds.nodata
    use_mask = nodata_value is None and any(
        MaskFlags.per_dataset in ds.mask_flag_enums[i - 1] for i in idx
    )

    def read(r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        window = Window(c0, r0, c1 - c0, r1 - r0)
        dn = ds.read(idx, window=window)  # (C, rows, cols)
        if nodata_value is not None:
            nodata = (dn == nodata_value).any(0)
        elif use_mask:
            nodata = ds.read_masks(idx[0], window=window) == 0
        else:
            nodata = np.zeros(dn.shape[1:], bool)
        if dn.dtype.kind == "f":
            nodata |= ~np.isfinite(dn).all(0)
        refl = dn.astype(np.float32)
        refl *= np.float32(input_scale)
        if input_offset:
            refl += np.float32(input_offset)
        return refl, nodata

    return read


def _check_request(
    src: Path, dst: Path, bands: Sequence[str], mean: Sequence[float], std: Sequence[float]
) -> None:
    """Fail in one line for no bands, statistics that do not match them, or dst == src."""
    if not bands:
        raise ConfigError("no bands given; pass the band names the model was trained on")
    if len(mean) != len(bands) or len(std) != len(bands):
        raise ConfigError(
            f"{len(bands)} bands but {len(mean)} means and {len(std)} stds; use the "
            "normalisation statistics saved with the model"
        )
    if src.resolve() == dst.resolve():
        raise InputError(f"{dst}: output would overwrite the input; choose another path")


class SRJob(RasterJob):
    """Super-resolution of a raster in independent units, for resumable and DDP prediction.

    Each unit is a ``unit`` x ``unit`` LR window, super-resolved by :func:`super_resolve_stream`
    from that window grown by the model's halo (receptive field + feather) of real pixels on
    every side, and cropped back. As the default halo makes the tiling exact, every output
    pixel gets the value a single pass over the whole raster gives (to float rounding), whatever
    the units; the margins cost ``((unit + 2 halo) / unit)^2 - 1`` extra compute (18 % at unit
    1024 and halo 44).

    Args:
        src: the LR STM raster.
        dst: the output COG.
        bands: band descriptions the model reads, in its order (kept on the output).
        scale: the resolution ratio.
        mean: per-band reflectance mean the model was trained with.
        std: per-band reflectance std.
        input_scale: reflectance per stored value of ``src`` (reflectance = value x
            ``input_scale`` + ``input_offset``; :func:`bsrlc.inference.checks.input_scaling`
            finds both from the raster).
        input_offset: reflectance of a stored 0.
        unit: LR pixels per unit edge.
        tile: tile core size of the stream inside a unit (LR pixels).
        overlap: LR context around each tile (default: receptive field + feather: exact).
        feather: feathered blending beyond each tile core.
        border: padding at the raster border, ``reflect`` or ``replicate``.
        ramp: feathering ramp.
        batch_size: tiles per forward pass.
        model_id: identifies the model in the resume manifest.

    Raises:
        InputError: if ``src`` is unreadable, lacks a CRS or one of ``bands``.
        ConfigError: for statistics that do not match the bands.
    """

    def __init__(
        self,
        src: str | os.PathLike[str],
        dst: str | os.PathLike[str],
        bands: Sequence[str],
        scale: int,
        mean: Sequence[float],
        std: Sequence[float],
        input_scale: float = 1e-4,
        input_offset: float = 0.0,
        unit: int = 1024,
        tile: int = 256,
        overlap: int | None = None,
        feather: int | None = None,
        border: str = "reflect",
        ramp: str = "cosine",
        batch_size: int = 1,
        model_id: str = "",
    ) -> None:
        self.src, dst = Path(src), Path(dst)
        _check_request(self.src, dst, bands, mean, std)
        info = raster_info(self.src)
        self.indices = band_indices(info, bands)
        self.height, self.width = info.height, info.width
        self.scale, self.mean, self.std = int(scale), list(mean), list(std)
        self.input_scale, self.input_offset = float(input_scale), float(input_offset)
        self.unit, self.tile = int(unit), int(tile)
        self.overlap, self.feather, self.border, self.ramp = overlap, feather, border, ramp
        self.batch_size, self.model_id = int(batch_size), model_id
        s = self.scale
        self.lr_units = block_windows(info.width, info.height, self.unit)
        self.units = [
            Window(w.col_off * s, w.row_off * s, w.width * s, w.height * s) for w in self.lr_units
        ]
        self.outputs = [
            OutputSpec(
                dst,
                crs=info.crs,
                transform=info.transform * Affine.scale(1 / s),
                width=info.width * s,
                height=info.height * s,
                count=len(bands),
                dtype="int16",
                nodata=OUT_NODATA,
                descriptions=list(bands),
                tags={
                    "reflectance_scale": str(1 / OUT_SCALE),
                    "sr_scale": str(s),
                    "sr_source": self.src.name,
                },
                blocksize=BLOCK,
            )
        ]
        self._reader: WindowReader | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_reader": None}  # open files stay in their process

    def fingerprint(self) -> dict[str, Any]:
        """The source, the model and the plan (see :class:`~bsrlc.inference.jobs.TileStore`)."""
        return {
            "task": "sr",
            "source": source_fingerprint(self.src),
            "model": self.model_id,
            "bands": self.indices,
            "scaling": [self.input_scale, self.input_offset],
            "unit": self.unit,
            "tile": self.tile,
            "overlap": self.overlap,
            "feather": self.feather,
            "border": self.border,
            "ramp": self.ramp,
        }

    def compute(self, index: int, net: nn.Module, device: torch.device) -> list[np.ndarray]:
        """Super-resolve one unit.

        Args:
            index: the unit.
            net: the generator.
            device: where it runs.

        Returns:
            One (bands, s * rows, s * cols) int16 array.

        Raises:
            InputError: if the raster cannot be read there (corrupt or truncated).
        """
        if self._reader is None:
            self._reader = _window_reader(
                open_raster(self.src), self.indices, self.input_scale, self.input_offset
            )
        lr, s = self.lr_units[index], self.scale
        halo, _ = _halo_and_blend(receptive_field(net), self.overlap, self.feather)
        r0, c0 = int(lr.row_off), int(lr.col_off)
        r1, c1 = r0 + int(lr.height), c0 + int(lr.width)
        e0, e1 = max(0, r0 - halo), min(self.height, r1 + halo)
        f0, f1 = max(0, c0 - halo), min(self.width, c1 + halo)
        base = self._reader

        def read(a: int, b: int, c: int, d: int) -> tuple[np.ndarray, np.ndarray]:
            try:
                return base(a + e0, b + e0, c + f0, d + f0)
            except rasterio.errors.RasterioIOError as err:
                raise InputError(
                    f"{self.src}: cannot read rows {a + e0}-{b + e0} ({err}); the file is "
                    "corrupt or truncated, re-create it"
                ) from None

        out = np.empty((len(self.indices), (r1 - r0) * s, (c1 - c0) * s), np.int16)
        top, left = (r0 - e0) * s, (c0 - f0) * s  # the unit's corner in the grown window's HR grid
        for row, col, block, flags in super_resolve_stream(
            net,
            read,
            e1 - e0,
            f1 - f0,
            s,
            self.mean,
            self.std,
            tile=self.tile,
            overlap=self.overlap,
            feather=self.feather,
            strip=None,
            device=device,
            batch_size=self.batch_size,
            border=self.border,
            ramp=self.ramp,
        ):
            y0, y1 = max(row, top), min(row + block.shape[1], top + out.shape[1])
            x0, x1 = max(col, left), min(col + block.shape[2], left + out.shape[2])
            if y0 >= y1 or x0 >= x1:
                continue
            part = block[:, y0 - row : y1 - row, x0 - col : x1 - col]
            mask = flags[y0 - row : y1 - row, x0 - col : x1 - col]
            out[:, y0 - top : y1 - top, x0 - left : x1 - left] = to_int16(part, mask)
        return [out]


def run_sr_job(
    job: SRJob,
    net: nn.Module,
    device: str | torch.device = "cpu",
    trainer_kwargs: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path | None:
    """Super-resolve a raster into a 10 m COG: bsrlc's one SR inference path.

    ``predict.py``, the demo and the tests all run SR through here. The model is checked against
    the job (scale, band count) before anything is written; then the job's missing units are
    computed, in this process (``trainer_kwargs`` None: :func:`~bsrlc.inference.jobs.run_local`)
    or by ``Trainer.predict`` (:func:`~bsrlc.inference.jobs.run_lightning`; ``strategy=ddp``
    spreads the units over GPUs and nodes), kept in a resumable tile store next to the output,
    and assembled into the COG when all are there. Both runners call :meth:`SRJob.compute`, so
    they write the same raster.

    Args:
        job: what to super-resolve and how (source, output, bands, statistics, units, tiles).
        net: the generator (normalised LR -> normalised HR, ``job.scale`` x larger).
        device: torch device of the in-process run (ignored with ``trainer_kwargs``: the
            trainer's accelerator decides).
        trainer_kwargs: ``Trainer`` arguments (accelerator, devices, strategy, num_nodes...) to
            run the units with Lightning; None runs them in this process.
        overwrite: replace an existing output (and recompute every unit).
        progress: show a progress bar over units.

    Returns:
        The output path; None on the ranks other than 0 of a ``ddp`` run.

    Raises:
        InputError: if the output exists and ``overwrite`` is false, or the source cannot be
            read.
        ConfigError: for a model of another scale, or one that does not output the bands it
            reads.
    """
    dst = job.outputs[0].path
    if dst.exists() and not overwrite:
        raise InputError(f"{dst}: output exists; pass overwrite=true or delete it")
    if trainer_kwargs is None:
        dev = torch.device(device)
        net = net.to(dev).eval()
    else:  # checked where the net is now; the trainer moves it
        param = next(net.parameters(), None)
        dev = param.device if param is not None else torch.device("cpu")
    check_model(net, len(job.indices), job.scale, dev)
    if not job.model_id:  # the store's manifest must tell models apart to resume safely
        job.model_id = model_digest(net)
    if trainer_kwargs is None:
        return run_local(job, net, dev, overwrite=overwrite, progress=progress)[0]
    paths = run_lightning(job, net, trainer_kwargs, overwrite=overwrite, progress=progress)
    return None if paths is None else paths[0]
