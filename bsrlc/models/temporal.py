"""Temporal classifiers over the annual 365-day encoding (plain nn.Modules).

Both models take the encoding of :func:`bsrlc.timeseries.encode`: ``(B, C + 1, 365)`` with the
spectral bands first and the observed flag last (1 on observed days, every unobserved day 0),
and return ``(B, n_classes)`` logits. A centre-patch batch ``(B, P, P, C + 1, 365)`` is accepted
too; only its centre pixel is used (:class:`CentrePatchTemporal` adds the patch as context).

* :class:`TempCNN` (Pelletier et al. 2019): 1-D conv blocks (conv, BN, ReLU, dropout) over
  time, flattened, one dense block, a linear classifier. It sees the sparse series as they are
  (values and the flag as channels), or, with ``fill="linear"``, the linearly gap-filled series
  of :func:`bsrlc.timeseries.fill_linear` (the gap-filling baseline, same input).
* :class:`LTAE` (Garnot & Landrieu 2020, lightweight temporal attention encoder): each
  observation embedded, a sinusoidal day-of-year encoding added, multi-head attention from a
  learned master query per head; it attends only over observed days, so the content of
  unobserved days never reaches the output, and a pixel without observations gets finite logits.
* :class:`TemporalTransformer`: a small pre-norm transformer encoder over the observed days
  (padding masked) read out from a class token; the same invariances.
* :class:`CentrePatchTemporal`: optional spatial context as in the urban classifier: any of
  the above on every pixel of a centre patch, the centre's and the patch's mean features.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

N_DAYS = 365


def _centre(x: Tensor) -> Tensor:
    """(B, C + 1, T) series from a point batch or the centre pixel of a (B, P, P, C + 1, T) one."""
    if x.ndim == 5:
        return x[:, x.shape[1] // 2, x.shape[2] // 2]
    if x.ndim != 3:
        raise ValueError(f"expected (B, C+1, T) or (B, P, P, C+1, T) series, got {tuple(x.shape)}")
    return x


def _split(x: Tensor, in_bands: int) -> tuple[Tensor, Tensor]:
    """Values (B, C, T) with unobserved days set to 0, and the observed mask (B, T)."""
    if x.shape[1] != in_bands + 1:
        raise ValueError(
            f"expected {in_bands} bands + the observed flag ({in_bands + 1} channels), "
            f"got {x.shape[1]}"
        )
    observed = x[:, -1] > 0
    # where, not a product: garbage (even inf/nan) on unobserved days cannot leak through
    values = torch.where(
        observed[:, None], x[:, :-1], torch.zeros((), dtype=x.dtype, device=x.device)
    )
    return values, observed


def gather_observed(values: Tensor, observed: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The observed days of each series, packed first (K = the batch's largest count).

    Args:
        values: (B, C, T) values.
        observed: (B, T) bool, True on observed days.

    Returns:
        ``obs`` (B, K, C) the observations in day order, ``days`` (B, K) their day indices
        (0-based; padding slots hold some unobserved day) and ``mask`` (B, K) True on real
        observations. K >= 1. While tracing or exporting to ONNX, K = T and the days stay in
        place (a data-dependent K would be frozen into the graph, and ONNX has no stable sort);
        order-free poolings give the same result.
    """
    b, t = observed.shape
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        days = torch.arange(t, device=values.device).expand(b, -1)
    else:
        k = max(int(observed.sum(dim=1).max()) if b else 0, 1)
        # observed days first, in day order (a stable sort of the flag)
        days = torch.sort((~observed).to(torch.uint8), dim=1, stable=True).indices[:, :k]
    mask = observed.gather(1, days)
    obs = values.gather(2, days[:, None].expand(-1, values.shape[1], -1)).transpose(1, 2)
    return obs, days, mask


class TempCNN(nn.Module):
    """TempCNN: 1-D convolutions over the day axis, then a dense block and a linear classifier.

    Args:
        in_bands: spectral bands C (the input has C + 1 channels, the observed flag last).
        n_classes: output classes.
        channels: filters of each conv block (the paper: three blocks of 64).
        kernel_size: temporal kernel (odd; "same" padding).
        pool: max-pool factor after each conv block (1: none, as in the paper). 2 shrinks the
            flattened features 8x over three blocks, and the dense layer with them.
        hidden: width of the dense block (the paper: 256).
        dropout: dropout after every block.
        fill: ``"none"``: the sparse encoding as it is; ``"linear"``: the linearly gap-filled
            series (the gap-filling baseline), computed from the same input.
        use_flag: give the observed flag to the convolutions as one more channel.
        n_days: length of the series.
    """

    def __init__(
        self,
        in_bands: int,
        n_classes: int,
        channels: Sequence[int] = (64, 64, 64),
        kernel_size: int = 5,
        pool: int = 1,
        hidden: int = 256,
        dropout: float = 0.2,
        fill: Literal["none", "linear"] = "none",
        use_flag: bool = True,
        n_days: int = N_DAYS,
    ) -> None:
        super().__init__()
        if fill not in ("none", "linear"):
            raise ValueError(f"fill must be 'none' or 'linear', got {fill!r}")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.in_bands, self.n_classes = in_bands, n_classes
        self.fill, self.use_flag = fill, use_flag
        widths = [in_bands + int(use_flag), *channels]
        blocks: list[nn.Module] = []
        length = n_days
        for c_in, c_out in itertools.pairwise(widths):
            blocks += [
                nn.Conv1d(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=False),
                nn.BatchNorm1d(c_out),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
            ]
            if pool > 1:
                blocks.append(nn.MaxPool1d(pool))
                length //= pool
        self.convs = nn.Sequential(*blocks)
        self.dense = nn.Sequential(
            nn.Flatten(),
            nn.Linear(widths[-1] * length, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.n_features = hidden
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Classify pixel-years.

        Args:
            x: (B, C + 1, 365) encoding (flag last), or (B, P, P, C + 1, 365) patches.

        Returns:
            (B, n_classes) logits.
        """
        return self.head(self.features(_centre(x)))

    def features(self, x: Tensor) -> Tensor:
        """The dense block's output, before the classifier.

        Args:
            x: (B, C + 1, 365) encoding (flag last).

        Returns:
            (B, n_features) features.
        """
        values, observed = _split(x, self.in_bands)
        if self.fill == "linear":
            from bsrlc.timeseries.encoding import fill_linear

            values = fill_linear(values, observed)
        if self.use_flag:
            values = torch.cat([values, observed[:, None].to(values.dtype)], dim=1)
        return self.dense(self.convs(values))


def day_encoding(days: Tensor, dim: int, period: float = 1000.0) -> Tensor:
    """Sinusoidal encoding of day-of-year positions (Vaswani et al.; L-TAE uses period 1000).

    Args:
        days: (...) day indices (any numeric dtype).
        dim: encoding width (even).
        period: the longest wavelength's scale.

    Returns:
        (..., dim) float encoding: sin on even, cos on odd features.
    """
    i = torch.arange(dim // 2, device=days.device, dtype=torch.float32)
    freq = period ** (-2 * i / dim)
    angle = days.float()[..., None] * freq
    return torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(-2)


class LTAE(nn.Module):
    """Lightweight temporal attention encoder over the observed days of the encoding.

    Per pixel, the observed days are gathered (at most the batch's largest count, padding
    masked), each observation is embedded (linear, layer norm) and the day-of-year encoding is
    added. Every head has a learned master query; its keys are a projection of the embeddings,
    its values one group of ``d_model / n_head`` embedding channels. The heads' weighted sums
    are concatenated and go through an MLP and a linear classifier. Unobserved days get exactly
    zero attention; a pixel without observations yields a zero feature vector (finite logits).
    While tracing or exporting to ONNX all days are gathered (K = 365, same result, no
    data-dependent shape in the graph).

    Args:
        in_bands: spectral bands C (the input has C + 1 channels, the observed flag last).
        n_classes: output classes.
        d_model: embedding width (divisible by ``n_head``).
        n_head: attention heads.
        d_k: query/key width per head.
        mlp: widths of the MLP after the attention (Linear, BN, ReLU each).
        dropout: dropout on the attention weights and after the MLP.
        period: day-encoding period (the paper: 1000).
    """

    def __init__(
        self,
        in_bands: int,
        n_classes: int,
        d_model: int = 128,
        n_head: int = 16,
        d_k: int = 8,
        mlp: Sequence[int] = (128,),
        dropout: float = 0.1,
        period: float = 1000.0,
    ) -> None:
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_head ({n_head})")
        self.in_bands, self.n_classes = in_bands, n_classes
        self.d_model, self.n_head, self.d_k, self.period = d_model, n_head, d_k, period
        self.embed = nn.Sequential(nn.Linear(in_bands, d_model), nn.LayerNorm(d_model))
        self.key = nn.Linear(d_model, n_head * d_k)
        self.query = nn.Parameter(torch.randn(n_head, d_k) * math.sqrt(2.0 / d_k))
        self.attn_drop = nn.Dropout(dropout)
        widths = [d_model, *mlp]
        layers: list[nn.Module] = []
        for c_in, c_out in itertools.pairwise(widths):
            layers += [nn.Linear(c_in, c_out), nn.BatchNorm1d(c_out), nn.ReLU(inplace=True)]
        self.mlp = nn.Sequential(*layers, nn.Dropout(dropout))
        self.n_features = widths[-1]
        self.head = nn.Linear(widths[-1], n_classes)

    def attend(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The pooled features and the attention over the gathered observed days.

        Args:
            x: (B, C + 1, T) encoding (flag last).

        Returns:
            ``features`` (B, d_model); ``attn`` (B, n_head, K) weights over the gathered days
            (0 on padding); ``days`` (B, K) the gathered day indices (-1 on padding).
        """
        values, observed = _split(x, self.in_bands)
        b = observed.shape[0]
        obs, order, mask = gather_observed(values, observed)
        e = self.embed(obs) + day_encoding(order, self.d_model // self.n_head, self.period).repeat(
            1, 1, self.n_head
        ).to(obs.dtype)  # (B, K, d_model)
        keys = self.key(e).view(b, -1, self.n_head, self.d_k)
        logits = torch.einsum("bkhd,hd->bhk", keys, self.query) / math.sqrt(self.d_k)
        # a finite fill: exp(min - max) is exactly 0 beside any observation, and a pixel
        # without observations gets uniform weights that the mask then zeroes (no NaN)
        logits = logits.masked_fill(~mask[:, None], torch.finfo(logits.dtype).min)
        attn = logits.softmax(dim=-1) * mask[:, None].to(logits.dtype)
        heads = e.view(b, -1, self.n_head, self.d_model // self.n_head)
        pooled = torch.einsum("bhk,bkhc->bhc", self.attn_drop(attn), heads).reshape(b, -1)
        days = torch.where(mask, order, torch.full_like(order, -1))
        return pooled, attn, days

    def forward(self, x: Tensor) -> Tensor:
        """Classify pixel-years.

        Args:
            x: (B, C + 1, 365) encoding (flag last), or (B, P, P, C + 1, 365) patches.

        Returns:
            (B, n_classes) logits.
        """
        return self.head(self.features(_centre(x)))

    def features(self, x: Tensor) -> Tensor:
        """The MLP's output, before the classifier.

        Args:
            x: (B, C + 1, 365) encoding (flag last).

        Returns:
            (B, n_features) features.
        """
        pooled, _, _ = self.attend(x)
        return self.mlp(pooled)


class TemporalTransformer(nn.Module):
    """A small transformer encoder over the observed days, read out from a class token.

    Each observation is embedded (linear) and the day-of-year encoding added; a learned class
    token joins them, padding is masked out of every attention, and the class token's final
    state (layer norm, linear) gives the logits. The class token is never masked, so a pixel
    without observations is well defined (it attends only to itself).

    Args:
        in_bands: spectral bands C (the input has C + 1 channels, the observed flag last).
        n_classes: output classes.
        d_model: embedding width (divisible by ``n_head``).
        n_head: attention heads.
        n_layers: encoder layers (pre-norm).
        ff_mult: feed-forward width as a multiple of ``d_model``.
        dropout: dropout inside the layers.
        period: day-encoding period.
    """

    def __init__(
        self,
        in_bands: int,
        n_classes: int,
        d_model: int = 64,
        n_head: int = 4,
        n_layers: int = 2,
        ff_mult: int = 2,
        dropout: float = 0.1,
        period: float = 1000.0,
    ) -> None:
        super().__init__()
        self.in_bands, self.n_classes = in_bands, n_classes
        self.d_model, self.period = d_model, period
        self.embed = nn.Linear(in_bands, d_model)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model, n_head, ff_mult * d_model, dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.n_features = d_model
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Classify pixel-years.

        Args:
            x: (B, C + 1, 365) encoding (flag last), or (B, P, P, C + 1, 365) patches.

        Returns:
            (B, n_classes) logits.
        """
        return self.head(self.features(_centre(x)))

    def features(self, x: Tensor) -> Tensor:
        """The class token's normalised final state, before the classifier.

        Args:
            x: (B, C + 1, 365) encoding (flag last).

        Returns:
            (B, n_features) features.
        """
        values, observed = _split(x, self.in_bands)
        obs, days, mask = gather_observed(values, observed)
        e = self.embed(obs) + day_encoding(days, self.d_model, self.period).to(obs.dtype)
        tokens = torch.cat([self.cls.expand(e.shape[0], -1, -1), e], dim=1)
        pad = torch.cat([torch.zeros_like(mask[:, :1]), ~mask], dim=1)
        out = self.encoder(tokens, src_key_padding_mask=pad)
        return self.norm(out[:, 0])


class CentrePatchTemporal(nn.Module):
    """Spatial context for a temporal model: the centre pixel's features and its patch's.

    The temporal encoder (any model above, shared weights) runs on every pixel of a
    ``P x P`` patch; the centre pixel's features and the mean features of the pixels with at
    least one observation (the centre included) are concatenated and classified by an MLP. It
    costs P^2 encoder passes per sample.

    Args:
        encoder: a temporal model with ``features`` and ``n_features`` (its head is unused).
        n_classes: output classes.
        hidden: width of the hidden layer of the classifier.
        dropout: dropout before the classifier's output layer.
    """

    def __init__(
        self, encoder: nn.Module, n_classes: int, hidden: int = 128, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.encoder, self.n_classes = encoder, n_classes
        f = int(encoder.n_features)  # type: ignore[arg-type]
        self.head = nn.Sequential(
            nn.Linear(2 * f, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Classify the centre pixels of patches.

        Args:
            x: (B, P, P, C + 1, 365) patches of the encoding (flag last).

        Returns:
            (B, n_classes) logits.
        """
        if x.ndim != 5:
            raise ValueError(f"expected (B, P, P, C+1, T) patches, got {tuple(x.shape)}")
        b, p, q = x.shape[:3]
        f = self.encoder.features(x.reshape(b * p * q, *x.shape[3:])).view(b, p * q, -1)
        centre = f[:, (p // 2) * q + q // 2]
        seen = (x[..., -1, :] > 0).any(-1).reshape(b, p * q, 1).to(f.dtype)
        context = (f * seen).sum(1) / seen.sum(1).clamp(min=1)
        return self.head(torch.cat([centre, context], dim=1))
