"""The notebooks: committed without outputs, and they run end to end on the tiny world."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ["01_demo_walkthrough.ipynb", "02_custom_data.ipynb"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_without_outputs(name):
    nb = json.loads((ROOT / "notebooks" / name).read_text())
    assert nb["nbformat"] == 4
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, "a notebook without code cells"
    for i, cell in enumerate(code):
        assert cell.get("outputs") == [], f"code cell {i} has outputs; strip them before committing"
        assert cell.get("execution_count") is None, f"code cell {i} has an execution count"
    for cell in nb["cells"]:
        assert "attachments" not in cell or not cell["attachments"]
    assert "widgets" not in nb.get("metadata", {})


def _periods() -> list[str]:
    from bsrlc.data.demo import SIZES

    return [str(y) for y in SIZES["tiny"].periods]


def _walkthrough_outputs(out: Path) -> None:
    import rasterio

    years = _periods()
    pred = out / "predict"
    for name in (
        *(f"landsat_{y}_sr.tif" for y in years),
        *(f"landsat_{y}_map.tif" for y in years),
        "class_areas.csv",
        "class_areas.png",
        f"change_{years[0]}_{years[-1]}.tif",
        "maps.gif",
    ):
        assert (pred / name).is_file(), name
    for bundle in ("sr", "classify"):
        assert (out / "bundles" / bundle / "model.onnx").is_file()
    for fig in ("truth.png", "sr_panel.png", "maps_vs_truth.png"):
        assert (out / "figures" / fig).is_file(), fig
    with (
        rasterio.open(pred / f"landsat_{years[-1]}_sr.tif") as sr,
        rasterio.open(out / "stm" / "landsat" / f"landsat_{years[-1]}.tif") as lr,
        rasterio.open(pred / f"landsat_{years[-1]}_map.tif") as cls,
    ):
        assert sr.res == (10.0, 10.0) and sr.width == 3 * lr.width and sr.crs == lr.crs
        assert (sr.transform.c, sr.transform.f) == (lr.transform.c, lr.transform.f)
        assert "NIR_P50" in sr.descriptions
        assert cls.transform == sr.transform and cls.dtypes[0] == "uint8"
        assert set(int(v) for v in set(cls.read(1).ravel().tolist())) <= {1, 2, 3, 4}
    header = (pred / "class_areas.csv").read_text().splitlines()
    assert header[0].startswith("period,residential buildings") and len(header) == 1 + len(years)


def _custom_data_outputs(out: Path) -> None:
    import rasterio

    years = _periods()
    pred = out / "my_project" / "predictions"
    for name in (
        *(f"landsat_stm_{y}_sr.tif" for y in years),
        *(f"landsat_stm_{y}_map.tif" for y in years),
        "class_areas.csv",
        f"change_{years[0]}_{years[-1]}.tif",
    ):
        assert (pred / name).is_file(), name
    for exp in ("my_sr", "my_classify"):
        assert (out / "my_project" / "conf" / "experiment" / f"{exp}.yaml").is_file()
        assert (out / "my_project" / "bundles" / exp / "metadata.json").is_file()
    meta = json.loads(
        (out / "my_project" / "bundles" / "my_classify" / "metadata.json").read_text()
    )
    assert meta["legend"]["name"] == "built_up" and len(meta["legend"]["classes"]) == 3
    with rasterio.open(pred / f"landsat_stm_{years[-1]}_map.tif") as src:
        assert src.colormap(1)[1] == (214, 39, 40, 255)  # the custom legend's colour table
        assert set(int(v) for v in set(src.read(1).ravel().tolist())) <= {1, 2, 3}
    assert (pred / "class_areas.csv").read_text().startswith("period,buildings,")
    # the demonstration files of the alignment and band-name sections are cleaned up
    assert not list((out / "my_project" / "stm").rglob("*misaligned*"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "check"),
    [
        ("01_demo_walkthrough.ipynb", _walkthrough_outputs),
        ("02_custom_data.ipynb", _custom_data_outputs),
    ],
    ids=["walkthrough", "custom_data"],
)
def test_notebook_runs_on_the_tiny_world(tmp_path, monkeypatch, name, check):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    out = tmp_path / "out"
    # the kernel inherits this process's environment
    monkeypatch.setenv("BSRLC_NB_SIZE", "tiny")
    monkeypatch.setenv("BSRLC_NB_OUT", str(out))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("BSRLC_CACHE", str(tmp_path / "chips"))
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT)}},  # the kernel's working directory
    )
    t0 = time.perf_counter()
    try:
        client.execute()
    finally:
        nbformat.write(nb, tmp_path / name)  # the executed copy, for a look after a failure
    print(f"{name}: executed in {time.perf_counter() - t0:.0f} s")
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors
    check(out)
