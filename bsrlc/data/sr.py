"""Paired Landsat (LR, 30 m) / Sentinel-2 (HR, 10 m) STM patches for super-resolution.

torchgeo's ``IntersectionDataset`` resamples its second dataset to the first one's resolution,
which would destroy exactly the 10 m detail the model must learn. So the pair is read on its own
grids: the HR grid must nest in the LR grid (same CRS, HR origin on an LR pixel corner, pixel
size ratio equal to the scale), checked up front; an LR patch of n x n pixels at LR (row, col)
pairs with the HR patch of 3n x 3n pixels at HR (3 row, 3 col) of the common extent.

Splits are regions: the test region (the demo's held-out block) and a validation region never
contribute a pixel to a training patch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from rasterio.windows import Window
from torch.utils.data import DataLoader, Dataset

from bsrlc.data.chips import (
    EpochSampler,
    RasterCache,
    ResumableLoader,
    check_region_size,
    default_cache_dir,
    eval_loader,
    valid_corners,
)
from bsrlc.data.reflectance import SCALE_KEY, Scaling, check_reflectance, raster_scaling
from bsrlc.data.regions import RegionSpec, grow, region_mask
from bsrlc.errors import ConfigError, InputError
from bsrlc.raster import (
    RasterInfo,
    check_aligned,
    expand_band_patterns,
    raster_info,
    raster_members,
    resolve_raster,
)

log = logging.getLogger(__name__)


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Apply one of the 8 flips/90-degree rotations to the last two axes.

    Args:
        x: (..., H, W).
        k: 0..7 (k % 4 quarter turns, then a horizontal flip if k >= 4).

    Returns:
        The transformed tensor.
    """
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if k >= 4 else x


class PairedPatches(Dataset):
    """LR/HR patch pairs at given LR corners, from two chip caches.

    Args:
        lr: the LR cache.
        hr: the HR cache.
        corners: (N, 2) LR (row, col) corners.
        patch: LR patch edge.
        scale: resolution ratio.
        mean: per-band mean (reflectance) for normalisation.
        std: per-band std.
        augment: random dihedral transforms (the same for LR and HR).
        length: samples per epoch drawn at random (with replacement); None = every corner once.
        seed: base seed of the random draws.
        offsets: reflectance offsets of the LR and HR caches (added after their ``scale``).
    """

    def __init__(
        self,
        lr: RasterCache,
        hr: RasterCache,
        corners: np.ndarray,
        patch: int,
        scale: int,
        mean: np.ndarray,
        std: np.ndarray,
        augment: bool = False,
        length: int | None = None,
        seed: int = 0,
        offsets: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        self.lr, self.hr, self.corners = lr, hr, corners
        self.patch, self.scale = patch, scale
        self.mean = torch.as_tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.as_tensor(std, dtype=torch.float32)[:, None, None]
        # (x + offset - mean) / std: the offsets go into the means
        self.lr_mean = self.mean - float(offsets[0])
        self.hr_mean = self.mean - float(offsets[1])
        self.augment, self.length, self.seed = augment, length, seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.length if self.length is not None else len(self.corners)

    def _pick(self, idx: int, epoch: int) -> tuple[int, int, int]:
        if self.length is None:
            r, c = self.corners[idx]
            return int(r), int(c), 0
        # Deterministic per (seed, epoch, index): reproducible and identical after a resume.
        g = np.random.default_rng([self.seed, epoch, idx])
        r, c = self.corners[g.integers(len(self.corners))]
        return int(r), int(c), int(g.integers(8)) if self.augment else 0

    def __getitem__(self, key: tuple[int, int, int] | int) -> dict[str, torch.Tensor]:
        # an EpochSampler key (index, epoch, position) carries the epoch with it, so that
        # DataLoader workers and a resumed run draw what an uninterrupted run draws
        idx, epoch = (key[0], key[1]) if isinstance(key, tuple) else (int(key), self.epoch)
        r, c, k = self._pick(idx, epoch)
        n, s = self.patch, self.scale
        lr = torch.from_numpy(self.lr.patch(r, c, n))
        hr = torch.from_numpy(self.hr.patch(s * r, s * c, s * n))
        lr = (lr - self.lr_mean) / self.std
        hr = (hr - self.hr_mean) / self.std
        if k:
            lr, hr = dihedral(lr, k), dihedral(hr, k)
        return {"lr": lr, "hr": hr}


class PairedSRDataModule(L.LightningDataModule):
    """Patches of a Landsat STM (LR) and a Sentinel-2 STM (HR) of the same period.

    Both rasters are read once into chip caches; training patches are drawn at random from the
    training region, validation and test patches tile their regions without overlap. Patches
    touching nodata in either raster are skipped and counted. Normalisation statistics (per
    band mean and std of the LR training region, applied to LR and HR alike so that both are in
    the same units) are computed once and exposed as :attr:`norm_stats` for the model to save.

    Either raster may be a raster group, files on one grid whose bands are found by
    description across them (``lr_path=a.tif+b.tif``, or a list in YAML), stacked into a VRT
    under ``cache_dir/vrt`` (:func:`bsrlc.raster.resolve_raster`).

    Each raster's stored values become reflectance by its own scaling
    (:mod:`bsrlc.data.reflectance`: ``input_scale`` if given, else its GDAL scale/offset tags,
    else 1 for float and 1e-4 for integer data), checked against a plausible reflectance range
    before anything is cached. The number of bands (:attr:`in_bands`) and the scalings
    (:attr:`input_scaling`) are known from the files' headers before :meth:`setup`, so the model
    can be sized from the data.

    Args:
        lr_path: the LR STM raster (a file, a VRT or a group).
        hr_path: the HR STM raster (a file, a VRT or a group), on a grid nested in the LR one.
        bands: band descriptions or patterns (``"*_P50"``), the same names in both rasters.
        scale: HR/LR resolution ratio.
        patch_size: LR patch edge (HR patches are ``scale`` times larger).
        batch_size: per-process batch size.
        samples_per_epoch: random training patches per epoch.
        test_region: region never used for training (file or bounds); None = no test split.
        val_region: validation region; None takes a strip of ``val_fraction`` of the rows.
        val_fraction: the size of the automatic validation strip.
        buffer: LR pixels between regions that no patch may use.
        augment: flips and rotations of training patches.
        num_workers: DataLoader workers.
        cache_dir: where the chip caches are written.
        seed: seed of the training draws.
        input_scale: reflectance per stored value: None decides per raster (tags, data type),
            a number applies to both rasters, a pair ``[lr, hr]`` to each.
    """

    def __init__(
        self,
        lr_path: str | Sequence[str],
        hr_path: str | Sequence[str],
        bands: Sequence[str] = ("*_P50",),
        scale: int = 3,
        patch_size: int = 32,
        batch_size: int = 16,
        samples_per_epoch: int = 2048,
        test_region: RegionSpec = None,
        val_region: RegionSpec = None,
        val_fraction: float = 0.15,
        buffer: int = 2,
        augment: bool = True,
        num_workers: int = 0,
        cache_dir: str | None = None,
        seed: int = 0,
        input_scale: float | Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        vrt_dir = (Path(cache_dir) if cache_dir else default_cache_dir()) / "vrt"
        self.raster_files = [raster_members(lr_path), raster_members(hr_path)]
        self.lr_path = resolve_raster(lr_path, vrt_dir)
        self.hr_path = resolve_raster(hr_path, vrt_dir)
        self.band_patterns = list(bands)
        self.scale, self.patch_size, self.batch_size = scale, patch_size, batch_size
        self.samples_per_epoch = samples_per_epoch
        self.test_region, self.val_region, self.val_fraction = test_region, val_region, val_fraction
        self.buffer, self.augment, self.num_workers = buffer, augment, num_workers
        self.cache_dir, self.seed = cache_dir, seed
        self.scale_override = _scale_pair(input_scale)
        self.norm_stats: dict[str, list[float]] | None = None
        self.bands: list[str] = []
        self._inputs: tuple[RasterInfo, RasterInfo, dict[str, Scaling]] | None = None
        self.skipped: dict[str, int] = {}
        self._datasets: dict[str, PairedPatches] = {}

    def data_files(self) -> list[Path]:
        """The files this datamodule reads (for the run's dataset fingerprint).

        Returns:
            The LR and HR rasters (every file of a raster group).
        """
        return [f for members in self.raster_files for f in members]

    def prepare_data(self) -> None:
        """Check the pair and fill the chip caches (once, on one process)."""
        self._caches()

    def _inspect(self) -> tuple[RasterInfo, RasterInfo, dict[str, Scaling]]:
        """Check the pair from its headers (and a decimated view); find bands and scalings.

        Done once; no pixel is cached here, so a problem is reported before anything is read.
        """
        if self._inputs is None:
            lr_info, hr_info = raster_info(self.lr_path), raster_info(self.hr_path)
            check_aligned(lr_info, hr_info, self.scale)
            bands = expand_band_patterns(lr_info, self.band_patterns)
            expand_band_patterns(hr_info, bands)  # the HR raster must have the same bands
            scalings = {}
            for role, info, override in zip(
                ("lr", "hr"), (lr_info, hr_info), self.scale_override, strict=True
            ):
                scalings[role] = raster_scaling(info, bands, override)
                check_reflectance(info, bands, scalings[role], role.upper())
                log.info("%s: reflectance = value %s", info.name, scalings[role].describe())
            self.bands = bands
            self._inputs = (lr_info, hr_info, scalings)
        return self._inputs

    @property
    def in_bands(self) -> int:
        """The number of bands the model sees (read from the rasters' headers)."""
        self._inspect()
        return len(self.bands)

    def describe_bands(self) -> str:
        """Where :attr:`in_bands` comes from, for messages.

        Returns:
            E.g. ``"lr.tif has 18 bands selected by data.bands (BLU_P25 ... SW2_P75)"``.
        """
        lr_info = self._inspect()[0]
        few = len(self.bands) <= 4
        shown = ", ".join(self.bands) if few else f"{self.bands[0]} ... {self.bands[-1]}"
        return f"{lr_info.name} has {len(self.bands)} bands selected by data.bands ({shown})"

    @property
    def input_scaling(self) -> dict[str, Scaling]:
        """The LR and HR rasters' scalings to reflectance (``{"lr": ..., "hr": ...}``)."""
        return dict(self._inspect()[2])

    def _caches(self) -> tuple[RasterCache, RasterCache]:
        lr_info, hr_info, scalings = self._inspect()
        s = self.scale
        # Where the HR origin lies on the LR grid (whole LR pixels; check_aligned made sure).
        c_shift = round((hr_info.transform.c - lr_info.transform.c) / lr_info.res[0])
        r_shift = round((lr_info.transform.f - hr_info.transform.f) / lr_info.res[1])
        lr_r0, lr_c0 = max(r_shift, 0), max(c_shift, 0)
        hr_r0, hr_c0 = max(-r_shift, 0) * s, max(-c_shift, 0) * s
        rows = min(lr_info.height - lr_r0, (hr_info.height - hr_r0) // s)
        cols = min(lr_info.width - lr_c0, (hr_info.width - hr_c0) // s)
        if rows <= 0 or cols <= 0:
            raise InputError(
                f"{lr_info.name} and {hr_info.name}: the rasters do not overlap; "
                "pair rasters of the same area"
            )
        # Both caches start at the same corner of the common extent.
        lr = RasterCache(
            self.lr_path,
            self.bands,
            Window(lr_c0, lr_r0, cols, rows),
            cache_dir=self.cache_dir,
            scale=scalings["lr"].scale,
        )
        hr = RasterCache(
            self.hr_path,
            self.bands,
            Window(hr_c0, hr_r0, cols * s, rows * s),
            cache_dir=self.cache_dir,
            scale=scalings["hr"].scale,
        )
        return lr, hr

    def setup(self, stage: str | None = None) -> None:
        """Build the split masks, the patch corners and the normalisation statistics.

        Args:
            stage: Lightning's stage (all splits are built regardless).

        Raises:
            InputError: if a split has no usable patch.
        """
        if self._datasets:
            return
        lr, hr = self._caches()
        n, s = self.patch_size, self.scale
        rows, cols = lr.shape
        check_region_size(lr.info, (rows, cols), n, "LR")
        # An LR pixel is usable if it and all of its s x s HR pixels are valid.
        hr_ok = np.asarray(hr.valid).reshape(rows, s, cols, s).all(axis=(1, 3))
        valid = np.asarray(lr.valid) & hr_ok
        window_info = _window_info(lr)
        test = region_mask(self.test_region, window_info, "test_region")
        if self.val_region is not None:
            val = region_mask(self.val_region, window_info, "val_region")
        else:
            val = np.zeros_like(test)
            free_rows = np.nonzero(~test.any(axis=1))[0]
            k = max(n, round(self.val_fraction * rows))
            if len(free_rows) < k:
                raise InputError(
                    f"{self.lr_path}: not enough rows outside the test region for a validation"
                    " strip; give val_region explicitly"
                )
            val[free_rows[:k]] = True  # the first rows that hold no test pixel
        train = ~grow(test | val, self.buffer)
        val &= ~grow(test, self.buffer)
        scalings = self.input_scaling
        self.norm_stats = _band_stats(lr, valid & train, scalings["lr"].offset)
        mean = np.asarray(self.norm_stats["mean"], np.float32)
        std = np.asarray(self.norm_stats["std"], np.float32)

        def grid(region: np.ndarray, name: str) -> np.ndarray:
            # Non-overlapping patches tiling the region from its top-left corner.
            if not region.any():
                self.skipped[name] = 0
                return np.zeros((0, 2), dtype=np.int64)
            r0 = int(np.argmax(region.any(axis=1)))
            c0 = int(np.argmax(region.any(axis=0)))

            def on_grid(c: np.ndarray) -> np.ndarray:
                return c[((c[:, 0] - r0) % n == 0) & ((c[:, 1] - c0) % n == 0)]

            all_c = on_grid(valid_corners(np.ones_like(valid), n, region))
            ok = on_grid(valid_corners(valid, n, region))
            self.skipped[name] = len(all_c) - len(ok)
            return ok

        train_c = valid_corners(valid, n, train)
        self.skipped["train"] = len(valid_corners(np.ones_like(valid), n, train)) - len(train_c)
        splits = {"train": train_c, "val": grid(val, "val"), "test": grid(test, "test")}
        for name, corners in splits.items():
            if self.skipped.get(name):
                log.info("%s: %d patches skipped (nodata)", name, self.skipped[name])
            if len(corners) == 0 and (name != "test" or self.test_region is not None):
                raise InputError(
                    f"{self.lr_path}: the {name} region holds no {n}x{n} patch free of nodata;"
                    " enlarge the region or reduce patch_size"
                )
        common: dict[str, Any] = {
            "lr": lr,
            "hr": hr,
            "patch": n,
            "scale": s,
            "mean": mean,
            "std": std,
            "offsets": (scalings["lr"].offset, scalings["hr"].offset),
        }
        self._datasets = {
            "train": PairedPatches(
                corners=train_c,
                augment=self.augment,
                length=self.samples_per_epoch,
                seed=self.seed,
                **common,
            ),
            "val": PairedPatches(corners=splits["val"], **common),
            "test": PairedPatches(corners=splits["test"], **common),
        }
        log.info(
            "SR patches: %d train corners, %d val and %d test patches of %dx%d LR px",
            len(train_c),
            len(splits["val"]),
            len(splits["test"]),
            n,
            n,
        )

    def split_sizes(self) -> dict[str, int]:
        """Number of distinct patches (train: corners) per split, after setup.

        Returns:
            split -> count.
        """
        return {k: len(v.corners) for k, v in self._datasets.items()}

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        """The split's loader; training draws follow from (seed, epoch, position) only.

        The training loader's :class:`~bsrlc.data.chips.EpochSampler` hands each sample its
        epoch (Lightning sets the sampler's epoch before every epoch), so each epoch draws new
        patches and a run resumed mid-epoch continues with the batch it would have drawn.
        """
        if not self._datasets:
            raise ConfigError("PairedSRDataModule.setup() must run before the dataloaders")
        ds = self._datasets[name]
        if name != "train":
            return eval_loader(ds, self.batch_size, self.num_workers, self.seed)
        return ResumableLoader(
            ds,
            EpochSampler(len(ds), self.seed, shuffle=shuffle),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            drop_last=True,
            seed=self.seed,
        )

    def train_dataloader(self) -> DataLoader:
        """Random training patches (a new draw every epoch)."""
        return self._loader("train", shuffle=False)

    def val_dataloader(self) -> DataLoader:
        """The validation region's patches."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """The test region's patches."""
        return self._loader("test", shuffle=False)


def _window_info(cache: RasterCache) -> Any:
    """The cache's region as a RasterInfo-like object (grid of the cached window)."""
    from dataclasses import replace

    from rasterio.windows import transform as window_transform

    return replace(
        cache.info,
        transform=window_transform(cache.window, cache.info.transform),
        width=int(cache.window.width),
        height=int(cache.window.height),
    )


def _scale_pair(value: Any) -> tuple[float | None, float | None]:
    """``input_scale`` as (LR, HR): None, one number for both, or a pair."""
    if value is None:
        return None, None
    given = [value] * 2 if isinstance(value, int | float | str) else list(value)
    try:
        values = [None if v is None else float(v) for v in given]
    except (TypeError, ValueError):
        values = []
    if len(values) != 2:
        raise ConfigError(
            f"{SCALE_KEY}={value}: give one number (both rasters), [LR, HR] or null (from the "
            "rasters)"
        )
    return values[0], values[1]


def _band_stats(cache: RasterCache, mask: np.ndarray, offset: float = 0.0) -> dict[str, Any]:
    """Per-band mean and std (reflectance) over the masked pixels, computed in row blocks."""
    c = len(cache.bands)
    total = np.zeros(c)
    total2 = np.zeros(c)
    count = 0
    for r in range(0, cache.shape[0], 256):
        m = mask[r : r + 256]
        if not m.any():
            continue
        block = np.asarray(cache.data[:, r : r + 256], dtype=np.float64)[:, m] * cache.scale
        total += block.sum(axis=1)
        total2 += (block**2).sum(axis=1)
        count += int(m.sum())
    if count == 0:
        raise InputError(f"{cache.info.path}: no valid pixel in the training region")
    mean = total / count
    std = np.sqrt(np.maximum(total2 / count - mean**2, 1e-12))
    mean += offset
    return {"mean": mean.tolist(), "std": np.maximum(std, 1e-4).tolist(), "bands": cache.bands}
