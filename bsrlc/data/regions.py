"""Regions of interest for spatial splits: a vector file or bounds, rasterised onto a grid."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rasterio.features import geometry_mask

from bsrlc.errors import ConfigError, InputError, missing_file_fix
from bsrlc.raster import RasterInfo

RegionSpec = str | Path | Sequence[float] | None


def region_mask(spec: RegionSpec, info: RasterInfo, what: str = "region") -> np.ndarray:
    """Rasterise a region onto a raster's grid.

    Args:
        spec: None (empty), bounds ``[left, bottom, right, top]`` in the raster's CRS, or a
            vector file (GeoJSON, GeoPackage, Shapefile) whose polygons are reprojected to the
            raster's CRS.
        info: the raster.
        what: the region's name, for errors.

    Returns:
        (rows, cols) bool, True inside the region (pixel centres).

    Raises:
        ConfigError: if bounds are malformed.
        InputError: if the file is missing or the region does not overlap the raster.
    """
    shape = (info.height, info.width)
    if spec is None:
        return np.zeros(shape, dtype=bool)
    if isinstance(spec, (str, Path)):
        import geopandas as gpd

        path = Path(spec)
        if not path.exists():
            fix = missing_file_fix(path, "fix the path in the data config")
            raise InputError(f"{path}: {what} file not found; {fix}")
        gdf = gpd.read_file(path)
        if gdf.crs is None:
            raise InputError(f"{path}: {what} has no CRS; save it with one (e.g. EPSG:3035)")
        geoms = list(gdf.to_crs(info.crs).geometry)
    else:
        from shapely.geometry import box

        if len(spec) != 4:
            raise ConfigError(f"{what}: bounds must be [left, bottom, right, top], got {spec}")
        geoms = [box(*map(float, spec))]
    mask = geometry_mask(geoms, out_shape=shape, transform=info.transform, invert=True)
    if not mask.any():
        raise InputError(
            f"{info.path}: the {what} {spec} does not overlap the raster; check its CRS and extent"
        )
    return mask


def grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Dilate a mask by a square of ``pixels`` on every side (a buffer between splits).

    Args:
        mask: (rows, cols) bool.
        pixels: the buffer width.

    Returns:
        The dilated mask.
    """
    if pixels <= 0 or not mask.any():
        return mask.copy()
    from scipy.ndimage import maximum_filter1d

    # A square structuring element is separable: two 1-D running maxima give exactly
    # binary_dilation's result, 0.09 s instead of 5 s for 2304^2 px and a 30 px buffer.
    size = 2 * pixels + 1
    out = maximum_filter1d(mask.astype(np.uint8), size, axis=0, mode="constant", cval=0)
    return maximum_filter1d(out, size, axis=1, mode="constant", cval=0).astype(bool)
