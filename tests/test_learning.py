"""Tests that fail when the science breaks: the models learn, and maps read what they learnt.

The other training tests check names, shapes and files; these check that a classifier trained on
the tiny world beats chance on held-out points, that super-resolution beats bicubic on held-out
patches, that a dense map says at every pixel what the classifier says of that pixel's own patch
(read here independently of bsrlc's readers, so a tile offset by one pixel or a swapped band
lookup shows), and that a map depends on the band order. ``make mutants`` (scripts/mutants.py)
applies deliberate breaks to a scratch copy and checks that this file catches each.

Every threshold below was measured on the tiny world (2 busy CPU cores, December 2026); the
comment next to it gives the measurements it keeps a margin from.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch

from bsrlc.data.legend import Legend
from bsrlc.inference.dense import classify_raster
from bsrlc.inference.loading import load_checkpoint
from bsrlc.training import train
from tests.conftest import compose_train

# The centre-patch CNN at its configured size, 15 epochs of batches of 32 (the default batch of
# 256 is one step per epoch on the tiny world's ~200 training points, too few steps to learn).
CLASSIFIER = ["trainer.max_epochs=15", "data.batch_size=32", "seed=1"]
# The per-pixel MLP is not compared here: on the tiny world it does not lose to the CNN. Same
# budget, seeds 1/2/3, mean F1 of residential and industrial buildings on the test points:
#   Sentinel-2 STM:            CNN 0.74 / 0.86 / 0.94, MLP 0.89 / 0.97 / 0.99
#   Landsat 30 m (nearest):    CNN 0.59 / 0.80 / 0.80, MLP 0.68 / 0.75 / 0.83
# The README's claim (CNN beats MLP) is on super-resolved Landsat of the demo world, a
# 768 px world with 400 points per class; the tiny world (60 per class) cannot show it.


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, tiny_world, tiny_stms):
    """The centre-patch CNN trained and tested on the tiny world's 2019 Sentinel-2 STM."""
    root = tmp_path_factory.mktemp("learn_cls")
    cfg = compose_train(
        [
            "experiment=classify_demo",
            f"data.raster={tiny_stms['sentinel2']['2019']}",
            f"data.points={tiny_world.root / 'points' / 'points_2019.gpkg'}",
            "data.cache_dir=null",
            "data.block_size=32",
            "logger=csv",
            *CLASSIFIER,
        ],
        root,
    )
    metrics = train(cfg)
    return metrics, root / "checkpoints" / "last.ckpt"


def test_classifier_beats_chance_on_held_out_points(classifier):
    metrics, _ = classifier
    # 4 balanced classes, 80 test points in the held-out block: chance is 0.25. Measured with
    # CLASSIFIER, seeds 1/2/3: OA 0.750 / 0.788 / 0.900, macro F1 0.696 / 0.762 / 0.896.
    # Under make mutants: shuffled training labels give OA 0.30 (macro F1 0.21); zeroed input
    # can only predict one class (OA 0.25); untrained 1-epoch nets gave 0.225-0.275.
    assert metrics["test/oa"] >= 0.6, metrics["test/oa"]
    assert metrics["test/macro_f1"] >= 0.55, metrics["test/macro_f1"]
    # the structure classes, which need the neighbourhood: F1 0.76-0.98 measured
    for name in ("residential_buildings", "industrial_buildings"):
        assert metrics[f"test/f1_{name}"] >= 0.5, (name, metrics[f"test/f1_{name}"])


def _read_patches(src, bands, mean, std, rows, cols, halo):
    """Patches read with rasterio by band description: independent of bsrlc's readers."""
    with rasterio.open(src) as ds:
        lookup = {d: i + 1 for i, d in enumerate(ds.descriptions)}
        raw = ds.read([lookup[b] for b in bands])
        nodata = ds.nodata
    data = raw.astype(np.float32) * np.float32(1e-4)
    valid = np.ones(raw.shape[1:], bool) if nodata is None else ~(raw == nodata).any(0)
    mean = np.asarray(mean, np.float32)[:, None, None]
    std = np.asarray(std, np.float32)[:, None, None]
    data = (data - mean) / std
    keep, patches = [], []
    for i, (r, c) in enumerate(zip(rows, cols, strict=True)):
        win = (slice(r - halo, r + halo + 1), slice(c - halo, c + halo + 1))
        if valid[win].all():
            keep.append(i)
            patches.append(data[(slice(None), *win)])
    return np.asarray(keep, int), torch.from_numpy(np.stack(patches))


def _pixels(tiny_world, src, halo, n_random=300):
    """Rows and cols of every reference point plus random pixels, all a full patch inside."""
    with rasterio.open(src) as ds:
        pts = gpd.read_file(tiny_world.root / "points" / "points_2019.gpkg").to_crs(ds.crs)
        rows, cols = rasterio.transform.rowcol(ds.transform, pts.geometry.x, pts.geometry.y)
        height, width = ds.height, ds.width
    rng = np.random.default_rng(0)
    rows = np.concatenate([np.asarray(rows), rng.integers(halo, height - halo, n_random)])
    cols = np.concatenate([np.asarray(cols), rng.integers(halo, width - halo, n_random)])
    inside = (rows >= halo) & (rows < height - halo) & (cols >= halo) & (cols < width - halo)
    return rows[inside], cols[inside]


def test_dense_map_agrees_with_patches_at_points(tmp_path, tiny_world, tiny_stms, classifier):
    model = load_checkpoint(classifier[1])
    legend = Legend.from_config(model.meta["legend"])
    halo = model.meta["halo"]
    src = tiny_stms["sentinel2"]["2019"]
    # tiles of 50 px: tile edges (and their halos) fall between the sampled pixels
    out = classify_raster(
        model.net,
        src,
        tmp_path / "map.tif",
        model.bands,
        model.mean,
        model.std,
        legend,
        halo,
        tile=50,
        progress=False,
        probabilities=True,
    )
    rows, cols = _pixels(tiny_world, src, halo)
    keep, patches = _read_patches(src, model.bands, model.mean, model.std, rows, cols, halo)
    assert len(keep) >= 300
    rows, cols = rows[keep], cols[keep]
    with torch.no_grad():
        proba = torch.softmax(model.net(patches), 1).numpy()
    with rasterio.open(out) as m, rasterio.open(out.with_name("map_proba.tif")) as p:
        codes = m.read(1)[rows, cols]
        dense = p.read()[: len(legend)][:, rows, cols].T / 254.0
    # The unbroken code passes both at seed 1 (the dense pass is exact up to float
    # rounding; the probabilities are stored as uint8 of 1/254). Under make mutants, a tile
    # read one pixel off and a swapped band lookup both fail here.
    assert np.abs(dense - proba).max() <= 1.5 / 254
    agree = codes == legend.code_of(proba.argmax(1))
    assert agree.mean() >= 0.99, f"{(~agree).sum()} of {agree.size} pixels disagree"


def test_map_depends_on_band_order(tmp_path, tiny_world, tiny_stms, classifier):
    model = load_checkpoint(classifier[1])
    legend = Legend.from_config(model.meta["legend"])
    src = tiny_stms["sentinel2"]["2019"]
    args = (model.mean, model.std, legend, model.meta["halo"])
    right = classify_raster(model.net, src, tmp_path / "r.tif", model.bands, *args, progress=False)
    swapped = list(model.bands)
    i, j = swapped.index("BLU_P25"), swapped.index("NIR_P25")
    swapped[i], swapped[j] = swapped[j], swapped[i]
    wrong = classify_raster(model.net, src, tmp_path / "w.tif", swapped, *args, progress=False)
    with rasterio.open(right) as a, rasterio.open(wrong) as b:
        ra, rb = a.read(1), b.read(1)
    changed = (ra != rb)[ra > 0].mean()
    # Measured share of pixels that change class when two bands trade places: BLU_P25/NIR_P25
    # 0.70, RED_P50/NIR_P50 0.63, BLU_P50/NIR_P50 0.20, BLU_P25/GRN_P25 0.09 (neighbouring
    # visible bands; test_dense_map_agrees_with_patches_at_points still sees such a swap in
    # the probabilities).
    assert changed >= 0.3, changed


@pytest.fixture(scope="module")
def sr_metrics(tmp_path_factory, tiny_world, tiny_stms):
    """A small SRResNet (L1 + SAM + LR consistency, no GAN, no EMA), 100 steps, tested."""
    root = tmp_path_factory.mktemp("learn_sr")
    cfg = compose_train(
        [
            "experiment=sr_demo",
            f"data.lr_path={tiny_stms['landsat']['2019']}",
            f"data.hr_path={tiny_stms['sentinel2']['2019']}",
            f"data.test_region={tiny_world.root / 'regions.geojson'}",
            "data.bands=[BLU_P50,GRN_P50,RED_P50,NIR_P50,SW1_P50,SW2_P50]",
            "model.generator.in_bands=6",
            "data.patch_size=16",
            "data.batch_size=16",
            "data.samples_per_epoch=1600",
            "data.cache_dir=null",
            "logger=csv",
            "trainer.max_steps=100",
            "trainer.val_check_interval=100",
            "model.discriminator=null",
            "model.ema_decay=0",
            "model.scheduler_g=null",
            "model.optimizer_g.lr=2e-3",
            "model.generator.channels=16",
            "model.generator.n_blocks=2",
            "model.panel_every_n_epochs=0",
            "seed=1",
        ],
        root,
    )
    return train(cfg)


def test_sr_beats_bicubic_on_held_out_patches(sr_metrics):
    m = sr_metrics
    # Held-out test block (a dense suburb), measured with this config, seeds 1/2:
    #   SAM  model 9.63 / 9.58 deg, bicubic 10.38 deg: 0.75 / 0.80 deg better
    #   PSNR model 20.26 / 20.39 dB, bicubic 20.66 dB: 0.27 / 0.40 dB WORSE
    # With the L1 loss replaced by zero: SAM 10.35 deg (0.03 better), PSNR 20.68 dB.
    # On the tiny world the model does not beat bicubic in PSNR at any budget tried (60-600
    # steps, 6 or 18 bands, 8-32 channels: -0.40 to +0.34 dB, and below bicubic on the
    # validation strip, where 600 steps overfit: train L1 0.38, val PSNR 21.3 vs 23.7 dB).
    # The demo world's 1600-step sr_demo does (+1.47 dB on its test patches, README). So the
    # test asserts the spectral gain, which holds with a wide margin, and bounds the PSNR loss.
    assert m["test/bicubic_sam"] - m["test/sam"] >= 0.4, (m["test/sam"], m["test/bicubic_sam"])
    assert m["test/psnr"] >= m["test/bicubic_psnr"] - 1.0, (m["test/psnr"], m["test/bicubic_psnr"])
