"""The centre-patch classification LightningModule."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor, nn
from torchmetrics import MeanMetric

from bsrlc.config import plain
from bsrlc.errors import ConfigError
from bsrlc.evaluation.accuracy import classification_metric_collection, confusion_metric
from bsrlc.inference.checks import training_grid
from bsrlc.tasks.panels import log_image

log = logging.getLogger(__name__)


def fit_temperature(logits: Tensor, labels: Tensor, weights: Tensor | None = None) -> float:
    """The temperature that makes softmax(logits / T) calibrated (Guo et al. 2017).

    Minimises the (class-weighted, as in training) negative log-likelihood of held-out
    predictions over one scalar, so the arg max and the accuracy do not change; only the
    confidence does. Calibrated probabilities are what class-prior correction needs.

    Args:
        logits: (N, K) held-out logits.
        labels: (N,) their classes.
        weights: (K,) class weights of the loss (None: unweighted).

    Returns:
        T > 0 (1.0 when there is nothing to fit).
    """
    if logits.numel() == 0:
        return 1.0
    logits, labels = logits.double(), labels.long()
    w = None if weights is None else weights.double()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels, weight=w)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    t = float(log_t.detach().exp())
    return t if np.isfinite(t) else 1.0


class CentrePatchTask(L.LightningModule):
    """Train a centre-patch classifier on point-centred patches.

    Args:
        net: config of the network (``_target_``; ``in_channels`` and ``n_classes`` are set
            from the data when absent or null, checked against it when given). The network is
            built in Lightning's ``configure_model`` hook, or at once when both are given.
        optimizer: partial optimiser config (AdamW by default).
        scheduler: partial LR scheduler config (stepped per epoch) or None.
        label_smoothing: cross-entropy label smoothing.
        class_weighting: weight the loss by inverse class frequency (from the datamodule).
        class_names: class names for logs (taken from the datamodule's legend when absent).
        monitor: the metric checkpoints follow.
        monitor_mode: ``"max"`` or ``"min"``.
    """

    def __init__(
        self,
        net: dict[str, Any],
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        class_weighting: bool = True,
        class_names: list[str] | None = None,
        monitor: str = "val/macro_f1",
        monitor_mode: str = "max",
    ) -> None:
        super().__init__()
        net, optimizer, scheduler = plain(net), plain(optimizer), plain(scheduler)
        class_names = list(class_names) if class_names else None
        self.save_hyperparameters(logger=False)
        self.net: nn.Module | None = None
        self.bands: list[str] = []
        self.legend: dict[str, Any] | None = None
        # reflectance = stored value x input_scale + input_offset, of the (first) training
        # raster (from the datamodule; saved with the weights for prediction): numbers, or
        # lists with one per band when the raster's bands carry different scale/offset tags
        self.input_scale: float | list[float] = 1e-4
        self.input_offset: float | list[float] = 0.0
        # statistics and loss weights setup takes from the datamodule, loaded into the buffers
        # by configure_model (which builds them), before Lightning restores a checkpoint
        self._data_state: dict[str, Tensor] = {}
        if net.get("in_channels") and net.get("n_classes"):
            self.configure_model()  # sizes in the config: build now (checkpoints, direct use)

    # -- building ------------------------------------------------------------------------------

    def configure_model(self) -> None:
        """Lightning's hook: build the network, its buffers and the metrics, once.

        The sizes come from ``hparams.net`` (``in_channels``, ``n_classes``): given in the
        config, or set by :meth:`setup` from the datamodule (Lightning calls ``setup`` before
        this hook, and the hook before restoring a checkpoint). Idempotent, as Lightning asks:
        later calls build nothing and only load statistics a new ``setup`` took from the data.

        Raises:
            ConfigError: if the sizes are unknown (no config values and no datamodule).
        """
        if self.net is None:
            net = self.hparams.net
            if not (net.get("in_channels") and net.get("n_classes")):
                raise ConfigError(
                    "model.net.in_channels and model.net.n_classes are unknown: set them, or "
                    "train with a datamodule that gives them"
                )
            self._build(int(net["in_channels"]), int(net["n_classes"]))
        for name, value in self._data_state.items():
            getattr(self, name).copy_(value)
        self._data_state = {}

    def _build(self, in_channels: int, n_classes: int) -> None:
        """Build the network, its buffers and the metrics for a number of bands and classes."""
        self.net = instantiate(self.hparams.net)
        self.register_buffer("norm_mean", torch.zeros(in_channels))
        self.register_buffer("norm_std", torch.ones(in_channels))
        self.register_buffer("loss_weights", torch.ones(n_classes))
        # Calibration and the priors the loss trains under: stored with the weights so that
        # mapping can correct the probabilities to the landscape's priors.
        self.register_buffer("temperature", torch.ones(()))
        self.register_buffer("train_priors", torch.full((n_classes,), 1.0 / n_classes))
        self._val_logits: list[Tensor] = []
        self._val_labels: list[Tensor] = []
        self.n_classes = n_classes
        # the metrics of bsrlc.evaluation.accuracy, the same definitions as the reports'
        metrics = classification_metric_collection(n_classes)
        self.train_metrics = metrics.clone(prefix="train/")
        # The epoch's mean training loss as a metric of the module rather than Lightning's
        # on_epoch accumulator: its state goes into checkpoints (bsrlc.resume), so a run
        # resumed mid-epoch logs the same epoch mean as an uninterrupted one.
        self.train_loss = MeanMetric()
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.val_confusion = confusion_metric(n_classes)
        self.test_confusion = confusion_metric(n_classes)

    def _size_from_data(self, in_channels: int, n_classes: int, source: str) -> None:
        """Set the network's sizes in ``hparams.net`` (from ``source``), or check given ones."""
        net = self.hparams.net
        for key, value in (("in_channels", in_channels), ("n_classes", n_classes)):
            given = net.get(key)
            if given and int(given) != value:
                raise ConfigError(
                    f"model.net.{key}={given} does not match {source} ({key} {value}); set "
                    f"model.net.{key}={value}, or null to take it from the data"
                )
            net[key] = value

    def setup(self, stage: str) -> None:
        """Size the network from the datamodule and take its statistics and weights.

        The sizes go into ``hparams.net`` and the statistics wait for :meth:`configure_model`,
        which Lightning calls next.

        Args:
            stage: Lightning's stage.

        Raises:
            ConfigError: if configured network sizes disagree with the data.
        """
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None:
            return
        dm.setup(stage)
        source = f"the data: {len(dm.bands)} bands, {dm.num_classes} legend classes"
        self._size_from_data(len(dm.bands), dm.num_classes, source)
        self.bands = list(dm.bands)
        self.legend = dm.legend.to_config()
        scalings = getattr(dm, "input_scaling", None)
        if scalings:
            first = scalings[0]  # the first raster's, one per band
            if len(set(first)) == 1:
                self.input_scale, self.input_offset = first[0].scale, first[0].offset
            else:
                self.input_scale = [s.scale for s in first]
                self.input_offset = [s.offset for s in first]
        if stage == "fit":
            state = {
                "norm_mean": torch.tensor(dm.norm_stats["mean"]),
                "norm_std": torch.tensor(dm.norm_stats["std"]),
            }
            weighted = self.hparams.class_weighting and dm.balance == "weights"
            if weighted and dm.class_weights:
                state["loss_weights"] = torch.tensor(dm.class_weights)
            priors = getattr(dm, "train_priors", None)
            if priors is not None:
                if dm.balance == "weights" and not self.hparams.class_weighting:
                    counts = np.asarray(dm.class_weights, np.float64) ** -1.0
                    priors = (counts / counts.sum()).tolist()  # unweighted loss: the sample's
                state["train_priors"] = torch.tensor(priors, dtype=torch.float32)
            self._data_state = state

    def configure_optimizers(self) -> Any:
        """AdamW (or the configured optimiser) and an optional epoch-wise scheduler.

        Returns:
            Optimiser config for Lightning.
        """
        h = self.hparams
        if h.optimizer:
            opt = instantiate(h.optimizer)(self.parameters())
        else:
            opt = torch.optim.AdamW(self.parameters(), lr=1e-3, weight_decay=1e-2)
        if not h.scheduler:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": instantiate(h.scheduler)(opt)}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store what inference needs as plain values.

        Args:
            checkpoint: the checkpoint dict.
        """
        self.configure_model()  # a no-op in a Trainer; builds a task set up by hand
        checkpoint["bsrlc"] = {
            "task": "classify",
            "bands": self.bands,
            "mean": self.norm_mean.tolist(),
            "std": self.norm_std.tolist(),
            "legend": self.legend,
            "patch_size": int(getattr(self.net, "patch_size", 1)),
            "halo": int(getattr(self.net, "halo", 0)),
            "dense": bool(hasattr(self.net, "forward_dense")),
            "temperature": float(self.temperature),
            "train_priors": self.train_priors.tolist(),
            "input_scale": self.input_scale,
            "input_offset": self.input_offset,
            "grid": training_grid(self, "rasters"),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Rebuild the network before the weights are loaded.

        Args:
            checkpoint: the checkpoint dict.
        """
        meta = checkpoint.get("bsrlc", {})
        net = checkpoint.get("hyper_parameters", {}).get("net", {})
        if self.net is None and net.get("in_channels") and net.get("n_classes"):
            self._size_from_data(int(net["in_channels"]), int(net["n_classes"]), "the checkpoint")
            self.configure_model()
        self.bands = list(meta.get("bands", []))
        self.legend = meta.get("legend")
        self.input_scale = meta.get("input_scale") or 1e-4
        self.input_offset = meta.get("input_offset") or 0.0

    # -- steps ---------------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        """Logits of normalised patches.

        Args:
            x: (B, C, P, P).

        Returns:
            (B, K).
        """
        return self.net(x)

    def _step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        logits = self(batch["image"])
        y = batch["label"]
        loss = F.cross_entropy(
            logits,
            y,
            weight=self.loss_weights if self.hparams.class_weighting else None,
            label_smoothing=self.hparams.label_smoothing,
        )
        preds = logits.argmax(1)
        if stage == "val" and self._calibrating():
            self._val_logits.append(logits.detach().float().cpu())
            self._val_labels.append(y.detach().cpu())
        getattr(self, f"{stage}_metrics").update(preds, y)
        if stage != "train":
            getattr(self, f"{stage}_confusion").update(preds, y)
        if stage == "train":
            self.train_loss.update(loss.detach(), weight=y.numel())
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)
        else:
            self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def _calibrating(self) -> bool:
        """Whether this validation fits the temperature: in training (not its sanity check).

        A standalone ``trainer.validate`` leaves a trained model's temperature as it is (and
        runs in inference mode, where no temperature could be fitted).
        """
        if self._trainer is None:
            return False
        return self.trainer.state.fn == TrainerFn.FITTING and not self.trainer.sanity_checking

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """Cross-entropy on a batch.

        Args:
            batch: ``{"image", "label"}``.
            batch_idx: the index.

        Returns:
            The loss.
        """
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Validation metrics.

        Args:
            batch: ``{"image", "label"}``.
            batch_idx: the index.
        """
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Test metrics.

        Args:
            batch: ``{"image", "label"}``.
            batch_idx: the index.
        """
        self._step(batch, "test")

    def _names(self) -> list[str]:
        if self.hparams.class_names:
            return list(self.hparams.class_names)
        if self.legend:
            return [c["name"] for c in self.legend["classes"]]
        return [str(i) for i in range(self.n_classes)]

    def _epoch_end(self, stage: str) -> None:
        metrics = getattr(self, f"{stage}_metrics")
        values = metrics.compute()
        metrics.reset()
        names = self._names()
        flat: dict[str, Tensor] = {}
        for key, value in values.items():
            if value.ndim == 0:
                flat[key] = value
            else:
                for i, v in enumerate(value):
                    flat[f"{key}_{names[i].replace(' ', '_')}"] = v
        if stage == "train":
            flat["train/loss_epoch"] = self.train_loss.compute()
            self.train_loss.reset()
        self.log_dict(flat, sync_dist=True)
        if stage == "train":
            return
        confusion = getattr(self, f"{stage}_confusion")
        cm = confusion.compute().cpu().numpy()
        confusion.reset()
        if self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        self._log_confusion(stage, cm, names)

    def _log_confusion(self, stage: str, cm: np.ndarray, names: list[str]) -> None:
        """Confusion matrix as a figure (every logger, PNG) and a table (W&B, CSV)."""
        from pathlib import Path

        from bsrlc.evaluation.figures import confusion_figure

        image = confusion_figure(cm, names, f"{stage} confusion (rows: reference)")
        log_image(self, f"{stage}/confusion_matrix", image, "rows: reference, columns: predicted")
        out = Path(self.trainer.default_root_dir) / f"{stage}_confusion.csv"
        header = "reference\\predicted," + ",".join(names)
        rows = [f"{n}," + ",".join(str(int(v)) for v in r) for n, r in zip(names, cm, strict=True)]
        out.write_text("\n".join([header, *rows]) + "\n")
        for lg in self.trainer.loggers:
            if type(lg).__name__ == "WandbLogger":
                lg.log_table(
                    key=f"{stage}/confusion_table",
                    columns=["reference", *names],
                    data=[[n, *map(int, r)] for n, r in zip(names, cm, strict=True)],
                )

    def on_train_epoch_end(self) -> None:
        """Log training metrics."""
        self._epoch_end("train")

    def on_validation_epoch_end(self) -> None:
        """Log validation metrics and the confusion matrix; in training, fit the temperature."""
        self._epoch_end("val")
        if self._val_logits:
            logits = torch.cat(self._val_logits)
            labels = torch.cat(self._val_labels)
            self._val_logits, self._val_labels = [], []
            if self.trainer.world_size > 1:  # every rank fits on all validation points
                logits, labels = self._gather_rows(logits), self._gather_rows(labels)
            weights = self.loss_weights.cpu() if self.hparams.class_weighting else None
            t = fit_temperature(logits, labels, weights)
            self.temperature.fill_(t)
            self.log("val/temperature", t, sync_dist=False)

    def _gather_rows(self, x: Tensor) -> Tensor:
        """All ranks' rows of ``x`` (ranks may hold different counts: padded, gathered, cut).

        Args:
            x: (n, ...) this rank's rows.

        Returns:
            (sum of n over ranks, ...) on the CPU, rank 0's rows first.
        """
        counts = self.all_gather(torch.tensor([x.shape[0]], device=x.device)).flatten()
        pad = x.new_zeros((int(counts.max()) - x.shape[0], *x.shape[1:]))
        rows = self.all_gather(torch.cat([x, pad]))  # (world, max n, ...)
        return torch.cat([rows[i, : int(n)] for i, n in enumerate(counts)]).cpu()

    def on_test_epoch_end(self) -> None:
        """Log test metrics and the confusion matrix."""
        self._epoch_end("test")
