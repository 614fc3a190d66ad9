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
inference) or from ``legend=`` (a preset name or a YAML file).
"""

from __future__ import annotations

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
from bsrlc.data.points import points_to_pixels, read_points
from bsrlc.errors import ConfigError, InputError, exit_on_user_error
from bsrlc.evaluation.accuracy import AreaAccuracy, assess_map, count_classes
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
        log.warning("%s: map class(es) %s have no pixels; they get no samples", class_map, empty)
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


# -- estimate ----------------------------------------------------------------------------------


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


def estimate(
    class_map: str | os.PathLike[str],
    reference: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    class_column: str = "reference",
    legend: Any = None,
) -> AreaAccuracy:
    """Estimate accuracy and areas from labelled samples; write JSON, CSV and PNG.

    Writes ``out_dir/assessment.json``, ``out_dir/error_matrix.csv`` (area proportions, map
    rows, reference columns) and ``out_dir/areas.png``, all or none.

    Args:
        class_map: the class map (strata).
        reference: labelled points (any vector format); reprojected to the map's CRS.
        out_dir: the output folder.
        class_column: the column of reference classes (legend codes or names).
        legend: overrides the map's legend tags.

    Returns:
        The estimates.

    Raises:
        InputError: for unknown reference classes, no point on the map, or an unsampled
            mapped class.
    """
    lg = map_legend(class_map, legend)
    points = read_points(reference, class_column=class_column, legend=lg)
    with open_raster(class_map) as src:
        transform, crs, h, w = src.transform, src.crs, src.height, src.width
    if crs is not None:
        target = CRS.from_user_input(crs.to_wkt())
        if CRS.from_user_input(points.crs) != target:
            log.info("%s: reprojecting points to the map's CRS", reference)
            points = points.to_crs(target)
    rows, cols = points_to_pixels(
        points.geometry.x.to_numpy(), points.geometry.y.to_numpy(), transform
    )
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    if (~inside).any():
        ids = points["sample_id"] if "sample_id" in points.columns else pd.Series(points.index)
        listed = ids.to_numpy()[~inside].tolist()
        more = f" and {len(listed) - 20} more" if len(listed) > 20 else ""
        log.warning(
            "%s: %d of %d points lie outside %s and are not used: %s%s",
            reference,
            len(listed),
            len(points),
            class_map,
            ", ".join(str(v) for v in listed[:20]),
            more,
        )
        if not inside.any():
            raise InputError(
                f"{reference}: all {len(points)} points lie outside {class_map}; check their "
                "CRS and the map's extent"
            )
        points = points[inside]
    points.attrs["source"] = str(reference)
    acc = assess_map(class_map, points, lg, source=str(reference))
    few = [acc.class_names[i] for i in range(len(lg)) if 0 < acc.counts[i].sum() < 2]
    if few:
        log.warning(
            "%s: map class(es) %s have fewer than two samples; their intervals (and those of OA "
            "and areas) are unknown",
            reference,
            few,
        )
    _write_outputs(acc, Path(out_dir))
    return acc


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
    "  all: [legend=PRESET|FILE.yaml] (default: the map's legend tags)"
)

_KEYS = {
    "design": {"map": None, "expected_ua": "0.8", "target_se": "0.01", "min_per_class": "50",
               "out": None, "legend": ""},
    "sample": {"map": None, "design": None, "seed": "0", "allocation": "n_olofsson",
               "out": None, "legend": ""},
    "estimate": {"map": None, "reference": None, "class_column": "reference", "out_dir": None,
                 "legend": ""},
}  # fmt: skip


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
        got = argv[0] if argv else "nothing"
        raise ConfigError(f"command {got!r}: use one of design, sample, estimate (see --help)")
    command, spec = argv[0], _KEYS[argv[0]]
    values = dict(spec)
    for arg in argv[1:]:
        key, sep, value = arg.partition("=")
        if not sep or key not in spec:
            raise ConfigError(
                f"{command}: unknown argument {arg!r}; use key=value with keys {', '.join(spec)}"
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
    """Run one of the commands.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
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
