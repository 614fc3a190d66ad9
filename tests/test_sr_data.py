"""The paired LR/HR datamodule: alignment, splits by region, nodata skipping, augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from affine import Affine

from bsrlc.data.sr import PairedSRDataModule, dihedral
from bsrlc.errors import InputError
from bsrlc.raster import write_cog

NAMES = ["BLU_P50", "GRN_P50", "RED_P50"]
X0, Y0 = 5_250_000.0, 4_060_020.0


def make_pair(tmp_path, lr_size=60, hr_shift=(0, 0), hr_res=10.0, nodata_at=None, crs="EPSG:3035"):
    rng = np.random.default_rng(1)
    hr = rng.integers(100, 3000, size=(3, 3 * lr_size, 3 * lr_size)).astype(np.int16)
    lr = hr.reshape(3, lr_size, 3, lr_size, 3).mean(axis=(2, 4)).round().astype(np.int16)
    if nodata_at is not None:
        lr[:, nodata_at[0], nodata_at[1]] = -32768
    t30 = Affine(30, 0, X0, 0, -30, Y0)
    t10 = Affine(hr_res, 0, X0 + hr_shift[1], 0, -hr_res, Y0 - hr_shift[0])
    write_cog(
        tmp_path / "lr.tif", lr, crs="EPSG:3035", transform=t30, nodata=-32768, descriptions=NAMES
    )
    write_cog(tmp_path / "hr.tif", hr, crs=crs, transform=t10, nodata=-32768, descriptions=NAMES)
    return lr, hr


def test_pairs_line_up_and_splits_are_disjoint(tmp_path):
    make_pair(tmp_path, nodata_at=(40, 40))
    test_bounds = [X0 + 30 * 30, Y0 - 60 * 30, X0 + 60 * 30, Y0 - 30 * 30]  # right-bottom quarter
    dm = PairedSRDataModule(
        tmp_path / "lr.tif",
        tmp_path / "hr.tif",
        bands=["*_P50"],
        patch_size=8,
        batch_size=4,
        samples_per_epoch=32,
        test_region=test_bounds,
        cache_dir=tmp_path / "c",
        augment=False,
    )
    dm.setup()
    assert dm.bands == NAMES
    sizes = dm.split_sizes()
    assert sizes["train"] > 0 and sizes["val"] > 0 and sizes["test"] > 0
    assert dm.skipped["test"] == 1  # the patch holding the nodata pixel
    tr, va, te = (dm._datasets[k].corners for k in ("train", "val", "test"))

    # no training patch touches a val or test pixel
    def cover(c):
        m = np.zeros((60, 60), bool)
        for r, cc in c:
            m[r : r + 8, cc : cc + 8] = True
        return m

    assert not (cover(tr) & (cover(va) | cover(te))).any()
    assert not (cover(va) & cover(te)).any()
    # LR patch = 3x3 mean of its HR patch (normalised alike)
    batch = next(iter(dm.test_dataloader()))
    assert batch["lr"].shape == (4, 3, 8, 8) and batch["hr"].shape == (4, 3, 24, 24)
    down = torch.nn.functional.avg_pool2d(batch["hr"], 3)
    std = torch.tensor(dm.norm_stats["std"])[None, :, None, None]
    assert torch.allclose(down * std, batch["lr"] * std, atol=1e-4)


def test_augmentation_is_shared_and_reproducible(tmp_path):
    make_pair(tmp_path)
    dm = PairedSRDataModule(
        tmp_path / "lr.tif",
        tmp_path / "hr.tif",
        bands=NAMES,
        patch_size=8,
        samples_per_epoch=16,
        cache_dir=tmp_path / "c",
        augment=True,
        seed=3,
    )
    dm.setup()
    ds = dm._datasets["train"]
    a, b = ds[5], ds[5]
    assert torch.equal(a["lr"], b["lr"])  # same index, same epoch: same sample
    down = torch.nn.functional.avg_pool2d(a["hr"][None], 3)[0]
    assert torch.allclose(down, a["lr"], atol=3e-3)  # LR and HR got the same transform (0.5 DN)
    x = torch.arange(16.0).reshape(4, 4)
    assert len({tuple(dihedral(x, k).flatten().tolist()) for k in range(8)}) == 8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hr_shift": (5, 0)}, "not on the LR pixel grid"),
        ({"hr_res": 15.0}, "not in ratio 3"),
        ({"crs": "EPSG:32634"}, "CRS differ"),
    ],
)
def test_misaligned_pairs_fail_naming_both_files(tmp_path, kwargs, message):
    make_pair(tmp_path, **kwargs)
    dm = PairedSRDataModule(
        tmp_path / "lr.tif", tmp_path / "hr.tif", bands=NAMES, cache_dir=tmp_path / "c"
    )
    with pytest.raises(InputError, match=message) as err:
        dm.setup()
    assert "lr.tif" in str(err.value) and "hr.tif" in str(err.value)


def test_missing_band_and_small_region(tmp_path):
    make_pair(tmp_path, lr_size=12)
    dm = PairedSRDataModule(
        tmp_path / "lr.tif", tmp_path / "hr.tif", bands=["NIR_P50"], cache_dir=tmp_path / "c"
    )
    with pytest.raises(InputError, match="missing band"):
        dm.setup()
    dm = PairedSRDataModule(
        tmp_path / "lr.tif",
        tmp_path / "hr.tif",
        bands=NAMES,
        patch_size=16,
        cache_dir=tmp_path / "c",
    )
    with pytest.raises(InputError, match="smaller than one 16x16 patch"):
        dm.setup()
