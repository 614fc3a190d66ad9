"""Reference points: read any vector format or CSV, reproject, validate classes, locate pixels.

Points come as GeoPackage, GeoJSON, Shapefile (anything GDAL/pyogrio reads) or CSV with x/y
columns. Their class column holds legend codes, or class names when a legend is given. Every
problem a user can fix raises :class:`~bsrlc.errors.InputError` with the file in the message:
a missing file, a missing class column (listing the columns), classes the legend lacks (listing
them), no CRS, non-point geometries, or points that all lie outside the raster. Points partly
outside a raster are dropped and their number logged.

A legend reduced by ``drop``/``merge`` (:meth:`~bsrlc.data.legend.Legend.with_options`) is
applied while reading: class names map to codes through the full legend, points of dropped
classes are left out and merged ones relabelled before the classes are checked, each count is
logged, and the totals go to ``points.attrs["legend_counts"]``. :func:`warn_rare_classes` names
classes with too few training points.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from affine import Affine
from pyproj import CRS
from pyproj.exceptions import CRSError
from rasterio.transform import rowcol

from bsrlc.data.legend import Legend, RemapCounts
from bsrlc.errors import InputError, missing_file_fix
from bsrlc.raster import RasterInfo

log = logging.getLogger(__name__)

CLASS = "class"
"""The column :func:`read_points` puts the integer class codes in."""

LEGEND_COUNTS = "legend_counts"
"""The ``attrs`` key where :func:`read_points` leaves its drop/merge totals."""


def _crs(value: Any, path: Path, what: str) -> CRS:
    try:
        return CRS.from_user_input(value)
    except CRSError:
        raise InputError(
            f"{path}: {what} {value!r} is not a CRS; use e.g. EPSG:4326 or EPSG:3035"
        ) from None


def _read_csv(
    path: Path, crs: Any, x_column: str, y_column: str, crs_column: str | None
) -> gpd.GeoDataFrame:
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"{path}: not a readable CSV ({msg}); fix the file") from None
    missing = [c for c in (x_column, y_column) if c not in df.columns]
    if missing:
        raise InputError(
            f"{path}: no coordinate column(s) {missing} (columns: {list(df.columns)}); "
            "set x_column/y_column"
        )
    xy = df[[x_column, y_column]].apply(pd.to_numeric, errors="coerce")
    bad = int(xy.isna().any(axis=1).sum())
    if bad:
        raise InputError(f"{path}: {bad} row(s) without numeric {x_column}/{y_column}; fix them")
    geometry = gpd.points_from_xy(xy[x_column], xy[y_column])
    if crs is not None:
        return gpd.GeoDataFrame(df, geometry=geometry, crs=_crs(crs, path, "crs"))
    if crs_column and crs_column in df.columns:
        # one CRS per row is allowed: reproject each group to the first one
        groups = df[crs_column].astype(str).str.strip()
        first = _crs(groups.iloc[0], path, f"{crs_column} value")
        parts = []
        for value, idx in groups.groupby(groups, sort=False).groups.items():
            part = gpd.GeoDataFrame(
                df.loc[idx],
                geometry=geometry[df.index.get_indexer(idx)],
                crs=_crs(value, path, "crs"),
            )
            parts.append(part.to_crs(first))
        return gpd.GeoDataFrame(pd.concat(parts).sort_index(), crs=first)
    raise InputError(
        f"{path}: CSV points need a CRS; set points_crs in the config (e.g. EPSG:4326) "
        f"or add a '{crs_column or 'crs'}' column"
    )


def _read_vector(path: Path, crs: Any, layer: str | int | None) -> gpd.GeoDataFrame:
    try:
        gdf = gpd.read_file(path, layer=layer)
    except Exception as err:  # pyogrio raises DataSourceError, DataLayerError, ValueError...
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(
            f"{path}: not a readable vector file ({msg}); fix or re-export it"
        ) from None
    if gdf.crs is None:
        if crs is None:
            raise InputError(
                f"{path}: points have no CRS; save them with one (ogr2ogr -a_srs EPSG:...) "
                "or set points_crs in the config"
            )
        gdf = gdf.set_crs(_crs(crs, path, "crs"))
    empty = gdf.geometry.isna() | gdf.geometry.is_empty
    if empty.any():
        log.warning("%s: %d feature(s) without geometry dropped", path, int(empty.sum()))
        gdf = gdf[~empty]
    kinds = set(gdf.geom_type)
    if kinds - {"Point"}:
        raise InputError(
            f"{path}: expected point geometries, found {sorted(kinds)}; convert them to points "
            "(e.g. centroids) first"
        )
    return gdf


def _class_codes(
    values: pd.Series, path: Path, class_column: str, legend: Legend | None
) -> np.ndarray:
    if legend is not None:
        legend = legend.original  # names and codes as in the points, before drop/merge
    missing = int(values.isna().sum())
    if missing:
        raise InputError(f"{path}: {missing} point(s) have no {class_column!r}; fill or drop them")
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():
        whole = (numeric == np.floor(numeric)).all()
        if not whole:
            frac = sorted(set(numeric[numeric != np.floor(numeric)].tolist()))[:5]
            raise InputError(f"{path}: class codes must be integers, found {frac}")
        codes = numeric.to_numpy(np.int64)
        if legend is not None:
            legend.validate(codes, path)
        return codes
    if legend is None:
        raise InputError(
            f"{path}: column {class_column!r} holds names, not codes; pass a legend to map them"
        )
    return legend.codes_of_names(values.tolist(), path)


def read_points(
    path: str | os.PathLike[str],
    class_column: str = CLASS,
    crs: Any = None,
    x_column: str = "x",
    y_column: str = "y",
    layer: str | int | None = None,
    *,
    crs_column: str | None = "crs",
    legend: Legend | None = None,
    split_column: str | None = None,
    target_crs: Any = None,
) -> gpd.GeoDataFrame:
    """Read reference points from a GeoPackage, GeoJSON, Shapefile or CSV.

    Args:
        path: the file (``.csv`` for CSV, anything else through pyogrio).
        class_column: the column holding the class codes (or names, with ``legend``).
        crs: the CRS of a CSV's coordinates (overrides ``crs_column``), or the CRS to assume
            for a vector file that has none.
        x_column: a CSV's x column.
        y_column: a CSV's y column.
        layer: the layer of a multi-layer file (default: the first).
        crs_column: a CSV column with each row's CRS (used when ``crs`` is None).
        legend: if given, class names are mapped to codes and unknown classes raise; a legend
            with ``drop``/``merge`` options maps names and checks classes by its full legend,
            then leaves out points of dropped classes and relabels merged ones (logged per
            class, see :func:`apply_legend_options`).
        split_column: a column that must exist (e.g. ``split`` with train/test).
        target_crs: reproject to this CRS (e.g. the raster's).

    Returns:
        Points (one per row, original columns kept, dropped classes left out) with an int64
        ``class`` column of codes, ``attrs["source"]`` set to the file and
        ``attrs["legend_counts"]`` to ``{"dropped_by_legend": n, "merged_by_legend": m}``.

    Raises:
        InputError: for a missing or unreadable file, a missing class/split/coordinate column
            (listing the columns), missing or unknown classes, no CRS, non-point geometries,
            or when every point belongs to a dropped class.
    """
    path = Path(path)
    if not path.exists():
        fix = missing_file_fix(path, "fix the points path in the config")
        raise InputError(f"{path}: reference points not found; {fix}")
    if path.suffix.lower() == ".csv":
        gdf = _read_csv(path, crs, x_column, y_column, crs_column)
    else:
        gdf = _read_vector(path, crs, layer)
    if not len(gdf):
        raise InputError(f"{path}: no points in the file; add reference points")
    columns = [c for c in gdf.columns if c != gdf.geometry.name]
    for what, column in (("class", class_column), ("split", split_column)):
        if column is not None and column not in gdf.columns:
            raise InputError(
                f"{path}: no {what} column {column!r} (columns: {columns}); "
                f"set {what}_column in the config"
            )
    gdf = gdf.copy()
    gdf[CLASS] = _class_codes(gdf[class_column], path, class_column, legend)
    counts = RemapCounts()
    if legend is not None and legend.options is not None:
        codes, keep, counts = apply_legend_options(gdf[CLASS].to_numpy(), legend, path)
        if not keep.any():
            raise InputError(
                f"{path}: all {len(gdf)} points belong to classes in legend.drop; "
                "drop fewer classes or use other points"
            )
        gdf[CLASS] = codes
        gdf = gdf[keep]
    if target_crs is not None:
        gdf = gdf.to_crs(_crs(target_crs, path, "target crs"))
    gdf.attrs["source"] = str(path)
    gdf.attrs[LEGEND_COUNTS] = counts.as_counts()
    return gdf


def apply_legend_options(
    codes: np.ndarray | Sequence[int], legend: Legend, source: str | os.PathLike[str]
) -> tuple[np.ndarray, np.ndarray, RemapCounts]:
    """Drop and merge points' class codes as a legend's ``drop``/``merge`` say, and log it.

    Logs ``<source>: N points of class X (name) dropped (legend.drop)`` and ``<source>: N points
    of class X (name) merged into Y (name) (legend.merge)`` for each class with points. Codes
    already remapped pass unchanged (a merge target is never dropped or merged again).

    Args:
        codes: class codes of the full legend (``legend.original``).
        legend: the (reduced) legend; one without options changes nothing.
        source: the points' file, for the messages.

    Returns:
        (codes: int64, same length, merged ones relabelled; keep: bool, False for points of
        dropped classes; the counts per class).
    """
    arr = np.asarray(codes, np.int64).reshape(-1)
    if legend.options is None:
        return arr.copy(), np.ones(len(arr), bool), RemapCounts()
    new, keep, counts = legend.options.remap(arr)
    full = legend.original
    for code, n in counts.dropped.items():
        log.info(
            "%s: %d points of class %d (%s) dropped (legend.drop)",
            source,
            n,
            code,
            full.name_of(code),
        )
    for (code, into), n in counts.merged.items():
        log.info(
            "%s: %d points of class %d (%s) merged into %d (%s) (legend.merge)",
            source,
            n,
            code,
            full.name_of(code),
            into,
            full.name_of(into),
        )
    return new, keep, counts


def warn_rare_classes(
    counts: Mapping[int, int] | Sequence[int] | np.ndarray,
    legend: Legend,
    min_points: int | None,
    source: str | os.PathLike[str],
) -> list[str]:
    """Warn about classes with fewer than ``min_points`` training points.

    Logs one warning naming each such class with its count, e.g. ``points.gpkg: classes with
    fewer than 30 training points: industrial buildings (3), water (12); ...``.

    Args:
        counts: training points per class: an array of ``len(legend)`` counts in training-index
            order (``np.bincount(labels, minlength=len(legend))``), or ``{code: count}`` (codes
            missing from it count as 0).
        legend: the legend trained with.
        min_points: the least number of training points per class; None or 0 turns the
            warning off.
        source: the points' file, for the message.

    Returns:
        The names of the classes below ``min_points``, in legend order (empty if none).

    Raises:
        ValueError: for an array whose length is not the number of classes, or codes the
            legend lacks.
    """
    if isinstance(counts, Mapping):
        unknown = sorted(int(c) for c in counts if int(c) not in legend.codes)
        if unknown:
            raise ValueError(f"codes {unknown} not in legend '{legend.name}' {legend.codes}")
        per_class = [int(counts.get(c, 0)) for c in legend.codes]
    else:
        per_class = [int(n) for n in np.asarray(counts).reshape(-1)]
        if len(per_class) != len(legend):
            raise ValueError(
                f"{len(per_class)} counts for the {len(legend)} classes of legend '{legend.name}'"
            )
    if not min_points or min_points <= 0:
        return []
    rare = [(name, n) for name, n in zip(legend.names, per_class, strict=True) if n < min_points]
    if rare:
        log.warning(
            "%s: classes with fewer than %d training points: %s; their accuracy will be "
            "unreliable: add points, or merge or drop them (legend.merge / legend.drop)",
            source,
            min_points,
            ", ".join(f"{name} ({n})" for name, n in rare),
        )
    return [name for name, _ in rare]


def point_arrays(
    points: gpd.GeoDataFrame, split_column: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """The coordinates, class codes and split labels of points as arrays.

    Args:
        points: from :func:`read_points`.
        split_column: a column to return as well.

    Returns:
        (x, y, class codes, split values or None), in the points' CRS.
    """
    xs = points.geometry.x.to_numpy(np.float64)
    ys = points.geometry.y.to_numpy(np.float64)
    split = points[split_column].to_numpy() if split_column else None
    return xs, ys, points[CLASS].to_numpy(np.int64), split


def points_to_pixels(
    xs: np.ndarray, ys: np.ndarray, transform: Affine
) -> tuple[np.ndarray, np.ndarray]:
    """The pixel that contains each point.

    Uses ``rasterio.transform.rowcol`` with floor semantics: a point on the edge between two
    pixels belongs to the one to its right / below (for a north-up grid).

    Args:
        xs: x coordinates in the raster's CRS.
        ys: y coordinates.
        transform: the raster's pixel-to-map transform.

    Returns:
        (rows, cols) as int64 arrays; they may lie outside the raster.
    """
    xs = np.atleast_1d(np.asarray(xs, np.float64))
    ys = np.atleast_1d(np.asarray(ys, np.float64))
    if not xs.size:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows, cols = rowcol(transform, xs, ys, op=np.floor)
    return np.asarray(rows, np.int64).reshape(-1), np.asarray(cols, np.int64).reshape(-1)


@dataclass
class PixelSamples:
    """Points located on a raster grid.

    Attributes:
        rows: pixel rows.
        cols: pixel columns.
        codes: class codes.
        frame: the kept points (same order, in the raster's CRS), with all their columns.
    """

    rows: np.ndarray
    cols: np.ndarray
    codes: np.ndarray
    frame: gpd.GeoDataFrame

    def __len__(self) -> int:
        return len(self.rows)


def locate(
    points: gpd.GeoDataFrame,
    info: RasterInfo,
    legend: Legend | None = None,
    source: str | os.PathLike[str] | None = None,
) -> PixelSamples:
    """Reproject points to a raster's CRS, validate classes, drop (and count) those outside it.

    Args:
        points: from :func:`read_points`.
        info: the raster.
        legend: the legend the classes must belong to (None: no check); its ``drop``/``merge``
            options are applied if :func:`read_points` did not apply them already.
        source: the points' file, for messages (default: ``points.attrs["source"]``).

    Returns:
        The points inside the raster with their pixels.

    Raises:
        InputError: for points without a CRS, unknown classes, or if no point lies inside the
            raster or every point belongs to a dropped class.
    """
    source = source or points.attrs.get("source", "points")
    if legend is not None and legend.options is not None:
        codes, keep, counts = apply_legend_options(points[CLASS].to_numpy(), legend, source)
        if counts.n_dropped or counts.n_merged:  # points read without the reduced legend
            points = points.copy()
            points[CLASS] = codes
            points = points[keep]
            if not len(points):
                raise InputError(
                    f"{source}: all points belong to classes in legend.drop; "
                    "drop fewer classes or use other points"
                )
    if legend is not None:
        legend.validate(points[CLASS].to_numpy(), source)
    if points.crs is None:
        raise InputError(f"{source}: points have no CRS; read them with read_points(crs=...)")
    if info.crs is None:
        raise InputError(f"{info.path}: raster has no CRS; assign one first")
    target = CRS.from_user_input(info.crs.to_wkt())
    pts = points if CRS.from_user_input(points.crs) == target else points.to_crs(target)
    xs, ys = pts.geometry.x.to_numpy(), pts.geometry.y.to_numpy()
    rows, cols = points_to_pixels(xs, ys, info.transform)
    inside = (rows >= 0) & (rows < info.height) & (cols >= 0) & (cols < info.width)
    if not inside.any():
        left, bottom, right, top = (round(b) for b in info.bounds)
        raise InputError(
            f"{source}: all {len(pts)} points lie outside {info.path} (bounds {left}, {bottom}, "
            f"{right}, {top} in {info.crs}); check the points' CRS and the raster's area"
        )
    if not inside.all():
        log.warning(
            "%s: %d of %d points lie outside %s and were dropped",
            source,
            int((~inside).sum()),
            len(pts),
            info.path,
        )
    keep = pts[inside].reset_index(drop=True)
    keep.attrs["source"] = str(source)
    return PixelSamples(rows[inside], cols[inside], keep[CLASS].to_numpy(np.int64), keep)


def read_and_locate(
    path: str | os.PathLike[str], info: RasterInfo, legend: Legend, **kwargs: Any
) -> PixelSamples:
    """:func:`read_points` then :func:`locate` on a raster.

    Args:
        path: the points file.
        info: the raster.
        legend: the legend.
        **kwargs: more arguments for :func:`read_points`.

    Returns:
        The points inside the raster with their pixels.
    """
    return locate(read_points(path, legend=legend, **kwargs), info, legend, path)
