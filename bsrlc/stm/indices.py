"""Spectral indices computed per observation, then composited like bands."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bsrlc.errors import ConfigError

# name -> (a, b): normalised difference (a - b) / (a + b) of two bands.
NORMALISED_DIFFERENCES: dict[str, tuple[str, str]] = {
    "NDVI": ("NIR", "RED"),
    "NDBI": ("SW1", "NIR"),
    "NDWI": ("GRN", "NIR"),
    "MNDWI": ("GRN", "SW1"),
    "NBR": ("NIR", "SW2"),
    "NDMI": ("NIR", "SW1"),
}


def index_bands(name: str, bands: Sequence[str]) -> tuple[int, int]:
    """Positions in ``bands`` of the two bands an index needs.

    Args:
        name: index name (NDVI, NDBI, NDWI, MNDWI, NBR, NDMI).
        bands: the composited bands, in order.

    Returns:
        (position of a, position of b).

    Raises:
        ConfigError: for an unknown index or a band the index needs but the config lacks.
    """
    key = name.upper()
    if key not in NORMALISED_DIFFERENCES:
        raise ConfigError(
            f"indices: unknown index {name!r}; use one of {', '.join(NORMALISED_DIFFERENCES)}"
        )
    a, b = NORMALISED_DIFFERENCES[key]
    missing = [x for x in (a, b) if x not in bands]
    if missing:
        raise ConfigError(f"indices: {name} needs band(s) {', '.join(missing)}; add them to bands")
    return list(bands).index(a), list(bands).index(b)


def compute_index(name: str, refl: np.ndarray, bands: Sequence[str]) -> np.ndarray:
    """A normalised-difference index of a (bands, rows, cols) reflectance block.

    Args:
        name: index name.
        refl: reflectance, bands first.
        bands: names of ``refl``'s bands.

    Returns:
        (rows, cols) float32 in [-1, 1]; NaN where both bands are zero.
    """
    ia, ib = index_bands(name, bands)
    a, b = refl[ia], refl[ib]
    den = a + b
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den != 0, (a - b) / den, np.nan)
    return np.clip(out, -1, 1).astype(np.float32)
