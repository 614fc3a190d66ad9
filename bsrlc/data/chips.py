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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from bsrlc.errors import ConfigError, InputError
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


def distributed_rank() -> tuple[int, int]:
    """This process's rank and the number of processes (``(0, 1)`` outside DDP).

    Returns:
        ``(rank, world_size)`` of the default process group, if one is initialised.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class EpochSampler(Sampler):
    """Training draws fixed by ``(seed, epoch)`` alone, so that a resumed run draws the same.

    Each epoch's order (a permutation, or weighted draws with replacement) comes from a
    generator seeded with ``(seed, epoch)``, not from the global RNG, so it does not depend on
    what ran before (a validation pass, a restart). Every key it yields is
    ``(index, epoch, position)``: datasets derive per-sample randomness (augmentations, random
    patch corners) from it, so a sample is the same whichever process or DataLoader worker reads
    it. ``start`` skips the first positions of an epoch (a run resumed mid-epoch).

    Under DDP (a process group is initialised when the loader is iterated) every rank draws the
    same epoch order and takes every ``world_size``-th position from its rank on, so batch ``k``
    of all ranks together holds the positions of batch ``k`` of one process with a batch
    ``world_size`` times larger: the same samples, the same keys. An epoch's last
    ``n % world_size`` positions are dropped so all ranks take the same number of steps
    (Lightning's own distributed sampler is off: ``use_distributed_sampler: false`` in
    ``conf/trainer``).

    Args:
        n: the dataset's length.
        seed: the base seed.
        shuffle: a random permutation per epoch (else ``0..n-1`` in order).
        weights: per-index weights: draw ``n`` indices with replacement (balanced batches).
    """

    def __init__(
        self, n: int, seed: int, shuffle: bool = True, weights: Sequence[float] | None = None
    ) -> None:
        self.n, self.seed, self.shuffle = n, int(seed), shuffle
        self.weights = None if weights is None else np.asarray(weights, np.float64)
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose draws come next (Lightning calls this before each epoch).

        Args:
            epoch: the epoch.
        """
        self.epoch = int(epoch)

    def order(self, epoch: int) -> np.ndarray:
        """The indices of one epoch, in the order they are drawn.

        Args:
            epoch: the epoch.

        Returns:
            (n,) int array.
        """
        rng = np.random.default_rng([self.seed, epoch, 0x5A3])
        if self.weights is not None:
            p = self.weights / self.weights.sum()
            return rng.choice(self.n, size=self.n, replace=True, p=p)
        return rng.permutation(self.n) if self.shuffle else np.arange(self.n)

    def __len__(self) -> int:
        return self.n // distributed_rank()[1]

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        """Keys ``(index, epoch, position)`` of this rank, from position ``start`` on."""
        epoch, start = self.epoch, self.start
        self.start = 0  # a skip applies to one pass only
        order = self.order(epoch)
        rank, world = distributed_rank()
        for pos in range(start + rank, self.n - self.n % world, world):
            yield int(order[pos]), epoch, pos


def sample_rng(seed: int, key: tuple[int, int, int] | int) -> np.random.Generator:
    """The generator of one sample's randomness, from the sampler's key.

    Args:
        seed: the base seed.
        key: an :class:`EpochSampler` key ``(index, epoch, position)``, or a plain index.

    Returns:
        A generator that depends on the seed and the key only.
    """
    parts = list(key) if isinstance(key, tuple) else [int(key)]
    return np.random.default_rng([int(seed), 0xA11, *parts])


class ResumableLoader(DataLoader):
    """A training DataLoader that Lightning can checkpoint and resume mid-epoch.

    Lightning saves ``state_dict()`` of the training loader with each checkpoint and hands it
    back to ``load_state_dict()`` before iterating again after a restart. The state is the
    epoch and the number of batches handed out in it; the next pass then skips those (the
    sampler's ``start``), so a run resumed after batch k of an epoch continues with batch k + 1
    of the same order. The sampler must be an :class:`EpochSampler`. Lightning's fetcher asks for
    a batch only when it trains on it (the length is known, so it does not prefetch), so the
    count is the number of batches trained on.

    Args:
        dataset: the dataset.
        sampler: the epoch sampler.
        batch_size: samples per batch.
        drop_last: drop a last, short batch.
        num_workers: DataLoader worker processes.
        seed: seeds the loader's own generator (worker base seeds), so iterating it never
            draws from the global RNG that the model's dropout uses.
        kwargs: other DataLoader arguments.
    """

    def __init__(
        self,
        dataset: Dataset,
        sampler: EpochSampler,
        batch_size: int = 1,
        drop_last: bool = False,
        num_workers: int = 0,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("generator", torch.Generator().manual_seed(int(seed)))
        super().__init__(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=num_workers,
            **kwargs,
        )
        self._yielded = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        """Batches of the sampler's current epoch, after any batches skipped on resume."""
        sampler: EpochSampler = self.sampler  # type: ignore[assignment]
        per_batch = int(self.batch_size or 1) * distributed_rank()[1]  # positions per batch
        self._yielded = sampler.start // per_batch
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """Where this epoch's pass stands.

        Returns:
            ``{"epoch", "batches"}``.
        """
        sampler: EpochSampler = self.sampler  # type: ignore[assignment]
        return {"epoch": sampler.epoch, "batches": self._yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue an interrupted pass: the next iteration skips the batches already trained.

        Args:
            state: from :meth:`state_dict`.
        """
        sampler: EpochSampler = self.sampler  # type: ignore[assignment]
        sampler.set_epoch(int(state.get("epoch", 0)))
        per_batch = int(self.batch_size or 1) * distributed_rank()[1]  # positions per batch
        sampler.start = int(state.get("batches", 0)) * per_batch


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int, seed: int) -> DataLoader:
    """A validation / test DataLoader in dataset order with its own generator.

    The generator only seeds worker processes; giving the loader its own keeps iterating it
    from drawing on the global RNG, so validating does not change the training that follows.

    Args:
        dataset: the dataset.
        batch_size: samples per batch.
        num_workers: DataLoader worker processes.
        seed: the generator's seed.

    Returns:
        The loader.
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=RankSlice(len(dataset)),  # type: ignore[arg-type]
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(int(seed)),
    )


class RankSlice(Sampler):
    """Evaluation indices in order; under DDP, every ``world_size``-th from this rank on.

    Nothing is repeated or dropped (unlike ``DistributedSampler``, which pads ranks to equal
    lengths and so counts some samples twice): the metrics, synchronised at epoch end, are those
    of one process over the whole split. Ranks may take one step more or less.

    Args:
        n: the dataset's length.
    """

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        rank, world = distributed_rank()
        if 0 < self.n < world:
            raise ConfigError(
                f"an evaluation split has {self.n} sample(s) for {world} DDP processes, which "
                "each need one; use fewer devices or a larger validation/test split"
            )
        return len(range(rank, self.n, world))

    def __iter__(self) -> Iterator[int]:
        rank, world = distributed_rank()
        return iter(range(rank, self.n, world))
