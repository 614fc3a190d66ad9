"""SR figures people can read: native resolution, one stretch per example, crops by content."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from PIL import Image

from bsrlc.data import demo as world
from bsrlc.evaluation.figures import (
    SRExample,
    apply_stretch,
    content_scores,
    pick_crops,
    sr_figure,
    stretch_limits,
    zoom_nearest,
)
from bsrlc.raster import write_cog


def _examples(n: int = 4, crop: int = 30, seed: int = 0) -> list[SRExample]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        hr = rng.uniform(0.02, 0.3, (3, crop, crop)) * np.array([1.0, 1.5, 2.0])[:, None, None]
        lr = hr.reshape(3, crop // 3, 3, crop // 3, 3).mean((2, 4))
        bicubic = lr.repeat(3, 1).repeat(3, 2)
        out.append(SRExample(f"example {i}", lr, bicubic, hr * 1.3 + 0.02, hr))
    return out


def _panel(png: np.ndarray, fig, i: int, j: int) -> np.ndarray:
    x, y = fig.boxes[i][j]
    return png[y : y + fig.panel_px, x : x + fig.panel_px]


def test_panels_are_native_resolution_and_share_the_hr_stretch(tmp_path):
    examples = _examples()
    fig = sr_figure(examples, tmp_path / "sr.png")
    png = np.asarray(Image.open(fig.path).convert("RGB"))
    # 30 HR px -> the smallest integer zoom reaching 400 px: 14 (420 px per panel)
    assert fig.zoom == 14 and fig.panel_px == 420
    assert png.shape[1] >= 4 * 400 and png.shape[0] >= 4 * 400
    for i, ex in enumerate(examples):
        lo, hi = fig.limits[i]
        np.testing.assert_allclose(lo, np.percentile(ex.hr.reshape(3, -1), 2, axis=1))
        np.testing.assert_allclose(hi, np.percentile(ex.hr.reshape(3, -1), 98, axis=1))
        for j, (img, zoom) in enumerate(
            [(ex.lr, 3 * fig.zoom), (ex.bicubic, fig.zoom), (ex.sr, fig.zoom), (ex.hr, fig.zoom)]
        ):
            # drawn 1:1 with the HR crop's stretch: every pixel as computed, none resampled
            want = zoom_nearest(apply_stretch(img, lo, hi), zoom)
            np.testing.assert_array_equal(_panel(png, fig, i, j), want)
        # SR is brighter than HR: under the shared stretch it saturates, stretched on its own
        # it would not
        sr_panel = _panel(png, fig, i, 2)
        own = zoom_nearest(apply_stretch(ex.sr, *stretch_limits(ex.sr)), fig.zoom)
        assert (sr_panel == 255).mean() > 3 * (own == 255).mean()
        lr_panel = _panel(png, fig, i, 0)  # an LR pixel is one 42 x 42 block
        block = lr_panel[:42, :42].reshape(-1, 3)
        assert (block == block[0]).all() and not (lr_panel[:42, 42:84] == block[0]).all()


def test_bad_crops_and_a_flat_reference(tmp_path):
    ex = _examples(1)[0]
    with pytest.raises(ValueError, match="no examples"):
        sr_figure([], tmp_path / "x.png")
    bad = SRExample("bad", ex.lr[:, :5], ex.bicubic, ex.sr, ex.hr)
    with pytest.raises(ValueError, match="bad: LR"):
        sr_figure([ex, bad], tmp_path / "x.png")
    lo, hi = stretch_limits(np.full((3, 4, 4), 0.1))
    assert (hi > lo).all()
    nan = np.full((3, 4, 4), np.nan)
    assert (apply_stretch(nan, *stretch_limits(nan)) == 0).all()


def _scene(n: int = 150, seed: int = 0) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """Noisy fields, a 2-pixel road along row 40 of the left half, 2x2 roofs in a 36 px block."""
    rng = np.random.default_rng(seed)
    img = 0.15 + 0.01 * rng.standard_normal((3, n, n))
    img[:, 39:41, 5:70] = 0.05  # the road
    rr, cc = np.mgrid[0:36, 0:36]
    roofs = (rr % 4 < 2) & (cc % 4 < 2)
    img[:, 100:136, 90:126][:, roofs] = 0.28
    return img, (40, 5), (100, 90)


def test_a_road_and_a_dense_suburb_are_found_by_content():
    img, road, suburb = _scene()
    picks = pick_crops(content_scores(img), 30, align=3)
    (rr, rc), (sr, sc) = picks["road"], picks["dense suburb"]
    assert rr % 3 == rc % 3 == sr % 3 == sc % 3 == 0
    assert rr <= road[0] < rr + 30 and rc < 70 and rc + 30 > road[1]  # the road crosses it
    assert suburb[0] <= sr and sr + 30 <= suburb[0] + 36  # wholly in the roofs
    assert suburb[1] <= sc and sc + 30 <= suburb[1] + 36


def test_pick_crops_keeps_crops_apart_and_skips_weak_ones():
    score = np.zeros((60, 60))
    score[10:20, 10:20] = 1.0
    picks = pick_crops({"a": score, "b": score}, 12, align=3)
    a, b = picks["a"], picks["b"]
    assert a[0] <= 10 and a[0] + 12 >= 20 and a[1] <= 10 and a[1] + 12 >= 20
    assert abs(a[0] - b[0]) >= 12 or abs(a[1] - b[1]) >= 12  # no overlap
    assert pick_crops({"c": score}, 12, 3, taken=[a], min_mean=0.2) == {}
    with pytest.raises(ValueError):
        pick_crops({"a": score}, 10, align=3)


def _demo_rasters(tmp_path, n: int = 216):
    """A small demo-like world: cover map, HR and LR STMs (RGB P50 bands) and an 'SR' raster."""
    cover = np.full((n, n), world.GRASS, np.uint8)
    cover[60, :] = world.ROAD  # a country road across the training area
    cover[150:200, 150:200] = world.GARDEN  # houses in gardens, in the held-out block
    rr, cc = np.mgrid[0:50, 0:50]
    cover[150:200, 150:200][(rr % 4 < 2) & (cc % 4 < 2)] = world.ROOF_RED
    cover[10:40, 150:200] = world.ROOF_IND
    cover[100:103, :] = world.RAIL
    spectra = {k: v for k, v in world._SPECTRA.items()}
    hr = np.full((3, n, n), 0.08, np.float32)
    for code, s in spectra.items():
        hr[:, cover == code] = np.array([s[2], s[1], s[0]], np.float32)[:, None]
    lr = hr.reshape(3, n // 3, 3, n // 3, 3).mean((2, 4))
    names = ["RED_P50", "GRN_P50", "BLU_P50"]
    t10 = Affine(10, 0, 500_000, 0, -10, 6_000_000)
    paths = {}
    for key, arr, t in (("hr", hr, t10), ("sr", hr, t10), ("lr", lr, t10 * Affine.scale(3))):
        paths[key] = write_cog(
            tmp_path / f"{key}.tif",
            np.round(arr * 10000).astype(np.int16),
            crs="EPSG:3035",
            transform=t,
            nodata=-32768,
            descriptions=names,
        )
    paths["cover"] = write_cog(
        tmp_path / "cover.tif", cover, crs="EPSG:3035", transform=t10, nodata=0
    )
    return paths, cover


def test_demo_figure_picks_rows_by_land_cover(tmp_path):
    from bsrlc.demo import sr_panel_figure

    paths, cover = _demo_rasters(tmp_path)
    held_out = (120, 120, 216, 216)
    fig = sr_panel_figure(
        paths["lr"], paths["sr"], paths["hr"], tmp_path / "sr_panel.png", paths["cover"], held_out
    )
    labels = [lab for lab, _ in fig.crops]
    assert labels == [
        "road (training area)",
        "dense suburb (held-out block)",
        "industrial (training area)",
        "railway (training area)",
    ]
    crop = fig.panel_px // fig.zoom
    assert crop == 54  # a quarter of the raster, in whole LR pixels
    got = dict(fig.crops)
    r, c = got["road (training area)"]
    assert (cover[r : r + crop, c : c + crop] == world.ROAD).any()
    r, c = got["dense suburb (held-out block)"]
    assert r >= 120 and c >= 120  # wholly inside the held-out block
    assert (cover[r : r + crop, c : c + crop] == world.ROOF_RED).mean() > 0.15
    width, height = Image.open(fig.path).size
    assert width >= 4 * 400 and height >= 4 * 400
    # without a cover map: rows chosen by content, four of them
    fig = sr_panel_figure(paths["lr"], paths["sr"], paths["hr"], tmp_path / "c.png")
    assert [lab for lab, _ in fig.crops][:2] == ["road (by content)", "dense suburb (by content)"]
    assert len(fig.crops) == 4
