"""Spectral indices composited like bands: a small registry of ratios of band combinations.

Every index is ``(num_const + sum(num[b] * b)) / (den_const + sum(den[b] * b))`` over the
reflectance of named bands, clipped to ``[lo, hi]``. That covers normalised differences (NDVI,
NDBI, ...), soil-adjusted and enhanced vegetation indices (SAVI, EVI, EVI2) and linear
transforms (tasselled cap: denominator 1). The form lets the numba kernel evaluate any index
per observation from coefficient matrices, without a Python callback per index.

Add one with :func:`register_index` (or :func:`normalized_difference` for the common case).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from bsrlc.errors import ConfigError


@dataclass(frozen=True)
class IndexDef:
    """An index as a ratio of two affine band combinations.

    Attributes:
        num: band name -> numerator coefficient.
        den: band name -> denominator coefficient.
        num_const: numerator constant.
        den_const: denominator constant.
        lo: values below are clipped to ``lo``.
        hi: values above are clipped to ``hi``.
        doc: a one-line description.
    """

    num: Mapping[str, float]
    den: Mapping[str, float] = field(default_factory=dict)
    num_const: float = 0.0
    den_const: float = 1.0
    lo: float = -np.inf
    hi: float = np.inf
    doc: str = ""

    @property
    def bands(self) -> tuple[str, ...]:
        """The bands the index reads, numerator first."""
        return tuple(dict.fromkeys([*self.num, *self.den]))


INDICES: dict[str, IndexDef] = {}


def register_index(name: str, index: IndexDef) -> IndexDef:
    """Register an index under an (upper-case) name.

    Args:
        name: the name configs use (``indices: [NAME]``) and the output band prefix.
        index: its definition.

    Returns:
        The definition, unchanged.
    """
    INDICES[name.upper()] = index
    return index


def normalized_difference(a: str, b: str, doc: str = "") -> IndexDef:
    """``(a - b) / (a + b)``, clipped to [-1, 1].

    Args:
        a: first band.
        b: second band.
        doc: description.

    Returns:
        The definition.
    """
    num, den = {a: 1.0, b: -1.0}, {a: 1.0, b: 1.0}
    return IndexDef(num=num, den=den, den_const=0.0, lo=-1.0, hi=1.0, doc=doc)


for _name, (_a, _b, _doc) in {
    "NDVI": ("NIR", "RED", "vegetation"),
    "NDBI": ("SW1", "NIR", "built-up"),
    "NDWI": ("GRN", "NIR", "open water (McFeeters)"),
    "MNDWI": ("GRN", "SW1", "open water, modified (Xu)"),
    "NBR": ("NIR", "SW2", "burn ratio"),
    "NDMI": ("NIR", "SW1", "moisture"),
    "NDTI": ("SW1", "SW2", "tillage"),
}.items():
    register_index(_name, normalized_difference(_a, _b, _doc))

register_index(
    "SAVI",
    IndexDef(
        num={"NIR": 1.5, "RED": -1.5},
        den={"NIR": 1.0, "RED": 1.0},
        den_const=0.5,
        lo=-1.5,
        hi=1.5,
        doc="soil-adjusted vegetation index, L = 0.5",
    ),
)
register_index(
    "EVI",
    IndexDef(
        num={"NIR": 2.5, "RED": -2.5},
        den={"NIR": 1.0, "RED": 6.0, "BLU": -7.5},
        den_const=1.0,
        lo=-1,
        hi=1,
        doc="enhanced vegetation index",
    ),
)
register_index(
    "EVI2",
    IndexDef(
        num={"NIR": 2.5, "RED": -2.5},
        den={"NIR": 1.0, "RED": 2.4},
        den_const=1.0,
        lo=-1,
        hi=1,
        doc="two-band enhanced vegetation index",
    ),
)
# Tasselled cap for reflectance (Crist 1985); a linear transform, so the denominator is 1.
_TC_BANDS = ("BLU", "GRN", "RED", "NIR", "SW1", "SW2")
for _name, _coef, _doc in (
    ("TCB", (0.2043, 0.4158, 0.5524, 0.5741, 0.3124, 0.2303), "tasselled cap brightness"),
    ("TCG", (-0.1603, -0.2819, -0.4934, 0.7940, -0.0002, -0.1446), "tasselled cap greenness"),
    ("TCW", (0.0315, 0.2021, 0.3102, 0.1594, -0.6806, -0.6109), "tasselled cap wetness"),
):
    register_index(_name, IndexDef(num=dict(zip(_TC_BANDS, _coef, strict=True)), doc=_doc))


def get_index(name: str) -> IndexDef:
    """Look an index up by name (case-insensitive).

    Args:
        name: a registered name.

    Returns:
        Its definition.

    Raises:
        ConfigError: for an unknown name, listing the known ones.
    """
    key = str(name).upper()
    if key not in INDICES:
        raise ConfigError(f"indices: unknown index {name!r}; use one of {', '.join(INDICES)}")
    return INDICES[key]


@dataclass(frozen=True)
class IndexMatrices:
    """Coefficient arrays of several indices over a band list, as the numba kernel takes them.

    Attributes:
        names: the index names (upper case), in order.
        num: (indices, bands) numerator coefficients.
        num_const: (indices,) numerator constants.
        den: (indices, bands) denominator coefficients.
        den_const: (indices,) denominator constants.
        lo: (indices,) lower clip.
        hi: (indices,) upper clip.
    """

    names: tuple[str, ...]
    num: np.ndarray
    num_const: np.ndarray
    den: np.ndarray
    den_const: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


def index_matrices(names: Sequence[str], bands: Sequence[str]) -> IndexMatrices:
    """Build the kernel's coefficient arrays for ``names`` over the composited ``bands``.

    Args:
        names: index names.
        bands: the composited bands, in stack order.

    Returns:
        The coefficient arrays (zero-sized when ``names`` is empty).

    Raises:
        ConfigError: for an unknown index or one that needs a band not in ``bands``.
    """
    n_i, n_b = len(names), len(bands)
    num, den = np.zeros((n_i, n_b)), np.zeros((n_i, n_b))  # (indices, bands)
    num_c, den_c, lo, hi = (np.zeros(n_i) for _ in range(4))
    pos = {b: k for k, b in enumerate(bands)}
    for x, name in enumerate(names):
        idx = get_index(name)
        missing = [b for b in idx.bands if b not in pos]
        if missing:
            raise ConfigError(
                f"indices: {name} needs band(s) {', '.join(missing)}; add them to bands "
                f"(have: {', '.join(bands)})"
            )
        for b, c in idx.num.items():
            num[x, pos[b]] = c
        for b, c in idx.den.items():
            den[x, pos[b]] = c
        num_c[x], den_c[x], lo[x], hi[x] = idx.num_const, idx.den_const, idx.lo, idx.hi
    return IndexMatrices(tuple(n.upper() for n in names), num, num_c, den, den_c, lo, hi)


def compute_index(name: str, refl: np.ndarray, bands: Sequence[str]) -> np.ndarray:
    """Evaluate one index on a (bands, ...) reflectance array with numpy (reference/small use).

    Args:
        name: index name.
        refl: reflectance, bands first.
        bands: names of ``refl``'s bands.

    Returns:
        float64 array of ``refl.shape[1:]``, NaN where the denominator is 0.
    """
    m = index_matrices([name], bands)
    flat = refl.reshape(len(bands), -1).astype(np.float64)  # (bands, pixels)
    num = m.num_const[0] + m.num[0] @ flat
    den = m.den_const[0] + m.den[0] @ flat
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den != 0, num / np.where(den != 0, den, 1), np.nan)
    return np.clip(out, m.lo[0], m.hi[0]).reshape(refl.shape[1:])
