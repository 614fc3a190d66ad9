"""SR metrics beyond PSNR (consistency, synthesis, correctness, spectrum, shift tolerance), the
shift-tolerant L1 loss, and the scoring command ``python -m bsrlc.evaluation.sr``."""

from __future__ import annotations

import importlib.util
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from bsrlc import losses
from bsrlc.evaluation.sr_metrics import (
    QUALITY_KEYS,
    Correctness,
    SRMetrics,
    SRQuality,
    bicubic_upsample,
    correctness_scores,
    histogram_match,
    nested_border,
    shift_tolerant_mse,
    upsample,
)

HAS_OPENSR = importlib.util.find_spec("opensr_test") is not None


def scene(b: int = 3, c: int = 4, n: int = 96, seed: int = 0) -> torch.Tensor:
    """Reflectance with texture at every scale: a 1/f field plus sharp-edged 8 px blocks."""
    g = torch.Generator().manual_seed(seed)
    f = torch.fft.fftfreq(n)
    radius = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2).clamp_min(1 / n)
    texture = torch.fft.ifft2(torch.fft.fft2(torch.randn(b, 1, n, n, generator=g)) / radius).real
    texture = texture / texture.std()
    blocks = F.interpolate(torch.rand(b, 1, n // 8, n // 8, generator=g), scale_factor=8)
    gains = torch.rand(1, c, 1, 1, generator=g) * 0.5 + 0.75
    return (0.15 + 0.05 * (0.6 * texture + 1.5 * blocks) * gains).clamp(0.01, 0.6)


def high_pass_noise(like: torch.Tensor, seed: int = 1) -> torch.Tensor:
    noise = torch.randn(like.shape, generator=torch.Generator().manual_seed(seed))
    return noise - F.avg_pool2d(F.pad(noise, (1, 1, 1, 1), mode="replicate"), 3, 1)


@pytest.fixture(scope="module")
def triplet():
    hr = scene()
    lr = F.avg_pool2d(hr, 3)  # nested grid: each LR pixel is the mean of its 3x3 HR pixels
    return lr, hr


def quality(sr, lr, hr, **kwargs) -> dict[str, float]:
    q = SRQuality(**kwargs)
    q.update(sr, lr, hr)
    return {k: float(v) for k, v in q.compute().items()}


def test_hr_against_itself_is_ideal(triplet):
    lr, hr = triplet
    q = quality(hr, lr, hr)
    assert tuple(q) == QUALITY_KEYS
    assert q["spectrum_error"] == 0.0
    assert q["hallucination"] == 0.0 and q["omission"] == 0.0 and q["improvement"] == 1.0
    assert q["consistency"] < 1e-7  # LR is the block mean of HR
    assert q["psnr_shift"] == math.inf
    assert q["synthesis"] > 0.005  # the detail HR has over bicubic(LR)


def test_bicubic_is_blurrier_than_a_sharper_estimate(triplet):
    lr, hr = triplet
    bicubic = bicubic_upsample(lr, 3)
    sharper = bicubic + 0.7 * (hr - bicubic)
    qb, qs = quality(bicubic, lr, hr), quality(sharper, lr, hr)
    # measured: bicubic 3.2 (a factor ~1500 in power above 0.25 cycles/px), sharper 0.31
    assert qb["spectrum_error"] > 2.0 > 0.5 > qs["spectrum_error"] > 0.0
    assert qb["omission"] > 0.6 > qs["omission"]  # bicubic stays at the LR
    assert qs["improvement"] > 0.9
    assert qb["synthesis"] < qs["synthesis"]  # it adds little over interpolation


def test_hallucinating_sr_scores_hallucination(triplet):
    lr, hr = triplet
    bicubic = bicubic_upsample(lr, 3)
    noisy = hr + 0.03 * high_pass_noise(hr)
    qn, qb = quality(noisy, lr, hr), quality(bicubic, lr, hr)
    # measured: noisy 0.62, bicubic 0.07
    assert qn["hallucination"] > qb["hallucination"] + 0.3
    assert qn["spectrum_error"] > 0.3  # too much high-frequency power
    for q in (qn, qb):
        assert math.isclose(q["improvement"] + q["omission"] + q["hallucination"], 1, abs_tol=1e-6)


def test_shifted_pair_plain_psnr_drops_shift_tolerant_psnr_recovers():
    big = scene(b=2, n=104, seed=5)
    hr = big[..., 2:98, 2:98]
    sr = big[..., 3:99, 1:97] + torch.tensor([0.02, -0.01, 0.0, 0.01]).view(1, 4, 1, 1)
    plain = SRMetrics()
    plain.update(sr, hr)
    psnr = float(plain.compute()["psnr"])
    assert psnr < 35
    mse = shift_tolerant_mse(sr, hr, max_shift=2)
    assert mse.max() < 1e-12  # the (1, -1) shift and the per-band bias remove it all
    assert float(quality(sr, F.avg_pool2d(hr, 3), hr, border=0)["psnr_shift"]) > 100
    assert shift_tolerant_mse(sr, hr, max_shift=2, bias=False).min() > 1e-5  # bias is needed
    # half a pixel (the HR is the mean of two SR columns): only the sub-pixel search finds it
    half = 0.5 * (big[..., 2:98, 2:98] + big[..., 2:98, 3:99])
    sharp = big[..., 2:98, 2:98]
    assert shift_tolerant_mse(sharp, half, 2, subpixel=2).max() < 1e-12
    assert shift_tolerant_mse(sharp, half, 2, subpixel=1).min() > 1e-6


def test_shift_tolerant_l1_loss():
    big = scene(b=2, n=64, seed=2)
    hr = big[..., 1:61, 1:61]
    sr = big[..., 2:62, 0:60].clone().requires_grad_(True)
    assert losses.l1_content_loss(sr, hr) > 0.005
    loss = losses.shift_tolerant_l1_loss(sr, hr, max_shift=1)
    assert loss.item() < 1e-7
    noisy = (sr + 0.01).detach().requires_grad_(True)
    loss = losses.shift_tolerant_l1_loss(noisy, hr, max_shift=1)
    assert loss.item() == pytest.approx(0.01, rel=1e-4)  # no bias correction by default
    assert losses.shift_tolerant_l1_loss(noisy, hr, max_shift=1, bias=True).item() < 1e-6
    loss.backward()
    assert noisy.grad is not None and torch.isfinite(noisy.grad).all()
    assert noisy.grad.abs().sum() > 0
    # no shift, no bias: the plain (masked) L1
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    valid = torch.rand(2, 8, 8) > 0.3
    for v in (None, valid):
        assert losses.shift_tolerant_l1_loss(x, y, 0, valid=v).item() == pytest.approx(
            losses.l1_content_loss(x, y, v).item(), rel=1e-6
        )
    with pytest.raises(ValueError, match="differ"):
        losses.shift_tolerant_l1_loss(x, y[..., :7])


def test_streaming_equals_one_batch_and_border(triplet):
    lr, hr = triplet
    sr = hr + 0.01 * high_pass_noise(hr, seed=3)
    one = quality(sr, lr, hr)
    q = SRQuality()
    q.update(sr[:1], lr[:1], hr[:1])
    q.update(sr[1:], lr[1:], hr[1:])
    two = {k: float(v) for k, v in q.compute().items()}
    assert two == pytest.approx(one, rel=1e-5)
    assert nested_border(3) == 15 and nested_border(4) == 16 and nested_border(2) == 16
    with pytest.raises(ValueError, match="multiple"):
        SRQuality(border=16)
    q.reset()
    assert not q.has_data()


def test_correctness_corners():
    """The three corners of opensr-test's triangle: at the HR, at the LR, away from both."""
    hr = scene(b=1, c=3, n=48, seed=7)
    lr_up = upsample(F.avg_pool2d(hr, 3), 3)
    for sr, winner in ((hr, 0), (lr_up, 1), (2 * hr - lr_up + 0.05 * high_pass_noise(hr), 2)):
        weights, mask = correctness_scores(sr.double(), lr_up.double(), hr.double())
        assert torch.allclose(weights.sum(0), torch.ones(()).double())
        assert (weights[:, mask].argmax(0) == winner).float().mean() > 0.6
    soft = Correctness(norm="softmin")
    soft.update(hr, lr_up, hr)
    share = soft.compute()
    assert 0.9 < float(share["improvement"]) < 1  # softmin never reaches 1
    with pytest.raises(ValueError, match="norm"):
        Correctness(norm="argmax")


# -- opensr-test cross-check ------------------------------------------------------------------


def test_histogram_match_is_skimages():
    skimage_exposure = pytest.importorskip("skimage.exposure")
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(2, 3, 30, 30, generator=g) * 40).round() / 100  # ties, as int16 data has
    ref = torch.rand(2, 3, 36, 36, generator=g) ** 2 * 0.5
    ours = histogram_match(x.double(), ref.double()).numpy()
    for i in range(2):
        theirs = skimage_exposure.match_histograms(
            x[i].double().numpy(), ref[i].double().numpy(), channel_axis=0
        )
        assert abs(ours[i] - theirs).max() < 1e-12


@pytest.mark.skipif(not HAS_OPENSR, reason="opensr-test not installed (pip install .[opensr])")
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("norm", ["percent", "softmin"])
def test_matches_opensr_test(triplet, norm):
    """Same numbers as opensr-test 1.3.3 with its interpolators and no border.

    opensr-test's spatial harmonisation (phase correlation) is switched off: bsrlc does not
    align the SR (psnr_shift searches shifts instead). Its default border of 16 fails at x3.
    """
    import opensr_test

    lr, hr = triplet
    bicubic = bicubic_upsample(lr, 3)
    cases = {
        "bicubic": bicubic,
        "sharper": bicubic + 0.7 * (hr - bicubic),
        "noisy": hr + 0.03 * high_pass_noise(hr),
    }
    for name, sr in cases.items():
        i = 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = opensr_test.Metrics(
                border_mask=0, harm_apply_spatial=False, correctness_norm=norm
            ).compute(lr=lr[i], sr=sr[i], hr=hr[i])
        ours = quality(
            sr[i : i + 1],
            lr[i : i + 1],
            hr[i : i + 1],
            border=0,
            reference="bilinear",
            consistency_mode="bilinear",
            correctness_norm=norm,
        )
        pairs = {
            "consistency": "reflectance",
            "synthesis": "synthesis",
            "improvement": "im_metric",
            "omission": "om_metric",
            "hallucination": "ha_metric",
        }
        for k, their_key in pairs.items():
            assert ours[k] == pytest.approx(theirs[their_key], rel=1e-4, abs=1e-6), (name, k)
    with pytest.raises(ValueError, match="height"):  # opensr-test's own border at x3
        opensr_test.Metrics().compute(lr=lr[0], sr=hr[0], hr=hr[0])
