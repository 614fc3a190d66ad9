"""SR generators and the PatchGAN: shapes, size, ICNR, receptive field, options."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from bsrlc.models.sr import (
    RRDB,
    PatchDiscriminator,
    RRDBNet,
    SRResNet,
    SubPixelUpsample,
    icnr_,
    upsample_steps,
)


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def influence_extent(g: torch.nn.Module, scale: int, n: int = 41) -> int:
    """LR pixels each side that a one-pixel change reaches (float64, so nothing is lost)."""
    g = g.double().eval()
    x = torch.randn(1, g.in_bands, n, n, dtype=torch.float64)
    x2 = x.clone()
    c = n // 2
    x2[..., c, c] += 1.0
    with torch.no_grad():
        changed = (g(x2) - g(x)).abs().sum((0, 1)) > 0  # (s*n, s*n)
    rows = torch.nonzero(changed.any(1)).flatten()
    cols = torch.nonzero(changed.any(0)).flatten()
    return max(
        c - rows.min().item() // scale,
        rows.max().item() // scale - c,
        c - cols.min().item() // scale,
        cols.max().item() // scale - c,
    )


def test_seed_generator_size_and_x3_shape():
    g = SRResNet()
    assert abs(n_params(g) - 1.6e6) <= 0.1 * 1.6e6  # the seed's ~1.6 M parameters
    assert g(torch.randn(2, 6, 10, 12)).shape == (2, 6, 30, 36)
    assert g.scale == 3 and g.in_bands == g.out_bands == 6
    assert len(g.upsample) == 1 and g.upsample[0].shuffle.upscale_factor == 3


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_generators_upsample_by_scale(scale):
    x = torch.randn(1, 3, 3, 4)
    g = SRResNet(in_bands=3, out_bands=2, channels=8, n_blocks=1, scale=scale)
    assert g(x).shape == (1, 2, 3 * scale, 4 * scale)
    assert len(g.upsample) == len(upsample_steps(scale))
    for up in ("pixelshuffle", "nearest"):
        r = RRDBNet(in_bands=3, channels=8, growth=4, n_blocks=1, scale=scale, upsample=up)
        assert r(x).shape == (1, 3, 3 * scale, 4 * scale)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="scale 5"):
        SRResNet(scale=5)
    with pytest.raises(ValueError, match="padding_mode"):
        SRResNet(padding_mode="mirror")
    with pytest.raises(ValueError, match="residual_bicubic"):
        SRResNet(in_bands=6, out_bands=3, residual_bicubic=True)
    with pytest.raises(ValueError, match="upsample"):
        RRDBNet(upsample="deconv")


def test_icnr_makes_the_subpixel_conv_constant_over_each_block():
    torch.manual_seed(0)
    up = SubPixelUpsample(channels=4, factor=3)
    ones = torch.ones(1, 4, 6, 6)
    with torch.no_grad():
        out = up.shuffle(up.conv(ones))  # (1, 4, 18, 18), before the activation
    inner = out[..., 3:-3, 3:-3].reshape(1, 4, 4, 3, 4, 3)  # away from the zero padding
    assert torch.allclose(inner, inner[:, :, :, :1, :, :1].expand_as(inner), atol=1e-6)
    # without ICNR the same conv gives a checkerboard
    torch.nn.init.kaiming_normal_(up.conv.weight)
    with torch.no_grad():
        out = up.shuffle(up.conv(ones))[..., 3:-3, 3:-3].reshape(1, 4, 4, 3, 4, 3)
    assert (out - out[:, :, :, :1, :, :1]).abs().max() > 1e-2


def test_icnr_repeats_each_kernel_and_checks_channels():
    w = torch.empty(2 * 4, 3, 3, 3)
    icnr_(w, 2)
    assert torch.equal(w[0:4], w[0:1].expand(4, -1, -1, -1))
    assert not torch.equal(w[0], w[4])
    with pytest.raises(ValueError, match="multiple"):
        icnr_(torch.empty(7, 3, 3, 3), 2)


def test_replicate_padding_keeps_a_constant_image_constant():
    g = SRResNet(in_bands=3, channels=8, n_blocks=1, padding_mode="replicate").eval()
    with torch.no_grad():
        out = g(torch.full((1, 3, 9, 9), 0.5))
    assert torch.allclose(out, out[..., :1, :1].expand_as(out), atol=1e-5)
    zeros = SRResNet(in_bands=3, channels=8, n_blocks=1).eval()
    with torch.no_grad():
        out = zeros(torch.full((1, 3, 9, 9), 0.5))
    assert (out - out[..., 13:14, 13:14]).abs().max() > 1e-4  # zero padding shows at borders


@pytest.mark.parametrize(
    ("make", "scale"),
    [
        (lambda: SRResNet(in_bands=2, channels=8, n_blocks=2), 3),
        (lambda: SRResNet(in_bands=2, channels=8, n_blocks=1, head_kernel=5, tail_kernel=3), 3),
        (
            lambda: SRResNet(
                in_bands=2,
                channels=4,
                n_blocks=0,
                head_kernel=3,
                tail_kernel=3,
                residual_bicubic=True,
            ),
            3,
        ),
        (lambda: SRResNet(in_bands=2, channels=8, n_blocks=1, scale=4, tail_kernel=3), 4),
        (lambda: RRDBNet(in_bands=2, channels=8, growth=4, n_blocks=1), 3),
        (lambda: RRDBNet(in_bands=2, channels=8, growth=4, n_blocks=1, upsample="nearest"), 3),
    ],
)
def test_receptive_field_bounds_the_influence(make, scale):
    torch.manual_seed(0)
    g = make()
    extent = influence_extent(g, scale)
    assert extent <= g.receptive_field <= extent + 1  # an upper bound, and a tight one


def test_seed_receptive_field():
    assert SRResNet().receptive_field == 4 + 32 + 1 + 1 + 2


def test_residual_bicubic_predicts_over_bicubic():
    g = SRResNet(in_bands=3, channels=8, n_blocks=1, residual_bicubic=True)
    torch.nn.init.zeros_(g.tail.weight)
    torch.nn.init.zeros_(g.tail.bias)
    x = torch.randn(1, 3, 8, 8)
    bicubic = F.interpolate(x, scale_factor=3, mode="bicubic", align_corners=False)
    assert torch.allclose(g(x), bicubic, atol=1e-6)


def test_rrdb_is_residual_and_has_no_batch_norm():
    block = RRDB(channels=8, growth=4)
    for dense in block.blocks:
        torch.nn.init.zeros_(dense.convs[-1].weight)
        torch.nn.init.zeros_(dense.convs[-1].bias)
    x = torch.randn(2, 8, 6, 6)
    assert torch.allclose(block(x), 1.2 * x)  # identity dense blocks: x + 0.2 * x
    net = RRDBNet(in_bands=3, channels=8, growth=4, n_blocks=2)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in SRResNet().modules())


@pytest.mark.parametrize("sn", [False, True])
def test_patch_discriminator(sn):
    d = PatchDiscriminator(in_bands=4, spectral_norm=sn).eval()  # eval: no power iteration
    x = torch.randn(1, 4, 72, 72)
    logits, feats = d(x, return_features=True)
    assert logits.shape == (1, 1, 6, 6)
    assert [f.shape[1] for f in feats] == [64, 64, 128, 256, 512]
    assert all(torch.equal(a, b) for a, b in zip(d.features(x), feats, strict=True))
    assert torch.equal(d(x), logits)
    has_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())
    assert has_bn == (0 if sn else 4)  # batch norm on all but the first stage (and the head)
    parametrised = [m for m in d.modules() if hasattr(m, "parametrizations")]
    assert len(parametrised) == (6 if sn else 0)


def test_spectral_norm_bounds_the_largest_singular_value():
    d = PatchDiscriminator(in_bands=3, channels=(8, 8, 16, 16, 32), spectral_norm=True)
    x = torch.randn(2, 3, 40, 40)
    for _ in range(3):
        d(x)  # training-mode forwards run the power iteration
    convs = [m for m in d.modules() if hasattr(m, "parametrizations")]
    for conv in convs:
        w = conv.weight.detach().reshape(conv.weight.shape[0], -1)
        assert abs(torch.linalg.matrix_norm(w, 2).item() - 1) < 0.1


def test_hydra_builds_the_networks_from_plain_numbers():
    cfg = OmegaConf.create(
        {
            "g": {
                "_target_": "bsrlc.models.sr.SRResNet",
                "in_bands": 3,
                "channels": 8,
                "n_blocks": 1,
                "scale": 3,
            },
            "d": {
                "_target_": "bsrlc.models.sr.PatchDiscriminator",
                "in_bands": 3,
                "channels": [8, 8, 16, 16, 32],
                "spectral_norm": True,
            },
        }
    )
    g, d = instantiate(cfg.g), instantiate(cfg.d)
    sr = g(torch.randn(2, 3, 24, 24))
    assert sr.shape == (2, 3, 72, 72) and d(sr).shape == (2, 1, 6, 6)
    d(sr).mean().backward()
    assert all(p.grad is not None for p in g.parameters())
