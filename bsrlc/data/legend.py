"""Legends: class codes, names and colours, and the mapping to contiguous training indices."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bsrlc.config import CONF_DIR
from bsrlc.errors import ConfigError, InputError

NODATA_CODE = 0


@dataclass(frozen=True)
class LegendClass:
    """One class.

    Attributes:
        code: the value in class maps and reference samples (1..255).
        name: a human name.
        colour: ``#rrggbb``.
    """

    code: int
    name: str
    colour: str

    @property
    def rgb(self) -> tuple[int, int, int]:
        """The colour as (r, g, b) 0-255."""
        c = self.colour.lstrip("#")
        return (int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16))


@dataclass(frozen=True)
class Legend:
    """An ordered set of classes; training index i is ``classes[i]``.

    Attributes:
        name: the legend's name.
        classes: the classes, in training-index order.
    """

    name: str
    classes: tuple[LegendClass, ...]

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | str) -> Legend:
        """Build a legend from a config mapping or a preset name (``urban``, ``landcover``).

        Args:
            cfg: ``{"name": ..., "classes": [{"code", "name", "colour"}, ...]}`` or a name.

        Returns:
            The legend.

        Raises:
            ConfigError: for an unknown preset, duplicate or invalid codes.
        """
        if isinstance(cfg, str):
            path = CONF_DIR / "legend" / f"{cfg}.yaml"
            if not path.exists():
                presets = ", ".join(p.stem for p in (CONF_DIR / "legend").glob("*.yaml"))
                raise ConfigError(f"legend={cfg}: unknown preset; use one of {presets}")
            cfg = yaml.safe_load(path.read_text())
        classes = tuple(
            LegendClass(int(c["code"]), str(c["name"]), str(c.get("colour", "#888888")))
            for c in cfg["classes"]
        )
        codes = [c.code for c in classes]
        if len(set(codes)) != len(codes):
            raise ConfigError(f"legend {cfg.get('name')}: duplicate class codes {codes}")
        if any(not 1 <= c <= 255 for c in codes):
            raise ConfigError(f"legend {cfg.get('name')}: codes must be 1..255 (0 is nodata)")
        return cls(str(cfg.get("name", "legend")), classes)

    def to_config(self) -> dict[str, Any]:
        """The legend as plain data (for metadata and checkpoints).

        Returns:
            ``{"name", "classes": [{"code", "name", "colour"}]}``.
        """
        return {
            "name": self.name,
            "classes": [{"code": c.code, "name": c.name, "colour": c.colour} for c in self.classes],
        }

    @property
    def codes(self) -> list[int]:
        """Class codes in training-index order."""
        return [c.code for c in self.classes]

    @property
    def names(self) -> list[str]:
        """Class names in training-index order."""
        return [c.name for c in self.classes]

    def __len__(self) -> int:
        return len(self.classes)

    def index_of(self, codes: np.ndarray | Sequence[int]) -> np.ndarray:
        """Map class codes to training indices 0..K-1 (-1 for unknown codes).

        Args:
            codes: class codes.

        Returns:
            int64 indices.
        """
        lut = np.full(256, -1, np.int64)
        lut[self.codes] = np.arange(len(self.classes))
        return lut[np.asarray(codes, dtype=np.int64).clip(0, 255)]

    def code_of(self, indices: np.ndarray) -> np.ndarray:
        """Map training indices back to class codes.

        Args:
            indices: indices 0..K-1.

        Returns:
            uint8 codes.
        """
        return np.asarray(self.codes, np.uint8)[np.asarray(indices)]

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """A rasterio colour table for uint8 class maps (0 transparent).

        Returns:
            code -> (r, g, b, a).
        """
        cmap = {NODATA_CODE: (0, 0, 0, 0)}
        cmap.update({c.code: (*c.rgb, 255) for c in self.classes})
        return cmap

    def validate(self, codes: Iterable[int], source: str | Path) -> None:
        """Raise if samples hold classes the legend does not know.

        Args:
            codes: the samples' class codes.
            source: the samples' file, for the message.

        Raises:
            InputError: listing the unknown classes.
        """
        unknown = sorted(set(int(c) for c in codes) - set(self.codes))
        if unknown:
            raise InputError(
                f"{source}: unknown class code(s) {unknown} for legend '{self.name}' (codes "
                f"{self.codes}); fix the samples or use a legend that has them"
            )
