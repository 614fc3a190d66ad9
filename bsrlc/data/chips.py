"""Chip caches: read a raster region once, then serve patches from a memory-mapped array.

Reading every patch through rasterio (directly or through torchgeo) costs a file seek, a
decompression and a copy per sample, a few hundred samples per second per core. Training draws
the same pixels many times, so each region is read once, block by block, into a ``.npy``
memory map (native dtype, bands first) next to a validity mask; patches are then array slices.
The cache key covers the file's path, size and modification time, the bands and the window, so
a changed input is read again.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rasterio.windows import Window
from tqdm.auto import tqdm

from bsrlc.errors import InputError
from bsrlc.raster import RasterInfo, band_indices, block_windows, open_raster, raster_info

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """Where chip caches live unless configured: ``$BSRLC_CACHE`` or ``~/.cache/bsrlc/chips``.

    Returns:
        The folder.
    """
    return Path(os.environ.get("BSRLC_CACHE", Path.home() / ".cache" / "bsrlc" / "chips"))


class RasterCache:
    """Selected bands of a raster region, read once into a memory map.

    Attributes:
        info: the source raster's layout.
        bands: the band descriptions held, in order.
        window: the region of the source raster held.
        data: (bands, rows, cols) memory map in the file's dtype.
        valid: (rows, cols) bool memory map: every band is finite and not nodata.
        scale: multiply ``data`` by this to get reflectance (1e-4 for int16 STMs).

    Args:
        path: the raster.
        bands: band descriptions to hold.
        window: the region (default: the whole raster).
        cache_dir: where the memory maps are written.
        scale: reflectance scale of the stored values.
        progress: show a progress bar while reading.
    """

    def __init__(
        self,
        path: str | Path,
        bands: Sequence[str],
        window: Window | None = None,
        cache_dir: str | Path | None = None,
        scale: float = 1e-4,
        progress: bool = True,
    ) -> None:
        self.info: RasterInfo = raster_info(path)
        self.bands = list(bands)
        self.indices = band_indices(self.info, self.bands)
        self.window = window or Window(0, 0, self.info.width, self.info.height)
        self.scale = scale
        cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        cache_dir.mkdir(parents=True, exist_ok=True)
        stem = cache_dir / self._key()
        data_path, valid_path = stem.with_suffix(".data.npy"), stem.with_suffix(".valid.npy")
        if not (data_path.exists() and valid_path.exists()):
            self._fill(data_path, valid_path, progress)
        self._paths = (data_path, valid_path)
        self._open()

    def _open(self) -> None:
        self.data = np.load(self._paths[0], mmap_mode="r")
        self.valid = np.load(self._paths[1], mmap_mode="r")

    def __getstate__(self) -> dict[str, object]:
        # Pickling a memmap copies its pixels; send the file names to worker processes instead.
        state = self.__dict__.copy()
        state.pop("data", None)
        state.pop("valid", None)
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._open()

    def _key(self) -> str:
        st = self.info.path.stat()
        w = self.window
        text = (
            f"{self.info.path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{','.join(self.bands)}|"
            f"{w.col_off},{w.row_off},{w.width},{w.height}"
        )
        return f"{self.info.path.stem}-{hashlib.sha1(text.encode()).hexdigest()[:16]}"

    def _fill(self, data_path: Path, valid_path: Path, progress: bool) -> None:
        w = self.window
        h, wd = int(w.height), int(w.width)
        tmp_data = data_path.with_name(data_path.name + f".{os.getpid()}.partial.npy")
        tmp_valid = valid_path.with_name(valid_path.name + f".{os.getpid()}.partial.npy")
        data = np.lib.format.open_memmap(
            tmp_data, mode="w+", dtype=np.dtype(self.info.dtype), shape=(len(self.bands), h, wd)
        )
        valid = np.lib.format.open_memmap(tmp_valid, mode="w+", dtype=bool, shape=(h, wd))
        nodata = self.info.nodata
        n_nonfinite = 0
        with open_raster(self.info.path) as src:
            blocks = block_windows(wd, h, 512)
            for b in tqdm(blocks, desc=f"caching {self.info.path.name}", disable=not progress):
                src_win = Window(w.col_off + b.col_off, w.row_off + b.row_off, b.width, b.height)
                arr = src.read(self.indices, window=src_win)
                ok = np.ones(arr.shape[1:], dtype=bool)
                if arr.dtype.kind == "f":
                    finite = np.isfinite(arr).all(axis=0)
                    n_nonfinite += int((~finite).sum())
                    ok &= finite
                if nodata is not None and not np.isnan(nodata):
                    ok &= (arr != nodata).all(axis=0)
                rs = slice(b.row_off, b.row_off + b.height)
                cs = slice(b.col_off, b.col_off + b.width)
                data[:, rs, cs] = arr
                valid[rs, cs] = ok
        if n_nonfinite:
            log.warning("%s: %d pixels with NaN/inf marked invalid", self.info.path, n_nonfinite)
        data.flush()
        valid.flush()
        del data, valid
        os.replace(tmp_data, data_path)
        os.replace(tmp_valid, valid_path)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the cached region."""
        return (int(self.window.height), int(self.window.width))

    def patch(self, row: int, col: int, size: int) -> np.ndarray:
        """A (bands, size, size) float32 reflectance patch with its top-left corner at (row, col).

        Args:
            row: top row within the cached region.
            col: left column within the cached region.
            size: patch edge in pixels.

        Returns:
            The patch, scaled to reflectance.
        """
        block = self.data[:, row : row + size, col : col + size]
        return block.astype(np.float32) * np.float32(self.scale)


def valid_corners(valid: np.ndarray, size: int, allowed: np.ndarray | None = None) -> np.ndarray:
    """Top-left corners of every ``size x size`` patch that is entirely valid (and allowed).

    A summed-area table of the invalid pixels answers each window in O(1).

    Args:
        valid: (rows, cols) bool.
        size: the patch edge.
        allowed: optional (rows, cols) bool; patches must lie entirely within it too.

    Returns:
        (N, 2) int array of (row, col).
    """
    bad = ~np.asarray(valid, dtype=bool)
    if allowed is not None:
        bad |= ~allowed
    h, w = bad.shape
    if h < size or w < size:
        return np.zeros((0, 2), dtype=np.int64)
    sat = np.zeros((h + 1, w + 1), dtype=np.int64)
    sat[1:, 1:] = bad.cumsum(0).cumsum(1)
    count = sat[size:, size:] - sat[:-size, size:] - sat[size:, :-size] + sat[:-size, :-size]
    rows, cols = np.nonzero(count == 0)
    return np.stack([rows, cols], axis=1)


def check_region_size(info: RasterInfo, shape: tuple[int, int], size: int, what: str) -> None:
    """Raise if a region is smaller than one patch.

    Args:
        info: the raster.
        shape: (rows, cols) of the region.
        size: the patch edge.
        what: the region's name.

    Raises:
        InputError: naming the file, the region and the sizes.
    """
    if shape[0] < size or shape[1] < size:
        raise InputError(
            f"{info.path}: the {what} region ({shape[0]}x{shape[1]} px) is smaller than one "
            f"{size}x{size} patch; enlarge the region or reduce the patch size"
        )
