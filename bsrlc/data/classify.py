"""Point-centred patches for the centre-patch classifier.

Each reference point becomes the patch centred on the pixel that contains it. Points whose
patch leaves the raster or touches nodata are dropped and counted. Splits are spatial: test
points come from the samples' split column (the demo's held-out block) or a test region;
validation points are whole blocks of the remaining area, and training points within a patch's
reach of any validation or test point are dropped, so no training patch overlaps an evaluation
patch.

:class:`PointSampler` is the torchgeo form of the same sampling (torchgeo 0.8 has no
point-centred sampler); training reads from the chip cache instead, which serves identical
patches much faster.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from torchgeo.datasets import GeoDataset
from torchgeo.samplers import GeoSampler

from bsrlc.data.chips import RasterCache
from bsrlc.data.legend import Legend
from bsrlc.data.points import locate, points_to_pixels, read_points
from bsrlc.data.regions import RegionSpec, grow, region_mask
from bsrlc.data.sr import dihedral
from bsrlc.errors import ConfigError, InputError
from bsrlc.raster import expand_band_patterns, raster_info

log = logging.getLogger(__name__)


class PointSampler(GeoSampler):
    """Yield the patch centred on each point's pixel, as torchgeo queries.

    Args:
        dataset: the raster dataset.
        xs: point x coordinates in the dataset's CRS.
        ys: point y coordinates.
        patch_size: patch edge in pixels (odd).
    """

    def __init__(
        self, dataset: GeoDataset, xs: Sequence[float], ys: Sequence[float], patch_size: int
    ) -> None:
        super().__init__(dataset)
        self.xs, self.ys, self.patch_size = np.asarray(xs), np.asarray(ys), patch_size
        x, y, _ = dataset.bounds
        self.x0, self.y1 = x.start, y.stop  # the grid's top-left corner
        res: Any = dataset.res
        self.rx: float = float(res) if np.isscalar(res) else float(res[0])
        self.ry: float = float(res) if np.isscalar(res) else float(res[1])

    def __len__(self) -> int:
        return len(self.xs)

    def __iter__(self) -> Iterator[tuple[slice, slice, slice]]:
        """Patch queries, one per point.

        Yields:
            ``[xmin:xmax:res, ymin:ymax:res, tmin:tmax]`` of the patch around each point.
        """
        h = self.patch_size // 2
        for x, y in zip(self.xs, self.ys, strict=True):
            col = np.floor((x - self.x0) / self.rx)
            row = np.floor((self.y1 - y) / self.ry)
            xmin = self.x0 + (col - h) * self.rx
            ymax = self.y1 - (row - h) * self.ry
            yield (
                slice(xmin, xmin + self.patch_size * self.rx, self.rx),
                slice(ymax - self.patch_size * self.ry, ymax, self.ry),
                slice(self.toi.left, self.toi.right),
            )


class PointPatches(Dataset):
    """Patches around pixels, from a chip cache, normalised, optionally augmented.

    Args:
        cache: the raster's chip cache.
        rows: centre rows.
        cols: centre columns.
        labels: training indices.
        patch: patch edge.
        mean: per-band mean for normalisation.
        std: per-band std.
        augment: random flips and quarter turns (the centre stays the centre).
    """

    def __init__(
        self,
        cache: RasterCache,
        rows: np.ndarray,
        cols: np.ndarray,
        labels: np.ndarray,
        patch: int,
        mean: np.ndarray,
        std: np.ndarray,
        augment: bool = False,
    ) -> None:
        self.cache, self.rows, self.cols, self.labels = cache, rows, cols, labels
        self.patch, self.augment = patch, augment
        self.mean = torch.as_tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.as_tensor(std, dtype=torch.float32)[:, None, None]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        h = self.patch // 2
        x = torch.from_numpy(
            self.cache.patch(int(self.rows[idx]) - h, int(self.cols[idx]) - h, self.patch)
        )
        x = (x - self.mean) / self.std
        if self.augment:
            x = dihedral(x, int(torch.randint(8, ())))
        return {"image": x, "label": torch.tensor(int(self.labels[idx]))}


class PointPatchDataModule(L.LightningDataModule):
    """Patches centred on reference points of one raster, split spatially.

    Args:
        raster: the feature raster (STMs at 10 m: Sentinel-2, super-resolved or upsampled
            Landsat).
        points: reference points (GeoPackage, GeoJSON, Shapefile or CSV).
        bands: band descriptions or patterns to use as features.
        legend: a preset name or a legend config.
        class_column: the points' class column.
        split_column: a column marking test points (``test_value``); None = no such column.
        test_value: the value of ``split_column`` that marks test points.
        test_region: alternatively, a region whose points are the test split.
        points_crs: CRS of CSV coordinates.
        patch_size: patch edge (odd).
        batch_size: per-process batch size.
        val_fraction: share of the non-test points in validation blocks.
        block_size: edge of the spatial blocks (pixels) validation is drawn by.
        buffer: training points within this many pixels of an evaluation point are dropped
            (default: the patch size, so patches never overlap).
        balance: ``none``, ``weights`` (class-weighted loss) or ``sampler`` (balanced batches).
        augment: flips and rotations of training patches.
        num_workers: DataLoader workers.
        cache_dir: chip cache folder.
        seed: seed of the validation block draw.
    """

    def __init__(
        self,
        raster: str,
        points: str,
        bands: Sequence[str] = ("*",),
        legend: str | dict[str, Any] = "urban",
        class_column: str = "class",
        split_column: str | None = "split",
        test_value: str = "test",
        test_region: RegionSpec = None,
        points_crs: str | None = None,
        patch_size: int = 15,
        batch_size: int = 256,
        val_fraction: float = 0.2,
        block_size: int = 64,
        buffer: int | None = None,
        balance: str = "weights",
        augment: bool = True,
        num_workers: int = 0,
        cache_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if balance not in {"none", "weights", "sampler"}:
            raise ConfigError(f"data.balance={balance}: use none, weights or sampler")
        if patch_size % 2 == 0:
            raise ConfigError(f"data.patch_size={patch_size}: must be odd (a centre pixel)")
        self.raster, self.points = Path(raster), Path(points)
        self.band_patterns = list(bands)
        self.legend = Legend.from_config(legend if isinstance(legend, str) else dict(legend))
        self.class_column, self.split_column, self.test_value = (
            class_column,
            split_column,
            test_value,
        )
        self.test_region, self.points_crs = test_region, points_crs
        self.patch_size, self.batch_size = patch_size, batch_size
        self.val_fraction, self.block_size = val_fraction, block_size
        self.buffer = patch_size if buffer is None else buffer
        self.balance, self.augment, self.num_workers = balance, augment, num_workers
        self.cache_dir, self.seed = cache_dir, seed
        self.bands: list[str] = []
        self.norm_stats: dict[str, Any] | None = None
        self.class_weights: list[float] | None = None
        self.counts: dict[str, Any] = {}
        self._datasets: dict[str, PointPatches] = {}

    @property
    def num_classes(self) -> int:
        """Classes of the legend."""
        return len(self.legend)

    def data_files(self) -> list[Path]:
        """The files this datamodule reads.

        Returns:
            The raster and the points.
        """
        return [self.raster, self.points]

    def prepare_data(self) -> None:
        """Fill the chip cache once."""
        info = raster_info(self.raster)
        RasterCache(
            self.raster, expand_band_patterns(info, self.band_patterns), cache_dir=self.cache_dir
        )

    def setup(self, stage: str | None = None) -> None:
        """Locate points, drop unusable ones, split spatially, compute statistics.

        Args:
            stage: Lightning's stage (all splits are built regardless).

        Raises:
            InputError: when a split is empty or a class loses all its training points.
        """
        if self._datasets:
            return
        info = raster_info(self.raster)
        self.bands = expand_band_patterns(info, self.band_patterns)
        cache = RasterCache(self.raster, self.bands, cache_dir=self.cache_dir)
        pts = read_points(self.points, self.class_column, crs=self.points_crs, legend=self.legend)
        samples = locate(pts, info, self.legend, self.points)
        h = self.patch_size // 2
        n_total = len(pts)
        rows, cols, codes = samples.rows, samples.cols, samples.codes

        # Patches must lie inside the raster and hold no nodata.
        inside = (rows >= h) & (rows < info.height - h) & (cols >= h) & (cols < info.width - h)
        ok = _patch_valid(np.asarray(cache.valid), self.patch_size)
        usable = inside.copy()
        usable[inside] = ok[rows[inside] - h, cols[inside] - h]
        dropped = int((~usable).sum())
        if dropped:
            log.warning(
                "%s: %d points dropped (patch leaves the raster or touches nodata)",
                self.points,
                dropped,
            )
        # Test split.
        if self.test_region is not None:
            test = region_mask(self.test_region, info, "test_region")[
                rows.clip(0, info.height - 1), cols.clip(0, info.width - 1)
            ]
        elif self.split_column and self.split_column in samples.frame.columns:
            test = (samples.frame[self.split_column] == self.test_value).to_numpy().copy()
        else:
            test = np.zeros(len(rows), bool)
        # Validation: whole spatial blocks of the remaining points.
        rest = usable & ~test
        blocks = (rows // self.block_size) * 100_000 + cols // self.block_size
        rng = np.random.default_rng(self.seed)
        val = np.zeros(len(rows), bool)
        ids = rng.permutation(np.unique(blocks[rest]))
        target = self.val_fraction * rest.sum()
        for b in ids:
            if val.sum() >= target:
                break
            val |= rest & (blocks == b)
        train = rest & ~val
        # No training patch may reach an evaluation point.
        eval_mask = np.zeros((info.height, info.width), bool)
        eval_mask[rows[(val | test) & inside], cols[(val | test) & inside]] = True
        near = grow(eval_mask, self.buffer)
        too_close = train & near[rows.clip(0, info.height - 1), cols.clip(0, info.width - 1)]
        train &= ~too_close
        test &= usable
        labels = self.legend.index_of(codes)
        self.counts = {
            "points": n_total,
            "dropped_nodata_or_edge": dropped,
            "dropped_near_evaluation": int(too_close.sum()),
            "train": int(train.sum()),
            "val": int(val.sum()),
            "test": int(test.sum()),
        }
        log.info("point splits: %s", self.counts)
        for name, sel in (("train", train), ("val", val)):
            if not sel.any():
                raise InputError(
                    f"{self.points}: the {name} split is empty after dropping unusable points; "
                    "add points, lower val_fraction or block_size"
                )
        present = np.bincount(labels[train], minlength=self.num_classes)
        missing = [self.legend.names[i] for i in range(self.num_classes) if present[i] == 0]
        if missing:
            raise InputError(
                f"{self.points}: no usable training point of class(es) {missing} in "
                f"{self.raster}; add points of these classes or drop them from the legend"
            )
        # Normalisation from pixels away from the evaluation points.
        exclude = grow(eval_mask, self.buffer + self.patch_size)
        self.norm_stats = _band_stats(cache, ~exclude)
        freq = present / present.sum()
        self.class_weights = (1.0 / (freq * self.num_classes)).tolist()
        mean = np.asarray(self.norm_stats["mean"], np.float32)
        std = np.asarray(self.norm_stats["std"], np.float32)
        self._datasets = {
            name: PointPatches(
                cache,
                rows[sel],
                cols[sel],
                labels[sel],
                self.patch_size,
                mean,
                std,
                augment=self.augment and name == "train",
            )
            for name, sel in (("train", train), ("val", val), ("test", test))
        }

    def _loader(self, name: str) -> DataLoader:
        if not self._datasets:
            raise ConfigError("PointPatchDataModule.setup() must run before the dataloaders")
        ds = self._datasets[name]
        sampler = None
        if name == "train" and self.balance == "sampler":
            weights = np.asarray(self.class_weights)[ds.labels]
            sampler = WeightedRandomSampler(torch.as_tensor(weights), len(ds), replacement=True)
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=name == "train" and sampler is None,
            sampler=sampler,
            num_workers=self.num_workers,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        """Training patches."""
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        """Validation patches."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """Test patches."""
        return self._loader("test")


def _patch_valid(valid: np.ndarray, size: int) -> np.ndarray:
    """ok[r, c]: the size x size window with top-left (r, c) is entirely valid."""
    from bsrlc.data.chips import valid_corners

    ok = np.zeros((max(valid.shape[0] - size + 1, 0), max(valid.shape[1] - size + 1, 0)), bool)
    corners = valid_corners(valid, size)
    ok[corners[:, 0], corners[:, 1]] = True
    return ok


def _band_stats(cache: RasterCache, mask: np.ndarray) -> dict[str, Any]:
    from bsrlc.data.sr import _band_stats as stats

    return stats(cache, mask & np.asarray(cache.valid))


__all__ = ["PointPatchDataModule", "PointPatches", "PointSampler", "points_to_pixels"]
