"""The dense 365-day temporal encoding, scattered from packed observations per batch.

BSRLC+ feeds its annual models, per pixel and year, one 365-element series per band in which
each clear observation sits at its day index and every unobserved day is 0: no interpolation,
raw values kept. :func:`encode` builds that ``(..., bands + 1, 365)`` float tensor for a batch
from the compact :class:`~bsrlc.timeseries.store.Observations` (the last channel is the
observed flag: 1 on observed days, so a true 0 reflectance is not mistaken for a gap). Only the
packed observations (a few kB per pixel) travel from the DataLoader to the device; the dense
tensor is made there with one ``index_put_``, on the GPU when there is one.

:func:`fill_linear` is the gap-filling baseline for a later comparison model: each band
linearly interpolated between observed days, held constant before the first and after the
last observation (no extrapolation), all-zero where a pixel has no observation.

:class:`PointSeries` is a torch Dataset of labelled pixels (or centre patches) of one store
whose batches are packed observations (``__getitems__``: one gather per batch); call
:func:`encode` on the batch on the training device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from bsrlc.errors import InputError
from bsrlc.timeseries.store import N_DAYS, VALUE_SCALE, Observations, ObservationStore


def _tensor(x: Any, device: torch.device | str | None, dtype: torch.dtype | None = None) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=dtype or x.dtype, non_blocking=True)
    a = np.asarray(x)
    if a.dtype == np.uint16:  # torch has no arithmetic on uint16
        a = a.astype(np.int64)
    return torch.as_tensor(a, device=device, dtype=dtype)


def encode(
    obs: Observations | dict[str, Any],
    n_bands: int | None = None,
    device: torch.device | str | None = None,
    scale: float = VALUE_SCALE,
    flag: bool = True,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Scatter packed observations into the dense (…, bands [+ 1], 365) encoding.

    Args:
        obs: packed observations (:class:`Observations`, or the dict of a :class:`PointSeries`
            batch with keys ``values``, ``day``, ``sample``, ``shape``).
        n_bands: bands (None: from ``values``; give it when a batch may hold no observation).
        device: where to build the tensor (None: where ``values`` is; numpy: CPU).
        scale: reflectance per stored unit.
        flag: add the observed-flag channel (1 on observed days) last.
        dtype: the output's dtype.

    Returns:
        ``(*shape, n_bands + flag, 365)``; day ``d`` (1..365) at index ``d - 1``; 0 where
        nothing was observed.
    """
    if isinstance(obs, dict):
        obs = Observations(obs["values"], obs["day"], obs["sample"], tuple(obs["shape"]))
    if device is None and isinstance(obs.values, torch.Tensor):
        device = obs.values.device
    values = _tensor(obs.values, device)
    day = _tensor(obs.day, device, torch.int64)
    sample = _tensor(obs.sample, device, torch.int64)
    c = int(values.shape[1]) if n_bands is None else int(n_bands)
    n = int(np.prod(obs.shape)) if obs.shape else 1
    out = torch.zeros((n, c + int(flag), N_DAYS), dtype=dtype, device=device)
    if values.shape[0]:
        d = day - 1
        # (n_obs, c) values into out[sample, band, day]; the store has one observation per
        # pixel and day, so there are no duplicate indices (deterministic on CUDA too)
        bands = torch.arange(c, device=out.device)
        out.index_put_((sample[:, None], bands[None, :], d[:, None]), values.to(dtype) * scale)
        if flag:
            out.index_put_(
                (sample, torch.full_like(sample, c), d),
                torch.ones((), dtype=dtype, device=out.device).expand(sample.shape[0]),
            )
    return out.reshape(*obs.shape, c + int(flag), N_DAYS)


def fill_linear(encoded: torch.Tensor, observed: torch.Tensor | None = None) -> torch.Tensor:
    """Gap-filling baseline: linear interpolation between observed days along the last axis.

    Args:
        encoded: ``(..., C + 1, 365)`` with the observed flag last (from :func:`encode`), or
            ``(..., C, 365)`` values when ``observed`` is given.
        observed: ``(..., 365)`` bool, True on observed days; None: ``encoded``'s last channel.

    Returns:
        ``(..., C, 365)``: observed days unchanged, gaps linearly interpolated between the
        neighbouring observations, the value of the first (last) observation before (after)
        it, 0 everywhere for a series without observations.
    """
    if observed is None:
        values, observed = encoded[..., :-1, :], encoded[..., -1, :] > 0
    else:
        values, observed = encoded, observed.bool()
    t = encoded.shape[-1]
    pos = torch.arange(t, device=encoded.device).expand_as(observed)
    big = torch.full_like(pos, t)
    # index of the last observation at or before each day (-1: none), of the next at or after
    prev = torch.where(observed, pos, torch.full_like(pos, -1)).cummax(dim=-1).values
    nxt = torch.where(observed, pos, big).flip(-1).cummin(dim=-1).values.flip(-1)
    has_prev, has_next = prev >= 0, nxt < t
    p = torch.where(has_prev, prev, torch.where(has_next, nxt, torch.zeros_like(pos)))
    q = torch.where(has_next, nxt, p)
    p = torch.where(has_prev, p, q)
    vp = values.gather(-1, p.unsqueeze(-2).expand_as(values))
    vq = values.gather(-1, q.unsqueeze(-2).expand_as(values))
    span = (q - p).clamp(min=1).to(values.dtype)
    w = ((pos - p).to(values.dtype) / span).clamp(0, 1).unsqueeze(-2)
    out = vp + (vq - vp) * w
    anything = observed.any(dim=-1, keepdim=True).unsqueeze(-2)
    return torch.where(anything, out, torch.zeros_like(out))


class PointSeries(torch.utils.data.Dataset):
    """Labelled pixels (or centre patches) of one store; batches are packed observations.

    Use with ``DataLoader(ds, batch_size=B, collate_fn=collate_packed)``: torch calls
    :meth:`__getitems__` with a batch's indices (one vectorised gather), and the batch stays
    compact until :func:`encode` on the device.

    Args:
        store: the tile-year store (or its path).
        rows: pixel rows in the tile.
        cols: pixel columns.
        labels: one label per pixel (None: -1).
        patch: odd patch edge; 1 = the pixel alone, ``p`` = the ``p x p`` window around it
            (pixels outside the tile are clamped to the edge).

    Raises:
        InputError: for pixels outside the tile, or rows/cols/labels of different lengths.
    """

    def __init__(
        self,
        store: ObservationStore | str,
        rows: Sequence[int] | np.ndarray,
        cols: Sequence[int] | np.ndarray,
        labels: Sequence[int] | np.ndarray | None = None,
        patch: int = 1,
    ) -> None:
        self.store = store if isinstance(store, ObservationStore) else ObservationStore(store)
        self.rows, self.cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
        self.labels = (
            np.full(len(self.rows), -1, np.int64) if labels is None else np.asarray(labels)
        )
        if not len(self.rows) == len(self.cols) == len(self.labels):
            raise InputError(
                f"{self.store.path}: {len(self.rows)} rows, {len(self.cols)} cols and "
                f"{len(self.labels)} labels; give one of each per point"
            )
        if patch < 1 or patch % 2 == 0:
            raise InputError(f"patch={patch}: must be an odd number of pixels (1, 3, 15...)")
        self.patch = int(patch)
        self.store.pixel_index(self.rows, self.cols)  # fail early on points outside the tile
        h = self.patch // 2
        off = np.arange(-h, h + 1)
        self._dr, self._dc = np.meshgrid(off, off, indexing="ij")

    def __len__(self) -> int:
        return len(self.rows)

    def _index(self, ids: np.ndarray) -> np.ndarray:
        r, c = self.rows[ids], self.cols[ids]
        if self.patch == 1:
            return self.store.pixel_index(r, c)
        rr = np.clip(r[:, None, None] + self._dr, 0, self.store.height - 1)
        cc = np.clip(c[:, None, None] + self._dc, 0, self.store.width - 1)
        return self.store.pixel_index(rr, cc)

    def __getitems__(self, ids: Sequence[int]) -> dict[str, Any]:
        """A packed batch of numpy arrays.

        Args:
            ids: the points of the batch.

        Returns:
            ``values`` int16 (n, bands), ``day`` int16 (n,), ``sample`` int64 (n,), ``shape``
            (the batch's pixel shape), ``label`` (B,), ``n_obs`` int64 observations per pixel
            (0: an all-zero series).
        """
        sel = np.asarray(ids, np.int64)
        index = self._index(sel)
        obs = self.store.gather(index)
        counts = self.store.counts(index)
        # numpy, not torch: a worker sends these few small arrays pickled through its pipe,
        # cheaper than torch's shared-memory file per tensor (measured in benchmarks/temporal.py)
        return {
            "values": np.ascontiguousarray(obs.values),
            "day": obs.day.astype(np.int16),  # 1..365 fits; torch has no arithmetic on uint16
            "sample": obs.sample,
            "shape": obs.shape,
            "label": np.asarray(self.labels[sel]),
            "n_obs": np.asarray(counts, np.int64),
        }

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.__getitems__([i])


def collate_packed(batch: Any) -> Any:
    """The collate function for :class:`PointSeries` (its batches come packed already)."""
    return batch
