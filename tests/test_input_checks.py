"""Inputs checked against what the model was trained on: grid, orientation, content."""

from __future__ import annotations

import logging
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from affine import Affine

from bsrlc.errors import InputError
from bsrlc.inference.checks import check_content, check_grid, check_input, grid_signature
from bsrlc.inference.loading import load_checkpoint
from bsrlc.raster import write_cog

BANDS = ["BLU", "GRN", "RED"]
GRID = {"crs_units": "metre", "pixel_size": [10.0, 10.0], "north_up": True}


def _raster(path, transform, crs="EPSG:32633", value=None, shape=(3, 40, 40)):
    rng = np.random.default_rng(0)
    arr = (
        rng.integers(500, 3000, shape).astype(np.int16)
        if value is None
        else np.full(shape, value, np.int16)
    )
    return write_cog(path, arr, crs=crs, transform=transform, nodata=-9999, descriptions=BANDS)


def _model(meta):
    return SimpleNamespace(bands=BANDS, mean=[0.15] * 3, std=[0.08] * 3, meta=meta)


def test_grids_the_model_cannot_have_learnt_are_refused(tmp_path):
    ok = _raster(tmp_path / "ok.tif", Affine(10, 0, 500_000, 0, -10, 6_000_000))
    check_grid(ok, {"grid": GRID}, "classification")
    assert grid_signature(ok) == GRID
    cases = {
        "south-up": Affine(10, 0, 500_000, 0, 10, 5_999_600),
        "rotated": Affine(10, 1, 500_000, 1, -10, 6_000_000),
        "non-square": Affine(10, 0, 500_000, 0, -20, 6_000_000),
        "trained on 10": Affine(20, 0, 500_000, 0, -20, 6_000_000),
    }
    for match, transform in cases.items():
        bad = _raster(tmp_path / f"{match}.tif", transform)
        with pytest.raises(InputError, match=match) as err:
            check_grid(bad, {"grid": GRID}, "classification")
        assert str(bad) in str(err.value) and "\n" not in str(err.value)
    degrees = _raster(tmp_path / "deg.tif", Affine(1e-4, 0, 15, 0, -1e-4, 55), crs="EPSG:4326")
    with pytest.raises(InputError, match=r"CRS in degree .* trained on a grid in metre"):
        check_grid(degrees, {"grid": GRID}, "classification")
    check_grid(degrees, {}, "classification")  # an old model without a grid: not refused


def test_content_unlike_the_training_data_warns_or_is_refused(tmp_path, caplog):
    t = Affine(10, 0, 500_000, 0, -10, 6_000_000)
    model = _model({"grid": GRID, "halo": 7, "task": "classify"})
    with caplog.at_level(logging.WARNING):
        shares = check_input(_raster(tmp_path / "ok.tif", t), model, "classification")
    assert shares == {"nodata": 0.0, "saturated": 0.0, "out_of_range": 0.0} and not caplog.text
    with pytest.raises(InputError, match="every pixel .* is nodata"):
        check_input(_raster(tmp_path / "empty.tif", t, value=-9999), model, "classification")
    with caplog.at_level(logging.WARNING):
        shares = check_input(_raster(tmp_path / "sat.tif", t, value=32767), model, "classify")
    assert shares["saturated"] == 1.0 and "saturated" in caplog.text
    assert shares["out_of_range"] == 1.0 and "training range" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        check_content(
            _raster(tmp_path / "small.tif", t, shape=(3, 7, 7)),
            BANDS,
            [0.15] * 3,
            [0.08] * 3,
            15,
            "classification",
        )
    assert "smaller than the classification model's 15 px receptive field" in caplog.text


def test_checkpoints_record_their_training_grid_and_predict_refuses_south_up(
    tmp_path, tiny_stms, checkpoints
):
    import rasterio

    sr, cls = checkpoints
    assert load_checkpoint(cls).meta["grid"] == GRID
    assert load_checkpoint(sr).meta["grid"]["pixel_size"] == [30.0, 30.0]
    from bsrlc.export import export_bundle, load_bundle

    bundle = load_bundle(export_bundle(cls, tmp_path / "bundle"))
    assert bundle.metadata["grid"] == GRID and bundle.metadata["input_scale"] == 1e-4
    assert bundle.torch_model().meta["grid"] == GRID
    src = tiny_stms["sentinel2"]["2019"]
    with rasterio.open(src) as f:  # the same pixels, written south-up
        profile, data = f.profile, f.read()
        tags = [f.descriptions, f.transform]
    t = tags[1]
    flipped = Affine(t.a, 0, t.c, 0, -t.e, t.f + t.e * f.height)
    bad = write_cog(
        tmp_path / "south_up_2019.tif",
        data[:, ::-1],
        crs=profile["crs"],
        transform=flipped,
        nodata=profile["nodata"],
        descriptions=list(tags[0]),
    )
    res = subprocess.run(
        [
            sys.executable,
            "predict.py",
            f"model={cls}",
            f"input={bad}",
            f"out_dir={tmp_path / 'out'}",
            "progress=false",
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "south-up grid" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "south_up_2019_map.tif").exists()
