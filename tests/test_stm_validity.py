"""STM validity: valid range, QA_RADSAT saturation, exclusion counts, QA product checks, outputs.

Small synthetic Landsat Collection-2-style scenes (per-band ``SR_B*`` files, QA_PIXEL with real
Collection-2 values, QA_RADSAT) check that saturated or out-of-range values never enter the
STMs, that each excluded observation is counted once under the right reason, that each QA
decoder refuses a product that is not its own, that STM COGs carry GDAL scale/offset, and that
period labels such as ``2008_2013`` stay strings through the real CLI.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from bsrlc.errors import ConfigError, InputError
from bsrlc.raster import write_cog
from bsrlc.stm import (
    SceneReader,
    SensorConfig,
    check_options,
    composite,
    discover_scenes,
    get_decoder,
    plan_stm,
)
from bsrlc.stm.__main__ import period_label, typed_numbers
from bsrlc.stm.compose import _exclude, _radsat_mask, check_valid_range

T30 = Affine(30, 0, 5_250_000, 0, -30, 4_060_020)
BANDS = {
    "BLU": "SR_B2",
    "GRN": "SR_B3",
    "RED": "SR_B4",
    "NIR": "SR_B5",
    "SW1": "SR_B6",
    "SW2": "SR_B7",
}
C2_CLEAR, C2_WATER, C2_CLOUD, C2_FILL = 21824, 21952, 22280, 1
C2 = SensorConfig(
    name="landsat",
    scale=2.75e-5,
    offset=-0.2,
    decoder="landsat_qa_pixel",
    mask_suffix="_QA_PIXEL",
    date_regex=r"_(\d{8})_",
    valid_range=[7273, 43636],
    radsat_suffix="_QA_RADSAT",
)
SIZE = (6, 8)
B = {name: k for k, name in enumerate(BANDS)}  # output band -> stack index


def write_c2(folder, edits, n=4, radsat=True, seed=0):
    """Collection-2-style scenes as USGS delivers them; returns (dn, qa, radsat) stacks.

    ``edits(t, dn, qa, radsat)`` changes scene t's arrays in place before they are written.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    dns, qas, rads = [], [], []
    for t in range(n):
        scene = f"LC08_L2SP_193023_2019{t + 1:02d}15_20200827_02_T1"
        dn = rng.integers(8000, 20000, size=(6, *SIZE)).astype(np.uint16)
        qa = np.full(SIZE, C2_CLEAR, np.uint16)
        qa[-1, -1] = C2_WATER
        rs = np.zeros(SIZE, np.uint16)
        edits(t, dn, qa, rs)
        for b, name in enumerate(BANDS.values()):
            write_cog(
                folder / f"{scene}_{name}.TIF", dn[b], crs="EPSG:3035", transform=T30, nodata=0
            )
        write_cog(folder / f"{scene}_QA_PIXEL.TIF", qa, crs="EPSG:3035", transform=T30)
        if radsat:
            write_cog(folder / f"{scene}_QA_RADSAT.TIF", rs, crs="EPSG:3035", transform=T30)
        dns.append(dn)
        qas.append(qa)
        rads.append(rs)
    return np.stack(dns), np.stack(qas), np.stack(rads)


def discover(folder, sensor=C2):
    return discover_scenes(
        folder, sensor, BANDS, glob="*.TIF", band_file_pattern="{scene}_{band}.TIF"
    )


def reasons_edits(t, dn, qa, rs):
    """Two observations per exclusion reason, some with a second reason that comes later."""
    if t == 0:
        dn[:, 0, 0] = 0  # fill in every band (QA_PIXEL fill too): fill
        qa[0, 0] = C2_FILL
        dn[B["RED"], 0, 1] = 0  # nodata in one band: fill
    elif t == 1:
        qa[1, 0] = C2_CLOUD  # QA
        qa[1, 1] = C2_CLOUD  # QA and saturated: counted as QA
        dn[B["RED"], 1, 1] = 65535
    elif t == 2:
        rs[2, 0] = 1 << 3  # band 4 (RED) saturated: saturation
        rs[2, 1] = 1 << 0  # band 1 (coastal) is not read: used
        rs[2, 2] = 1 << 4  # band 5 (NIR) saturated and out of range: saturation
        dn[B["NIR"], 2, 2] = 65535
    elif t == 3:
        dn[B["NIR"], 3, 0] = 65535  # saturated value, not flagged: range
        dn[B["BLU"], 3, 1] = 7000  # below 7273: range


def test_radsat_files_are_found_and_never_taken_as_scenes(tmp_path):
    write_c2(tmp_path, lambda *a: None, n=2)
    scenes = discover(tmp_path)
    assert len(scenes) == 2
    assert [s.radsat.name for s in scenes] == [
        "LC08_L2SP_193023_20190115_20200827_02_T1_QA_RADSAT.TIF",
        "LC08_L2SP_193023_20190215_20200827_02_T1_QA_RADSAT.TIF",
    ]
    (tmp_path / scenes[1].radsat.name).unlink()  # used where it exists
    assert discover(tmp_path)[1].radsat is None
    assert all(
        s.radsat is None
        for s in discover(tmp_path, SensorConfig(**{**vars(C2), "radsat_suffix": None}))
    )


def test_exclusion_reasons_are_counted_once_each(tmp_path):
    write_c2(tmp_path, reasons_edits)
    p = plan_stm(discover(tmp_path), BANDS, ["max", "count"], [], C2)
    assert p.radsat_mask == 0b1111110  # SR_B2..SR_B7 -> bits 1..6
    reader = SceneReader(p)
    try:
        _, clear, excluded = reader.read_counted(Window(0, 0, SIZE[1], SIZE[0]))
        _, clear_plain = reader.read(Window(0, 0, SIZE[1], SIZE[0]))
    finally:
        reader.close()
    assert dict(zip(["fill", "qa", "saturation", "range"], excluded.tolist(), strict=True)) == {
        "fill": 2,
        "qa": 2,
        "saturation": 2,
        "range": 2,
    }
    total = 4 * SIZE[0] * SIZE[1]
    assert clear.sum() == total - 8 and np.array_equal(clear, clear_plain)
    assert clear[2, 2, 1]  # a flag of a band not read does not exclude


def test_saturated_values_never_enter_max_and_the_log_counts_them(tmp_path, caplog):
    dn, _, _ = write_c2(tmp_path, reasons_edits)
    scenes = discover(tmp_path)
    caplog.set_level(logging.INFO, logger="bsrlc.stm.compose")
    out = composite(scenes, tmp_path / "out.tif", BANDS, ["max", "count"], C2, progress=False)
    with rasterio.open(out) as src:
        data = src.read()
    nir_max, red_max, count = data[B["NIR"]], data[B["RED"]], data[-1]
    # the reference: numpy over the observations that pass every check
    used = np.ones((4, *SIZE), bool)
    used[0, 0, 0] = used[0, 0, 1] = used[1, 1, 0] = used[1, 1, 1] = False
    used[2, 2, 0] = used[2, 2, 2] = used[3, 3, 0] = used[3, 3, 1] = False
    np.testing.assert_array_equal(count, used.sum(0))
    refl = np.where(used[:, None], dn * 2.75e-5 - 0.2, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = np.round(np.nanmax(refl, axis=0) * 10000)
    np.testing.assert_array_equal(nir_max, ref[B["NIR"]])
    np.testing.assert_array_equal(red_max, ref[B["RED"]])
    assert nir_max.max() < 10000 and red_max.max() < 10000  # 65535 (reflectance 1.6) is gone
    line = next(r.getMessage() for r in caplog.records if "excluded:" in r.getMessage())
    assert f"{4 * 48} observations, {4 * 48 - 8} used (CLEAR_COUNT)" in line
    assert (
        "fill/nodata 2, QA 2, saturation (_QA_RADSAT) 2, out of valid range (7273..43636) 2" in line
    )


def test_without_range_or_radsat_the_saturated_value_is_used(tmp_path):
    write_c2(tmp_path, reasons_edits, radsat=False)
    plain = SensorConfig(**{**vars(C2), "valid_range": None})
    out = composite(
        discover(tmp_path, plain), tmp_path / "o.tif", BANDS, ["max"], plain, progress=False
    )
    with rasterio.open(out) as src:
        assert src.read(B["NIR"] + 1)[3, 0] == round((65535 * 2.75e-5 - 0.2) * 10000)


def test_valid_range_on_int16_and_bounds_past_the_dtype(tmp_path):
    """int16 scenes with valid_range [-500, 60000]: the upper bound cannot bind, the lower does."""
    dn = np.full((6, *SIZE), 1000, np.int16)
    dn[0, 0, 0] = -600  # below -500: excluded
    dn[0, 0, 1] = 32767  # int16 maximum: inside [-500, 60000]
    dn[0, 0, 2] = -9999  # nodata: fill
    write_cog(
        tmp_path / "LC08_20190115.tif",
        dn,
        crs="EPSG:3035",
        transform=T30,
        nodata=-9999,
        descriptions=list(BANDS),
    )
    write_cog(
        tmp_path / "LC08_20190115_QA_PIXEL.tif",
        np.full(SIZE, 64, np.uint16),
        crs="EPSG:3035",
        transform=T30,
    )
    sensor = SensorConfig(
        decoder="landsat_qa_pixel", mask_suffix="_QA_PIXEL", valid_range=[-500, 60000]
    )
    scenes = discover_scenes(tmp_path, sensor, list(BANDS))
    p = plan_stm(scenes, list(BANDS), ["max"], [], sensor)
    reader = SceneReader(p)
    try:
        _, clear, excluded = reader.read_counted(Window(0, 0, SIZE[1], SIZE[0]))
    finally:
        reader.close()
    assert excluded.tolist() == [1, 0, 0, 1]
    assert not clear[0, 0, 0] and clear[0, 0, 1] and not clear[0, 0, 2]


def test_nan_in_float_scenes_counts_as_fill():
    stack = np.ones((2, 2, 1, 3), np.float32)  # (t, b, h, w)
    stack[0, 1, 0, 0] = np.nan  # fill
    stack[1, 0, 0, 2] = 5.0  # out of range
    clear = np.ones((2, 1, 3), bool)
    clear[1, 0, 1] = False  # QA
    assert _exclude(stack, clear, None, None, (0.0, 2.0)).tolist() == [1, 1, 0, 1]
    assert clear.sum() == 3


def test_valid_range_and_radsat_settings_are_checked():
    assert check_valid_range(None) is None
    assert check_valid_range([7273, 43636]) == (7273.0, 43636.0)
    for bad, msg in [
        ([1], "expected \\[lo, hi\\]"),
        ("x", "expected"),
        ([10, 1], "lo is above hi"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            check_valid_range(bad)
    assert _radsat_mask(None, ["SR_B2", "SR_B7"]) == 0b1000010
    assert _radsat_mask(None, ["BLU", "SR_B3"]) == 0x1FF  # band numbers unknown: any band
    assert _radsat_mask([0, 9], ["BLU"]) == 0b1000000001
    with pytest.raises(ConfigError, match="radsat_bits"):
        _radsat_mask([16], ["BLU"])


# --- QA products are checked, not assumed ------------------------------------------------------

C1_L8 = [2720] * 12 + [2724, 2728, 2752, 2800, 2800, 2976, 3744, 6816, 1, 1]  # Level-1 BQA
C1_L457 = [672] * 10 + [676, 704, 752, 928, 1696, 1, 1]
C1_PIXEL_QA = [322] * 10 + [324, 328, 336, 352, 480, 66, 68, 1]  # Level-2 SR pixel_qa
C2_L89 = [21824] * 10 + [21952, 22080, 22280, 23888, 30048, 54596, 55052, 1, 1]
C2_L457 = [5440] * 10 + [5504, 5696, 5896, 7440, 7568, 13664, 1]
HANDMADE = [64] * 5 + [64 | 128, 16, 8 | 2, 1, 0]  # the demo's and the tests' masks


def grid(values, shape=(64, 64)):
    """Values tiled over a window (as the reader passes them), uint16."""
    return np.resize(np.asarray(values, np.uint16), shape)


@pytest.mark.parametrize(
    "values", [C1_L8, C1_L457, C1_PIXEL_QA], ids=["bqa-l8", "bqa-l457", "pixel_qa"]
)
def test_qa_pixel_decoder_refuses_collection1(values):
    dec = get_decoder("landsat_qa_pixel")
    with pytest.raises(InputError) as err:
        dec(grid(values), path="/data/LT05_x_BQA.TIF")
    msg = str(err.value)
    assert (
        msg.startswith("/data/LT05_x_BQA.TIF: looks like a Landsat Collection-1")
        and "\n" not in msg
    )
    assert "landsat_c1_bqa" in msg and str(values[0]) in msg  # the fix and what it looks like


@pytest.mark.parametrize(
    "values", [C2_L89, C2_L457, HANDMADE, [C2_FILL]], ids=["l89", "l457", "handmade", "fill"]
)
def test_qa_pixel_decoder_passes_collection2_and_handmade_masks(values):
    dec = get_decoder("landsat_qa_pixel")
    clear = dec(grid(values), path="x_QA_PIXEL.TIF")
    assert clear.shape == (64, 64)
    if values is C2_L89:
        assert clear.mean() > 0.5  # 21824 / 21952 are clear


def test_qa_pixel_refuses_non_integer_and_8bit_masks():
    dec = get_decoder("landsat_qa_pixel")
    with pytest.raises(InputError, match="m.tif: float32 values.*sensor.decoder=valid"):
        dec(np.zeros((4, 4), np.float32), path="m.tif")
    with pytest.raises(InputError, match="m.tif: 8-bit values.*sentinel2_scl"):
        dec(np.full((4, 4), 4, np.uint8), path="m.tif")
    with pytest.raises(InputError, match="^QA array: "):  # no path: still one line
        dec(grid(C1_L8))


def test_c1_bqa_decoder_bits_and_refusal():
    dec = get_decoder("landsat_c1_bqa")
    # clear L8, clear L4-7, fill, terrain occlusion, saturated, cloud, medium cloud confidence,
    # high shadow confidence, high snow confidence, high cirrus confidence
    qa = np.array([2720, 672, 1, 2, 2724, 2800, 2752, 2976, 3744, 6816], np.uint16)
    np.testing.assert_array_equal(dec(qa), [1, 1, 0, 0, 0, 0, 1, 0, 0, 0])
    assert dec(qa, exclude_cirrus=False)[9]
    np.testing.assert_array_equal(dec(qa, exclude_saturated=False)[4], 1)
    np.testing.assert_array_equal(dec(qa, cloud_confidence=2)[6], 0)  # medium cloud confidence
    with pytest.raises(
        InputError,
        match="x.TIF: looks like Landsat Collection-2 QA_PIXEL.*decoder=landsat_qa_pixel",
    ):
        dec(grid(C2_L89), path="x.TIF")
    check_options("landsat_c1_bqa", {"cloud_confidence": 2})


def test_scl_decoder_refuses_other_products():
    dec = get_decoder("sentinel2_scl")
    assert dec(np.arange(12, dtype=np.uint8), path="s_SCL.tif").sum() == 3
    with pytest.raises(InputError, match="s_SCL.tif: values up to 100 .*classes are 0-11"):
        dec(np.array([0, 5, 40, 100], np.uint8), path="s_SCL.tif")  # a cloud probability band
    with pytest.raises(
        InputError,
        match="s_SCL.tif: uint16 values \\(looks like Landsat Collection-2 QA_PIXEL\\).*uint8.*landsat_qa_pixel",
    ):
        dec(grid(C2_L89), path="s_SCL.tif")
    with pytest.raises(InputError, match="s_SCL.tif: int16 values.*force_qai"):
        dec(np.zeros((4, 4), np.int16), path="s_SCL.tif")


def test_force_qai_decoder_refuses_wrong_dtypes():
    dec = get_decoder("force_qai")
    for ok in (np.zeros((4, 4), np.int16), np.zeros((4, 4), np.uint16)):
        assert dec(ok, path="x_QAI.tif").all()
    with pytest.raises(
        InputError,
        match="x_QAI.tif: uint8 values \\(looks like a Sentinel-2 SCL\\).*int16.*sentinel2_scl",
    ):
        dec(np.full((4, 4), 4, np.uint8), path="x_QAI.tif")
    for dtype in (np.float32, np.int32):
        with pytest.raises(
            InputError, match=f"x_QAI.tif: {np.dtype(dtype).name} values.*FORCE QAI band is int16"
        ):
            dec(np.zeros((4, 4), dtype), path="x_QAI.tif")
    with pytest.raises(InputError, match="x_QAI.tif: looks like Landsat Collection-2 QA_PIXEL"):
        dec(grid(C2_L89), path="x_QAI.tif")


def test_path_is_not_a_decoder_option():
    with pytest.raises(ConfigError, match="has no option.*path"):
        check_options("landsat_qa_pixel", {"path": "x"})


def test_composite_names_the_collection1_mask_and_writes_nothing(tmp_path):
    def c1(t, dn, qa, rs):
        qa[:] = grid(C1_L8, SIZE)

    write_c2(tmp_path / "s", c1, n=2)
    scenes = discover(tmp_path / "s")
    with pytest.raises(InputError) as err:
        composite(scenes, tmp_path / "o.tif", BANDS, ["p50"], C2, progress=False)
    assert str(err.value).startswith(str(scenes[0].mask) + ": looks like a Landsat Collection-1")
    assert not (tmp_path / "o.tif").exists()


# --- outputs users can open --------------------------------------------------------------------


def test_stm_cog_has_scale_offset_and_descriptions(tmp_path):
    write_c2(tmp_path, lambda *a: None, n=2)
    out = composite(
        discover(tmp_path),
        tmp_path / "o.tif",
        BANDS,
        ["p50", "std"],
        C2,
        indices=["NDVI"],
        progress=False,
    )
    with rasterio.open(out) as src:
        assert src.scales == (1e-4,) * 14 + (1.0,)
        assert src.offsets == (0.0,) * 15
        assert (
            src.descriptions[:2] == ("BLU_P50", "BLU_STD") and src.descriptions[-1] == "CLEAR_COUNT"
        )
        assert src.descriptions[-3:-1] == ("NDVI_P50", "NDVI_STD")
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        # reflectance as GIS tools show it: DN * scale + offset
        refl = src.read(1) * src.scales[0] + src.offsets[0]
        assert 0.0 < refl.min() and refl.max() < 0.4


def test_period_labels_from_yaml_and_the_command_line():
    typed = typed_numbers(["label=2008_2013", "periods={1999_2001:[a,b]}", "out_dir=/x/run_1_2"])
    assert typed == {"20082013": "2008_2013", "19992001": "1999_2001"}
    assert period_label(20082013, "label", typed) == "2008_2013"
    assert period_label(2019, "periods", {}) == "2019"
    assert period_label("2008_2013", "label", {}) == "2008_2013"
    assert period_label(20190715, "label", {}) == "20190715"  # a date-like label is not two years
    with pytest.raises(ConfigError, match='quote it: label: "2008_2013" in YAML'):
        period_label(20082013, "label", {})
    with pytest.raises(ConfigError, match='periods: \\{"2008_2013": \\[start, end\\]\\}'):
        period_label(20082013, "periods", {})
    assert typed_numbers() == {}  # outside a Hydra run


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "bsrlc.stm", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
    )


def test_cli_keeps_period_labels_as_strings(tmp_path):
    """Through the real CLI: underscored labels stay strings; an unquoted YAML one is refused."""
    write_c2(tmp_path / "scenes", reasons_edits)
    out = tmp_path / "stm"
    common = [
        "sensor=landsat_c2",
        f"scenes={tmp_path / 'scenes'}",
        "glob=*.TIF",
        "band_file_pattern='{scene}_{band}.TIF'",
        "~bands",  # a list in stm.yaml: replace it by a mapping
        "+bands={BLU:SR_B2,GRN:SR_B3,RED:SR_B4,NIR:SR_B5,SW1:SR_B6,SW2:SR_B7}",
        f"out_dir={out}",
        "metrics=[max,count]",
        "progress=false",
    ]
    res = _cli(
        *common, "periods={2008_2013:[2019-01-01,2019-02-28],2014_2019:[2019-03-01,2019-12-31]}"
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [
        str(out / "landsat_2008_2013.tif"),
        str(out / "landsat_2014_2019.tif"),
    ]
    assert (
        "fill/nodata 2, QA 2, saturation (_QA_RADSAT) 0, out of valid range (7273..43636) 0"
        in res.stderr
    )
    res = _cli(*common, "label=2008_2013", "valid_range=[7273,30000]", "overwrite=true")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [str(out / "landsat_2008_2013.tif")]
    assert "out of valid range (7273..30000) 2" in res.stderr
    with rasterio.open(out / "landsat_2008_2013.tif") as src:
        assert src.tags()["N_SCENES"] == "4" and src.scales[-1] == 1.0
        assert src.read(src.count).sum() == 4 * 48 - 8
    # a YAML file: 2008_2013 is an integer there, so it is refused with the quoting fix
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "mine.yaml").write_text("defaults:\n  - stm\n  - _self_\nlabel: 2008_2013\n")
    res = _cli("--config-dir", str(conf), "--config-name", "mine", *common, "end=2019-12-31")
    err = res.stderr.strip()
    assert res.returncode == 2 and len(err.splitlines()) == 1, err
    assert (
        "label: label 20082013 looks like two years" in err and 'label: "2008_2013" in YAML' in err
    )
    (conf / "mine.yaml").write_text('defaults:\n  - stm\n  - _self_\nlabel: "2008_2013"\n')
    res = _cli(
        "--config-dir",
        str(conf),
        "--config-name",
        "mine",
        *common,
        "end=2019-12-31",
        "overwrite=true",
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [str(out / "landsat_2008_2013.tif")]


def test_source_names_of_the_cli_match_the_products():
    from bsrlc.stm.__main__ import SOURCES
    from bsrlc.stm.sources import PRODUCTS

    assert set(PRODUCTS) <= set(SOURCES)
