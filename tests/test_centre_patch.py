"""Centre-patch classifiers: the dense form equals the per-patch form, shapes, variants."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bsrlc.errors import ConfigError
from bsrlc.models.centre_patch import (
    CentrePatchCNN,
    PaddedCentrePatchCNN,
    PixelMLP,
    extract_patches,
)

SMALL = (8, 8, 16, 16, 24, 24)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: thread start-up and barriers cost more than the maths (much more on a
    loaded machine), so run these tests single-threaded and restore the setting after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm statistics and affine parameters, so eval-mode norm is not ~identity."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(c, generator=gen) * 0.2 - 0.1)
    return model.eval()


def per_patch(model: nn.Module, tile: torch.Tensor) -> torch.Tensor:
    """Classify every full patch of a (B, C, H, W) tile: (B, K, H - 2h, W - 2h)."""
    b, _, h, w = tile.shape
    p = model.patch_size
    logits = model(extract_patches(tile, p))  # (B * h' * w', K)
    return logits.view(b, h - p + 1, w - p + 1, -1).permute(0, 3, 1, 2)


def test_extract_patches_are_centred() -> None:
    tile = torch.arange(2 * 3 * 9 * 11, dtype=torch.float32).view(2, 3, 9, 11)
    patches = extract_patches(tile, 5)
    assert patches.shape == (2 * 5 * 7, 3, 5, 5)
    # patch n of image b is centred on (2 + n // 7, 2 + n % 7)
    for b, n in ((0, 0), (0, 13), (1, 34)):
        r, c = 2 + n // 7, 2 + n % 7
        torch.testing.assert_close(patches[b * 35 + n], tile[b, :, r - 2 : r + 3, c - 2 : c + 3])
    assert extract_patches(tile[0], 9).shape == (3, 3, 9, 9)
    with pytest.raises(ValueError, match="smaller than"):
        extract_patches(tile, 10)


@pytest.mark.parametrize(
    ("shape", "kwargs"),
    [
        ((1, 5, 30, 30), {}),
        ((2, 5, 23, 37), {}),  # non-square, batch of two
        ((1, 5, 26, 19), {"hidden": None}),
        ((1, 5, 24, 20), {"norm": "layer"}),
        ((1, 3, 21, 18), {"channels": (8, 8, 16, 16), "patch_size": 11}),  # window 3
        ((1, 3, 22, 17), {"channels": (8, 16, 16), "patch_size": 13}),  # window 7
    ],
)
def test_cnn_dense_equals_per_patch(shape: tuple[int, ...], kwargs: dict) -> None:
    torch.manual_seed(0)
    kwargs = {"channels": SMALL, **kwargs}
    model = randomise(CentrePatchCNN(shape[1], 4, **kwargs))
    tile = torch.randn(*shape)
    h = model.halo
    with torch.no_grad():
        dense = model.forward_dense(tile)
        ref = per_patch(model, tile)
        chunked = model.forward_dense(tile, chunk_pixels=7)  # row slabs overlap by the halo
    assert dense.shape == (shape[0], 4, shape[2] - 2 * h, shape[3] - 2 * h)
    assert model.receptive_field == model.patch_size == 2 * h + 1
    assert ref.abs().max() > 1e-2  # not trivially zero
    torch.testing.assert_close(dense, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(chunked, dense, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("shape", "kwargs"),
    [
        ((1, 6, 25, 25), {}),
        ((2, 6, 22, 31), {}),  # non-square, batch of two
        ((1, 4, 21, 18), {"channels": (8, 16, 16), "patch_size": 11, "attn_heads": 2}),  # window 5
    ],
)
def test_attention_dense_equals_per_patch(shape: tuple[int, ...], kwargs: dict) -> None:
    torch.manual_seed(1)
    kwargs = {"channels": SMALL, "attn_dim": 32, "attn_heads": 4, **kwargs}
    model = randomise(CentrePatchCNN(shape[1], 5, attention=True, **kwargs))
    with torch.no_grad():  # a visible position bias
        for block in model.head.blocks:
            block.pos_bias.normal_(0, 1)
    tile = torch.randn(*shape)
    with torch.no_grad():
        dense = model.forward_dense(tile)
        ref = per_patch(model, tile)
        model.head.chunk_pixels = 5  # many attention row chunks
        chunked = model.forward_dense(tile, chunk_pixels=11)
    h = model.halo
    assert dense.shape == (shape[0], 5, shape[2] - 2 * h, shape[3] - 2 * h)
    assert ref.abs().max() > 1e-2
    torch.testing.assert_close(dense, ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(chunked, dense, atol=1e-5, rtol=0)


def test_default_cnn_shapes_and_attributes() -> None:
    model = CentrePatchCNN(24, 4).eval()
    assert (model.patch_size, model.receptive_field, model.halo, model.window) == (15, 15, 7, 3)
    with torch.no_grad():
        assert model(torch.randn(3, 24, 15, 15)).shape == (3, 4)
        assert model.forward_dense(torch.randn(1, 24, 20, 33)).shape == (1, 4, 6, 19)
    att = CentrePatchCNN(24, 4, attention=True).eval()
    assert len(att.head.blocks) == 2 and att.head.blocks[0].heads == 4
    with torch.no_grad():
        assert att(torch.randn(2, 24, 15, 15)).shape == (2, 4)
    with pytest.raises(ValueError, match="15x15"):
        model(torch.randn(1, 24, 17, 17))
    with pytest.raises(ValueError, match="too small"):
        model.forward_dense(torch.randn(1, 24, 14, 40))


def test_bad_configs_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="odd"):
        CentrePatchCNN(3, 2, patch_size=14)
    with pytest.raises(ConfigError, match="at least"):
        CentrePatchCNN(3, 2, patch_size=11)  # 6 convs need P >= 13
    with pytest.raises(ConfigError, match="norm"):
        CentrePatchCNN(3, 2, norm="group")
    with pytest.raises(ConfigError, match="divisible"):
        CentrePatchCNN(3, 2, attention=True, attn_dim=30, attn_heads=4)
    with pytest.raises(ConfigError, match="head"):
        PaddedCentrePatchCNN(3, 2, head="mean")


def test_attention_trains() -> None:
    """Gradients reach every parameter (the in-place window accumulation is autograd-safe)."""
    torch.manual_seed(0)
    model = CentrePatchCNN(4, 3, channels=(8, 8, 16), patch_size=9, attention=True, attn_dim=16)
    x, y = torch.randn(6, 4, 9, 9), torch.tensor([0, 1, 2, 0, 1, 2])
    nn.functional.cross_entropy(model(x), y).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


@pytest.mark.parametrize("head", ["centre", "flatten"])
@pytest.mark.parametrize("hidden", [None, 16])
def test_padded_variant(head: str, hidden: int | None) -> None:
    model = PaddedCentrePatchCNN(5, 3, channels=(8, 8, 16), head=head, hidden=hidden).eval()
    with torch.no_grad():
        assert model(torch.randn(4, 5, 15, 15)).shape == (4, 3)
    assert not hasattr(model, "forward_dense")
    assert (model.receptive_field, model.halo) == (15, 7)


def test_padded_attention_over_the_whole_patch() -> None:
    model = PaddedCentrePatchCNN(
        5, 3, channels=(8, 16), patch_size=7, attention=True, attn_dim=16, attn_heads=2
    ).eval()
    assert model.attention is not None and model.attention.window == 7
    with torch.no_grad():
        out = model(torch.randn(4, 5, 7, 7))
    assert out.shape == (4, 3)
    # the seed's config passes hidden=null with attention
    PaddedCentrePatchCNN(5, 3, attention=True, hidden=None)


def test_pixel_mlp_vectors_patches_and_dense_agree() -> None:
    torch.manual_seed(0)
    model = PixelMLP(6, 4, hidden=(16, 16), patch_size=15).eval()
    tile = torch.randn(2, 6, 9, 13)
    with torch.no_grad():
        dense = model.forward_dense(tile, chunk_pixels=10)  # (2, 4, 9, 13)
        vectors = model(tile.permute(0, 2, 3, 1).reshape(-1, 6))  # (2*9*13, 4)
        patches = model(extract_patches(tile, 3))  # centres of 3x3 patches
    assert dense.shape == (2, 4, 9, 13)
    assert (model.halo, model.receptive_field, model.patch_size) == (0, 1, 15)
    torch.testing.assert_close(dense.permute(0, 2, 3, 1).reshape(-1, 4), vectors)
    inner = dense[:, :, 1:-1, 1:-1].permute(0, 2, 3, 1).reshape(-1, 4)
    torch.testing.assert_close(patches, inner)


@pytest.mark.parametrize("attention", [False, True])
def test_dense_form_exports_to_onnx_with_dynamic_size(tmp_path, attention: bool) -> None:
    ort = pytest.importorskip("onnxruntime")

    class Dense(nn.Module):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net.forward_dense(x)

    net = randomise(CentrePatchCNN(3, 2, channels=(8, 8, 8, 8), attention=attention, attn_dim=16))
    path = tmp_path / "m.onnx"
    torch.onnx.export(
        Dense(net).eval(),
        (torch.randn(1, 3, 18, 19),),
        str(path),
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}, "y": {0: "b", 2: "oh", 3: "ow"}},
        opset_version=17,
        dynamo=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, 33, 25)  # another size than the traced one
    with torch.no_grad():
        ref = net.forward_dense(x, chunk_pixels=50)  # chunked in PyTorch, one pass in ONNX
    out = session.run(None, {"x": x.numpy()})[0]
    assert out.shape == tuple(ref.shape)
    assert abs(out - ref.numpy()).max() < 1e-4


def test_eval_batchnorm_is_folded_exactly() -> None:
    from bsrlc.models.centre_patch import ConvNormAct

    torch.manual_seed(0)
    for padding in (0, 1):
        block = randomise(ConvNormAct(5, 7, 3, padding=padding))
        x = torch.randn(2, 5, 9, 8)
        with torch.no_grad():
            folded = block(x)
            plain = torch.relu(block[1](block[0](x)))  # conv, then eval BatchNorm
        torch.testing.assert_close(folded, plain, atol=1e-5, rtol=1e-5)
