"""The SR task's evaluation and phases (issue 13, items 2-3).

- validation and testing log the quality metrics (consistency, synthesis, correctness,
  spectrum error, shift-tolerant PSNR) of the model and both baselines; the baselines' are
  computed in the first validation only (they do not change);
- a run with an adversarial phase keeps the model of the phase boundary
  (``checkpoints/pretrain_end.ckpt``);
- the content loss can be L1, MSE or Charbonnier.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from bsrlc import losses
from bsrlc.errors import ConfigError
from bsrlc.evaluation.sr_metrics import QUALITY_KEYS
from bsrlc.tasks.sr import PRETRAIN_CHECKPOINT, SRGANTask
from bsrlc.training import train
from tests.conftest import compose_train
from tests.test_sr_own_pair import _overrides, write_pair


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 4-batch run (2 pretraining + 2 adversarial, 2 batches per epoch), validated and tested.

    LR 72 x 72 px: the test region is its bottom-right 32 x 32 px, the validation strip its
    first 16 rows (4 patches of 16 px each, one batch).
    """
    folder = tmp_path_factory.mktemp("sr_task")
    write_pair(folder, size=72)
    x0, y0 = 5_250_000.0, 4_060_020.0
    test = [x0 + 40 * 30, y0 - 72 * 30, x0 + 72 * 30, y0 - 40 * 30]
    calls: list[tuple[str, str, bool]] = []
    original = SRGANTask._quality

    def spy(self, stage, kind, size):
        calls.append((stage, kind, self.trainer.sanity_checking))
        return original(self, stage, kind, size)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SRGANTask, "_quality", spy)
        cfg = compose_train(
            [
                *_overrides(folder),
                "test=true",
                f"data.test_region=[{','.join(str(v) for v in test)}]",
                "model.adversarial_steps=2",
            ],
            folder / "run",
        )
        metrics = train(cfg)
    return folder / "run", metrics, calls


def test_validation_and_test_log_the_quality_metrics(run):
    _, metrics, _ = run
    for stage in ("val", "test"):
        for prefix in ("", "bicubic_", "bicubic_harmonised_"):
            for key in QUALITY_KEYS:
                name = f"{stage}/{prefix}{key}"
                assert name in metrics, name
                assert math.isfinite(metrics[name]), (name, metrics[name])
    # the plain scores are still there, and bicubic adds no detail the harmonised one lacks
    assert "val/psnr" in metrics and "val/psnr_gain_bicubic_harmonised" in metrics
    assert metrics["val/bicubic_synthesis"] == pytest.approx(
        metrics["val/bicubic_harmonised_synthesis"], rel=0.2
    )


def test_baseline_quality_is_computed_in_the_first_validation_only(run):
    _, _, calls = run
    val = [c for c in calls if c[0] == "val" and not c[2]]
    model = [c for c in val if c[1] == "model"]
    bicubic = [c for c in val if c[1] == "bicubic"]
    # 2 validations (one per epoch) of the same patch: the model in both, the baselines once
    assert model and len(bicubic) * 2 == len(model)
    assert len([c for c in val if c[1] == "bicubic_harmonised"]) == len(bicubic)
    # the test scores the baselines once, as validation does
    test = [c for c in calls if c[0] == "test"]
    assert len([c for c in test if c[1] == "bicubic"]) == len([c for c in test if c[1] == "model"])


def test_a_gan_run_keeps_the_model_of_the_phase_boundary(run):
    folder, _, _ = run
    pre = torch.load(folder / "checkpoints" / PRETRAIN_CHECKPOINT, weights_only=True)
    last = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
    assert pre["global_step"] == 2 and last["global_step"] == 4
    assert pre["bsrlc"]["task"] == "sr"  # loadable for inference like any checkpoint
    key = "generator_ema.module.tail.weight"
    assert not torch.equal(pre["state_dict"][key], last["state_dict"][key])
    assert json.loads((folder / "metrics.json").read_text())["time/fit_s"] > 0


def test_no_boundary_checkpoint_without_an_adversarial_phase(tmp_path):
    write_pair(tmp_path)
    over = [*_overrides(tmp_path), "model.adversarial_steps=0", "trainer.max_epochs=-1"]
    train(compose_train(over, tmp_path / "run"))
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
    assert not (tmp_path / "run" / "checkpoints" / PRETRAIN_CHECKPOINT).exists()


def test_content_losses():
    sr = torch.tensor([[[[0.0, 1.0], [2.0, -3.0]]]])
    hr = torch.zeros_like(sr)
    assert losses.content_loss(sr, hr, "l1").item() == pytest.approx(1.5)
    assert losses.content_loss(sr, hr, "mse").item() == pytest.approx(3.5)
    eps = 1e-3
    expected = sum(math.sqrt(v * v + eps * eps) - eps for v in (0, 1, 2, 3)) / 4
    assert losses.content_loss(sr, hr, "charbonnier", eps).item() == pytest.approx(expected)
    valid = torch.tensor([[[True, True], [False, False]]])
    assert losses.content_loss(sr, hr, "mse", valid=valid).item() == pytest.approx(0.5)
    assert losses.content_loss(sr, hr, "l1", valid=valid).item() == pytest.approx(
        losses.l1_content_loss(sr, hr, valid).item()
    )
    with pytest.raises(ValueError, match="use l1, mse, charbonnier"):
        losses.content_loss(sr, hr, "huber")


def test_mse_predicts_the_mean_of_an_ambiguous_target_l1_a_median():
    # A pixel that is a roof (1) in 3 of 10 otherwise identical inputs: MSE's optimum is 0.3,
    # L1's the median, 0. PSNR rewards the former.
    target = torch.tensor([1.0] * 3 + [0.0] * 7).view(10, 1, 1, 1)
    for kind, best in (("mse", 0.3), ("l1", 0.0)):
        x = torch.full((1, 1, 1, 1), 0.5, requires_grad=True)
        opt = torch.optim.SGD([x], lr=0.05)
        for _ in range(400):
            opt.zero_grad()
            losses.content_loss(x.expand_as(target), target, kind).backward()
            opt.step()
        assert x.item() == pytest.approx(best, abs=0.03), kind


def test_an_unknown_content_loss_is_refused():
    gen = {"_target_": "bsrlc.models.sr.SRResNet", "in_bands": 3, "channels": 8, "n_blocks": 1}
    with pytest.raises(ConfigError, match="model.content_loss=l2: use l1, mse, charbonnier"):
        SRGANTask(generator=gen, content_loss="l2")


def test_shift_l1_content_forgives_a_one_pixel_misregistration():
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 3, 24, 24, generator=g)
    sr = torch.roll(hr, shifts=(1, -1), dims=(-2, -1))  # misregistered by a pixel each way
    assert losses.content_loss(sr, hr, "shift_l1", max_shift=1).item() < 1e-6
    assert losses.content_loss(sr, hr, "l1").item() > 0.2
    # a shift beyond max_shift is not forgiven
    far = torch.roll(hr, shifts=2, dims=-1)
    assert losses.content_loss(far, hr, "shift_l1", max_shift=1).item() > 0.2


def test_the_task_trains_with_the_shift_tolerant_content_loss(tmp_path):
    write_pair(tmp_path, size=72)
    cfg = compose_train(
        [*_overrides(tmp_path), "model.content_loss=shift_l1", "model.max_shift=1"],
        tmp_path / "run",
    )
    metrics = train(cfg)
    assert math.isfinite(metrics["train/shift_l1"]) and metrics["train/shift_l1"] > 0
    assert math.isfinite(metrics["train/l1"])  # the plain L1 is logged beside it
