"""torchgeo datasets for STM rasters, with bands selected by their descriptions.

These are the reference read path (rasterio through torchgeo's index, any CRS and resolution).
Training reads patches from :mod:`bsrlc.data.chips` instead, which is much faster once a region
has been read; ``benchmarks/chips.py`` compares the two.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torchgeo.datasets import RasterDataset

from bsrlc.raster import expand_band_patterns, raster_info


class STMRaster(RasterDataset):
    """Spectral-temporal metric rasters written by ``python -m bsrlc.stm`` (or any GeoTIFF).

    Bands are chosen by band description, with shell patterns: ``["*_P50"]`` selects every
    median band, ``["BLU_P50", "NIR_P90"]`` exactly those two in that order.

    Args:
        paths: an STM file, or a folder of them (all must have the same band layout).
        bands: band names or patterns; None keeps every band.
        crs: CRS to warp to (default: the first file's).
        res: resolution to resample to (default: the first file's).
        transforms: a sample transform.
        cache: keep file handles open between samples.
    """

    filename_glob = "*.tif"
    is_image = True

    def __init__(
        self,
        paths: str | Path | Sequence[str | Path],
        bands: Sequence[str] | None = None,
        crs: Any = None,
        res: float | tuple[float, float] | None = None,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        cache: bool = True,
    ) -> None:
        files = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
        first = files[0]
        if first.is_dir():
            found = sorted(first.glob(self.filename_glob))
            first = found[0] if found else first
        info = raster_info(first)
        self.all_bands = info.descriptions  # the band layout is the file's, not the class's
        selected = expand_band_patterns(info, bands) if bands else list(info.descriptions)
        super().__init__(
            paths=[str(p) for p in files],
            crs=crs,
            res=res,
            bands=selected,
            transforms=transforms,
            cache=cache,
        )
