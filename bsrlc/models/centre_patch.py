"""Centre-patch classifiers: a patch around a pixel in, the centre pixel's class out.

``CentrePatchCNN`` is built from valid (unpadded) stride-1 convolutions and a convolutional
head, so the network is translation-equivariant: run on a tile padded by a halo of
``patch_size // 2`` it returns one score vector per pixel, identical to classifying each pixel's
own patch, in one pass instead of one pass per pixel (``benchmarks/dense.py``).

The optional spatial attention lets the centre pixel's features query its neighbourhood (the
seed's two pre-norm transformer blocks). Positions enter as a learned bias per head and relative
offset, so keys and values are per-pixel projections; the dense form then computes every
pixel's attention over its window with shifted views of the key/value maps, no unfolding.

``PaddedCentrePatchCNN`` is the seed's faithful variant (padded convs); it cannot run densely.
``PixelMLP`` is the per-pixel baseline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def extract_patches(tile: Tensor, patch_size: int) -> Tensor:
    """Every ``patch_size x patch_size`` patch of a tile (stride 1), for per-patch inference.

    Args:
        tile: (C, H, W).
        patch_size: the patch edge P.

    Returns:
        ((H-P+1) * (W-P+1), C, P, P) patches in row-major order of their centres.
    """
    c = tile.shape[0]
    cols = F.unfold(tile[None], patch_size)  # (1, C*P*P, L)
    return cols[0].T.reshape(-1, c, patch_size, patch_size)


class ConvStack(nn.Module):
    """Valid 3x3 convs, each with batch norm and ReLU: every conv trims one pixel per side."""

    def __init__(self, in_channels: int, channels: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for ch in channels:
            # BatchNorm normalises per channel with running statistics in eval mode: a pure
            # per-pixel affine map, so dense and per-patch results stay identical.
            layers += [nn.Conv2d(prev, ch, 3), nn.BatchNorm2d(ch), nn.ReLU(inplace=True)]
            prev = ch
        self.layers = nn.Sequential(*layers)
        self.out_channels = prev
        self.trim = len(channels)  # pixels lost per side

    def forward(self, x: Tensor) -> Tensor:
        """Features.

        Args:
            x: (B, C, H, W).

        Returns:
            (B, C', H - 2n, W - 2n).
        """
        return self.layers(x)


class CentreAttention(nn.Module):
    """Pre-norm transformer blocks where the centre pixel attends to its w x w neighbourhood.

    Keys and values are per-pixel projections of the (normalised) features; the relative
    position of each neighbour enters as a learned bias per head. The centre vector is updated
    by attention and an MLP in each block; the neighbourhood tokens stay the conv features.

    Args:
        dim: token dimension.
        window: neighbourhood edge w (odd).
        heads: attention heads.
        blocks: transformer blocks.
        mlp_ratio: hidden size of the MLP relative to ``dim``.
    """

    def __init__(
        self, dim: int, window: int, heads: int = 4, blocks: int = 2, mlp_ratio: float = 2.0
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention dim {dim} is not divisible by {heads} heads")
        self.dim, self.window, self.heads, self.n_blocks = dim, window, heads, blocks
        self.norm_q = nn.ModuleList(nn.LayerNorm(dim) for _ in range(blocks))
        self.norm_kv = nn.ModuleList(nn.LayerNorm(dim) for _ in range(blocks))
        self.q = nn.ModuleList(nn.Linear(dim, dim) for _ in range(blocks))
        self.kv = nn.ModuleList(nn.Linear(dim, 2 * dim) for _ in range(blocks))
        self.proj = nn.ModuleList(nn.Linear(dim, dim) for _ in range(blocks))
        self.norm_mlp = nn.ModuleList(nn.LayerNorm(dim) for _ in range(blocks))
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
            for _ in range(blocks)
        )
        self.pos_bias = nn.Parameter(torch.zeros(blocks, heads, window * window))
        nn.init.trunc_normal_(self.pos_bias, std=0.02)

    def _mlp(self, i: int, centre: Tensor) -> Tensor:
        return centre + self.mlp[i](self.norm_mlp[i](centre))

    def forward_patch(self, tokens: Tensor) -> Tensor:
        """Attention for patches: tokens of each patch's w x w feature window.

        Args:
            tokens: (B, w*w, D) in row-major window order.

        Returns:
            (B, D) the updated centre vector.
        """
        b, n, d = tokens.shape
        h, dh = self.heads, d // self.heads
        centre = tokens[:, n // 2]
        for i in range(self.n_blocks):
            q = self.q[i](self.norm_q[i](centre)).view(b, h, 1, dh)
            k, v = self.kv[i](self.norm_kv[i](tokens)).view(b, n, 2, h, dh).unbind(2)
            k, v = k.transpose(1, 2), v.transpose(1, 2)  # (B, h, n, dh)
            logits = (q @ k.transpose(-1, -2))[:, :, 0] / math.sqrt(dh)  # (B, h, n)
            attn = torch.softmax(logits + self.pos_bias[i], dim=-1)
            out = (attn[:, :, None] @ v)[:, :, 0].reshape(b, d)  # (B, D)
            centre = centre + self.proj[i](out)
            centre = self._mlp(i, centre)
        return centre

    def forward_dense(self, feats: Tensor, chunk_rows: int = 64) -> Tensor:
        """Attention for every pixel of a feature map over its w x w neighbourhood.

        Args:
            feats: (B, D, H + w - 1, W + w - 1) conv features of a tile with a halo.
            chunk_rows: output rows per chunk (bounds the (B, heads, w*w, rows, W) logits).

        Returns:
            (B, D, H, W) centre vectors.
        """
        w = self.window
        b, d, hp, wp = feats.shape
        hh, ww = hp - w + 1, wp - w + 1
        heads, dh = self.heads, d // self.heads
        tokens = feats.permute(0, 2, 3, 1)  # (B, H', W', D)
        r = w // 2
        centre = tokens[:, r : r + hh, r : r + ww]  # (B, H, W, D)
        for i in range(self.n_blocks):
            kv = self.kv[i](self.norm_kv[i](tokens)).view(b, hp, wp, 2, heads, dh)
            k, v = kv[..., 0, :, :], kv[..., 1, :, :]  # (B, H', W', h, dh)
            q = self.q[i](self.norm_q[i](centre)).view(b, hh, ww, heads, dh) / math.sqrt(dh)
            out = torch.empty(b, hh, ww, heads, dh, dtype=feats.dtype, device=feats.device)
            for r0 in range(0, hh, chunk_rows):
                r1 = min(r0 + chunk_rows, hh)
                qc = q[:, r0:r1]
                # logits for every relative offset, from shifted views of the key map
                logits = torch.stack(
                    [
                        (qc * k[:, r0 + dy : r1 + dy, dx : dx + ww]).sum(-1)
                        for dy in range(w)
                        for dx in range(w)
                    ],
                    dim=-1,
                )  # (B, rows, W, h, w*w)
                attn = torch.softmax(logits + self.pos_bias[i].view(1, 1, 1, heads, -1), dim=-1)
                acc = torch.zeros_like(qc)
                for n_off, (dy, dx) in enumerate((dy, dx) for dy in range(w) for dx in range(w)):
                    acc += attn[..., n_off, None] * v[:, r0 + dy : r1 + dy, dx : dx + ww]
                out[:, r0:r1] = acc
            centre = centre + self.proj[i](out.reshape(b, hh, ww, d))
            centre = self._mlp(i, centre)
        return centre.permute(0, 3, 1, 2)


class CentrePatchCNN(nn.Module):
    """Valid-conv centre-patch classifier that also runs densely.

    Without attention: the conv stack trims ``len(channels)`` pixels per side, and a head conv
    covering the rest of the patch, then a 1x1 conv, gives the class scores. With attention:
    the stack's output window (``patch_size - 2 * len(channels)``) is the neighbourhood the
    centre attends to.

    Args:
        in_channels: input features per pixel.
        n_classes: classes.
        channels: conv stack channels.
        patch_size: the patch edge P (odd).
        attention: use the spatial attention head.
        attn_blocks: transformer blocks.
        attn_heads: attention heads.
        attn_dim: token dimension.
        hidden: channels of the head's hidden layer (no attention).
        dropout: dropout before the last layer.
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        channels: Sequence[int] = (32, 32, 64, 64, 128, 128),
        patch_size: int = 15,
        attention: bool = False,
        attn_blocks: int = 2,
        attn_heads: int = 4,
        attn_dim: int = 128,
        hidden: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if patch_size % 2 == 0:
            raise ValueError(f"patch_size must be odd, got {patch_size}")
        self.patch_size = patch_size
        self.halo = patch_size // 2
        self.receptive_field = patch_size
        self.features = ConvStack(in_channels, channels)
        rest = patch_size - 2 * self.features.trim  # feature window left per patch
        if rest < 1:
            raise ValueError(
                f"{len(channels)} valid convs need patch_size >= {2 * len(channels) + 1}"
            )
        self.window = rest
        self.attention = attention
        c = self.features.out_channels
        if attention:
            self.embed = nn.Conv2d(c, attn_dim, 1)  # pointwise: same for dense and patches
            self.attn = CentreAttention(attn_dim, rest, attn_heads, attn_blocks)
            self.head = nn.Sequential(
                nn.LayerNorm(attn_dim), nn.Dropout(dropout), nn.Linear(attn_dim, n_classes)
            )
        else:
            self.head_conv = nn.Sequential(
                nn.Conv2d(c, hidden, rest), nn.ReLU(inplace=True), nn.Dropout(dropout)
            )
            self.classifier = nn.Conv2d(hidden, n_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Classify patches.

        Args:
            x: (B, C, P, P).

        Returns:
            (B, n_classes) logits of the centre pixels.
        """
        if x.shape[-1] != self.patch_size or x.shape[-2] != self.patch_size:
            raise ValueError(f"expected {self.patch_size}x{self.patch_size} patches, got {x.shape}")
        f = self.features(x)  # (B, C', w, w)
        if self.attention:
            tokens = self.embed(f).flatten(2).transpose(1, 2)  # (B, w*w, D)
            return self.head(self.attn.forward_patch(tokens))
        return self.classifier(self.head_conv(f)).flatten(1)

    def forward_dense(self, x: Tensor) -> Tensor:
        """Classify every pixel of a tile padded by ``halo`` on each side.

        Args:
            x: (B, C, H + 2*halo, W + 2*halo).

        Returns:
            (B, n_classes, H, W) logits, equal to :meth:`forward` on each pixel's patch.
        """
        f = self.features(x)
        if self.attention:
            centre = self.attn.forward_dense(self.embed(f))  # (B, D, H, W)
            return self.head(centre.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.classifier(self.head_conv(f))


class PaddedCentrePatchCNN(nn.Module):
    """The seed's variant: 3x3 convs with padding 1, then the centre pixel's features.

    Zero padding makes each patch's features depend on where the patch edge is, so it cannot
    run densely; it classifies patches in large batches.

    Args:
        in_channels: input features per pixel.
        n_classes: classes.
        channels: conv channels.
        patch_size: the patch edge.
        attention: the centre queries all patch positions (the seed's attention).
        attn_blocks: transformer blocks.
        attn_heads: heads.
        attn_dim: token dimension.
        hidden: an optional hidden layer before the classifier.
        dropout: dropout before the classifier.
    """

    dense = False

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        channels: Sequence[int] = (32, 32, 64, 64, 128, 128),
        patch_size: int = 15,
        attention: bool = False,
        attn_blocks: int = 2,
        attn_heads: int = 4,
        attn_dim: int = 128,
        hidden: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.halo = patch_size // 2
        self.receptive_field = patch_size
        layers: list[nn.Module] = []
        prev = in_channels
        for ch in channels:
            layers += [nn.Conv2d(prev, ch, 3, padding=1), nn.BatchNorm2d(ch), nn.ReLU(True)]
            prev = ch
        self.features = nn.Sequential(*layers)
        self.attention = attention
        if attention:
            self.embed = nn.Conv2d(prev, attn_dim, 1)
            self.attn = CentreAttention(attn_dim, patch_size, attn_heads, attn_blocks)
            prev = attn_dim
        layers_head: list[nn.Module] = []
        if hidden:
            layers_head += [nn.Linear(prev, hidden), nn.ReLU(inplace=True)]
            prev = hidden
        self.head = nn.Sequential(*layers_head, nn.Dropout(dropout), nn.Linear(prev, n_classes))

    def forward(self, x: Tensor) -> Tensor:
        """Classify patches.

        Args:
            x: (B, C, P, P).

        Returns:
            (B, n_classes).
        """
        f = self.features(x)  # (B, C', P, P)
        if self.attention:
            tokens = self.embed(f).flatten(2).transpose(1, 2)  # (B, P*P, D)
            return self.head(self.attn.forward_patch(tokens))
        c = self.patch_size // 2
        return self.head(f[:, :, c, c])


class PixelMLP(nn.Module):
    """Per-pixel baseline: an MLP on the centre pixel's features (1x1 convs for tiles).

    Args:
        in_channels: features per pixel.
        n_classes: classes.
        hidden: hidden layer sizes.
        dropout: dropout after each hidden layer.
        patch_size: the patch size it is fed (only the centre is used).
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        hidden: Sequence[int] = (512, 512),
        dropout: float = 0.1,
        patch_size: int = 1,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for h in hidden:
            layers += [nn.Conv2d(prev, h, 1), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            prev = h
        layers.append(nn.Conv2d(prev, n_classes, 1))
        self.net = nn.Sequential(*layers)
        self.patch_size = patch_size
        self.halo = patch_size // 2
        self.receptive_field = 1

    def forward(self, x: Tensor) -> Tensor:
        """Classify the centre pixels.

        Args:
            x: (B, C) vectors or (B, C, P, P) patches.

        Returns:
            (B, n_classes).
        """
        if x.ndim == 4:
            c = x.shape[-1] // 2
            x = x[:, :, c : c + 1, c : c + 1]
        else:
            x = x[:, :, None, None]
        return self.net(x).flatten(1)

    def forward_dense(self, x: Tensor) -> Tensor:
        """Classify every pixel of a tile padded by ``halo``.

        Args:
            x: (B, C, H + 2*halo, W + 2*halo).

        Returns:
            (B, n_classes, H, W).
        """
        h = self.halo
        if h:
            x = x[:, :, h:-h, h:-h]
        return self.net(x)
