"""The SRGAN LightningModule: L1 pretraining, then a ramped adversarial phase, with an EMA.

Two optimisers are stepped by hand (manual optimisation). Lightning counts every
``LightningOptimizer.step()`` as a global step, so a GAN batch would count twice and
``max_steps`` would stop training halfway. Here the generator step is the counted one and the
discriminator is stepped through the strategy directly (precision plugin included, progress
counter not), so ``global_step``, ``max_steps`` and ``log_every_n_steps`` always mean batches.

The run's length is its phases': ``pretrain_steps`` batches of content losses, then
``adversarial_steps`` batches with the discriminator. The learning rates follow
:class:`PhaseSchedule`, a shape per phase (``lr_schedule``), so a phase can be lengthened or
shortened without touching the other's schedule; ``trainer.max_steps`` is derived from the
phases (:meth:`SRGANTask.planned_steps`, applied by :func:`bsrlc.training.train`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from bsrlc import losses
from bsrlc.config import plain
from bsrlc.errors import ConfigError
from bsrlc.evaluation.sr_metrics import (
    SRMetrics,
    SRQuality,
    apply_band_gains,
    bicubic_upsample,
    fit_band_gains,
    nested_border,
)
from bsrlc.inference.checks import training_grid
from bsrlc.tasks.panels import log_image

log = logging.getLogger(__name__)

PHASE_KEYS = {"shape": "constant", "start": 1.0, "end": 1.0, "warmup": 0}
"""The keys of one phase in ``lr_schedule`` and their defaults."""

SHAPES = ("constant", "linear", "cosine")

KINDS = ("model", "bicubic", "bicubic_harmonised")
"""What validation and testing score: the (EMA) generator and the two baselines."""

MIN_QUALITY_SIZE = 12
"""The smallest patch interior (HR pixels) the quality metrics are computed on."""

PRETRAIN_CHECKPOINT = "pretrain_end.ckpt"
"""The checkpoint of the model at the end of the pretraining phase (runs with a GAN phase)."""


def phase_spec(name: str, spec: dict[str, Any] | None, steps: int) -> dict[str, Any]:
    """One phase of ``model.lr_schedule``, completed with defaults and checked.

    Args:
        name: the phase (``pretrain``, ``adversarial``, ``discriminator``), for messages.
        spec: its config (missing keys take :data:`PHASE_KEYS`' defaults).
        steps: the phase's length in batches.

    Returns:
        ``{"steps", "shape", "start", "end", "warmup"}``.

    Raises:
        ConfigError: for an unknown key or shape, a negative factor or a warmup longer than
            the phase.
    """
    spec = dict(spec or {})
    unknown = sorted(set(spec) - set(PHASE_KEYS))
    key = f"model.lr_schedule.{name}"
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: unknown key; use {', '.join(PHASE_KEYS)}")
    out = {**PHASE_KEYS, **spec, "steps": int(steps)}
    if out["shape"] not in SHAPES:
        raise ConfigError(f"{key}.shape={out['shape']}: use {', '.join(SHAPES)}")
    for name_, kind in (("start", float), ("end", float), ("warmup", int)):
        out[name_] = kind(out[name_])
    if out["start"] < 0 or out["end"] < 0:
        raise ConfigError(f"{key}: start and end are factors of the optimiser's lr, >= 0")
    if out["warmup"] < 0 or (out["steps"] and out["warmup"] >= out["steps"]):
        raise ConfigError(
            f"{key}.warmup={out['warmup']}: give 0 up to the phase's length ({out['steps']} "
            "steps) minus one"
        )
    return out


class PhaseSchedule:
    """Learning-rate factor per step over consecutive phases (for ``LambdaLR``).

    Within a phase of ``steps`` batches, the factor rises linearly over the first ``warmup``
    batches (``start x (t + 1) / (warmup + 1)`` at batch t), then goes from ``start`` (the first
    batch after the warmup) to ``end`` (the phase's last batch) as a half cosine, a line, or
    stays at ``start`` (``constant``). The next phase starts at its own ``start``. After the
    last phase the factor stays at its ``end``.

    Args:
        phases: the phases in order, as returned by :func:`phase_spec`.
    """

    def __init__(self, phases: list[dict[str, Any]]) -> None:
        self.phases = [dict(p) for p in phases if int(p["steps"]) > 0]

    def __call__(self, step: int) -> float:
        """The factor at a 0-based step."""
        if not self.phases:
            return 1.0
        for phase in self.phases:
            if step < phase["steps"]:
                return _phase_factor(phase, step)
            step -= phase["steps"]
        last = self.phases[-1]
        return _phase_factor(last, last["steps"] - 1)


def _phase_factor(phase: dict[str, Any], t: int) -> float:
    """The factor at batch ``t`` of a phase (see :class:`PhaseSchedule`)."""
    start, end, warmup = phase["start"], phase["end"], phase["warmup"]
    if t < warmup:
        return start * (t + 1) / (warmup + 1)
    if phase["shape"] == "constant":
        return start
    span = phase["steps"] - warmup - 1
    u = min(1.0, (t - warmup) / span) if span > 0 else 0.0
    if phase["shape"] == "linear":
        return start + (end - start) * u
    return end + (start - end) * (1 + math.cos(math.pi * u)) / 2


class SRGANTask(L.LightningModule):
    """Train a super-resolution generator (optionally adversarially) on LR/HR patch pairs.

    Args:
        generator: config of the generator (``_target_`` and its arguments).
        discriminator: config of the discriminator; None trains the generator alone (L1 etc.).
        optimizer_g: partial optimiser config for the generator.
        optimizer_d: partial optimiser config for the discriminator.
        scheduler_g: a partial LR scheduler config for the generator (stepped per batch) that
            replaces its phase schedule; None follows ``lr_schedule``.
        scheduler_d: the same for the discriminator (stepped per adversarial batch).
        scale: the resolution ratio.
        pretrain_steps: generator-only (content loss) batches before the adversarial phase.
        adv_ramp_steps: batches over which the adversarial weights rise linearly to full.
        adversarial_steps: batches of the adversarial phase (content losses alone when there is
            no discriminator).
        lr_schedule: learning-rate factors of the phases ``pretrain`` and ``adversarial``
            (generator) and ``discriminator`` (its steps in the adversarial phase), each
            ``{shape: constant|linear|cosine, start, end, warmup}`` (:class:`PhaseSchedule`).
        content_loss: ``l1``, ``mse``, ``charbonnier`` or ``shift_l1``
            (:func:`bsrlc.losses.content_loss`).
        charbonnier_eps: Charbonnier's smoothing, normalised units.
        max_shift: ``content_loss=shift_l1``'s largest shift, HR pixels (misregistered pairs).
        w_l1: content loss weight (L1 unless ``content_loss`` says otherwise).
        w_sam: spectral angle loss weight.
        w_adv: adversarial loss weight (full strength).
        w_fm: discriminator feature-matching loss weight (full strength).
        w_lr: LR-consistency loss weight.
        adversarial: ``"bce"`` (with one-sided label smoothing) or ``"hinge"``.
        label_smoothing: real-label smoothing for BCE (target 1 - smoothing).
        ema_decay: decay of the generator's exponential moving average (0 disables it).
        panel_every_n_epochs: log an image panel every N validation epochs (0 = never).
        rgb: names of the red, green and blue bands for panels (the first three bands if absent).
        data_range: reflectance range for PSNR/SSIM.
        monitor: the metric checkpoints follow.
        monitor_mode: ``"max"`` or ``"min"``.
    """

    def __init__(
        self,
        generator: dict[str, Any],
        discriminator: dict[str, Any] | None = None,
        optimizer_g: dict[str, Any] | None = None,
        optimizer_d: dict[str, Any] | None = None,
        scheduler_g: dict[str, Any] | None = None,
        scheduler_d: dict[str, Any] | None = None,
        scale: int = 3,
        pretrain_steps: int = 1000,
        adv_ramp_steps: int = 500,
        w_l1: float = 1.0,
        w_sam: float = 0.1,
        w_adv: float = 5e-3,
        w_fm: float = 0.0,
        w_lr: float = 0.1,
        adversarial: str = "bce",
        label_smoothing: float = 0.1,
        ema_decay: float = 0.999,
        panel_every_n_epochs: int = 5,
        rgb: tuple[str, str, str] = ("RED_P50", "GRN_P50", "BLU_P50"),
        data_range: float = 0.5,
        monitor: str = "val/psnr",
        monitor_mode: str = "max",
        adversarial_steps: int = 0,
        lr_schedule: dict[str, Any] | None = None,
        content_loss: str = "l1",
        charbonnier_eps: float = 1e-3,
        max_shift: int = 1,
    ) -> None:
        super().__init__()
        if adversarial not in {"bce", "hinge"}:
            raise ConfigError(f"model.adversarial={adversarial}: use bce or hinge")
        if content_loss not in losses.CONTENT_LOSSES:
            raise ConfigError(
                f"model.content_loss={content_loss}: use {', '.join(losses.CONTENT_LOSSES)}"
            )
        # Plain containers only, so checkpoints load with torch.load(weights_only=True).
        generator, discriminator = plain(generator), plain(discriminator)
        optimizer_g, optimizer_d = plain(optimizer_g), plain(optimizer_d)
        scheduler_g, scheduler_d = plain(scheduler_g), plain(scheduler_d)
        lr_schedule = plain(lr_schedule) or {}
        rgb = tuple(rgb)
        for role, conf in (("generator", generator), ("discriminator", discriminator)):
            if conf and "in_bands" in conf and conf["in_bands"] is None:
                raise ConfigError(
                    f"model.{role}.in_bands is null and no data sized it: train with train.py "
                    "(it takes the number of bands from the data) or give the number"
                )
        _check_phases(pretrain_steps, adversarial_steps, adv_ramp_steps, discriminator)
        unknown = sorted(set(lr_schedule) - {"pretrain", "adversarial", "discriminator"})
        if unknown:
            raise ConfigError(
                f"model.lr_schedule.{unknown[0]}: no such phase; use pretrain, adversarial, "
                "discriminator"
            )
        self.save_hyperparameters(logger=False)
        self.lr_factors()  # a wrong lr_schedule is refused now, not when fitting starts
        self.automatic_optimization = False
        self.generator: nn.Module = instantiate(generator)
        self.discriminator: nn.Module | None = instantiate(discriminator) if discriminator else None
        self.generator_ema: AveragedModel | None = None
        if ema_decay > 0:
            self.generator_ema = AveragedModel(
                self.generator, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True
            )
        bands = int(generator.get("in_bands", 6))
        # Filled from the datamodule's training statistics and saved with the weights.
        self.register_buffer("norm_mean", torch.zeros(bands))
        self.register_buffer("norm_std", torch.ones(bands))
        # Per-band gain/offset of the harmonised bicubic baseline, fitted on training patches.
        self.register_buffer("harm_gain", torch.ones(bands))
        self.register_buffer("harm_offset", torch.zeros(bands))
        self.register_buffer("harm_fitted", torch.zeros((), dtype=torch.bool))
        self.bands: list[str] = []
        # reflectance = stored value x input_scale + input_offset, of the LR raster (from the
        # datamodule; saved with the weights for prediction)
        self.input_scale, self.input_offset = 1e-4, 0.0
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_{kind}": SRMetrics(data_range=data_range)
                for stage in ("val", "test")
                for kind in KINDS
            }
        )
        # SRQuality per stage and kind, made at the first evaluation batch (the border depends
        # on the patch size); the baselines' values are kept: they are the same every epoch.
        self.quality = nn.ModuleDict()
        self._baseline_quality: dict[str, dict[str, Tensor]] = {}

    # -- setup ---------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        """Take the band names and normalisation statistics from the datamodule.

        Args:
            stage: Lightning's stage.
        """
        dm = getattr(self.trainer, "datamodule", None) if self._trainer else None
        stats = getattr(dm, "norm_stats", None)
        if stats and stage == "fit":
            self.norm_mean.copy_(torch.tensor(stats["mean"]))
            self.norm_std.copy_(torch.tensor(stats["std"]))
        if dm is not None and getattr(dm, "bands", None):
            self.bands = list(dm.bands)
        scaling = getattr(dm, "input_scaling", None) if dm is not None else None
        if scaling:
            self.input_scale = float(scaling["lr"].scale)
            self.input_offset = float(scaling["lr"].offset)

    def planned_steps(self) -> int:
        """The batches the phases span: ``pretrain_steps + adversarial_steps``.

        :func:`bsrlc.training.train` sets ``trainer.max_steps`` from it.

        Returns:
            The number of training batches.
        """
        return int(self.hparams.pretrain_steps) + int(self.hparams.adversarial_steps)

    def describe_steps(self) -> str:
        """The phases in words, for messages: ``"model.pretrain_steps=1400 + ..."``."""
        h = self.hparams
        return (
            f"model.pretrain_steps={h.pretrain_steps} + model.adversarial_steps="
            f"{h.adversarial_steps} = {self.planned_steps()} steps"
        )

    def lr_factors(self) -> tuple[PhaseSchedule, PhaseSchedule]:
        """The learning-rate factors of the generator (per batch) and discriminator (per step).

        Returns:
            (generator schedule, discriminator schedule).
        """
        h = self.hparams
        sched = h.lr_schedule or {}
        g = PhaseSchedule(
            [
                phase_spec("pretrain", sched.get("pretrain"), h.pretrain_steps),
                phase_spec("adversarial", sched.get("adversarial"), h.adversarial_steps),
            ]
        )
        d = PhaseSchedule(
            [phase_spec("discriminator", sched.get("discriminator"), h.adversarial_steps)]
        )
        return g, d

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store what inference needs as plain values next to the weights.

        Args:
            checkpoint: the checkpoint dict.
        """
        checkpoint["bsrlc"] = {
            "task": "sr",
            "bands": self.bands,
            "scale": self.hparams.scale,
            "mean": self.norm_mean.tolist(),
            "std": self.norm_std.tolist(),
            "receptive_field": int(getattr(self.generator, "receptive_field", 0)),
            "input_scale": self.input_scale,
            "input_offset": self.input_offset,
            "grid": training_grid(self, "lr_path"),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the band names and the input scaling.

        Args:
            checkpoint: the checkpoint dict.
        """
        meta = checkpoint.get("bsrlc", {})
        self.bands = list(meta.get("bands", []))
        self.input_scale = float(meta.get("input_scale") or 1e-4)
        self.input_offset = float(meta.get("input_offset") or 0.0)

    def configure_optimizers(self) -> Any:
        """Adam-style optimisers for G and D, each with its per-batch phase schedule.

        The generator's scheduler is stepped every batch, the discriminator's every
        adversarial batch, so their step counts (saved in checkpoints) are the positions in
        their schedules. The factors are wrapped in plain functions, which ``LambdaLR`` leaves
        out of its state: a checkpoint resumed under changed phases follows the new ones.

        Returns:
            Optimisers and schedulers for Lightning.
        """
        h = self.hparams
        factor_g, factor_d = self.lr_factors()
        opt_g = _build(h.optimizer_g, torch.optim.Adam, self.generator.parameters(), lr=1e-4)
        opts = [opt_g]
        sched_g = (
            instantiate(h.scheduler_g)(opt_g)
            if h.scheduler_g
            else torch.optim.lr_scheduler.LambdaLR(opt_g, lambda step: factor_g(step))
        )
        scheds = [{"scheduler": sched_g, "interval": "step"}]
        if self.discriminator is not None:
            opt_d = _build(
                h.optimizer_d, torch.optim.Adam, self.discriminator.parameters(), lr=1e-4
            )
            opts.append(opt_d)
            sched_d = (
                instantiate(h.scheduler_d)(opt_d)
                if h.scheduler_d
                else torch.optim.lr_scheduler.LambdaLR(opt_d, lambda step: factor_d(step))
            )
            scheds.append({"scheduler": sched_d, "interval": "step"})
        return opts, scheds

    def on_fit_start(self) -> None:
        """Refuse fp16 loss scaling for the uncounted D step; fit the harmonised baseline."""
        if self.discriminator is not None and "16-mixed" == str(self.trainer.precision):
            raise ConfigError(
                "trainer.precision=16-mixed: the GAN's discriminator step bypasses the loss "
                "scaler; use bf16-mixed or 32-true"
            )
        self._fit_harmonisation()

    @torch.no_grad()
    def _fit_harmonisation(self, max_batches: int = 20) -> None:
        """Per-band least squares HR ~ gain * bicubic(LR) + offset over training patches."""
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or self.harm_fitted.item():
            return
        xs, ys = [], []
        for i, batch in enumerate(dm.train_dataloader()):
            if i >= max_batches:
                break
            lr, hr = self._denorm(batch["lr"].to(self.device)), batch["hr"].to(self.device)
            xs.append(bicubic_upsample(lr, self.hparams.scale))
            ys.append(self._denorm(hr))
        if not xs:
            return
        gain, offset = fit_band_gains(torch.cat(xs), torch.cat(ys))
        self.harm_gain.copy_(gain)
        self.harm_offset.copy_(offset)
        self.harm_fitted.fill_(True)

    # -- helpers -------------------------------------------------------------------------------

    def _denorm(self, x: Tensor) -> Tensor:
        return x * self.norm_std[None, :, None, None] + self.norm_mean[None, :, None, None]

    def adversarial_weight(self) -> float:
        """The adversarial phase's ramp: 0 while pretraining, then linear to 1.

        Returns:
            A factor in [0, 1] for the adversarial and feature-matching weights.
        """
        h = self.hparams
        if self.discriminator is None:
            return 0.0
        step = self.global_step - h.pretrain_steps
        if step < 0:
            return 0.0
        return min(1.0, (step + 1) / max(h.adv_ramp_steps, 1))

    def forward(self, lr: Tensor) -> Tensor:
        """Super-resolve normalised LR patches with the EMA generator when there is one.

        Args:
            lr: (B, C, h, w) normalised.

        Returns:
            (B, C, s*h, s*w) normalised.
        """
        net = self.generator_ema.module if self.generator_ema is not None else self.generator
        return net(lr)

    # -- training ------------------------------------------------------------------------------

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """One generator step, and a discriminator step in the adversarial phase.

        Args:
            batch: ``{"lr": (B, C, n, n), "hr": (B, C, 3n, 3n)}`` normalised.
            batch_idx: the batch index.
        """
        h = self.hparams
        optimisers = self.optimizers()
        opts = optimisers if isinstance(optimisers, list) else [optimisers]
        opt_g = opts[0]
        lr, hr = batch["lr"], batch["hr"]
        ramp = self.adversarial_weight()

        # Generator.
        sr = self.generator(lr)
        kind = h.get("content_loss", "l1")
        loss_content = losses.content_loss(
            sr, hr, kind, h.get("charbonnier_eps", 1e-3), max_shift=h.get("max_shift", 1)
        )
        loss_sam = losses.spectral_angle_loss(self._denorm(sr), self._denorm(hr))
        loss_lr = losses.lr_consistency_loss(sr, lr, h.scale)
        loss_g = h.w_l1 * loss_content + h.w_sam * loss_sam + h.w_lr * loss_lr
        logs = {"train/sam": loss_sam, "train/lr_consistency": loss_lr}
        logs["train/l1"] = loss_content if kind == "l1" else F.l1_loss(sr.detach(), hr)
        if kind != "l1":
            logs[f"train/{kind}"] = loss_content
        if ramp > 0 and self.discriminator is not None:
            fake_logits, fake_feats = self.discriminator(sr, return_features=True)
            with torch.no_grad():
                _, real_feats = self.discriminator(hr, return_features=True)
            if h.adversarial == "bce":
                loss_adv = losses.bce_generator_loss(fake_logits)
            else:
                loss_adv = losses.hinge_generator_loss(fake_logits)
            loss_fm = losses.feature_matching_loss(fake_feats, real_feats)
            loss_g = loss_g + ramp * (h.w_adv * loss_adv + h.w_fm * loss_fm)
            logs.update({"train/adv_g": loss_adv, "train/feature_matching": loss_fm})
        opt_g.zero_grad()
        self.manual_backward(loss_g)
        opt_g.step()  # the counted step: global_step = batches
        logs["train/loss_g"] = loss_g
        logs["train/adv_weight"] = torch.tensor(ramp)

        # Discriminator.
        if ramp > 0 and self.discriminator is not None:
            opt_d = opts[1]
            real_logits = self.discriminator(hr)
            fake_logits = self.discriminator(sr.detach())
            if h.adversarial == "bce":
                loss_d = losses.bce_discriminator_loss(real_logits, fake_logits, h.label_smoothing)
            else:
                loss_d = losses.hinge_discriminator_loss(real_logits, fake_logits)
            opt_d.zero_grad()
            self.manual_backward(loss_d)
            # Not counted: step through the strategy (precision plugin, DDP) directly.
            self.trainer.strategy.optimizer_step(opt_d.optimizer, closure=lambda: None)
            logs["train/loss_d"] = loss_d
            logs["train/d_real"] = torch.sigmoid(real_logits).mean()
            logs["train/d_fake"] = torch.sigmoid(fake_logits).mean()

        for sched in self._schedulers(adversarial=ramp > 0):
            sched.step()
        if self.generator_ema is not None:
            self.generator_ema.update_parameters(self.generator)
        self.log_dict(logs, prog_bar=False, on_step=True, on_epoch=False)
        self.log("train/loss", loss_g, prog_bar=True, on_step=True, on_epoch=False)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Keep the model of the phase boundary: ``checkpoints/pretrain_end.ckpt``.

        Written after the last pretraining batch when an adversarial phase follows, so the
        content-loss model and the adversarial one can be compared (the demo's SR table).

        Args:
            outputs: the step's output (unused).
            batch: the batch (unused).
            batch_idx: its index (unused).
        """
        h = self.hparams
        if (
            self.discriminator is None
            or not h.adversarial_steps
            or self.global_step != h.pretrain_steps
            or self.trainer.sanity_checking
        ):
            return
        path = self.phase_checkpoint_path()
        if path is not None:
            tmp = path.with_name(path.name + ".partial")
            self.trainer.save_checkpoint(tmp)
            if self.trainer.is_global_zero and tmp.exists():
                tmp.replace(path)

    def phase_checkpoint_path(self) -> Path | None:
        """Where :meth:`on_train_batch_end` keeps the pretraining phase's model (or None).

        Returns:
            ``<checkpoint folder>/pretrain_end.ckpt``; None without a trainer or folder.
        """
        if self._trainer is None:
            return None
        cb = self.trainer.checkpoint_callback
        folder = getattr(cb, "dirpath", None) if cb is not None else None
        if not folder:
            root = self.trainer.default_root_dir
            folder = Path(root) / "checkpoints" if root else None
        if folder is None:
            return None
        Path(folder).mkdir(parents=True, exist_ok=True)
        return Path(folder) / PRETRAIN_CHECKPOINT

    def _schedulers(self, adversarial: bool) -> list[Any]:
        """The schedulers to step after this batch: the discriminator's only if it stepped.

        Decided by the batch's own phase: ``global_step`` has already moved on to the next
        batch here, which is the first adversarial one after the last pretraining batch.
        """
        s = self.lr_schedulers()
        if s is None:
            return []
        scheds = s if isinstance(s, list) else [s]
        if not adversarial and len(scheds) > 1:
            return scheds[:1]
        return scheds

    # -- evaluation ----------------------------------------------------------------------------

    def _evaluate(self, batch: dict[str, Tensor], stage: str, batch_idx: int) -> None:
        lr, hr = batch["lr"], batch["hr"]
        sr = self(lr)
        s = self.hparams.scale
        lr_r, hr_r, sr_r = self._denorm(lr), self._denorm(hr), self._denorm(sr)
        bicubic = bicubic_upsample(lr_r, s)
        harmonised = apply_band_gains(bicubic, self.harm_gain, self.harm_offset)
        estimates = {"model": sr_r, "bicubic": bicubic, "bicubic_harmonised": harmonised}
        for kind, estimate in estimates.items():
            self.metrics[f"{stage}_{kind}"].update(estimate, hr_r)
            if kind == "model" or stage not in self._baseline_quality:
                self._quality(stage, kind, hr_r.shape[-1]).update(estimate, lr_r, hr_r)
        self.log(f"{stage}/l1", F.l1_loss(sr, hr), on_epoch=True, on_step=False)
        every = self.hparams.panel_every_n_epochs
        if (
            stage == "val"
            and batch_idx == 0
            and every
            and self.current_epoch % every == 0
            and not self.trainer.sanity_checking
        ):
            self._log_panel(lr_r, bicubic, sr_r, hr_r)

    def _quality(self, stage: str, kind: str, size: int) -> SRQuality:
        """The stage's :class:`SRQuality` of one kind, made for patches of ``size`` HR pixels.

        Its border is opensr-test's (15 HR pixels at x3), less whole LR pixels where a patch
        would keep fewer than :data:`MIN_QUALITY_SIZE` pixels inside it.
        """
        key = f"{stage}_{kind}"
        if key not in self.quality:
            s = self.hparams.scale
            border = nested_border(s)
            while border > 0 and size - 2 * border < MIN_QUALITY_SIZE:
                border -= s
            self.quality[key] = SRQuality(s, self.hparams.data_range, border=border).to(self.device)
        return self.quality[key]

    def _log_panel(self, lr: Tensor, bicubic: Tensor, sr: Tensor, hr: Tensor) -> None:
        s = self.hparams.scale
        names = list(self.hparams.rgb)
        rgb = [self.bands.index(n) for n in names] if set(names) <= set(self.bands) else [0, 1, 2]
        nearest = F.interpolate(lr, scale_factor=s, mode="nearest")
        rows = []
        for i in range(min(4, lr.shape[0])):
            tiles = [t[i, rgb] for t in (nearest, bicubic, sr, hr)]
            rows.append(torch.cat(tiles, dim=2))
        panel = torch.cat(rows, dim=1)
        panel = (panel / 0.3).clamp(0, 1)  # true colour, 0-30 % reflectance
        log_image(self, "val/panel", panel, "LR (nearest) | bicubic | SR | HR")

    def _epoch_end(self, stage: str) -> None:
        results = {}
        quality = self._quality_results(stage)
        for kind in KINDS:
            metric = self.metrics[f"{stage}_{kind}"]
            if not metric.has_data():
                return
            values = {**metric.compute(), **quality.get(kind, {})}
            metric.reset()
            results[kind] = values
            prefix = f"{stage}/" if kind == "model" else f"{stage}/{kind}_"
            self.log_dict({f"{prefix}{k}": v for k, v in values.items()}, sync_dist=True)
        for base in ("bicubic", "bicubic_harmonised"):
            m, b = results["model"], results[base]
            self.log_dict(
                {
                    f"{stage}/psnr_gain_{base}": m["psnr"] - b["psnr"],
                    f"{stage}/ssim_gain_{base}": m["ssim"] - b["ssim"],
                    f"{stage}/sam_gain_{base}": b["sam"] - m["sam"],
                    f"{stage}/ergas_gain_{base}": b["ergas"] - m["ergas"],
                },
                sync_dist=True,
            )

    def _quality_results(self, stage: str) -> dict[str, dict[str, Tensor]]:
        """The epoch's quality metrics per kind; in validation, the baselines' once per run.

        The baselines are the same in every validation epoch (the bicubic of fixed patches, and
        gains fitted before the first one), so their values from the first validation after
        the sanity check are kept and logged again; :meth:`_evaluate` stops updating them.
        """
        out = {}
        for kind in KINDS:
            key = f"{stage}_{kind}"
            if kind != "model" and stage in self._baseline_quality:
                out[kind] = self._baseline_quality[stage][kind]
                continue
            metric = self.quality[key] if key in self.quality else None
            if metric is None or not metric.has_data():
                continue
            out[kind] = {k: v.to(self.device) for k, v in metric.compute().items()}
            metric.reset()
        sanity = self._trainer is not None and self.trainer.sanity_checking
        if stage == "val" and not sanity and all(k in out for k in KINDS[1:]):
            self._baseline_quality[stage] = {k: out[k] for k in KINDS[1:]}
        return out

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Metrics of the (EMA) generator and both baselines on validation patches.

        Args:
            batch: LR/HR patches.
            batch_idx: the batch index.
        """
        self._evaluate(batch, "val", batch_idx)

    def on_validation_epoch_end(self) -> None:
        """Log the validation metrics and the gains over the baselines."""
        self._epoch_end("val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Metrics on the test region's patches.

        Args:
            batch: LR/HR patches.
            batch_idx: the batch index.
        """
        self._evaluate(batch, "test", batch_idx)

    def on_test_epoch_end(self) -> None:
        """Log the test metrics and the gains over the baselines."""
        self._epoch_end("test")

    def export_generator(self) -> nn.Module:
        """The generator inference should use (the EMA copy when there is one).

        Returns:
            An nn.Module in eval mode.
        """
        net = self.generator_ema.module if self.generator_ema is not None else self.generator
        return net.eval()


def _check_phases(
    pretrain_steps: int, adversarial_steps: int, ramp_steps: int, discriminator: Any
) -> None:
    """Refuse phase lengths that cannot describe a run."""
    if pretrain_steps < 0 or adversarial_steps < 0 or pretrain_steps + adversarial_steps == 0:
        raise ConfigError(
            f"model.pretrain_steps={pretrain_steps}, model.adversarial_steps={adversarial_steps}:"
            " the phases' lengths are batches, >= 0, and the run needs at least one"
        )
    if discriminator and 0 < adversarial_steps < ramp_steps:
        raise ConfigError(
            f"model.adv_ramp_steps={ramp_steps} is longer than model.adversarial_steps="
            f"{adversarial_steps}: the adversarial weight would never reach full strength; "
            "shorten the ramp or lengthen the phase"
        )


def _build(cfg: Any, default: type, params: Any, **defaults: Any) -> torch.optim.Optimizer:
    if cfg:
        return instantiate(cfg)(params)
    return default(params, **defaults)
