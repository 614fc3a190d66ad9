"""Reference points: read any vector format or CSV, reproject, validate classes, locate pixels."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from affine import Affine

from bsrlc.data.legend import Legend
from bsrlc.errors import InputError
from bsrlc.raster import RasterInfo

log = logging.getLogger(__name__)


def read_points(
    path: str | Path,
    class_column: str = "class",
    crs: str | None = None,
    x_column: str = "x",
    y_column: str = "y",
    layer: str | None = None,
) -> gpd.GeoDataFrame:
    """Read reference points from a GeoPackage, GeoJSON, Shapefile or CSV.

    Args:
        path: the file.
        class_column: the column holding class codes.
        crs: the CRS of a CSV's coordinates (or of a vector file without one).
        x_column: a CSV's x column.
        y_column: a CSV's y column.
        layer: the layer of a multi-layer file.

    Returns:
        Points with a ``class`` column (int).

    Raises:
        InputError: for a missing file or column, a missing CRS, or non-point geometries.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: reference points not found; fix data.points")
    if path.suffix.lower() == ".csv":
        df = pd.read_csv(path)
        missing = [c for c in (x_column, y_column) if c not in df.columns]
        if missing:
            raise InputError(
                f"{path}: no column(s) {missing} (has {list(df.columns)}); set x_column/y_column"
            )
        csv_crs = crs or (df["crs"].iloc[0] if "crs" in df.columns and len(df) else None)
        if csv_crs is None:
            raise InputError(f"{path}: CSV points need a crs (config data.points_crs or a column)")
        gdf = gpd.GeoDataFrame(
            df, geometry=gpd.points_from_xy(df[x_column], df[y_column]), crs=csv_crs
        )
    else:
        try:
            gdf = gpd.read_file(path, layer=layer)
        except Exception as err:  # pyogrio raises several types for unreadable files
            raise InputError(f"{path}: not a readable vector file ({err})") from None
        if gdf.crs is None:
            if crs is None:
                raise InputError(f"{path}: points have no CRS; save them with one or set crs")
            gdf = gdf.set_crs(crs)
        if len(gdf) and not (gdf.geom_type == "Point").all():
            raise InputError(f"{path}: expected point geometries, found {set(gdf.geom_type)}")
    if class_column not in gdf.columns:
        columns = [c for c in gdf.columns if c != "geometry"]
        raise InputError(
            f"{path}: no class column {class_column!r} (columns: {columns}); set data.class_column"
        )
    gdf = gdf.rename(columns={class_column: "class"}) if class_column != "class" else gdf
    gdf["class"] = gdf["class"].astype(int)
    gdf.attrs["source"] = str(path)
    return gdf


@dataclass
class PixelSamples:
    """Points located on a raster grid.

    Attributes:
        rows: pixel rows.
        cols: pixel columns.
        codes: class codes.
        frame: the remaining points (same order), with all their columns.
    """

    rows: np.ndarray
    cols: np.ndarray
    codes: np.ndarray
    frame: gpd.GeoDataFrame


def points_to_pixels(
    xs: np.ndarray, ys: np.ndarray, transform: Affine
) -> tuple[np.ndarray, np.ndarray]:
    """The pixel that contains each point (floor of the inverse transform).

    Args:
        xs: x coordinates in the raster's CRS.
        ys: y coordinates.
        transform: the raster's transform.

    Returns:
        (rows, cols) int64.
    """
    inv = ~transform
    cols = np.floor(inv.a * xs + inv.b * ys + inv.c).astype(np.int64)
    rows = np.floor(inv.d * xs + inv.e * ys + inv.f).astype(np.int64)
    return rows, cols


def locate(
    points: gpd.GeoDataFrame, info: RasterInfo, legend: Legend, source: str | Path | None = None
) -> PixelSamples:
    """Reproject points to a raster, validate classes, drop (and count) those outside it.

    Args:
        points: from :func:`read_points`.
        info: the raster.
        legend: the legend the classes must belong to.
        source: the points' file, for messages.

    Returns:
        The points inside the raster with their pixels.

    Raises:
        InputError: for unknown classes or if no point lies inside the raster.
    """
    source = source or points.attrs.get("source", "points")
    legend.validate(points["class"].unique(), source)
    pts = points.to_crs(info.crs) if points.crs != info.crs else points
    rows, cols = points_to_pixels(
        pts.geometry.x.to_numpy(), pts.geometry.y.to_numpy(), info.transform
    )
    inside = (rows >= 0) & (rows < info.height) & (cols >= 0) & (cols < info.width)
    if not inside.any():
        raise InputError(
            f"{source}: none of {len(pts)} points lies inside {info.path} (bounds "
            f"{tuple(round(b) for b in info.bounds)}, {info.crs}); check the points' CRS and area"
        )
    if (~inside).any():
        log.warning(
            "%s: %d of %d points outside %s dropped",
            source,
            int((~inside).sum()),
            len(pts),
            info.path,
        )
    keep = pts[inside].reset_index(drop=True)
    return PixelSamples(rows[inside], cols[inside], keep["class"].to_numpy(), keep)
