"""Observation dropout: thin dense annual series to a sparser (Landsat-like) density.

Models for the sparse, Landsat-only years are trained mostly on the dense Sentinel-2 era (about
50 clear observations a year against about 10). :func:`thin_observations` removes observed days
from a batch of the 365-day encoding (values and the observed flag zeroed together), either with
a fixed keep probability or down to a target number of observations per pixel-year, so that a
model sees sparse series during training. It runs on the batch's device after
:func:`bsrlc.timeseries.encode`; :class:`ThinObservations` is the same as a configurable
callable for a Hydra config.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _uniform(shape: Sequence[int], like: Tensor, generator: torch.Generator | None) -> Tensor:
    device = generator.device if generator is not None else like.device
    return torch.rand(tuple(shape), generator=generator, device=device).to(like.device)


def thin_observations(
    x: Tensor,
    keep: float | None = None,
    target_per_year: float | tuple[float, float] | None = None,
    min_keep: int = 0,
    prob: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Drop observed days at random (values and flag zeroed), to a sparser density.

    Each observed day of a series is kept independently with probability ``keep``, or with
    ``min(1, target / n_obs)`` so that a series of ``n_obs`` observations keeps
    ``min(n_obs, target)`` on average. Series already at or below the target are unchanged.

    Args:
        x: ``(..., C + 1, T)`` encoding, the observed flag last (from
            :func:`bsrlc.timeseries.encode`).
        keep: probability of keeping each observation (in [0, 1]).
        target_per_year: mean observations to keep per series; a pair ``(low, high)`` draws
            each series' target uniformly from that range (a spread of densities).
        min_keep: every series keeps at least ``min(min_keep, n_obs)`` observations.
        prob: fraction of the series thinned at all (the others stay as they are).
        generator: random source (deterministic thinning for a given generator state); None:
            torch's global generator.

    Returns:
        A new tensor like ``x``: dropped days are 0 in every channel; kept days unchanged.

    Raises:
        ValueError: neither or both of ``keep`` and ``target_per_year``, or a value out of range.
    """
    if (keep is None) == (target_per_year is None):
        raise ValueError("give exactly one of keep= and target_per_year=")
    if keep is not None and not 0.0 <= keep <= 1.0:
        raise ValueError(f"keep must be in [0, 1], got {keep}")
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got {prob}")
    if x.ndim < 2 or x.shape[-2] < 2:
        raise ValueError(
            f"expected (..., C+1, T) with the observed flag last, got {tuple(x.shape)}"
        )
    observed = x[..., -1, :] > 0  # (..., T)
    series = observed.shape[:-1]
    if keep is not None:
        p = torch.full(series, float(keep), device=x.device)
    else:
        if isinstance(target_per_year, (int, float)):
            target = torch.full(series, float(target_per_year), device=x.device)
        else:
            low, high = (float(v) for v in target_per_year)  # type: ignore[union-attr]
            if not 0.0 <= low <= high:
                raise ValueError(
                    f"target_per_year range must be 0 <= low <= high, got {target_per_year}"
                )
            target = low + (high - low) * _uniform(series, x, generator)
        if bool((target < 0).any()):
            raise ValueError(f"target_per_year must be >= 0, got {target_per_year}")
        n_obs = observed.sum(dim=-1).to(target.dtype)
        p = (target / n_obs.clamp(min=1)).clamp(max=1.0)
    if prob < 1.0:
        p = torch.where(_uniform(series, x, generator) < prob, p, torch.ones_like(p))
    u = _uniform(observed.shape, x, generator)
    kept = observed & (u < p[..., None])
    if min_keep > 0:
        # the min_keep observed days with the smallest draws are kept whatever p says
        rank = torch.where(observed, u, torch.full_like(u, 2.0)).argsort(dim=-1).argsort(dim=-1)
        kept |= observed & (rank < min_keep)
    return torch.where(kept[..., None, :], x, torch.zeros((), dtype=x.dtype, device=x.device))


class ThinObservations:
    """:func:`thin_observations` with fixed settings, as a callable (for configs).

    Args:
        keep: see :func:`thin_observations`.
        target_per_year: see :func:`thin_observations`.
        min_keep: see :func:`thin_observations`.
        prob: see :func:`thin_observations`.
    """

    def __init__(
        self,
        keep: float | None = None,
        target_per_year: float | Sequence[float] | None = None,
        min_keep: int = 0,
        prob: float = 1.0,
    ) -> None:
        target: float | tuple[float, float] | None
        if target_per_year is None or isinstance(target_per_year, (int, float)):
            target = target_per_year
        else:
            low, high = (float(v) for v in target_per_year)
            target = (low, high)
        self.keep, self.target_per_year = keep, target
        self.min_keep, self.prob = min_keep, prob
        # validate now, not at the first batch (own generator: the global state is untouched)
        thin_observations(
            torch.zeros(1, 2, 1), keep, target, min_keep, prob, torch.Generator().manual_seed(0)
        )

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Thin a batch.

        Args:
            x: ``(..., C + 1, T)`` encoding, the observed flag last.
            generator: random source (None: torch's global generator).

        Returns:
            The thinned batch.
        """
        return thin_observations(
            x, self.keep, self.target_per_year, self.min_keep, self.prob, generator
        )
