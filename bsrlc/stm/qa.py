"""QA mask decoders: turn a sensor's quality band into a clear-observation mask.

A decoder is a function ``(qa, **options) -> bool array`` (True = clear) registered by name::

    @register("my_product")
    def my_product(qa: np.ndarray, keep_haze: bool = False) -> np.ndarray: ...

Configs pick one with ``sensor.decoder`` and pass ``sensor.decoder_options``; unknown options are
a :class:`~bsrlc.errors.ConfigError` (see :func:`check_options`), not silently ignored. The
built-in decoders always exclude fill, cloud, cloud shadow, snow and (where the product flags
it) saturation.

Products are checked, not assumed: a decoder that takes a keyword ``path`` (the mask file,
used in messages; ``SceneReader`` passes it) refuses an input that is not its product with a
one-line :class:`~bsrlc.errors.InputError` naming the file, what the values look like and which
decoder fits. The checks are cheap (dtype, a maximum, bit patterns of at most
:data:`CHECK_SAMPLE` pixels of each array) and run on every window:

* ``landsat_qa_pixel`` (Collection 2 QA_PIXEL) refuses float, bool and 8-bit masks and a
  Collection-1 band. Every non-fill Collection-2 pixel carries a cloud, a cloud-shadow and a
  snow confidence of at least "low" (bits 8-9, 10-11, 12-13 each non-zero: clear land is 21824
  for Landsat 8/9, 5440 for Landsat 4-7). A Collection-1 Level-1 BQA pixel has bits 13-15
  unused (< 8192) and its cloud (bits 5-6), shadow (7-8) and snow (9-10) confidences set (clear
  2720 for Landsat 8, 672 for Landsat 4-7); a Collection-1 Level-2 ``pixel_qa`` pixel is < 2048
  with its cloud confidence (bits 6-7) and exactly one of the class bits 1-5 set (clear 322 /
  66). The input is refused when at least half of its non-fill pixels match a Collection-1
  pattern and not the Collection-2 one. Real Collection-2 data never match (its confidence
  fields are set), so it is never refused; hand-made masks without confidences (e.g. 64 = clear
  bit only) match neither and pass. Not caught: a Collection-1 Landsat 8 BQA where most pixels
  have medium/high cirrus confidence (bit 12 then mimics the Collection-2 pattern).
* ``landsat_c1_bqa`` refuses float/bool/8-bit masks and Collection-2 QA_PIXEL (the same
  patterns the other way round).
* ``sentinel2_scl`` refuses anything but uint8 and values above 11.
* ``force_qai`` refuses anything but int16/uint16, and Landsat Collection-2 QA_PIXEL.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from bsrlc.errors import ConfigError, InputError

Decoder = Callable[..., np.ndarray]
DECODERS: dict[str, Decoder] = {}
PathArg = str | os.PathLike[str] | None
CHECK_SAMPLE = 4096
"""Product checks look at the bit patterns of at most this many pixels of each array."""


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
    known = [p for p in list(params)[1:] if p != "path"]
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


def takes_path(decoder: Decoder) -> bool:
    """Whether a decoder takes the mask file as keyword ``path`` (and checks its input).

    Args:
        decoder: a registered decoder.

    Returns:
        True if it has a ``path`` parameter.
    """
    return "path" in inspect.signature(decoder).parameters


def _name(path: PathArg) -> str:
    return os.fspath(path) if path is not None else "QA array"


def _sample(qa: np.ndarray) -> np.ndarray:
    """At most about :data:`CHECK_SAMPLE` values of ``qa``, evenly spaced, as unsigned ints."""
    flat = _unsigned(qa).reshape(-1)
    if flat.size > CHECK_SAMPLE:
        flat = flat[:: flat.size // CHECK_SAMPLE]
    return flat


def _common_values(values: np.ndarray, n: int = 4) -> str:
    """The ``n`` most common values, e.g. ``"2720, 2724, 2800"``."""
    if values.size == 0:
        return "none"
    vals, counts = np.unique(values, return_counts=True)
    return ", ".join(str(int(v)) for v in vals[np.argsort(-counts, kind="stable")][:n])


def _c2_pattern(v: np.ndarray) -> np.ndarray:
    """Collection-2 QA_PIXEL: cloud, shadow and snow confidence all set (bits 8-13)."""
    return ((v & 0x0300) != 0) & ((v & 0x0C00) != 0) & ((v & 0x3000) != 0)


def _c1_pattern(v: np.ndarray) -> np.ndarray:
    """Collection-1 patterns: Level-1 BQA or Level-2 pixel_qa.

    BQA: bits 13-15 unused, cloud / shadow / snow confidence (bits 5-6, 7-8, 9-10) set.
    pixel_qa: < 2048, cloud confidence (bits 6-7) set, exactly one class bit of 1-5.
    """
    bqa = (v < 0x2000) & ((v & 0x0060) != 0) & ((v & 0x0180) != 0) & ((v & 0x0600) != 0)
    cls = v & 0x003E
    pixel_qa = (v < 0x0800) & ((v & 0x00C0) != 0) & (cls != 0) & ((cls & (cls - 1)) == 0)
    return bqa | pixel_qa


def _collection_shares(qa: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(non-fill sample, share matching only Collection 1, share matching Collection 2)."""
    v = _sample(qa)
    v = v[(v & 1) == 0]  # bit 0 is fill in both collections
    if v.size == 0:
        return v, 0.0, 0.0
    c2 = _c2_pattern(v)
    c1_only = _c1_pattern(v) & ~c2
    return v, float(np.count_nonzero(c1_only)) / v.size, float(np.count_nonzero(c2)) / v.size


def _check_bits_dtype(qa: np.ndarray, path: PathArg, decoder: str) -> None:
    """Refuse float and bool arrays: bit fields need integers."""
    kind = np.asarray(qa).dtype.kind
    if kind not in "iu":
        raise InputError(
            f"{_name(path)}: {np.asarray(qa).dtype} values, but {decoder} decodes the bits of an "
            "integer QA band; give the product's own QA file, or set sensor.decoder=valid "
            "(nonzero = clear) for a plain 0/1 mask"
        )


def _check_qa_pixel(qa: np.ndarray, path: PathArg) -> None:
    """Refuse what is not a Landsat Collection-2 QA_PIXEL band (see the module docstring)."""
    _check_bits_dtype(qa, path, "landsat_qa_pixel")
    if np.asarray(qa).dtype.itemsize == 1:
        raise InputError(
            f"{_name(path)}: 8-bit values, but Landsat Collection-2 QA_PIXEL is uint16 (clear "
            "land 21824 or 5440); an 8-bit class mask such as a Sentinel-2 SCL needs "
            "sensor.decoder=sentinel2_scl (or valid with decoder_options.clear_values)"
        )
    v, c1_only, _ = _collection_shares(qa)
    if c1_only and c1_only >= 0.5:
        raise InputError(
            f"{_name(path)}: looks like a Landsat Collection-1 QA band (BQA or pixel_qa), not "
            f"Collection-2 QA_PIXEL: {c1_only:.0%} of the non-fill pixels have Collection-1 bit "
            f"patterns (most common values {_common_values(v)}; Collection-2 clear land is "
            "21824 or 5440); use sensor.decoder=landsat_c1_bqa for a Level-1 BQA, or the "
            "Collection-2 scene's *_QA_PIXEL.TIF"
        )


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
    *,
    path: PathArg = None,
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
        path: the mask file, for messages.

    Returns:
        bool array, True where clear.

    Raises:
        InputError: for a float or 8-bit array, or a Collection-1 BQA / pixel_qa band (see the
            module docstring for how it is recognised).
    """
    _check_qa_pixel(qa, path)
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


@register("landsat_c1_bqa")
def landsat_c1_bqa(
    qa: np.ndarray,
    exclude_cirrus: bool = True,
    exclude_saturated: bool = True,
    cloud_confidence: int = 3,
    shadow_confidence: int = 3,
    snow_confidence: int = 3,
    cirrus_confidence: int = 3,
    *,
    path: PathArg = None,
) -> np.ndarray:
    """Landsat Collection 1 Level-1 BQA bits (archives processed before 2022).

    Bit 0 designated fill, 1 terrain occlusion (Landsat 8) / dropped pixel, 2-3 radiometric
    saturation (0 none, 1: 1-2 bands, 2: 3-4 bands, 3: 5 or more), 4 cloud, and two-bit
    confidences (0 not determined, 1 low, 2 medium, 3 high): 5-6 cloud, 7-8 cloud shadow, 9-10
    snow/ice, 11-12 cirrus (Landsat 8). Clear Landsat 8 land is 2720, Landsat 4-7 672.
    Always excluded: fill, terrain occlusion / dropped pixel, the cloud bit.

    Args:
        qa: the BQA band (uint16).
        exclude_cirrus: apply ``cirrus_confidence``.
        exclude_saturated: exclude pixels where any band is saturated (bits 2-3 non-zero).
        cloud_confidence: exclude cloud confidence >= this (1-3).
        shadow_confidence: exclude cloud shadow confidence >= this.
        snow_confidence: exclude snow/ice confidence >= this.
        cirrus_confidence: exclude cirrus confidence >= this (with ``exclude_cirrus``).
        path: the mask file, for messages.

    Returns:
        bool array, True where clear.

    Raises:
        InputError: for a float or 8-bit array, or a Collection-2 QA_PIXEL band.
    """
    _check_bits_dtype(qa, path, "landsat_c1_bqa")
    if np.asarray(qa).dtype.itemsize == 1:
        raise InputError(
            f"{_name(path)}: 8-bit values, but a Landsat Collection-1 BQA is uint16 (clear 2720 "
            "or 672); an 8-bit class mask such as a Sentinel-2 SCL needs "
            "sensor.decoder=sentinel2_scl"
        )
    v, _, c2 = _collection_shares(qa)
    if c2 >= 0.5:
        raise InputError(
            f"{_name(path)}: looks like Landsat Collection-2 QA_PIXEL, not a Collection-1 BQA: "
            f"{c2:.0%} of the non-fill pixels have Collection-2 confidence bits (most common "
            f"values {_common_values(v)}); use sensor.decoder=landsat_qa_pixel"
        )
    bad = _any_bit(qa, [0, 1, 4])
    if exclude_saturated:
        bad |= _field(qa, 2, 2) != 0
    for first_bit, level in (
        (5, cloud_confidence),
        (7, shadow_confidence),
        (9, snow_confidence),
        (11, cirrus_confidence if exclude_cirrus else None),
    ):
        if level is not None:
            bad |= _field(qa, first_bit, 2) >= int(level)
    return ~bad


SCL_CLEAR = (4, 5, 6)  # vegetation, not vegetated, water
SCL_UNCLASSIFIED = 7
SCL_MAX = 11


def _fits(qa: np.ndarray) -> str | None:
    """The decoder an integer QA array looks made for, if any (for messages)."""
    qa = np.asarray(qa)
    if qa.dtype.kind not in "iu" or qa.size == 0:
        return None
    if qa.dtype.kind == "u" and qa.dtype.itemsize == 2:
        _, c1_only, c2 = _collection_shares(qa)
        if c2 >= 0.5:
            return "landsat_qa_pixel"
        if c1_only >= 0.5:
            return "landsat_c1_bqa"
    if qa.dtype == np.int16:
        return "force_qai"
    if qa.dtype == np.uint8 and int(qa.max()) <= SCL_MAX:
        return "sentinel2_scl"
    return None


def _looks_like(qa: np.ndarray) -> str:
    """`` (looks like ...)`` for messages, or ""."""
    names = {
        "landsat_qa_pixel": "Landsat Collection-2 QA_PIXEL",
        "landsat_c1_bqa": "a Landsat Collection-1 BQA",
        "force_qai": "a FORCE QAI",
        "sentinel2_scl": "a Sentinel-2 SCL",
    }
    fit = _fits(qa)
    return f" (looks like {names[fit]})" if fit else ""


@register("sentinel2_scl")
def sentinel2_scl(
    qa: np.ndarray, include_unclassified: bool = False, *, path: PathArg = None
) -> np.ndarray:
    """Sentinel-2 L2A scene classification (SCL).

    Clear: 4 vegetation, 5 not vegetated, 6 water (and 7 unclassified if asked). Excluded:
    0 no data, 1 saturated/defective, 2 dark area/topographic shadow, 3 cloud shadow,
    8/9 cloud medium/high probability, 10 thin cirrus, 11 snow.

    Args:
        qa: the SCL band (uint8).
        include_unclassified: count class 7 as clear.
        path: the mask file, for messages.

    Returns:
        bool array, True where clear.

    Raises:
        InputError: for an array that is not uint8 or has values above 11.
    """
    qa = np.asarray(qa)
    if qa.dtype != np.uint8:
        looks = _looks_like(qa)
        raise InputError(
            f"{_name(path)}: {qa.dtype} values{looks}, but a Sentinel-2 L2A SCL band is uint8 "
            "with classes 0-11; give the product's *_SCL_20m file"
            + (f" or set sensor.decoder={_fits(qa)}" if _fits(qa) else "")
        )
    top = int(qa.max()) if qa.size else 0
    if top > SCL_MAX:
        raise InputError(
            f"{_name(path)}: values up to {top} (most common {_common_values(_sample(qa))}), but "
            f"SCL classes are 0-{SCL_MAX}: not a scene classification (a cloud probability "
            "band?); give the product's *_SCL_20m file, or set sensor.decoder=valid with "
            "decoder_options.clear_values for another class mask"
        )
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
    *,
    path: PathArg = None,
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
        path: the mask file, for messages.

    Returns:
        bool array, True where clear.

    Raises:
        InputError: for an array that is not int16/uint16, or a Landsat Collection-2 QA_PIXEL.
    """
    qa = np.asarray(qa)
    if qa.dtype not in (np.int16, np.uint16):
        fit = _fits(qa)
        raise InputError(
            f"{_name(path)}: {qa.dtype} values{_looks_like(qa)}, but a FORCE QAI band is int16 "
            "(bit flags); give the scene's *_QAI.tif"
            + (f" or set sensor.decoder={fit}" if fit and fit != "force_qai" else "")
        )
    if qa.dtype == np.uint16 and _fits(qa) == "landsat_qa_pixel":
        v, _, c2 = _collection_shares(qa)
        raise InputError(
            f"{_name(path)}: looks like Landsat Collection-2 QA_PIXEL, not a FORCE QAI: {c2:.0%} "
            f"of the non-fill pixels have its confidence bits (most common values "
            f"{_common_values(v)}); use sensor.decoder=landsat_qa_pixel"
        )
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
