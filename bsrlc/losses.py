"""Losses for super-resolution and adversarial training.

Content (masked L1, MSE or Charbonnier: :func:`content_loss`; shift-tolerant L1, the best over
small shifts), spectral angle (SAM), LR
consistency, adversarial (BCE with one-sided label smoothing, or hinge; separate generator and
discriminator terms) and discriminator feature matching (the perceptual term: no pretrained VGG
can be downloaded, and the discriminator's features are tuned to the very bands being
super-resolved).

Units: bsrlc normalises LR and HR with the *same* per-band statistics (the LR training mean and
std, see :mod:`bsrlc.data.sr`), so L1 and LR consistency compare like with like in normalised
units. SAM is not invariant to the mean subtraction of normalisation: give it reflectance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def _denorm(x: Tensor, stats: tuple[Tensor, Tensor] | None) -> Tensor:
    if stats is None:
        return x
    mean, std = (torch.as_tensor(s, dtype=x.dtype, device=x.device) for s in stats)
    return x * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)


def l1_content_loss(sr: Tensor, hr: Tensor, valid: Tensor | None = None) -> Tensor:
    """Mean absolute error, optionally over valid pixels only.

    Args:
        sr: (B, C, H, W) generated.
        hr: (B, C, H, W) reference.
        valid: optional (B, H, W) or (B, 1, H, W) bool mask of pixels to count.

    Returns:
        Scalar loss (0, with a gradient path, when no pixel is valid).
    """
    if valid is None:
        return F.l1_loss(sr, hr)
    w = valid.reshape(sr.shape[0], 1, *sr.shape[-2:]).to(sr.dtype)  # (B, 1, H, W)
    n = w.sum() * sr.shape[1]
    return ((sr - hr).abs() * w).sum() / n.clamp_min(1)


CONTENT_LOSSES = ("l1", "mse", "charbonnier", "shift_l1")
"""The kinds of :func:`content_loss`."""


def content_loss(
    sr: Tensor,
    hr: Tensor,
    kind: str = "l1",
    eps: float = 1e-3,
    valid: Tensor | None = None,
    max_shift: int = 1,
) -> Tensor:
    """Pixel content loss of one of :data:`CONTENT_LOSSES`, optionally over valid pixels.

    ``l1`` (mean ``|d|``) is minimised by the conditional median: where the LR leaves the HR
    ambiguous (which 10 m pixels of a 30 m pixel hold a roof) it commits to one outcome. ``mse``
    (mean ``d^2``) is minimised by the conditional mean, what PSNR and ERGAS reward.
    ``charbonnier`` (mean ``sqrt(d^2 + eps^2) - eps``) is L1 smoothed near 0. ``shift_l1`` is
    :func:`shift_tolerant_l1_loss` (per image, the best L1 over shifts up to ``max_shift`` HR
    pixels): for real pairs misregistered by a pixel or so, which plain L1 teaches to blur.

    Args:
        sr: (B, C, H, W) generated.
        hr: (B, C, H, W) reference.
        kind: one of :data:`CONTENT_LOSSES`.
        eps: Charbonnier's smoothing (in the units of ``sr``).
        valid: optional (B, H, W) or (B, 1, H, W) bool mask of pixels to count.
        max_shift: ``shift_l1``'s largest shift, HR pixels.

    Returns:
        Scalar loss.

    Raises:
        ValueError: for an unknown kind.
    """
    if kind == "shift_l1":
        return shift_tolerant_l1_loss(sr, hr, max_shift=max_shift, valid=valid)
    d = sr - hr
    if kind == "l1":
        err = d.abs()
    elif kind == "mse":
        err = d * d
    elif kind == "charbonnier":
        err = (d * d + eps * eps).sqrt() - eps
    else:
        raise ValueError(f"content loss {kind!r}: use {', '.join(CONTENT_LOSSES)}")
    if valid is None:
        return err.mean()
    w = valid.reshape(sr.shape[0], 1, *sr.shape[-2:]).to(sr.dtype)  # (B, 1, H, W)
    return (err * w).sum() / (w.sum() * sr.shape[1]).clamp_min(1)


def _safe_norm(x: Tensor, dim: int, eps: float) -> Tensor:
    # sqrt(clamp(sum x^2, eps^2)): the clamp zeroes the gradient where the norm would be 0, so
    # all-zero spectra give zero (not NaN) gradients.
    return (x * x).sum(dim).clamp_min(eps * eps).sqrt()


def spectral_angle(
    x: Tensor, y: Tensor, eps: float = 1e-8, valid: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Per-pixel spectral angle (radians) between two (B, C, H, W) images, and a validity mask.

    The angle is ``2 * atan2(|u - v|, |u + v|)`` of the unit spectra ``u``, ``v`` (Kahan's
    formula): unlike ``acos`` of the cosine it keeps full precision and bounded gradients near
    0, where a well-trained model's angles are. Pixels where either spectrum is all zero (nodata
    after filling) or non-finite are invalid; their angle is 0 and passes no gradient.

    Args:
        x: predicted spectra (reflectance).
        y: reference spectra (reflectance).
        eps: norm below which a spectrum counts as all zero.
        valid: optional (B, H, W) bool mask of pixels to keep (combined with the above).

    Returns:
        (angles (B, H, W), valid (B, H, W) bool).
    """
    if x.dtype in (torch.float16, torch.bfloat16) or y.dtype in (torch.float16, torch.bfloat16):
        x, y = x.float(), y.float()  # eps**2 underflows in half precision
    finite = torch.isfinite(x).all(1) & torch.isfinite(y).all(1)  # (B, H, W)
    x = torch.where(torch.isfinite(x), x, torch.zeros_like(x))
    y = torch.where(torch.isfinite(y), y, torch.zeros_like(y))
    nx, ny = _safe_norm(x, 1, eps), _safe_norm(y, 1, eps)  # (B, H, W)
    ok = finite & (nx > eps) & (ny > eps)
    if valid is not None:
        ok = ok & valid.reshape(ok.shape).bool()
    u, v = x / nx.unsqueeze(1), y / ny.unsqueeze(1)  # (B, C, H, W) unit spectra
    diff = _safe_norm(u - v, 1, eps)
    summ = _safe_norm(u + v, 1, eps)
    angle = 2 * torch.atan2(diff, summ)
    angle = torch.where(ok, angle, torch.zeros_like(angle))
    return angle, ok


def spectral_angle_loss(x: Tensor, y: Tensor, valid: Tensor | None = None) -> Tensor:
    """Mean spectral angle (radians) over valid pixels; give reflectance, not normalised units.

    Args:
        x: (B, C, H, W) predicted reflectance.
        y: (B, C, H, W) reference reflectance.
        valid: optional (B, H, W) bool mask of pixels to count.

    Returns:
        Scalar loss (0, with a zero gradient, when no pixel is valid).
    """
    angle, ok = spectral_angle(x, y, valid=valid)
    return angle.sum() / ok.sum().clamp_min(1)


def lr_consistency_loss(
    sr: Tensor,
    lr: Tensor,
    scale: int,
    sr_stats: tuple[Tensor, Tensor] | None = None,
    lr_stats: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """L1 between the SR output area-averaged back to LR (avg-pool, kernel = stride = scale) and LR.

    Both must be in the same units. bsrlc normalises LR and HR with the same statistics, so the
    defaults compare normalised values directly (area averaging is linear, so this equals the
    reflectance L1 divided by the band std). If LR and HR were normalised differently, pass
    ``(mean, std)`` of each: both are then de-normalised to reflectance first.

    Note that the LR here is Landsat and the SR aims at Sentinel-2: a small weight lets the
    model keep the sensor difference it learns from the HR targets.

    Args:
        sr: (B, C, s*h, s*w).
        lr: (B, C, h, w).
        scale: s.
        sr_stats: optional per-band (mean, std) the SR output is normalised with.
        lr_stats: optional per-band (mean, std) the LR input is normalised with.

    Returns:
        Scalar loss.

    Raises:
        ValueError: if only one of ``sr_stats`` and ``lr_stats`` is given, or shapes mismatch.
    """
    if (sr_stats is None) != (lr_stats is None):
        raise ValueError("give both sr_stats and lr_stats, or neither")
    if sr.shape[-2] != lr.shape[-2] * scale or sr.shape[-1] != lr.shape[-1] * scale:
        raise ValueError(f"SR {tuple(sr.shape)} is not {scale}x LR {tuple(lr.shape)}")
    down = F.avg_pool2d(_denorm(sr, sr_stats), scale)  # (B, C, s*h, s*w) -> (B, C, h, w)
    return F.l1_loss(down, _denorm(lr, lr_stats))


def bce_generator_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating GAN loss for the generator: BCE of the fake logits against 1.

    Args:
        fake_logits: discriminator logits on generated images.

    Returns:
        Scalar loss.
    """
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def bce_discriminator_loss(
    real_logits: Tensor, fake_logits: Tensor, smoothing: float = 0.1
) -> Tensor:
    """Discriminator BCE with one-sided label smoothing (real target ``1 - smoothing``, fake 0).

    Args:
        real_logits: logits on real images.
        fake_logits: logits on generated images.
        smoothing: label smoothing of the real targets (0.1 -> target 0.9).

    Returns:
        Scalar loss (sum of the real and fake terms).
    """
    real = F.binary_cross_entropy_with_logits(
        real_logits, torch.full_like(real_logits, 1.0 - smoothing)
    )
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def hinge_generator_loss(fake_logits: Tensor) -> Tensor:
    """Hinge GAN loss for the generator: ``-mean(D(fake))``.

    Args:
        fake_logits: logits on generated images.

    Returns:
        Scalar loss.
    """
    return -fake_logits.mean()


def hinge_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Hinge GAN loss for the discriminator: ``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))``.

    Args:
        real_logits: logits on real images.
        fake_logits: logits on generated images.

    Returns:
        Scalar loss.
    """
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def feature_matching_loss(fake_feats: Sequence[Tensor], real_feats: Sequence[Tensor]) -> Tensor:
    """L1 between the discriminator's activations on generated and real images.

    Args:
        fake_feats: per-stage activations on generated images.
        real_feats: the same on real images (treated as constants).

    Returns:
        Scalar loss (mean over stages of each stage's mean absolute difference).

    Raises:
        ValueError: if no features are given.
    """
    if len(fake_feats) == 0:
        raise ValueError("feature_matching_loss needs at least one feature map")
    terms = [F.l1_loss(f, r.detach()) for f, r in zip(fake_feats, real_feats, strict=True)]
    return torch.stack(terms).mean()


def shift_offsets(max_shift: int, subpixel: int = 1) -> list[float]:
    """The shifts (HR pixels) one axis is searched over: ``-max_shift .. max_shift``.

    Args:
        max_shift: the largest shift k, in whole HR pixels.
        subpixel: steps per pixel (1: integer shifts; 2: every half pixel, ...).

    Returns:
        ``2 * k * subpixel + 1`` shifts, ascending, 0 included.

    Raises:
        ValueError: for a negative ``max_shift`` or a ``subpixel`` below 1.
    """
    if max_shift < 0 or subpixel < 1:
        raise ValueError(f"need max_shift >= 0 and subpixel >= 1, got {max_shift}, {subpixel}")
    n = max_shift * subpixel
    return [i / subpixel for i in range(-n, n + 1)]


def shifted_crop(x: Tensor, dy: float, dx: float, border: int) -> Tensor:
    """The centre crop of ``x`` (``border`` pixels off each side), moved by (dy, dx) pixels.

    Output pixel (i, j) is ``x`` at (border + i + dy, border + j + dx); fractional shifts are
    bilinear between the two neighbours on each axis (a mild low-pass: half-pixel shifts average
    two pixels). Needs ``|dy|, |dx| <= border``.

    Args:
        x: (..., H, W).
        dy: row shift.
        dx: column shift.
        border: pixels cropped off each side.

    Returns:
        (..., H - 2 border, W - 2 border).

    Raises:
        ValueError: if a shift exceeds the border or nothing is left after cropping.
    """
    h, w = x.shape[-2] - 2 * border, x.shape[-1] - 2 * border
    if max(abs(dy), abs(dx)) > border or h < 1 or w < 1:
        raise ValueError(
            f"shift ({dy}, {dx}) with border {border} does not fit {tuple(x.shape[-2:])}"
        )

    def along(t: Tensor, shift: float, dim: int, size: int) -> Tensor:
        lo = math.floor(shift)
        frac = shift - lo
        first = t.narrow(dim, border + lo, size)
        if frac == 0:
            return first
        return (1 - frac) * first + frac * t.narrow(dim, border + lo + 1, size)

    return along(along(x, dy, -2, h), dx, -1, w)


def shift_tolerant_l1_loss(
    sr: Tensor,
    hr: Tensor,
    max_shift: int = 1,
    subpixel: int = 1,
    bias: bool = False,
    valid: Tensor | None = None,
) -> Tensor:
    """L1 that forgives a small misregistration: per image, the smallest L1 over shifts of SR.

    The HR centre crop (``max_shift`` pixels off each side) is compared with the SR moved by
    every shift in :func:`shift_offsets` (:func:`shifted_crop`); each image keeps its best shift
    and the loss is the mean over images, weighted by their valid pixels. The minimum is
    differentiable almost everywhere: the gradient flows through the best shift. With ``bias``,
    each shift's per-band mean difference is removed first (the PROBA-V cPSNR brightness
    correction), so a constant brightness error costs nothing: leave it off when the model
    should learn the sensor's radiometry. A sibling of :func:`l1_content_loss` (``max_shift=0``
    without bias gives the same value, masked or not).

    Args:
        sr: (B, C, H, W) generated.
        hr: (B, C, H, W) reference.
        max_shift: the largest shift, HR pixels.
        subpixel: steps per pixel of the shift search.
        bias: remove each shift's per-band mean difference first.
        valid: optional (B, H, W) or (B, 1, H, W) bool mask of HR pixels to count.

    Returns:
        Scalar loss.

    Raises:
        ValueError: if the shapes differ.
    """
    if sr.shape != hr.shape:
        raise ValueError(f"sr {tuple(sr.shape)} and hr {tuple(hr.shape)} differ")
    k = max_shift
    ref = hr[..., k : hr.shape[-2] - k, k : hr.shape[-1] - k]
    if valid is None:
        w = torch.ones_like(ref[:, :1])
    else:
        w = valid.reshape(sr.shape[0], 1, *sr.shape[-2:]).to(sr.dtype)
        w = w[..., k : hr.shape[-2] - k, k : hr.shape[-1] - k]
    n = w.flatten(1).sum(1).clamp_min(1)  # (B,) valid pixels per image
    per_shift = []
    for dy in shift_offsets(k, subpixel):
        for dx in shift_offsets(k, subpixel):
            diff = shifted_crop(sr, dy, dx, k) - ref
            if bias:
                b = (diff * w).flatten(2).sum(2) / n[:, None]  # (B, C)
                diff = diff - b[..., None, None]
            per_shift.append((diff.abs() * w).flatten(1).sum(1) / (n * sr.shape[1]))
    best = torch.stack(per_shift).min(0).values  # (B,)
    return (best * n).sum() / n.sum()  # images weighted by their valid pixels
