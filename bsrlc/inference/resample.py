"""Nearest-neighbour upsampling of a raster onto a grid ``scale`` times finer (windowed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.windows import Window

from bsrlc.raster import COGWriter, band_indices, open_raster, raster_info


def nearest_upsample(
    src_path: str | Path,
    dst_path: str | Path,
    bands: Sequence[str],
    scale: int,
    rows_per_block: int = 256,
    overwrite: bool = True,
) -> Path:
    """Write the selected bands on a grid ``scale`` times finer, each pixel repeated.

    The output has the same CRS and top-left corner and a pixel ``scale`` times smaller, so it
    lines up with a native high-resolution raster of the same area (e.g. Landsat 30 m onto the
    Sentinel-2 10 m grid: the baseline the super-resolution is compared with).

    Args:
        src_path: the input raster.
        dst_path: the output COG.
        bands: band descriptions to keep.
        scale: the integer factor.
        rows_per_block: input rows read at a time.
        overwrite: replace an existing output.

    Returns:
        The output path.
    """
    info = raster_info(src_path)
    idx = band_indices(info, bands)
    t = info.transform
    transform = Affine(t.a / scale, t.b, t.c, t.d, t.e / scale, t.f)
    with (
        open_raster(src_path) as src,
        COGWriter(
            dst_path,
            crs=info.crs,
            transform=transform,
            width=info.width * scale,
            height=info.height * scale,
            count=len(idx),
            dtype=info.dtype,
            nodata=info.nodata,
            descriptions=list(bands),
            overwrite=overwrite,
        ) as writer,
    ):
        for r0 in range(0, info.height, rows_per_block):
            h = min(rows_per_block, info.height - r0)
            block = src.read(idx, window=Window(0, r0, info.width, h))
            up = np.repeat(np.repeat(block, scale, axis=1), scale, axis=2)
            writer.write(up, Window(0, r0 * scale, info.width * scale, h * scale))
    return Path(dst_path)
