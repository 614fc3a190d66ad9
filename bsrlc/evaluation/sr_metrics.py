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

Beyond PSNR, :class:`SRQuality` (it needs the LR too, so it is a collection of its own; keys
:data:`QUALITY_KEYS`): consistency with the LR, synthesis, and opensr-test's improvement /
omission / hallucination shares (the same numbers as opensr-test 1.3.3 with its interpolators),
the high-frequency error of the power spectrum, and a shift-tolerant PSNR (PROBA-V's cPSNR).
``python -m bsrlc.evaluation.sr`` scores whole rasters with all of them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from bsrlc.losses import shift_offsets, shifted_crop, spectral_angle

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


# -- beyond PSNR: consistency, synthesis, correctness, spectrum, shift tolerance ----------------

QUALITY_KEYS = (
    "consistency",
    "synthesis",
    "improvement",
    "omission",
    "hallucination",
    "spectrum_error",
    "psnr_shift",
)
QUALITY_UNITS = {
    "consistency": "reflectance",
    "synthesis": "reflectance",
    "improvement": "share",
    "omission": "share",
    "hallucination": "share",
    "spectrum_error": "log10 power",
    "psnr_shift": "dB",
}
QUALITY_HIGHER_IS_BETTER = {
    "consistency": False,
    "synthesis": None,  # a description (how much SR adds over the LR), neither good nor bad
    "improvement": True,
    "omission": False,
    "hallucination": False,
    "spectrum_error": False,
    "psnr_shift": True,
}

OPENSR_TEST_BORDER = 16
"""opensr-test's ``border_mask``: HR pixels cropped off each side before scoring (the LR loses
``border // scale``). At x3 the two crops do not nest (16 HR px vs 5 LR px = 15 HR px) and
opensr-test 1.3.3 raises on its shape check; :func:`nested_border` rounds it down to 15."""

OPENSR_TEST_LAMBDA = 0.05
"""opensr-test's ``im_score``, ``om_score`` and ``ha_score`` (the lambdas of the three scores)."""

OPENSR_TEST_TEMPERATURE = 0.25
"""opensr-test's ``correctness_temperature`` (the softmin over the three scores)."""

OPENSR_TEST_QUANTILE = 0.75
"""opensr-test's ``gradient_threshold="auto"``: pixels count where a distance exceeds this
quantile of ``d_ref`` (per image)."""


def nested_border(scale: int, border: int = OPENSR_TEST_BORDER) -> int:
    """The largest border (HR pixels) not above ``border`` that is a whole number of LR pixels.

    Args:
        scale: the resolution ratio.
        border: the wanted border, HR pixels.

    Returns:
        ``(border // scale) * scale`` (15 at x3 for opensr-test's 16).
    """
    return (border // scale) * scale


def crop_border(x: Tensor, border: int) -> Tensor:
    """Crop ``border`` pixels off each side of (..., H, W).

    Args:
        x: the image.
        border: pixels to drop on each side (0: none).

    Returns:
        (..., H - 2 border, W - 2 border).
    """
    if border <= 0:
        return x
    return x[..., border : x.shape[-2] - border, border : x.shape[-1] - border]


def degrade(sr: Tensor, scale: int, mode: str = "block") -> Tensor:
    """SR back at LR resolution.

    Args:
        sr: (B, C, s*h, s*w).
        scale: s.
        mode: ``"block"``: the mean of each s x s block (the nested grid: one LR pixel covers
            exactly those HR pixels); ``"bilinear"``: torch's antialiased bilinear at 1/s
            (opensr-test's ``apply_upsampling``, a triangle filter 2 s wide that also mixes
            neighbouring LR pixels).

    Returns:
        (B, C, h, w).

    Raises:
        ValueError: for an unknown mode.
    """
    if mode == "block":
        return F.avg_pool2d(sr, scale)
    if mode == "bilinear":
        return F.interpolate(sr, scale_factor=1 / scale, mode="bilinear", antialias=True)
    raise ValueError(f"degrade mode {mode!r}: use 'block' or 'bilinear'")


def upsample(lr: Tensor, scale: int, mode: str = "bicubic") -> Tensor:
    """LR on the HR grid with a zero-parameter interpolator (the synthesis reference).

    Args:
        lr: (B, C, h, w).
        scale: s.
        mode: ``"bicubic"`` (bsrlc's baseline, :func:`bicubic_upsample`) or ``"bilinear"``
            (opensr-test's ``lr_to_hr``).

    Returns:
        (B, C, s*h, s*w).

    Raises:
        ValueError: for an unknown mode.
    """
    if mode not in ("bicubic", "bilinear"):
        raise ValueError(f"upsample mode {mode!r}: use 'bicubic' or 'bilinear'")
    return F.interpolate(lr, scale_factor=scale, mode=mode, align_corners=False)


def histogram_match(x: Tensor, ref: Tensor) -> Tensor:
    """Per image and band, map ``x``'s values onto ``ref``'s histogram (quantile matching).

    skimage's ``match_histograms`` for float images (which opensr-test uses to remove the SR's
    systematic reflectance error), vectorised: each value of ``x`` has the quantile ``q`` = the
    share of pixels at or below it; the output is ``ref``'s quantile function at ``q``, linear
    between the distinct values of ``ref`` (each at the share of pixels at or below it; the
    smallest value below its own share).

    Args:
        x: (B, C, H, W).
        ref: (B, C, H', W').

    Returns:
        (B, C, H, W) in ``x``'s dtype.
    """
    src = x.reshape(x.shape[0] * x.shape[1], -1)  # sorted in their own dtype
    tmpl = ref.reshape(src.shape[0], -1)
    n, m = src.shape[1], tmpl.shape[1]
    s_sorted, order = src.sort(1)
    _, s_end = _tie_runs(s_sorted)
    count = torch.empty_like(order).scatter_(1, order, s_end + 1)  # pixels <= each value
    q = count.double() / n
    t_sorted = tmpl.sort(1).values
    t_start, t_end = _tie_runs(t_sorted)
    j = ((count * m + n - 1) // n - 1).clamp(0, m - 1)  # first position whose share >= q
    value = t_sorted.gather(1, j).double()
    first = t_start.gather(1, j)  # where value's tie group starts
    upper = t_end.gather(1, j) + 1
    below = t_sorted.gather(1, (first - 1).clamp_min(0)).double()  # next smaller distinct value
    x0, x1 = first.double() / m, upper.double() / m
    out = torch.where(first == 0, value, below + (q - x0) / (x1 - x0) * (value - below))
    return out.reshape(x.shape).to(x.dtype)


def _tie_runs(sorted_rows: Tensor) -> tuple[Tensor, Tensor]:
    """For each position of rows sorted ascending, the first and last position of its value."""
    n = sorted_rows.shape[1]
    pos = torch.arange(n, device=sorted_rows.device).expand_as(sorted_rows)
    new = torch.ones_like(sorted_rows, dtype=torch.bool)
    new[:, 1:] = sorted_rows[:, 1:] != sorted_rows[:, :-1]
    last = torch.ones_like(new)
    last[:, :-1] = new[:, 1:]
    start = torch.where(new, pos, 0).cummax(1).values
    end = torch.where(last, pos, n - 1).flip(1).cummin(1).values.flip(1)
    return start, end


def normalised_difference(x: Tensor, y: Tensor, eps: float = 1e-8) -> Tensor:
    """Per-pixel mean over bands of ``|x - y| / |x + y + eps|`` (opensr-test's ``nd``).

    Args:
        x: (B, C, H, W) reflectance.
        y: (B, C, H, W) reflectance.
        eps: keeps the ratio finite where both are 0.

    Returns:
        (B, H, W).
    """
    return ((x - y).abs() / (x + y + eps).abs()).mean(1)


def correctness_scores(
    sr: Tensor,
    lr_up: Tensor,
    hr: Tensor,
    quantile: float = OPENSR_TEST_QUANTILE,
    plambda: float = OPENSR_TEST_LAMBDA,
    temperature: float = OPENSR_TEST_TEMPERATURE,
) -> tuple[Tensor, Tensor]:
    """opensr-test's per-pixel improvement / omission / hallucination weights, and their mask.

    With ``nd`` the :func:`normalised_difference`, per pixel (ESAOpenSR/opensr-test 1.3.3,
    ``opensr_test/correctness.py`` and ``Metrics.correctness``; Aybar et al. 2024, "A
    comprehensive benchmark for optical remote sensing image super-resolution")::

        d_ref = nd(lr_up, hr)    # how far the LR (on the HR grid) is from the HR
        d_im  = nd(sr, hr)       # distance to the improvement space (the HR)
        d_om  = nd(sr, lr_up)    # distance to the omission space (the LR)
        a, b  = d_im / d_ref, d_om / d_ref
        improvement   = a + b (1 - exp(-lambda (a + b - 1)))
        omission      = b + a (1 - exp(-lambda (a + b - 1)))
        hallucination = exp(-lambda a b)
        weights = softmin([improvement, omission, hallucination] / temperature)

    A pixel counts only where ``d_ref``, ``d_im`` or ``d_om`` exceeds the ``quantile`` of
    ``d_ref`` over the image (opensr-test's ``gradient_threshold="auto"``: flat areas, where LR
    and HR agree, are left out). So an SR at the HR (a = 0, b = 1) is pure improvement, one at
    the LR (a = 1, b = 0) pure omission, and one far from both (a, b >= 1) hallucination.
    ``d_ref`` is floored at 1e-12 (opensr-test divides by 0 there: such a pixel only counts if
    the SR differs from an LR that equals the HR, and is a hallucination either way).

    Args:
        sr: (B, C, H, W) SR (opensr-test harmonises it first: see :class:`SRQuality`).
        lr_up: (B, C, H, W) the LR on the HR grid (:func:`upsample`).
        hr: (B, C, H, W) the reference.
        quantile: the quantile of ``d_ref`` above which a pixel counts.
        plambda: opensr-test's lambda (``im_score`` = ``om_score`` = ``ha_score``).
        temperature: of the softmin.

    Returns:
        (weights (3, B, H, W): improvement, omission, hallucination, summing to 1 per pixel;
        mask (B, H, W) bool of the pixels that count).
    """
    d_ref = normalised_difference(lr_up, hr)
    d_im = normalised_difference(sr, hr)
    d_om = normalised_difference(sr, lr_up)
    flat = d_ref.flatten(1)
    k = max(1, int(quantile * flat.shape[1]))
    threshold = flat.kthvalue(k, dim=1).values[:, None, None]  # (B, 1, 1)
    mask = (d_ref > threshold) | (d_im > threshold) | (d_om > threshold)
    ref = d_ref.clamp_min(1e-12)
    a, b = d_im / ref, d_om / ref
    grow = 1 - torch.exp(-plambda * (a + b - 1))
    scores = torch.stack([a + b * grow, b + a * grow, torch.exp(-plambda * a * b)])
    return torch.softmax(-scores / temperature, dim=0), mask


class LRConsistency(Metric):
    """Mean absolute difference (reflectance) between the SR degraded to LR and the LR.

    opensr-test's consistency ("reflectance", l1): lower is better, 0 = the SR averages back to
    the LR exactly. bsrlc's LR is Landsat and the HR Sentinel-2, so an SR that learnt the sensor
    difference does not reach 0: the HR's own value is the floor to compare with.

    Args:
        scale: the resolution ratio.
        mode: how SR is degraded (:func:`degrade`; ``"block"`` on the nested grid).
        **kwargs: passed to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, scale: int = 3, mode: str = "block", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scale, self.mode = scale, mode
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, sr: Tensor, lr: Tensor) -> None:
        """Add a batch.

        Args:
            sr: (B, C, s*h, s*w) reflectance.
            lr: (B, C, h, w) reflectance.
        """
        diff = (degrade(sr.float(), self.scale, self.mode) - lr.float()).abs()
        self.total += diff.double().sum()
        self.count += diff.numel()

    def compute(self) -> Tensor:
        """The mean absolute difference (NaN if nothing was added).

        Returns:
            Scalar tensor.
        """
        return (self.total / self.count if self.count > 0 else self.total * math.nan).float()


class MeanAbsoluteDifference(Metric):
    """Mean absolute difference of two images on one grid, streaming (reflectance).

    :class:`SRQuality` uses it for the synthesis: the SR (harmonised) against the LR on the HR
    grid, i.e. how much detail the SR adds over plain interpolation.

    Args:
        **kwargs: passed to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, x: Tensor, y: Tensor) -> None:
        """Add a batch.

        Args:
            x: (B, C, H, W).
            y: (B, C, H, W).
        """
        diff = (x.float() - y.float()).abs()
        self.total += diff.double().sum()
        self.count += diff.numel()

    def compute(self) -> Tensor:
        """The mean absolute difference (NaN if nothing was added).

        Returns:
            Scalar tensor.
        """
        return (self.total / self.count if self.count > 0 else self.total * math.nan).float()


class Correctness(Metric):
    """Shares of improvement, omission and hallucination over the pixels that count.

    Per pixel as in :func:`correctness_scores`. ``norm="percent"`` (default): each pixel goes to
    its largest weight and the shares are pixel counts (opensr-test's ``correctness_norm=
    "percent"``; the HR itself scores improvement 1, hallucination 0). ``norm="softmin"``:
    the mean weights (opensr-test's default; never exactly 0 or 1). Either way the three
    sum to 1. Pixels of all images are pooled (opensr-test scores one image at a time: the same
    when every image has as many pixels that count).

    Args:
        norm: ``"percent"`` or ``"softmin"``.
        **kwargs: passed to :class:`torchmetrics.Metric`.

    Raises:
        ValueError: for an unknown norm.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, norm: str = "percent", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if norm not in ("percent", "softmin"):
            raise ValueError(f"correctness norm {norm!r}: use 'percent' or 'softmin'")
        self.norm = norm
        self.add_state("weights", torch.zeros(3, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("classes", torch.zeros(3, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, sr: Tensor, lr_up: Tensor, hr: Tensor) -> None:
        """Add a batch.

        Args:
            sr: (B, C, H, W) SR (harmonised, if wanted).
            lr_up: (B, C, H, W) the LR on the HR grid.
            hr: (B, C, H, W) the reference.
        """
        weights, mask = correctness_scores(sr.float(), lr_up.float(), hr.float())
        w = weights[:, mask].double()  # (3, N)
        self.weights += w.sum(1)
        self.classes += torch.bincount(w.argmax(0), minlength=3).double()
        self.count += mask.sum()

    def compute(self) -> dict[str, Tensor]:
        """The shares (NaN if no pixel counted).

        Returns:
            ``{"improvement", "omission", "hallucination"}`` as scalar tensors.
        """
        sums = self.classes if self.norm == "percent" else self.weights
        shares = sums / self.count if self.count > 0 else sums * math.nan
        names = ("improvement", "omission", "hallucination")
        return dict(zip(names, shares.float().unbind(), strict=True))


def radial_power(x: Tensor, n_bins: int = 32) -> tuple[Tensor, Tensor]:
    """Power spectrum of each image and band summed in rings of radial frequency.

    Each band is demeaned and multiplied by a 2-D Hann window (against the leakage of the image
    edges); the power ``|FFT|^2 / sum(window^2)`` is summed in ``n_bins`` equal rings of the
    radial frequency ``sqrt(fx^2 + fy^2)`` from 0 to 0.5 cycles per pixel (the corners beyond
    0.5 are left out).

    Args:
        x: (B, C, H, W).
        n_bins: rings between 0 and the Nyquist frequency.

    Returns:
        (power sums (C, n_bins) added over images, frequency samples per ring (n_bins,) added
        over images), both float64 (the FFT runs in float32).
    """
    x = x.float()
    h, w = x.shape[-2:]
    window = torch.outer(
        torch.hann_window(h, periodic=False, dtype=x.dtype, device=x.device),
        torch.hann_window(w, periodic=False, dtype=x.dtype, device=x.device),
    )
    x = (x - x.mean((-2, -1), keepdim=True)) * window
    power = torch.fft.fft2(x).abs() ** 2 / (window**2).sum().clamp_min(1e-12)  # (B, C, H, W)
    fy = torch.fft.fftfreq(h, dtype=torch.float64, device=x.device)
    fx = torch.fft.fftfreq(w, dtype=torch.float64, device=x.device)
    radius = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    ring = (radius / 0.5 * n_bins).long()
    inside = (ring < n_bins).flatten()
    index = ring.flatten()[inside]
    flat = power.double().sum(0).flatten(1)[:, inside]  # (C, N) summed over images
    sums = torch.zeros(x.shape[1], n_bins, dtype=torch.float64, device=x.device)
    sums.index_add_(1, index, flat)
    counts = torch.bincount(index, minlength=n_bins).double() * x.shape[0]
    return sums, counts


class SpectrumError(Metric):
    """How far the SR's radially averaged power spectrum is from the HR's at high frequencies.

    Per band, the mean power in each ring of :func:`radial_power` over every image added, for
    SR and HR; the error is the mean over bands and over the rings of the upper half of the
    frequencies (0.25-0.5 cycles per HR pixel: at x3 all above the LR's Nyquist of 1/6) of
    ``|log10 P_sr - log10 P_hr|``. 0 = the HR's sharpness; a blurry SR (bicubic) lacks power
    there, a noisy one has too much; 1 = a factor 10 in power. Rings without a frequency sample
    (tiny images) are skipped.

    Args:
        n_bins: rings between 0 and the Nyquist frequency.
        bands: the band count, if known (needed under DDP, where every process must hold states
            of one shape even before its first batch); None: taken from the first batch.
        **kwargs: passed to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    sr: Tensor
    hr: Tensor
    counts: Tensor

    def __init__(self, n_bins: int = 32, bands: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_bins = n_bins
        shape = (bands, n_bins) if bands else (0,)
        self.add_state("sr", torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("hr", torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("counts", torch.zeros(n_bins, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, sr: Tensor, hr: Tensor) -> None:
        """Add a batch.

        Args:
            sr: (B, C, H, W).
            hr: (B, C, H, W).

        Raises:
            ValueError: if the shapes differ, or the band count changes between batches.
        """
        if sr.shape != hr.shape:
            raise ValueError(f"sr {tuple(sr.shape)} and hr {tuple(hr.shape)} differ")
        p_sr, counts = radial_power(sr, self.n_bins)
        p_hr, _ = radial_power(hr, self.n_bins)
        if self.sr.numel() == 0:
            self.sr, self.hr = torch.zeros_like(p_sr), torch.zeros_like(p_hr)
        elif self.sr.shape != p_sr.shape:
            raise ValueError(f"{sr.shape[1]} bands after {self.sr.shape[0]}")
        self.sr += p_sr
        self.hr += p_hr
        self.counts += counts

    def spectra(self) -> tuple[Tensor, Tensor, Tensor]:
        """The mean power spectra so far.

        Returns:
            (ring centres in cycles per pixel (n_bins,), SR (C, n_bins), HR (C, n_bins));
            NaN in rings without a sample.
        """
        n = torch.where(self.counts > 0, self.counts, torch.nan)
        centres = (torch.arange(self.n_bins, dtype=torch.float64) + 0.5) * 0.5 / self.n_bins
        return centres, self.sr / n, self.hr / n

    def compute(self) -> Tensor:
        """The spectrum error (NaN if nothing was added).

        Returns:
            Scalar tensor.
        """
        if self.sr.numel() == 0:
            return torch.tensor(math.nan)
        _, p_sr, p_hr = self.spectra()
        high = slice(self.n_bins // 2, self.n_bins)
        diff = p_sr[:, high].clamp_min(1e-30).log10() - p_hr[:, high].clamp_min(1e-30).log10()
        return diff.abs().nanmean().float()


def shift_tolerant_mse(
    sr: Tensor, hr: Tensor, max_shift: int = 2, subpixel: int = 1, bias: bool = True
) -> Tensor:
    """Per image, the smallest MSE over shifts of the SR, each brightness-corrected.

    The PROBA-V challenge's cPSNR (Märtens et al. 2019, "Super-resolution of PROBA-V images
    using convolutional neural networks"), per band for multispectral images: the HR centre crop
    (``max_shift`` pixels off each side) against the SR moved by every shift of
    :func:`bsrlc.losses.shift_offsets` (:func:`bsrlc.losses.shifted_crop`), after removing
    each band's mean difference (``bias``).

    Args:
        sr: (B, C, H, W) reflectance.
        hr: (B, C, H, W) reflectance.
        max_shift: the largest shift, HR pixels.
        subpixel: steps per pixel of the shift search (fractional shifts are bilinear).
        bias: remove each band's mean difference per shift.

    Returns:
        (B,) MSE of each image at its best shift.
    """
    k = max_shift
    ref = crop_border(hr, k)
    best = None
    for dy in shift_offsets(k, subpixel):
        for dx in shift_offsets(k, subpixel):
            diff = ref - shifted_crop(sr, dy, dx, k)
            if bias:
                diff = diff - diff.mean((-2, -1), keepdim=True)
            mse = (diff**2).flatten(1).mean(1)
            best = mse if best is None else torch.minimum(best, mse)
    assert best is not None
    return best


class ShiftTolerantPSNR(Metric):
    """PSNR (dB) from the best-shift, brightness-corrected MSE of each image (PROBA-V cPSNR).

    ``10 log10(data_range^2 / mean over images of shift_tolerant_mse)``: for images of one size
    and no misregistration nor bias this is the plain pooled PSNR of the centre crop; a
    misregistration of up to ``max_shift`` pixels and a per-band brightness offset cost nothing.

    Args:
        data_range: the reflectance range (as for PSNR).
        max_shift: the largest shift, HR pixels.
        subpixel: steps per pixel of the shift search.
        bias: remove each band's mean difference per shift.
        **kwargs: passed to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        data_range: float = 1.0,
        max_shift: int = 2,
        subpixel: int = 1,
        bias: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.data_range, self.max_shift, self.subpixel, self.bias = (
            data_range,
            max_shift,
            subpixel,
            bias,
        )
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, sr: Tensor, hr: Tensor) -> None:
        """Add a batch.

        Args:
            sr: (B, C, H, W) reflectance.
            hr: (B, C, H, W) reflectance.
        """
        mse = shift_tolerant_mse(sr.float(), hr.float(), self.max_shift, self.subpixel, self.bias)
        self.total += mse.double().sum()
        self.count += mse.numel()

    def compute(self) -> Tensor:
        """The PSNR (inf for a perfect match, NaN if nothing was added).

        Returns:
            Scalar tensor.
        """
        if self.count == 0:
            return torch.tensor(math.nan)
        mse = self.total / self.count
        return (10 * torch.log10(self.data_range**2 / mse)).float()


class SRQuality(nn.Module):
    """The metrics beyond PSNR of SR against LR and HR, streaming (keys :data:`QUALITY_KEYS`).

    :class:`SRMetrics` takes (SR, HR) and keeps its four keys; these also need the LR, so they
    are a separate collection. Every image is first cropped by ``border`` HR pixels
    (``border // scale`` LR pixels), as opensr-test does. Then:

    * ``consistency``: :class:`LRConsistency`, mean ``|degrade(SR) - LR|`` (reflectance).
    * ``synthesis``: mean ``|SR_h - up(LR)|`` (reflectance), the detail the SR adds over
      interpolating the LR; ``SR_h`` is the SR histogram-matched to the HR (``harmonise``; as
      opensr-test, whose spatial alignment of SR to HR is not done here: see ``psnr_shift``),
      ``up`` the ``reference`` interpolator. Neither good nor bad alone: 0 = nothing added.
    * ``improvement``, ``omission``, ``hallucination``: :class:`Correctness` of ``SR_h``.
    * ``spectrum_error``: :class:`SpectrumError` of SR against HR.
    * ``psnr_shift``: :class:`ShiftTolerantPSNR` of SR against HR.

    Args:
        scale: the resolution ratio.
        data_range: the reflectance range of ``psnr_shift``.
        border: HR pixels cropped off each side (a multiple of ``scale``); None: opensr-test's
            16 made to nest (:func:`nested_border`: 15 at x3). 0 for whole rasters.
        reference: the interpolator of the LR (:func:`upsample`).
        harmonise: histogram-match the SR to the HR for synthesis and correctness.
        correctness_norm: ``"percent"`` or ``"softmin"`` (:class:`Correctness`).
        consistency_mode: :func:`degrade`'s mode.
        max_shift: of ``psnr_shift``.
        subpixel: of ``psnr_shift``.
        spectrum_bins: rings of ``spectrum_error``.

    Raises:
        ValueError: if ``border`` is not a multiple of ``scale``.
    """

    def __init__(
        self,
        scale: int = 3,
        data_range: float = 1.0,
        border: int | None = None,
        reference: str = "bicubic",
        harmonise: bool = True,
        correctness_norm: str = "percent",
        consistency_mode: str = "block",
        max_shift: int = 2,
        subpixel: int = 1,
        spectrum_bins: int = 32,
    ) -> None:
        super().__init__()
        border = nested_border(scale) if border is None else border
        if border % scale:
            raise ValueError(f"border {border} is not a multiple of scale {scale}")
        upsample(torch.zeros(1, 1, 1, 1), 1, reference)  # check the mode now
        self.scale, self.border, self.reference, self.harmonise = (
            scale,
            border,
            reference,
            harmonise,
        )
        self.consistency = LRConsistency(scale, consistency_mode)
        self.synthesis = MeanAbsoluteDifference()
        self.correctness = Correctness(correctness_norm)
        self.spectrum = SpectrumError(spectrum_bins)
        self.psnr_shift = ShiftTolerantPSNR(data_range, max_shift, subpixel)

    @torch.no_grad()
    def update(self, sr: Tensor, lr: Tensor, hr: Tensor) -> None:
        """Add a batch.

        Args:
            sr: (B, C, s*h, s*w) reflectance.
            lr: (B, C, h, w) reflectance.
            hr: (B, C, s*h, s*w) reflectance.

        Raises:
            ValueError: if the shapes do not fit.
        """
        s = self.scale
        if sr.shape != hr.shape or sr.shape[:2] != lr.shape[:2]:
            raise ValueError(f"sr {tuple(sr.shape)}, hr {tuple(hr.shape)}: shapes differ")
        if sr.shape[-2:] != (lr.shape[-2] * s, lr.shape[-1] * s):
            raise ValueError(f"sr {tuple(sr.shape)} is not {s}x lr {tuple(lr.shape)}")
        sr, lr, hr = sr.float(), lr.float(), hr.float()
        lr_up = crop_border(upsample(lr, s, self.reference), self.border)
        sr, hr = crop_border(sr, self.border), crop_border(hr, self.border)
        lr = crop_border(lr, self.border // s)
        harmonised = histogram_match(sr, hr) if self.harmonise else sr
        self.consistency.update(sr, lr)
        self.synthesis.update(harmonised, lr_up)
        self.correctness.update(harmonised, lr_up, hr)
        self.spectrum.update(sr, hr)
        self.psnr_shift.update(sr, hr)

    def has_data(self) -> bool:
        """Whether any batch was added since the last reset.

        Returns:
            True if :meth:`compute` has something to report.
        """
        return bool(self.consistency.update_count > 0)

    def compute(self) -> dict[str, Tensor]:
        """The metrics over everything added.

        Returns:
            :data:`QUALITY_KEYS` as scalar tensors.
        """
        out = {
            "consistency": self.consistency.compute(),
            "synthesis": self.synthesis.compute(),
            **self.correctness.compute(),
            "spectrum_error": self.spectrum.compute(),
            "psnr_shift": self.psnr_shift.compute(),
        }
        return {k: out[k] for k in QUALITY_KEYS}

    def reset(self) -> None:
        """Forget everything added."""
        for m in (
            self.consistency,
            self.synthesis,
            self.correctness,
            self.spectrum,
            self.psnr_shift,
        ):
            m.reset()
