"""Compact per tile-year observation store and the 365-day encoding (bsrlc.timeseries)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from bsrlc.errors import ConfigError, InputError
from bsrlc.stm.compose import SensorConfig, discover_scenes
from bsrlc.timeseries.encoding import PointSeries, collate_packed, encode, fill_linear
from bsrlc.timeseries.store import (
    ObservationStore,
    Source,
    build_store,
    day_index,
    folder_source,
)

BANDS = ["BLU", "GRN", "RED"]
H, W = 4, 5
SENSOR = SensorConfig(name="test", scale=1e-4, decoder="valid", mask_suffix="_QA")


def write_scene(
    folder: Path,
    name: str,
    values: np.ndarray,
    clear: np.ndarray,
    bands: list[str] = BANDS,
    transform=None,
) -> Path:
    """A multi-band int16 scene and its mask (nonzero = clear) on a small EPSG:3035 grid."""
    folder.mkdir(parents=True, exist_ok=True)
    values = np.asarray(values, np.int16)
    if values.ndim == 0 or values.ndim == 1:  # one value per band (or one for all)
        values = np.broadcast_to(np.reshape(values, (-1, 1, 1)), (len(bands), H, W))
    h, w = values.shape[1:]
    profile = {
        "driver": "GTiff",
        "width": w,
        "height": h,
        "dtype": "int16",
        "nodata": -9999,
        "crs": "EPSG:3035",
        "transform": transform or from_origin(4_000_000, 3_000_000, 30, 30),
    }
    path = folder / f"{name}.tif"
    with rasterio.open(path, "w", count=len(bands), **profile) as dst:
        dst.write(values)
        for i, b in enumerate(bands, 1):
            dst.set_band_description(i, b)
    mask_profile = {**profile, "dtype": "uint8", "nodata": None}
    with rasterio.open(folder / f"{name}_QA.tif", "w", count=1, **mask_profile) as dst:
        dst.write(np.broadcast_to(np.asarray(clear, np.uint8), (h, w))[None])
    return path


def source(folder: Path, year: int = 2019, name: str = "test") -> Source:
    return folder_source(folder, SENSOR, BANDS, year, name=name)


def full(value: int) -> np.ndarray:
    return np.full((len(BANDS), H, W), value, np.int16)


# ----------------------------------------------------------------------------------------------
# Day index and leap years


def test_day_index_merges_29_february_and_keeps_calendar_days_aligned():
    assert day_index(dt.date(2019, 1, 1)) == 1
    assert day_index(dt.date(2019, 2, 28)) == 59
    assert day_index(dt.date(2019, 3, 1)) == 60
    assert day_index(dt.date(2019, 12, 31)) == 365
    assert day_index(dt.date(2020, 2, 28)) == 59
    assert day_index(dt.date(2020, 2, 29)) == 59  # merged into 28 Feb
    assert day_index(dt.date(2020, 3, 1)) == 60  # 1 March is 60 in every year
    assert day_index(dt.date(2020, 12, 31)) == 365
    assert day_index(dt.date(1900, 3, 1)) == 60  # 1900 is not a leap year
    assert day_index(dt.date(2000, 12, 31)) == 365  # 2000 is


def test_leap_day_and_28_february_are_one_day(tmp_path):
    write_scene(tmp_path / "s", "L_20200228", full(1000), 1)
    write_scene(tmp_path / "s", "L_20200229", full(3000), 1)
    write_scene(tmp_path / "s", "L_20201231", full(500), 1)
    [path] = build_store([source(tmp_path / "s", 2020)], tmp_path / "obs", 2020)
    st = ObservationStore(path)
    assert st.meta["n_obs"] == 2 * H * W
    dense = st.dense([0])[0]
    assert dense[:, 58].tolist() == [2000, 2000, 2000]  # mean of the two clear scenes
    assert dense[:, 364].tolist() == [500, 500, 500]
    assert np.count_nonzero(dense) == 6


# ----------------------------------------------------------------------------------------------
# Building and reading


def test_store_holds_exactly_the_clear_observations(tmp_path):
    folder = tmp_path / "s"
    v1 = np.arange(len(BANDS) * H * W, dtype=np.int16).reshape(len(BANDS), H, W) * 10 + 100
    c1 = np.ones((H, W), np.uint8)
    c1[0, 0] = 0  # cloudy
    write_scene(folder, "L_20190105", v1, c1)
    c2 = np.zeros((H, W), np.uint8)
    c2[0, 1] = c2[3, 4] = 1
    write_scene(folder, "L_20190301", full(700), c2)
    write_scene(folder, "L_20180301", full(9), 1)  # another year: skipped from a folder
    [path] = build_store([source(folder)], tmp_path / "obs", 2019)
    assert path == tmp_path / "obs" / "X0000_Y0000_2019.obs"
    st = ObservationStore(path)
    assert st.ptr.tolist()[:4] == [0, 0, 2, 3]  # pixel 0: cloudy in both; pixel 1: two days
    assert st.meta["n_obs"] == H * W - 1 + 2
    assert st.n_empty == 1
    assert st.counts(st.pixel_index([0, 0, 3], [0, 1, 4])).tolist() == [0, 2, 2]
    obs = st.gather(st.pixel_index([0], [1]))
    assert obs.day.tolist() == [5, 60]
    assert obs.values.tolist() == [[110, 310, 510], [700, 700, 700]]
    assert obs.sample.tolist() == [0, 0]
    assert obs.sensor.tolist() == [0, 0]
    dense = st.dense(st.pixel_index([[2]], [[3]]))
    assert dense.shape == (1, 1, 3, 365)
    assert dense[0, 0, :, 4].tolist() == [v1[b, 2, 3] for b in range(3)]
    assert np.count_nonzero(dense) == 3
    rows, cols = st.rowcol(
        [4_000_000 + 30 * 3 + 1, 4_000_000 + 59.9], [3_000_000 - 30 * 2 - 1, 3e6]
    )
    assert rows.tolist() == [2, 0] and cols.tolist() == [3, 1]
    meta = json.loads((path / "meta.json").read_text())
    assert meta["bands"] == BANDS and meta["year"] == 2019 and meta["sources"][0]["n_scenes"] == 2
    assert not (tmp_path / "obs" / "X0000_Y0000_2019.obs.partial").exists()


def test_reflectance_uses_each_sensors_scale_and_offset(tmp_path):
    c2 = SensorConfig(name="c2", scale=2.75e-5, offset=-0.2, decoder="valid", mask_suffix="_QA")
    write_scene(tmp_path / "s", "L_20190601", full(10000), 1)
    src = folder_source(tmp_path / "s", c2, BANDS, 2019)
    [path] = build_store([src], tmp_path / "obs", 2019)
    # 10000 * 2.75e-5 - 0.2 = 0.075 reflectance -> 750
    assert ObservationStore(path).values[0].tolist() == [750, 750, 750]


def test_same_day_same_source_is_the_mean_of_the_clear_scenes(tmp_path):
    c = np.ones((H, W), np.uint8)
    c[1, 1] = 0
    write_scene(tmp_path / "s", "A_20190601", full(1000), 1)
    write_scene(tmp_path / "s", "B_20190601", full(2001), c)
    [path] = build_store([source(tmp_path / "s")], tmp_path / "obs", 2019)
    st = ObservationStore(path)
    assert st.meta["n_obs"] == H * W  # one observation per pixel and day
    day = day_index(dt.date(2019, 6, 1))
    assert st.dense(st.pixel_index([0], [0]))[0, :, day - 1].tolist() == [1500] * 3  # 1500.5
    assert st.dense(st.pixel_index([1], [1]))[0, :, day - 1].tolist() == [1000] * 3  # B cloudy


def test_two_sources_on_one_day_the_first_wins_where_clear(tmp_path):
    c = np.ones((H, W), np.uint8)
    c[2, 2] = 0
    write_scene(tmp_path / "s2", "S2_20190710", full(400), c)
    write_scene(tmp_path / "ls", "LC08_20190710", full(900), 1)
    write_scene(tmp_path / "ls", "LC08_20190801", full(800), 1)
    srcs = [source(tmp_path / "s2", name="s2"), source(tmp_path / "ls", name="landsat")]
    [path] = build_store(srcs, tmp_path / "obs", 2019)
    st = ObservationStore(path)
    obs = st.gather(st.pixel_index([0, 2], [0, 2]))
    assert obs.sample.tolist() == [0, 0, 1, 1]
    assert obs.day.tolist() == [191, 213, 191, 213]
    assert obs.values[:, 0].tolist() == [400, 800, 900, 800]  # S2 first; Landsat where S2 cloudy
    assert obs.sensor.tolist() == [0, 1, 1, 1]
    assert [s["name"] for s in st.meta["sources"]] == ["s2", "landsat"]


def test_a_scene_straddling_tiles_gives_each_tile_its_own_pixels(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "s"
    for d in ("20190301", "20190615", "20190901"):
        write_scene(folder, f"L_{d}", rng.integers(0, 5000, (3, H, W)), rng.random((H, W)) > 0.3)
    src = source(folder)
    [whole] = build_store([src], tmp_path / "one", 2019)
    tiles = build_store([src], tmp_path / "tiles", 2019, tile_size=3)
    assert [p.name for p in tiles] == [
        "X0000_Y0000_2019.obs",
        "X0001_Y0000_2019.obs",
        "X0000_Y0001_2019.obs",
        "X0001_Y0001_2019.obs",
    ]
    ref = ObservationStore(whole)
    full_dense = ref.dense(np.arange(H * W)).reshape(H, W, 3, 365)
    n = 0
    for path in tiles:
        st = ObservationStore(path)
        c0, r0, w, h = st.meta["window"]
        part = st.dense(np.arange(h * w)).reshape(h, w, 3, 365)
        np.testing.assert_array_equal(part, full_dense[r0 : r0 + h, c0 : c0 + w])
        assert st.meta["transform"][2] == 4_000_000 + 30 * c0
        assert st.meta["transform"][5] == 3_000_000 - 30 * r0
        n += st.meta["n_obs"]
    assert n == ref.meta["n_obs"]
    # only one tile asked for; an existing store is kept unless overwrite
    again = build_store([src], tmp_path / "tiles", 2019, tile_size=3, tiles_wanted=["X0001_Y0001"])
    assert again == [tiles[3]]
    with pytest.raises(ConfigError, match="X0009_Y0000 is not a tile"):
        build_store([src], tmp_path / "tiles", 2019, tile_size=3, tiles_wanted=["X0009_Y0000"])


# ----------------------------------------------------------------------------------------------
# Bad input


def test_a_scene_without_a_date_names_the_file(tmp_path):
    write_scene(tmp_path / "s", "scene_without_date", full(1), 1)
    with pytest.raises(InputError, match=r"scene_without_date.tif: no date in the name.*rename"):
        source(tmp_path / "s")


def test_a_listed_scene_outside_the_year_names_the_file(tmp_path):
    write_scene(tmp_path / "s", "L_20190601", full(1), 1)
    write_scene(tmp_path / "s", "L_20200102", full(1), 1)
    scenes = discover_scenes(tmp_path / "s", SENSOR, BANDS)
    with pytest.raises(InputError, match=r"L_20200102.tif: dated 2020-01-02.*outside 2019"):
        build_store([Source("t", scenes, SENSOR, BANDS)], tmp_path / "obs", 2019)
    with pytest.raises(InputError, match=r"no scene of 2018 .*years 2019, 2020.*set year="):
        source(tmp_path / "s", 2018)


def test_a_band_missing_in_one_sensor_names_the_file(tmp_path):
    write_scene(tmp_path / "a", "A_20190601", full(1), 1)
    write_scene(tmp_path / "b", "B_20190602", np.ones((2, H, W)), 1, bands=["BLU", "GRN"])
    srcs = [
        source(tmp_path / "a"),
        Source("b", discover_scenes(tmp_path / "b", SENSOR, BANDS), SENSOR, BANDS),
    ]
    with pytest.raises(InputError, match=r"B_20190602.tif: band\(s\) RED missing"):
        build_store(srcs, tmp_path / "obs", 2019)
    assert not (tmp_path / "obs").exists()  # nothing written


def test_sources_on_different_grids_are_refused(tmp_path):
    write_scene(tmp_path / "a", "A_20190601", full(1), 1)
    write_scene(
        tmp_path / "b",
        "B_20190602",
        full(1),
        1,
        transform=from_origin(4_000_030, 3_000_000, 30, 30),
    )
    with pytest.raises(InputError, match=r"B_20190602.tif: grid .* differs .*one grid first"):
        build_store([source(tmp_path / "a"), source(tmp_path / "b")], tmp_path / "obs", 2019)


def test_pixels_without_observation_are_counted_and_all_zero(tmp_path, caplog):
    c = np.zeros((H, W), np.uint8)
    c[0, :2] = 1
    write_scene(tmp_path / "s", "L_20190601", full(100), c)
    with caplog.at_level("WARNING"):
        [path] = build_store([source(tmp_path / "s")], tmp_path / "obs", 2019)
    st = ObservationStore(path)
    assert st.n_empty == H * W - 2
    assert "18 of 20 pixels have no clear observation in 2019" in caplog.text
    x = encode(st.gather(st.pixel_index([0, 3], [0, 3])), n_bands=3)
    assert x[1].abs().sum().item() == 0.0  # all zero, observed flag included
    assert x[0, 3].sum().item() == 1.0


def test_a_damaged_or_partial_store_is_refused(tmp_path):
    write_scene(tmp_path / "s", "L_20190601", full(100), 1)
    [path] = build_store([source(tmp_path / "s")], tmp_path / "obs", 2019)
    np.save(path / "day.npy", np.zeros(3, np.uint16))
    with pytest.raises(InputError, match="do not match meta.json .*overwrite=true"):
        ObservationStore(path)
    with pytest.raises(InputError, match="no meta.json.*python -m bsrlc.timeseries"):
        ObservationStore(tmp_path / "nothing.obs")


# ----------------------------------------------------------------------------------------------
# Encoding


def _store_with_series(tmp_path) -> ObservationStore:
    folder = tmp_path / "s"
    c = np.ones((H, W), np.uint8)
    c[1, :] = 0
    write_scene(folder, "L_20190110", np.array([1000, 2000, 3000]), 1)
    write_scene(folder, "L_20190120", np.array([2000, 2000, 5000]), c)
    [path] = build_store([source(folder)], tmp_path / "obs", 2019)
    return ObservationStore(path)


def test_encode_scatters_observations_at_their_days(tmp_path):
    st = _store_with_series(tmp_path)
    x = encode(st.gather(st.pixel_index([0, 1], [0, 0])), device="cpu")
    assert x.shape == (2, 4, 365) and x.dtype == torch.float32
    assert x[0, :, 9].tolist() == pytest.approx([0.1, 0.2, 0.3, 1.0])
    assert x[0, :, 19].tolist() == pytest.approx([0.2, 0.2, 0.5, 1.0])
    assert x[1, :, 19].tolist() == [0.0, 0.0, 0.0, 0.0]  # cloudy: a gap, flag 0
    assert torch.count_nonzero(x[0]).item() == 8
    assert torch.count_nonzero(x[1]).item() == 4
    no_flag = encode(st.gather(st.pixel_index([0], [0])), flag=False)
    assert no_flag.shape == (1, 3, 365)
    empty = encode(st.gather(np.zeros((0,), np.int64)), n_bands=3)
    assert empty.shape == (0, 4, 365)


def test_encode_matches_the_dense_store_for_patches(tmp_path):
    st = _store_with_series(tmp_path)
    idx = st.pixel_index(np.array([[[0, 0], [1, 1]]]), np.array([[[0, 1], [0, 1]]]))
    x = encode(st.gather(idx))
    assert x.shape == (1, 2, 2, 4, 365)
    dense = st.dense(idx).astype(np.float32) * 1e-4
    np.testing.assert_allclose(x[..., :3, :].numpy(), dense, rtol=1e-6)
    np.testing.assert_array_equal(x[..., 3, :].numpy(), (st.dense(idx)[..., 0, :] != 0) * 1.0)


def test_fill_linear_interpolates_between_observations_only():
    x = torch.zeros(3, 2, 365)
    x[0, 0, 9], x[0, 0, 19], x[0, 1, [9, 19]] = 0.1, 0.3, 1.0  # days 10 and 20
    x[1, 0, 100], x[1, 1, 100] = 0.5, 1.0  # one observation
    out = fill_linear(x)
    assert out.shape == (3, 1, 365)
    assert out[0, 0, 9].item() == pytest.approx(0.1)
    assert out[0, 0, 14].item() == pytest.approx(0.2)  # halfway
    assert out[0, 0, 10].item() == pytest.approx(0.12)
    assert out[0, 0, 0].item() == pytest.approx(0.1)  # before the first: held
    assert out[0, 0, 364].item() == pytest.approx(0.3)  # after the last: held
    assert torch.allclose(out[1], torch.full((1, 365), 0.5))
    assert out[2].abs().sum().item() == 0.0  # nothing observed: stays 0
    explicit = fill_linear(x[:, :1], observed=x[:, 1] > 0)
    assert torch.equal(explicit, out)


def test_point_series_batches_encode_like_the_store(tmp_path):
    st = _store_with_series(tmp_path)
    rows, cols = np.array([0, 1, 2, 3, 1]), np.array([0, 0, 4, 2, 3])
    ds = PointSeries(st, rows, cols, labels=[4, 3, 2, 1, 0])
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_packed)
    batches = list(loader)
    assert isinstance(batches[0]["values"], np.ndarray)  # compact until encode()
    assert [b["label"].tolist() for b in batches] == [[4, 3], [2, 1], [0]]
    assert [b["n_obs"].tolist() for b in batches] == [[2, 1], [2, 2], [1]]
    x = torch.cat([encode(b, n_bands=3) for b in batches])
    ref = st.dense(st.pixel_index(rows, cols)).astype(np.float32) * 1e-4
    np.testing.assert_allclose(x[:, :3].numpy(), ref, rtol=1e-6)
    import pickle

    again = pickle.loads(pickle.dumps(ds))  # spawned workers: the path travels, not the data
    assert len(pickle.dumps(st)) < 500 and isinstance(again.store.values, np.memmap)
    assert again.__getitems__([2])["values"].tolist() == ds.__getitems__([2])["values"].tolist()
    patches = PointSeries(st, rows, cols, patch=3)
    b = patches.__getitems__([0])
    assert b["shape"] == (1, 3, 3)
    assert b["n_obs"].tolist() == [[[2, 2, 2], [2, 2, 2], [1, 1, 1]]]  # clamped at the edge
    with pytest.raises(InputError, match="outside the 4x5 tile"):
        PointSeries(st, [4], [0])
    with pytest.raises(InputError, match="patch=2: must be an odd"):
        PointSeries(st, [0], [0], patch=2)


# ----------------------------------------------------------------------------------------------
# The command line and the demo world


def test_cli_builds_stores_and_reports_bad_input_in_one_line(tmp_path, capsys):
    from bsrlc.timeseries.__main__ import main

    write_scene(tmp_path / "s", "L_20190601", full(100), 1)
    out = tmp_path / "obs"
    main(
        [
            f"scenes={tmp_path / 's'}",
            "sensor=demo_landsat",
            "year=2019",
            f"out={out}",
            "bands=[BLU,GRN,RED]",
            "tile_size=2",
            "sensor.mask_suffix=_QA",
            "sensor.decoder=valid",
        ]
    )
    printed = capsys.readouterr().out.split()
    assert printed[0].endswith("X0000_Y0000_2019.obs") and len(printed) == 6
    with pytest.raises(SystemExit) as exc:
        main([f"scenes={tmp_path / 's'}", "year=2019", f"out={out}", "colour=red"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: colour=red: not a key=value setting") and "\n" not in err
    with pytest.raises(SystemExit):
        main([f"scenes={tmp_path / 's'}", "year=2019", f"out={out}", "sensor=nope"])
    assert "sensor=nope: no " in capsys.readouterr().err


def test_tiny_world_store_counts_every_clear_observation(tiny_world, tmp_path):
    from bsrlc.stm.compose import SceneReader, plan_stm
    from bsrlc.timeseries.__main__ import sensor_config

    sensor = sensor_config("demo_landsat")
    bands = ["BLU", "GRN", "RED", "NIR", "SW1", "SW2"]
    src = folder_source(tiny_world.root / "scenes/landsat", sensor, bands, 2019)
    # 64x64 px in 40 px tiles: the tiles cut the scenes
    [path] = build_store([src], tmp_path, 2019, tile_size=40, tiles_wanted=["X0000_Y0000"])
    plan = plan_stm(src.scenes, bands, ["count"], [], sensor)
    reader = SceneReader(plan)
    from rasterio.windows import Window

    stack, clear = reader.read(Window(0, 0, 40, 40))
    reader.close()
    st = ObservationStore(path)
    assert st.height == st.width == 40
    np.testing.assert_array_equal(st.counts(np.arange(40 * 40)).reshape(40, 40), clear.sum(axis=0))
    t, r, c = np.argwhere(clear)[0]
    obs = st.gather(st.pixel_index([r], [c]))
    k = list(obs.day).index(day_index(src.scenes[t].date))
    assert obs.values[k].tolist() == stack[t, :, r, c].tolist()  # demo scale 1e-4: DNs kept


# ----------------------------------------------------------------------------------------------
# Scenes as delivered (another CRS), warped onto the target grid's tiles


def _utm_scene(folder: Path, name: str, date: str, value: int, x0: float, clear_cols=None):
    """A 40 x 40 px 30 m scene in UTM 33N, one file per band (value everywhere) and a QA file."""
    from bsrlc.stm.sources import MaskLayer, scene_from_files

    folder.mkdir(parents=True, exist_ok=True)
    prof = {
        "driver": "GTiff",
        "width": 40,
        "height": 40,
        "count": 1,
        "crs": "EPSG:32633",
        "transform": from_origin(x0, 5_540_000, 30, 30),
    }
    files = {}
    for b in BANDS:
        files[b] = folder / f"{name}_{b}.tif"
        with rasterio.open(files[b], "w", dtype="int16", nodata=-9999, **prof) as dst:
            dst.write(np.full((1, 40, 40), value, np.int16))
    qa = np.ones((40, 40), np.uint8)
    if clear_cols is not None:
        qa[:, clear_cols:] = 0
    with rasterio.open(folder / f"{name}_QA.tif", "w", dtype="uint8", **prof) as dst:
        dst.write(qa[None])
    return scene_from_files(
        files,
        date,
        masks=[MaskLayer(folder / f"{name}_QA.tif", "valid")],
        scene_id=name,
        scale=1e-4,
    )


def test_archive_scenes_straddling_tiles_are_split_between_them(tmp_path):
    from odc.geo.geom import box

    from bsrlc.stm.grid import TargetGrid
    from bsrlc.stm.sources import WarpReader
    from bsrlc.timeseries.store import build_archive_store

    a = _utm_scene(tmp_path / "in", "A", "2019-06-01", 1000, 500_000)
    b = _utm_scene(tmp_path / "in", "B", "2019-07-01", 2000, 500_300, clear_cols=20)
    c = _utm_scene(tmp_path / "in", "C", "2019-06-01", 3000, 500_000)  # 2nd source, same day
    grid = TargetGrid(crs="EPSG:3035", resolution=30, tile_size=30 * 32)
    srcs = [("s2", [a, b]), ("landsat", [c])]
    paths = build_archive_store(srcs, tmp_path / "obs", 2019, grid, bands=BANDS)
    assert len(paths) == 6  # the scenes' footprints touch six 32 x 32 px tiles ...
    stores = [ObservationStore(p) for p in paths]
    assert sum(s.meta["n_obs"] > 0 for s in stores) >= 4  # ... and give clear pixels to 4+
    assert all(s.height == s.width == 32 and s.meta["crs"] == "EPSG:3035" for s in stores)
    jun, jul = day_index(dt.date(2019, 6, 1)), day_index(dt.date(2019, 7, 1))
    for st in stores:
        assert set(np.unique(st.day)) <= {jun, jul}
        # June: source s2 (1000) wins over landsat (3000) wherever it is clear
        assert set(st.values[st.day == jun, 0].tolist()) <= {1000}
        assert set(st.values[st.day == jul, 0].tolist()) <= {2000}
    # every tile holds exactly the clear pixels of the scenes inside it: the sum over tiles is
    # what one read of the union of the tiles gives
    reader = WarpReader()
    xs = [s.meta["transform"][2] for s in stores]
    ys = [s.meta["transform"][5] for s in stores]
    union = grid.geobox(box(min(xs), min(ys) - 480, max(xs) + 480, max(ys), "EPSG:3035"))
    n_jun = np.count_nonzero(reader.read(a, union, BANDS).clear)
    n_jul = np.count_nonzero(reader.read(b, union, BANDS).clear)
    reader.close()
    assert n_jun > 0 and n_jul > 0
    assert sum(int((s.day == jun).sum()) for s in stores) == n_jun
    assert sum(int((s.day == jul).sum()) for s in stores) == n_jul
    assert sum(int((s.sensor == 1).sum()) for s in stores) == 0  # C is hidden under A
    with pytest.raises(InputError, match=r"A_BLU.tif: scene A dated 2019-06-01, outside 2020"):
        build_archive_store([("s2", [a])], tmp_path / "obs2", 2020, grid, bands=BANDS)
    with pytest.raises(InputError, match=r"A_BLU.tif: scene A has no band\(s\) NIR"):
        build_archive_store([("s2", [a])], tmp_path / "obs2", 2019, grid, bands=[*BANDS, "NIR"])


def test_cli_landsat_c2_archive_onto_a_grid_tile(tmp_path, capsys):
    """A Collection 2 scene in UTM as delivered: stored on an EPSG:3035 tile with C2 scaling."""
    from bsrlc.stm.grid import TargetGrid
    from bsrlc.stm.sources import WarpReader, discover_sources
    from bsrlc.timeseries.__main__ import main
    from tests.test_stm_archive import _c2_scene, _original

    truth, fields = _original()
    _c2_scene(
        tmp_path / "c2", truth, fields["2020-05-10"], "2020-05-10", 32633, (17.85, 18.15), "190025"
    )
    grid = TargetGrid(tile_size=3000)
    x, y = truth.affine * (truth.shape.x / 2, truth.shape.y / 2)
    tile = grid.tile_of_point(x, y)
    main(
        [
            f"scenes={tmp_path / 'c2'}",
            "source=landsat_c2",
            "year=2020",
            f"out={tmp_path / 'o'}",
            "grid.tile_size=3000",
            f"tiles=[{tile.id}]",
        ]
    )
    [printed] = capsys.readouterr().out.split()
    st = ObservationStore(printed)
    assert st.meta["tile"] == tile.id and (st.height, st.width) == (100, 100)
    assert set(np.unique(st.day).tolist()) == {day_index(dt.date(2020, 5, 10))}
    [scene] = discover_sources(tmp_path / "c2").scenes
    with WarpReader() as reader:
        got = reader.read(scene, tile.geobox, list(st.bands))
    refl = np.rint((got.data.astype(np.float64) * 2.75e-5 - 0.2) * 1e4)
    assert st.n_empty == int((~got.clear).sum())
    np.testing.assert_array_equal(st.counts(np.arange(100 * 100)), got.clear.reshape(-1) * 1)
    np.testing.assert_allclose(
        st.values, refl.reshape(6, -1)[:, got.clear.reshape(-1)].T, atol=1
    )  # float32 vs float64 rounding
    with pytest.raises(SystemExit):
        main([f"scenes={tmp_path / 'c2'}", "source=landsat_c2", "year=2019", f"out={tmp_path}"])
    assert "no scene of 2019 (1 scenes of years 2020)" in capsys.readouterr().err
