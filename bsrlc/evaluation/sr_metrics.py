"""Super-resolution metrics on reflectance: PSNR, SSIM, SAM, ERGAS, and their baselines.

Everything here takes **reflectance** (e.g. 0.0-0.6 for land surfaces, not normalised units):
PSNR and SSIM need a ``data_range`` in those units (1.0 for the full reflectance scale, or the
data's actual range, e.g. 0.5), SAM is only meaningful on un-centred spectra, and ERGAS divides by
the band means.

* ``psnr``: dB, from the MSE over every pixel and band added (torchmetrics).
* ``ssim``: mean SSIM over images and bands (torchmetrics, 11x11 Gaussian window).
* ``sam``: **degrees**, mean spectral angle over valid pixels (all-zero/non-finite spectra
  masked). Own metric: torchmetrics' ``SpectralAngleMapper`` gives NaN on all-zero pixels.
* ``ergas``: mean per-image ERGAS with ratio 3 (30 m -> 10 m). Own metric with torchmetrics'
  formula: ``ErrorRelativeGlobalDimensionlessSynthesis`` keeps every sample in memory and
  defaults to ratio 4; this one keeps two sums (tests check both agree).

All four are torchmetrics ``Metric``s with sum states in one ``MetricCollection``, so they stream
over batches and reduce correctly across processes (DDP).

Baselines on the same patches: :func:`bicubic_upsample`, and :func:`harmonised_bicubic`, bicubic
followed by a per-band linear fit (gain, offset) to the HR target. The latter is the honest
baseline for a model that also learns the Landsat -> Sentinel-2 sensor difference.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from bsrlc.losses import spectral_angle

METRIC_KEYS = ("psnr", "ssim", "sam", "ergas")
METRIC_UNITS = {"psnr": "dB", "ssim": "", "sam": "deg", "ergas": ""}
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "sam": False, "ergas": False}
BASELINES = ("bicubic", "bicubic_harmonised")


class MaskedSpectralAngle(Metric):
    """Mean spectral angle over valid pixels, streaming; all-zero/non-finite spectra are skipped.

    Args:
        degrees: report degrees (True) or radians.
        **kwargs: passed to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, degrees: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.degrees = degrees
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch.

        Args:
            preds: (B, C, H, W) reflectance.
            target: (B, C, H, W) reflectance.
        """
        angle, valid = spectral_angle(preds.float(), target.float())  # (B, H, W)
        self.total += angle.double().sum()
        self.count += valid.sum()

    def compute(self) -> Tensor:
        """The mean angle (NaN if no valid pixel was added).

        Returns:
            Scalar tensor.
        """
        mean = self.total / self.count if self.count > 0 else self.total * math.nan
        return (mean * (180 / math.pi) if self.degrees else mean).float()


def ergas_per_image(pred: Tensor, target: Tensor, ratio: float = 3.0) -> Tensor:
    """ERGAS of each image: ``100 / ratio * sqrt(mean over bands of (RMSE_b / mean_b)^2)``.

    ``ratio`` is the LR/HR pixel-size ratio (3 for 30 m -> 10 m; torchmetrics' convention,
    equivalent to the textbook ``100 * h / l`` with h/l = 10/30).

    Args:
        pred: (B, C, H, W) reflectance.
        target: (B, C, H, W) reflectance.
        ratio: LR/HR pixel-size ratio.

    Returns:
        (B,) ERGAS values (inf/NaN where a target band mean is 0).
    """
    rmse = ((pred - target) ** 2).flatten(2).mean(2).sqrt()  # (B, C)
    mean = target.flatten(2).mean(2)  # (B, C)
    return 100 / ratio * ((rmse / mean) ** 2).mean(1).sqrt()


class StreamingERGAS(Metric):
    """Mean per-image ERGAS, streaming (two sums instead of every sample).

    Images whose ERGAS is not finite (a target band with zero mean: nodata) are skipped.

    Args:
        ratio: LR/HR pixel-size ratio (3 for Landsat 30 m -> Sentinel-2 10 m).
        **kwargs: passed to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, ratio: float = 3.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ratio = ratio
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch.

        Args:
            preds: (B, C, H, W) reflectance.
            target: (B, C, H, W) reflectance.
        """
        values = ergas_per_image(preds.double(), target.double(), self.ratio)  # (B,)
        ok = torch.isfinite(values)
        self.total += values[ok].sum()
        self.count += ok.sum()

    def compute(self) -> Tensor:
        """The mean ERGAS (NaN if no image was added).

        Returns:
            Scalar tensor.
        """
        mean = self.total / self.count if self.count > 0 else self.total * math.nan
        return mean.float()


class SRMetrics(nn.Module):
    """PSNR (dB), SSIM, SAM (degrees, key ``sam``) and ERGAS of reflectance, streaming.

    A thin wrapper around a torchmetrics ``MetricCollection`` whose :meth:`compute` returns
    exactly the keys ``psnr``, ``ssim``, ``sam``, ``ergas`` (see :data:`METRIC_UNITS`).

    Args:
        data_range: the reflectance range PSNR and SSIM refer to (1.0 = the full reflectance
            scale; or the data's actual range, e.g. 0.5). Must be in the units given to update.
        ratio: LR/HR pixel-size ratio for ERGAS.
    """

    def __init__(self, data_range: float = 1.0, ratio: float = 3.0) -> None:
        super().__init__()
        self.data_range, self.ratio = data_range, ratio
        self.collection = MetricCollection(
            {
                "psnr": PeakSignalNoiseRatio(data_range=data_range),
                "ssim": StructuralSimilarityIndexMeasure(data_range=data_range),
                "sam": MaskedSpectralAngle(degrees=True),
                "ergas": StreamingERGAS(ratio=ratio),
            },
            compute_groups=False,
        )

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch.

        Args:
            pred: (B, C, H, W) reflectance (H, W >= 11 for SSIM's window).
            target: (B, C, H, W) reflectance.

        Raises:
            ValueError: if the shapes differ.
        """
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        self.collection.update(pred.float(), target.float())

    def has_data(self) -> bool:
        """Whether any batch was added since the last reset.

        Returns:
            True if :meth:`compute` has something to report.
        """
        return bool(self.collection["psnr"].update_count > 0)

    def compute(self) -> dict[str, Tensor]:
        """The metrics over everything added.

        Returns:
            ``{"psnr", "ssim", "sam", "ergas"}`` as scalar tensors.
        """
        out = self.collection.compute()
        return {k: out[k] for k in METRIC_KEYS}

    def reset(self) -> None:
        """Forget everything added."""
        self.collection.reset()

    def forward(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        """The metrics of one batch alone (the running state is left untouched).

        Args:
            pred: (B, C, H, W) reflectance.
            target: (B, C, H, W) reflectance.

        Returns:
            ``{"psnr", "ssim", "sam", "ergas"}`` of this batch.
        """
        single = SRMetrics(self.data_range, self.ratio).to(pred.device)
        single.update(pred, target)
        return single.compute()


# -- baselines ---------------------------------------------------------------------------------


def bicubic_upsample(lr: Tensor, scale: int) -> Tensor:
    """Bicubic upsampling (torch, align_corners=False), the plain baseline.

    Args:
        lr: (B, C, h, w).
        scale: the factor.

    Returns:
        (B, C, s*h, s*w).
    """
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False)


class BandGainFitter:
    """Streaming per-band least squares ``y ~ gain * x + offset`` (float64 sums).

    Use it to fit the harmonisation once over many training batches, then apply the gains to
    validation/test patches with :func:`apply_band_gains`.
    """

    def __init__(self) -> None:
        self._sums: Tensor | None = None  # (5, C): n, Σx, Σy, Σxx, Σxy

    def update(self, x: Tensor, y: Tensor, valid: Tensor | None = None) -> None:
        """Add pixels.

        Args:
            x: (B, C, H, W) the baseline's prediction.
            y: (B, C, H, W) the target.
            valid: optional (B, H, W) bool mask of pixels to use.

        Raises:
            ValueError: if the shapes differ.
        """
        if x.shape != y.shape:
            raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)} differ")
        xc = x.detach().transpose(0, 1).reshape(x.shape[1], -1).double()  # (C, N)
        yc = y.detach().transpose(0, 1).reshape(y.shape[1], -1).double()
        w = torch.isfinite(xc) & torch.isfinite(yc)
        if valid is not None:
            w &= valid.reshape(1, -1).to(x.device).bool()
        w = w.double()
        xc, yc = torch.nan_to_num(xc) * w, torch.nan_to_num(yc) * w
        sums = torch.stack(
            [w.sum(1), xc.sum(1), yc.sum(1), (xc * xc).sum(1), (xc * yc).sum(1)]
        )  # (5, C)
        self._sums = sums if self._sums is None else self._sums + sums.to(self._sums.device)

    def compute(self) -> tuple[Tensor, Tensor]:
        """The fitted gains and offsets (gain 1, offset 0 for a band without variance).

        Returns:
            (gain (C,), offset (C,)) in float32.

        Raises:
            RuntimeError: if nothing was added.
        """
        if self._sums is None:
            raise RuntimeError("BandGainFitter.compute() before any update()")
        n, sx, sy, sxx, sxy = self._sums.unbind(0)
        n = n.clamp_min(1)
        mx, my = sx / n, sy / n
        var = sxx / n - mx * mx
        cov = sxy / n - mx * my
        flat = var <= 1e-12 * (sxx / n).clamp_min(1e-30)
        gain = torch.where(flat, torch.ones_like(var), cov / var.clamp_min(1e-30))
        offset = my - gain * mx
        return gain.float(), offset.float()


def fit_band_gains(x: Tensor, y: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per-band least squares ``y ~ gain * x + offset`` over every pixel of (B, C, H, W).

    Args:
        x: the baseline's prediction.
        y: the target.
        valid: optional (B, H, W) bool mask of pixels to use.

    Returns:
        (gain (C,), offset (C,)) in ``x``'s dtype.
    """
    fitter = BandGainFitter()
    fitter.update(x, y, valid)
    gain, offset = fitter.compute()
    return gain.to(x.dtype), offset.to(x.dtype)


def apply_band_gains(x: Tensor, gain: Tensor, offset: Tensor) -> Tensor:
    """Apply per-band gains and offsets to (B, C, H, W).

    Args:
        x: the image.
        gain: (C,).
        offset: (C,).

    Returns:
        ``gain * x + offset``.
    """
    gain = gain.to(x.device, x.dtype)
    offset = offset.to(x.device, x.dtype)
    return x * gain[None, :, None, None] + offset[None, :, None, None]


def harmonised_bicubic(
    lr: Tensor,
    hr: Tensor | None,
    scale: int,
    gains: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Bicubic upsampling followed by a per-band linear fit to the HR target.

    Without ``gains`` the fit uses this very batch's HR (an optimistic baseline: it sees the
    target); with ``gains`` (e.g. fitted once on training patches with :class:`BandGainFitter`)
    those are applied instead.

    Args:
        lr: (B, C, h, w) reflectance.
        hr: (B, C, s*h, s*w) reflectance (unused when ``gains`` is given).
        scale: the factor.
        gains: optional (gain (C,), offset (C,)).

    Returns:
        (B, C, s*h, s*w).

    Raises:
        ValueError: if neither ``hr`` nor ``gains`` is given.
    """
    up = bicubic_upsample(lr, scale)
    if gains is None:
        if hr is None:
            raise ValueError("harmonised_bicubic needs hr to fit the gains, or gains")
        gains = fit_band_gains(up, hr)
    return apply_band_gains(up, *gains)


def metric_gains(model: dict[str, Tensor], baseline: dict[str, Tensor]) -> dict[str, Tensor]:
    """How much better the model is than a baseline, positive = better.

    Args:
        model: the model's metrics.
        baseline: the baseline's metrics (same keys).

    Returns:
        ``model - baseline`` for psnr/ssim, ``baseline - model`` for sam/ergas.
    """
    return {
        k: model[k] - baseline[k] if HIGHER_IS_BETTER[k] else baseline[k] - model[k]
        for k in METRIC_KEYS
    }


class SRBenchmark(nn.Module):
    """Streaming metrics of a model and both baselines on the same patches, and the gains.

    Args:
        scale: the resolution ratio.
        data_range: reflectance range for PSNR/SSIM.
        ratio: ERGAS ratio (default: ``scale``).
        gains: fixed harmonisation (gain, offset) for the harmonised baseline; None fits it on
            each batch's HR.
    """

    def __init__(
        self,
        scale: int = 3,
        data_range: float = 1.0,
        ratio: float | None = None,
        gains: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.gains = gains
        r = float(ratio if ratio is not None else scale)
        self.metrics = nn.ModuleDict({k: SRMetrics(data_range, r) for k in ("model", *BASELINES)})

    @torch.no_grad()
    def update(self, sr: Tensor, lr: Tensor, hr: Tensor) -> None:
        """Add a batch.

        Args:
            sr: (B, C, s*h, s*w) model output, reflectance.
            lr: (B, C, h, w) LR input, reflectance.
            hr: (B, C, s*h, s*w) target, reflectance.
        """
        self.metrics["model"].update(sr, hr)
        self.metrics["bicubic"].update(bicubic_upsample(lr, self.scale), hr)
        harmonised = harmonised_bicubic(lr, hr, self.scale, self.gains)
        self.metrics["bicubic_harmonised"].update(harmonised, hr)

    def compute(self) -> dict[str, dict[str, Tensor]]:
        """Metric sets and gains.

        Returns:
            ``{"model", "bicubic", "bicubic_harmonised"}`` -> metrics, and
            ``{"gain_bicubic", "gain_bicubic_harmonised"}`` -> :func:`metric_gains`.
        """
        out = {k: m.compute() for k, m in self.metrics.items()}
        for base in BASELINES:
            out[f"gain_{base}"] = metric_gains(out["model"], out[base])
        return out

    def reset(self) -> None:
        """Forget everything added."""
        for m in self.metrics.values():
            m.reset()


def compare_to_baselines(
    sr: Tensor,
    lr: Tensor,
    hr: Tensor,
    scale: int = 3,
    data_range: float = 1.0,
    gains: tuple[Tensor, Tensor] | None = None,
) -> dict[str, dict[str, float]]:
    """One-shot :class:`SRBenchmark` on one set of patches, as plain floats.

    Args:
        sr: (B, C, s*h, s*w) model output, reflectance.
        lr: (B, C, h, w) LR input, reflectance.
        hr: (B, C, s*h, s*w) target, reflectance.
        scale: the resolution ratio (also ERGAS's ratio).
        data_range: reflectance range for PSNR/SSIM.
        gains: fixed harmonisation; None fits it on ``hr``.

    Returns:
        ``{"model"|"bicubic"|"bicubic_harmonised"|"gain_bicubic"|"gain_bicubic_harmonised":
        {"psnr", "ssim", "sam", "ergas"}}``.
    """
    bench = SRBenchmark(scale, data_range, gains=gains).to(sr.device)
    bench.update(sr, lr, hr)
    return {k: {m: float(v) for m, v in d.items()} for k, d in bench.compute().items()}
