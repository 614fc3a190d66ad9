"""QA mask decoders: turn a sensor's quality band into a clear-observation mask.

Decoders are registered by name (``@register("name")``) so a new product needs one function.
Every decoder excludes cloud, cloud shadow, snow, saturation and fill.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from bsrlc.errors import ConfigError

Decoder = Callable[..., np.ndarray]
DECODERS: dict[str, Decoder] = {}


def register(name: str) -> Callable[[Decoder], Decoder]:
    """Register a decoder under ``name``.

    Args:
        name: the name configs use (``mask.decoder``).

    Returns:
        A decorator that registers the function and returns it unchanged.
    """

    def wrap(fn: Decoder) -> Decoder:
        DECODERS[name] = fn
        return fn

    return wrap


def get_decoder(name: str) -> Decoder:
    """Look a decoder up by name.

    Args:
        name: a registered name.

    Returns:
        The decoder.

    Raises:
        ConfigError: for an unknown name, listing the known ones.
    """
    if name not in DECODERS:
        raise ConfigError(f"mask.decoder={name}: unknown decoder; use one of {', '.join(DECODERS)}")
    return DECODERS[name]


def _bits(qa: np.ndarray, bits: Sequence[int]) -> np.ndarray:
    """True where any of ``bits`` is set."""
    mask = 0
    for b in bits:
        mask |= 1 << b
    return (qa.astype(np.int64) & mask) != 0


@register("valid")
def valid_mask(qa: np.ndarray, clear_values: Sequence[int] | None = None, **_: Any) -> np.ndarray:
    """A plain mask: nonzero (or one of ``clear_values``) means clear.

    Args:
        qa: the mask band.
        clear_values: values that mean clear; None means any nonzero value.
        **_: ignored options.

    Returns:
        bool array, True where clear.
    """
    if clear_values is None:
        return qa != 0
    return np.isin(qa, list(clear_values))


@register("landsat_qa_pixel")
def landsat_qa_pixel(
    qa: np.ndarray,
    exclude_cirrus: bool = True,
    exclude_medium_cloud_confidence: bool = False,
    **_: Any,
) -> np.ndarray:
    """Landsat Collection 2 QA_PIXEL bits.

    Bit 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud, 4 cloud shadow, 5 snow; bits 8-9 cloud
    confidence (2 = medium, 3 = high).

    Args:
        qa: the QA_PIXEL band (uint16).
        exclude_cirrus: also exclude cirrus (bit 2).
        exclude_medium_cloud_confidence: also exclude medium cloud confidence.
        **_: ignored options.

    Returns:
        bool array, True where clear.
    """
    bad = _bits(qa, [0, 1, 3, 4, 5] + ([2] if exclude_cirrus else []))
    if exclude_medium_cloud_confidence:
        bad |= ((qa.astype(np.int64) >> 8) & 0b11) >= 2
    return ~bad


SCL_CLEAR = (4, 5, 6)


@register("sentinel2_scl")
def sentinel2_scl(qa: np.ndarray, include_unclassified: bool = False, **_: Any) -> np.ndarray:
    """Sentinel-2 L2A scene classification (SCL).

    Clear: 4 vegetation, 5 not vegetated, 6 water (and 7 unclassified if asked). Excluded:
    0 no data, 1 saturated/defective, 2 dark area/topographic shadow, 3 cloud shadow,
    8/9 cloud medium/high probability, 10 thin cirrus, 11 snow.

    Args:
        qa: the SCL band (uint8).
        include_unclassified: count class 7 as clear.
        **_: ignored options.

    Returns:
        bool array, True where clear.
    """
    clear = SCL_CLEAR + ((7,) if include_unclassified else ())
    return np.isin(qa, clear)


@register("force_qai")
def force_qai(qa: np.ndarray, exclude_high_aerosol: bool = False, **_: Any) -> np.ndarray:
    """FORCE quality assurance information (QAI) bits.

    Bit 0 valid (0 = valid), bits 1-2 cloud state (0 clear), bit 3 cloud shadow, bit 4 snow,
    bit 5 water, bits 6-7 aerosol, bit 8 subzero, bit 9 saturation, bit 10 high sun zenith,
    bits 11-12 illumination, bit 13 slope, bit 14 water vapour.

    Args:
        qa: the QAI band (int16/uint16).
        exclude_high_aerosol: also exclude aerosol state 2 (high).
        **_: ignored options.

    Returns:
        bool array, True where clear.
    """
    q = qa.astype(np.int64)
    bad = _bits(q, [0, 3, 4, 8, 9]) | (((q >> 1) & 0b11) != 0)
    if exclude_high_aerosol:
        bad |= ((q >> 6) & 0b11) == 2
    return ~bad
