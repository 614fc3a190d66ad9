"""Legends: class codes, names and colours, and the mapping to contiguous training indices.

Class maps are single-band uint8 rasters: codes 1..255 are classes and 0 is nodata (the
``nodata`` code of a legend, 0 unless a legend says otherwise). Networks predict contiguous
indices 0..K-1 in the legend's order; :meth:`Legend.index_of` and :meth:`Legend.code_of`
translate. Presets live in ``conf/legend/`` (``urban``, ``landcover``); a Hydra config may give a
preset name or the mapping itself::

    name: urban
    nodata: 0
    classes:
      - {code: 1, name: residential buildings, colour: "#e6194b"}   # or colour: [230, 25, 75]
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np
import pandas as pd
import yaml

from bsrlc.config import CONF_DIR
from bsrlc.errors import ConfigError, InputError

NODATA_CODE = 0
"""The nodata value of uint8 class maps."""

_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")


def parse_colour(value: Any, where: str) -> str:
    """Normalise a colour given as ``#rrggbb``, ``rrggbb`` or ``[r, g, b]`` (0-255).

    Args:
        value: the colour.
        where: what to name in the error (legend and class).

    Returns:
        ``#rrggbb`` in lower case.

    Raises:
        ConfigError: for anything else.
    """
    if isinstance(value, str):
        m = _HEX.match(value.strip())
        if m:
            return "#" + m.group(1).lower()
    elif isinstance(value, Sequence) and len(value) in (3, 4):
        try:
            rgb = [int(v) for v in value[:3]]
        except (TypeError, ValueError):
            rgb = []
        if len(rgb) == 3 and all(0 <= v <= 255 for v in rgb):
            return "#{:02x}{:02x}{:02x}".format(*rgb)
    raise ConfigError(f"{where}: colour {value!r} is not '#rrggbb' or [r, g, b] in 0..255")


@dataclass(frozen=True)
class LegendClass:
    """One class of a legend.

    Attributes:
        code: its value in class maps and reference samples (1..255, not the nodata code).
        name: a human name.
        colour: ``#rrggbb``.
    """

    code: int
    name: str
    colour: str

    @property
    def rgb(self) -> tuple[int, int, int]:
        """The colour as (r, g, b), each 0-255."""
        c = self.colour.lstrip("#")
        return (int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16))


@dataclass(frozen=True)
class Legend:
    """An ordered set of classes; training index i is ``classes[i]``.

    Attributes:
        name: the legend's name.
        classes: the classes, in training-index order.
        nodata: the nodata code of class maps (0).
        source: where the legend came from (a preset file or "config"), for messages.
    """

    name: str
    classes: tuple[LegendClass, ...]
    nodata: int = NODATA_CODE
    source: str = "config"

    # -- building ------------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls, cfg: Mapping[str, Any] | str | os.PathLike[str], source: str | None = None
    ) -> Legend:
        """Build a legend from a preset name, a YAML file or a config mapping.

        Args:
            cfg: a preset in ``conf/legend/`` (``"urban"``, ``"landcover"``), a path to a YAML
                file, or ``{"name", "nodata"?, "classes": [{"code", "name", "colour"}, ...]}``
                (a plain dict or an OmegaConf DictConfig).
            source: what to call the config in errors (default: the file or "config").

        Returns:
            The legend.

        Raises:
            ConfigError: for an unknown preset, a missing file, or invalid classes (missing
                fields, codes outside 1..255, the nodata code, duplicate codes or names, bad
                colours).
        """
        if isinstance(cfg, str | os.PathLike):
            path = Path(cfg)
            if path.suffix.lower() not in (".yaml", ".yml"):
                path = CONF_DIR / "legend" / f"{cfg}.yaml"
                if not path.exists():
                    presets = ", ".join(
                        sorted(p.stem for p in (CONF_DIR / "legend").glob("*.yaml"))
                    )
                    raise ConfigError(
                        f"legend={cfg}: unknown preset; use one of {presets} or a YAML file path"
                    )
            elif not path.exists():
                raise ConfigError(f"{path}: legend file not found; fix the legend path")
            source = source or str(path)
            try:
                cfg = yaml.safe_load(path.read_text())
            except yaml.YAMLError as err:
                raise ConfigError(f"{path}: not valid YAML ({err}); fix the legend file") from None
        if hasattr(cfg, "_metadata"):  # an OmegaConf DictConfig
            from omegaconf import OmegaConf

            cfg = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
        source = source or "config"
        if not isinstance(cfg, Mapping) or not isinstance(cfg.get("classes"), Sequence):
            raise ConfigError(
                f"{source}: a legend needs a 'classes' list of {{code, name, colour}}; "
                "see conf/legend/urban.yaml"
            )
        name = str(cfg.get("name", "legend"))
        where = f"{source} (legend '{name}')"
        try:
            nodata = int(cfg.get("nodata", NODATA_CODE))
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: nodata must be an integer code (0)") from None
        classes = []
        for i, c in enumerate(cfg["classes"]):
            if not isinstance(c, Mapping) or "code" not in c or "name" not in c:
                raise ConfigError(f"{where}: class #{i + 1} needs a code and a name, got {c!r}")
            try:
                code = int(c["code"])
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: class code {c['code']!r} is not an integer") from None
            colour = parse_colour(c.get("colour", c.get("color", "#888888")), f"{where} {code}")
            classes.append(LegendClass(code, str(c["name"]).strip(), colour))
        legend = cls(name, tuple(classes), nodata, source)
        legend._check(where)
        return legend

    def _check(self, where: str) -> None:
        codes = self.codes
        if not codes:
            raise ConfigError(f"{where}: the legend has no classes; list at least two")
        if not 0 <= self.nodata <= 255:
            raise ConfigError(f"{where}: nodata {self.nodata} must be in 0..255 (uint8 maps)")
        bad = [c for c in codes if not 0 <= c <= 255 or c == self.nodata]
        if bad:
            raise ConfigError(
                f"{where}: class codes {bad} invalid; use 1..255 (uint8), {self.nodata} is nodata"
            )
        dup = sorted({c for c in codes if codes.count(c) > 1})
        if dup:
            raise ConfigError(f"{where}: duplicate class codes {dup}; give each class its own")
        lowered = [n.lower() for n in self.names]
        dup_names = sorted({n for n in lowered if lowered.count(n) > 1})
        if dup_names:
            raise ConfigError(f"{where}: duplicate class names {dup_names}; rename them")

    def to_config(self) -> dict[str, Any]:
        """The legend as plain data (for metadata, checkpoints and :meth:`from_config`).

        Returns:
            ``{"name", "nodata", "classes": [{"code", "name", "colour"}]}``.
        """
        return {
            "name": self.name,
            "nodata": self.nodata,
            "classes": [{"code": c.code, "name": c.name, "colour": c.colour} for c in self.classes],
        }

    # -- lookups -------------------------------------------------------------------------------

    @property
    def codes(self) -> list[int]:
        """Class codes in training-index order."""
        return [c.code for c in self.classes]

    @property
    def names(self) -> list[str]:
        """Class names in training-index order."""
        return [c.name for c in self.classes]

    @property
    def colours(self) -> list[str]:
        """Class colours (``#rrggbb``) in training-index order."""
        return [c.colour for c in self.classes]

    def __len__(self) -> int:
        return len(self.classes)

    def index_lut(self) -> np.ndarray:
        """A lookup table from uint8 code to training index.

        Returns:
            (256,) int64: ``lut[code]`` is the index, -1 for nodata and unknown codes.
        """
        lut = np.full(256, -1, np.int64)
        lut[self.codes] = np.arange(len(self.classes))
        return lut

    @overload
    def index_of(self, codes: int) -> int: ...

    @overload
    def index_of(self, codes: np.ndarray | Sequence[int]) -> np.ndarray: ...

    def index_of(self, codes: int | np.ndarray | Sequence[int]) -> int | np.ndarray:
        """Map class codes to training indices 0..K-1.

        Args:
            codes: one code, or an array of codes (any shape, e.g. a class map).

        Returns:
            The index of one code; for arrays an int64 array of the same shape with -1 for
            nodata and codes the legend lacks (check user data with :meth:`validate` first).

        Raises:
            ValueError: for a single code the legend lacks.
        """
        if isinstance(codes, int | np.integer):
            if int(codes) not in self.codes:
                raise ValueError(f"class code {codes} not in legend '{self.name}' {self.codes}")
            return self.codes.index(int(codes))
        arr = np.asarray(codes)
        out = np.full(arr.shape, -1, np.int64)
        inside = (arr >= 0) & (arr <= 255)
        out[inside] = self.index_lut()[arr[inside].astype(np.int64)]
        return out

    @overload
    def code_of(self, indices: int) -> int: ...

    @overload
    def code_of(self, indices: np.ndarray | Sequence[int]) -> np.ndarray: ...

    def code_of(self, indices: int | np.ndarray | Sequence[int]) -> int | np.ndarray:
        """Map training indices back to class codes.

        Args:
            indices: one index or an array of indices 0..K-1; negative ones (ignored pixels)
                become the nodata code.

        Returns:
            The code of one index; for arrays a uint8 array of the same shape.

        Raises:
            ValueError: for an index >= K.
        """
        if isinstance(indices, int | np.integer):
            if indices < 0:
                return self.nodata
            if indices >= len(self.classes):
                raise ValueError(f"index {indices} out of range for {len(self.classes)} classes")
            return self.codes[int(indices)]
        arr = np.asarray(indices, dtype=np.int64)
        if arr.size and arr.max() >= len(self.classes):
            raise ValueError(f"index {arr.max()} out of range for {len(self.classes)} classes")
        table = np.asarray([*self.codes, self.nodata], np.uint8)  # index -1 -> nodata
        return table[np.where(arr < 0, -1, arr)]

    def name_of(self, code: int) -> str:
        """The name of a class code.

        Args:
            code: a class code.

        Returns:
            The class name ("nodata" for the nodata code).

        Raises:
            ValueError: for a code the legend lacks.
        """
        if code == self.nodata:
            return "nodata"
        return self.names[self.index_of(int(code))]

    def codes_of_names(self, names: Iterable[Any], source: str | os.PathLike[str]) -> np.ndarray:
        """Map class names (case and surrounding spaces ignored) to codes.

        Args:
            names: class names, e.g. a points file's class column.
            source: the file they come from, for the message.

        Returns:
            int64 codes in the same order.

        Raises:
            InputError: listing the names the legend lacks.
        """
        lookup = {c.name.lower(): c.code for c in self.classes}
        values = [str(n).strip() for n in names]
        unknown = sorted({v for v in values if v.lower() not in lookup})
        if unknown:
            raise InputError(
                f"{source}: unknown class name(s) {unknown} for legend '{self.name}' "
                f"(classes: {', '.join(self.names)}); fix the names or use a legend that has them"
            )
        return np.asarray([lookup[v.lower()] for v in values], np.int64)

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """A colour table for uint8 class maps, for rasterio's ``write_colormap``.

        Returns:
            code -> (r, g, b, 255); the nodata code -> (0, 0, 0, 0) (transparent).
        """
        cmap = {self.nodata: (0, 0, 0, 0)}
        cmap.update({c.code: (*c.rgb, 255) for c in self.classes})
        return cmap

    def validate(self, codes: Iterable[Any], source: str | os.PathLike[str]) -> None:
        """Raise if samples hold classes the legend does not know.

        Args:
            codes: the samples' class codes (ints; floats that are whole numbers are accepted).
            source: the samples' file, for the message.

        Raises:
            InputError: listing each unknown class with its sample count, and naming the file.
        """
        values = codes if isinstance(codes, np.ndarray | pd.Series) else list(codes)
        tally = pd.Series(values, dtype=object).value_counts(dropna=False)  # value -> samples
        known = set(self.codes)
        unknown = sorted(
            (
                (0, int(v), str(int(v))) if _is_whole(v) else (1, 0, repr(v)),  # type: ignore[call-overload]
                int(n),
            )
            for v, n in tally.items()
            if not (_is_whole(v) and int(v) in known)  # type: ignore[call-overload]
        )  # codes in numeric order, then anything that is not a code
        if unknown:
            listed = ", ".join(k if n == 1 else f"{k} ({n} samples)" for (_, _, k), n in unknown)
            raise InputError(
                f"{source}: unknown class code(s) {listed} for legend '{self.name}' "
                f"(codes: {', '.join(f'{c.code}={c.name}' for c in self.classes)}); "
                "fix the samples or use a legend that has these classes"
            )


def _is_whole(value: Any) -> bool:
    """True for ints and whole floats (3, 3.0, np.int8(3)); False for 3.5, NaN, "a", None."""
    if isinstance(value, bool | str | bytes) or value is None:
        return False
    try:
        return float(value) == int(value)
    except (TypeError, ValueError, OverflowError):
        return False


def load_legend(cfg: Legend | Mapping[str, Any] | str | os.PathLike[str]) -> Legend:
    """Accept a legend, a preset name, a YAML path or a config mapping.

    Args:
        cfg: any of those.

    Returns:
        The legend.
    """
    return cfg if isinstance(cfg, Legend) else Legend.from_config(cfg)
