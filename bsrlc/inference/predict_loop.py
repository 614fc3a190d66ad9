"""Lightning pieces that run a :class:`~bsrlc.inference.jobs.RasterJob` with ``Trainer.predict``.

Module-level classes, so that spawned DDP processes can unpickle them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, TQDMProgressBar

from bsrlc.inference.jobs import RasterJob, TileStore


class Units(torch.utils.data.Dataset):
    """Unit indices (the work is done in ``predict_step``, on the rank's device)."""

    def __init__(self, indices: list[int]) -> None:
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> int:
        return self.indices[i] if i >= 0 else -1


class RankShare(torch.utils.data.Sampler[int]):
    """Every ``world_size``-th position from this rank's: each unit once.

    A raster can have fewer tiles than there are GPUs, which Lightning's distributed samplers
    and loops do not allow (at least one batch per rank): a rank without a share gets one
    position, -1, that :class:`JobModule` skips. The share is looked up when iterated, in the
    rank's process.

    Args:
        n: the number of items.
    """

    def __init__(self, n: int) -> None:
        self.n = n

    def _share(self) -> range:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return range(dist.get_rank(), self.n, dist.get_world_size())
        return range(self.n)

    def __iter__(self) -> Iterator[int]:
        return iter(self._share() or [-1])

    def __len__(self) -> int:
        return max(1, len(self._share()))


def single(batch: list[int]) -> int:
    """Collate a batch of one unit index into the index."""
    return batch[0]


class JobModule(pl.LightningModule):
    """Computes units of a job in ``predict_step``.

    Args:
        job: the job.
        net: the network.
    """

    def __init__(self, job: RasterJob, net: torch.nn.Module) -> None:
        super().__init__()
        self.job, self.net = job, net

    def predict_step(self, batch: Any, batch_idx: int) -> tuple[int, list[np.ndarray]] | None:
        """One unit's arrays.

        Args:
            batch: the unit index (-1: nothing, see :class:`RankShare`).
            batch_idx: its position in this rank's share.

        Returns:
            (unit index, arrays), or None.
        """
        index = int(batch)
        if index < 0:
            return None
        return index, self.job.compute(index, self.net, self.device)

    def teardown(self, stage: str) -> None:
        """Close a spawned rank's process group before the process exits.

        Otherwise gloo's group is destroyed by an exit handler while the other rank may already
        be gone, which sometimes aborts the process ("terminate called without an active
        exception"). Runs after Lightning's own teardown; ``ddp`` (not spawned) keeps its group
        for the barrier in :func:`~bsrlc.inference.jobs.run_lightning`.

        Args:
            stage: Lightning's stage.
        """
        import torch.distributed as dist

        spawned = getattr(self.trainer.strategy, "_start_method", None) in {"spawn", "forkserver"}
        if stage == "predict" and spawned and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


class StoreWriter(BasePredictionWriter):
    """Saves each unit to the tile store as soon as its rank has computed it.

    Args:
        store: the job's tile store.
    """

    def __init__(self, store: TileStore) -> None:
        super().__init__(write_interval="batch")
        self.store = store

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Save the unit (if there is one).

        Args:
            trainer: the trainer.
            pl_module: the module.
            prediction: (unit index, arrays) from ``predict_step``.
            batch_indices: unused.
            batch: unused.
            batch_idx: unused.
            dataloader_idx: unused.
        """
        if prediction is not None:
            self.store.save(*prediction)


class TileProgressBar(TQDMProgressBar):
    """Lightning's progress bar (tiles done, rate, ETA), labelled with the raster's name.

    Args:
        name: the raster being written.
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def on_predict_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Start the bar as Lightning does, then name it after the raster.

        Args:
            trainer: the trainer.
            pl_module: the module.
            batch: the unit index.
            batch_idx: its position.
            dataloader_idx: the loader.
        """
        super().on_predict_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)
        if batch_idx == 0:
            self.predict_progress_bar.set_description(f"{self.name} (tiles)")
