"""Exact resume: what a checkpoint must hold, where it is written, and which run it continues.

A run killed at any point and resumed with ``ckpt_path=last`` ends where an uninterrupted run
ends: the same weights and the same logged metrics. Lightning restores weights, optimisers,
schedulers, the EMA (a submodule) and its loop counters; the rest is here:

- :class:`ResumeState` (added to every training run) puts into each checkpoint the RNG states
  (python, numpy, torch, CUDA), the accumulated states of the module's torchmetrics (an
  epoch's training metrics span a checkpoint taken mid-epoch or before the epoch's end hooks),
  the number of CSV rows written so far, and the run's fingerprint. It restores them when
  training restarts. The data order does not depend on the global RNG at all
  (:class:`bsrlc.data.chips.EpochSampler`); the training loader is resumable mid-epoch
  (:class:`bsrlc.data.chips.ResumableLoader`).
- :class:`ResumableCheckpoint` is Lightning's ``ModelCheckpoint`` whose files are written
  atomically (a kill never leaves a truncated ``last.ckpt``) and which also writes
  ``last.ckpt`` every ``last_every_n_train_steps`` batches, so a kill loses at most that many
  batches (one more when that batch is a logging step).
- :func:`find_run` chooses the run ``ckpt_path=last`` continues: the newest run of the task
  whose config and data fingerprint (``fingerprint.json`` in its folder) match this one; none
  matching is a one-line error listing the candidates and why each does not match.
- :func:`continue_in` makes the resumed run write into the interrupted run's folder and logger
  versions (CSV rows after the checkpoint are dropped first), not a new folder.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf, open_dict

from bsrlc.checkpoints import read_checkpoint
from bsrlc.errors import (
    ConfigError,
    InputError,
    check_free_space,
    disk_full_error,
    is_disk_full,
)

log = logging.getLogger(__name__)

FINGERPRINT_FILE = "fingerprint.json"

IGNORED_KEYS = (
    "paths",
    "hydra",
    "ckpt_path",
    "train",
    "test",
    "export_bundle",
    "logger",
    "callbacks",
    "tags",
    "optimized_metric",
    "trainer.default_root_dir",
    "data.cache_dir",
    "data.num_workers",
)
"""Config keys that do not change what a run computes (where it writes, what it logs to,
how it is resumed, how many loader processes read the same samples)."""


# -- fingerprints ----------------------------------------------------------------------------


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: value}


def run_fingerprint(cfg: DictConfig, data_files: list[Path] | None) -> dict[str, Any]:
    """What must match for a run to continue another one.

    Args:
        cfg: the run's composed config.
        data_files: the files the datamodule reads (``data_files()``), or None.

    Returns:
        ``{"config_sha256", "data_sha256", "config": {flattened key: value}, "task_name"}``.
    """
    from bsrlc.tracking import files_digest

    plain: dict[str, Any] = OmegaConf.to_container(  # type: ignore[assignment]
        OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True
    )
    flat = _flatten(plain)
    keep = {
        k: v
        for k, v in flat.items()
        if not any(k == i or k.startswith(i + ".") for i in IGNORED_KEYS)
    }
    text = json.dumps(keep, sort_keys=True, default=str)
    data = files_digest(data_files)[1] if data_files else ""
    return {
        "task_name": str(cfg.get("task_name", "")),
        "config_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "data_sha256": data,
        "config": json.loads(text),
    }


def write_fingerprint(run_dir: str | Path, fingerprint: dict[str, Any]) -> None:
    """Keep the fingerprint in the run folder (``fingerprint.json``) for :func:`find_run`.

    Args:
        run_dir: the run folder.
        fingerprint: from :func:`run_fingerprint`.
    """
    path = Path(run_dir) / FINGERPRINT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return  # a resumed run keeps the first one (the same, or it would not resume)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(fingerprint, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


def _why_not(theirs: dict[str, Any], ours: dict[str, Any]) -> str | None:
    """None when two fingerprints match, else a few words saying what differs."""
    if theirs.get("config_sha256") != ours["config_sha256"]:
        a, b = theirs.get("config", {}), ours["config"]
        keys = sorted(k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>"))
        shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
        return f"config differs: {shown}" if keys else "config differs"
    if theirs.get("data_sha256") != ours["data_sha256"]:
        return "data files differ (size or time)"
    return None


def _stored_fingerprint(ckpt: Path) -> dict[str, Any] | None:
    """The run's fingerprint: its folder's ``fingerprint.json``, else the checkpoint's own."""
    path = ckpt.parent.parent / FINGERPRINT_FILE
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None
    state = read_checkpoint(ckpt).get("callbacks", {}).get(ResumeState.__qualname__, {})
    return state.get("fingerprint")


def find_run(cfg: DictConfig, fingerprint: dict[str, Any]) -> Path:
    """The ``last.ckpt`` that ``ckpt_path=last`` continues: the newest of a matching run.

    Args:
        cfg: the run's config (``paths.log_dir`` and ``task_name`` say where runs are).
        fingerprint: this run's, from :func:`run_fingerprint`.

    Returns:
        The checkpoint.

    Raises:
        ConfigError: when no run has a ``last.ckpt``, or none matches (one line listing each
            candidate's folder, time and what differs).
        InputError: when a candidate without ``fingerprint.json`` holds an unreadable or
            unsafe checkpoint.
    """
    root = Path(cfg.paths.log_dir) / str(cfg.task_name)
    found = sorted(
        root.glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True
    )
    if not found:
        raise ConfigError(f"ckpt_path=last: no last.ckpt under {root}; train first or give a path")
    reasons = []
    for ckpt in found:
        stored = _stored_fingerprint(ckpt)
        why = "no fingerprint (written before bsrlc kept one)" if stored is None else None
        why = why or _why_not(stored or {}, fingerprint)
        if why is None:
            return ckpt
        when = dt.datetime.fromtimestamp(ckpt.stat().st_mtime).strftime("%Y-%m-%d %H:%M:%S")
        reasons.append(f"{ckpt.parent.parent} ({when}: {why})")
    shown = "; ".join(reasons[:5]) + (f"; and {len(reasons) - 5} more" if len(reasons) > 5 else "")
    raise ConfigError(
        f"ckpt_path=last: no run of {cfg.task_name} under {root} has this config and data; "
        f"candidates: {shown}. Resume one with ckpt_path=FILE, or drop ckpt_path to start anew"
    )


def resume_target(
    cfg: DictConfig, fingerprint: dict[str, Any]
) -> tuple[str | None, dict[str, Any] | None]:
    """The checkpoint a training run resumes from, read safely, and the run folder's state.

    Args:
        cfg: the config (``ckpt_path``: None, ``last`` or a file).
        fingerprint: this run's.

    Returns:
        (checkpoint path or None, its ResumeState or None). The state is None when the
        checkpoint's run does not match this config (an explicit path then starts a new run
        folder from it) or holds no ResumeState.

    Raises:
        ConfigError: see :func:`find_run`; a path that does not exist.
        InputError: an unreadable, truncated or unsafe checkpoint (one line).
    """
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path in (None, "", "null"):
        return None, None
    if ckpt_path == "last":
        path = find_run(cfg, fingerprint)
    else:
        path = Path(str(ckpt_path))
        if not path.exists():
            raise ConfigError(f"ckpt_path={ckpt_path}: file not found; give an existing checkpoint")
    ckpt = read_checkpoint(path)  # one line for a truncated or unsafe file
    if "state_dict" not in ckpt:
        raise InputError(
            f"{path}: no state_dict; not a Lightning checkpoint: give a .ckpt written by train.py"
        )
    state = ckpt.get("callbacks", {}).get(ResumeState.__qualname__)
    stored = _stored_fingerprint(path) if state is not None else None
    why = _why_not(stored, fingerprint) if stored else "no fingerprint"
    loops = ckpt.get("loops", {}).get("fit_loop", {})
    epoch = loops.get("epoch_progress", {}).get("current", {}).get("completed", "?")
    if why is not None:
        log.warning(
            "resuming from %s (epoch %s, step %s) in a new run folder: %s",
            path,
            epoch,
            ckpt.get("global_step"),
            why,
        )
        return str(path), None
    log.info(
        "resuming run %s from %s (epoch %s, step %s)",
        path.parent.parent,
        path.name,
        epoch,
        ckpt.get("global_step"),
    )
    return str(path), state


# -- continuing in the interrupted run's folder ----------------------------------------------


def continue_in(cfg: DictConfig, ckpt_path: str, state: dict[str, Any]) -> Path:
    """Point this run at the interrupted run's folder and logger versions.

    The run folder becomes the checkpoint's (``<run>/checkpoints/last.ckpt``); the CSV and
    TensorBoard loggers reuse the versions the checkpoint was written with, and the CSV file
    is cut back to the rows written before the checkpoint (rows of batches after it are
    logged again). Under Hydra, the job log moves to the old folder and the new, empty run
    folder is removed (its ``.hydra`` is kept as ``<run>/.hydra/resumed-<time>``).

    Args:
        cfg: the config (changed in place: ``paths.output_dir``, logger versions).
        ckpt_path: the checkpoint resumed.
        state: its ResumeState.

    Returns:
        The run folder.
    """
    run_dir = Path(ckpt_path).resolve().parent.parent
    old_out = Path(str(cfg.paths.output_dir)).resolve()
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
        for name, conf in (cfg.get("logger") or {}).items():
            target = str(conf.get("_target_", "")) if conf else ""
            saved = state.get("loggers", {}).get(target.rsplit(".", 1)[-1])
            if saved is not None and "version" in conf:
                cfg.logger[name].version = saved["version"]
            elif saved is not None:
                cfg.logger[name]["version"] = saved["version"]
    if old_out != run_dir:
        _move_hydra_job(old_out, run_dir)
    return run_dir


def _move_hydra_job(new_dir: Path, run_dir: Path) -> None:
    """Send the job's log file to ``run_dir`` and remove ``new_dir`` if it holds nothing else."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.RUN:
        return
    if Path(HydraConfig.get().runtime.output_dir).resolve() != new_dir:
        return
    for handler in logging.getLogger().handlers:
        if not isinstance(handler, logging.FileHandler):
            continue
        path = Path(handler.baseFilename)
        if path.parent != new_dir:
            continue
        handler.acquire()
        try:
            handler.close()
            handler.baseFilename = str(run_dir / path.name)
            handler.mode = "a"
            handler.stream = handler._open()
        finally:
            handler.release()
    leftovers = [p for p in new_dir.iterdir() if p.name != ".hydra" and p.suffix != ".log"]
    if leftovers:
        return
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    if (new_dir / ".hydra").is_dir():
        shutil.move(str(new_dir / ".hydra"), str(run_dir / ".hydra" / f"resumed-{stamp}"))
    shutil.rmtree(new_dir, ignore_errors=True)


def restore_csv(loggers: list[Any], state: dict[str, Any]) -> None:
    """Cut a resumed run's CSV metrics back to the rows written before its checkpoint.

    Lightning's CSV writer deletes an existing ``metrics.csv`` when it opens its folder; the
    rows (with the header of the time) are read first and written back.

    Args:
        loggers: the run's loggers (already pointed at the old version).
        state: the checkpoint's ResumeState.
    """
    saved = state.get("loggers", {}).get("CSVLogger")
    if not saved:
        return
    for lg in loggers:
        if type(lg).__name__ != "CSVLogger":
            continue
        path = Path(lg.log_dir) / "metrics.csv"
        rows: list[dict[str, str]] = []
        if path.is_file():
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))[: int(saved["rows"])]
        header = list(saved["header"])
        exp = lg.experiment  # opening it deletes the old file
        if header:
            with open(path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
        exp.metrics_keys = sorted(header)


# -- what a checkpoint holds beyond Lightning's own ------------------------------------------


def _scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The one-number entries of ``trainer.callback_metrics`` as plain floats."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                continue
            value = value.item()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[str(key)] = float(value)
    return out


def _rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002  (the global RNG)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(np.asarray(keys, np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        name, keys, pos, has_gauss, cached = state["numpy"]
        legacy = (name, keys.numpy().astype(np.uint32), pos, has_gauss, cached)
        np.random.set_state(legacy)  # noqa: NPY002  (the global RNG)
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _metric_states(module: torch.nn.Module) -> dict[str, Any]:
    from torchmetrics import Metric

    out: dict[str, Any] = {}
    for name, m in module.named_modules():
        if not isinstance(m, Metric) or not name:
            continue
        states = {}
        for key in m._defaults:
            value = getattr(m, key)
            if isinstance(value, torch.Tensor):
                states[key] = value.detach().cpu().clone()
            else:
                states[key] = [v.detach().cpu().clone() for v in value]
        out[name] = {"states": states, "update_count": int(m._update_count)}
    return out


def _set_metric_states(module: torch.nn.Module, saved: dict[str, Any]) -> None:
    from torchmetrics import Metric

    for name, m in module.named_modules():
        if not isinstance(m, Metric) or name not in saved:
            continue
        for key, value in saved[name]["states"].items():
            if isinstance(value, torch.Tensor):
                setattr(m, key, value.to(m.device))
            else:
                setattr(m, key, [v.to(m.device) for v in value])
        m._update_count = int(saved[name]["update_count"])
        m._computed = None


def _flush_loggers(trainer: L.Trainer) -> dict[str, Any]:
    """Write out buffered CSV rows; the CSV row count and logger versions, by logger class."""
    out: dict[str, Any] = {}
    for lg in trainer.loggers:
        kind = type(lg).__name__
        if kind == "CSVLogger":
            exp = lg.experiment
            if not isinstance(getattr(exp, "metrics_file_path", None), str):
                continue
            exp.save()
            path = Path(exp.metrics_file_path)
            rows, header = 0, []
            if path.is_file():
                with open(path, newline="") as f:
                    reader = csv.reader(f)
                    header = next(reader, [])
                    rows = sum(1 for _ in reader)
            out[kind] = {"version": lg.version, "rows": rows, "header": header}
        elif kind == "TensorBoardLogger":
            out[kind] = {"version": lg.version}
    return out


class ResumeState(Callback):
    """Put what Lightning does not save into each checkpoint, and restore it on resume.

    Saved: RNG states, torchmetrics states of the module, CSV rows so far and logger
    versions, the run's fingerprint and the trainer's scalar ``callback_metrics``. Restored
    when training starts again (after the sanity check), so the first batch after a resume sees
    the RNG state the uninterrupted run had after the checkpoint. The callback metrics are kept
    in :attr:`restored_metrics`: a run killed after its final checkpoint, resumed, has nothing
    left to fit and logs nothing, yet its results (``metrics.json``, ``optimized_metric``) are
    those of the checkpoint.

    Args:
        fingerprint: the run's, from :func:`run_fingerprint` (None: not recorded).
    """

    def __init__(self, fingerprint: dict[str, Any] | None = None) -> None:
        self.fingerprint = fingerprint
        self._pending: dict[str, Any] | None = None
        self.restored_metrics: dict[str, float] = {}
        self._module: L.LightningModule | None = None
        self._trainer: L.Trainer | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Remember the trainer and module whose state goes into checkpoints."""
        self._trainer, self._module = trainer, pl_module

    def state_dict(self) -> dict[str, Any]:
        """The state to save (called while a checkpoint is written).

        Returns:
            Plain data: tensors, numbers, strings, lists and dicts.
        """
        state: dict[str, Any] = {"rng": _rng_state(), "fingerprint": self.fingerprint}
        if self._module is not None:
            state["metrics"] = _metric_states(self._module)
        if self._trainer is not None:
            state["callback_metrics"] = _scalar_metrics(self._trainer.callback_metrics)
            if self._trainer.is_global_zero:
                state["loggers"] = _flush_loggers(self._trainer)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the saved state until training restarts.

        Args:
            state_dict: from :meth:`state_dict`.
        """
        self._pending = dict(state_dict)
        self.restored_metrics = dict(state_dict.get("callback_metrics") or {})

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Restore the metric and RNG states of a resumed run."""
        if not self._pending:
            return
        _set_metric_states(pl_module, self._pending.get("metrics", {}))
        _set_rng_state(self._pending.get("rng", {}))
        self._pending = None


class ResumableCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` with atomic writes and a ``last.ckpt`` every N training batches.

    Every file is written to a temporary name and renamed, so a kill leaves the previous
    checkpoint intact, never a truncated one. With ``last_every_n_train_steps=N`` (and
    ``save_last``), ``last.ckpt`` is written after every N-th batch (batches counted across
    epochs) and when training ends, and not at epoch ends: Lightning restarts from a checkpoint
    taken there without logging that epoch's training metrics again. A batch after which a
    restart would not be exact (one that logs step metrics after its end hook, is followed by
    validation or ends the epoch) passes the write on to the next batch, so a kill loses at
    most N plus a few batches (top-k files are still written at epoch ends).

    Args:
        last_every_n_train_steps: write ``last.ckpt`` this often (0 or None: only where
            ``ModelCheckpoint`` writes it, after validation / at epoch ends).
        kwargs: ``ModelCheckpoint``'s arguments.
    """

    def __init__(self, last_every_n_train_steps: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.last_every_n_train_steps = int(last_every_n_train_steps or 0)
        self._due = False
        self._writing_last = False

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict) -> None:
        # With step checkpoints, last.ckpt is written only where a restart is exact: between
        # batches (on_train_batch_end below) and when training ends. Lightning restarts from
        # one taken at an epoch's end (validation end, train epoch end) without logging that
        # epoch's training metrics again, so those points are left to the top-k files.
        if self.last_every_n_train_steps and not self._writing_last:
            return
        super()._save_last_checkpoint(trainer, monitor_candidates)

    def _write_last(self, trainer: L.Trainer) -> None:
        self._writing_last = True
        try:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        finally:
            self._writing_last = False

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Write the final ``last.ckpt`` (step checkpoints on)."""
        if self.last_every_n_train_steps and self.save_last and not trainer.fast_dev_run:
            self._write_last(trainer)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Refuse early when the checkpoint folder cannot hold one checkpoint of this model."""
        super().on_fit_start(trainer, pl_module)
        if not trainer.is_global_zero or not self.dirpath:
            return
        # weights and buffers, and about two optimizer states per weight (Adam's moments)
        weights = sum(p.numel() * p.element_size() for p in pl_module.parameters())
        buffers = sum(b.numel() * b.element_size() for b in pl_module.buffers())
        check_free_space(
            self.dirpath,
            3 * weights + buffers,
            "the checkpoints of this model (weights and optimizer states)",
            "paths.log_dir",
        )

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        tmp = f"{filepath}.partial"
        try:
            super()._save_checkpoint(trainer, tmp)
            if trainer.is_global_zero and os.path.exists(tmp):
                os.replace(tmp, filepath)
        except (OSError, RuntimeError) as err:  # torch's writer: "unexpected pos ..."
            folder = os.path.dirname(filepath)
            full = is_disk_full(err, folder)
            if trainer.is_global_zero:
                Path(tmp).unlink(missing_ok=True)
            if not full:
                raise
            kept = "the checkpoints written before are kept (ckpt_path=last resumes from them)"
            raise disk_full_error(
                folder, f"checkpoint {os.path.basename(filepath)}", kept, "paths.log_dir"
            ) from None
        trainer.strategy.barrier("ResumableCheckpoint")
        self._last_checkpoint_saved = filepath
        self._due = False

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Lightning's step checkpoints, then ``last.ckpt`` every N batches."""
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        n = self.last_every_n_train_steps
        if not n or not self.save_last or trainer.sanity_checking or trainer.fast_dev_run:
            return
        loop = trainer.fit_loop.epoch_loop
        if (loop._batches_that_stepped + 1) % n == 0:
            self._due = True
        if not self._due or self._last_global_step_saved == trainer.global_step:
            return
        try:
            blocked = (
                trainer._logger_connector.should_update_logs
                or loop.batch_progress.is_last_batch
                or loop._num_ready_batches_reached()
                or loop._should_check_val_fx(trainer.fit_loop._data_fetcher)
            )
        except AttributeError:  # a Lightning without these internals: epoch ends only
            return
        if blocked:
            return
        self._write_last(trainer)
