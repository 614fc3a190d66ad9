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

Classes can be left out or folded into another class at training time, without editing the
legend or the points, by ``drop`` and ``merge`` (codes or class names)::

    legend: {preset: urban, drop: [2], merge: {3: 4}}   # or {name, classes, drop, merge}

On the command line that is ``data.legend={preset:urban,drop:[2],merge:{3:4}}``, or
``+legend@data.legend=urban data.legend.drop=[2]`` (the presets hold ``drop: null`` and
``merge: null`` for such overrides). The result is the reduced legend (dropped and merged-away
classes removed, merge targets keep their place) whose :attr:`Legend.options` remember the full
legend and the code remapping; :func:`bsrlc.data.points.read_points` applies it to the points.
Merge chains (``{1: 2, 2: 3}``) resolve to their end (1 and 2 into 3); cycles, unknown classes
and merges into dropped classes are refused.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, overload

import numpy as np
import pandas as pd
import yaml

from bsrlc.config import CONF_DIR, plain
from bsrlc.errors import ConfigError, InputError

log = logging.getLogger(__name__)

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
        options: for a legend reduced by ``drop``/``merge``: the full legend and the code
            remapping (see :meth:`with_options`); None for a legend used as it is.
    """

    name: str
    classes: tuple[LegendClass, ...]
    nodata: int = NODATA_CODE
    source: str = "config"
    options: LegendOptions | None = field(default=None, repr=False)

    # -- building ------------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls, cfg: Mapping[str, Any] | str | os.PathLike[str], source: str | None = None
    ) -> Legend:
        """Build a legend from a preset name, a YAML file or a config mapping.

        Args:
            cfg: a preset in ``conf/legend/`` (``"urban"``, ``"landcover"``), a path to a YAML
                file, ``{"name", "nodata"?, "classes": [{"code", "name", "colour"}, ...]}``, or
                ``{"preset": "urban", "name"?}``; either mapping may add ``"drop": [codes or
                names]`` and ``"merge": {code or name: code or name}`` (a plain dict, an
                OmegaConf DictConfig, or a dict holding OmegaConf nodes).
            source: what to call the config in errors (default: the file or "config").

        Returns:
            The legend; with ``drop``/``merge`` the reduced legend whose :attr:`options` hold
            the full legend and the code remapping (see :meth:`with_options`).

        Raises:
            ConfigError: for an unknown preset, a missing file, invalid classes (missing
                fields, codes outside 1..255, the nodata code, duplicate codes or names, bad
                colours), or invalid ``drop``/``merge`` (unknown classes, a merge into a dropped
                class, a merge cycle, fewer than two classes left).
        """
        return cls._build(cfg, source, frozenset())

    @classmethod
    def _build(
        cls, cfg: Any, source: str | None, seen: frozenset[Path]
    ) -> Legend:  # seen: preset files on the way here (a preset naming itself is refused)
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
            if path.resolve() in seen:
                raise ConfigError(f"{path}: the legend names itself as its preset; fix 'preset'")
            seen = seen | {path.resolve()}
            source = source or str(path)
            try:
                cfg = yaml.safe_load(path.read_text())
            except yaml.YAMLError as err:
                raise ConfigError(f"{path}: not valid YAML ({err}); fix the legend file") from None
        cfg = plain(cfg)
        source = source or "config"
        if isinstance(cfg, Mapping) and "preset" in cfg:
            extra = sorted(str(k) for k in cfg if k not in {"preset", "name", "drop", "merge"})
            if extra:
                raise ConfigError(
                    f"{source}: legend keys {extra} do not go with 'preset'; give "
                    "{preset, name?, drop?, merge?} or a full {name, classes} legend"
                )
            if not isinstance(cfg["preset"], str):
                raise ConfigError(
                    f"{source}: legend.preset={cfg['preset']!r} is not a preset name or YAML path"
                )
            legend = cls._build(cfg["preset"], None, seen)
            if cfg.get("name") is not None:
                legend = replace(legend, name=str(cfg["name"]))
        elif isinstance(cfg, Mapping) and isinstance(cfg.get("classes"), Sequence):
            legend = cls._parse(cfg, source)
        elif isinstance(cfg, Mapping) and ("drop" in cfg or "merge" in cfg):
            raise ConfigError(
                f"{source}: legend {dict(cfg)} has drop/merge but no 'preset' or 'classes'; "
                "write legend: {preset: urban, drop: [2]} (command line: "
                "data.legend={preset:urban,drop:[2]}; '+data.legend.drop=' replaces the preset)"
            )
        else:
            raise ConfigError(
                f"{source}: a legend needs a 'classes' list of {{code, name, colour}} or a "
                "'preset'; see conf/legend/urban.yaml"
            )
        if isinstance(cfg, Mapping) and (cfg.get("drop") or cfg.get("merge")):
            where = f"{source} (legend '{legend.name}')"
            legend = legend.with_options(cfg.get("drop"), cfg.get("merge"), where=where)
        return legend

    @classmethod
    def _parse(cls, cfg: Mapping[str, Any], source: str) -> Legend:
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

    def with_options(
        self,
        drop: Iterable[int | str] | int | str | None = None,
        merge: Mapping[int | str, int | str] | None = None,
        *,
        where: str | None = None,
    ) -> Legend:
        """The legend without the dropped classes and with merged classes folded into others.

        Kept classes keep their order, codes, names and colours; a merge target keeps its own.
        Merge chains resolve to their end (``{1: 2, 2: 3}`` sends 1 and 2 to 3). Applied to a
        legend that already has options, the new ones act on its (reduced) classes and the
        result's options map the full legend's codes straight to the final ones.

        Args:
            drop: classes to leave out (codes or names, case ignored); one or a list.
            merge: ``{class: into}`` (codes or names).
            where: what to name in errors (default: the legend's source and name).

        Returns:
            The reduced legend; its :attr:`options` hold the full legend and the remapping
            (``self`` itself when there is nothing to drop or merge).

        Raises:
            ConfigError: naming ``legend.drop``/``legend.merge`` for unknown classes, a class
                both dropped and merged, a class merged into itself or into a dropped class, a
                merge cycle, or fewer than two classes left.
        """
        where = where or f"{self.source} (legend '{self.name}')"
        drops = _as_list(drop, where)
        merges = _as_mapping(merge, where)
        if not drops and not merges:
            return self
        dropped = {self._class_ref(d, "legend.drop", where) for d in drops}
        direct: dict[int, int] = {}
        for src, dst in merges.items():
            s, d = (self._class_ref(v, "legend.merge", where) for v in (src, dst))
            if s == d:
                raise ConfigError(
                    f"{where}: legend.merge {s}: {d} merges class {s} into itself; remove it"
                )
            if s in dropped:
                raise ConfigError(
                    f"{where}: class {s} ({self.name_of(s)}) is in legend.drop and legend.merge; "
                    "keep it in one of them"
                )
            if s in direct:
                raise ConfigError(
                    f"{where}: legend.merge gives class {s} twice; merge it into one class"
                )
            direct[s] = d
        resolved: dict[int, int] = {}
        for s in direct:
            chain = [s]
            while chain[-1] in direct:
                nxt = direct[chain[-1]]
                if nxt in chain:
                    cycle = " -> ".join(str(c) for c in [*chain[chain.index(nxt) :], nxt])
                    raise ConfigError(
                        f"{where}: legend.merge has the cycle {cycle}; "
                        "break it by choosing the class they all merge into"
                    )
                chain.append(nxt)
            if chain[-1] in dropped:
                raise ConfigError(
                    f"{where}: legend.merge sends class {s} ({self.name_of(s)}) into "
                    f"{' -> '.join(map(str, chain[1:]))}, which legend.drop removes; drop {s} "
                    "too or merge it into a kept class"
                )
            if len(chain) > 2:
                log.info("%s: legend.merge chain %s resolved", where, " -> ".join(map(str, chain)))
            resolved[s] = chain[-1]
        kept = [c for c in self.classes if c.code not in dropped and c.code not in resolved]
        if len(kept) < 2:
            raise ConfigError(
                f"{where}: legend.drop/legend.merge leave {len(kept)} class(es) of "
                f"{len(self.classes)}; keep at least two"
            )
        # the full legend's codes straight to the final ones (through earlier options)
        base = self.options.base if self.options else self
        before = self.options.mapping if self.options else {}
        gone = set(self.options.drop) if self.options else set()
        final_drop, final_merge = [], []
        for code in base.codes:
            if code in gone:
                final_drop.append(code)
                continue
            now = before.get(code, code)
            if now in dropped:
                final_drop.append(code)
            elif resolved.get(now, now) != code:
                final_merge.append((code, resolved.get(now, now)))
        options = LegendOptions(base, tuple(final_drop), tuple(final_merge))
        return Legend(self.name, tuple(kept), self.nodata, self.source, options)

    def without(self, codes: Iterable[int | str] | int | str) -> Legend:
        """The legend without some classes (:meth:`with_options` with ``drop``).

        Args:
            codes: class codes or names to leave out.

        Returns:
            The reduced legend, its :attr:`options` recording the drop.

        Raises:
            ConfigError: for unknown classes or fewer than two classes left.
        """
        return self.with_options(drop=codes)

    def merged(self, mapping: Mapping[int | str, int | str]) -> Legend:
        """The legend with classes folded into others (:meth:`with_options` with ``merge``).

        Args:
            mapping: ``{class: into}`` by code or name.

        Returns:
            The reduced legend, its :attr:`options` recording the merge.

        Raises:
            ConfigError: for unknown classes, self-merges, cycles or fewer than two classes left.
        """
        return self.with_options(merge=mapping)

    @property
    def original(self) -> Legend:
        """The legend before ``drop``/``merge`` (``self`` when it has no options)."""
        return self.options.base if self.options else self

    def _class_ref(self, value: Any, key: str, where: str) -> int:
        """The code of a class given by code or name in ``key``, or a one-line ConfigError."""
        code: int | None = None
        if _is_whole(value):
            code = int(value)
        elif isinstance(value, str):
            text = value.strip()
            if text.isdigit():
                code = int(text)
            else:
                code = {c.name.lower(): c.code for c in self.classes}.get(text.lower())
        if code is None or code not in self.codes:
            listed = ", ".join(f"{c.code}={c.name}" for c in self.classes)
            raise ConfigError(
                f"{where}: {key}: unknown class {value!r}; use a code or name of {listed}"
            )
        return code

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


@dataclass(frozen=True)
class LegendOptions:
    """How a reduced legend came from a full one: the classes dropped and merged.

    Codes are the full legend's. A merge target is never dropped nor merged itself (chains are
    resolved), so applying the remapping twice changes nothing.

    Attributes:
        base: the full legend (class names in points map to codes through it).
        drop: codes whose points are left out.
        merge: (code, into) pairs, the target being a class of the reduced legend.
    """

    base: Legend
    drop: tuple[int, ...] = ()
    merge: tuple[tuple[int, int], ...] = ()

    @property
    def mapping(self) -> dict[int, int]:
        """``merge`` as a dict: full-legend code -> reduced-legend code."""
        return dict(self.merge)

    def remap(
        self, codes: np.ndarray | Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray, RemapCounts]:
        """Apply the options to class codes of the full legend (:func:`remap_codes`).

        Args:
            codes: class codes.

        Returns:
            (new codes, keep mask, counts) as from :func:`remap_codes`.
        """
        return remap_codes(codes, self.drop, self.mapping)


@dataclass(frozen=True)
class RemapCounts:
    """Points affected by ``legend.drop`` and ``legend.merge``.

    Attributes:
        dropped: code -> points dropped (codes with points only).
        merged: (code, into) -> points relabelled (pairs with points only).
    """

    dropped: dict[int, int] = field(default_factory=dict)
    merged: dict[tuple[int, int], int] = field(default_factory=dict)

    @property
    def n_dropped(self) -> int:
        """Points dropped in all."""
        return sum(self.dropped.values())

    @property
    def n_merged(self) -> int:
        """Points relabelled in all."""
        return sum(self.merged.values())

    def as_counts(self) -> dict[str, int]:
        """The totals for a datamodule's ``counts``.

        Returns:
            ``{"dropped_by_legend": n, "merged_by_legend": m}``.
        """
        return {"dropped_by_legend": self.n_dropped, "merged_by_legend": self.n_merged}


def remap_codes(
    codes: np.ndarray | Sequence[int],
    drop: Iterable[int] = (),
    merge: Mapping[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, RemapCounts]:
    """Drop and merge class codes.

    ``merge`` is applied once to the original codes (``{1: 2, 2: 3}`` sends 1 to 2, not 3);
    :meth:`Legend.with_options` resolves chains before they get here.

    Args:
        codes: class codes (any integer array or sequence, 1-D).
        drop: codes to leave out.
        merge: ``{code: into}``.

    Returns:
        (new codes: int64, same length, merged codes replaced and dropped ones left as they
        were; keep: bool, False for dropped codes; the counts per dropped code and merge pair).
    """
    arr = np.asarray(codes, np.int64).reshape(-1)
    drop_set = sorted({int(c) for c in drop})
    keep = ~np.isin(arr, drop_set)
    out = arr.copy()
    dropped = {c: n for c in drop_set if (n := int((arr == c).sum()))}
    merged = {}
    for src, dst in (merge or {}).items():
        hit = keep & (arr == int(src))
        out[hit] = int(dst)
        if n := int(hit.sum()):
            merged[(int(src), int(dst))] = n
    return out, keep, RemapCounts(dropped, merged)


def _as_list(value: Any, where: str) -> list[Any]:
    value = plain(value)
    if value is None:
        return []
    if isinstance(value, str | int | np.integer):
        return [value]
    if isinstance(value, Sequence | np.ndarray | set | frozenset) and not isinstance(value, bytes):
        return list(value)
    raise ConfigError(
        f"{where}: legend.drop={value!r} is not a list of class codes or names; "
        "write e.g. drop: [2] (command line: data.legend.drop=[2])"
    )


def _as_mapping(value: Any, where: str) -> dict[Any, Any]:
    value = plain(value)
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    raise ConfigError(
        f"{where}: legend.merge={value!r} is not a mapping {{class: into}}; "
        "write e.g. merge: {3: 4} (command line: data.legend.merge={3:4})"
    )


def load_legend(cfg: Legend | Mapping[str, Any] | str | os.PathLike[str]) -> Legend:
    """Accept a legend, a preset name, a YAML path or a config mapping.

    Args:
        cfg: any of those.

    Returns:
        The legend.
    """
    return cfg if isinstance(cfg, Legend) else Legend.from_config(cfg)
