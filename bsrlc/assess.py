"""Sampling design, stratified sample and area/accuracy estimates of a class map.

Good practice of Olofsson et al. (2014, Remote Sensing of Environment 148, 42-57): the map
classes are the strata, a stratified random sample is labelled by an interpreter, and the
stratified estimators (:func:`bsrlc.evaluation.accuracy.area_adjusted_accuracy`) give the error
matrix in area proportions, accuracies and class areas with 95% confidence intervals::

    python -m bsrlc.assess design   map=MAP.tif expected_ua=0.8 target_se=0.01 \
        min_per_class=50 out=design.csv
    python -m bsrlc.assess sample   map=MAP.tif design=design.csv seed=0 out=sample.gpkg
    python -m bsrlc.assess estimate map=MAP.tif reference=labelled.gpkg \
        class_column=reference out_dir=DIR

The legend comes from the map's tags (``LEGEND`` and ``CLASS_<code>``, as written by dense
inference) or from ``legend=`` (a preset name or a YAML file). Reference labels are legend codes
or names; points without a label, outside the map or on its nodata are counted, listed in the
log and not used; points in another CRS are reprojected. Every output is written whole or not
at all. No argument, ``help`` or ``--help`` print the usage.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from pyproj import CRS

from bsrlc.data.legend import Legend
from bsrlc.data.points import CLASS, _read_csv, points_to_pixels
from bsrlc.errors import ConfigError, InputError, exit_on_user_error
from bsrlc.evaluation.accuracy import (
    AreaAccuracy,
    area_adjusted_accuracy,
    confusion_matrix,
    count_classes,
    values_at,
)
from bsrlc.raster import atomic_path, block_windows, open_raster

log = logging.getLogger("bsrlc.assess")

ALLOCATIONS = ("n_proportional", "n_equal", "n_olofsson")
"""The sample-size columns of a design CSV."""

DESIGN_COLUMNS = ("code", "name", "mapped_pixels", "area_weight", *ALLOCATIONS)
"""The columns of a design CSV, in order."""

BLOCK = 1024
"""Block size (pixels) of the passes over a map."""


# -- legend ------------------------------------------------------------------------------------


def map_legend(path: str | os.PathLike[str], legend: Any = None) -> Legend:
    """The legend of a class map: ``legend`` if given, else the map's tags.

    Args:
        path: a class map written by bsrlc (tags ``LEGEND`` and ``CLASS_<code>``).
        legend: a preset name, YAML path, mapping or :class:`Legend` (overrides the tags).

    Returns:
        The legend.

    Raises:
        ConfigError: if ``legend`` is None and the map has no legend tags.
    """
    if isinstance(legend, Legend):
        return legend
    if legend not in (None, ""):
        return Legend.from_config(legend)
    with open_raster(path) as src:
        tags = src.tags()
        try:
            cmap = src.colormap(1)
        except ValueError:  # no colour table
            cmap = {}
        nodata = src.nodata
    classes = []
    for key, name in tags.items():
        if key.startswith("CLASS_") and key[6:].isdigit():
            code = int(key[6:])
            rgb = cmap.get(code, (136, 136, 136, 255))[:3]
            classes.append({"code": code, "name": name, "colour": list(rgb)})
    if not classes:
        raise ConfigError(
            f"{path}: the map has no legend tags (CLASS_<code>); pass legend=urban (a preset) "
            "or legend=FILE.yaml"
        )
    cfg = {
        "name": tags.get("LEGEND", "map legend"),
        "nodata": int(nodata) if nodata is not None else 0,
        "classes": sorted(classes, key=lambda c: c["code"]),
    }
    return Legend.from_config(cfg, source=f"{path} tags")


# -- design ------------------------------------------------------------------------------------


def _round_to_total(x: np.ndarray, total: int) -> np.ndarray:
    """Largest-remainder rounding of non-negative ``x`` to integers summing to ``total``."""
    if total <= 0 or x.sum() <= 0:
        return np.zeros(len(x), np.int64)
    scaled = x / x.sum() * total
    out = np.floor(scaled).astype(np.int64)
    order = np.argsort(-(scaled - out), kind="stable")
    out[order[: total - int(out.sum())]] += 1
    return out


def olofsson_total(weights: np.ndarray, expected_ua: np.ndarray, target_se: float) -> int:
    """Total sample size for a target standard error of overall accuracy (Olofsson eq. 13).

    Args:
        weights: (K,) map area proportions W_i.
        expected_ua: (K,) anticipated user's accuracies U_i.
        target_se: the target standard error S(O).

    Returns:
        n = ceil((sum_i W_i S_i / S(O))^2), S_i = sqrt(U_i (1 - U_i)).
    """
    s = np.sqrt(expected_ua * (1 - expected_ua))
    return math.ceil(round((float(np.sum(weights * s)) / target_se) ** 2, 9))


def olofsson_allocation(weights: np.ndarray, total: int, min_per_class: int) -> np.ndarray:
    """Proportional allocation with a floor for rare classes.

    Classes whose proportional share is below ``min_per_class`` get ``min_per_class``; the rest
    of ``total`` is shared in proportion to area among the others (repeated until stable).

    Args:
        weights: (K,) area proportions; classes with weight 0 get 0 samples.
        total: the total sample size.
        min_per_class: the floor.

    Returns:
        (K,) int64 sample sizes.
    """
    k = len(weights)
    fixed = np.zeros(k, bool)
    mapped = weights > 0
    while True:
        free = mapped & ~fixed
        rest = max(total - min_per_class * int(fixed.sum()), 0)
        share = np.zeros(k)
        if free.any():
            share[free] = weights[free] / weights[free].sum() * rest
        low = free & (share < min_per_class)
        if not low.any():
            break
        fixed |= low
    out = np.zeros(k, np.int64)
    out[fixed] = min_per_class
    out[free] = _round_to_total(weights[free], rest) if free.any() else 0
    return out


def make_design(
    class_map: str | os.PathLike[str],
    expected_ua: float | Sequence[float] = 0.8,
    target_se: float = 0.01,
    min_per_class: int = 50,
    legend: Any = None,
) -> pd.DataFrame:
    """Sample sizes per map class: proportional, equal and Olofsson allocation.

    Args:
        class_map: the class map (strata).
        expected_ua: anticipated user's accuracy, one for all classes or one per legend class.
        target_se: target standard error of overall accuracy.
        min_per_class: the floor of rare classes in the Olofsson allocation.
        legend: overrides the map's legend tags.

    Returns:
        One row per legend class with :data:`DESIGN_COLUMNS`; classes without pixels get 0
        samples (and a warning).

    Raises:
        ConfigError: for values out of range.
        InputError: for a map without classified pixels or with codes the legend lacks.
    """
    lg = map_legend(class_map, legend)
    k = len(lg)
    ua = (
        np.broadcast_to(np.asarray(expected_ua, np.float64), (k,))
        if np.ndim(expected_ua) == 0
        else np.asarray(expected_ua, np.float64)
    )
    if ua.shape != (k,) or not ((ua > 0) & (ua < 1)).all():
        raise ConfigError(
            f"expected_ua={expected_ua}: give one value in (0, 1), or {k} comma-separated values "
            f"(classes {', '.join(lg.names)})"
        )
    if not target_se > 0:
        raise ConfigError(f"target_se={target_se}: must be > 0 (e.g. 0.01)")
    if min_per_class < 2:
        raise ConfigError(f"min_per_class={min_per_class}: must be >= 2 (variances need two)")
    mapped = count_classes(class_map, lg)
    if mapped.sum() == 0:
        raise InputError(f"{class_map}: the map has no classified pixels; check its nodata")
    empty = [lg.names[i] for i in range(k) if mapped[i] == 0]
    if empty:
        log.warning(
            "%s: map class(es) %s have no pixels; they get no samples (their area is estimated "
            "from the samples of the other classes)",
            class_map,
            empty,
        )
    w = mapped / mapped.sum()
    total = olofsson_total(w, ua, target_se)
    present = mapped > 0
    equal = np.zeros(k, np.int64)
    equal[present] = _round_to_total(np.ones(int(present.sum())), total)
    design = pd.DataFrame(
        {
            "code": lg.codes,
            "name": lg.names,
            "mapped_pixels": mapped.astype(np.int64),
            "area_weight": w,
            "n_proportional": _round_to_total(w, total),
            "n_equal": equal,
            "n_olofsson": olofsson_allocation(w, total, min_per_class),
        }
    )
    for col in ALLOCATIONS:
        over = design[col] > design["mapped_pixels"]
        if over.any():
            log.warning(
                "%s: %s of %s capped at their pixel counts",
                class_map,
                col,
                design.loc[over, "name"].tolist(),
            )
            design.loc[over, col] = design.loc[over, "mapped_pixels"]
    log.info("total n = %d (target SE %.4g of OA, expected UA %s)", total, target_se, ua.tolist())
    return design


def read_design(path: str | os.PathLike[str], allocation: str = "n_olofsson") -> pd.DataFrame:
    """Read a design CSV written by :func:`make_design`.

    Args:
        path: the CSV.
        allocation: the sample-size column to use.

    Returns:
        The design table.

    Raises:
        InputError: for a missing/unreadable file or missing columns.
        ConfigError: for an unknown allocation column.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: design not found; write it with python -m bsrlc.assess design")
    try:
        design = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(
            f"{path}: not a readable CSV ({type(err).__name__}); re-create it"
        ) from None
    if allocation not in design.columns:
        raise ConfigError(
            f"{path}: no allocation column {allocation!r} (columns: {list(design.columns)}); "
            f"use allocation= one of {', '.join(ALLOCATIONS)}"
        )
    for col in ("code", allocation):
        if col not in design.columns:
            raise InputError(f"{path}: no {col!r} column; re-create it with bsrlc.assess design")
        values = pd.to_numeric(design[col], errors="coerce")
        if values.isna().any() or (values < 0).any() or (values != np.floor(values)).any():
            raise InputError(f"{path}: column {col!r} must hold non-negative integers; fix it")
    return design


# -- sample ------------------------------------------------------------------------------------


@dataclass
class PixelSample:
    """A stratified random sample of map pixels.

    Attributes:
        rows: pixel rows.
        cols: pixel columns.
        codes: map class codes of the pixels.
    """

    rows: np.ndarray
    cols: np.ndarray
    codes: np.ndarray


def stratified_pixels(
    class_map: str | os.PathLike[str],
    sizes: Mapping[int, int],
    seed: int = 0,
    nodata: int | None = None,
) -> PixelSample:
    """Draw ``sizes[code]`` pixels without replacement from each map class.

    Two passes over the map in blocks: one counts each class's pixels per block, then each
    class's sample is drawn as ranks among its pixels (raster order) and located in the
    second pass, so memory stays bounded by a block whatever the map's size.

    Args:
        class_map: the class map.
        sizes: class code -> sample size.
        seed: the random seed (same seed, map and sizes: same sample).
        nodata: the nodata code (never sampled).

    Returns:
        The sampled pixels, ordered by class then raster order.

    Raises:
        InputError: if a class has fewer pixels than its sample size.
    """
    codes = [int(c) for c, n in sizes.items() if n > 0]
    with open_raster(class_map) as src:
        windows = block_windows(src.width, src.height, BLOCK)
        nd = nodata if nodata is not None else src.nodata
        counts = np.zeros((len(windows), 256), np.int64)
        for b, win in enumerate(windows):
            counts[b] = np.bincount(
                src.read(1, window=win).ravel().astype(np.int64), minlength=256
            )[:256]
        rng = np.random.default_rng(seed)
        ranks: dict[int, np.ndarray] = {}
        for code in codes:
            total = int(counts[:, code].sum()) if nd is None or code != int(nd) else 0
            if total < sizes[code]:
                raise InputError(
                    f"{class_map}: class {code} has {total} pixels, fewer than its sample size "
                    f"{sizes[code]}; lower it in the design"
                )
            ranks[code] = np.sort(rng.choice(total, size=int(sizes[code]), replace=False))
        start = np.cumsum(counts, axis=0) - counts  # pixels of each class before each block
        out: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {c: [] for c in codes}
        for b, win in enumerate(windows):
            wanted = {
                c: ranks[c][(ranks[c] >= start[b, c]) & (ranks[c] < start[b, c] + counts[b, c])]
                for c in codes
            }
            if not any(len(v) for v in wanted.values()):
                continue
            block = src.read(1, window=win)
            for c, r in wanted.items():
                if len(r):
                    flat = np.flatnonzero(block.ravel() == c)[r - start[b, c]]
                    rr, cc = np.divmod(flat, int(win.width))
                    out[c].append((rr + int(win.row_off), cc + int(win.col_off)))
    rows = [r for c in codes for r, _ in out[c]]
    cols = [cc for c in codes for _, cc in out[c]]
    code_arr = [np.full(len(r), c) for c in codes for r, _ in out[c]]
    if not rows:
        return PixelSample(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
    return PixelSample(
        np.concatenate(rows).astype(np.int64),
        np.concatenate(cols).astype(np.int64),
        np.concatenate(code_arr).astype(np.int64),
    )


def draw_sample(
    class_map: str | os.PathLike[str],
    design: str | os.PathLike[str] | pd.DataFrame,
    out: str | os.PathLike[str],
    seed: int = 0,
    allocation: str = "n_olofsson",
    legend: Any = None,
) -> Path:
    """Write a stratified random sample of pixel centres as GeoPackage points, atomically.

    Args:
        class_map: the class map (strata).
        design: a design CSV (or its table) from :func:`make_design`.
        out: the ``.gpkg`` to write (replaced atomically).
        seed: the random seed.
        allocation: the design column of sample sizes.
        legend: overrides the map's legend tags.

    Returns:
        ``out``. Points in the map's CRS with ``sample_id``, ``map_class`` (code),
        ``map_name`` and an empty ``reference`` column to fill in.

    Raises:
        InputError: if the design's classes are not the map's legend classes.
    """
    lg = map_legend(class_map, legend)
    table = design if isinstance(design, pd.DataFrame) else read_design(design, allocation)
    where = "design" if isinstance(design, pd.DataFrame) else str(design)
    unknown = sorted(set(table["code"].astype(int)) - set(lg.codes))
    if unknown:
        raise InputError(
            f"{where}: class code(s) {unknown} are not in the map's legend '{lg.name}' "
            f"(codes {lg.codes}); re-create the design from this map"
        )
    sizes = dict(zip(table["code"].astype(int), table[allocation].astype(int), strict=True))
    with open_raster(class_map) as src:
        transform, crs = src.transform, src.crs
    if crs is None:
        raise InputError(f"{class_map}: raster has no CRS; assign one first")
    px = stratified_pixels(class_map, sizes, seed, lg.nodata)
    xs, ys = transform * (px.cols + 0.5, px.rows + 0.5)
    gdf = gpd.GeoDataFrame(
        {
            "sample_id": np.arange(1, len(px.rows) + 1),
            "map_class": px.codes,
            "map_name": [lg.name_of(int(c)) for c in px.codes],
            "reference": pd.Series([None] * len(px.rows), dtype="string"),
        },
        geometry=gpd.points_from_xy(xs, ys),
        crs=crs.to_wkt(),
    )
    out = Path(out)
    with atomic_path(out) as partial:
        tmp = partial.with_name(partial.name + ".gpkg")  # GDAL wants the extension
        try:
            gdf.to_file(tmp, driver="GPKG", layer="sample")
            os.replace(tmp, partial)
        finally:
            tmp.unlink(missing_ok=True)
    log.info("%s: %d points (seed %d, %s)", out, len(gdf), seed, allocation)
    return out


# -- reference points --------------------------------------------------------------------------

SHOWN = 20
"""How many point ids a log line lists before "and N more"."""


def _listed(ids: Sequence[Any]) -> str:
    """``ids`` as "a, b, c" with at most :data:`SHOWN` of them, then "and N more"."""
    text = ", ".join(str(v) for v in ids[:SHOWN])
    return text + (f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else "")


def _point_ids(points: pd.DataFrame) -> np.ndarray:
    """The points' ``sample_id`` values, else their row numbers (1-based)."""
    if "sample_id" in points.columns:
        return points["sample_id"].to_numpy()
    return np.arange(1, len(points) + 1)


def _read_table(path: Path) -> gpd.GeoDataFrame:
    """Points of a vector file or a CSV with ``x``, ``y`` and ``crs`` columns, any CRS."""
    if path.suffix.lower() == ".csv":
        try:
            columns = pd.read_csv(path, nrows=0).columns.tolist()
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise InputError(
                f"{path}: not a readable CSV ({type(err).__name__}); fix or re-export it"
            ) from None
        missing = [c for c in ("x", "y", "crs") if c not in columns]
        if missing:
            raise InputError(
                f"{path}: a CSV reference needs x, y and crs columns, missing {missing} "
                f"(columns: {', '.join(map(str, columns))}); add them or save it as GeoPackage"
            )
        return _read_csv(path, None, "x", "y", "crs")
    try:
        gdf = gpd.read_file(path)
    except Exception as err:  # pyogrio raises DataSourceError, DataLayerError, ValueError...
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"{path}: not a readable vector file ({msg}); re-export it") from None
    if gdf.crs is None:
        raise InputError(
            f"{path}: the points have no CRS; save them with one (ogr2ogr -a_srs EPSG:... or "
            "in QGIS) before estimating"
        )
    empty = (gdf.geometry.isna() | gdf.geometry.is_empty).to_numpy()
    if empty.any():
        log.warning(
            "%s: %d of %d points have no geometry and are not used: %s",
            path,
            int(empty.sum()),
            len(gdf),
            _listed(_point_ids(gdf)[empty].tolist()),
        )
        gdf = gdf[~empty]
    kinds = set(gdf.geom_type)
    if kinds - {"Point"}:
        raise InputError(
            f"{path}: expected point geometries, found {sorted(kinds)}; convert them to points "
            "(e.g. centroids) first"
        )
    return gdf


def _label_codes(labels: pd.Series, legend: Legend, path: Path, class_column: str) -> np.ndarray:
    """Legend codes of reference labels that are codes or names (case and spaces ignored)."""
    by_name = {c.name.lower(): c.code for c in legend.classes}
    known = set(legend.codes)
    codes = np.zeros(len(labels), np.int64)
    unknown: dict[str, int] = {}
    for i, value in enumerate(labels.tolist()):
        text = str(value).strip()
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if number.is_integer() and int(number) in known:
            codes[i] = int(number)
        elif text.lower() in by_name:
            codes[i] = by_name[text.lower()]
        else:
            unknown[text] = unknown.get(text, 0) + 1
    if unknown:
        listed = ", ".join(k if n == 1 else f"{k} ({n} points)" for k, n in sorted(unknown.items()))
        classes = ", ".join(f"{c.code}={c.name}" for c in legend.classes)
        raise InputError(
            f"{path}: {class_column!r} holds class(es) {listed} that the map's legend "
            f"'{legend.name}' lacks (classes: {classes}); relabel them with these codes or names, "
            "or pass legend= the legend they use"
        )
    return codes


def read_reference(
    path: str | os.PathLike[str], legend: Legend, class_column: str = "reference"
) -> gpd.GeoDataFrame:
    """Read labelled reference points; unlabelled points are counted, listed and skipped.

    Args:
        path: a vector file (GeoPackage, GeoJSON, Shapefile...) or a CSV with ``x``, ``y`` and
            ``crs`` columns.
        legend: the map's legend; labels are its codes or names (case ignored).
        class_column: the column of reference labels.

    Returns:
        The labelled points in their own CRS, with an int64 ``class`` column of legend codes
        and ``attrs["source"]`` set to the file.

    Raises:
        InputError: for a missing or unreadable file, no CRS, non-point geometries, a missing
            class column (listing the columns), labels the legend lacks (listing them), or no
            labelled point at all.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: reference points not found; check reference=")
    gdf = _read_table(path)
    if not len(gdf):
        raise InputError(f"{path}: no points in the file; label a sample from bsrlc.assess sample")
    if class_column not in gdf.columns:
        columns = [str(c) for c in gdf.columns if c != gdf.geometry.name]
        raise InputError(
            f"{path}: no column {class_column!r} (columns: {', '.join(columns)}); "
            "pass class_column=NAME"
        )
    text = gdf[class_column].astype("string").str.strip()
    blank = (text.fillna("") == "").to_numpy(bool)
    if blank.all():
        raise InputError(
            f"{path}: none of the {len(gdf)} points has a label in {class_column!r}; label them "
            "(legend codes or names) or pass class_column=NAME"
        )
    if blank.any():
        log.warning(
            "%s: %d of %d points have no label in %r and are not used: %s",
            path,
            int(blank.sum()),
            len(gdf),
            class_column,
            _listed(_point_ids(gdf)[blank].tolist()),
        )
        gdf = gdf[~blank]
    gdf = gdf.copy()
    gdf[CLASS] = _label_codes(gdf[class_column], legend, path, class_column)
    gdf.attrs["source"] = str(path)
    return gdf


# -- estimate ----------------------------------------------------------------------------------


class _DropAllNamesWarning(logging.Filter):
    """Drops area_adjusted_accuracy's single-sample warning, which names every class."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("classes with a single sample")


def stratified_estimate(
    map_codes: np.ndarray | Sequence[int],
    reference_codes: np.ndarray | Sequence[int],
    mapped_pixels: np.ndarray | Sequence[float],
    legend: Legend,
    pixel_area: float,
    source: str = "reference sample",
) -> AreaAccuracy:
    """Olofsson et al. (2014) estimates from a stratified sample of (map, reference) codes.

    Args:
        map_codes: the map class code of each sample (its stratum).
        reference_codes: the reference class code of each sample.
        mapped_pixels: (K,) map pixels of each legend class (the strata sizes), legend order.
        legend: the legend of map and reference.
        pixel_area: area of one pixel in ha.
        source: the sample's origin, for messages.

    Returns:
        The estimates (areas in ha). Strata with a single sample have no variance estimate:
        their user's accuracy interval is NaN, and so are the intervals of OA, of the areas
        and of producer's accuracies, which sum over all strata (a warning names them).

    Raises:
        InputError: for codes the legend lacks or a mapped class without samples.
    """
    map_codes = np.asarray(map_codes, np.int64)
    reference_codes = np.asarray(reference_codes, np.int64)
    legend.validate(map_codes, f"{source} (map classes)")
    legend.validate(reference_codes, source)
    k = len(legend)
    # map rows, reference columns, as the estimators take it
    confusion = confusion_matrix(legend.index_of(reference_codes), legend.index_of(map_codes), k).T
    mapped = np.asarray(mapped_pixels, np.float64)
    n_i = confusion.sum(1)
    unsampled = [legend.names[i] for i in range(k) if mapped[i] > 0 and n_i[i] == 0]
    if unsampled:
        raise InputError(
            f"{source}: no sample falls on map class(es) {unsampled}; the stratified estimators "
            "need samples in every mapped class (draw them with bsrlc.assess sample)"
        )
    single = [legend.names[i] for i in range(k) if n_i[i] == 1]
    if single:
        log.warning(
            "%s: map class(es) %s have fewer than two samples, so no variance estimate: their "
            "user's accuracy interval is unknown, and so are those of OA, areas and producer's "
            "accuracies; label at least two samples per class",
            source,
            single,
        )
    accuracy_log = logging.getLogger(area_adjusted_accuracy.__module__)
    drop = _DropAllNamesWarning()
    accuracy_log.addFilter(drop)
    try:
        return area_adjusted_accuracy(confusion, mapped, pixel_area, legend.names, "ha")
    finally:
        accuracy_log.removeFilter(drop)


def estimate(
    class_map: str | os.PathLike[str],
    reference: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    class_column: str = "reference",
    legend: Any = None,
) -> AreaAccuracy:
    """Estimate accuracy and areas from labelled samples; write JSON, CSV and PNG.

    Writes ``out_dir/assessment.json``, ``out_dir/error_matrix.csv`` (area proportions, map
    rows, reference columns) and ``out_dir/areas.png``, all or none. Unlabelled points and
    points outside the map or on its nodata are counted, listed in the log and not used.

    Args:
        class_map: the class map (strata).
        reference: labelled points (see :func:`read_reference`); reprojected to the map's CRS.
        out_dir: the output folder.
        class_column: the column of reference classes (legend codes or names).
        legend: overrides the map's legend tags.

    Returns:
        The estimates.

    Raises:
        InputError: for unreadable points, unknown reference classes, a map without CRS or
            in degrees, no usable point, or an unsampled mapped class.
    """
    lg = map_legend(class_map, legend)
    with open_raster(class_map) as src:
        transform, crs, h, w, nodata = src.transform, src.crs, src.height, src.width, src.nodata
    if crs is None:
        raise InputError(f"{class_map}: raster has no CRS; assign one first (gdal_edit -a_srs)")
    if crs.is_geographic:
        raise InputError(
            f"{class_map}: map is in degrees; reproject it to an equal-area CRS (e.g. EPSG:3035) "
            "to estimate areas"
        )
    nd = int(nodata) if nodata is not None else lg.nodata
    points = read_reference(reference, lg, class_column)
    target = CRS.from_user_input(crs.to_wkt())
    source_crs = CRS.from_user_input(points.crs)
    if not source_crs.equals(target, ignore_axis_order=True):
        log.info(
            "%s: points in %s reprojected to the map's CRS (%s)",
            reference,
            source_crs.name,
            target.name,
        )
        points = points.to_crs(target)
    rows, cols = points_to_pixels(
        points.geometry.x.to_numpy(), points.geometry.y.to_numpy(), transform
    )
    ids = _point_ids(points)
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    if not inside.any():
        raise InputError(
            f"{reference}: all {len(points)} points lie outside {class_map}; check their CRS "
            "and the map's extent"
        )
    if (~inside).any():
        log.warning(
            "%s: %d of %d points lie outside %s and are not used: %s",
            reference,
            int((~inside).sum()),
            len(points),
            class_map,
            _listed(ids[~inside].tolist()),
        )
    map_codes = np.full(len(points), nd, np.int64)
    map_codes[inside] = values_at(class_map, rows[inside], cols[inside])
    on_nodata = inside & (map_codes == nd)
    if on_nodata.any():
        log.warning(
            "%s: %d of %d points lie on nodata pixels of %s and are not used: %s",
            reference,
            int(on_nodata.sum()),
            len(points),
            class_map,
            _listed(ids[on_nodata].tolist()),
        )
    used = inside & ~on_nodata
    if not used.any():
        raise InputError(
            f"{reference}: no point lies on a classified pixel of {class_map}; check the "
            "points' CRS and the map's nodata"
        )
    mapped = count_classes(class_map, lg, nd)
    pixel_area = abs(transform.a * transform.e - transform.b * transform.d) / 10_000.0  # ha
    reference_codes = points[CLASS].to_numpy(np.int64)
    acc = stratified_estimate(
        map_codes[used], reference_codes[used], mapped, lg, pixel_area, str(reference)
    )
    _write_outputs(acc, Path(out_dir))
    log.info("%s: %d points used, OA %.3f", out_dir, int(used.sum()), acc.overall)
    return acc


# -- outputs -----------------------------------------------------------------------------------


def _ci(estimate: float, half: float) -> dict[str, float | None]:
    def clean(v: float) -> float | None:
        return float(v) if math.isfinite(v) else None

    return {"estimate": clean(estimate), "ci95": clean(half)}


def assessment_dict(acc: AreaAccuracy) -> dict[str, Any]:
    """The ``assessment.json`` content (null where unknown; ci95 are half-widths).

    Args:
        acc: the estimates (areas in ha).

    Returns:
        ``{"oa": {estimate, ci95}, "classes": {name: {users_accuracy, producers_accuracy,
        area_ha, mapped_area_ha}}}``.
    """
    classes = {}
    for i, name in enumerate(acc.class_names):
        classes[name] = {
            "users_accuracy": _ci(acc.users[i], acc.users_ci[i]),
            "producers_accuracy": _ci(acc.producers[i], acc.producers_ci[i]),
            "area_ha": _ci(acc.area[i], acc.area_ci[i]),
            "mapped_area_ha": float(acc.mapped_area[i]),
        }
    return {"oa": _ci(acc.overall, acc.overall_ci), "classes": classes}


def area_figure(acc: AreaAccuracy, path: str | os.PathLike[str]) -> None:
    """Bar plot of mapped vs estimated areas with 95% intervals, saved as PNG.

    Args:
        acc: the estimates.
        path: the PNG.
    """
    from bsrlc.evaluation.figures import plt

    k = len(acc.class_names)
    x = np.arange(k)
    fig, ax = plt.subplots(figsize=(2.0 + 1.3 * k, 4.0), dpi=100)
    ax.bar(x - 0.2, acc.mapped_area, 0.4, label="mapped (pixel count)", color="#bbbbbb")
    err = np.where(np.isfinite(acc.area_ci), acc.area_ci, 0.0)
    ax.bar(x + 0.2, acc.area, 0.4, yerr=err, capsize=4, label="estimated (95% CI)", color="#4477aa")
    for i in np.flatnonzero(~np.isfinite(acc.area_ci)):
        ax.annotate("CI unknown", (x[i] + 0.2, acc.area[i]), ha="center", fontsize=7)
    short = [n if len(n) < 16 else n[:14] + "…" for n in acc.class_names]
    ax.set_xticks(x, short, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(f"area ({acc.area_unit})")
    ax.set_title(f"Mapped and estimated areas, OA {acc.overall:.3f}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def _write_outputs(acc: AreaAccuracy, out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".assess-", dir=out_dir))
    except OSError as err:
        raise InputError(f"{out_dir}: cannot create output folder ({err.strerror})") from None
    try:
        (tmp / "assessment.json").write_text(json.dumps(assessment_dict(acc), indent=2) + "\n")
        matrix = pd.DataFrame(acc.proportions, index=acc.class_names, columns=acc.class_names)
        matrix["total"] = matrix.sum(axis=1)
        matrix.loc["total"] = matrix.sum(axis=0)
        matrix.index.name = "map \\ reference"
        matrix.to_csv(tmp / "error_matrix.csv", float_format="%.6f")
        area_figure(acc, tmp / "areas.png")
        for name in ("assessment.json", "error_matrix.csv", "areas.png"):
            os.replace(tmp / name, out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- command line ------------------------------------------------------------------------------

USAGE = (
    "usage: python -m bsrlc.assess {design,sample,estimate} key=value ...\n"
    "  design   map=MAP.tif [expected_ua=0.8] [target_se=0.01] [min_per_class=50] out=design.csv\n"
    "  sample   map=MAP.tif design=design.csv [seed=0] [allocation=n_olofsson] out=sample.gpkg\n"
    "  estimate map=MAP.tif reference=labelled.gpkg [class_column=reference] out_dir=DIR\n"
    "  all: [legend=PRESET|FILE.yaml] (default: the map's legend tags)\n"
    "  reference: any vector file, or a CSV with x, y and crs columns; labels are legend codes\n"
    "  or names, unlabelled points are skipped"
)

_KEYS = {
    "design": {"map": None, "expected_ua": "0.8", "target_se": "0.01", "min_per_class": "50",
               "out": None, "legend": ""},
    "sample": {"map": None, "design": None, "seed": "0", "allocation": "n_olofsson",
               "out": None, "legend": ""},
    "estimate": {"map": None, "reference": None, "class_column": "reference", "out_dir": None,
                 "legend": ""},
}  # fmt: skip


HELP = ("-h", "--help", "help")
"""Arguments that print the usage (as does no argument at all)."""


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def parse_args(argv: Sequence[str]) -> tuple[str, dict[str, str]]:
    """Parse ``COMMAND key=value ...``.

    Args:
        argv: the arguments after the program name.

    Returns:
        (command, values with defaults filled in).

    Raises:
        ConfigError: for an unknown command or key, or a missing required key.
    """
    if not argv or argv[0] not in _KEYS:
        got = argv[0] if argv else ""
        raise ConfigError(
            f"unknown command {got!r}{_did_you_mean(got, list(_KEYS))}; use one of "
            f"{', '.join(_KEYS)} (python -m bsrlc.assess --help)"
        )
    command, spec = argv[0], _KEYS[argv[0]]
    values = dict(spec)
    for arg in argv[1:]:
        key, sep, value = arg.partition("=")
        if not sep or key not in spec:
            raise ConfigError(
                f"{command}: unknown argument {arg!r}{_did_you_mean(key, list(spec))}; use "
                f"key=value with keys {', '.join(spec)}"
            )
        values[key] = value
    missing = [k for k, v in values.items() if v is None or (spec[k] is None and v == "")]
    if missing:
        raise ConfigError(f"{command}: missing {', '.join(k + '=...' for k in missing)}")
    return command, values  # type: ignore[return-value]


def _number(values: Mapping[str, str], key: str, kind: type) -> Any:
    try:
        return kind(values[key])
    except ValueError:
        raise ConfigError(f"{key}={values[key]}: not a {kind.__name__}") from None


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    """Run one of the commands; no argument, ``help``, ``-h`` or ``--help`` print the usage.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in HELP or (argv[0] in _KEYS and any(a in HELP for a in argv[1:])):
        print(USAGE)
        return
    command, v = parse_args(argv)
    legend = v["legend"] or None
    if command == "design":
        ua_text = v["expected_ua"].strip("[]")
        try:
            ua: Any = [float(x) for x in ua_text.split(",")]
        except ValueError:
            raise ConfigError(f"expected_ua={v['expected_ua']}: not a number (list)") from None
        design = make_design(
            v["map"],
            ua[0] if len(ua) == 1 else ua,
            _number(v, "target_se", float),
            _number(v, "min_per_class", int),
            legend,
        )
        with atomic_path(v["out"]) as tmp:
            design.to_csv(tmp, index=False, columns=list(DESIGN_COLUMNS))
        print(v["out"])
    elif command == "sample":
        print(
            draw_sample(
                v["map"], v["design"], v["out"], _number(v, "seed", int), v["allocation"], legend
            )
        )
    else:
        estimate(v["map"], v["reference"], v["out_dir"], v["class_column"], legend)
        print(Path(v["out_dir"]) / "assessment.json")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    logging.getLogger("pyogrio").setLevel(logging.WARNING)
    main()
