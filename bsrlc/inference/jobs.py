"""Raster jobs split into independent units, a resumable tile store, and two runners.

A :class:`RasterJob` describes the rasters one prediction writes (a class map and its
probabilities, or an SR raster) and splits them into *units*: output windows that can be
computed independently and in any order. Each finished unit is saved by a :class:`TileStore`
in a hidden folder next to the outputs (``.<name>.tiles/``), atomically, one ``.npy`` per output;
when every unit is there, the store assembles the outputs into COGs (streamed window by window,
published atomically by :class:`~bsrlc.raster.COGWriter`) and removes itself.

So a killed run leaves finished units behind and no output that looks complete; the rerun
computes only the missing units and writes the same rasters as an uninterrupted run (the units
and their computation do not depend on what ran before). A manifest (source file, its size and
a digest of its content, the model's digest, the unit plan) guards against resuming with other
inputs: a mismatch discards the stale units.

One process at a time writes an output: the store takes a lock file next to it
(``.<name>.lock``: host, pid, start time); a second process gets a one-line error naming the
first, and a lock left by a killed process (same host, pid gone) is taken over. The owner of the
lock removes what an interrupted run left (temporary unit files, half-assembled COGs). Before
the first unit the free space is checked against the tiles' uncompressed size; a full disk or a
folder that turned read-only during the run is one line naming the folder, with the finished
units kept for the rerun.

Runners: :func:`run_local` loops over the missing units in this process;
:func:`run_lightning` hands them to ``Trainer.predict`` with a
:class:`~lightning.pytorch.callbacks.BasePredictionWriter`, so ``strategy=ddp`` spreads units over
GPUs and nodes (each rank saves its own units; rank 0 assembles). With several nodes, ``out_dir``
must be on a file system they share.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window
from tqdm.auto import tqdm

from bsrlc.errors import InputError, format_bytes
from bsrlc.raster import COGWriter

log = logging.getLogger(__name__)

STORE_VERSION = 1
ASSEMBLY_ROWS = 512  # rows copied from a unit file to the COG at a time (bounds memory)


@dataclass
class OutputSpec:
    """One raster a job writes, with the profile :class:`~bsrlc.raster.COGWriter` needs."""

    path: Path
    crs: Any
    transform: Any
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None = None
    descriptions: list[str] | None = None
    colormap: dict[int, tuple[int, int, int, int]] | None = None
    categories: list[str] | None = None
    tags: dict[str, str] = field(default_factory=dict)
    blocksize: int = 256


class RasterJob(ABC):
    """Rasters split into units (output windows) computed independently.

    Subclasses set ``outputs`` (every output on the same grid) and ``units`` (windows of that
    grid covering it without overlap), and implement :meth:`compute` and :meth:`fingerprint`.
    Jobs are pickled to the processes of a spawned DDP run: keep open files out of ``__dict__``.
    """

    outputs: list[OutputSpec]
    units: list[Window]

    @abstractmethod
    def compute(self, index: int, net: torch.nn.Module, device: torch.device) -> list[np.ndarray]:
        """The arrays of one unit, one (count, rows, cols) array per output.

        Args:
            index: the unit.
            net: the network.
            device: where it runs.

        Returns:
            One array per output, in ``outputs`` order.
        """

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """What the units depend on (inputs, model, plan), for the store's manifest."""

    @property
    def name(self) -> str:
        """The first output's file name."""
        return self.outputs[0].path.name


def source_fingerprint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Identify an input file by path, size and a digest of its content.

    Size and modification time alone miss a file rewritten with both kept (``cp -p``,
    ``rsync -t``), and resuming would then reuse tiles of the old content. The digest
    (BLAKE2b of every byte) costs one read of the file, about 1 s per GB, which the job reads
    anyway.

    Args:
        path: the file.

    Returns:
        A JSON-able dict.
    """
    p = Path(path)
    digest = hashlib.blake2b(digest_size=16)
    with p.open("rb") as f:
        while chunk := f.read(8 * 2**20):
            digest.update(chunk)
    return {"path": str(p.resolve()), "size": p.stat().st_size, "blake2b": digest.hexdigest()}


def model_digest(net: torch.nn.Module, meta: dict[str, Any] | None = None) -> str:
    """A digest of a network's weights and metadata (which model computed a unit).

    Args:
        net: the network.
        meta: its metadata (for networks without torch parameters, e.g. ONNX sessions).

    Returns:
        A hex digest.
    """
    h = hashlib.sha256(json.dumps(meta or {}, sort_keys=True, default=str).encode())
    for name, tensor in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class OutputLock:
    """An exclusive claim on an output: a lock file holding the owner's host, pid and start.

    Taking it is atomic (``O_CREAT | O_EXCL``). A lock of this process is taken again (a
    process resumes its own store); one of a process that is gone (same host, pid not running)
    is stale and taken over. Locks of other hosts are trusted: a shared file system cannot tell
    whether their owner still runs.

    Args:
        path: the lock file.
        output: the output it guards (for messages).
    """

    def __init__(self, path: Path, output: Path) -> None:
        self.path, self.output = path, output
        self.held = False

    def _owner(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def acquire(self) -> None:
        """Take the lock.

        Raises:
            InputError: if another live process holds it.
        """
        me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is None:  # being written by its owner this instant, or garbage
                    age = time.time() - self.path.stat().st_mtime if self.path.exists() else 0
                    if age < 10:
                        time.sleep(0.2)
                        continue
                elif owner.get("host") == me["host"] and owner.get("pid") == me["pid"]:
                    self.held = True
                    return
                elif owner.get("host") != me["host"] or _pid_alive(int(owner.get("pid", -1))):
                    since = time.strftime(
                        "%Y-%m-%d %H:%M:%S", time.localtime(float(owner.get("since", 0)))
                    )
                    raise InputError(
                        f"{self.output}: another process (pid {owner.get('pid')} on "
                        f"{owner.get('host')}, since {since}) is writing it; wait for it to "
                        f"finish, or delete {self.path} if that process is gone"
                    ) from None
                log.warning("%s: lock of a process that is gone (%s); taken over", self.path, owner)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return
        raise InputError(f"{self.output}: cannot take the lock {self.path}; delete it and rerun")

    def release(self) -> None:
        """Give the lock back (only if this process holds it)."""
        if self.held:
            owner = self._owner()
            if owner is not None and owner.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False


def _write_error(folder: Path, what: str, err: BaseException, kept: str) -> InputError:
    """One line for a failed write: disk full, not writable, or the system's reason."""
    code = getattr(err, "errno", None)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = -1
    if code in (errno.ENOSPC, errno.EDQUOT) or 0 <= free < 16 * 2**20:
        return InputError(
            f"{folder}: disk full while writing {what} ({free / 2**20:.0f} MiB free); {kept}; "
            "free space (or choose another out_dir) and rerun to resume"
        )
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return InputError(
            f"{folder}: not writable while writing {what} ({os.strerror(code)}); {kept}; fix "
            "the permissions (or choose another out_dir) and rerun to resume"
        )
    reason = getattr(err, "strerror", None) or str(err).splitlines()[0]
    return InputError(f"{folder}: cannot write {what} ({reason}); {kept}; rerun to resume")


class TileStore:
    """Finished units of a job on disk; assembles the outputs when all are there.

    Args:
        job: the job.
        overwrite: discard finished units (and replace existing outputs).
        prepare: create the store (False on the ranks of a DDP run other than 0).

    Raises:
        InputError: if the output folder cannot be created or written, another process is
            writing the output, or the disk is clearly too full for the tiles.
    """

    def __init__(self, job: RasterJob, overwrite: bool = False, prepare: bool = True) -> None:
        self.job = job
        first = job.outputs[0].path
        self.root = first.parent / f".{first.name}.tiles"
        self.lock = OutputLock(first.parent / f".{first.name}.lock", first)
        if not prepare:  # another rank prepares the store
            return
        try:
            first.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(
                f"{first.parent}: cannot create output folder ({err.strerror}); choose another "
                "out_dir"
            ) from None
        if not os.access(first.parent, os.W_OK):
            raise InputError(
                f"{first.parent}: output folder is not writable; choose another out_dir"
            )
        self.lock.acquire()
        try:
            self._prepare(overwrite)
        except BaseException:
            self.lock.release()
            raise

    def _prepare(self, overwrite: bool) -> None:
        job = self.job
        for o in job.outputs:  # what an interrupted assembly left (we hold the lock)
            for leftover in o.path.parent.glob(f".{o.path.name}.*.partial*"):
                leftover.unlink(missing_ok=True)
        manifest = {
            "version": STORE_VERSION,
            "job": job.fingerprint(),
            "units": [
                [int(w.col_off), int(w.row_off), int(w.width), int(w.height)] for w in job.units
            ],
            "outputs": [
                {k: v for k, v in asdict(o).items() if k in ("count", "dtype", "width", "height")}
                | {"name": o.path.name}
                for o in job.outputs
            ],
        }
        manifest_path = self.root / "manifest.json"
        text = json.dumps(manifest, sort_keys=True, default=str)
        if self.root.exists():
            old = manifest_path.read_text() if manifest_path.exists() else None
            if overwrite or old != text:
                if not overwrite:
                    log.warning(
                        "%s: unfinished units from other inputs or settings; discarded", self.root
                    )
                shutil.rmtree(self.root)
        for leftover in self.root.parent.glob(f"{self.root.name}.*"):  # half-made stores
            shutil.rmtree(leftover, ignore_errors=True)
        if not self.root.exists():
            tmp = self.root.with_name(self.root.name + f".{uuid.uuid4().hex[:8]}")
            tmp.mkdir()
            (tmp / "manifest.json").write_text(text)
            os.replace(tmp, self.root)
        for leftover in self.root.glob("*.tmp.npy"):  # units a kill interrupted
            leftover.unlink(missing_ok=True)
        self._check_space()

    def _check_space(self) -> None:
        """Refuse early when the free space is clearly short of the missing tiles' size."""
        pixels = sum(
            int(w.width * w.height) for i, w in enumerate(self.job.units) if not self.done(i)
        )
        need = pixels * sum(o.count * np.dtype(o.dtype).itemsize for o in self.job.outputs)
        free = shutil.disk_usage(self.root).free
        if need > free:
            raise InputError(
                f"{self.root.parent}: {format_bytes(free)} free, but the tiles of "
                f"{self.job.name} need about {format_bytes(need)} before the COG is written; "
                "free space or choose another out_dir"
            )

    def _file(self, index: int, k: int) -> Path:
        return self.root / f"u{index:06d}.{k}.npy"

    def done(self, index: int) -> bool:
        """Whether a unit is finished (its first output is saved last)."""
        return self._file(index, 0).exists()

    def pending(self, quiet: bool = False) -> list[int]:
        """The units still to compute (logged when an earlier run finished some)."""
        todo = [i for i in range(len(self.job.units)) if not self.done(i)]
        if len(todo) < len(self.job.units) and not quiet:
            n = len(self.job.units)
            log.info("%s: resuming, %d of %d tiles done", self.job.name, n - len(todo), n)
        return todo

    def save(self, index: int, arrays: Sequence[np.ndarray]) -> None:
        """Save one unit's arrays atomically (the first output last: it marks completion).

        Args:
            index: the unit.
            arrays: one (count, rows, cols) array per output.

        Raises:
            ValueError: if an array does not fit its output or window.
        """
        window = self.job.units[index]
        shape = (int(window.height), int(window.width))
        for k in reversed(range(len(self.job.outputs))):
            spec, arr = self.job.outputs[k], arrays[k]
            if arr.shape != (spec.count, *shape):
                raise ValueError(
                    f"unit {index}: {arr.shape} for {spec.path.name}, not {(spec.count, *shape)}"
                )
            final = self._file(index, k)
            tmp = final.with_name(f"{final.stem}.{uuid.uuid4().hex[:8]}.tmp.npy")
            try:
                np.save(tmp, np.ascontiguousarray(arr, dtype=spec.dtype))
                os.replace(tmp, final)
            except OSError as err:
                tmp.unlink(missing_ok=True)
                done = len(self.job.units) - len(self.pending(quiet=True))
                raise _write_error(
                    self.root.parent,
                    f"tile {index} of {self.job.name}",
                    err,
                    f"{done} of {len(self.job.units)} tiles kept",
                ) from None

    def assemble(self) -> list[Path]:
        """Write every output as a COG from the saved units, then remove the store.

        Returns:
            The output paths.

        Raises:
            RuntimeError: if units are missing.
        """
        missing = [i for i in range(len(self.job.units)) if not self.done(i)]
        if missing:
            raise RuntimeError(f"{self.root}: {len(missing)} units missing; run the job again")
        try:
            self._assemble()
        except InputError:
            raise
        except Exception as err:  # rasterio / GDAL write errors are not OSErrors
            if isinstance(err, OSError) or "write" in str(err).lower():
                raise _write_error(
                    self.job.outputs[0].path.parent,
                    f"the COGs of {self.job.name}",
                    err,
                    "every tile kept",
                ) from None
            raise
        shutil.rmtree(self.root, ignore_errors=True)
        self.lock.release()
        return [o.path for o in self.job.outputs]

    def _assemble(self) -> None:
        for k, spec in enumerate(self.job.outputs):
            with COGWriter(
                spec.path,
                crs=spec.crs,
                transform=spec.transform,
                width=spec.width,
                height=spec.height,
                count=spec.count,
                dtype=spec.dtype,
                nodata=spec.nodata,
                descriptions=spec.descriptions,
                colormap=spec.colormap,
                categories=spec.categories,
                tags=spec.tags,
                blocksize=spec.blocksize,
                overwrite=True,
            ) as writer:
                for i, window in enumerate(self.job.units):
                    arr = np.load(self._file(i, k), mmap_mode="r")
                    for r in range(0, arr.shape[1], ASSEMBLY_ROWS):
                        part = np.asarray(arr[:, r : r + ASSEMBLY_ROWS])
                        writer.write(
                            part,
                            Window(
                                window.col_off, window.row_off + r, part.shape[2], part.shape[1]
                            ),
                        )


def outputs_exist(job: RasterJob) -> bool:
    """Whether every output of a job is already there (a finished earlier run)."""
    return all(o.path.exists() for o in job.outputs)


def run_local(
    job: RasterJob,
    net: torch.nn.Module,
    device: str | torch.device = "cpu",
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Compute a job's missing units in this process and assemble its outputs.

    Args:
        job: the job.
        net: the network (eval mode).
        device: torch device.
        overwrite: recompute every unit.
        progress: show a progress bar over units (with ETA).

    Returns:
        The output paths.
    """
    store = TileStore(job, overwrite=overwrite)
    try:
        todo = store.pending()
        dev = torch.device(device)
        net = net.to(dev).eval()
        with torch.inference_mode():
            for i in tqdm(todo, desc=job.name, unit="tile", disable=not progress):
                store.save(i, job.compute(i, net, dev))
        return store.assemble()
    finally:
        store.lock.release()


def run_lightning(
    job: RasterJob,
    net: torch.nn.Module,
    trainer_kwargs: dict[str, Any],
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path] | None:
    """Compute a job's missing units with ``Trainer.predict`` (one process or DDP) and assemble.

    Args:
        job: the job.
        net: the network.
        trainer_kwargs: ``Trainer`` arguments (accelerator, devices, strategy, num_nodes...).
        overwrite: recompute every unit.
        progress: show Lightning's progress bar (units, with ETA).

    Returns:
        The output paths on global rank 0; None on the other ranks of a ``ddp`` run (they wait
        until rank 0 has assembled).
    """
    import lightning.pytorch as pl

    from bsrlc.console import quiet_lightning
    from bsrlc.inference.predict_loop import (
        JobModule,
        RankShare,
        StoreWriter,
        TileProgressBar,
        Units,
        single,
    )

    # Ranks of a `ddp` run (one process per GPU, all running this function): rank 0 prepares
    # the store, every rank lists the same missing units before any is saved, rank 0 assembles
    # once all are saved. Before the first job's `Trainer.predict` no process group exists yet:
    # the other ranks start only then, after rank 0 has prepared the store.
    rank = _global_rank()
    store = TileStore(job, overwrite=overwrite, prepare=rank == 0)
    _barrier()
    todo = store.pending()
    _barrier()
    log.info("%s: %d tiles to compute", job.name, len(todo))
    if todo:
        quiet_lightning()
        trainer = pl.Trainer(
            **{**trainer_kwargs, "use_distributed_sampler": False},
            callbacks=[StoreWriter(store), *([TileProgressBar(job.name)] if progress else [])],
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=progress,
        )
        loader = torch.utils.data.DataLoader(
            Units(todo), batch_size=1, sampler=RankShare(len(todo)), collate_fn=single
        )
        trainer.predict(JobModule(job, net.eval()), dataloaders=loader, return_predictions=False)
        rank = _global_rank()  # a `ddp` run's process group exists from here on
    _barrier()  # every rank's units are saved
    try:
        paths = store.assemble() if rank == 0 else None
    finally:
        store.lock.release()
    _barrier()  # the next job may read what rank 0 assembled
    return paths


def _global_rank() -> int:
    """This process's global rank: from the process group, else from the launcher's env."""
    import torch.distributed as dist
    from lightning.pytorch.utilities import rank_zero_only

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(getattr(rank_zero_only, "rank", 0) or 0)


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
