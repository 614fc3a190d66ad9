"""Point-centred patches for the centre-patch classifier.

Each reference point becomes the patch centred on the pixel that contains it. Points whose
patch leaves the raster or touches nodata are dropped and counted. Splits are spatial: test
points come from the samples' split column (the demo's held-out block) or a test region;
validation points are whole blocks of the remaining area, and training points within a patch's
reach of any validation or test point are dropped, so no training patch overlaps an evaluation
patch.

Each raster's stored values become reflectance by its own scaling (:mod:`bsrlc.data.reflectance`:
``input_scale`` if given, else its GDAL scale/offset tags, else 1 for float and 1e-4 for integer
data), checked against a plausible range before anything is cached (reflectance or indices,
:data:`~bsrlc.data.reflectance.FEATURE_RANGE`); the first raster's scaling goes into the
checkpoint (``input_scale``, ``input_offset``). Bands with different tags (bsrlc's STMs:
reflectance x 1e-4, CLEAR_COUNT x 1) each take their own
(:func:`~bsrlc.data.reflectance.band_scalings`); prediction scales them the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from bsrlc.data.chips import (
    EpochSampler,
    RasterCache,
    ResumableLoader,
    default_cache_dir,
    eval_loader,
    sample_rng,
)
from bsrlc.data.legend import Legend
from bsrlc.data.points import (
    LEGEND_COUNTS,
    locate,
    points_to_pixels,
    read_points,
    warn_rare_classes,
)
from bsrlc.data.reflectance import (
    FEATURE_RANGE,
    SCALE_KEY,
    Scaling,
    band_scalings,
    check_band_reflectance,
)
from bsrlc.data.regions import RegionSpec, grow, region_mask
from bsrlc.data.sr import dihedral
from bsrlc.errors import ConfigError, InputError
from bsrlc.raster import (
    RasterInfo,
    expand_band_patterns,
    raster_info,
    raster_members,
    resolve_raster,
)

log = logging.getLogger(__name__)


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
        fill_nodata: set nodata pixels of a patch to the band mean (0 after normalisation).
        offset: reflectance of a stored 0 of the cache (added after its ``scale``), one for
            every band or one per band.
        scale: per-band factors applied after the cache's ``scale`` (bands with different
            scalings), or None.
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
        fill_nodata: bool = False,
        offset: float | Sequence[float] | np.ndarray = 0.0,
        scale: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        self.cache, self.rows, self.cols, self.labels = cache, rows, cols, labels
        self.patch, self.augment, self.fill_nodata = patch, augment, fill_nodata
        # (x * scale + offset - mean) / std = (x - (mean - offset) / scale) / (std / scale)
        off = torch.as_tensor(np.asarray(offset, np.float32)).reshape(-1, 1, 1)
        self.mean = torch.as_tensor(mean, dtype=torch.float32)[:, None, None] - off
        self.std = torch.as_tensor(std, dtype=torch.float32)[:, None, None]
        if scale is not None:
            factor = torch.as_tensor(np.asarray(scale, np.float32))[:, None, None]
            self.mean, self.std = self.mean / factor, self.std / factor

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        h = self.patch // 2
        x = torch.from_numpy(
            self.cache.patch(int(self.rows[idx]) - h, int(self.cols[idx]) - h, self.patch)
        )
        x = (x - self.mean) / self.std
        if self.fill_nodata:
            r, c = int(self.rows[idx]) - h, int(self.cols[idx]) - h
            valid = np.asarray(self.cache.valid[r : r + self.patch, c : c + self.patch])
            x[:, torch.from_numpy(~valid)] = 0.0
        if self.augment:
            x = dihedral(x, int(torch.randint(8, ())))
        return {"image": x, "label": torch.tensor(int(self.labels[idx]))}


class Augmented(Dataset):
    """Training patches with flips and quarter turns drawn from the sampler's key.

    The transform of each sample follows from ``(seed, epoch, position)``
    (:func:`~bsrlc.data.chips.sample_rng`), never from the global or a worker's RNG, so a run
    resumed from a checkpoint, or read with any number of DataLoader workers, sees the same
    patches as an uninterrupted one.

    Args:
        base: the patches (without their own augmentation).
        seed: the base seed.
        augment: draw a transform per sample (else the patches as they are).
    """

    def __init__(self, base: Dataset, seed: int, augment: bool) -> None:
        self.base, self.seed, self.augment = base, int(seed), augment

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    @property
    def datasets(self) -> list[Dataset]:
        """The per-raster parts of the base (a ``ConcatDataset``)."""
        return list(getattr(self.base, "datasets", [self.base]))

    def __getitem__(self, key: tuple[int, int, int] | int) -> dict[str, torch.Tensor]:
        idx = key[0] if isinstance(key, tuple) else int(key)
        item = self.base[idx]
        if self.augment:
            k = int(sample_rng(self.seed, key).integers(8))
            item["image"] = dihedral(item["image"], k)
        return item


@dataclass
class _Source:
    """One feature raster with its reference points, located on its grid."""

    raster: Path
    points: Path
    info: RasterInfo
    cache: RasterCache
    rows: np.ndarray
    cols: np.ndarray
    labels: np.ndarray
    usable: np.ndarray
    test: np.ndarray
    offset: np.ndarray | float = 0.0
    scale: np.ndarray | None = None  # per-band factors after the cache's scale (mixed bands)
    xs: np.ndarray = field(init=False)
    ys: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        t = self.info.transform
        self.xs = t.c + (self.cols + 0.5) * t.a
        self.ys = t.f + (self.rows + 0.5) * t.e


def _scale(value: Any) -> float | None:
    """``data.input_scale`` as a number, or None (from each raster)."""
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        return float(value)  # raster_scaling refuses one that is not positive
    except (TypeError, ValueError):
        raise ConfigError(
            f"{SCALE_KEY}={value}: give one number (for every raster) or null (from the rasters)"
        ) from None


def _as_paths(value: str | Path | Sequence[str | Path], key: str) -> list[Path]:
    items = [value] if isinstance(value, (str, Path)) else list(value)
    if not items:
        raise ConfigError(f"data.{key} is empty; give a file or a list of files")
    return [Path(str(v)) for v in items]


def _as_rasters(value: Any) -> list[Any]:
    """The periods of ``data.raster``: each a file, ``a.tif+b.tif`` or a nested list (a group)."""
    items = [value] if isinstance(value, (str, Path)) else list(value)
    if not items:
        raise ConfigError("data.raster is empty; give a file or a list of files")
    return items


class PointPatchDataModule(L.LightningDataModule):
    """Patches centred on reference points of one or several rasters, split spatially.

    Several rasters (``raster=[...]`` with one points file each, or one points file for all)
    train one classifier on several periods at once: e.g. super-resolved Landsat of every
    period with that period's reference points, so that land-cover states that exist only in
    some periods (construction sites, a sensor's look) are learnt. Validation blocks and the
    no-overlap buffer are drawn in map coordinates over all rasters together, so a location is
    never in training for one period and in validation for another.

    A raster may be a raster group: files on one grid whose bands are found by description
    across them, written ``a.tif+b.tif`` (in a period list too: ``[a1.tif+b1.tif,
    a2.tif+b2.tif]``) or as a nested list in YAML; it is stacked into a VRT under
    ``cache_dir/vrt`` (:func:`bsrlc.raster.resolve_raster`).

    Args:
        raster: the feature raster(s) (STMs at 10 m: Sentinel-2, super-resolved or upsampled
            Landsat): one raster (a file, a VRT or a group), or a list of them (periods).
        points: reference points (GeoPackage, GeoJSON, Shapefile or CSV): one file, or one per
            raster.
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
        nodata_points: ``skip`` drops points whose patch touches nodata (counted per band);
            ``fill`` keeps them when the centre pixel is valid and sets the nodata pixels to
            the band mean, as prediction does.
        min_points_per_class: warn, naming the class, when a class has fewer training points
            (None: no warning).
        input_scale: reflectance per stored value of every raster; None decides per raster
            (its GDAL scale/offset tags, else 1 for float and 1e-4 for integer data). Values
            that are no reflectance after scaling stop the run before anything is cached.
    """

    def __init__(
        self,
        raster: str | Sequence[str | Sequence[str]],
        points: str | Sequence[str],
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
        nodata_points: str = "skip",
        min_points_per_class: int | None = 30,
        input_scale: float | None = None,
    ) -> None:
        super().__init__()
        if balance not in {"none", "weights", "sampler"}:
            raise ConfigError(f"data.balance={balance}: use none, weights or sampler")
        if patch_size % 2 == 0:
            raise ConfigError(f"data.patch_size={patch_size}: must be odd (a centre pixel)")
        if nodata_points not in {"skip", "fill"}:
            raise ConfigError(f"data.nodata_points={nodata_points}: use skip or fill")
        self.scale_override = _scale(input_scale)
        self._scalings: dict[Path, list[Scaling]] = {}
        specs = _as_rasters(raster)
        vrt_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.raster_files = [raster_members(spec) for spec in specs]
        self.rasters = [resolve_raster(spec, vrt_dir / "vrt") for spec in specs]
        self.points_files = _as_paths(points, "points")
        if len(self.points_files) not in {1, len(self.rasters)}:
            raise ConfigError(
                f"data.points has {len(self.points_files)} files for {len(self.rasters)} rasters; "
                "give one points file per raster, or one for all"
            )
        self.raster, self.points = self.rasters[0], self.points_files[0]
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
        self.nodata_points = nodata_points
        self.min_points_per_class = min_points_per_class
        self.bands: list[str] = []
        self.norm_stats: dict[str, Any] | None = None
        self.class_weights: list[float] | None = None
        self.train_priors: list[float] | None = None
        self.counts: dict[str, Any] = {}
        self._datasets: dict[str, Dataset] = {}
        self._train_labels = np.zeros(0, np.int64)
        self.split_table: dict[str, list[tuple[Path, np.ndarray, np.ndarray, np.ndarray]]] = {}

    @property
    def num_classes(self) -> int:
        """Classes of the legend."""
        return len(self.legend)

    def _pairs(self) -> list[tuple[Path, Path]]:
        pts = self.points_files * (len(self.rasters) if len(self.points_files) == 1 else 1)
        return list(zip(self.rasters, pts, strict=True))

    def data_files(self) -> list[Path]:
        """The files this datamodule reads.

        Returns:
            The rasters (every file of a raster group) and the points files.
        """
        files = [f for members in self.raster_files for f in members]
        return [*files, *dict.fromkeys(self.points_files)]

    def scaling_of(self, raster: Path) -> list[Scaling]:
        """A raster's scaling to reflectance per band, checked (once) before anything is cached.

        Args:
            raster: one of :attr:`rasters`.

        Returns:
            One scaling per selected band (all the same unless the bands' tags differ).

        Raises:
            InputError: in one line naming the file and ``data.input_scale`` when the values
                are no reflectance after scaling.
        """
        if raster not in self._scalings:
            info = raster_info(raster)
            bands = expand_band_patterns(info, self.band_patterns)
            scalings = band_scalings(info, bands, self.scale_override)
            check_band_reflectance(info, bands, scalings, plausible=FEATURE_RANGE)
            shown = sorted({s.describe() for s in scalings})
            log.info("%s: reflectance = value %s", info.name, "; ".join(shown))
            self._scalings[raster] = scalings
        return self._scalings[raster]

    @property
    def input_scaling(self) -> list[list[Scaling]]:
        """Each raster's per-band scalings to reflectance, in the order of :attr:`rasters`."""
        return [self.scaling_of(r) for r in self.rasters]

    def _cache(self, raster: Path, bands: list[str]) -> tuple[RasterCache, np.ndarray | None]:
        """The raster's chip cache and the per-band factors left to apply (None: none)."""
        scalings = self.scaling_of(raster)
        uniform = len(set(scalings)) == 1
        cache = RasterCache(
            raster,
            bands,
            cache_dir=self.cache_dir,
            scale=scalings[0].scale if uniform else 1.0,
        )
        return cache, None if uniform else np.array([s.scale for s in scalings])

    def prepare_data(self) -> None:
        """Check every raster's scaling, then fill the chip caches once."""
        for raster in self.rasters:  # every raster checked before any is cached
            self.scaling_of(raster)
        for raster in self.rasters:
            self._cache(raster, expand_band_patterns(raster_info(raster), self.band_patterns))

    def _locate(self, raster: Path, points: Path) -> _Source:
        """Read one raster's points, drop (and count per band) unusable ones, mark test."""
        info = raster_info(raster)
        bands = expand_band_patterns(info, self.band_patterns)
        if self.bands and bands != self.bands:
            first = raster_info(self.rasters[0]).name
            raise InputError(
                f"{info.name}: bands {bands} differ from {self.bands} of {first}; every "
                "raster of data.raster needs the same bands"
            )
        self.bands = bands
        cache, factors = self._cache(raster, bands)
        offsets = np.array([s.offset for s in self.scaling_of(raster)])
        pts = read_points(points, self.class_column, crs=self.points_crs, legend=self.legend)
        for key, n in pts.attrs.get(LEGEND_COUNTS, {}).items():  # legend.drop / legend.merge
            self.counts[key] = self.counts.get(key, 0) + n
        samples = locate(pts, info, self.legend, points)
        h = self.patch_size // 2
        rows, cols = samples.rows, samples.cols
        _check_duplicates(rows, cols, samples.codes, points, raster, self.counts)
        inside = (rows >= h) & (rows < info.height - h) & (cols >= h) & (cols < info.width - h)
        valid = np.asarray(cache.valid)
        if self.nodata_points == "fill":
            ok = valid[h : -h or None, h : -h or None] if h else valid
        else:
            ok = _patch_valid(valid, self.patch_size)
        usable = inside.copy()
        usable[inside] = ok[rows[inside] - h, cols[inside] - h]
        n_edge = int((~inside).sum())
        if n_edge:
            log.warning("%s: %d points dropped: their patch leaves %s", points, n_edge, info.name)
        nodata = inside & ~usable
        if nodata.any():
            per_band = _nodata_bands(cache, rows[nodata], cols[nodata], self.patch_size)
            listed = ", ".join(f"{b} {n}" for b, n in per_band.items() if n)
            fix = "" if self.nodata_points == "fill" else "; data.nodata_points=fill keeps them"
            log.warning(
                "%s: %d points dropped: their patch touches nodata in %s (points per band: %s)%s",
                points,
                int(nodata.sum()),
                info.name,
                listed,
                fix,
            )
            self.counts.setdefault("dropped_nodata_per_band", {})
            for b, n in per_band.items():
                self.counts["dropped_nodata_per_band"][b] = (
                    self.counts["dropped_nodata_per_band"].get(b, 0) + n
                )
        if self.test_region is not None:
            test = region_mask(self.test_region, info, "test_region")[
                rows.clip(0, info.height - 1), cols.clip(0, info.width - 1)
            ]
        elif self.split_column and self.split_column in samples.frame.columns:
            test = (samples.frame[self.split_column] == self.test_value).to_numpy().copy()
        else:
            test = np.zeros(len(rows), bool)
        n_read = len(pts) + pts.attrs.get(LEGEND_COUNTS, {}).get("dropped_by_legend", 0)
        self.counts["points"] = self.counts.get("points", 0) + n_read
        self.counts["dropped_edge"] = self.counts.get("dropped_edge", 0) + n_edge
        self.counts["dropped_nodata"] = self.counts.get("dropped_nodata", 0) + int(nodata.sum())
        return _Source(
            raster,
            points,
            info,
            cache,
            rows,
            cols,
            self.legend.index_of(samples.codes),
            usable,
            test,
            offsets,
            factors,
        )

    def setup(self, stage: str | None = None) -> None:
        """Locate points, drop unusable ones, split spatially, compute statistics.

        Args:
            stage: Lightning's stage (all splits are built regardless); ``"split"`` only
                splits the points (``split_table``: per split, (raster, rows, cols, class
                indices) of each raster), without statistics or datasets.

        Raises:
            InputError: when a split is empty or a class loses all its training points.
        """
        if self._datasets:
            return
        self.counts = {}
        sources = [self._locate(r, p) for r, p in self._pairs()]
        # Validation: whole spatial blocks on the first raster's grid (shared by all rasters).
        t0 = sources[0].info.transform
        bw, bh = self.block_size * abs(t0.a), self.block_size * abs(t0.e)
        blocks = [
            np.floor((t0.f - s.ys) / bh).astype(np.int64) * 1_000_003
            + np.floor((s.xs - t0.c) / bw).astype(np.int64)
            for s in sources
        ]
        rest = [s.usable & ~s.test for s in sources]
        all_blocks = np.concatenate([b[r] for b, r in zip(blocks, rest, strict=True)])
        rng = np.random.default_rng(self.seed)
        chosen: set[int] = set()
        n_val, target = 0, self.val_fraction * sum(int(r.sum()) for r in rest)
        for b in rng.permutation(np.unique(all_blocks)):
            if n_val >= target:
                break
            chosen.add(int(b))
            n_val += int((all_blocks == b).sum())
        picked = np.fromiter(chosen, np.int64, len(chosen))
        val = [r & np.isin(b, picked) for b, r in zip(blocks, rest, strict=True)]
        # No training patch may reach an evaluation point of any raster.
        ex = np.concatenate([s.xs[v | s.test] for s, v in zip(sources, val, strict=True)])
        ey = np.concatenate([s.ys[v | s.test] for s, v in zip(sources, val, strict=True)])
        splits: dict[str, list[tuple[_Source, np.ndarray]]] = {"train": [], "val": [], "test": []}
        eval_masks, dropped_near = [], 0
        for s, v, r in zip(sources, val, rest, strict=True):
            eval_mask = np.zeros((s.info.height, s.info.width), bool)
            er, ec = points_to_pixels(ex, ey, s.info.transform)
            on = (er >= 0) & (er < s.info.height) & (ec >= 0) & (ec < s.info.width)
            eval_mask[er[on], ec[on]] = True
            near = grow(eval_mask, self.buffer)
            train = r & ~v
            rr, cc = s.rows.clip(0, s.info.height - 1), s.cols.clip(0, s.info.width - 1)
            too_close = train & near[rr, cc]
            dropped_near += int(too_close.sum())
            splits["train"].append((s, train & ~too_close))
            splits["val"].append((s, v))
            splits["test"].append((s, s.test & s.usable))
            eval_masks.append(eval_mask)
        labels = {k: np.concatenate([s.labels[m] for s, m in v]) for k, v in splits.items()}
        self.counts.update(
            {
                "rasters": len(sources),
                "dropped_near_evaluation": dropped_near,
                **{k: int(v.size) for k, v in labels.items()},
            }
        )
        log.info("point splits: %s", self.counts)
        for name in ("train", "val"):
            if not labels[name].size:
                raise InputError(
                    f"{self.points}: the {name} split is empty after dropping unusable points; "
                    "add points, lower val_fraction or block_size"
                )
        if not labels["test"].size:
            log.warning(
                "%s: no usable test point (split column %r = %r, or test_region): test metrics "
                "will be empty",
                self.points,
                self.split_column,
                self.test_value,
            )
        present = np.bincount(labels["train"], minlength=self.num_classes)
        missing = [self.legend.names[i] for i in range(self.num_classes) if present[i] == 0]
        if missing:
            raise InputError(
                f"{self.points}: no usable training point of class(es) {missing} in "
                f"{self.raster}; add points of these classes or drop them with "
                "data.legend={preset:NAME,drop:[CODES]}"
            )
        warn_rare_classes(present, self.legend, self.min_points_per_class, self.points)
        self.split_table = {
            name: [(s.raster, s.rows[m], s.cols[m], s.labels[m]) for s, m in parts]
            for name, parts in splits.items()
        }
        if stage == "split":  # where the points are, for model selection: no statistics
            return
        # Normalisation from pixels away from the evaluation points.
        grown = [grow(m, self.buffer + self.patch_size) for m in eval_masks]
        stats = [
            _band_stats(s.cache, ~g, s.offset, s.scale) for s, g in zip(sources, grown, strict=True)
        ]
        self.norm_stats = _pool_stats(stats)
        freq = present / present.sum()
        self.class_weights = (1.0 / (freq * self.num_classes)).tolist()
        # The class priors the loss is effectively trained under: inverse-frequency weights and
        # balanced batches both make them uniform; without balancing they are the sample's.
        uniform = self.balance in {"weights", "sampler"}
        self.train_priors = (
            [1.0 / self.num_classes] * self.num_classes if uniform else freq.tolist()
        )
        self._train_labels = labels["train"]
        mean = np.asarray(self.norm_stats["mean"], np.float32)
        std = np.asarray(self.norm_stats["std"], np.float32)
        self._datasets = {
            name: ConcatDataset(
                [
                    PointPatches(
                        s.cache,
                        s.rows[m],
                        s.cols[m],
                        s.labels[m],
                        self.patch_size,
                        mean,
                        std,
                        augment=False,  # training draws its transforms from the sampler's key
                        fill_nodata=self.nodata_points == "fill",
                        offset=s.offset,
                        scale=s.scale,
                    )
                    for s, m in parts
                ]
            )
            for name, parts in splits.items()
        }
        self._datasets["train"] = Augmented(self._datasets["train"], self.seed, self.augment)

    def _loader(self, name: str) -> DataLoader:
        """The split's loader; training order and augmentation follow from (seed, epoch) only.

        A class-balanced sampler (``balance=sampler``) draws with replacement by class weight,
        else training is a permutation per epoch; either is an
        :class:`~bsrlc.data.chips.EpochSampler`, so a resumed run draws the same batches.
        """
        if not self._datasets:
            raise ConfigError("PointPatchDataModule.setup() must run before the dataloaders")
        ds = self._datasets[name]
        if name != "train":
            return eval_loader(ds, self.batch_size, self.num_workers, self.seed)
        weights = None
        if self.balance == "sampler":
            weights = np.asarray(self.class_weights)[self._train_labels]
        sampler = EpochSampler(len(ds), self.seed, shuffle=True, weights=weights)  # type: ignore[arg-type]
        return ResumableLoader(
            ds,
            sampler,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            drop_last=False,
            seed=self.seed,
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


def _check_duplicates(
    rows: np.ndarray,
    cols: np.ndarray,
    codes: np.ndarray,
    points: Path,
    raster: Path,
    counts: dict[str, Any],
) -> None:
    """Refuse points in one pixel with different classes; count repeats of the same class.

    Raises:
        InputError: naming how many pixels hold conflicting labels and one of them.
    """
    key = rows.astype(np.int64) * 10_000_019 + cols
    order = np.argsort(key, kind="stable")
    k, c = key[order], codes[order]
    same_pixel = k[1:] == k[:-1]
    conflict = same_pixel & (c[1:] != c[:-1])
    if conflict.any():
        i = order[1:][conflict][0]
        raise InputError(
            f"{points}: {int(conflict.sum())} pixel(s) of {raster} hold points of different "
            f"classes (e.g. row {int(rows[i])}, col {int(cols[i])}); fix or remove the "
            "conflicting labels"
        )
    if same_pixel.any():
        log.info("%s: %d repeated points in one pixel (same class)", points, int(same_pixel.sum()))
        counts["repeated_points"] = counts.get("repeated_points", 0) + int(same_pixel.sum())


def _nodata_bands(cache: RasterCache, rows: np.ndarray, cols: np.ndarray, size: int) -> dict:
    """How many of these points' patches hold nodata (or non-finite values), per band."""
    h = size // 2
    nodata = cache.info.nodata
    counts = np.zeros(len(cache.bands), np.int64)
    for r, c in zip(rows, cols, strict=True):
        patch = np.asarray(cache.data[:, r - h : r + h + 1, c - h : c + h + 1])
        bad = ~np.isfinite(patch) if patch.dtype.kind == "f" else np.zeros(patch.shape, bool)
        if nodata is not None and not np.isnan(nodata):
            bad |= patch == nodata
        counts += bad.reshape(len(cache.bands), -1).any(1)
    return {b: int(n) for b, n in zip(cache.bands, counts, strict=True)}


def _pool_stats(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-band mean and std over several rasters, each weighted equally."""
    if len(stats) == 1:
        return stats[0]
    mean = np.mean([s["mean"] for s in stats], axis=0)
    second = np.mean([np.square(s["std"]) + np.square(s["mean"]) for s in stats], axis=0)
    std = np.sqrt(np.maximum(second - mean**2, 1e-12))
    return {
        "mean": mean.tolist(),
        "std": np.maximum(std, 1e-4).tolist(),
        "bands": stats[0]["bands"],
    }


def _patch_valid(valid: np.ndarray, size: int) -> np.ndarray:
    """ok[r, c]: the size x size window with top-left (r, c) is entirely valid."""
    from bsrlc.data.chips import valid_corners

    ok = np.zeros((max(valid.shape[0] - size + 1, 0), max(valid.shape[1] - size + 1, 0)), bool)
    corners = valid_corners(valid, size)
    ok[corners[:, 0], corners[:, 1]] = True
    return ok


def _band_stats(
    cache: RasterCache,
    mask: np.ndarray,
    offset: np.ndarray | float = 0.0,
    scale: np.ndarray | None = None,
) -> dict[str, Any]:
    """Per-band mean and std (reflectance: value x cache scale x ``scale`` + ``offset``)."""
    from bsrlc.data.sr import _band_stats as stats

    out = stats(cache, mask & np.asarray(cache.valid))
    factor = np.ones(len(cache.bands)) if scale is None else np.asarray(scale, np.float64)
    mean = np.asarray(out["mean"]) * factor + np.asarray(offset, np.float64)
    std = np.maximum(np.asarray(out["std"]) * np.abs(factor), 1e-4)
    return {**out, "mean": mean.tolist(), "std": std.tolist()}


__all__ = ["PointPatchDataModule", "PointPatches", "points_to_pixels"]
