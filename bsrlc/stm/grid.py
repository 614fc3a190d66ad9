"""The target grid: one CRS, nested 30 m / 10 m pixels, FORCE-style tiles.

Every input (Landsat, Sentinel-2, FORCE cubes, STAC items) is warped onto this grid while it is
read (:mod:`bsrlc.stm.sources`), so scenes from any path/row or UTM zone line up pixel for pixel.

- ``crs`` (default EPSG:3035, ETRS89-LAEA Europe) and ``resolution`` (default 30 m) define the
  coarse grid; the fine grid has ``resolution / fine_factor`` (10 m) pixels and the *same
  origin*, so every coarse pixel holds exactly ``fine_factor x fine_factor`` fine pixels.
- ``tile_size`` (default 30 km) cuts both grids into the same square tiles, numbered like FORCE
  datacubes: ``X{ix:04d}_Y{iy:04d}``, X growing east and Y growing *south* from ``origin``,
  the upper-left corner of tile ``X0000_Y0000``. The default origin (0 E, 7,200,000 N) lies
  north-west of the whole EPSG:3035 area of use (Svalbard to the Canaries, the Azores to
  Cyprus), so tile numbers there are non-negative, and it is a multiple of 30 km, so tile and
  pixel edges fall on round coordinates. :meth:`TargetGrid.from_force_cube` takes the CRS,
  origin and tile size of an existing FORCE datacube, so tile ids match its folders.
- The area to process comes from ``bounds``, a region file (GeoPackage/GeoJSON) or the union of
  the inputs' footprints (:func:`resolve_area`); :meth:`TargetGrid.tiles` lists the tiles that
  cover it.

The tiles are :class:`odc.geo.gridspec.GridSpec` tiles and each tile's pixels an
:class:`odc.geo.geobox.GeoBox`; a window of a tile is ``tile.geobox[rows, cols]``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from affine import Affine
from odc.geo import CRS, xy_
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry, box, unary_union
from odc.geo.gridspec import GridSpec
from rasterio.windows import Window

from bsrlc.errors import ConfigError, InputError

DEFAULT_CRS = "EPSG:3035"
DEFAULT_ORIGIN = (0.0, 7_200_000.0)
"""Upper-left corner of tile X0000_Y0000 in EPSG:3035 (north-west of the CRS's area of use)."""

TILE_ID_RE = re.compile(r"^X(-?\d+)_Y(-?\d+)$")
_EPS = 1e-6  # metres: tolerance for "a multiple of the resolution"


@dataclass(frozen=True)
class Tile:
    """One tile of the grid.

    Attributes:
        id: ``X{ix:04d}_Y{iy:04d}`` (FORCE style).
        ix: tile column (grows east).
        iy: tile row (grows south).
        geobox: the tile's coarse (30 m) pixels.
        fine: the tile's fine (10 m) pixels: same extent, ``fine_factor`` times the pixels.
    """

    id: str
    ix: int
    iy: int
    geobox: GeoBox
    fine: GeoBox


def tile_id(ix: int, iy: int) -> str:
    """The FORCE-style id of a tile.

    Args:
        ix: tile column.
        iy: tile row.

    Returns:
        e.g. ``X0012_Y0034`` (negative numbers keep their sign: ``X-001_Y0003``).
    """
    return f"X{ix:04d}_Y{iy:04d}"


def parse_tile_id(tid: str) -> tuple[int, int]:
    """The tile column and row of a tile id.

    Args:
        tid: e.g. ``X0012_Y0034``.

    Returns:
        (ix, iy).

    Raises:
        ConfigError: if ``tid`` is not of that form.
    """
    m = TILE_ID_RE.match(tid.strip())
    if m is None:
        raise ConfigError(f"tile={tid}: not a tile id; write it as X0012_Y0034")
    return int(m.group(1)), int(m.group(2))


@dataclass(frozen=True)
class TargetGrid:
    """The output grid (see the module docstring).

    Attributes:
        crs: the grid's CRS (anything pyproj reads: ``EPSG:3035``, WKT, PROJ).
        resolution: coarse pixel size in CRS units (30 m).
        tile_size: tile edge in CRS units; a multiple of ``resolution``.
        origin: (x, y) of the upper-left corner of tile ``X0000_Y0000``.
        fine_factor: coarse pixel / fine pixel size (3: 30 m -> 10 m).

    Raises:
        ConfigError: for a CRS pyproj does not know, a geographic CRS, a non-positive
            resolution or a tile size that is not a whole number of coarse pixels.
    """

    crs: str = DEFAULT_CRS
    resolution: float = 30.0
    tile_size: float = 30_000.0
    origin: tuple[float, float] = DEFAULT_ORIGIN
    fine_factor: int = 3

    def __post_init__(self) -> None:
        try:
            crs = CRS(self.crs)
        except Exception as err:
            raise ConfigError(
                f"grid.crs={self.crs}: not a CRS ({str(err).splitlines()[0]}); "
                "use an EPSG code such as EPSG:3035"
            ) from None
        if crs.geographic:
            raise ConfigError(
                f"grid.crs={self.crs}: geographic (degrees); use a projected CRS in metres "
                "such as EPSG:3035"
            )
        if not self.resolution > 0:
            raise ConfigError(f"grid.resolution={self.resolution}: must be > 0 (e.g. 30)")
        if int(self.fine_factor) != self.fine_factor or self.fine_factor < 1:
            raise ConfigError(f"grid.fine_factor={self.fine_factor}: must be a whole number >= 1")
        n = self.tile_size / self.resolution
        if not self.tile_size > 0 or abs(n - round(n)) * self.resolution > _EPS:
            raise ConfigError(
                f"grid.tile_size={self.tile_size}: must be a positive multiple of "
                f"grid.resolution={self.resolution} (e.g. 30000)"
            )
        if len(self.origin) != 2:
            raise ConfigError(f"grid.origin={list(self.origin)}: give [x, y]")
        object.__setattr__(self, "origin", (float(self.origin[0]), float(self.origin[1])))

    @classmethod
    def from_force_cube(cls, path: str | Path, resolution: float = 30.0) -> TargetGrid:
        """The grid of a FORCE datacube (its ``datacube-definition.prj``).

        FORCE writes the projection (WKT), the origin as longitude/latitude and as projected
        x/y, the tile size and the block size, either tagged (``ORIGIN_X = ...``, FORCE >= 3)
        or as 7 plain lines (older versions).

        Args:
            path: the ``datacube-definition.prj`` file, or the cube folder holding it.
            resolution: coarse pixel size (FORCE cubes may hold several).

        Returns:
            The grid, whose tile ids are the cube's ``X####_Y####`` folders.

        Raises:
            InputError: if the file is missing or does not parse.
        """
        path = Path(path)
        if path.is_dir():
            path = path / "datacube-definition.prj"
        if not path.is_file():
            raise InputError(
                f"{path}: FORCE datacube definition not found; point at the cube folder that "
                "holds datacube-definition.prj"
            )
        lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
        tags = dict(ln.split("=", 1) for ln in lines if "=" in ln and ln.split("=", 1)[0].isupper())
        tags = {k.strip(): v.strip() for k, v in tags.items()}
        try:
            if "ORIGIN_X" in tags:
                wkt, x, y, size = (
                    tags["PROJECTION"],
                    tags["ORIGIN_X"],
                    tags["ORIGIN_Y"],
                    tags["TILE_SIZE"],
                )
            else:  # projection, lon, lat, x, y, tile size, block size
                wkt, x, y, size = lines[0], lines[3], lines[4], lines[5]
            return cls(
                crs=wkt,
                resolution=resolution,
                tile_size=float(size),
                origin=(float(x), float(y)),
            )
        except (KeyError, IndexError, ValueError) as err:
            raise InputError(
                f"{path}: not a FORCE datacube definition ({type(err).__name__}: {err}); "
                "it needs PROJECTION, ORIGIN_X, ORIGIN_Y and TILE_SIZE"
            ) from None

    @property
    def odc_crs(self) -> CRS:
        """The CRS as an odc-geo :class:`~odc.geo.CRS`."""
        return CRS(self.crs)

    @property
    def fine_resolution(self) -> float:
        """Fine pixel size (``resolution / fine_factor``, 10 m)."""
        return self.resolution / self.fine_factor

    @property
    def tile_pixels(self) -> int:
        """Coarse pixels along a tile edge (1000 for 30 km at 30 m)."""
        return round(self.tile_size / self.resolution)

    def gridspec(self, fine: bool = False) -> GridSpec:
        """The tiling as an odc-geo GridSpec (tile index (ix, iy), iy growing south).

        Args:
            fine: the fine (10 m) grid instead of the coarse one.

        Returns:
            The GridSpec.
        """
        n = self.tile_pixels * (self.fine_factor if fine else 1)
        res = self.fine_resolution if fine else self.resolution
        # with flipy, GridSpec's y "origin" is the lower edge of tile row 0
        ox, oy = self.origin
        return GridSpec(
            self.odc_crs,
            tile_shape=(n, n),
            resolution=res,
            origin=xy_(ox, oy - self.tile_size),
            flipy=True,
        )

    def tile(self, tile: str | tuple[int, int]) -> Tile:
        """A tile by id or (ix, iy).

        Args:
            tile: ``X0012_Y0034`` or ``(12, 34)``.

        Returns:
            The tile with its coarse and fine GeoBoxes.
        """
        ix, iy = parse_tile_id(tile) if isinstance(tile, str) else (int(tile[0]), int(tile[1]))
        return Tile(
            tile_id(ix, iy),
            ix,
            iy,
            self.gridspec().tile_geobox((ix, iy)),
            self.gridspec(fine=True).tile_geobox((ix, iy)),
        )

    def tile_index(self, x: float, y: float, crs: Any = None) -> tuple[int, int]:
        """The (ix, iy) of the tile holding a point.

        A point on a tile edge belongs to the tile east / south of it (as a pixel edge belongs
        to the pixel right / below it).

        Args:
            x: easting (or longitude).
            y: northing (or latitude).
            crs: the point's CRS; None = the grid's.

        Returns:
            (ix, iy).
        """
        if crs is not None:
            pt = Geometry({"type": "Point", "coordinates": (x, y)}, crs=crs).to_crs(self.odc_crs)
            x, y = pt.coords[0]
        ox, oy = self.origin
        return math.floor((x - ox) / self.tile_size), math.floor((oy - y) / self.tile_size)

    def tile_of_point(self, x: float, y: float, crs: Any = None) -> Tile:
        """The tile holding a point.

        Args:
            x: easting (or longitude).
            y: northing (or latitude).
            crs: the point's CRS; None = the grid's.

        Returns:
            The tile.
        """
        return self.tile(self.tile_index(x, y, crs))

    def tiles(self, area: Geometry) -> list[Tile]:
        """The tiles that intersect an area, row by row (north to south, west to east).

        Args:
            area: a geometry with a CRS (reprojected to the grid's CRS).

        Returns:
            The tiles; tiles that only touch the area along an edge are left out.
        """
        area = area.to_crs(self.odc_crs, resolution="auto")
        out = []
        for (ix, iy), _ in self.gridspec().tiles_from_geopolygon(area):
            t = self.tile((ix, iy))
            if area.intersection(t.geobox.extent).area > 0:
                out.append(t)
        return sorted(out, key=lambda t: (t.iy, t.ix))

    def geobox(self, area: Geometry, fine: bool = False) -> GeoBox:
        """The grid's pixels covering an area (one GeoBox, not cut into tiles).

        Args:
            area: a geometry with a CRS.
            fine: fine (10 m) pixels instead of coarse ones.

        Returns:
            The smallest GeoBox of coarse grid pixels that covers the area (for ``fine``: the
            same extent in fine pixels, so the two nest exactly).
        """
        area = area.to_crs(self.odc_crs, resolution="auto")
        res = self.resolution
        ox, oy = self.origin
        x0, y0, x1, y1 = area.boundingbox
        c0, c1 = math.floor((x0 - ox) / res + 1e-9), math.ceil((x1 - ox) / res - 1e-9)
        r0, r1 = math.floor((oy - y1) / res + 1e-9), math.ceil((oy - y0) / res - 1e-9)
        f = self.fine_factor if fine else 1
        return GeoBox(
            ((r1 - r0) * f, (c1 - c0) * f),
            Affine(res / f, 0.0, ox + c0 * res, 0.0, -res / f, oy - r0 * res),
            self.odc_crs,
        )


def windows(geobox: GeoBox, size: int) -> Iterator[tuple[Window, GeoBox]]:
    """Square windows of a GeoBox (a tile), row by row, clipped at its edges.

    Slicing a GeoBox past its edge does not clip (``gbox[0:512, 900:1412]`` of a 1000 px tile
    is 512 px wide), so windows must be cut with this.

    Args:
        geobox: the GeoBox to cut (a tile's ``geobox`` or ``fine``).
        size: window edge in pixels.

    Yields:
        (rasterio Window into ``geobox``, the window's own GeoBox).

    Raises:
        ConfigError: for a size < 1.
    """
    if size < 1:
        raise ConfigError(f"window size={size}: must be >= 1 (e.g. 512)")
    ny, nx = geobox.shape.yx
    for r0 in range(0, ny, size):
        for c0 in range(0, nx, size):
            h, w = min(size, ny - r0), min(size, nx - c0)
            yield Window(c0, r0, w, h), geobox[r0 : r0 + h, c0 : c0 + w]


def area_from_bounds(bounds: Sequence[float], crs: Any = DEFAULT_CRS) -> Geometry:
    """An area from ``grid.bounds``.

    Args:
        bounds: [left, bottom, right, top].
        crs: the CRS of the bounds (the grid's, unless given).

    Returns:
        The box.

    Raises:
        ConfigError: for anything but 4 numbers with left < right and bottom < top.
    """
    try:
        x0, y0, x1, y1 = (float(v) for v in bounds)
    except (TypeError, ValueError):
        raise ConfigError(
            f"grid.bounds={bounds}: give [left, bottom, right, top] in the grid's CRS"
        ) from None
    if not (x0 < x1 and y0 < y1):
        raise ConfigError(
            f"grid.bounds={list(bounds)}: need left < right and bottom < top "
            "([left, bottom, right, top])"
        )
    return box(x0, y0, x1, y1, crs)


def area_from_region(path: str | Path, crs: Any = DEFAULT_CRS) -> Geometry:
    """An area from ``grid.region``: the union of a vector file's geometries.

    Args:
        path: a GeoPackage, GeoJSON or any file geopandas reads.
        crs: the CRS to return the area in.

    Returns:
        The union of the file's geometries, in ``crs``.

    Raises:
        InputError: if the file is missing, unreadable, empty or has no CRS.
    """
    import geopandas as gpd

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: region file not found; set grid.region to a .gpkg or .geojson")
    try:
        df = gpd.read_file(path)
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(
            f"{path}: not a readable vector file ({first}); save the region as GeoPackage "
            "or GeoJSON"
        ) from None
    df = df[df.geometry.notna() & ~df.geometry.is_empty]
    if df.empty:
        raise InputError(f"{path}: region file has no geometries; draw the area to process")
    if df.crs is None:
        raise InputError(
            f"{path}: region file has no CRS; assign one (e.g. ogr2ogr -a_srs EPSG:4326)"
        )
    geom = Geometry(df.geometry.union_all(), crs=str(df.crs.to_wkt()))
    return geom.to_crs(crs, resolution="auto")


def raster_footprint(path: str | Path, crs: Any = DEFAULT_CRS) -> Geometry:
    """The outline of a raster, in another CRS (edges densified before reprojection).

    Args:
        path: a raster file.
        crs: the CRS to return the outline in.

    Returns:
        The footprint polygon.

    Raises:
        InputError: if the raster is unreadable or has no CRS.
    """
    from bsrlc.raster import open_raster

    with open_raster(path) as src:
        if src.crs is None:
            raise InputError(
                f"{path}: raster has no CRS; assign one (e.g. gdal_edit.py -a_srs EPSG:32633)"
            )
        gbox = GeoBox.from_rio(src)
    return gbox.footprint(crs, npoints=50)


def area_from_rasters(paths: Iterable[str | Path], crs: Any = DEFAULT_CRS) -> Geometry:
    """The union of rasters' footprints (the default area: where the inputs are).

    Args:
        paths: raster files in any CRS.
        crs: the CRS to return the area in.

    Returns:
        The union, in ``crs``.

    Raises:
        InputError: if there is no raster, or one is unreadable or has no CRS.
    """
    shapes = [raster_footprint(p, crs) for p in paths]
    area = unary_union(shapes)
    if area is None:
        raise InputError(
            "no input rasters to take the area from; give scenes, grid.bounds or grid.region"
        )
    return area


def resolve_area(
    grid: TargetGrid,
    bounds: Sequence[float] | None = None,
    region: str | Path | None = None,
    inputs: Iterable[str | Path] = (),
) -> Geometry:
    """The area to process, in the grid's CRS: ``bounds``, else ``region``, else the inputs.

    Args:
        grid: the target grid.
        bounds: ``grid.bounds`` ([left, bottom, right, top] in the grid's CRS) or None.
        region: ``grid.region`` (a vector file) or None.
        inputs: raster files whose footprints' union is the area when neither is given.

    Returns:
        The area.

    Raises:
        ConfigError: if both ``bounds`` and ``region`` are given.
        InputError: for a bad region file or raster (see the functions above).
    """
    if bounds is not None and region is not None:
        raise ConfigError(
            "grid.bounds and grid.region are both set; keep one (bounds: a box in the grid's "
            "CRS, region: a vector file)"
        )
    if bounds is not None:
        return area_from_bounds(bounds, grid.odc_crs)
    if region is not None:
        return area_from_region(region, grid.odc_crs)
    return area_from_rasters(inputs, grid.odc_crs)


__all__ = [
    "DEFAULT_CRS",
    "DEFAULT_ORIGIN",
    "TargetGrid",
    "Tile",
    "area_from_bounds",
    "area_from_rasters",
    "area_from_region",
    "parse_tile_id",
    "raster_footprint",
    "resolve_area",
    "tile_id",
    "windows",
]
