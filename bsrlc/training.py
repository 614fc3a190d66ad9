"""The training loop shared by every experiment: build everything from the config, fit, test.

``train.py`` is a thin Hydra entry point around :func:`train`. Nothing here knows about a
particular model: the datamodule, the LightningModule, callbacks, loggers and the trainer are all
instantiated from the composed config (``hydra.utils.instantiate``).
"""

from __future__ import annotations

import json
import logging
import math
import time
import traceback
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf, open_dict

from bsrlc.checkpoints import check_checkpoint
from bsrlc.console import quiet_lightning
from bsrlc.errors import ConfigError
from bsrlc.resume import (
    ResumeState,
    continue_in,
    restore_csv,
    resume_target,
    run_fingerprint,
    write_fingerprint,
)
from bsrlc.tracking import git_commit, register_resolvers

log = logging.getLogger(__name__)
register_resolvers()


def instantiate_list(cfg: DictConfig | None, kind: str) -> list[Any]:
    """Instantiate every ``_target_`` entry of a config group (callbacks or loggers).

    Args:
        cfg: the group's config (a mapping of name -> object config), or None.
        kind: what the objects are, for the error message.

    Returns:
        The objects, in config order.

    Raises:
        ConfigError: if an entry is not an object config.
    """
    if not cfg:
        return []
    out = []
    for name, conf in cfg.items():
        if conf is None:
            continue
        if not isinstance(conf, DictConfig) or "_target_" not in conf:
            raise ConfigError(f"{kind}.{name!s}: expected a config with _target_, got {conf!r}")
        out.append(instantiate(conf))
    return out


def resolve_ckpt_path(ckpt_path: str | None, cfg: DictConfig) -> str | None:
    """Turn ``ckpt_path=last`` into the newest ``last.ckpt`` of this task's earlier runs.

    Args:
        ckpt_path: None, a path, or ``"last"``.
        cfg: the run config (for the log folder and task name).

    Returns:
        A checkpoint path or None.

    Raises:
        ConfigError: if the checkpoint does not exist.
    """
    if ckpt_path in (None, "", "null"):
        return None
    if ckpt_path == "last":
        root = Path(cfg.paths.log_dir) / cfg.task_name
        found = sorted(root.glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise ConfigError(
                f"ckpt_path=last: no last.ckpt under {root}; train first or give a path"
            )
        return str(found[-1])
    if not Path(ckpt_path).exists():
        raise ConfigError(f"ckpt_path={ckpt_path}: file not found; give an existing checkpoint")
    return str(ckpt_path)


def safe_ckpt_path(ckpt_path: str | None, cfg: DictConfig) -> str | None:
    """:func:`resolve_ckpt_path`, then refuse a checkpoint that is unreadable or would run code.

    Lightning reads the file again itself (with ``weights_only=True``); checking it here first
    turns a refusal into bsrlc's one-line message instead of a traceback.
    """
    path = resolve_ckpt_path(ckpt_path, cfg)
    return check_checkpoint(path) if path else None


def _is_rank_zero() -> bool:
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def _scalar(value: Any) -> float | int | str | None:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else None
    if isinstance(value, (int, float, str)):
        return value
    return None


def log_hyperparameters(
    cfg: DictConfig, model: L.LightningModule, datamodule: L.LightningDataModule, loggers: list
) -> None:
    """Send the resolved config, parameter counts, git commit and data files to every logger.

    Args:
        cfg: the resolved run config.
        model: the LightningModule.
        datamodule: the datamodule (its ``data_files()`` are fingerprinted when it has one).
        loggers: the loggers.
    """
    if not loggers:
        return
    hparams: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    hparams["git_commit"] = git_commit(Path(__file__).parent)
    hparams["params/total"] = sum(p.numel() for p in model.parameters())
    hparams["params/trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    files = getattr(datamodule, "data_files", None)
    if callable(files):
        from bsrlc.tracking import files_digest

        names, digest = files_digest(files())
        hparams["data/files"] = names
        hparams["data/sha256"] = digest
    for lg in loggers:
        lg.log_hyperparams(hparams)


def _build(cfg: DictConfig, **kwargs: Any) -> Any:
    """``instantiate`` that surfaces a user error raised by a constructor as itself."""
    from hydra.errors import InstantiationException

    from bsrlc.errors import BsrlcError

    try:
        return instantiate(cfg, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, BsrlcError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def _key_paths(node: Any, name: str, prefix: str = "") -> list[str]:
    """Dotted paths of every key called ``name`` in a plain nested dict."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            path = f"{prefix}{k}"
            if k == name:
                out.append(path)
            out.extend(_key_paths(v, name, path + "."))
    return out


def size_model_from_data(cfg: DictConfig, datamodule: Any) -> None:
    """Set every ``in_bands`` of the model config to the number of bands the data has.

    A datamodule that knows its band count before setup exposes it as ``in_bands`` (and
    ``describe_bands()`` for messages); the model config's ``in_bands`` keys (the SR generator's
    and discriminator's) are filled in where null and checked where given, so a model never
    meets data of another band count deep inside training.

    Args:
        cfg: the run config (``cfg.model`` is changed in place).
        datamodule: the datamodule.

    Raises:
        ConfigError: one line naming the raster, its band count and the key, when a configured
            value disagrees with the data.
    """
    if not isinstance(getattr(type(datamodule), "in_bands", None), property):
        return
    n = int(datamodule.in_bands)
    tree = OmegaConf.to_container(cfg.model, resolve=False)
    for path in _key_paths(tree, "in_bands"):
        value = OmegaConf.select(cfg.model, path)
        if value is None:
            OmegaConf.update(cfg.model, path, n)
        elif int(value) != n:
            describe = getattr(datamodule, "describe_bands", None)
            source = describe() if callable(describe) else f"the data has {n} bands"
            raise ConfigError(
                f"model.{path}={value} does not match the data: {source}; set "
                f"model.{path}={n}, or null to take it from the data"
            )
    log.info("model input: %d bands (from the data)", n)


def steps_from_model(cfg: DictConfig, model: Any) -> None:
    """Set ``trainer.max_steps`` from a model whose phases define the run's length.

    A model with ``planned_steps()`` (the SR task: pretraining + adversarial batches) fixes the
    run's length and learning-rate schedule. ``trainer.max_steps`` unset (-1 or null) becomes
    that length; a smaller value stops the run early on the same schedule (a warning says so);
    a larger one is refused, since no schedule covers the extra steps.

    Args:
        cfg: the run config (``cfg.trainer.max_steps`` is changed in place).
        model: the LightningModule.

    Raises:
        ConfigError: if ``trainer.max_steps`` exceeds the planned steps.
    """
    planned = getattr(model, "planned_steps", None)
    if not callable(planned) or not cfg.get("train"):
        return
    total = int(planned())
    describe = getattr(model, "describe_steps", None)
    phases = describe() if callable(describe) else f"{total} steps"
    given = cfg.trainer.get("max_steps")
    if given is None or int(given) < 0:
        with open_dict(cfg.trainer):
            cfg.trainer.max_steps = total
        log.info("training %s", phases)
    elif int(given) > total:
        raise ConfigError(
            f"trainer.max_steps={given} is longer than the schedule ({phases}); lengthen a "
            "phase instead (the phases set the run's length), or drop trainer.max_steps"
        )
    elif int(given) < total:
        log.warning(
            "trainer.max_steps=%s stops the run before its schedule ends (%s); to shorten the "
            "schedule itself, shorten a phase",
            given,
            phases,
        )


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit and test the experiment described by ``cfg``.

    Args:
        cfg: the composed config (see ``conf/train.yaml``).

    Returns:
        All metrics the trainer collected (train/val after fitting, test after testing), as
        plain numbers; also written to ``<output_dir>/metrics.json``.
    """
    quiet_lightning()
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    log.info("datamodule <%s>", cfg.data._target_)
    datamodule: L.LightningDataModule = _build(cfg.data, _recursive_=False)
    size_model_from_data(cfg, datamodule)
    files = getattr(datamodule, "data_files", None)
    fingerprint = run_fingerprint(cfg, files() if callable(files) else None)
    ckpt_path, resume_state = None, None
    if cfg.get("train"):
        # ckpt_path=last: the newest run with this config and data; the run goes on in the
        # interrupted run's folder and logger versions
        ckpt_path, resume_state = resume_target(cfg, fingerprint)
        if ckpt_path and resume_state is not None:
            continue_in(cfg, ckpt_path, resume_state)
        if _is_rank_zero():
            write_fingerprint(cfg.paths.output_dir, fingerprint)
    log.info("model <%s>", cfg.model._target_)
    model: L.LightningModule = _build(cfg.model, _recursive_=False)
    steps_from_model(cfg, model)
    callbacks: list[Callback] = instantiate_list(cfg.get("callbacks"), "callbacks")
    resume_cb = ResumeState(fingerprint)
    callbacks.append(resume_cb)
    test_ckpt = None if cfg.get("train") else safe_ckpt_path(cfg.ckpt_path, cfg)
    if cfg.get("test") and not cfg.get("train") and test_ckpt is None:
        raise ConfigError(
            "train=false test=true needs ckpt_path=FILE (or ckpt_path=last): nothing to test"
        )
    _reuse_wandb_id(cfg, ckpt_path)
    loggers: list[Logger] = instantiate_list(cfg.get("logger"), "logger")
    if resume_state is not None and _is_rank_zero():
        restore_csv(loggers, resume_state)
    _remember_wandb_id(cfg, loggers)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    log_hyperparameters(cfg, model, datamodule, loggers)

    metrics: dict[str, Any] = {}
    t0 = time.perf_counter()
    if cfg.get("train"):
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        metrics.update(trainer.callback_metrics)
        # a run killed after its final checkpoint has nothing left to fit: its results are the
        # checkpoint's (only metrics this run did not log again)
        for key, value in resume_cb.restored_metrics.items():
            metrics.setdefault(key, value)
    fit_s = time.perf_counter() - t0
    if cfg.get("test"):
        ckpt_cb = trainer.checkpoint_callback
        best = getattr(ckpt_cb, "best_model_path", "") if ckpt_cb else ""
        if not cfg.get("train"):
            best = test_ckpt or ""
        elif best:
            best = check_checkpoint(best)
        _sync_csv_headers(loggers)
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        metrics.update(trainer.callback_metrics)
    plain = {k: v for k, v in ((k, _scalar(v)) for k, v in metrics.items()) if v is not None}
    plain["time/fit_s"] = round(fit_s, 2)
    if trainer.is_global_zero:
        out = Path(cfg.paths.output_dir) / "metrics.json"
        out.write_text(json.dumps(plain, indent=2, sort_keys=True))
        log.info("metrics -> %s", out)
        if cfg.get("export_bundle") and cfg.get("train"):
            export_final_bundle(trainer, cfg, loggers)
    for lg in loggers:
        lg.finalize("success")
    _finish_wandb()  # one W&B run per train(): a later call must not log into this one
    return plain


def export_final_bundle(trainer: L.Trainer, cfg: DictConfig, loggers: list[Logger]) -> Path:
    """Export the best (else the last) checkpoint as a bundle; log it to W&B as an artifact.

    Args:
        trainer: the trainer after fitting.
        cfg: the run's config.
        loggers: the run's loggers (a W&B one gets the bundle as a ``model`` artifact, uploaded
            now or by ``wandb sync`` for offline runs).

    Returns:
        The bundle folder, ``<output_dir>/bundle``.

    Raises:
        ConfigError: if the run saved no checkpoint to export.
    """
    from bsrlc.export import export_bundle

    ckpt_cb = trainer.checkpoint_callback
    ckpt = getattr(ckpt_cb, "best_model_path", "") or getattr(ckpt_cb, "last_model_path", "")
    if not ckpt:
        raise ConfigError("export_bundle=true but the run saved no checkpoint; enable callbacks")
    bundle = export_bundle(ckpt, Path(cfg.paths.output_dir) / "bundle")
    log.info("bundle of %s -> %s", Path(ckpt).name, bundle)
    for lg in loggers:
        if type(lg).__name__ == "WandbLogger":
            import wandb

            meta = json.loads((bundle / "metadata.json").read_text())
            artifact = wandb.Artifact(
                f"{cfg.task_name}-bundle",
                type="model",
                metadata={k: meta.get(k) for k in ("task", "bands", "content_hash", "version")},
            )
            artifact.add_dir(str(bundle))
            run: Any = getattr(lg, "experiment")  # noqa: B009  (Logger has no typed experiment)
            run.log_artifact(artifact, aliases=["latest", Path(ckpt).stem])
    return bundle


def _sync_csv_headers(loggers: list[Logger]) -> None:
    """Let a CSV logger append to a metrics file another process wrote.

    With spawn-based strategies (``trainer=ddp_sim``) fitting happens in child processes, so the
    main process's CSV logger has not seen the file's columns and would fail to extend them.
    """
    import csv

    for lg in loggers:
        if type(lg).__name__ != "CSVLogger":
            continue
        exp: Any = getattr(lg, "experiment")  # noqa: B009  (Logger has no typed experiment)
        if not isinstance(getattr(exp, "metrics_file_path", None), str):
            continue  # ranks other than 0 log nowhere (Lightning's dummy experiment)
        path = Path(exp.metrics_file_path)
        if path.exists() and not exp.metrics_keys:
            with open(path, newline="") as f:
                header = next(csv.reader(f), [])
            exp.metrics_keys = sorted(header)


def _reuse_wandb_id(cfg: DictConfig, ckpt_path: str | None) -> None:
    """Give the W&B logger a run id: the interrupted run's on resume, else a new one.

    The id is chosen here, before the run starts (``WandbLogger.version`` is unknown until the
    run exists), and kept in ``<output_dir>/wandb_id.txt`` by :func:`_remember_wandb_id`.
    """
    if not cfg.get("logger") or "wandb" not in cfg.logger or cfg.logger.wandb.get("id"):
        return
    from omegaconf import open_dict

    previous = ""
    if ckpt_path:
        id_file = Path(ckpt_path).parent.parent / "wandb_id.txt"
        previous = id_file.read_text().strip() if id_file.exists() else ""
    with open_dict(cfg):
        if previous and previous != "None":
            cfg.logger.wandb.id = previous
            cfg.logger.wandb.resume = "allow"
        else:  # W&B's own ids are 8 lower-case alphanumerics too
            import secrets

            cfg.logger.wandb.id = secrets.token_hex(4)


def _remember_wandb_id(cfg: DictConfig, loggers: list[Logger]) -> None:
    """Write the W&B run id next to the checkpoints (global rank 0 only)."""
    from lightning.pytorch.utilities import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) != 0:
        return
    for lg in loggers:
        if type(lg).__name__ == "WandbLogger" and cfg.logger.wandb.get("id"):
            Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)
            Path(cfg.paths.output_dir, "wandb_id.txt").write_text(str(cfg.logger.wandb.id))


def metric_value(metrics: dict[str, Any], name: str | None) -> float | None:
    """The value a sweeper optimises.

    Args:
        metrics: the metrics :func:`train` returned.
        name: the metric name (``optimized_metric`` in the config), or None.

    Returns:
        The value, or None when no metric is named.

    Raises:
        ConfigError: if the named metric was not logged.
    """
    if not name:
        return None
    if name not in metrics:
        raise ConfigError(
            f"optimized_metric={name} was not logged; choose one of {', '.join(sorted(metrics))}"
        )
    return float(metrics[name])


def run(cfg: DictConfig) -> float | None:
    """Train, and in a multirun sweep turn a crashed trial into a logged NaN result.

    One failed trial must not end a sweep: its exception is logged (and written to
    ``failed.txt`` in the trial folder), the loggers are closed, and NaN is returned so the
    sweeper records the trial as failed and goes on.

    Args:
        cfg: the composed config.

    Returns:
        The optimised metric (NaN for a failed trial), or None when no metric is named.
    """
    try:
        metrics = train(cfg)
    except Exception:
        multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
        if not multirun:
            raise
        log.exception("trial failed; the sweep goes on")
        Path(cfg.paths.output_dir, "failed.txt").write_text(traceback.format_exc())
        _finish_wandb()
        return math.nan
    finally:
        _finish_wandb()
    name = cfg.get("optimized_metric")
    if not cfg.get("train"):
        # a test-only run has no validation metric to optimise; its test metrics are in
        # metrics.json and the returned dict, so nothing is demanded of it
        if not name or name not in metrics:
            return None
    return metric_value(metrics, name)


def _finish_wandb() -> None:
    import sys

    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()
