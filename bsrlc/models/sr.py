"""Super-resolution networks: the seed's SRResNet, an RRDB (ESRGAN) generator, a PatchGAN.

Plain ``nn.Module``s with plain-number constructors. Generators map (B, C, h, w) to
(B, C_out, s*h, s*w) in the same normalised units and expose ``receptive_field`` (LR pixels
each side that influence an output pixel) so tiled inference knows its overlap.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def icnr_(weight: Tensor, scale: int, init: type = nn.init.kaiming_normal_) -> Tensor:
    """ICNR initialisation of a conv that feeds ``PixelShuffle(scale)`` (Aitken et al. 2017).

    Each group of ``scale**2`` output channels that PixelShuffle spreads over one ``s x s``
    block gets the same kernel, so the initial upsampling is nearest-neighbour-like and free of
    checkerboard artefacts.

    Args:
        weight: (C_out * s^2, C_in, k, k) conv weight, modified in place.
        scale: the PixelShuffle factor.
        init: initialiser for the shared sub-kernel.

    Returns:
        The weight.
    """
    out_ch, in_ch, kh, kw = weight.shape
    sub = torch.empty(out_ch // scale**2, in_ch, kh, kw)
    init(sub)
    # (C, in, k, k) -> (C * s^2, in, k, k), repeating each kernel s^2 times consecutively
    with torch.no_grad():
        weight.copy_(sub.repeat_interleave(scale**2, dim=0))
    return weight


def upsample_steps(scale: int) -> list[int]:
    """Split a scale into PixelShuffle steps: 3 -> [3], 4 -> [2, 2], 8 -> [2, 2, 2].

    Args:
        scale: 2, 3, 4 or 8.

    Returns:
        The factors.

    Raises:
        ValueError: for other scales.
    """
    if scale == 3:
        return [3]
    if scale in (2, 4, 8):
        return [2] * int(math.log2(scale))
    raise ValueError(f"scale {scale} not supported; use 2, 3, 4 or 8")


class ResidualBlock(nn.Module):
    """conv3x3 -> PReLU -> conv3x3, plus the input (no batch norm)."""

    def __init__(self, channels: int, padding_mode: str = "zeros") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, padding_mode=padding_mode)
        self.act = nn.PReLU(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, padding_mode=padding_mode)

    def forward(self, x: Tensor) -> Tensor:
        """Residual update.

        Args:
            x: (B, C, H, W).

        Returns:
            (B, C, H, W).
        """
        return x + self.conv2(self.act(self.conv1(x)))


class SubPixelUpsample(nn.Module):
    """conv3x3 to C*s^2 channels (ICNR-initialised) -> PixelShuffle(s) -> PReLU."""

    def __init__(self, channels: int, factor: int, padding_mode: str = "zeros") -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            channels, channels * factor**2, 3, padding=1, padding_mode=padding_mode
        )
        icnr_(self.conv.weight, factor)
        nn.init.zeros_(self.conv.bias)
        self.shuffle = nn.PixelShuffle(factor)
        self.act = nn.PReLU(channels)

    def forward(self, x: Tensor) -> Tensor:
        """Upsample.

        Args:
            x: (B, C, H, W).

        Returns:
            (B, C, s*H, s*W).
        """
        x = self.conv(x)  # (B, C, H, W) -> (B, C*s^2, H, W)
        return self.act(self.shuffle(x))  # -> (B, C, s*H, s*W)


class SRResNet(nn.Module):
    """The seed's generator: 9x9 head, residual blocks, global skip, sub-pixel upsampling.

    Args:
        in_bands: input bands.
        out_bands: output bands (default: ``in_bands``).
        channels: feature channels.
        n_blocks: residual blocks.
        scale: 2, 3 (one PixelShuffle(3)), 4 or 8.
        residual_bicubic: predict a residual over the bicubic upsample of the input.
        padding_mode: ``zeros``, ``replicate`` or ``reflect``.
        head_kernel: kernel of the first conv (9 in the seed).
        tail_kernel: kernel of the last, full-resolution conv (9 in the seed; 3 is much cheaper).
    """

    def __init__(
        self,
        in_bands: int = 6,
        out_bands: int | None = None,
        channels: int = 64,
        n_blocks: int = 16,
        scale: int = 3,
        residual_bicubic: bool = False,
        padding_mode: str = "zeros",
        head_kernel: int = 9,
        tail_kernel: int = 9,
    ) -> None:
        super().__init__()
        out_bands = out_bands or in_bands
        if residual_bicubic and out_bands != in_bands:
            raise ValueError("residual_bicubic needs out_bands == in_bands")
        self.scale = scale
        self.residual_bicubic = residual_bicubic
        pm = padding_mode
        self.head = nn.Sequential(
            nn.Conv2d(in_bands, channels, head_kernel, padding=head_kernel // 2, padding_mode=pm),
            nn.PReLU(channels),
        )
        self.body = nn.Sequential(*[ResidualBlock(channels, pm) for _ in range(n_blocks)])
        self.body_tail = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, padding_mode=pm), nn.PReLU(channels)
        )
        steps = upsample_steps(scale)
        self.upsample = nn.Sequential(*[SubPixelUpsample(channels, f, pm) for f in steps])
        self.tail = nn.Conv2d(
            channels, out_bands, tail_kernel, padding=tail_kernel // 2, padding_mode=pm
        )
        # LR pixels of context: head + 2 per block + 1 (body tail) + 1 per upsampling conv,
        # + the tail's HR pixels in LR pixels (+1 for bicubic's support when residual).
        self.receptive_field = (
            head_kernel // 2
            + 2 * n_blocks
            + 1
            + len(steps)
            + math.ceil((tail_kernel // 2) / scale)
            + (2 if residual_bicubic else 0)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Super-resolve.

        Args:
            x: (B, C_in, h, w) normalised LR.

        Returns:
            (B, C_out, s*h, s*w).
        """
        feat = self.head(x)
        feat = feat + self.body_tail(self.body(feat))  # global skip
        out = self.tail(self.upsample(feat))  # (B, C, h, w) -> (B, C_out, s*h, s*w)
        if self.residual_bicubic:
            out = out + F.interpolate(x, scale_factor=self.scale, mode="bicubic")
        return out


class DenseBlock(nn.Module):
    """Five densely connected 3x3 convs with LeakyReLU, residual-scaled by 0.2 (ESRGAN)."""

    def __init__(self, channels: int, growth: int, padding_mode: str = "zeros") -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(
                channels + i * growth,
                growth if i < 4 else channels,
                3,
                padding=1,
                padding_mode=padding_mode,
            )
            for i in range(5)
        )
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: Tensor) -> Tensor:
        """Dense update.

        Args:
            x: (B, C, H, W).

        Returns:
            (B, C, H, W).
        """
        feats = [x]
        for conv in self.convs[:-1]:
            feats.append(self.act(conv(torch.cat(feats, dim=1))))
        return x + 0.2 * self.convs[-1](torch.cat(feats, dim=1))


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks, residual-scaled by 0.2."""

    def __init__(self, channels: int, growth: int, padding_mode: str = "zeros") -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[DenseBlock(channels, growth, padding_mode) for _ in range(3)])

    def forward(self, x: Tensor) -> Tensor:
        """RRDB update.

        Args:
            x: (B, C, H, W).

        Returns:
            (B, C, H, W).
        """
        return x + 0.2 * self.blocks(x)


class RRDBNet(nn.Module):
    """ESRGAN-style generator: RRDB trunk and sub-pixel (ICNR) upsampling.

    Args:
        in_bands: input bands.
        out_bands: output bands (default: ``in_bands``).
        channels: trunk channels.
        growth: dense-block growth channels.
        n_blocks: RRDBs.
        scale: 2, 3, 4 or 8.
        residual_bicubic: predict a residual over the bicubic upsample.
        padding_mode: ``zeros``, ``replicate`` or ``reflect``.
    """

    def __init__(
        self,
        in_bands: int = 6,
        out_bands: int | None = None,
        channels: int = 64,
        growth: int = 32,
        n_blocks: int = 23,
        scale: int = 3,
        residual_bicubic: bool = False,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        out_bands = out_bands or in_bands
        self.scale = scale
        self.residual_bicubic = residual_bicubic
        pm = padding_mode
        self.head = nn.Conv2d(in_bands, channels, 3, padding=1, padding_mode=pm)
        self.trunk = nn.Sequential(*[RRDB(channels, growth, pm) for _ in range(n_blocks)])
        self.trunk_tail = nn.Conv2d(channels, channels, 3, padding=1, padding_mode=pm)
        steps = upsample_steps(scale)
        self.upsample = nn.Sequential(*[SubPixelUpsample(channels, f, pm) for f in steps])
        self.tail = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, padding_mode=pm),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, out_bands, 3, padding=1, padding_mode=pm),
        )
        # 1 (head) + 15 per RRDB (3 dense blocks x 5 convs) + 1 + upsampling + tail
        self.receptive_field = 1 + 15 * n_blocks + 1 + len(steps) + math.ceil(2 / scale)

    def forward(self, x: Tensor) -> Tensor:
        """Super-resolve.

        Args:
            x: (B, C_in, h, w) normalised LR.

        Returns:
            (B, C_out, s*h, s*w).
        """
        feat = self.head(x)
        feat = feat + self.trunk_tail(self.trunk(feat))
        out = self.tail(self.upsample(feat))
        if self.residual_bicubic:
            out = out + F.interpolate(x, scale_factor=self.scale, mode="bicubic")
        return out


class PatchDiscriminator(nn.Module):
    """The seed's PatchGAN: 4x4 convs (64, 64, 128, 256, 512), LeakyReLU 0.2, one logit map.

    Args:
        in_bands: input bands.
        channels: channels of the conv stages.
        spectral_norm: spectral normalisation on every conv instead of batch norm.
    """

    def __init__(
        self,
        in_bands: int = 6,
        channels: tuple[int, ...] = (64, 64, 128, 256, 512),
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        stages: list[nn.Module] = []
        prev = in_bands
        for i, ch in enumerate(channels):
            stride = 2 if 0 < i < len(channels) - 1 else 1
            layers: list[nn.Module] = [sn(nn.Conv2d(prev, ch, 4, stride, padding=1))]
            if i > 0 and not spectral_norm:
                layers.append(nn.BatchNorm2d(ch))
            layers.append(nn.LeakyReLU(0.2))
            stages.append(nn.Sequential(*layers))
            prev = ch
        self.stages = nn.ModuleList(stages)
        self.head = sn(nn.Conv2d(prev, 1, 4, 1, padding=1))

    def forward(
        self, x: Tensor, return_features: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Patch logits (and the stages' activations for feature matching).

        Args:
            x: (B, C, H, W).
            return_features: also return each stage's output.

        Returns:
            (B, 1, h, w) logits, or (logits, features).
        """
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        logits = self.head(x)
        return (logits, feats) if return_features else logits
