"""Centre-patch classifiers: one class-score vector per patch, and one per pixel for a whole tile.

A centre-patch classifier labels a pixel from the ``P x P`` patch centred on it. Run patch by
patch over a map, every pixel's patch repeats almost all the work of its neighbours'.
:class:`CentrePatchCNN` avoids that: its convolutions are unpadded ("valid") and stride 1, and
its head covers exactly the rest of the patch, so the network maps a ``P x P`` patch to a
``1 x 1`` output, and a tile padded with a halo of ``P // 2`` pixels to one output per pixel,
in a single pass whose result at pixel (i, j) equals the patch-wise result for the patch centred
at (i, j) (up to float rounding). That is the dense form, :meth:`CentrePatchCNN.forward_dense`.

Normalisation must act on each pixel on its own for this to hold:

* ``norm="batch"`` (default): ``BatchNorm2d``. During training it normalises with batch
  statistics (over patches and positions); in eval mode it is a fixed per-channel affine map,
  the same at every pixel, so dense and per-patch outputs agree. Run dense inference in eval
  mode (as all inference is).
* ``norm="layer"``: layer norm over the channels of each pixel (not ``GroupNorm(1, C)``, which
  normalises over the whole spatial extent and so depends on the patch's size and content).
  Per pixel in training and eval alike.
* ``norm="none"``.

The optional spatial attention (the seed's) lets the centre pixel's feature vector query every
position of its feature window: the conv stack leaves a ``k x k`` feature window per patch
(``k = P - 2 * len(channels)``, 3 by default), the centre's feature is the query, the ``k*k``
features are the keys and values, a learned bias per head and relative position encodes where
each one lies; pre-norm transformer blocks and a linear classifier follow. The conv stack plus
the window cover exactly P, so densely this is local-window attention over each pixel's
``k x k`` neighbourhood of the dense feature map, computed from ``k*k`` shifted views, batched
over pixels and in row chunks so that memory stays bounded on a 1024 x 1024 tile.

:class:`PaddedCentrePatchCNN` is the seed's padded form (3x3 convs with padding 1, then the centre
feature, a flattened patch or attention over all ``P x P`` positions); it has no dense form.
:class:`PixelMLP` is the per-pixel baseline. :func:`extract_patches` cuts the patch of every
pixel for the patch-wise path (tests and ``benchmarks/dense.py``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bsrlc.errors import ConfigError

NORMS = ("batch", "layer", "none")


def extract_patches(tile: Tensor, patch_size: int) -> Tensor:
    """Cut the ``P x P`` patch centred on every pixel of a tile that has a full patch.

    Uses ``Tensor.unfold`` twice, which makes a strided view without copying; the single copy is
    the final reshape, of ``N * C * P * P`` values: P*P times the tile (about 22 MB per output
    row of a 1024-wide, 24-band float32 tile at P = 15), so cut big tiles into row slabs.

    Args:
        tile: (C, H, W) or (B, C, H, W).
        patch_size: the patch edge P.

    Returns:
        (B * (H - P + 1) * (W - P + 1), C, P, P) patches, row-major within each image; patch n
        of image b is centred on pixel (P // 2 + n // (W - P + 1), P // 2 + n % (W - P + 1)).

    Raises:
        ValueError: if the tile is smaller than one patch.
    """
    if tile.ndim == 3:
        tile = tile.unsqueeze(0)
    _, c, h, w = tile.shape
    p = patch_size
    if h < p or w < p:
        raise ValueError(f"tile {h}x{w} is smaller than one {p}x{p} patch")
    windows = tile.unfold(2, p, 1).unfold(3, p, 1)  # (B, C, H-P+1, W-P+1, P, P), a view
    return windows.permute(0, 2, 3, 1, 4, 5).reshape(-1, c, p, p)  # (N, C, P, P), one copy


def _exporting() -> bool:
    """True while tracing or exporting to ONNX (row chunking would fix the traced tile size)."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ConfigError(f"model norm={norm!r} is unknown; use one of {', '.join(NORMS)}")


class ChannelLayerNorm(nn.Module):
    """Layer norm over the channels of each pixel of a (B, C, H, W) map (unlike GroupNorm).

    Args:
        channels: C.
        eps: added to the variance.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        """Normalise each pixel's channel vector.

        Args:
            x: (B, C, H, W).

        Returns:
            (B, C, H, W).
        """
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def make_norm(norm: str, channels: int) -> nn.Module:
    """Build a per-pixel normalisation layer for (B, C, H, W) maps.

    Args:
        norm: ``"batch"`` (BatchNorm2d), ``"layer"`` (:class:`ChannelLayerNorm`) or ``"none"``.
        channels: C.

    Returns:
        The layer.

    Raises:
        ConfigError: for an unknown ``norm``.
    """
    _check_norm(norm)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "layer":
        return ChannelLayerNorm(channels)
    return nn.Identity()


class ConvNormAct(nn.Sequential):
    """k x k conv (stride 1) -> per-pixel norm -> ReLU; valid (padding 0) unless told otherwise.

    In eval mode a BatchNorm is folded into the convolution's weights on the fly: one pass over
    the activations instead of two (PyTorch's eval BatchNorm on large maps costs as much as the
    convs themselves on CPU), the same result up to float rounding.

    Args:
        c_in: input channels.
        c_out: output channels.
        kernel_size: k.
        padding: 0 (valid) or (k - 1) // 2 (same size).
        norm: ``"batch"``, ``"layer"`` or ``"none"``.
    """

    def __init__(
        self, c_in: int, c_out: int, kernel_size: int = 3, padding: int = 0, norm: str = "batch"
    ) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel_size, padding=padding, bias=norm == "none"),
            make_norm(norm, c_out),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Convolve, normalise, activate.

        Args:
            x: (B, C_in, H, W).

        Returns:
            (B, C_out, H - k + 1 + 2 * padding, W - k + 1 + 2 * padding).
        """
        conv, norm, act = cast(nn.Conv2d, self[0]), self[1], self[2]
        if not isinstance(norm, nn.BatchNorm2d) or norm.training:
            return act(norm(conv(x)))
        # BN(conv(x)) = scale * (W * x + b - mean) + beta, per output channel
        scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)  # (C_out,)
        bias = norm.bias - norm.running_mean * scale
        if conv.bias is not None:
            bias = bias + conv.bias * scale
        weight = conv.weight * scale[:, None, None, None]  # (C_out, C_in, k, k)
        return act(F.conv2d(x, weight, bias, padding=conv.padding))


class ConvStack(nn.Sequential):
    """3x3 conv blocks: (B, C_in, H, W) -> (B, channels[-1], H - 2n, W - 2n) with n = len(channels).

    With ``padding=1`` the size is kept instead: (B, channels[-1], H, W).

    Args:
        in_channels: C_in.
        channels: output widths of the successive convs.
        padding: 0 (valid) or 1 (same size).
        norm: ``"batch"``, ``"layer"`` or ``"none"``.
    """

    def __init__(
        self, in_channels: int, channels: Sequence[int], padding: int = 0, norm: str = "batch"
    ) -> None:
        widths = [in_channels, *channels]
        super().__init__(
            *(
                ConvNormAct(c_in, c_out, 3, padding=padding, norm=norm)
                for c_in, c_out in itertools.pairwise(widths)
            )
        )


class WindowConvHead(nn.Module):
    """A conv covering the k x k feature window: the classifier, or a hidden layer before a 1x1 one.

    (B, C, Hf, Wf) -> (B, n_classes, Hf - k + 1, Wf - k + 1); a k x k map gives one score vector.

    Args:
        in_channels: C.
        n_classes: output classes.
        window: k.
        hidden: None: the k x k conv outputs the scores; else its width, followed by norm, ReLU
            and a 1x1 classifier.
        dropout: dropout before the classifier.
        norm: norm of the hidden layer.
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        window: int,
        hidden: int | None = None,
        dropout: float = 0.0,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        if hidden is None:
            # the window conv is the classifier itself
            self.window = nn.Identity()
            self.dropout = nn.Dropout(dropout)
            self.classifier = nn.Conv2d(in_channels, n_classes, window)
        else:
            self.window = ConvNormAct(in_channels, hidden, window, norm=norm)
            self.dropout = nn.Dropout(dropout)
            self.classifier = nn.Conv2d(hidden, n_classes, 1)

    def forward(self, feat: Tensor) -> Tensor:
        """Class scores of every full k x k window.

        Args:
            feat: (B, C, Hf, Wf) conv features.

        Returns:
            (B, n_classes, Hf - k + 1, Wf - k + 1).
        """
        return self.classifier(self.dropout(self.window(feat)))


class CentreQueryBlock(nn.Module):
    """Pre-norm transformer block in which each pixel's centre token queries its k x k window.

    ``q <- q + Attn(LN(q), LN(window))``, then ``q <- q + MLP(LN(q))``. Only the query is
    updated; keys and values come from the same feature map in every block, projected once per
    feature pixel and shared by the ``k*k`` windows that contain it. Positions are encoded by a
    learned bias per head and relative position in the window, added to the attention logits
    (as in Swin Transformer, Liu et al. 2021): identical for a patch and for a tile, and cheap
    enough that dense attention costs little more than its linear layers. A patch (one window
    per image) runs as ordinary attention over its ``k*k`` tokens; a tile as local-window
    attention over shifted views of the feature map. Both compute the same function.

    Args:
        dim: token width D.
        heads: attention heads H (D divisible by H).
        window: k.
        mlp_ratio: MLP width relative to D.
        dropout: dropout inside the MLP.

    Raises:
        ConfigError: if D is not divisible by H.
    """

    def __init__(
        self, dim: int, heads: int, window: int, mlp_ratio: float = 2.0, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"model attn_dim={dim} is not divisible by attn_heads={heads}")
        self.window, self.heads = window, heads
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(dim, 2 * dim)
        self.pos_bias = nn.Parameter(torch.zeros(heads, window * window))  # (H, T)
        nn.init.trunc_normal_(self.pos_bias, std=0.02)
        self.proj = nn.Linear(dim, dim)
        hidden = round(dim * mlp_ratio)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )

    def forward(self, q: Tensor, feat: Tensor) -> Tensor:
        """Update the centre tokens of all h x w windows of a feature map.

        Args:
            q: (N, D) centre tokens, N = B * h * w in row-major order.
            feat: (B, h + k - 1, w + k - 1, D) channels-last feature map.

        Returns:
            (N, D) updated centre tokens.
        """
        k, heads = self.window, self.heads
        _, hh, ww, d = feat.shape
        h, w, dh = hh - k + 1, ww - k + 1, d // heads
        kv = self.to_kv(self.norm_kv(feat))  # (B, h+k-1, w+k-1, 2D), once per feature pixel
        query = self.to_q(self.norm_q(q)) * dh**-0.5  # (N, D)
        if not _exporting() and h == 1 and w == 1:  # one window per image: a patch
            out = self._attend_patch(query, kv)
        else:
            out = self._attend_windows(query, kv, h, w)
        q = q + self.proj(out)  # (N, D)
        return q + self.mlp(self.norm_mlp(q))  # (N, D)

    def _attend_patch(self, query: Tensor, kv: Tensor) -> Tensor:
        """Attention of each patch's centre over its whole k x k window, as a token sequence.

        Args:
            query: (B, D) scaled queries.
            kv: (B, k, k, 2D) keys and values.

        Returns:
            (B, D) attention outputs.
        """
        b, d, heads, t = query.shape[0], query.shape[1], self.heads, self.window**2
        kv = kv.reshape(b, t, 2, heads, d // heads)  # tokens in row-major window order
        key, val = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)  # (B, H, T, dh)
        bias = self.pos_bias.view(heads, 1, t).to(query.dtype)  # (H, 1, T)
        out = F.scaled_dot_product_attention(
            query.view(b, heads, 1, d // heads), key, val, attn_mask=bias, scale=1.0
        )  # (B, H, 1, dh)
        return out.reshape(b, d)

    def _attend_windows(self, query: Tensor, kv: Tensor, h: int, w: int) -> Tensor:
        """Attention of every pixel's centre over its k x k window of a feature map.

        Runs channels-first: window position (dy, dx) of every pixel is the shifted view
        ``[..., dy:dy+h, dx:dx+w]`` with contiguous rows, and each step is one vectorised pass
        over the chunk, without per-pixel copies of the windows. (Batched SDPA with one query
        per pixel, unfolded windows or channels-last views were 2-5x slower on CPU.)

        Args:
            query: (N, D) scaled queries, N = B * h * w row-major.
            kv: (B, h + k - 1, w + k - 1, 2D) keys and values.
            h: output rows.
            w: output columns.

        Returns:
            (N, D) attention outputs, same pixel order.
        """
        k, heads = self.window, self.heads
        b, hh, ww, d2 = kv.shape
        d = d2 // 2
        dh, t = d // heads, k * k
        kv = kv.permute(0, 3, 1, 2).contiguous().view(b, 2, heads, dh, hh, ww)
        key, val = kv[:, 0], kv[:, 1]  # (B, H, dh, h+k-1, w+k-1) each
        query = query.view(b, h, w, heads, dh).permute(0, 3, 4, 1, 2).contiguous()  # (B,H,dh,h,w)
        offsets = [(dy, dx) for dy in range(k) for dx in range(k)]
        logits = torch.stack(
            [(query * key[..., dy : dy + h, dx : dx + w]).sum(2) for dy, dx in offsets], dim=2
        )  # (B, H, T, h, w)
        attn = (logits + self.pos_bias.view(1, heads, t, 1, 1)).softmax(2)  # (B, H, T, h, w)
        out = attn[:, :, :1] * val[..., :h, :w]  # (B, H, dh, h, w)
        for i, (dy, dx) in enumerate(offsets[1:], start=1):
            out = out.addcmul_(attn[:, :, i : i + 1], val[..., dy : dy + h, dx : dx + w])
        return out.permute(0, 3, 4, 1, 2).reshape(b * h * w, d)  # (N, D)


class CentreAttentionHead(nn.Module):
    """Attention of each pixel's centre feature over its k x k window, then a linear classifier.

    (B, C, Hf, Wf) -> (B, n_classes, Hf - k + 1, Wf - k + 1); a k x k map gives one score vector.
    Pixels are processed in row chunks of about ``chunk_pixels`` (attribute; each chunk holds
    about 2 KB of activations per pixel at dim = 128; raise it on GPUs).

    Args:
        in_channels: feature channels C (projected to ``dim`` if different).
        n_classes: output classes.
        window: k.
        dim: token width.
        blocks: transformer blocks.
        heads: attention heads.
        mlp_ratio: MLP width relative to ``dim``.
        dropout: dropout in the MLPs and before the classifier.
        chunk_pixels: output pixels per row chunk of the dense form.
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        window: int,
        dim: int = 128,
        blocks: int = 2,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        chunk_pixels: int = 16384,
    ) -> None:
        super().__init__()
        self.window, self.n_classes, self.chunk_pixels = window, n_classes, chunk_pixels
        self.embed = nn.Linear(in_channels, dim) if in_channels != dim else nn.Identity()
        self.blocks = nn.ModuleList(
            CentreQueryBlock(dim, heads, window, mlp_ratio, dropout) for _ in range(blocks)
        )
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(dim, n_classes)

    def forward(self, feat: Tensor) -> Tensor:
        """Class scores of every full k x k window.

        Args:
            feat: (B, C, Hf, Wf) conv features.

        Returns:
            (B, n_classes, Hf - k + 1, Wf - k + 1).
        """
        k = self.window
        b, _, hf, wf = feat.shape
        ho, wo = hf - k + 1, wf - k + 1
        feat = feat.permute(0, 2, 3, 1)  # (B, Hf, Wf, C), channels-last view
        if _exporting():  # one pass, so the traced graph keeps dynamic height and width
            return self._windows(self.embed(feat.contiguous())).permute(0, 3, 1, 2)
        out = feat.new_empty(b, ho, wo, self.n_classes)  # (B, Ho, Wo, n)
        rows = max(1, self.chunk_pixels // max(1, b * wo))
        for r0 in range(0, ho, rows):
            r1 = min(ho, r0 + rows)
            x = self.embed(feat[:, r0 : r1 + k - 1].contiguous())  # (B, r+k-1, Wf, D)
            out[:, r0:r1] = self._windows(x)
        return out.permute(0, 3, 1, 2)  # (B, n, Ho, Wo)

    def _windows(self, x: Tensor) -> Tensor:
        """(B, h + k - 1, w + k - 1, D) embedded features -> (B, h, w, n_classes) scores."""
        k, c = self.window, self.window // 2
        b, hh, ww, d = x.shape
        h, w = hh - k + 1, ww - k + 1
        q = x[:, c : c + h, c : c + w].reshape(-1, d)  # (N, D): each window's centre feature
        for block in self.blocks:
            q = block(q, x)  # (N, D)
        return self.classifier(self.dropout(self.norm(q))).view(b, h, w, -1)


def _dense_rows(
    fn: Callable[[Tensor], Tensor], x: Tensor, halo: int, n_out: int, chunk_pixels: int
) -> Tensor:
    """Apply a valid-padding map ``fn`` to a tile in row slabs that overlap by ``2 * halo`` rows.

    Args:
        fn: (B, C, r + 2*halo, W) -> (B, n_out, r, W - 2*halo) for any r.
        x: (B, C, H, W) the tile with its halo.
        halo: pixels lost on each side.
        n_out: output channels.
        chunk_pixels: output pixels per slab (bounds memory); at least one row.

    Returns:
        (B, n_out, H - 2*halo, W - 2*halo), identical to ``fn(x)``.

    Raises:
        ValueError: if the tile is not larger than twice the halo.
    """
    if _exporting():  # one pass, so the traced graph keeps dynamic height and width
        return fn(x)
    b, _, h, w = x.shape
    ho, wo = h - 2 * halo, w - 2 * halo
    if ho < 1 or wo < 1:
        raise ValueError(f"tile {h}x{w} is too small for a halo of {halo} pixels on each side")
    out = x.new_empty(b, n_out, ho, wo)
    rows = max(1, chunk_pixels // (b * wo))
    for r0 in range(0, ho, rows):
        r1 = min(ho, r0 + rows)
        out[:, :, r0:r1] = fn(x[:, :, r0 : r1 + 2 * halo])
    return out


class CentrePatchCNN(nn.Module):
    """Valid-convolution centre-patch classifier with an exact dense form.

    Six (by default) unpadded 3x3 convs shrink a P x P patch to a k x k feature window
    (k = P - 2 * len(channels), 3 at P = 15); the head covers that window exactly: a k x k conv
    to the class scores (default), a k x k conv to ``hidden`` channels and a 1x1 classifier, or,
    with ``attention``, the centre feature's attention over the window. ``forward`` maps
    (B, C, P, P) patches to (B, n_classes); ``forward_dense`` maps a (B, C, H, W) tile to
    (B, n_classes, H - 2h, W - 2h) with h = P // 2, and its value at (i, j) is ``forward`` of
    the patch centred on tile pixel (i + h, j + h).

    Attributes:
        receptive_field: P, the input extent that determines one output.
        halo: P // 2, pixels each side a tile must carry beyond the pixels to classify.
        window: k, the feature window the head covers.

    Args:
        in_channels: input bands C.
        n_classes: output classes.
        channels: widths of the 3x3 valid convs.
        patch_size: P, odd, at least ``2 * len(channels) + 1``.
        attention: use the centre-query attention head instead of the conv head.
        attn_blocks: transformer blocks.
        attn_heads: attention heads.
        attn_dim: token width (features are projected to it if they differ).
        dropout: dropout before the classifier (and in the attention MLPs).
        hidden: width of a hidden k x k head conv before a 1x1 classifier; None (default): the
            k x k conv is the classifier. A hidden conv costs k*k*C'*hidden multiply-adds per
            pixel in the dense form too (147k at 128, a third of the default network's), so it
            cuts the dense speed-up; conv head only.
        norm: ``"batch"``, ``"layer"`` or ``"none"`` (see the module docstring).
        attn_mlp_ratio: MLP width of the transformer blocks relative to ``attn_dim``.

    Raises:
        ConfigError: for an even or too small ``patch_size`` or an unknown ``norm``.
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
        dropout: float = 0.0,
        hidden: int | None = None,
        norm: str = "batch",
        attn_mlp_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        channels = list(channels)
        window = patch_size - 2 * len(channels)
        if patch_size % 2 == 0 or window < 1:
            raise ConfigError(
                f"model patch_size={patch_size} must be odd and at least "
                f"2 * len(channels) + 1 = {2 * len(channels) + 1}; change patch_size or channels"
            )
        _check_norm(norm)
        self.in_channels, self.n_classes, self.patch_size = in_channels, n_classes, patch_size
        self.receptive_field, self.halo, self.window = patch_size, patch_size // 2, window
        self.features = ConvStack(in_channels, channels, padding=0, norm=norm)
        self.head: nn.Module
        if attention:
            self.head = CentreAttentionHead(
                channels[-1],
                n_classes,
                window,
                dim=attn_dim,
                blocks=attn_blocks,
                heads=attn_heads,
                mlp_ratio=attn_mlp_ratio,
                dropout=dropout,
            )
        else:
            self.head = WindowConvHead(channels[-1], n_classes, window, hidden, dropout, norm)

    def forward(self, x: Tensor) -> Tensor:
        """Classify patches.

        Args:
            x: (B, C, P, P) patches.

        Returns:
            (B, n_classes) scores (logits) of each patch's centre pixel.

        Raises:
            ValueError: if the patches are not P x P.
        """
        if x.shape[-2:] != (self.patch_size, self.patch_size):
            raise ValueError(
                f"expected {self.patch_size}x{self.patch_size} patches, got {tuple(x.shape)}; "
                "use forward_dense for tiles"
            )
        feat = self.features(x)  # (B, C', k, k)
        return self.head(feat).flatten(1)  # (B, n, 1, 1) -> (B, n)

    def forward_dense(self, x: Tensor, chunk_pixels: int = 1 << 18) -> Tensor:
        """Classify every pixel of a tile that carries a halo of P // 2 pixels, in one pass.

        Call in eval mode (BatchNorm and dropout must not depend on the batch). The tile is
        processed in row slabs of about ``chunk_pixels`` output pixels overlapping by 2 * halo
        rows, so memory stays bounded for large tiles; the result does not depend on it.

        Args:
            x: (B, C, H, W) tile including the halo.
            chunk_pixels: output pixels per slab.

        Returns:
            (B, n_classes, H - 2h, W - 2h) logits; (i, j) belongs to tile pixel (i + h, j + h).
        """
        if not _exporting() and x.device.type == "cpu":
            # oneDNN's convolutions run 1.2-1.5x faster on channels-last (NHWC) tiles of this
            # size than on NCHW (benchmarks/dense.py); the result is the same to float rounding
            x = x.contiguous(memory_format=torch.channels_last)
        return _dense_rows(
            lambda t: self.head(self.features(t)), x, self.halo, self.n_classes, chunk_pixels
        )


class PaddedCentrePatchCNN(nn.Module):
    """The seed's padded centre-patch classifier: per patch only, no dense form.

    3x3 convs with padding 1 keep the P x P extent; the head then reads the centre pixel's feature
    (``head="centre"``), the flattened feature patch (``head="flatten"``) or, with ``attention``,
    lets the centre feature attend to all P x P positions (learned bias per head and position). Zero
    padding makes a patch's border features depend on where the patch was cut, so a tile cannot be
    classified in one pass; use :class:`CentrePatchCNN` for that.

    Attributes:
        receptive_field: P.
        halo: P // 2.

    Args:
        in_channels: input bands C.
        n_classes: output classes.
        channels: widths of the 3x3 padded convs.
        patch_size: P (odd).
        attention: use the centre-query attention head over the whole patch.
        attn_blocks: transformer blocks.
        attn_heads: attention heads.
        attn_dim: token width.
        dropout: dropout before the classifier (and in the attention MLPs).
        hidden: width of a hidden layer in the centre/flatten head; None for a linear head.
        head: ``"centre"`` or ``"flatten"`` (ignored with attention).
        norm: ``"batch"``, ``"layer"`` or ``"none"``.
        attn_mlp_ratio: MLP width of the transformer blocks relative to ``attn_dim``.

    Raises:
        ConfigError: for an even ``patch_size``, an unknown ``head`` or ``norm``.
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
        dropout: float = 0.0,
        hidden: int | None = None,
        head: str = "centre",
        norm: str = "batch",
        attn_mlp_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        channels = list(channels)
        if patch_size % 2 == 0:
            raise ConfigError(f"model patch_size={patch_size} must be odd; use e.g. 15")
        if head not in ("centre", "flatten"):
            raise ConfigError(f"model head={head!r} is unknown; use centre or flatten")
        self.in_channels, self.n_classes, self.patch_size = in_channels, n_classes, patch_size
        self.receptive_field, self.halo = patch_size, patch_size // 2
        self.head_kind = "attention" if attention else head
        self.features = ConvStack(in_channels, channels, padding=1, norm=norm)
        self.attention: CentreAttentionHead | None = None
        self.head: nn.Module | None = None
        if attention:
            self.attention = CentreAttentionHead(
                channels[-1],
                n_classes,
                patch_size,
                dim=attn_dim,
                blocks=attn_blocks,
                heads=attn_heads,
                mlp_ratio=attn_mlp_ratio,
                dropout=dropout,
            )
        else:
            width = channels[-1] * (patch_size**2 if head == "flatten" else 1)
            layers: list[nn.Module] = []
            if hidden is not None:
                layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
                width = hidden
            self.head = nn.Sequential(*layers, nn.Dropout(dropout), nn.Linear(width, n_classes))

    def forward(self, x: Tensor) -> Tensor:
        """Classify patches.

        Args:
            x: (B, C, P, P) patches.

        Returns:
            (B, n_classes) logits of each patch's centre pixel.

        Raises:
            ValueError: if the patches are not P x P.
        """
        if x.shape[-2:] != (self.patch_size, self.patch_size):
            raise ValueError(f"expected {self.patch_size}x{self.patch_size} patches, got {x.shape}")
        feat = self.features(x)  # (B, C', P, P)
        if self.attention is not None:
            return self.attention(feat).flatten(1)  # (B, n, 1, 1) -> (B, n)
        if self.head_kind == "centre":
            vec = feat[:, :, self.halo, self.halo]  # (B, C')
        else:
            vec = feat.flatten(1)  # (B, C' * P * P)
        return self.head(vec)  # (B, n)


class PixelMLP(nn.Module):
    """Per-pixel baseline: an MLP on one pixel's feature vector.

    Accepts (B, C) vectors or (B, C, P, P) patches (only the centre pixel is used);
    ``forward_dense`` applies the same layers at every pixel of a tile (a stack of 1x1 convs).

    Attributes:
        receptive_field: 1.
        halo: 0.

    Args:
        in_channels: input bands C.
        n_classes: output classes.
        hidden: hidden layer widths.
        dropout: dropout after each hidden layer.
        patch_size: the patch edge the data serves (recorded for inference; only the centre
            pixel is used).
    """

    receptive_field = 1
    halo = 0

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        hidden: Sequence[int] = (512, 512),
        dropout: float = 0.0,
        patch_size: int = 1,
    ) -> None:
        super().__init__()
        self.in_channels, self.n_classes, self.patch_size = in_channels, n_classes, patch_size
        widths = [in_channels, *hidden]
        layers: list[nn.Module] = []
        for c_in, c_out in itertools.pairwise(widths):
            layers += [nn.Linear(c_in, c_out), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        self.net = nn.Sequential(*layers, nn.Linear(widths[-1], n_classes))

    def forward(self, x: Tensor) -> Tensor:
        """Classify pixels.

        Args:
            x: (B, C) vectors or (B, C, P, P) patches.

        Returns:
            (B, n_classes) logits.
        """
        if x.ndim == 4:
            x = x[:, :, x.shape[2] // 2, x.shape[3] // 2]  # (B, C) centre pixels
        return self.net(x)

    def forward_dense(self, x: Tensor, chunk_pixels: int = 1 << 18) -> Tensor:
        """Classify every pixel of a tile.

        Args:
            x: (B, C, H, W).
            chunk_pixels: pixels per row slab (bounds the hidden activations' memory).

        Returns:
            (B, n_classes, H, W) logits.
        """
        # Linear on channels-last pixels is a 1x1 conv
        return _dense_rows(
            lambda t: self.net(t.permute(0, 2, 3, 1)).permute(0, 3, 1, 2),
            x,
            0,
            self.n_classes,
            chunk_pixels,
        )
