"""Losses for super-resolution and adversarial training."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def spectral_angle(x: Tensor, y: Tensor, eps: float = 1e-8) -> tuple[Tensor, Tensor]:
    """Per-pixel spectral angle (radians) between two (B, C, H, W) images, and a validity mask.

    Pixels where either spectrum is all zero (nodata) are invalid: their angle is undefined.
    The cosine is clamped inside (-1, 1) so the arccos gradient stays finite.

    Args:
        x: predicted spectra.
        y: reference spectra.
        eps: numerical floor.

    Returns:
        (angles (B, H, W), valid (B, H, W) bool).
    """
    dot = (x * y).sum(1)
    nx, ny = x.norm(dim=1), y.norm(dim=1)
    valid = (nx > eps) & (ny > eps)
    cos = dot / (nx * ny).clamp_min(eps)
    angle = torch.acos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
    return angle, valid


def spectral_angle_loss(x: Tensor, y: Tensor) -> Tensor:
    """Mean spectral angle (radians) over valid pixels (reflectance, not normalised units).

    Args:
        x: (B, C, H, W) predicted reflectance.
        y: (B, C, H, W) reference reflectance.

    Returns:
        Scalar loss (0 when no pixel is valid).
    """
    angle, valid = spectral_angle(x, y)
    if not valid.any():
        return x.sum() * 0
    return angle[valid].mean()


def lr_consistency_loss(sr: Tensor, lr: Tensor, scale: int) -> Tensor:
    """L1 between the SR output area-averaged back to LR and the LR input.

    Both must be in the same units (bsrlc normalises LR and HR with the same statistics).

    Args:
        sr: (B, C, s*h, s*w).
        lr: (B, C, h, w).
        scale: s.

    Returns:
        Scalar loss.
    """
    return F.l1_loss(F.avg_pool2d(sr, scale), lr)


def bce_generator_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating GAN loss for the generator.

    Args:
        fake_logits: discriminator logits on generated images.

    Returns:
        Scalar loss.
    """
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def bce_discriminator_loss(
    real_logits: Tensor, fake_logits: Tensor, smoothing: float = 0.1
) -> Tensor:
    """Discriminator BCE with one-sided label smoothing (real target ``1 - smoothing``).

    Args:
        real_logits: logits on real images.
        fake_logits: logits on generated images.
        smoothing: label smoothing of the real targets.

    Returns:
        Scalar loss.
    """
    real = F.binary_cross_entropy_with_logits(
        real_logits, torch.full_like(real_logits, 1.0 - smoothing)
    )
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def hinge_generator_loss(fake_logits: Tensor) -> Tensor:
    """Hinge GAN loss for the generator.

    Args:
        fake_logits: logits on generated images.

    Returns:
        Scalar loss.
    """
    return -fake_logits.mean()


def hinge_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Hinge GAN loss for the discriminator.

    Args:
        real_logits: logits on real images.
        fake_logits: logits on generated images.

    Returns:
        Scalar loss.
    """
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def feature_matching_loss(fake_feats: Sequence[Tensor], real_feats: Sequence[Tensor]) -> Tensor:
    """L1 between the discriminator's activations on generated and real images.

    The perceptual term of bsrlc: no pretrained network (VGG) can be downloaded, and the
    discriminator's features are tuned to the very bands being super-resolved.

    Args:
        fake_feats: per-stage activations on generated images.
        real_feats: the same on real images (treated as constants).

    Returns:
        Scalar loss (mean over stages).
    """
    terms = [F.l1_loss(f, r.detach()) for f, r in zip(fake_feats, real_feats, strict=True)]
    return torch.stack(terms).mean()
