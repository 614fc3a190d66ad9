"""Sampling design, stratified sample and estimates of ``python -m bsrlc.assess``."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine

from bsrlc.assess import (
    assessment_dict,
    estimate,
    main,
    make_design,
    olofsson_allocation,
    olofsson_total,
    stratified_estimate,
    stratified_pixels,
)
from bsrlc.data.legend import Legend
from bsrlc.data.points import points_to_pixels
from bsrlc.errors import InputError
from bsrlc.evaluation.accuracy import area_adjusted_accuracy

TRANSFORM = Affine(10.0, 0, 4_000_000.0, 0, -10.0, 3_000_000.0)
NAMES = {1: "built", 2: "water", 3: "other"}
ROOT = Path(__file__).resolve().parent.parent
LEGEND = Legend.from_config(
    {
        "name": "test",
        "classes": [{"code": c, "name": n, "colour": "#888888"} for c, n in NAMES.items()],
    }
)


def write_map(path: Path, codes: np.ndarray, tags: bool = True) -> Path:
    profile = dict(
        driver="GTiff",
        width=codes.shape[1],
        height=codes.shape[0],
        count=1,
        dtype="uint8",
        crs="EPSG:3035",
        transform=TRANSFORM,
        nodata=0,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(codes.astype(np.uint8), 1)
        if tags:
            dst.update_tags(LEGEND="test", **{f"CLASS_{c}": n for c, n in NAMES.items()})
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A 200x200 truth (classes 5% / 15% / 80%) and a map of it with 15% errors."""
    rng = np.random.default_rng(42)
    truth = np.full((200, 200), 3, np.uint8)
    truth[20:60, 20:45] = 1  # 1000 px = 2.5%
    truth[150:170, 100:150] = 1  # +1000 px
    truth[100:140, 0:150] = 2  # 6000 px = 15%
    flip = rng.random(truth.shape) < 0.15
    mapped = truth.copy()
    mapped[flip] = rng.integers(1, 4, int(flip.sum()))
    mapped[0, :10] = 0  # some nodata
    root = tmp_path_factory.mktemp("assess")
    return {
        "truth": truth,
        "map": write_map(root / "map.tif", mapped),
        "mapped": mapped,
        "root": root,
    }


# -- (1) the published worked example ---------------------------------------------------------


def test_olofsson_2014_worked_example():
    """Olofsson et al. (2014), RSE 148, section 5 / tables 8-10.

    The sample counts as printed in the paper, map classes as rows (n_i. = 75, 75, 165, 325;
    the matrix in the task brief is this one transposed). Values asserted are those of the
    paper that we also verified by hand with its eqs. 2-10 (pixels of 30 m = 0.09 ha):
    area of deforestation 21,158 ha +- 6,158, forest gain 11,686 +- 3,756, stable forest
    285,770 +- 15,510, stable non-forest 581,386 +- 16,282; OA 0.947 +- 0.018; user's
    accuracies 0.88 +- 0.07, 0.73 +- 0.10, 0.93 +- 0.04, 0.96 +- 0.02; producer's accuracies
    0.75, 0.85, 0.93, 0.96 (their intervals are not asserted: we did not re-check the
    printed values). The brief's "235,086 ha" is not a number of that example.
    """
    counts = [[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]]
    acc = area_adjusted_accuracy(counts, [200_000, 150_000, 3_200_000, 6_450_000], 0.09)
    np.testing.assert_allclose(acc.area, [21_158, 11_686, 285_770, 581_386], atol=1)
    np.testing.assert_allclose(acc.area_ci, [6_158, 3_756, 15_510, 16_282], atol=1)
    assert acc.overall == pytest.approx(0.947, abs=5e-4)
    assert acc.overall_ci == pytest.approx(0.018, abs=5e-4)
    np.testing.assert_allclose(acc.users, [0.88, 0.73, 0.93, 0.96], atol=5e-3)
    np.testing.assert_allclose(acc.users_ci, [0.07, 0.10, 0.04, 0.02], atol=5e-3)
    np.testing.assert_allclose(acc.producers, [0.75, 0.85, 0.93, 0.96], atol=5e-3)
    # the error matrix in area proportions, eq. 4: p_11 = W_1 n_11 / n_1. = 0.02 * 66 / 75
    assert acc.proportions[0, 0] == pytest.approx(0.0176)


def test_olofsson_allocation_formulas():
    w = np.array([0.02, 0.015, 0.32, 0.645])
    # (sum W_i S_i / SE)^2 with S_i = 0.4 for U_i = 0.8: (0.4 / 0.01)^2 = 1600
    assert olofsson_total(w, np.full(4, 0.8), 0.01) == 1600
    n = olofsson_allocation(w, 1600, 50)
    assert n.sum() == 1600 and n[0] == n[1] == 50
    assert n[2] / n[3] == pytest.approx(0.32 / 0.645, rel=0.01)  # the rest proportional


# -- (2) coverage of the intervals ------------------------------------------------------------


def test_interval_coverage(world):
    """95% intervals of every class area hold the true area in 90-99% of 300 samples.

    Measured: 0.944, 0.943, 0.946 over 1000 samples of these sizes (0.93-0.95 with 40/40/80).
    """
    truth, path = world["truth"], world["map"]
    classified = world["mapped"] > 0
    true_area = np.array([(truth[classified] == c).sum() * 0.01 for c in (1, 2, 3)])  # ha
    mapped = np.array([(world["mapped"] == c).sum() for c in (1, 2, 3)])
    hits, reps = np.zeros(3), 300
    for seed in range(reps):
        px = stratified_pixels(path, {1: 50, 2: 50, 3: 300}, seed=seed)
        ref = truth[px.rows, px.cols].astype(np.int64)
        cm = np.zeros((3, 3), np.int64)
        np.add.at(cm, (px.codes - 1, ref - 1), 1)
        acc = area_adjusted_accuracy(cm, mapped, 0.01)
        hits += np.abs(acc.area - true_area) <= acc.area_ci
    coverage = hits / reps
    print(f"coverage of 95% CIs of class areas: {coverage.round(3).tolist()}")
    assert ((coverage >= 0.90) & (coverage <= 0.99)).all(), coverage


URBAN = Legend.from_config("urban")


@pytest.fixture(scope="module")
def demo_pair(tiny_world, tmp_path_factory):
    """The tiny demo world's latest truth and a map of it with spatially structured errors.

    The errors mimic a 10 m classifier's: residential roofs spill into half of their
    neighbouring pixels, industrial roofs are mapped as residential in patches, roads and car
    parks are lost to non built-up in patches, bare fields turn into open space in blobs, and
    2% of pixels get a random class. UA about 0.46 / 0.68 / 0.80 / 0.96, OA 0.88.
    """
    from scipy import ndimage

    with rasterio.open(tiny_world.root / tiny_world.truth[max(tiny_world.truth)]) as src:
        truth, profile = src.read(1), src.profile
    rng = np.random.default_rng(7)

    def blobs(sigma: float, fraction: float) -> np.ndarray:
        z = ndimage.gaussian_filter(rng.standard_normal(truth.shape), sigma)
        return z > np.quantile(z, 1 - fraction)

    mapped = truth.copy()
    ring = ndimage.binary_dilation(truth == 1) & (truth != 1)
    mapped[ring & (rng.random(truth.shape) < 0.5)] = 1
    mapped[(truth == 2) & blobs(3, 0.3)] = 1
    mapped[(truth == 3) & blobs(4, 0.3) & (rng.random(truth.shape) < 0.6)] = 4
    mapped[(truth == 4) & blobs(5, 0.04)] = 3
    noise = rng.random(truth.shape) < 0.02
    mapped[noise] = rng.integers(1, 5, int(noise.sum()))
    assert (truth > 0).all() and set(np.unique(truth)) == {1, 2, 3, 4}
    path = tmp_path_factory.mktemp("demo_map") / "map.tif"
    profile.update(dtype="uint8", count=1, nodata=0)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(mapped, 1)
        dst.update_tags(LEGEND="urban", **{f"CLASS_{c.code}": c.name for c in URBAN.classes})
    return truth, mapped, path


def _demo_coverage(demo_pair, reps: int, **design_args) -> tuple[np.ndarray, float]:
    """Coverage of the 95% intervals of class areas and OA over ``reps`` samples."""
    truth, mapped, path = demo_pair
    design = make_design(path, **design_args)
    sizes = dict(zip(design["code"], design["n_olofsson"], strict=True))
    strata = design["mapped_pixels"].to_numpy()
    pixel_ha = 0.01  # 10 m pixels
    true_area = np.array([(truth == c).sum() for c in URBAN.codes]) * pixel_ha
    true_oa = float((mapped == truth).mean())
    hits, oa_hits = np.zeros(len(URBAN)), 0
    for seed in range(reps):
        px = stratified_pixels(path, sizes, seed=seed)
        acc = stratified_estimate(px.codes, truth[px.rows, px.cols], strata, URBAN, pixel_ha)
        hits += np.abs(acc.area - true_area) <= acc.area_ci
        oa_hits += abs(acc.overall - true_oa) <= acc.overall_ci
    return hits / reps, oa_hits / reps


def test_demo_map_interval_coverage(demo_pair):
    """Over 300 samples of the default design (n = 1600, >= 50 per class) of a demo map with
    realistic errors, the 95% intervals hold the true (wall-to-wall) area and OA in 90-99%.

    Measured: areas 0.967 / 0.933 / 0.960 / 0.963, OA 0.977 (1000 samples: 0.968 / 0.940 /
    0.954 / 0.960, OA 0.969; OA's SE comes out ~5% above the SD of the estimates, partly as
    the estimators have no finite-population correction and 4-9% of each stratum is sampled).
    """
    coverage, oa = _demo_coverage(demo_pair, 300)
    print(f"demo map coverage: areas {coverage.round(3).tolist()}, OA {oa:.3f}")
    assert ((coverage >= 0.90) & (coverage <= 0.99)).all(), coverage
    assert 0.90 <= oa <= 0.99, oa


@pytest.mark.slow
def test_demo_map_interval_coverage_many_samples(demo_pair):
    """2000 samples each of the default design and of a small one (n = 400, 50 per rare class).

    Measured (default): areas 0.970 / 0.942 / 0.950 / 0.950, OA 0.963; (n = 400): areas
    0.947 / 0.910 / 0.948 / 0.958, OA 0.930: the small design's industrial area (1.7% of the
    map, 40% of it omitted, mostly into the residential stratum's 50 samples) under-covers, as
    Wald intervals of a rare class estimated from few error samples do.
    """
    coverage, oa = _demo_coverage(demo_pair, 2000)
    print(f"default design: areas {coverage.round(3).tolist()}, OA {oa:.3f}")
    assert (np.abs(coverage - 0.95) <= 0.025).all(), coverage
    assert abs(oa - 0.95) <= 0.025, oa
    coverage, oa = _demo_coverage(demo_pair, 2000, target_se=0.02)
    print(f"n = 400 design: areas {coverage.round(3).tolist()}, OA {oa:.3f}")
    assert ((coverage >= 0.88) & (coverage <= 0.99)).all(), coverage
    assert 0.90 <= oa <= 0.99, oa


def test_sample_is_stratified_and_deterministic(world):
    a = stratified_pixels(world["map"], {1: 10, 2: 20, 3: 0}, seed=3)
    b = stratified_pixels(world["map"], {1: 10, 2: 20, 3: 0}, seed=3)
    c = stratified_pixels(world["map"], {1: 10, 2: 20, 3: 0}, seed=4)
    np.testing.assert_array_equal(a.rows, b.rows)
    assert not np.array_equal(a.rows, c.rows)
    assert (world["mapped"][a.rows, a.cols] == a.codes).all()
    assert np.bincount(a.codes, minlength=4).tolist() == [0, 10, 20, 0]
    assert len(set(zip(a.rows.tolist(), a.cols.tolist(), strict=True))) == 30  # no repeats


# -- (3) the command line round trip ----------------------------------------------------------


def test_cli_round_trip(world, tmp_path):
    m = str(world["map"])
    design_csv, sample_gpkg = tmp_path / "design.csv", tmp_path / "sample.gpkg"
    main(["design", f"map={m}", "expected_ua=0.8", "target_se=0.02", "min_per_class=50",
          f"out={design_csv}"])  # fmt: skip
    design = pd.read_csv(design_csv)
    assert list(design.columns) == [
        "code", "name", "mapped_pixels", "area_weight",
        "n_proportional", "n_equal", "n_olofsson",
    ]  # fmt: skip
    assert design["n_olofsson"].sum() == 400  # (0.4 / 0.02)^2
    assert design["n_olofsson"].min() == 50
    main(["sample", f"map={m}", f"design={design_csv}", "seed=0", f"out={sample_gpkg}"])
    sample = gpd.read_file(sample_gpkg)
    assert {"map_class", "map_name", "reference"} <= set(sample.columns)
    assert sample.crs.to_epsg() == 3035 and sample["reference"].isna().all()
    assert sample.groupby("map_class").size().tolist() == design["n_olofsson"].tolist()
    assert not list(tmp_path.glob(".*partial"))

    # label it from the truth (names), in another CRS
    rows, cols = points_to_pixels(sample.geometry.x, sample.geometry.y, TRANSFORM)
    sample["reference"] = [NAMES[int(c)] for c in world["truth"][rows, cols]]
    labelled = tmp_path / "labelled.gpkg"
    sample.to_crs("EPSG:4326").to_file(labelled)
    out = tmp_path / "report"
    main(["estimate", f"map={m}", f"reference={labelled}", "class_column=reference",
          f"out_dir={out}"])  # fmt: skip
    report = json.loads((out / "assessment.json").read_text())
    assert set(report) == {"oa", "classes"} and set(report["oa"]) == {"estimate", "ci95"}
    assert set(report["classes"]) == set(NAMES.values())
    for c in report["classes"].values():
        assert set(c) == {"users_accuracy", "producers_accuracy", "area_ha", "mapped_area_ha"}
        assert c["area_ha"]["ci95"] > 0
    assert 0.8 < report["oa"]["estimate"] < 0.95
    matrix = pd.read_csv(out / "error_matrix.csv", index_col=0)
    assert matrix.loc["total", "total"] == pytest.approx(1.0)
    assert (out / "areas.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in out.iterdir()) == [
        "areas.png", "assessment.json", "error_matrix.csv"
    ]  # fmt: skip


def test_single_sample_stratum_and_outside_points(world, tmp_path, caplog):
    m = world["map"]
    with rasterio.open(m) as src:
        t = src.transform
    pts = []
    for code, n in ((1, 1), (2, 5), (3, 5)):
        rows, cols = np.nonzero(world["mapped"] == code)
        for r, c in zip(rows[:n], cols[:n], strict=True):
            pts.append((*(t * (c + 0.5, r + 0.5)), int(world["truth"][r, c])))
    pts.append((1_000.0, 1_000.0, 3))  # far outside
    pts.append((*(t * (0.5, 0.5)), 3))  # on the nodata pixel (0, 0)
    xs, ys, ref = zip(*pts, strict=True)
    gdf = gpd.GeoDataFrame(
        {"sample_id": range(1, len(pts) + 1), "reference": ref},
        geometry=gpd.points_from_xy(xs, ys),
        crs="EPSG:3035",
    )
    gdf.to_file(tmp_path / "ref.gpkg")
    with caplog.at_level(logging.WARNING):
        main(["estimate", f"map={m}", f"reference={tmp_path / 'ref.gpkg'}",
              f"out_dir={tmp_path / 'out'}"])  # fmt: skip
    lines = caplog.text.splitlines()
    assert any("1 of 13 points lie outside" in x and x.endswith(": 12") for x in lines), lines
    assert any("1 of 13 points lie on nodata" in x and x.endswith(": 13") for x in lines), lines
    few = [x for x in lines if "fewer than two samples" in x]
    assert len(few) == 1 and "['built']" in few[0]  # only the single-sample stratum is named
    assert "water" not in few[0] and "other" not in few[0]
    assert not any("single sample" in x for x in lines)  # not the estimator's all-names line
    report = json.loads((tmp_path / "out" / "assessment.json").read_text())
    built = report["classes"]["built"]
    assert built["users_accuracy"]["ci95"] is None  # unknown, not 0
    assert built["users_accuracy"]["estimate"] is not None
    assert report["classes"]["water"]["users_accuracy"]["ci95"] is not None  # 5 samples: known
    assert report["oa"]["ci95"] is None
    assert all(c["area_ha"]["ci95"] is None for c in report["classes"].values())


def test_single_sample_interval_is_unknown_not_zero(caplog):
    """One sample in a stratum: NaN intervals (the variance needs n_i - 1 > 0), never 0."""
    lg = LEGEND
    map_codes = [1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3]
    ref_codes = [1, 2, 2, 2, 2, 3, 3, 3, 3, 1, 3]
    with caplog.at_level(logging.WARNING):
        acc = stratified_estimate(map_codes, ref_codes, [100, 400, 2000], lg, 0.01, "s.gpkg")
    assert [r.getMessage() for r in caplog.records if "fewer than two" in r.getMessage()] == [
        "s.gpkg: map class(es) ['built'] have fewer than two samples, so no variance estimate: "
        "their user's accuracy interval is unknown, and so are those of OA, areas and producer's "
        "accuracies; label at least two samples per class"
    ]
    assert len(caplog.records) == 1
    assert acc.users[0] == 1.0 and np.isnan(acc.users_ci[0])
    assert np.isfinite(acc.users_ci[1:]).all()
    assert np.isnan(acc.area_ci).all() and np.isnan(acc.overall_ci)
    doc = assessment_dict(acc)
    assert doc["classes"]["built"]["users_accuracy"] == {"estimate": 1.0, "ci95": None}
    with caplog.at_level(logging.WARNING):
        caplog.clear()
        acc = stratified_estimate([*map_codes, 1], [*ref_codes, 1], [100, 400, 2000], lg, 0.01)
    assert not caplog.records and np.isfinite(acc.area_ci).all()
    with pytest.raises(InputError, match=r"no sample falls on map class\(es\) \['built'\]"):
        stratified_estimate(map_codes[1:], ref_codes[1:], [100, 400, 2000], lg, 0.01)


def test_design_warns_about_empty_class(tmp_path, caplog):
    codes = np.full((50, 50), 3, np.uint8)
    codes[:10] = 1
    with caplog.at_level(logging.WARNING):
        design = make_design(write_map(tmp_path / "m.tif", codes), 0.8, 0.05, 5)
    assert "['water'] have no pixels" in caplog.text
    assert (
        design.loc[design["code"] == 2, ["n_proportional", "n_equal", "n_olofsson"]]
        .sum(axis=1)
        .item()
        == 0
    )


# -- (4) one-line errors ----------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "bsrlc.assess", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )


def _assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    for needle in needles:
        assert needle in last
    return last


def test_bad_inputs_give_one_line_errors(world, tmp_path):
    untagged = write_map(tmp_path / "untagged.tif", world["mapped"], tags=False)
    _assert_one_line_error(
        _cli("design", f"map={untagged}", f"out={tmp_path / 'd.csv'}"),
        str(untagged),
        "legend=",
    )
    bad = gpd.GeoDataFrame(
        {"reference": ["built", "lava", "ice"]},
        geometry=gpd.points_from_xy([4_000_005.0] * 3, [2_999_995.0] * 3),
        crs="EPSG:3035",
    )
    bad.to_file(tmp_path / "bad.gpkg")
    out = tmp_path / "never"
    last = _assert_one_line_error(
        _cli("estimate", f"map={world['map']}", f"reference={tmp_path / 'bad.gpkg'}",
             f"out_dir={out}"),
        "bad.gpkg",
        "ice",
        "lava",
    )  # fmt: skip
    assert "built" in last  # the legend's classes are named as the fix
    assert not out.exists() or not any(out.iterdir())  # nothing written
    _assert_one_line_error(_cli("sample", "map=nope.tif", "design=d.csv", "out=s.gpkg"), "nope")
    _assert_one_line_error(_cli("design", f"map={world['map']}"), "out=")


# -- (5) the command line's help, reference points and atomic outputs -------------------------


def test_help_and_no_argument_print_usage(capsys):
    for args in ([], ["help"], ["--help"], ["-h"], ["estimate", "--help"]):
        main(args)  # returns: exit status 0
        assert capsys.readouterr().out.startswith("usage: python -m bsrlc.assess"), args
    proc = _cli()  # no argument, as from a shell
    assert proc.returncode == 0 and proc.stdout.startswith("usage:"), proc.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["desing", "map=m.tif"],
            "error: unknown command 'desing' (did you mean design?); use one of design, sample, "
            "estimate (python -m bsrlc.assess --help)",
        ),
        (
            ["frobnicate"],
            "error: unknown command 'frobnicate'; use one of design, sample, estimate "
            "(python -m bsrlc.assess --help)",
        ),
        (
            ["design", "map=m.tif", "targt_se=0.1"],
            "error: design: unknown argument 'targt_se=0.1' (did you mean target_se?); use "
            "key=value with keys map, expected_ua, target_se, min_per_class, out, legend",
        ),
    ],
)
def test_wrong_command_or_key_is_one_line_with_a_suggestion(args, expected, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert capsys.readouterr().err == expected + "\n"


def _labelled(world, path: Path, sizes=None, crs: str = "EPSG:3035") -> gpd.GeoDataFrame:
    """A stratified sample of the world's map labelled from its truth (class names)."""
    px = stratified_pixels(world["map"], sizes or {1: 10, 2: 10, 3: 20}, seed=1)
    xs = TRANSFORM.c + (px.cols + 0.5) * TRANSFORM.a  # pixel centres (north-up grid)
    ys = TRANSFORM.f + (px.rows + 0.5) * TRANSFORM.e
    gdf = gpd.GeoDataFrame(
        {
            "sample_id": np.arange(1, len(px.rows) + 1),
            "reference": [NAMES[int(c)] for c in world["truth"][px.rows, px.cols]],
            "code": world["truth"][px.rows, px.cols].astype(np.float64),
        },
        geometry=gpd.points_from_xy(xs, ys),
        crs="EPSG:3035",
    ).to_crs(crs)
    gdf.to_file(path)
    return gdf


def test_unlabelled_points_are_listed_and_skipped(world, tmp_path, caplog):
    gdf = _labelled(world, tmp_path / "full.gpkg")
    full = estimate(world["map"], tmp_path / "full.gpkg", tmp_path / "a")
    part = gdf.copy()
    part.loc[[0, 5, 11], "reference"] = None
    part.loc[[20], "reference"] = "  "
    part.loc[[0, 5, 11, 20], "code"] = np.nan
    part.to_file(tmp_path / "part.gpkg")
    with caplog.at_level(logging.WARNING):
        acc = estimate(world["map"], tmp_path / "part.gpkg", tmp_path / "b")
    warning = [r.getMessage() for r in caplog.records]
    assert warning == [
        f"{tmp_path / 'part.gpkg'}: 4 of 40 points have no label in 'reference' and are not "
        "used: 1, 6, 12, 21"
    ]
    assert acc.n_samples == 36 and full.n_samples == 40
    expected = gdf.drop(index=[0, 5, 11, 20])
    expected.to_file(tmp_path / "expected.gpkg")
    ref = estimate(world["map"], tmp_path / "expected.gpkg", tmp_path / "c")
    np.testing.assert_array_equal(acc.counts, ref.counts)
    by_code = estimate(world["map"], tmp_path / "part.gpkg", tmp_path / "d", class_column="code")
    np.testing.assert_array_equal(by_code.counts, ref.counts)  # NaN codes: unlabelled too

    part["reference"] = None
    part.to_file(tmp_path / "none.gpkg")
    with pytest.raises(InputError) as err:
        estimate(world["map"], tmp_path / "none.gpkg", tmp_path / "e")
    assert str(err.value) == (
        f"{tmp_path / 'none.gpkg'}: none of the 40 points has a label in 'reference'; label "
        "them (legend codes or names) or pass class_column=NAME"
    )
    assert not (tmp_path / "e").exists()


def test_missing_class_column_names_the_key_and_the_columns(world, tmp_path):
    _labelled(world, tmp_path / "ref.gpkg")
    with pytest.raises(InputError) as err:
        estimate(world["map"], tmp_path / "ref.gpkg", tmp_path / "out", class_column="label")
    assert str(err.value) == (
        f"{tmp_path / 'ref.gpkg'}: no column 'label' (columns: sample_id, reference, code); "
        "pass class_column=NAME"
    )


def test_reference_in_another_crs_is_reprojected(world, tmp_path, caplog):
    _labelled(world, tmp_path / "laea.gpkg")
    _labelled(world, tmp_path / "wgs84.gpkg", crs="EPSG:4326")
    same = estimate(world["map"], tmp_path / "laea.gpkg", tmp_path / "a")
    with caplog.at_level(logging.INFO, logger="bsrlc.assess"):
        other = estimate(world["map"], tmp_path / "wgs84.gpkg", tmp_path / "b")
    assert (
        f"{tmp_path / 'wgs84.gpkg'}: points in WGS 84 reprojected to the map's CRS "
        "(ETRS89-extended / LAEA Europe)" in caplog.messages
    )
    np.testing.assert_array_equal(same.counts, other.counts)


def test_csv_reference_and_mixed_codes_and_names(world, tmp_path):
    gdf = _labelled(world, tmp_path / "ref.gpkg")
    frame = pd.DataFrame(
        {
            "x": gdf.geometry.x,
            "y": gdf.geometry.y,
            "crs": "EPSG:3035",
            "reference": gdf["reference"],
        }
    )
    frame.loc[::2, "reference"] = gdf["code"][::2].astype(int).astype(str)  # codes and names
    frame.loc[1, "reference"] = " BUILT "  # case and spaces ignored
    frame.to_csv(tmp_path / "ref.csv", index=False)
    acc = estimate(world["map"], tmp_path / "ref.csv", tmp_path / "a")
    ref = estimate(world["map"], tmp_path / "ref.gpkg", tmp_path / "b")
    np.testing.assert_array_equal(acc.counts, ref.counts)
    frame.loc[[3, 4], "reference"] = ["lava", "9"]
    frame.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InputError, match=r"class\(es\) 9, lava that the map's legend 'test' lacks"):
        estimate(world["map"], tmp_path / "bad.csv", tmp_path / "c")
    frame.drop(columns="crs").to_csv(tmp_path / "nocrs.csv", index=False)
    with pytest.raises(InputError, match=r"needs x, y and crs columns, missing \['crs'\]"):
        estimate(world["map"], tmp_path / "nocrs.csv", tmp_path / "d")


def test_outputs_are_all_or_nothing(world, tmp_path, monkeypatch):
    """A failure while writing leaves earlier outputs as they were and no partial files."""
    m = world["map"]
    design_csv, sample_gpkg, out = tmp_path / "d.csv", tmp_path / "s.gpkg", tmp_path / "out"
    _labelled(world, tmp_path / "ref.gpkg")
    main(["estimate", f"map={m}", f"reference={tmp_path / 'ref.gpkg'}", f"out_dir={out}"])
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    def half_written(self, path, *args, **kwargs):
        Path(path).write_text("half")
        raise OSError("disk full")

    with monkeypatch.context() as mp:
        mp.setattr("bsrlc.assess.area_figure", boom)
        with pytest.raises(RuntimeError):
            estimate(m, tmp_path / "ref.gpkg", out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temp folder either
    with monkeypatch.context() as mp:
        mp.setattr(pd.DataFrame, "to_csv", half_written)
        with pytest.raises(OSError):
            main(["design", f"map={m}", f"out={design_csv}"])
    main(["design", f"map={m}", "target_se=0.05", "min_per_class=5", f"out={design_csv}"])
    with monkeypatch.context() as mp:
        mp.setattr(gpd.GeoDataFrame, "to_file", half_written)
        with pytest.raises(OSError):
            main(["sample", f"map={m}", f"design={design_csv}", f"out={sample_gpkg}"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv", "out", "ref.gpkg"]
