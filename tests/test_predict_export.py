"""Dense maps, bundles and predict.py on the tiny world: seams, equality, safety, resume."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import rasterio
import torch

from bsrlc.data.legend import Legend
from bsrlc.errors import InputError
from bsrlc.export import export_bundle, load_bundle
from bsrlc.inference.dense import classify_raster
from bsrlc.inference.loading import load_checkpoint
from bsrlc.inference.resample import nearest_upsample
from bsrlc.models.centre_patch import CentrePatchCNN, extract_patches
from bsrlc.raster import read_category_names


def test_tiled_map_equals_one_pass_and_per_patch(tmp_path, tiny_stms, checkpoints):
    model = load_checkpoint(checkpoints[1])
    legend = Legend.from_config(model.meta["legend"])
    src = tiny_stms["sentinel2"]["2019"]
    args = (model.bands, model.mean, model.std, legend, model.meta["halo"])
    tiled = classify_raster(
        model.net, src, tmp_path / "t.tif", *args, tile=50, progress=False, probabilities=True
    )
    whole = classify_raster(model.net, src, tmp_path / "w.tif", *args, tile=1024, progress=False)
    with rasterio.open(tiled) as a, rasterio.open(whole) as b, rasterio.open(src) as s:
        assert np.array_equal(a.read(), b.read())  # no seams
        assert a.transform == s.transform and a.crs == s.crs
        assert a.colormap(1)[1][:3] == (230, 25, 75) and a.nodata == 0
        codes = a.read(1)
    assert set(np.unique(codes)) <= {1, 2, 3, 4}
    with rasterio.open(tmp_path / "t_proba.tif") as p:
        proba = p.read().astype(int)
    assert p.count == 5 and np.all(np.abs(proba[:4].sum(0) - 254) <= 4)


def test_dense_attention_map_matches_patches():
    torch.manual_seed(0)
    net = CentrePatchCNN(4, 3, channels=(8, 8, 8, 8), attention=True, attn_dim=16).eval()
    tile = torch.randn(4, 12 + 14, 9 + 14)
    with torch.no_grad():
        dense = net.forward_dense(tile[None])[0]
        per = net(extract_patches(tile, 15)).T.reshape(3, 12, 9)
    assert (dense - per).abs().max() < 1e-4


def test_bundles_match_pytorch_and_refuse_tampering(tmp_path, checkpoints):
    for ckpt, name in zip(checkpoints, ("sr", "cls"), strict=True):
        out = export_bundle(ckpt, tmp_path / name)
        meta = json.loads((out / "metadata.json").read_text())
        assert meta["onnx_opset"] >= 17 and meta["bands"] and meta["mean"]
        bundle = load_bundle(out)
        model = bundle.torch_model()
        ref = load_checkpoint(ckpt)
        x = torch.randn(1, len(meta["bands"]), 30, 30)
        with torch.no_grad():
            a = model.net.forward_dense(x) if name == "cls" else model.net(x)
            b = ref.net.forward_dense(x) if name == "cls" else ref.net(x)
            onnx = bundle.onnx_session().run(None, {"input": x.numpy()})[0]
        assert torch.allclose(a, b)
        assert np.abs(onnx - a.numpy()).max() < 1e-4
    meta = json.loads((tmp_path / "cls" / "metadata.json").read_text())
    meta["mean"][0] += 0.1
    (tmp_path / "cls" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="content hash does not match"):
        load_bundle(tmp_path / "cls")


def test_checkpoints_load_without_unpickling(tmp_path, checkpoints):
    ckpt = torch.load(checkpoints[0], weights_only=True)  # raises if it needs arbitrary objects
    assert ckpt["bsrlc"]["task"] == "sr"
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "bad.ckpt")


def _predict(*args):
    return subprocess.run(
        [sys.executable, "predict.py", *args, "progress=false"], capture_output=True, text=True
    )


def test_predict_cli_periods_resume_and_bad_input(tmp_path, tiny_stms, checkpoints):
    sr, cls = checkpoints
    inputs = tmp_path / "in"
    inputs.mkdir()
    for y in ("2007", "2019"):
        (inputs / f"landsat_{y}.tif").symlink_to(tiny_stms["landsat"][y])
    out = tmp_path / "out"
    res = _predict(
        f"model={cls}",
        f"sr_model={sr}",
        f"input={inputs}",
        f"out_dir={out}",
        "pipeline=sr+classify",
    )
    assert res.returncode == 0, res.stderr
    for name in (
        "landsat_2007_sr.tif",
        "landsat_2019_map.tif",
        "class_areas.csv",
        "class_areas.png",
        "change_2007_2019.tif",
        "maps.gif",
    ):
        assert (out / name).exists(), name
    legend = Legend.from_config(load_checkpoint(cls).meta["legend"])
    assert read_category_names(out / "landsat_2019_map.tif") == ["nodata", *legend.names]
    change_names = read_category_names(out / "change_2007_2019.tif")
    assert change_names[0] == "no change or nodata" and change_names[1] == ""
    assert change_names[1 * 16 + 2] == f"{legend.names[0]} -> {legend.names[1]}"
    with (
        rasterio.open(out / "landsat_2019_sr.tif") as s,
        rasterio.open(tiny_stms["landsat"]["2019"]) as lr,
    ):
        assert s.res == (10.0, 10.0) and (s.transform.c, s.transform.f) == (
            lr.transform.c,
            lr.transform.f,
        )
        assert s.width == 3 * lr.width
    mtime = (out / "landsat_2019_map.tif").stat().st_mtime_ns
    again = _predict(
        f"model={cls}",
        f"sr_model={sr}",
        f"input={inputs}",
        f"out_dir={out}",
        "pipeline=sr+classify",
    )
    assert again.returncode == 0 and (out / "landsat_2019_map.tif").stat().st_mtime_ns == mtime
    # bad input: a raster without the model's bands, a raster without CRS, a missing model
    bad = _predict(
        f"model={cls}",
        f"input={tiny_stms['landsat']['2019']}".replace("landsat_2019", "landsat_2019"),
        f"out_dir={tmp_path / 'o2'}",
        "pipeline=classify",
    )
    # the Landsat STM has the bands, but 30 m pixels for a model trained on 10 m: refused
    assert (
        bad.returncode == 2
        and "30 metre pixels, the classification model was trained on 10" in (bad.stderr)
    ), bad.stderr
    with rasterio.open(
        tmp_path / "nocrs.tif", "w", driver="GTiff", width=8, height=8, count=1, dtype="int16"
    ) as dst:
        dst.write(np.zeros((1, 8, 8), np.int16))
    err = _predict(f"model={cls}", f"input={tmp_path / 'nocrs.tif'}", f"out_dir={tmp_path / 'o3'}")
    assert err.returncode == 2 and "has no CRS" in err.stderr
    assert len(err.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o3").exists() or not list((tmp_path / "o3").iterdir())
    err = _predict(
        f"model={tmp_path / 'nope.ckpt'}", f"input={inputs}", f"out_dir={tmp_path / 'o4'}"
    )
    assert err.returncode == 2 and "checkpoint not found" in err.stderr


def test_predict_killed_midway_resumes_to_the_same_map(tmp_path, tiny_stms, checkpoints):
    import signal
    import time

    cls = checkpoints[1]
    src = tiny_stms["sentinel2"]["2019"]
    args = [f"model={cls}", f"input={src}", "tile=12", "probabilities=true"]
    ref = _predict(*args, f"out_dir={tmp_path / 'ref'}")
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "predict.py", *args, f"out_dir={out}", "progress=false"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = out / f".{src.stem}_map.tif.tiles"
    deadline = time.monotonic() + 120
    while len(list(store.glob("u*.0.npy"))) < 30 and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "finished before it could be killed"
    done = len(list(store.glob("u*.0.npy")))
    assert done >= 30 and not (out / f"{src.stem}_map.tif").exists()  # nothing looks finished
    again = _predict(*args, f"out_dir={out}")
    assert again.returncode == 0, again.stderr
    assert f"resuming, {done} of 256 tiles done" in again.stdout + again.stderr
    for name in (f"{src.stem}_map.tif", f"{src.stem}_map_proba.tif"):
        with rasterio.open(out / name) as a, rasterio.open(tmp_path / "ref" / name) as b:
            assert np.array_equal(a.read(), b.read())
    assert not store.exists() and not list(out.glob(".*"))  # no leftovers


@pytest.mark.parametrize(
    "trainer",
    [["trainer=ddp_sim"], ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]],
    ids=["ddp_sim", "ddp_cpu"],
)
def test_predict_ddp_equals_one_process(tmp_path, tiny_stms, checkpoints, trainer):
    """Two ranks (spawned, or launched as scripts like on GPU nodes) write what one process does."""
    sr, cls = checkpoints
    src = tiny_stms["landsat"]["2019"]
    args = [f"model={cls}", f"sr_model={sr}", f"input={src}", "pipeline=sr+classify", "sr_unit=24"]
    one = _predict(*args, f"out_dir={tmp_path / 'one'}", "tile=16")
    two = _predict(*args, f"out_dir={tmp_path / 'two'}", "tile=16", *trainer)
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    for name in (f"{src.stem}_sr.tif", f"{src.stem}_map.tif"):
        with (
            rasterio.open(tmp_path / "one" / name) as a,
            rasterio.open(tmp_path / "two" / name) as b,
        ):
            assert np.array_equal(a.read(), b.read()) and a.transform == b.transform


def test_predict_bad_inputs_are_one_line_errors(tmp_path, tiny_stms, checkpoints):
    cls = checkpoints[1]
    bundle = export_bundle(cls, tmp_path / "bundle")
    src = tiny_stms["sentinel2"]["2019"]
    renamed = tmp_path / "other_bands.tif"
    with rasterio.open(src) as s:
        profile, data = s.profile, s.read()
        names = [f"X{i}" for i in range(s.count)]
    with rasterio.open(renamed, "w", **profile) as d:
        d.write(data)
        for i, n in enumerate(names, start=1):
            d.set_band_description(i, n)
    err = _predict(
        f"model={bundle}", f"input={renamed}", f"out_dir={tmp_path / 'o1'}", "backend=onnxruntime"
    )
    assert err.returncode == 2 and "missing band(s)" in err.stderr, err.stderr
    assert len(err.stderr.strip().splitlines()) == 1
    truncated = tmp_path / "truncated_2019.tif"
    truncated.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    err = _predict(f"model={cls}", f"input={truncated}", f"out_dir={tmp_path / 'o2'}")
    assert err.returncode == 2 and "corrupt or truncated" in err.stderr, err.stderr
    assert not (tmp_path / "o2" / "truncated_2019_map.tif").exists()
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    err = _predict(f"model={cls}", f"input={src}", f"out_dir={blocker / 'out'}")
    assert err.returncode == 2 and "cannot create output folder" in err.stderr, err.stderr


def test_export_creates_missing_parent_folders(tmp_path, checkpoints):
    out = export_bundle(checkpoints[1], tmp_path / "new" / "deeper" / "cls")
    assert (out / "metadata.json").exists()


def test_prior_correction_and_area_decision_move_the_map(tmp_path, tiny_stms, checkpoints):
    model = load_checkpoint(checkpoints[1])
    legend = Legend.from_config(model.meta["legend"])
    assert model.meta["train_priors"] == pytest.approx([0.25] * 4)  # balanced: class weights
    assert model.meta["temperature"] > 0
    src = tiny_stms["sentinel2"]["2019"]
    args = (model.bands, model.mean, model.std, legend, model.meta["halo"])
    common = {"progress": False, "temperature": model.meta["temperature"]}

    def shares(path):
        codes = rasterio.open(path).read(1)
        return np.array([(codes == c).mean() for c in legend.codes])

    plain = shares(classify_raster(model.net, src, tmp_path / "a.tif", *args, **common))
    given = {n: s for n, s in zip(legend.names, [0.05, 0.05, 0.1, 0.8], strict=True)}
    bayes = shares(
        classify_raster(model.net, src, tmp_path / "b.tif", *args, priors=given, **common)
    )
    area = shares(
        classify_raster(
            model.net, src, tmp_path / "c.tif", *args, priors=given, decision="area", **common
        )
    )
    # a landscape said to be 80 % non built-up gets more of it mapped than under equal priors
    assert bayes[3] > plain[3]
    # and the area-matched decision maps each class on the given share
    np.testing.assert_allclose(area, list(given.values()), atol=0.02)


def test_predict_hmm_over_periods_and_bad_priors(tmp_path, tiny_stms, checkpoints):
    from bsrlc.evaluation.maps import flicker, read_map

    _, cls = checkpoints
    inputs = tmp_path / "in"
    inputs.mkdir()
    years = ("2001", "2007", "2013", "2019")
    bands = load_checkpoint(cls).bands
    for y in years:  # Landsat on the 10 m grid the classifier was trained on
        nearest_upsample(tiny_stms["landsat"][y], inputs / f"landsat_{y}.tif", bands, 3)
    out = tmp_path / "out"
    res = _predict(f"model={cls}", f"input={inputs}", f"out_dir={out}", "temporal.mode=hmm")
    assert res.returncode == 0, res.stderr
    smooth = [read_map(out / f"landsat_{y}_map.tif")[0] for y in years]
    indep = [read_map(out / f"landsat_{y}_map_independent.tif")[0] for y in years]
    assert (out / "landsat_2019_map_independent_proba.tif").exists()
    assert flicker(smooth) <= flicker(indep)
    assert (
        read_category_names(out / "landsat_2019_map.tif")[1:]
        == Legend.from_config(load_checkpoint(cls).meta["legend"]).names
    )
    # independent periods (stay=0): the smoothed maps are the independent ones
    free = tmp_path / "free"
    res = _predict(
        f"model={cls}",
        f"input={inputs}",
        f"out_dir={free}",
        "temporal.mode=hmm",
        "temporal.stay=0",
    )
    assert res.returncode == 0, res.stderr
    for y, ind in zip(years, indep, strict=True):
        assert (read_map(free / f"landsat_{y}_map.tif")[0] == ind).mean() > 0.99
    for bad, msg in (
        ("priors=often", "priors=often: use em, none, or shares per class"),
        ("priors={nope: 1.0}", "priors: unknown class(es) ['nope']"),
        ("decision=vote", "decision=vote: use argmax or area"),
        ("temporal.mode=crf", "temporal.mode=crf: use none or hmm"),
    ):
        err = _predict(f"model={cls}", f"input={inputs}", f"out_dir={tmp_path / 'bad'}", bad)
        assert err.returncode == 2 and msg in err.stderr, (bad, err.stderr)
        assert len(err.stderr.strip().splitlines()) == 1


def test_period_labels_come_from_the_pattern_not_any_digits(tmp_path):
    from pathlib import Path

    from bsrlc.errors import ConfigError
    from bsrlc.predict import find_inputs, period_label

    assert period_label(Path("tile_2048.tif")) == "tile_2048"  # no year: the stem
    assert period_label(Path("landsat_sr_2019.tif")) == "2019"
    assert period_label(Path("stm_2008_2013.tif")) == "2008_2013"
    assert period_label(Path("X0012_Y0034_2019.tif")) == "2019"
    assert period_label(Path("T33UUP_y2019.tif"), r"_y(\d{4})") == "2019"
    with pytest.raises(ConfigError, match="needs a group"):
        period_label(Path("a_2019.tif"), r"\d{4}")
    for name in ("a_2019.tif", "b_2019.tif"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(InputError, match=r"period label\(s\) \['2019'\]"):
        find_inputs(tmp_path)


def test_em_on_a_small_raster_classifies_each_tile_once(
    tmp_path, tiny_stms, checkpoints, monkeypatch
):
    """The prior estimate uses the whole small raster and mapping reuses its logits: one
    dense pass, and the map equals one made from freshly computed logits under those priors."""
    from bsrlc.inference import dense

    model = load_checkpoint(checkpoints[1])
    legend = Legend.from_config(model.meta["legend"])
    src = tiny_stms["sentinel2"]["2019"]
    args = (model.bands, model.mean, model.std, legend, model.meta["halo"])
    common = {"progress": False, "temperature": model.meta["temperature"], "tile": 64}
    calls = []
    original = dense.ClassifyJob.window_logits

    def counted(self, window, net, device):
        calls.append((window.row_off, window.col_off))
        return original(self, window, net, device)

    monkeypatch.setattr(dense.ClassifyJob, "window_logits", counted)
    em_map = classify_raster(
        model.net, src, tmp_path / "em.tif", *args, priors="em", probabilities=True, **common
    )
    assert len(calls) == len(set(calls))  # every tile classified once
    with rasterio.open(em_map.with_name("em_proba.tif")) as f:
        em = json.loads(f.tags()["PRIORS"])
    again = classify_raster(model.net, src, tmp_path / "given.tif", *args, priors=em, **common)
    np.testing.assert_array_equal(rasterio.open(em_map).read(1), rasterio.open(again).read(1))


def test_lattice_windows_cover_the_raster_evenly():
    from bsrlc.inference.dense import lattice_windows

    rng = np.random.default_rng(0)
    wins = lattice_windows(1000, 600, 48, 64, rng)
    assert 40 <= len(wins) <= 56
    rows = np.array([w.row_off for w in wins])
    cols = np.array([w.col_off for w in wins])
    assert rows.min() >= 0 and cols.min() >= 0
    assert all(w.row_off + w.height <= 600 and w.col_off + w.width <= 1000 for w in wins)
    # every 200 px band of rows and columns holds windows (a systematic sample)
    assert all(((rows >= a) & (rows < a + 200)).any() for a in range(0, 600, 200))
    assert all(((cols >= a) & (cols < a + 200)).any() for a in range(0, 1000, 200))
    # a small raster: windows clipped to it
    small = lattice_windows(50, 40, 4, 64, rng)
    assert all(w.width <= 50 and w.height <= 40 for w in small)
