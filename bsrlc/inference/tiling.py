"""Tile planning, border padding, feathering and streamed blending for dense per-pixel models.

A raster of ``height x width`` input pixels is cut into a grid of tiles. Along each axis:

* **core**: ``tile`` pixels; the cores cover the axis (the last one is shifted inward so that
  every tile has the same size, which lets tiles be batched; it then overlaps its neighbour).
* **read**: the core plus ``halo`` pixels of context on both sides. Outside the raster the
  context is made up by padding the raster (reflect or replicate), so tiles at the border see
  the same input a single pass over the padded raster would.
* **keep**: the core plus ``blend`` pixels on both sides (clipped to the raster), the part of the
  model's output that is used. Its weight is 1 over the core and ramps down (cosine or linear)
  over the blend band, so overlapping tiles fade into each other.

If the model's receptive field is at most ``halo - blend``, every kept output pixel has its full
context and tiled inference equals a single pass (up to float rounding); feathering then only
matters for models whose receptive field exceeds the halo.

Outputs may be ``scale`` times larger than the input (super-resolution): output coordinates are
input coordinates times ``scale``. The weights of the tile grid are separable (an outer product
of one ramp per axis), so the normaliser of the blend is the outer product of two 1-D sums and
no 2-D weight raster has to be stored. :class:`RowAccumulator` sums weighted tile outputs over a
band of rows that moves down the raster, so memory is bounded by the tile height times the
output width.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

BORDER_MODES = {"reflect": "reflect", "replicate": "edge"}
RAMPS = ("cosine", "linear")


@dataclass(frozen=True)
class Span:
    """One tile's extent along one axis, in input pixels (end-exclusive).

    Attributes:
        core: (start, stop) of the core.
        read: (start, stop) of the input the model sees; may extend beyond [0, n).
        keep: (start, stop) of the output that is used, within [0, n).
        blend: the blend width on each side, in input pixels.
    """

    core: tuple[int, int]
    read: tuple[int, int]
    keep: tuple[int, int]
    blend: int

    def clipped_read(self, n: int) -> tuple[int, int]:
        """The part of the read range inside the raster.

        Args:
            n: the axis length.

        Returns:
            (start, stop) within [0, n).
        """
        return max(0, self.read[0]), min(n, self.read[1])

    def padding(self, n: int) -> tuple[int, int]:
        """Pixels of border padding before and after the raster.

        Args:
            n: the axis length.

        Returns:
            (before, after).
        """
        return max(0, -self.read[0]), max(0, self.read[1] - n)

    def weight(self, scale: int = 1, ramp: str = "cosine") -> np.ndarray:
        """The feathering weight over the keep range, in output pixels.

        1 over the core; in the blend band a pixel ``d`` output pixels from the core gets
        ``r(d / (b + 1))`` where ``b = blend * scale`` and ``r`` falls from 1 to 0 (cosine:
        ``(1 + cos(pi t)) / 2``; linear: ``1 - t``), so the weight is positive everywhere kept.

        Args:
            scale: output pixels per input pixel.
            ramp: ``cosine`` or ``linear``.

        Returns:
            (scale * (keep stop - keep start),) float64 weights.

        Raises:
            ValueError: for an unknown ramp.
        """
        if ramp not in RAMPS:
            raise ValueError(f"ramp={ramp!r}: use one of {', '.join(RAMPS)}")
        p = np.arange(self.keep[0] * scale, self.keep[1] * scale)  # output pixels kept
        lo, hi = self.core[0] * scale, self.core[1] * scale
        dist = np.where(p < lo, lo - p, np.where(p >= hi, p - hi + 1, 0))  # 0 in the core
        t = dist / (self.blend * scale + 1)  # < 1: every kept pixel has a positive weight
        return (0.5 * (1 + np.cos(np.pi * t))) if ramp == "cosine" else 1 - t


def plan_axis(
    n: int, tile: int, halo: int, blend: int = 0, start: int = 0, stop: int | None = None
) -> list[Span]:
    """Tile the part [start, stop) of an axis of ``n`` pixels.

    Args:
        n: the axis length (> 0).
        tile: core size (> 0); a shorter range gets a single tile of its length.
        halo: context pixels read on each side of a core (>= 0).
        blend: output pixels kept beyond the core on each side, feathered (0 <= blend <= halo).
        start: first pixel of the range (a strip of the raster).
        stop: end of the range (default ``n``).

    Returns:
        The spans in order, in absolute pixel coordinates. Cores cover [start, stop), keep
        ranges stay inside it (no blending across its ends), all spans read the same length.

    Raises:
        ValueError: for non-positive sizes, an empty range or a blend outside [0, halo].
    """
    stop = n if stop is None else stop
    if n <= 0 or tile <= 0 or not 0 <= start < stop <= n:
        raise ValueError(f"axis length {n}, range [{start}, {stop}) and tile {tile} must be valid")
    if halo < 0 or not 0 <= blend <= halo:
        raise ValueError(f"need 0 <= blend ({blend}) <= halo ({halo})")
    tile = min(tile, stop - start)
    starts = [*range(start, stop - tile, tile), stop - tile]  # the last one shifted inward
    return [
        Span(
            core=(s, s + tile),
            read=(s - halo, s + tile + halo),
            keep=(max(start, s - blend), min(stop, s + tile + blend)),
            blend=blend,
        )
        for s in starts
    ]


def axis_weight_sum(spans: list[Span], scale: int = 1, ramp: str = "cosine") -> np.ndarray:
    """Sum of the spans' feathering weights at each output pixel of the range they cover.

    Args:
        spans: spans covering a range (from :func:`plan_axis`).
        scale: output pixels per input pixel.
        ramp: ``cosine`` or ``linear``.

    Returns:
        (range length * scale,) float64 sums, each >= 1 (every pixel lies in some core).
    """
    start, stop = spans[0].keep[0], spans[-1].keep[1]
    total = np.zeros((stop - start) * scale)
    for sp in spans:
        total[(sp.keep[0] - start) * scale : (sp.keep[1] - start) * scale] += sp.weight(scale, ramp)
    return total


def plan_strips(width: int, strip: int | None, tile: int) -> list[tuple[int, int]]:
    """Cut the columns into strips processed one after the other.

    Args:
        width: raster columns.
        strip: columns per strip (None: one strip). A remainder narrower than ``tile`` joins
            the last full strip.
        tile: the tile core size.

    Returns:
        (start, stop) of each strip, left to right.

    Raises:
        ValueError: for a non-positive strip.
    """
    if strip is None or strip >= width:
        return [(0, width)]
    if strip <= 0:
        raise ValueError(f"strip={strip} must be positive")
    bounds = [*range(0, width, strip), width]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < min(tile, strip):
        del bounds[-2]
    return list(itertools.pairwise(bounds))


@dataclass(frozen=True)
class Tile:
    """A tile: its row and column spans.

    Attributes:
        rows: the row span.
        cols: the column span.
    """

    rows: Span
    cols: Span

    def read_window(self, height: int, width: int) -> Window:
        """The rasterio window of the read range clipped to the raster.

        Args:
            height: raster rows.
            width: raster columns.

        Returns:
            The window.
        """
        r0, r1 = self.rows.clipped_read(height)
        c0, c1 = self.cols.clipped_read(width)
        return Window(c0, r0, c1 - c0, r1 - r0)

    def weight(self, scale: int = 1, ramp: str = "cosine") -> np.ndarray:
        """2-D feathering weight over the keep region.

        Args:
            scale: output pixels per input pixel.
            ramp: ``cosine`` or ``linear``.

        Returns:
            (keep rows * scale, keep cols * scale) float32.
        """
        return np.outer(self.rows.weight(scale, ramp), self.cols.weight(scale, ramp)).astype(
            np.float32
        )


class TilePlan:
    """A grid of tiles over a ``height x width`` raster, optionally in column strips.

    Strips bound the memory of row-wise streaming by the strip width instead of the raster
    width; tiles do not blend across strip edges (exact whenever the halo covers the receptive
    field plus the blend, as everywhere else).

    Args:
        height: raster rows.
        width: raster columns.
        tile: core size in input pixels.
        halo: context read around each core, >= the model's receptive field for exact results.
        blend: feathered output kept beyond each core (<= halo; exact if <= halo - receptive
            field).
        ramp: ``cosine`` or ``linear`` feathering.
        strip: columns per strip (None: the whole width).

    Raises:
        ValueError: for an unknown ramp or invalid sizes.
    """

    def __init__(
        self,
        height: int,
        width: int,
        tile: int,
        halo: int,
        blend: int = 0,
        ramp: str = "cosine",
        strip: int | None = None,
    ) -> None:
        if ramp not in RAMPS:
            raise ValueError(f"ramp={ramp!r}: use one of {', '.join(RAMPS)}")
        self.height, self.width = height, width
        self.tile, self.halo, self.blend, self.ramp = tile, halo, blend, ramp
        self.row_spans = plan_axis(height, tile, halo, blend)
        self.strips = plan_strips(width, strip, tile)
        self.strip_col_spans = [plan_axis(width, tile, halo, blend, a, b) for a, b in self.strips]

    @property
    def col_spans(self) -> list[Span]:
        """Column spans of all strips, left to right."""
        return [sp for spans in self.strip_col_spans for sp in spans]

    def __len__(self) -> int:
        return len(self.row_spans) * len(self.col_spans)

    def rows(self, strip: int = 0) -> Iterator[list[Tile]]:
        """The tiles of a strip, one list per tile row, top to bottom.

        Args:
            strip: index of the strip.

        Yields:
            The tiles of a row of the strip, left to right.
        """
        for rs in self.row_spans:
            yield [Tile(rs, cs) for cs in self.strip_col_spans[strip]]

    def __iter__(self) -> Iterator[Tile]:
        for k in range(len(self.strips)):
            for row in self.rows(k):
                yield from row

    def weight_sums(self, strip: int = 0, scale: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """The separable normaliser of the blend over a strip: per output row and column.

        Args:
            strip: index of the strip.
            scale: output pixels per input pixel.

        Returns:
            ((height * scale,), (strip width * scale,)) float64; the total weight at (y, x) is
            their outer product.
        """
        return (
            axis_weight_sum(self.row_spans, scale, self.ramp),
            axis_weight_sum(self.strip_col_spans[strip], scale, self.ramp),
        )

    def final_rows(self, row_index: int, scale: int = 1) -> int:
        """Output rows that no tile after tile row ``row_index`` (of the same strip) touches.

        Args:
            row_index: index of the tile row just finished.
            scale: output pixels per input pixel.

        Returns:
            Output rows [0, returned) are complete.
        """
        if row_index + 1 >= len(self.row_spans):
            return self.height * scale
        return self.row_spans[row_index + 1].keep[0] * scale


def pad_border(
    block: np.ndarray,
    pad_rows: tuple[int, int],
    pad_cols: tuple[int, int],
    mode: str = "reflect",
) -> np.ndarray:
    """Pad the last two axes of a block that sits at a raster border.

    Args:
        block: (..., rows, cols).
        pad_rows: (top, bottom) pixels.
        pad_cols: (left, right) pixels.
        mode: ``reflect`` (mirror without repeating the edge pixel) or ``replicate``.

    Returns:
        The padded block (the block itself when there is nothing to pad).

    Raises:
        ValueError: for an unknown mode.
    """
    if mode not in BORDER_MODES:
        raise ValueError(f"border mode {mode!r}: use one of {', '.join(BORDER_MODES)}")
    if not any(pad_rows) and not any(pad_cols):
        return block
    width = [(0, 0)] * (block.ndim - 2) + [pad_rows, pad_cols]
    # numpy reflects repeatedly when a pad exceeds the axis, so tiny rasters work too
    return np.pad(block, width, mode=BORDER_MODES[mode])  # type: ignore[call-overload]


class RowAccumulator:
    """Weighted sums of overlapping output blocks over a band of rows moving down a strip.

    Blocks are added at absolute output coordinates; :meth:`flush` hands back rows that are
    complete, divided by the (separable) weight sums, and frees them. Rows above the last flush
    can no longer be added to. The buffer is allocated once (``capacity`` rows, grown only if a
    block reaches further) and reused: memory is bands x capacity x strip width float32.

    Args:
        bands: output bands.
        row_norm: (height,) weight sum of each output row.
        col_norm: (strip width,) weight sum of each output column of the strip.
        col_offset: absolute output column of the strip's first column.
        capacity: rows to allocate up front.
    """

    def __init__(
        self,
        bands: int,
        row_norm: np.ndarray,
        col_norm: np.ndarray,
        col_offset: int = 0,
        capacity: int = 0,
    ) -> None:
        self.bands = bands
        self.height, self.width = len(row_norm), len(col_norm)
        self.row_norm = row_norm.astype(np.float32)
        self.col_norm = col_norm.astype(np.float32)
        self.col_offset = col_offset
        self.top = 0  # absolute row of self.acc[:, 0]
        self.used = 0  # rows of self.acc holding sums
        self.acc = np.zeros((bands, min(capacity, self.height), self.width), np.float32)

    def _ensure(self, stop: int) -> None:
        need = stop - self.top
        if need > self.acc.shape[1]:
            grown = np.zeros((self.bands, need, self.width), np.float32)
            grown[:, : self.used] = self.acc[:, : self.used]
            self.acc = grown
        self.used = max(self.used, need)

    def add(self, block: np.ndarray, weight: np.ndarray, row: int, col: int) -> None:
        """Add ``weight * block`` with its top-left output pixel at (row, col).

        Args:
            block: (bands, h, w).
            weight: (h, w).
            row: absolute output row.
            col: absolute output column.

        Raises:
            ValueError: if the block starts above rows already flushed.
        """
        if row < self.top:
            raise ValueError(f"row {row} was already flushed (next row is {self.top})")
        h, w = block.shape[-2:]
        self._ensure(row + h)
        r, c = row - self.top, col - self.col_offset
        self.acc[:, r : r + h, c : c + w] += block * weight

    def flush(self, stop: int, chunk: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Hand back the normalised rows [top, stop) and free them.

        The blocks are views into the buffer, normalised in place: use (or copy) each before
        asking for the next; they may be modified freely.

        Args:
            stop: absolute end row (exclusive) of complete rows.
            chunk: yield at most this many rows at a time.

        Yields:
            (absolute first row, (bands, rows, strip width) float32 blended values).
        """
        stop = min(stop, self.height)
        if stop <= self.top:
            return
        self._ensure(stop)
        n = stop - self.top
        chunk = chunk or n
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            view = self.acc[:, a:b]
            view /= self.row_norm[self.top + a : self.top + b, None]
            view /= self.col_norm
            yield self.top + a, view
        rest = self.used - n
        self.acc[:, :rest] = self.acc[:, n : self.used]  # numpy copes with the overlap
        self.acc[:, rest : self.used] = 0
        self.top, self.used = stop, rest


def default_blend(halo: int, receptive_field: int | None, max_blend: int = 4) -> int:
    """Feathered overlap for a halo: what the halo leaves beyond the receptive field.

    Args:
        halo: context pixels read around each core.
        receptive_field: the model's receptive field (None if unknown).
        max_blend: cap on the blend width.

    Returns:
        ``min(max_blend, halo - receptive_field)`` when the halo covers the receptive field
        (blending is then exact); otherwise (receptive field unknown or larger than the halo)
        ``min(max_blend, halo // 2)``, feathering seams that cannot be exact.
    """
    if receptive_field is not None and halo >= receptive_field:
        return min(max_blend, halo - receptive_field)
    return min(max_blend, halo // 2)
