"""Temporal classifiers over the 365-day encoding, and observation dropout (thinning)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from bsrlc.models.temporal import (
    LTAE,
    CentrePatchTemporal,
    TempCNN,
    TemporalTransformer,
    day_encoding,
)
from bsrlc.timeseries.augment import ThinObservations, thin_observations

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
PEAKS = (100.0, 180.0, 260.0)  # the three classes' green-up peak days


def phenology(
    n: int, n_obs: tuple[int, int], g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A synthetic phenology task in the encoding's layout: (n, 2 bands + flag, 365), labels.

    The classes differ only in the day of their NDVI-like peak (100, 180, 260, each +-15 days
    jitter, amplitude 0.5-0.7, noise 0.02): the annual mean is the same, so only the timing
    tells them apart. Each series has ``n_obs`` (inclusive range) observed days at random.
    """
    y = torch.randint(0, 3, (n,), generator=g)
    peak = torch.tensor(PEAKS)[y] + (torch.rand(n, generator=g) * 30 - 15)
    amp = 0.5 + 0.2 * torch.rand(n, generator=g)
    t = torch.arange(365.0)
    curve = amp[:, None] * torch.exp(-0.5 * ((t - peak[:, None]) / 35.0) ** 2)
    red = 0.15 - 0.1 * curve + 0.02 * torch.randn(n, 365, generator=g)
    nir = 0.2 + 0.3 * curve + 0.02 * torch.randn(n, 365, generator=g)
    k = torch.randint(n_obs[0], n_obs[1] + 1, (n,), generator=g)
    rank = torch.rand(n, 365, generator=g).argsort(1).argsort(1)
    obs = (rank < k[:, None]).float()
    return torch.stack([red * obs, nir * obs, obs], 1), y


def fit(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    batch: int = 32,
    lr: float = 3e-3,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> torch.nn.Module:
    """Train with AdamW on random batches (seeded), return the model in eval mode."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(1)
    model.train()
    for _ in range(steps):
        i = torch.randint(0, len(x), (batch,), generator=g)
        xb = x[i] if augment is None else augment(x[i], g)
        loss = torch.nn.functional.cross_entropy(model(xb), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model(x).argmax(1) == y).float().mean())


def small_tempcnn(**kw: object) -> TempCNN:
    return TempCNN(2, 3, channels=(16, 16), pool=4, hidden=32, dropout=0.1, **kw)  # type: ignore[arg-type]


def small_ltae() -> LTAE:
    return LTAE(2, 3, d_model=32, n_head=4, d_k=8, mlp=(32,), dropout=0.0)


def small_transformer() -> TemporalTransformer:
    return TemporalTransformer(2, 3, d_model=32, n_head=4, n_layers=1, dropout=0.0)


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """One torch thread: on a few shared cores these small models run several times faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sparse_data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    xtr, ytr = phenology(600, (10, 50), g)
    xte, yte = phenology(300, (10, 50), g)
    return {"xtr": xtr, "ytr": ytr, "xte": xte, "yte": yte}


@pytest.fixture(scope="module")
def dense_ltae() -> dict[str, object]:
    """An L-TAE trained on dense (40-60 obs/yr) series, and dense held-out series."""
    g = torch.Generator().manual_seed(2)
    xtr, ytr = phenology(600, (40, 60), g)
    xte, yte = phenology(400, (40, 60), g)
    torch.manual_seed(0)
    return {"model": fit(small_ltae(), xtr, ytr, 120), "xte": xte, "yte": yte}


def test_shapes_parameter_counts_and_patches():
    torch.manual_seed(0)
    x = torch.rand(5, 3, 365) * (torch.rand(5, 1, 365) < 0.1)
    x[:, -1] = (x[:, 0] > 0).float()
    for model, expected in [
        # conv 3*4*5 + BN 8 + dense 4*365*8 + BN 16 + head 8*3+3
        (TempCNN(2, 3, channels=(4,), hidden=8), 60 + 8 + 4 * 365 * 8 + 16 + 27),
        # pool 2 twice: 365 -> 182 -> 91 days before the flatten
        (TempCNN(2, 3, channels=(4, 4), pool=2, hidden=8), 60 + 8 + 80 + 8 + 4 * 91 * 8 + 16 + 27),
        # embed 2*8+8, LN 16, key 8*8+8, query 2*4, mlp 8*8+8 + BN 16, head 8*3+3
        (LTAE(2, 3, d_model=8, n_head=2, d_k=4, mlp=(8,)), 24 + 16 + 72 + 8 + 72 + 16 + 27),
    ]:
        assert n_params(model) == expected
        model.eval()
        out = model(x)
        assert out.shape == (5, 3)
        # a centre-patch batch (B, P, P, C+1, T) is classified by its centre pixel
        patches = torch.rand(5, 3, 3, 3, 365)
        patches[:, 1, 1] = x
        assert torch.allclose(model(patches), out, atol=1e-6)
    with pytest.raises(ValueError, match="3 channels"):
        TempCNN(2, 3)(torch.zeros(2, 2, 365))
    # the configured sizes (reported): TempCNN ~0.76 M with pool 2, L-TAE ~0.05 M
    assert 0.5e6 < n_params(TempCNN(6, 10, pool=2)) < 1.0e6
    assert 2e4 < n_params(LTAE(6, 10)) < 1e5
    assert 5e4 < n_params(TemporalTransformer(6, 10)) < 1e5
    assert TemporalTransformer(2, 3).eval()(patches).shape == (5, 3)


def test_day_encoding_is_sinusoidal():
    e = day_encoding(torch.tensor([0, 10]), 8)
    assert e.shape == (2, 8)
    assert torch.allclose(e[0], torch.tensor([0.0, 1.0] * 4))
    assert e[1, 0] == pytest.approx(torch.sin(torch.tensor(10.0)).item(), abs=1e-6)


@pytest.mark.parametrize(
    "make", [small_ltae, small_transformer, small_tempcnn, lambda: small_tempcnn(fill="linear")]
)
def test_unobserved_days_content_is_ignored(make):
    torch.manual_seed(0)
    model = make().eval()
    g = torch.Generator().manual_seed(3)
    x, _ = phenology(16, (5, 40), g)
    garbage = x.clone()
    gaps = garbage[:, -1:] == 0
    noise = torch.randn(garbage[:, :-1].shape) * 1e3
    garbage[:, :-1] = torch.where(gaps, noise, garbage[:, :-1])
    garbage[0, 0, gaps[0, 0].nonzero()[0]] = float("nan")
    garbage[1, 1, gaps[1, 0].nonzero()[0]] = float("inf")
    with torch.no_grad():
        assert torch.equal(model(garbage), model(x))


def test_ltae_attention_is_over_observed_days_only():
    model = small_ltae().eval()
    x = torch.zeros(3, 3, 365)
    x[0, :, [9, 99, 199]] = torch.tensor([[0.1, 0.2, 1.0]]).T  # 3 observations
    x[1, :, 49] = torch.tensor([0.3, 0.4, 1.0])  # 1 observation; sample 2: none
    with torch.no_grad():
        _, attn, days = model.attend(x)
    assert attn.shape == (3, 4, 3)  # K = the batch's largest count
    assert days.tolist() == [[9, 99, 199], [49, -1, -1], [-1, -1, -1]]
    assert torch.allclose(attn[0].sum(-1), torch.ones(4))
    assert torch.equal(attn[1, :, 0], torch.ones(4)) and not attn[1, :, 1:].any()
    assert not attn[2].any()  # no observation: no weight anywhere


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_ltae_exports_to_onnx_with_dynamic_batch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = small_ltae().eval()
    x, _ = phenology(4, (3, 8), torch.Generator().manual_seed(4))
    path = tmp_path / "ltae.onnx"
    torch.onnx.export(
        model, (x,), str(path), input_names=["x"], output_names=["logits"],
        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
    )  # fmt: skip
    # exported from <= 8 observations per pixel, still right for 60: K is not frozen
    denser, _ = phenology(9, (0, 60), torch.Generator().manual_seed(6))
    got = ort.InferenceSession(str(path)).run(None, {"x": denser.numpy()})[0]
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(got), model(denser), atol=1e-5)


def test_zero_observations_give_finite_logits_and_gradients():
    for model in (small_ltae(), small_transformer(), small_tempcnn()):
        x = torch.zeros(4, 3, 365)
        x[:2, :, 100] = torch.tensor([0.1, 0.4, 1.0])
        model.train()
        logits = model(x)
        logits.sum().backward()
        assert torch.isfinite(logits).all()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        model.eval()
        with torch.no_grad():  # a batch in which nothing at all was observed
            assert torch.isfinite(model(torch.zeros(3, 3, 365))).all()


def test_tempcnn_learns_phenology(sparse_data):
    torch.manual_seed(0)
    model = fit(small_tempcnn(), sparse_data["xtr"], sparse_data["ytr"], 60)
    acc = accuracy(model, sparse_data["xte"], sparse_data["yte"])
    print(f"TempCNN held-out accuracy (10-50 obs/yr): {acc:.3f}")
    assert acc >= 0.8  # chance 0.33; measured ~0.99


@pytest.mark.parametrize(
    "make", [small_ltae, pytest.param(small_transformer, marks=pytest.mark.slow)]
)
def test_attention_models_learn_phenology(sparse_data, make):
    torch.manual_seed(0)
    model = fit(make(), sparse_data["xtr"], sparse_data["ytr"], 120)
    acc = accuracy(model, sparse_data["xte"], sparse_data["yte"])
    print(f"{type(model).__name__} held-out accuracy (10-50 obs/yr): {acc:.3f}")
    assert acc >= 0.8  # chance 0.33; measured L-TAE ~0.94, transformer ~0.94


def test_ltae_trained_dense_transfers_to_thinned_series(dense_ltae):
    model, x, y = dense_ltae["model"], dense_ltae["xte"], dense_ltae["yte"]
    dense = accuracy(model, x, y)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(5)
    sparse = thin_observations(x, target_per_year=10, generator=g)  # type: ignore[arg-type]
    thinned = accuracy(model, sparse, y)  # type: ignore[arg-type]
    print(f"L-TAE trained dense: dense {dense:.3f}, thinned to ~10 obs/yr {thinned:.3f}")
    assert dense >= 0.9
    assert thinned >= 0.7  # chance 0.33; measured ~0.9
    assert thinned >= dense - 0.25


def test_thinning_keeps_observed_days_and_reaches_target():
    g = torch.Generator().manual_seed(0)
    x, _ = phenology(2000, (40, 60), g)
    x[:100] = phenology(100, (3, 6), g)[0]  # already sparser than the target
    out = thin_observations(x, target_per_year=10, generator=torch.Generator().manual_seed(1))
    kept = out[:, -1] > 0
    assert not (kept & (x[:, -1] == 0)).any()  # only observed days survive
    assert torch.equal(out[:, :, :][kept[:, None].expand_as(out)], x[kept[:, None].expand_as(x)])
    assert not out.masked_select(~kept[:, None].expand_as(out)).any()  # dropped: 0 everywhere
    n = kept.sum(1).float()
    assert torch.equal(out[:100], x[:100])  # at or below the target: unchanged
    assert n[100:].mean().item() == pytest.approx(10.0, abs=0.3)
    assert 1.5 < n[100:].std().item() < 4.5  # binomial spread, not a fixed count
    # a fixed keep probability
    out = thin_observations(x, keep=0.25, generator=torch.Generator().manual_seed(2))
    ratio = (out[:, -1].sum() / x[:, -1].sum()).item()
    assert ratio == pytest.approx(0.25, abs=0.01)


def test_thinning_is_deterministic_given_the_generator():
    x, _ = phenology(64, (40, 60), torch.Generator().manual_seed(0))

    def thin(seed: int) -> torch.Tensor:
        return thin_observations(
            x, target_per_year=(5, 15), generator=torch.Generator().manual_seed(seed)
        )

    assert torch.equal(thin(7), thin(7))
    assert not torch.equal(thin(7), thin(8))
    # a spread of targets: densities between 5 and 15 per series
    n = thin(7)[:, -1].sum(1)
    assert n.min() < 8 and n.max() > 12 and 8.5 < n.float().mean() < 11.5


def test_thinning_options():
    x, _ = phenology(500, (40, 60), torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(3)
    out = thin_observations(x, keep=0.0, min_keep=2, generator=g)
    assert (out[:, -1].sum(1) == 2).all()  # min_keep wins over keep=0
    out = thin_observations(x, target_per_year=10, prob=0.3, generator=g)
    untouched = (out == x).all(dim=(1, 2)).float().mean().item()
    assert untouched == pytest.approx(0.7, abs=0.08)  # prob: the fraction thinned
    # patches (B, P, P, C+1, T) thin per pixel
    patches = x[:18].reshape(2, 3, 3, 3, 365)
    out = thin_observations(patches, target_per_year=10, generator=g)
    assert out.shape == patches.shape and (out[..., -1, :].sum(-1) < 30).all()
    with pytest.raises(ValueError, match="exactly one"):
        thin_observations(x)
    with pytest.raises(ValueError, match="keep"):
        ThinObservations(keep=1.5)
    thin = ThinObservations(target_per_year=[8, 12], min_keep=1)
    assert thin.target_per_year == (8.0, 12.0)
    assert torch.equal(
        thin(x, torch.Generator().manual_seed(4)), thin(x, torch.Generator().manual_seed(4))
    )


@pytest.mark.parametrize("name", ["tempcnn", "ltae"])
def test_model_configs_instantiate(name):
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    net = hydra.utils.instantiate(cfg.net, in_bands=6, n_classes=10)
    assert isinstance(net, TempCNN if name == "tempcnn" else LTAE)
    x = torch.zeros(2, 7, 365)
    x[:, :, ::20] = 1.0
    assert net.eval()(x).shape == (2, 10)
    thin = hydra.utils.instantiate(cfg.thin)
    assert isinstance(thin, ThinObservations)


@pytest.mark.slow
def test_thinning_augmentation_helps_dense_to_sparse_transfer():
    """Trained on dense series only, each model is scored on series thinned to ~8 and ~5 obs/yr.

    Measured (2 seeds; dense / thin8 / thin5 accuracy, plain -> with observation dropout):
    TempCNN 0.865/0.762 -> 0.918/0.798 and 0.935/0.842 -> 0.947/0.875; TempCNN on linearly
    gap-filled series 0.920/0.825 -> 0.955/0.877 and 0.933/0.850 -> 0.942/0.855; L-TAE
    0.880/0.808 -> 0.908/0.837 and 0.875/0.783 -> 0.908/0.840; dense accuracy 1.0 throughout.
    """
    g = torch.Generator().manual_seed(2)
    xtr, ytr = phenology(600, (40, 60), g)
    xte, yte = phenology(400, (40, 60), g)
    thin8 = thin_observations(xte, target_per_year=8, generator=torch.Generator().manual_seed(5))
    thin5 = thin_observations(xte, target_per_year=5, generator=torch.Generator().manual_seed(5))
    augment = ThinObservations(target_per_year=(4, 15), min_keep=1, prob=0.5)
    models: list[tuple[str, Callable[[], torch.nn.Module], int]] = [
        ("tempcnn", small_tempcnn, 100),
        ("tempcnn-linear", lambda: small_tempcnn(fill="linear"), 100),
        ("ltae", small_ltae, 150),
    ]
    gains = []
    for seed in (0, 1):
        for name, make, steps in models:
            scores = {}
            for aug in (None, augment):
                torch.manual_seed(seed)
                m = fit(make(), xtr, ytr, steps, augment=aug)
                scores[aug is not None] = [accuracy(m, x, yte) for x in (xte, thin8, thin5)]
            print(name, seed, "plain", scores[False], "thin-augmented", scores[True])
            assert scores[False][0] >= 0.95 and scores[True][0] >= 0.95
            assert scores[True][1] >= 0.8  # chance 0.33
            gains.append(scores[True][2] - scores[False][2])
    assert sum(gains) / len(gains) >= 0.01  # measured ~ +0.035 at 5 obs/yr


def patches(n: int, centre_obs: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """3x3 patches of one class each, (n, 3, 3, 3, 365): neighbours have 10-50 obs/yr, the
    centre is thinned to ``centre_obs`` on average (alone it is a weak witness)."""
    x, y = phenology(30 * n, (10, 50), g)
    labels = torch.randint(0, 3, (n,), generator=g)
    out = torch.empty(n, 9, 3, 365)
    for c in range(3):
        idx = (labels == c).nonzero()[:, 0]
        out[idx] = x[y == c][: 9 * len(idx)].view(len(idx), 9, 3, 365)
    out[:, 4] = thin_observations(out[:, 4], target_per_year=centre_obs, generator=g)
    return out.view(n, 3, 3, 3, 365), labels


def test_centre_patch_temporal_uses_the_neighbourhood():
    torch.manual_seed(0)
    model = CentrePatchTemporal(small_ltae(), 3, hidden=16).eval()
    x, _ = patches(4, 2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
        assert out.shape == (4, 3)
        changed = x.clone()
        changed[:, 0, 0, 0] += 0.5 * (changed[:, 0, 0, -1] > 0)  # a neighbour's values
        assert not torch.allclose(model(changed), out)
        empty = x.clone()
        empty[:, 0, 0] = 0  # a neighbour without observations does not count
        seen = (x[:, 0, 0, -1] > 0).any(-1)
        assert seen.all()
        ref = model(empty)
        empty[:, 0, 0, :-1] = torch.randn_like(empty[:, 0, 0, :-1])  # garbage, flag 0
        assert torch.equal(model(empty), ref)
    with pytest.raises(ValueError, match="patches"):
        model(x[:, 1, 1])


@pytest.mark.slow
def test_centre_patch_context_beats_the_centre_alone_when_it_is_sparse():
    g = torch.Generator().manual_seed(0)
    xtr, ytr = patches(300, 2, g)
    xte, yte = patches(200, 2, g)
    torch.manual_seed(0)
    alone = fit(small_ltae(), xtr, ytr, 120)
    torch.manual_seed(0)
    context = fit(CentrePatchTemporal(small_ltae(), 3, hidden=32, dropout=0.0), xtr, ytr, 120)
    a, c = accuracy(alone, xte, yte), accuracy(context, xte, yte)
    print(f"centre alone (~2 obs/yr) {a:.3f}, with its 3x3 patch {c:.3f}")
    assert c >= 0.8 and c >= a + 0.1
