"""Raster I/O (grid checks, band lookup, atomic COG writing) and the chip cache."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine

from bsrlc.data.chips import RasterCache, valid_corners
from bsrlc.data.datasets import STMRaster
from bsrlc.errors import InputError
from bsrlc.raster import (
    COGWriter,
    band_indices,
    check_aligned,
    check_same_grid,
    expand_band_patterns,
    raster_info,
    write_cog,
)

T30 = Affine(30, 0, 5_250_000, 0, -30, 4_060_020)
T10 = Affine(10, 0, 5_250_000, 0, -10, 4_060_020)


def _write(path, arr, transform, crs="EPSG:3035", names=None, nodata=None):
    write_cog(path, arr, crs=crs, transform=transform, descriptions=names, nodata=nodata)
    return raster_info(path)


def test_cog_is_atomic_and_georeferenced(tmp_path):
    arr = np.arange(2 * 40 * 50, dtype=np.int16).reshape(2, 40, 50)
    info = _write(tmp_path / "a.tif", arr, T30, names=["BLU_P50", "GRN_P50"], nodata=-32768)
    assert info.descriptions == ("BLU_P50", "GRN_P50") and info.transform == T30
    with rasterio.open(tmp_path / "a.tif") as src:
        assert np.array_equal(src.read(), arr)
        assert src.profile["tiled"]
    with (
        pytest.raises(RuntimeError),
        COGWriter(
            tmp_path / "b.tif",
            crs="EPSG:3035",
            transform=T30,
            width=8,
            height=8,
            count=1,
            dtype="uint8",
        ) as w,
    ):
        w.write(np.zeros((1, 8, 8), np.uint8))
        raise RuntimeError("killed midway")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif"]  # nothing half-written
    with pytest.raises(InputError, match="output exists"):
        write_cog(tmp_path / "a.tif", arr, crs="EPSG:3035", transform=T30, overwrite=False)


def test_grid_checks_name_both_files(tmp_path):
    lr = _write(tmp_path / "lr.tif", np.zeros((1, 10, 10), np.int16), T30)
    hr = _write(tmp_path / "hr.tif", np.zeros((1, 30, 30), np.int16), T10)
    check_aligned(lr, hr, 3)
    shifted = _write(
        tmp_path / "hr_shift.tif", np.zeros((1, 30, 30), np.int16), T10 * Affine.translation(1, 0)
    )
    with pytest.raises(InputError, match="not on the LR pixel grid") as err:
        check_aligned(lr, shifted, 3)
    assert "lr.tif" in str(err.value) and "hr_shift.tif" in str(err.value)
    other_crs = _write(tmp_path / "utm.tif", np.zeros((1, 30, 30), np.int16), T10, "EPSG:32634")
    with pytest.raises(InputError, match="CRS differ"):
        check_aligned(lr, other_crs, 3)
    with pytest.raises(InputError, match="not in ratio 2"):
        check_aligned(lr, hr, 2)
    with pytest.raises(InputError, match="differs from"):
        check_same_grid([hr, shifted])


def test_band_lookup(tmp_path):
    info = _write(
        tmp_path / "s.tif", np.zeros((3, 4, 4), np.int16), T30, names=["BLU_P50", "NIR_P50", "X"]
    )
    assert band_indices(info, ["NIR_P50", "BLU_P50"]) == [2, 1]
    assert expand_band_patterns(info, ["*_P50"]) == ["BLU_P50", "NIR_P50"]
    with pytest.raises(InputError, match="missing band"):
        band_indices(info, ["SW1_P50"])
    with pytest.raises(InputError, match="no band matches"):
        expand_band_patterns(info, ["*_P90"])


def test_no_crs_and_corrupt_files(tmp_path):
    with rasterio.open(
        tmp_path / "nocrs.tif", "w", driver="GTiff", width=4, height=4, count=1, dtype="uint8"
    ) as dst:
        dst.write(np.zeros((1, 4, 4), np.uint8))
    with pytest.raises(InputError, match="has no CRS"):
        raster_info(tmp_path / "nocrs.tif")
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(InputError, match="not a readable raster"):
        raster_info(tmp_path / "bad.tif")


def test_chip_cache_matches_rasterio_and_torchgeo(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 5000, size=(3, 70, 90)).astype(np.int16)
    arr[:, 5, 7] = -32768
    _write(tmp_path / "stm.tif", arr, T30, names=["A", "B", "C"], nodata=-32768)
    cache = RasterCache(tmp_path / "stm.tif", ["C", "A"], cache_dir=tmp_path / "c", progress=False)
    assert cache.shape == (70, 90)
    np.testing.assert_allclose(cache.patch(10, 20, 8), arr[[2, 0], 10:18, 20:28] * 1e-4, rtol=1e-6)
    assert not cache.valid[5, 7] and cache.valid.sum() == 70 * 90 - 1
    # torchgeo reference path returns the same pixels for the same extent
    ds = STMRaster(tmp_path / "stm.tif", bands=["C", "A"])
    x0, y0 = T30 * (20, 10)
    sample = ds[x0 : x0 + 8 * 30, y0 - 8 * 30 : y0]
    np.testing.assert_array_equal(sample["image"].numpy(), arr[[2, 0], 10:18, 20:28])
    corners = valid_corners(cache.valid, 4)
    assert len(corners) == (70 - 3) * (90 - 3) - 16  # the 16 windows touching the bad pixel
    assert not (
        (corners[:, 0] <= 5) & (corners[:, 0] >= 2) & (corners[:, 1] <= 7) & (corners[:, 1] >= 4)
    ).any()


@pytest.mark.parametrize(("shape", "pixels"), [((64, 57), 5), ((40, 40), 1), ((20, 20), 15)])
def test_grow_equals_binary_dilation_by_a_square(shape: tuple[int, int], pixels: int) -> None:
    from scipy.ndimage import binary_dilation

    from bsrlc.data.regions import grow

    mask = np.random.default_rng(pixels).random(shape) < 0.01
    mask[0, 0] = mask[-1, 3] = True  # borders: the outside counts as False
    square = np.ones((2 * pixels + 1,) * 2, bool)
    np.testing.assert_array_equal(grow(mask, pixels), binary_dilation(mask, structure=square))
    assert not grow(np.zeros(shape, bool), pixels).any()


def test_epoch_sampler_splits_one_order_over_ranks(monkeypatch):
    """Two ranks of batch b draw, between them, one process's batches of 2b (same keys)."""
    from bsrlc.data import chips

    one = list(chips.EpochSampler(11, seed=3, shuffle=True))
    ranks = []
    for rank in (0, 1):
        monkeypatch.setattr(chips, "distributed_rank", lambda r=rank: (r, 2))
        sampler = chips.EpochSampler(11, seed=3, shuffle=True)
        assert len(sampler) == 5  # the odd position is dropped: equal steps on every rank
        ranks.append(list(sampler))
        assert list(chips.RankSlice(5)) == list(range(rank, 5, 2))
    for k in range(2):  # batch k: 2 per rank, 4 in one process
        both = ranks[0][2 * k : 2 * k + 2] + ranks[1][2 * k : 2 * k + 2]
        assert sorted(both, key=lambda key: key[2]) == one[4 * k : 4 * k + 4]
    monkeypatch.setattr(chips, "distributed_rank", lambda: (0, 4))
    with pytest.raises(chips.ConfigError, match="3 sample"):
        len(chips.RankSlice(3))
