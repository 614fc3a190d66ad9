"""SR losses: known values, masking of nodata, finite gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional.image import spectral_angle_mapper

from bsrlc import losses


def unit(c: int, i: int) -> torch.Tensor:
    v = torch.zeros(1, c, 1, 1)
    v[0, i] = 1
    return v


def test_sam_known_angles():
    x = torch.rand(2, 4, 8, 8) + 0.1
    angle, valid = losses.spectral_angle(x, x)
    assert valid.all() and angle.abs().max() < 1e-6  # identical
    angle, _ = losses.spectral_angle(x, 3 * x)
    assert angle.abs().max() < 1e-6  # same direction, other brightness
    assert math.isclose(
        losses.spectral_angle_loss(unit(3, 0), unit(3, 1)).item(), math.pi / 2, rel_tol=1e-6
    )
    assert math.isclose(
        losses.spectral_angle_loss(unit(3, 0), -unit(3, 0)).item(), math.pi, rel_tol=1e-6
    )
    diag = torch.tensor([1.0, 1.0]).view(1, 2, 1, 1)
    assert math.isclose(
        losses.spectral_angle_loss(unit(2, 0), diag).item(), math.pi / 4, rel_tol=1e-6
    )


def test_sam_matches_torchmetrics_on_valid_pixels():
    torch.manual_seed(0)
    x, y = torch.rand(3, 5, 10, 10) + 0.01, torch.rand(3, 5, 10, 10) + 0.01
    ref = spectral_angle_mapper(x, y)  # radians
    assert math.isclose(losses.spectral_angle_loss(x, y).item(), ref.item(), rel_tol=1e-5)


def test_sam_masks_zero_and_nan_pixels_without_nan_gradients():
    torch.manual_seed(1)
    y = torch.rand(2, 4, 6, 6) + 0.1
    x = (y + 0.05 * torch.rand_like(y)).requires_grad_()
    x_data = x.detach().clone()
    x_data[0, :, :2, :2] = 0  # nodata in the prediction
    y2 = y.clone()
    y2[1, :, 3, 3] = float("nan")  # invalid in the reference
    xin = x_data.requires_grad_()
    loss = losses.spectral_angle_loss(xin, y2)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(xin.grad).all()
    angle, valid = losses.spectral_angle(xin.detach(), y2)
    assert valid.sum() == 2 * 36 - 4 - 1
    assert math.isclose(loss.item(), angle[valid].mean().item(), rel_tol=1e-6)
    # an extra mask restricts further
    keep = torch.zeros(2, 6, 6, dtype=torch.bool)
    keep[0, 5, 5] = True
    _, v = losses.spectral_angle(xin.detach(), y2, valid=keep)
    assert v.sum() == 1


def test_sam_all_zero_gives_zero_loss_and_finite_gradients():
    z = torch.zeros(1, 4, 4, 4, requires_grad=True)
    loss = losses.spectral_angle_loss(z, torch.rand(1, 4, 4, 4))
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(z.grad).all()


def test_sam_gradients_stay_bounded_near_zero_angle():
    # acos(cos) has an unbounded derivative at 0; the atan2 form keeps gradients of order 1/|x|
    y = torch.rand(1, 6, 4, 4) + 0.2
    x = (y + 1e-6 * torch.randn_like(y)).requires_grad_()
    losses.spectral_angle_loss(x, y).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().max() < 10
    xb = (y + 0.01).bfloat16().requires_grad_()
    lb = losses.spectral_angle_loss(xb, y.bfloat16())
    lb.backward()
    assert torch.isfinite(lb) and torch.isfinite(xb.grad.float()).all()


def test_l1_content_and_mask():
    sr, hr = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    hr[0] = 3
    assert losses.l1_content_loss(sr, hr).item() == pytest.approx(2.0)
    valid = torch.zeros(2, 4, 4, dtype=torch.bool)
    valid[1] = True
    assert losses.l1_content_loss(sr, hr, valid).item() == pytest.approx(1.0)
    assert losses.l1_content_loss(sr, hr, torch.zeros_like(valid)).item() == 0


def test_lr_consistency():
    hr = torch.rand(2, 3, 12, 12)
    lr = F.avg_pool2d(hr, 3)
    assert losses.lr_consistency_loss(hr, lr, 3) < 1e-7
    assert losses.lr_consistency_loss(hr + 0.5, lr, 3).item() == pytest.approx(0.5)
    # different normalisations of the same reflectance: compared after de-normalising
    m_hr, s_hr = torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.5, 0.5, 2.0])
    m_lr, s_lr = torch.tensor([0.0, 0.1, 0.2]), torch.tensor([1.0, 0.25, 0.5])
    hr_n = (hr - m_hr.view(1, -1, 1, 1)) / s_hr.view(1, -1, 1, 1)
    lr_n = (lr - m_lr.view(1, -1, 1, 1)) / s_lr.view(1, -1, 1, 1)
    assert losses.lr_consistency_loss(hr_n, lr_n, 3, (m_hr, s_hr), (m_lr, s_lr)) < 1e-6
    assert losses.lr_consistency_loss(hr_n, lr_n, 3) > 0.1
    with pytest.raises(ValueError, match="both"):
        losses.lr_consistency_loss(hr_n, lr_n, 3, (m_hr, s_hr))
    with pytest.raises(ValueError, match="3x"):
        losses.lr_consistency_loss(hr, lr[..., :3], 3)


def test_bce_losses_with_one_sided_smoothing():
    zero = torch.zeros(4, 1, 3, 3)
    assert losses.bce_generator_loss(zero).item() == pytest.approx(math.log(2))
    assert losses.bce_discriminator_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    confident = torch.full((1, 1, 2, 2), 10.0)
    # target 0.9: -(0.9 log s(10) + 0.1 log(1 - s(10))) ~ 1.0 plus the fake term ~ 0
    sp = F.softplus
    expected = 0.9 * sp(-confident[0, 0, 0, 0]) + 0.1 * sp(confident[0, 0, 0, 0])
    expected += sp(-confident[0, 0, 0, 0])  # fake logits -10 against 0
    got = losses.bce_discriminator_loss(confident, -confident, smoothing=0.1)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    assert losses.bce_discriminator_loss(confident, -confident, smoothing=0.0) < 1e-3


def test_hinge_losses():
    real, fake = torch.full((3,), 2.0), torch.full((3,), -2.0)
    assert losses.hinge_discriminator_loss(real, fake).item() == 0
    zero = torch.zeros(3)
    assert losses.hinge_discriminator_loss(zero, zero).item() == pytest.approx(2.0)
    assert losses.hinge_generator_loss(torch.tensor([1.0, 3.0])).item() == pytest.approx(-2.0)


def test_feature_matching():
    real = [torch.rand(2, 3, 4, 4, requires_grad=True), torch.rand(2, 5, 2, 2)]
    fake = [r.detach() + 1 for r in real[:1]] + [real[1] + 3]
    fake = [f.clone().requires_grad_() for f in fake]
    loss = losses.feature_matching_loss(fake, real)
    assert loss.item() == pytest.approx(2.0)  # mean of 1 and 3
    loss.backward()
    assert real[0].grad is None and fake[0].grad is not None  # real features are constants
    assert losses.feature_matching_loss(real, real) == 0
    with pytest.raises(ValueError):
        losses.feature_matching_loss([], [])
