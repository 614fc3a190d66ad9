"""SR metrics against torchmetrics and hand computation; the bicubic baselines."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.image import (
    ErrorRelativeGlobalDimensionlessSynthesis,
    SpectralAngleMapper,
    StructuralSimilarityIndexMeasure,
)

from bsrlc.evaluation.sr_metrics import (
    METRIC_KEYS,
    BandGainFitter,
    SRBenchmark,
    SRMetrics,
    StreamingERGAS,
    apply_band_gains,
    bicubic_upsample,
    compare_to_baselines,
    ergas_per_image,
    fit_band_gains,
    harmonised_bicubic,
    metric_gains,
)


@pytest.fixture()
def pair():
    torch.manual_seed(0)
    target = torch.rand(4, 5, 24, 24) * 0.4 + 0.05
    pred = target + 0.02 * torch.randn_like(target)
    return pred, target


def test_keys_and_psnr_of_a_known_mse():
    target = torch.rand(2, 3, 16, 16) * 0.3 + 0.1
    pred = target + 0.01  # MSE = 1e-4
    m = SRMetrics(data_range=1.0)
    m.update(pred, target)
    out = m.compute()
    assert tuple(out) == METRIC_KEYS == ("psnr", "ssim", "sam", "ergas")
    assert out["psnr"].item() == pytest.approx(40.0, abs=1e-3)
    half = SRMetrics(data_range=0.5)
    half.update(pred, target)
    assert half.compute()["psnr"].item() == pytest.approx(10 * math.log10(0.25 / 1e-4), abs=1e-3)


@pytest.mark.filterwarnings("ignore:Metric `UniversalImageQualityIndex`")
def test_streaming_equals_torchmetrics(pair):
    pred, target = pair
    m = SRMetrics(data_range=1.0)
    m.update(pred[:2], target[:2])
    m.update(pred[2:], target[2:])
    out = m.compute()
    mse = ((pred - target) ** 2).mean()
    assert out["psnr"].item() == pytest.approx((10 * torch.log10(1 / mse)).item(), rel=1e-5)
    ssim = StructuralSimilarityIndexMeasure(data_range=1.0)(pred, target)
    assert out["ssim"].item() == pytest.approx(ssim.item(), rel=1e-5)
    sam = SpectralAngleMapper()(pred, target)  # radians
    assert out["sam"].item() == pytest.approx(math.degrees(sam.item()), rel=1e-4)  # degrees
    ergas = ErrorRelativeGlobalDimensionlessSynthesis(ratio=3)(pred, target)
    assert out["ergas"].item() == pytest.approx(ergas.item(), rel=1e-5)
    one = SRMetrics(data_range=1.0)
    one.update(pred, target)
    assert all(torch.isclose(one.compute()[k], out[k], rtol=1e-5) for k in METRIC_KEYS)
    assert all(torch.isclose(m(pred, target)[k], out[k], rtol=1e-5) for k in METRIC_KEYS)


def test_ergas_by_hand():
    target = torch.full((1, 2, 8, 8), 0.2)
    pred = target + 0.02  # RMSE / mean = 0.1 in every band
    assert ergas_per_image(pred, target, ratio=3).item() == pytest.approx(100 / 3 * 0.1)
    assert ergas_per_image(target, target).max() == 0
    e = StreamingERGAS(ratio=3)
    e.update(pred, target)
    e.update(pred, torch.zeros_like(target))  # nodata image: skipped, not inf
    assert e.compute().item() == pytest.approx(100 / 3 * 0.1, rel=1e-6)


def test_sam_masks_nodata_and_reset(pair):
    pred, target = pair
    pred = pred.clone()
    pred[0, :, :4, :4] = 0  # nodata
    m = SRMetrics()
    m.update(pred, target)
    sam = m.compute()["sam"]
    keep = torch.ones(4, 24, 24, dtype=torch.bool)
    keep[0, :4, :4] = False
    dot = (pred * target).sum(1)
    cos = dot / (pred.norm(dim=1) * target.norm(dim=1)).clamp_min(1e-12)
    ref = torch.rad2deg(torch.acos(cos.clamp(-1, 1))[keep].double().mean())
    assert torch.isfinite(sam) and sam.item() == pytest.approx(ref.item(), rel=1e-4)
    assert m.has_data()
    m.reset()
    assert not m.has_data()
    with pytest.raises(ValueError, match="differ"):
        m.update(pred, target[..., :8])


def test_bicubic_upsample_matches_torch():
    lr = torch.rand(2, 3, 5, 7)
    up = bicubic_upsample(lr, 3)
    assert up.shape == (2, 3, 15, 21)
    # a constant image stays constant (align_corners=False, border clamping)
    assert torch.allclose(bicubic_upsample(torch.full((1, 1, 4, 4), 0.3), 3), torch.tensor(0.3))


def test_harmonised_bicubic_beats_bicubic_on_a_linear_sensor_difference():
    torch.manual_seed(1)
    lr = torch.rand(3, 4, 10, 10) * 0.3 + 0.05
    gain = torch.tensor([1.1, 0.9, 1.05, 0.95])
    offset = torch.tensor([0.01, -0.02, 0.0, 0.03])
    hr = apply_band_gains(bicubic_upsample(lr, 3), gain, offset)
    g, o = fit_band_gains(bicubic_upsample(lr, 3), hr)
    assert torch.allclose(g, gain, atol=1e-4) and torch.allclose(o, offset, atol=1e-4)
    plain, harm = SRMetrics(), SRMetrics()
    plain.update(bicubic_upsample(lr, 3), hr)
    harm.update(harmonised_bicubic(lr, hr, 3), hr)
    p, h = plain.compute(), harm.compute()
    assert h["psnr"] > p["psnr"] + 20 and h["ergas"] < p["ergas"] and h["sam"] < p["sam"]
    # fixed gains (fitted elsewhere) are applied as given
    fixed = harmonised_bicubic(lr, None, 3, gains=(gain, offset))
    assert torch.allclose(fixed, hr, atol=1e-6)
    with pytest.raises(ValueError):
        harmonised_bicubic(lr, None, 3)


def test_band_gain_fitter_streams_and_masks():
    torch.manual_seed(2)
    x = torch.rand(6, 3, 8, 8)
    y = 2 * x + 0.1
    y[0, :, 0, 0] = 99.0  # an outlier, masked out below
    valid = torch.ones(6, 8, 8, dtype=torch.bool)
    valid[0, 0, 0] = False
    f = BandGainFitter()
    f.update(x[:3], y[:3], valid[:3])
    f.update(x[3:], y[3:], valid[3:])
    gain, offset = f.compute()
    assert torch.allclose(gain, torch.full((3,), 2.0), atol=1e-5)
    assert torch.allclose(offset, torch.full((3,), 0.1), atol=1e-5)
    flat_gain, flat_off = fit_band_gains(torch.ones(1, 1, 4, 4), torch.full((1, 1, 4, 4), 0.5))
    assert flat_gain.item() == 1 and flat_off.item() == pytest.approx(-0.5)
    with pytest.raises(RuntimeError):
        BandGainFitter().compute()


def test_gains_and_benchmark():
    torch.manual_seed(3)
    hr = torch.rand(2, 4, 36, 36) * 0.3 + 0.05
    lr = torch.nn.functional.avg_pool2d(hr, 3)
    res = compare_to_baselines(hr.clone(), lr, hr, scale=3)  # a perfect "model"
    assert set(res) == {
        "model",
        "bicubic",
        "bicubic_harmonised",
        "gain_bicubic",
        "gain_bicubic_harmonised",
    }
    assert all(set(v) == set(METRIC_KEYS) for v in res.values())
    for base in ("bicubic", "bicubic_harmonised"):
        g = res[f"gain_{base}"]
        assert g["ssim"] > 0 and g["sam"] > 0 and g["ergas"] > 0  # positive = model better
        assert g["ergas"] == pytest.approx(res[base]["ergas"] - res["model"]["ergas"])
    m = {k: torch.tensor(1.0) for k in METRIC_KEYS}
    b = {k: torch.tensor(3.0) for k in METRIC_KEYS}
    assert {k: v.item() for k, v in metric_gains(m, b).items()} == {
        "psnr": -2.0,
        "ssim": -2.0,
        "sam": 2.0,
        "ergas": 2.0,
    }
    bench = SRBenchmark(scale=3)
    bench.update(hr, lr, hr)
    bench.update(hr, lr, hr)
    assert bench.compute()["bicubic"]["ergas"].item() == pytest.approx(
        res["bicubic"]["ergas"], rel=1e-5
    )
