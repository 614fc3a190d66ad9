"""Super-resolution metrics on reflectance: PSNR, SSIM, SAM, ERGAS, and their baselines.

PSNR and SSIM are torchmetrics' with an explicit ``data_range``. SAM and ERGAS are computed
here, streaming: torchmetrics' ``SpectralAngleMapper`` gives NaN on all-zero (nodata) pixels and
``ErrorRelativeGlobalDimensionlessSynthesis`` keeps every sample in memory (and defaults to
ratio 4); the formulas below are the same (tests compare them with torchmetrics).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from bsrlc.losses import spectral_angle

METRIC_KEYS = ("psnr", "ssim", "sam", "ergas")


class SRMetrics(nn.Module):
    """Streaming PSNR (dB), SSIM, SAM (degrees, nodata masked) and ERGAS (ratio 3).

    Args:
        data_range: the reflectance range PSNR/SSIM refer to.
        ratio: LR/HR pixel-size ratio for ERGAS.
    """

    def __init__(self, data_range: float = 1.0, ratio: float = 3.0) -> None:
        super().__init__()
        self.psnr = PeakSignalNoiseRatio(data_range=data_range)
        self.ssim = StructuralSimilarityIndexMeasure(data_range=data_range)
        self.ratio = ratio
        self.register_buffer("sam_sum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("sam_n", torch.zeros((), dtype=torch.float64))
        self.register_buffer("ergas_sum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("ergas_n", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch.

        Args:
            pred: (B, C, H, W) reflectance.
            target: (B, C, H, W) reflectance.
        """
        pred, target = pred.float(), target.float()
        self.psnr.update(pred, target)
        self.ssim.update(pred, target)
        angle, valid = spectral_angle(pred, target)
        self.sam_sum += angle[valid].double().sum()
        self.sam_n += valid.sum()
        self.ergas_sum += ergas_per_image(pred, target, self.ratio).double().sum()
        self.ergas_n += pred.shape[0]

    def has_data(self) -> bool:
        """Whether any batch was added since the last reset.

        Returns:
            True if :meth:`compute` has something to report.
        """
        return bool(self.ergas_n.item() > 0)

    def compute(self) -> dict[str, Tensor]:
        """The metrics over everything added.

        Returns:
            ``{"psnr", "ssim", "sam", "ergas"}`` as scalar tensors.
        """
        return {
            "psnr": self.psnr.compute(),
            "ssim": self.ssim.compute(),
            "sam": (self.sam_sum / self.sam_n.clamp_min(1) * (180 / math.pi)).float(),
            "ergas": (self.ergas_sum / self.ergas_n.clamp_min(1)).float(),
        }

    def reset(self) -> None:
        """Forget everything added."""
        self.psnr.reset()
        self.ssim.reset()
        for buf in (self.sam_sum, self.sam_n, self.ergas_sum, self.ergas_n):
            buf.zero_()


def ergas_per_image(pred: Tensor, target: Tensor, ratio: float = 3.0) -> Tensor:
    """ERGAS of each image: 100 / ratio * sqrt(mean over bands of (RMSE_b / mean_b)^2).

    Args:
        pred: (B, C, H, W).
        target: (B, C, H, W).
        ratio: LR/HR pixel-size ratio (3 for 30 m -> 10 m).

    Returns:
        (B,) ERGAS values.
    """
    rmse = ((pred - target) ** 2).flatten(2).mean(2).sqrt()
    mean = target.flatten(2).mean(2)
    return 100 / ratio * ((rmse / mean) ** 2).mean(1).sqrt()


def bicubic_upsample(lr: Tensor, scale: int) -> Tensor:
    """Bicubic upsampling (align_corners=False), the plain baseline.

    Args:
        lr: (B, C, h, w).
        scale: the factor.

    Returns:
        (B, C, s*h, s*w).
    """
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False)


def fit_band_gains(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Per-band least squares ``y ~ gain * x + offset`` over every pixel of (B, C, H, W).

    Args:
        x: the baseline's prediction.
        y: the target.

    Returns:
        (gain (C,), offset (C,)).
    """
    xc = x.transpose(0, 1).reshape(x.shape[1], -1).double()
    yc = y.transpose(0, 1).reshape(y.shape[1], -1).double()
    mx, my = xc.mean(1), yc.mean(1)
    var = ((xc - mx[:, None]) ** 2).mean(1)
    cov = ((xc - mx[:, None]) * (yc - my[:, None])).mean(1)
    gain = cov / var.clamp_min(1e-12)
    return gain.to(x.dtype), (my - gain * mx).to(x.dtype)


def apply_band_gains(x: Tensor, gain: Tensor, offset: Tensor) -> Tensor:
    """Apply per-band gains and offsets to (B, C, H, W).

    Args:
        x: the image.
        gain: (C,).
        offset: (C,).

    Returns:
        ``gain * x + offset``.
    """
    return x * gain[None, :, None, None] + offset[None, :, None, None]
