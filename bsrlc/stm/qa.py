"""QA mask decoders: turn a sensor's quality band into a clear-observation mask.

A decoder is a function ``(qa, **options) -> bool array`` (True = clear) registered by name::

    @register("my_product")
    def my_product(qa: np.ndarray, keep_haze: bool = False) -> np.ndarray: ...

Configs pick one with ``sensor.decoder`` and pass ``sensor.decoder_options``; unknown options are
a :class:`~bsrlc.errors.ConfigError` (see :func:`check_options`), not silently ignored. The
built-in decoders always exclude fill, cloud, cloud shadow, snow and (where the product flags
it) saturation.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from bsrlc.errors import ConfigError

Decoder = Callable[..., np.ndarray]
DECODERS: dict[str, Decoder] = {}


def register(name: str) -> Callable[[Decoder], Decoder]:
    """Register a decoder under ``name``.

    Args:
        name: the name configs use (``sensor.decoder``).

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
        raise ConfigError(
            f"sensor.decoder={name}: unknown QA decoder; use one of {', '.join(DECODERS)} "
            "(or register one in bsrlc.stm.qa)"
        )
    return DECODERS[name]


def check_options(name: str, options: Mapping[str, Any]) -> None:
    """Check that a decoder accepts the configured options.

    Args:
        name: the decoder's name.
        options: ``sensor.decoder_options``.

    Raises:
        ConfigError: naming unknown options and the ones the decoder has.
    """
    params = inspect.signature(get_decoder(name)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    known = [p for p in list(params)[1:]]
    unknown = [k for k in options if k not in known]
    if unknown:
        raise ConfigError(
            f"sensor.decoder_options: {name} has no option(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(known) or 'none'}"
        )


def _unsigned(qa: np.ndarray) -> np.ndarray:
    """The bit pattern as an unsigned integer array (int16 QAI with bit 15 set stays positive)."""
    qa = np.asarray(qa)
    if qa.dtype.kind == "i":
        qa = qa.view(f"u{qa.dtype.itemsize}")
    elif qa.dtype.kind != "u":
        qa = qa.astype(np.uint64)
    return qa


def _any_bit(qa: np.ndarray, bits: Sequence[int]) -> np.ndarray:
    """True where any of ``bits`` is set."""
    mask = 0
    for b in bits:
        mask |= 1 << b
    return (_unsigned(qa) & mask) != 0


def _field(qa: np.ndarray, first_bit: int, n_bits: int) -> np.ndarray:
    """The unsigned value of ``n_bits`` bits starting at ``first_bit``."""
    return (_unsigned(qa) >> first_bit) & ((1 << n_bits) - 1)


@register("valid")
def valid_mask(qa: np.ndarray, clear_values: Sequence[int] | None = None) -> np.ndarray:
    """A plain mask: nonzero means clear, or the listed values do.

    Args:
        qa: the mask band.
        clear_values: values that mean clear; None means any nonzero value.

    Returns:
        bool array, True where clear.
    """
    if clear_values is None:
        return np.asarray(qa != 0)
    return np.isin(qa, list(clear_values))


@register("landsat_qa_pixel")
def landsat_qa_pixel(
    qa: np.ndarray,
    exclude_cirrus: bool = True,
    cloud_confidence: int | None = None,
    shadow_confidence: int | None = None,
    snow_confidence: int | None = None,
    cirrus_confidence: int | None = None,
) -> np.ndarray:
    """Landsat Collection 2 QA_PIXEL bits.

    Excluded: bit 0 fill, 1 dilated cloud, 3 cloud, 4 cloud shadow, 5 snow, and 2 cirrus
    (unless ``exclude_cirrus`` is false). Bits 6 (clear) and 7 (water) are not needed. The
    two-bit confidences (8-9 cloud, 10-11 cloud shadow, 12-13 snow/ice, 14-15 cirrus; 1 low,
    2 medium, 3 high) exclude more when a threshold is given: e.g. ``cloud_confidence: 2``
    also drops pixels with medium or high cloud confidence that are not flagged as cloud.

    Args:
        qa: the QA_PIXEL band (uint16).
        exclude_cirrus: exclude the cirrus flag (bit 2).
        cloud_confidence: exclude cloud confidence >= this (1-3); None = flags only.
        shadow_confidence: same for cloud shadow confidence.
        snow_confidence: same for snow/ice confidence.
        cirrus_confidence: same for cirrus confidence.

    Returns:
        bool array, True where clear.
    """
    bad = _any_bit(qa, [0, 1, 3, 4, 5] + ([2] if exclude_cirrus else []))
    for first_bit, level in (
        (8, cloud_confidence),
        (10, shadow_confidence),
        (12, snow_confidence),
        (14, cirrus_confidence),
    ):
        if level is not None:
            bad |= _field(qa, first_bit, 2) >= int(level)
    return ~bad


SCL_CLEAR = (4, 5, 6)  # vegetation, not vegetated, water
SCL_UNCLASSIFIED = 7


@register("sentinel2_scl")
def sentinel2_scl(qa: np.ndarray, include_unclassified: bool = False) -> np.ndarray:
    """Sentinel-2 L2A scene classification (SCL).

    Clear: 4 vegetation, 5 not vegetated, 6 water (and 7 unclassified if asked). Excluded:
    0 no data, 1 saturated/defective, 2 dark area/topographic shadow, 3 cloud shadow,
    8/9 cloud medium/high probability, 10 thin cirrus, 11 snow.

    Args:
        qa: the SCL band (uint8).
        include_unclassified: count class 7 as clear.

    Returns:
        bool array, True where clear.
    """
    clear = SCL_CLEAR + ((SCL_UNCLASSIFIED,) if include_unclassified else ())
    return np.isin(qa, clear)


@register("force_qai")
def force_qai(
    qa: np.ndarray,
    exclude_high_aerosol: bool = False,
    exclude_high_sun_zenith: bool = False,
    exclude_poor_illumination: bool = False,
    exclude_slope: bool = False,
    exclude_water_vapour: bool = False,
) -> np.ndarray:
    """FORCE Level-2 quality assurance information (QAI) bits.

    Bit 0 valid (0 = valid), bits 1-2 cloud state (0 clear, 1 less confident, 2 confident,
    3 cirrus), bit 3 cloud shadow, bit 4 snow, bit 5 water, bits 6-7 aerosol (0 estimated,
    1 interpolated, 2 high, 3 fill), bit 8 subzero, bit 9 saturation, bit 10 high sun zenith,
    bits 11-12 illumination (0 good, 1 medium, 2 poor, 3 shadow), bit 13 slope, bit 14 water
    vapour. Always excluded: invalid, any cloud state, shadow, snow, subzero, saturation.
    Water is clear.

    Args:
        qa: the QAI band (int16/uint16).
        exclude_high_aerosol: also exclude aerosol state 2 (high).
        exclude_high_sun_zenith: also exclude bit 10.
        exclude_poor_illumination: also exclude illumination 2 (poor) and 3 (shadow).
        exclude_slope: also exclude bit 13.
        exclude_water_vapour: also exclude bit 14.

    Returns:
        bool array, True where clear.
    """
    bad = _any_bit(qa, [0, 3, 4, 8, 9]) | (_field(qa, 1, 2) != 0)
    if exclude_high_aerosol:
        bad |= _field(qa, 6, 2) == 2
    if exclude_high_sun_zenith:
        bad |= _any_bit(qa, [10])
    if exclude_poor_illumination:
        bad |= _field(qa, 11, 2) >= 2
    if exclude_slope:
        bad |= _any_bit(qa, [13])
    if exclude_water_vapour:
        bad |= _any_bit(qa, [14])
    return ~bad
