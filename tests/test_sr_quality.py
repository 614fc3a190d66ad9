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
    blocks = F.interpolate(torch.rand(b, 1, -(-n // 8), -(-n // 8), generator=g), scale_factor=8)
    blocks = blocks[..., :n, :n]
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
    opensr_test = pytest.importorskip("opensr_test")  # missing satalign/cv2 etc.: skip too
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


# -- the command ------------------------------------------------------------------------------

ALL_KEYS = ("psnr", "ssim", "sam", "ergas", *QUALITY_KEYS)


def write(path, array, res, origin=(500_000.0, 5_600_000.0), dtype="float32", **profile):
    import rasterio
    from rasterio.transform import from_origin

    array = array.numpy() if isinstance(array, torch.Tensor) else array
    kwargs = dict(
        driver="GTiff",
        width=array.shape[-1],
        height=array.shape[-2],
        count=array.shape[0],
        dtype=dtype,
        crs="EPSG:32633",
        transform=from_origin(*origin, res, res),
    )
    kwargs.update(profile)
    with rasterio.open(path, "w", **kwargs) as dst:
        dst.write(array.astype(dtype))
        dst.descriptions = tuple(f"B{i}_P50" for i in range(array.shape[0]))
    return path


@pytest.fixture(scope="module")
def rasters(tmp_path_factory):
    """HR int16 (x 1e-4 by default), SR uint16 with GDAL scale/offset tags, LR float32."""
    d = tmp_path_factory.mktemp("srq")
    hr = scene(b=1, c=3, n=120, seed=11)[0]
    hr = (hr * 10_000).round() / 10_000  # what the int16 file holds
    sr = hr + 0.004 * high_pass_noise(hr[None], seed=4)[0]
    sr = (sr * 10_000).round() / 10_000
    lr = F.avg_pool2d(hr[None], 3)[0]
    paths = {
        "hr": write(d / "hr.tif", (hr * 10_000).round(), 10, dtype="int16"),
        "lr": write(d / "lr.tif", lr, 30),
        "sr": d / "sr.tif",
    }
    import rasterio

    write(paths["sr"], ((sr + 0.1) * 10_000).round(), 10, dtype="uint16")
    with rasterio.open(paths["sr"], "r+") as dst:
        dst.scales = (1e-4,) * 3
        dst.offsets = (-0.1,) * 3
    return d, paths, (sr, lr, hr)


def test_command_writes_every_key(rasters, capsys):
    from bsrlc.evaluation.sr import main

    d, p, (sr, lr, hr) = rasters
    out = d / "scores.json"
    main([f"sr={p['sr']}", f"hr={p['hr']}", f"lr={p['lr']}", f"out={out}", "tile=45"])
    assert capsys.readouterr().out.strip() == str(out)
    import json

    scores = json.loads(out.read_text())
    for row in (scores, scores["bicubic"], scores["bicubic_harmonised"], scores["hr"]):
        assert set(ALL_KEYS) <= set(row)
    assert scores["inputs"]["reflectance"] == {
        "sr": "GDAL scale/offset tags",
        "hr": "integer: x 1e-4",
        "lr": "float: as stored",
    }
    assert scores["tiles"] == {"scored": 4, "skipped_nodata": 0}
    assert scores["pixels_scored"] == 90 * 90
    floor = scores["hr"]
    assert floor["psnr"] is None and floor["psnr_shift"] is None  # infinite
    assert floor["spectrum_error"] == 0 and floor["hallucination"] == 0
    assert floor["consistency"] < 1e-6 and floor["ssim"] == pytest.approx(1)
    assert scores["bicubic"]["spectrum_error"] > 1 > scores["spectrum_error"]
    assert scores["psnr"] > scores["bicubic_harmonised"]["psnr"] >= scores["bicubic"]["psnr"]
    # the tiles and their halo: pooled scores equal the in-memory ones of the whole raster
    q = SRQuality(border=15)
    q.update(sr[None], lr[None], hr[None])
    whole = q.compute()
    assert scores["consistency"] == pytest.approx(float(whole["consistency"]), rel=1e-4)
    plain = SRMetrics()
    plain.update(sr[None, :, 15:-15, 15:-15], hr[None, :, 15:-15, 15:-15])
    assert scores["psnr"] == pytest.approx(float(plain.compute()["psnr"]), abs=1e-3)
    one_tile = d / "one.json"
    main([f"sr={p['sr']}", f"hr={p['hr']}", f"lr={p['lr']}", f"out={one_tile}", "tile=1000"])
    single = json.loads(one_tile.read_text())
    for k in QUALITY_KEYS:
        assert single[k] == pytest.approx(float(whole[k]), rel=1e-4, abs=1e-6), k


def one_line_error(capsys, argv) -> str:
    from bsrlc.evaluation.sr import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_command_bad_inputs(rasters, capsys):
    d, p, (sr, lr, hr) = rasters
    out = f"out={d / 'bad.json'}"
    other_grid = write(d / "sr_shifted.tif", sr, 10, origin=(500_010.0, 5_600_000.0))
    err = one_line_error(capsys, [f"sr={other_grid}", f"hr={p['hr']}", f"lr={p['lr']}", out])
    assert "sr_shifted.tif" in err and "hr.tif" in err and "resample" in err
    small = write(d / "sr_small.tif", sr[:, :90, :90], 10)
    err = one_line_error(capsys, [f"sr={small}", f"hr={p['hr']}", f"lr={p['lr']}", out])
    assert "sr_small.tif" in err and "hr.tif" in err
    off_grid = write(d / "lr_off.tif", lr, 30, origin=(500_015.0, 5_600_000.0))
    err = one_line_error(capsys, [f"sr={p['sr']}", f"hr={p['hr']}", f"lr={off_grid}", out])
    assert "lr_off.tif" in err and "hr.tif" in err and "gdalwarp" in err
    coarse = write(d / "lr_20m.tif", F.avg_pool2d(hr[None], 2)[0], 20)
    err = one_line_error(capsys, [f"sr={p['sr']}", f"hr={p['hr']}", f"lr={coarse}", out])
    assert "lr_20m.tif" in err and "ratio 3" in err
    part = write(d / "lr_part.tif", lr[:, :30, :30], 30)
    err = one_line_error(capsys, [f"sr={p['sr']}", f"hr={p['hr']}", f"lr={part}", out])
    assert "lr_part.tif" in err and "not inside the LR" in err
    err = one_line_error(
        capsys, [f"sr={p['sr']}", f"hr={p['hr']}", f"lr={p['lr']}", out, "bands=NIR"]
    )
    assert "NIR" in err
    err = one_line_error(capsys, [f"sr={p['sr']}", f"hr={p['hr']}", out, "scael=3"])
    assert "scale" in err
    err = one_line_error(capsys, [f"sr={p['sr']}", f"hr={p['hr']}", out])
    assert "lr=" in err
    err = one_line_error(
        capsys, [f"sr={p['sr']}", f"hr={p['hr']}", f"lr={p['lr']}", out, "border=16"]
    )
    assert "multiple" in err


def test_command_skips_nodata_tiles_and_helps_fast(rasters, tmp_path):
    import json
    import subprocess
    import sys

    from bsrlc.evaluation.sr import main

    _, p, (sr, _, _) = rasters
    holey = sr.clone()
    holey[:, 20, 20] = -1
    path = write(tmp_path / "sr_nodata.tif", holey, 10, nodata=-1)
    main([f"sr={path}", f"hr={p['hr']}", f"lr={p['lr']}", f"out={tmp_path / 's.json'}", "tile=45"])
    assert json.loads((tmp_path / "s.json").read_text())["tiles"] == {
        "scored": 3,
        "skipped_nodata": 1,
    }
    code = (
        "import sys; from bsrlc.evaluation import sr; sr.main(['--help']); "
        "assert 'torch' not in sys.modules and 'rasterio' not in sys.modules"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.startswith("usage: python -m bsrlc.evaluation.sr")
