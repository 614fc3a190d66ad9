"""Super-resolution networks: the seed's SRResNet, an RRDB (ESRGAN) generator, a PatchGAN.

Plain ``nn.Module``s with plain-number constructors (Hydra builds them from ``_target_``; tests
shrink them). Generators map normalised LR ``(B, C_in, h, w)`` to ``(B, C_out, s*h, s*w)`` in the
same normalised units and expose:

* ``scale``, ``in_bands``, ``out_bands``;
* ``receptive_field``: how many LR pixels on each side of an LR pixel can influence the HR
  pixels inside it (an upper bound). Tiled inference reads at least this much context around
  every tile, which makes tiled and single-pass outputs identical.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PADDING_MODES = ("zeros", "replicate", "reflect", "circular")
BICUBIC_SUPPORT = 2  # LR pixels each side that bicubic interpolation reads


def icnr_(
    weight: Tensor,
    scale: int,
    init: Callable[[Tensor], object] = nn.init.kaiming_normal_,
) -> Tensor:
    """ICNR initialisation of a conv that feeds ``PixelShuffle(scale)`` (Aitken et al. 2017).

    PixelShuffle sends output channels ``c*s^2 .. c*s^2 + s^2 - 1`` to the ``s x s`` positions of
    output channel ``c``. Giving those ``s^2`` channels the same kernel makes the initial sub-pixel
    conv equal to a conv followed by nearest-neighbour upsampling: no checkerboard artefacts.

    Args:
        weight: (C_out * s^2, C_in, k, k) conv weight, modified in place.
        scale: the PixelShuffle factor.
        init: initialiser for the shared sub-kernel.

    Returns:
        The weight.

    Raises:
        ValueError: if the output channels are not a multiple of ``scale**2``.
    """
    out_ch, in_ch, kh, kw = weight.shape
    if out_ch % scale**2:
        raise ValueError(f"{out_ch} output channels are not a multiple of {scale}^2")
    sub = torch.empty(out_ch // scale**2, in_ch, kh, kw, dtype=weight.dtype)
    init(sub)
    with torch.no_grad():
        # (C, in, k, k) -> (C * s^2, in, k, k): each kernel repeated s^2 times consecutively
        weight.copy_(sub.repeat_interleave(scale**2, dim=0))
    return weight


def upsample_steps(scale: int) -> list[int]:
    """Split a scale into upsampling steps: 2 -> [2], 3 -> [3], 4 -> [2, 2], 8 -> [2, 2, 2].

    Args:
        scale: 2, 3, 4 or 8.

    Returns:
        The factors, applied in order.

    Raises:
        ValueError: for other scales.
    """
    if scale == 3:
        return [3]
    if scale in (2, 4, 8):
        return [2] * int(math.log2(scale))
    raise ValueError(f"scale {scale} not supported; use 2, 3, 4 or 8")


def _check_padding_mode(padding_mode: str) -> str:
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode={padding_mode!r}: use one of {', '.join(PADDING_MODES)}")
    return padding_mode


def _conv(cin: int, cout: int, k: int, padding_mode: str) -> nn.Conv2d:
    """A 'same' conv of odd kernel ``k``."""
    return nn.Conv2d(cin, cout, k, padding=k // 2, padding_mode=padding_mode)


def _upsampling_context(steps: Sequence[int]) -> int:
    """LR pixels of context added by one 3x3 conv per upsampling step (conv before each step).

    The conv of step i works at the resolution reached before it; one pixel there is at most one
    LR pixel (rounded up), so one LR pixel per step is an upper bound.
    """
    return len(steps)


def _hr_context(hr_pixels: int, scale: int) -> int:
    """LR pixels of context that ``hr_pixels`` HR pixels of context amount to.

    HR pixel ``p`` lies in LR pixel ``floor(p / s)``, so ``k`` HR pixels reach ``ceil(k / s)``.
    """
    return math.ceil(hr_pixels / scale)


class ResidualBlock(nn.Module):
    """conv3x3 -> PReLU -> conv3x3, plus the input (no batch norm).

    Args:
        channels: feature channels.
        padding_mode: conv padding.
    """

    def __init__(self, channels: int, padding_mode: str = "zeros") -> None:
        super().__init__()
        self.conv1 = _conv(channels, channels, 3, padding_mode)
        self.act = nn.PReLU(channels)
        self.conv2 = _conv(channels, channels, 3, padding_mode)

    def forward(self, x: Tensor) -> Tensor:
        """Residual update.

        Args:
            x: (B, C, H, W).

        Returns:
            (B, C, H, W).
        """
        y = self.conv1(x)
        y = self.act(y)
        y = self.conv2(y)
        return x + y


class SubPixelUpsample(nn.Module):
    """conv3x3 to C*s^2 channels (ICNR-initialised) -> PixelShuffle(s) -> activation.

    Args:
        channels: feature channels (kept).
        factor: the upsampling factor s.
        padding_mode: conv padding.
        activation: ``prelu`` (SRResNet) or ``lrelu`` (LeakyReLU 0.2, ESRGAN).
    """

    def __init__(
        self,
        channels: int,
        factor: int,
        padding_mode: str = "zeros",
        activation: str = "prelu",
    ) -> None:
        super().__init__()
        self.conv = _conv(channels, channels * factor**2, 3, padding_mode)
        icnr_(self.conv.weight, factor)
        nn.init.zeros_(self.conv.bias)
        self.shuffle = nn.PixelShuffle(factor)
        self.act = nn.PReLU(channels) if activation == "prelu" else nn.LeakyReLU(0.2)

    def forward(self, x: Tensor) -> Tensor:
        """Upsample.

        Args:
            x: (B, C, H, W).

        Returns:
            (B, C, s*H, s*W).
        """
        x = self.conv(x)  # (B, C, H, W) -> (B, C*s^2, H, W)
        x = self.shuffle(x)  # -> (B, C, s*H, s*W)
        return self.act(x)


class NearestConvUpsample(nn.Module):
    """Nearest-neighbour upsampling -> conv3x3 -> LeakyReLU 0.2 (ESRGAN's upsampler).

    Args:
        channels: feature channels (kept).
        factor: the upsampling factor s.
        padding_mode: conv padding.
    """

    def __init__(self, channels: int, factor: int, padding_mode: str = "zeros") -> None:
        super().__init__()
        self.factor = factor
        self.conv = _conv(channels, channels, 3, padding_mode)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: Tensor) -> Tensor:
        """Upsample.

        Args:
            x: (B, C, H, W).

        Returns:
            (B, C, s*H, s*W).
        """
        x = F.interpolate(x, scale_factor=self.factor, mode="nearest")  # -> (B, C, s*H, s*W)
        return self.act(self.conv(x))


def _bicubic(x: Tensor, scale: int) -> Tensor:
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)


class SRResNet(nn.Module):
    """The seed's generator: 9x9 head, residual blocks, global skip, sub-pixel upsampling.

    With the defaults (6 bands, 64 channels, 16 blocks, x3) it has about 1.6 M parameters.

    Args:
        in_bands: input bands.
        out_bands: output bands (default: ``in_bands``).
        channels: feature channels.
        n_blocks: residual blocks.
        scale: 2, 3 (one PixelShuffle(3)), 4 or 8 (log2 steps of x2).
        residual_bicubic: predict a residual over the bicubic upsample of the input
            (needs ``out_bands == in_bands``).
        padding_mode: ``zeros``, ``replicate`` or ``reflect`` for every conv.
        head_kernel: kernel of the first conv (9 in the seed).
        tail_kernel: kernel of the last, full-resolution conv (9 in the seed; 3 is much cheaper).

    Raises:
        ValueError: for an unsupported scale or padding mode, or residual_bicubic with a
            different number of output bands.
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
        pm = _check_padding_mode(padding_mode)
        steps = upsample_steps(scale)
        self.in_bands, self.out_bands, self.scale = in_bands, out_bands, scale
        self.residual_bicubic = residual_bicubic
        self.head = nn.Sequential(_conv(in_bands, channels, head_kernel, pm), nn.PReLU(channels))
        self.body = nn.Sequential(*[ResidualBlock(channels, pm) for _ in range(n_blocks)])
        self.body_tail = nn.Sequential(_conv(channels, channels, 3, pm), nn.PReLU(channels))
        self.upsample = nn.Sequential(*[SubPixelUpsample(channels, f, pm) for f in steps])
        self.tail = _conv(channels, out_bands, tail_kernel, pm)
        network = (
            head_kernel // 2  # head
            + 2 * n_blocks  # two 3x3 convs per block
            + 1  # body tail
            + _upsampling_context(steps)
            + _hr_context(tail_kernel // 2, scale)
        )
        # The bicubic branch runs beside the network, not after it.
        self.receptive_field: int = max(network, BICUBIC_SUPPORT if residual_bicubic else 0)

    def forward(self, x: Tensor) -> Tensor:
        """Super-resolve.

        Args:
            x: (B, C_in, h, w) normalised LR.

        Returns:
            (B, C_out, s*h, s*w) normalised HR.
        """
        feat = self.head(x)  # (B, C_in, h, w) -> (B, F, h, w)
        feat = feat + self.body_tail(self.body(feat))  # global skip
        feat = self.upsample(feat)  # -> (B, F, s*h, s*w)
        out = self.tail(feat)  # -> (B, C_out, s*h, s*w)
        if self.residual_bicubic:
            out = out + _bicubic(x, self.scale)
        return out


class DenseBlock(nn.Module):
    """Five densely connected 3x3 convs with LeakyReLU 0.2, residual-scaled by 0.2 (ESRGAN).

    Args:
        channels: block input/output channels.
        growth: channels each of the first four convs adds.
        padding_mode: conv padding.
    """

    def __init__(self, channels: int, growth: int, padding_mode: str = "zeros") -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            _conv(channels + i * growth, growth if i < 4 else channels, 3, padding_mode)
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
            # (B, C + i*G, H, W) -> (B, G, H, W)
            feats.append(self.act(conv(torch.cat(feats, dim=1))))
        out = self.convs[-1](torch.cat(feats, dim=1))  # (B, C + 4G, H, W) -> (B, C, H, W)
        return x + 0.2 * out


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks, residual-scaled by 0.2.

    Args:
        channels: feature channels.
        growth: dense-block growth channels.
        padding_mode: conv padding.
    """

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
    """ESRGAN-style generator: RRDB trunk (no batch norm), then upsampling and two HR convs.

    Args:
        in_bands: input bands.
        out_bands: output bands (default: ``in_bands``).
        channels: trunk channels.
        growth: dense-block growth channels.
        n_blocks: RRDBs (23 in ESRGAN).
        scale: 2, 3, 4 or 8.
        residual_bicubic: predict a residual over the bicubic upsample.
        padding_mode: ``zeros``, ``replicate`` or ``reflect``.
        upsample: ``pixelshuffle`` (ICNR sub-pixel convs) or ``nearest`` (nearest + conv, as in
            ESRGAN; x3 is one nearest x3 step).

    Raises:
        ValueError: for an unsupported scale, padding mode or upsampler.
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
        upsample: str = "pixelshuffle",
    ) -> None:
        super().__init__()
        out_bands = out_bands or in_bands
        if residual_bicubic and out_bands != in_bands:
            raise ValueError("residual_bicubic needs out_bands == in_bands")
        if upsample not in ("pixelshuffle", "nearest"):
            raise ValueError(f"upsample={upsample!r}: use pixelshuffle or nearest")
        pm = _check_padding_mode(padding_mode)
        steps = upsample_steps(scale)
        self.in_bands, self.out_bands, self.scale = in_bands, out_bands, scale
        self.residual_bicubic = residual_bicubic
        self.head = _conv(in_bands, channels, 3, pm)
        self.trunk = nn.Sequential(*[RRDB(channels, growth, pm) for _ in range(n_blocks)])
        self.trunk_tail = _conv(channels, channels, 3, pm)
        if upsample == "pixelshuffle":
            ups: list[nn.Module] = [SubPixelUpsample(channels, f, pm, "lrelu") for f in steps]
        else:
            ups = [NearestConvUpsample(channels, f, pm) for f in steps]
        self.upsample = nn.Sequential(*ups)
        self.tail = nn.Sequential(
            _conv(channels, channels, 3, pm),
            nn.LeakyReLU(0.2),
            _conv(channels, out_bands, 3, pm),
        )
        network = (
            1  # head
            + 15 * n_blocks  # 3 dense blocks x 5 convs
            + 1  # trunk tail
            + _upsampling_context(steps)
            + _hr_context(2, scale)  # two HR 3x3 convs
        )
        self.receptive_field: int = max(network, BICUBIC_SUPPORT if residual_bicubic else 0)

    def forward(self, x: Tensor) -> Tensor:
        """Super-resolve.

        Args:
            x: (B, C_in, h, w) normalised LR.

        Returns:
            (B, C_out, s*h, s*w) normalised HR.
        """
        feat = self.head(x)  # (B, C_in, h, w) -> (B, F, h, w)
        feat = feat + self.trunk_tail(self.trunk(feat))  # global skip
        feat = self.upsample(feat)  # -> (B, F, s*h, s*w)
        out = self.tail(feat)  # -> (B, C_out, s*h, s*w)
        if self.residual_bicubic:
            out = out + _bicubic(x, self.scale)
        return out


class PatchDiscriminator(nn.Module):
    """The seed's PatchGAN: 4x4 convs (64, 64, 128, 256, 512), LeakyReLU 0.2, one logit map.

    Stage 0 has no normalisation; the others have batch norm, or none when ``spectral_norm`` is
    on (then every conv, the logit conv included, is spectrally normalised). The first and last
    stages keep the resolution, the middle ones halve it; the 1-channel 4x4 logit conv follows.
    A 72x72 HR patch gives a (B, 1, 6, 6) logit map.

    Args:
        in_bands: input bands.
        channels: output channels of the conv stages.
        spectral_norm: spectral normalisation instead of batch norm.
    """

    def __init__(
        self,
        in_bands: int = 6,
        channels: Sequence[int] = (64, 64, 128, 256, 512),
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        channels = [int(c) for c in channels]

        def sn(conv: nn.Conv2d) -> nn.Module:
            return nn.utils.parametrizations.spectral_norm(conv) if spectral_norm else conv

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

    def features(self, x: Tensor) -> list[Tensor]:
        """The stages' activations (for the feature-matching loss).

        Args:
            x: (B, C, H, W).

        Returns:
            One (B, C_i, H_i, W_i) tensor per stage.
        """
        feats = []
        for stage in self.stages:
            x = stage(x)  # (B, C_{i-1}, H_{i-1}, W_{i-1}) -> (B, C_i, H_i, W_i)
            feats.append(x)
        return feats

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
        feats = self.features(x)
        logits = self.head(feats[-1])  # (B, C_last, h+1, w+1) -> (B, 1, h, w)
        return (logits, feats) if return_features else logits
