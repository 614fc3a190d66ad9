"""Every command in the README's bash blocks runs through a shell, so quoting cannot break again.

- The block marked ``<!-- readme-test: archive -->`` runs for real on generated archives
  (Collection 2 scenes in two UTM zones, a Sentinel-2 L2A scene, a STAC ItemCollection).
- Hydra entry points (``train.py``, ``predict.py``, ``python -m bsrlc.stm``, ``bsrlc.export``)
  compose their config with ``--cfg job``: the shell's quoting, the override grammar and every
  key and option are checked without running the job.
- ``python -m bsrlc.assess`` runs for real on a small class map, ``python -m bsrlc.demo`` on the
  tiny world.
- ``make`` targets must exist (``make -n``). Commands that need the network or an optional
  extra (``pip install``, ``wandb``, the Optuna sweeper and the Slurm launcher) are listed in
  ``NOT_RUN`` with the reason.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from odc.geo.geobox import GeoBox

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()

# Commands not run, and why (matched by their start).
NOT_RUN = {
    "pip install": "needs the package index",
    "wandb ": "needs a W&B server",
    "python train.py -m experiment=sr_demo hparams_search=": "needs the optuna extra",
    "python train.py -m hydra/launcher=submitit_slurm": "needs the slurm extra and a cluster",
}


def _blocks() -> list[tuple[str, str]]:
    """(marker, text) of every bash block; marker is the readme-test name or ''."""
    out = []
    for m in re.finditer(r"(<!-- readme-test: (\w+) -->\n)?```bash\n(.*?)```", README, re.S):
        out.append((m.group(2) or "", m.group(3)))
    return out


def _commands(text: str) -> list[str]:
    """Commands of a block: continuations joined, comments and blank lines dropped."""
    joined = text.replace("\\\n", " ")
    cmds = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        cmds.append(line)
    return cmds


def _bash(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, cwd=cwd, env=full, check=False
    )


def test_readme_has_the_blocks_this_test_knows():
    markers = [m for m, _ in _blocks()]
    assert "archive" in markers
    assert len(_blocks()) >= 6


def _s2_scene(root: Path) -> Path:
    from tests.test_stm_archive import _s2_mtd, _write

    time_ = "20200601T101559"
    folder = root / time_
    folder.mkdir(parents=True)
    for band, res in {
        "B02": 10,
        "B03": 10,
        "B04": 10,
        "B08": 10,
        "B11": 20,
        "B12": 20,
        "SCL": 20,
    }.items():
        g = GeoBox((1500 // res,) * 2, Affine(res, 0, 460_000, 0, -res, 5_550_000), "EPSG:32633")
        value, dtype = (4, np.uint8) if band == "SCL" else (2200, np.uint16)
        _write(folder / f"T33UXR_{time_}_{band}_{res}m.tif", np.full(g.shape.yx, value, dtype), g)
    uri = f"S2B_MSIL2A_{time_}_N0509_R065_T33UXR_{time_[:8]}T130000.SAFE"
    (folder / "MTD_MSIL2A.xml").write_text(_s2_mtd("05.09", uri))
    return root


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    from tests.test_stm_archive import _c2_scene, _original
    from tests.test_stm_stac import _item, _write_collection

    root = tmp_path_factory.mktemp("readme")
    truth, fields = _original()
    folders = []
    for date, data in list(fields.items())[:2]:
        nxt = (dt.date.fromisoformat(date) + dt.timedelta(days=1)).isoformat()
        folders.append(_c2_scene(root / "c2", truth, data, date, 32633, (17.85, 18.02), "190025"))
        folders.append(_c2_scene(root / "c2", truth, data, nxt, 32634, (17.98, 18.15), "189025"))
    catalog = _write_collection([_item(f) for f in folders], root / "items.json")
    return {
        "C2_DIR": str(root / "c2"),
        "S2_DIR": str(_s2_scene(root / "s2")),
        "CATALOG": str(catalog),
        "STM_DIR": str(root / "stm"),
    }


def test_the_archive_commands_run_as_written(archives, tmp_path):
    import rasterio

    (block,) = [text for marker, text in _blocks() if marker == "archive"]
    for command in _commands(block):
        res = _bash(command, tmp_path, archives)
        assert res.returncode == 0, f"{command}\n{res.stderr[-3000:]}"
    stm = Path(archives["STM_DIR"])
    for vrt, res in (
        (stm / "landsat_2020.vrt", 30),
        (stm / "sentinel2_2020.vrt", 10),
        (stm / "stac" / "landsat_2020.vrt", 30),
    ):
        with rasterio.open(vrt) as src:
            assert src.res == (res, res) and src.crs.to_epsg() == 3035
            assert src.descriptions[-1] == "CLEAR_COUNT" and (src.read(src.count) > 0).any()


HYDRA = ("python train.py", "python predict.py", "python -m bsrlc.stm", "python -m bsrlc.export")


def _single_run(command: str) -> str:
    """A multirun command as one run: ``-m`` dropped, each ``key=a,b`` sweep as ``key=a``."""
    words = shlex.split(command)
    head = 3 if words[1] == "-m" else 2  # python -m module / python script.py
    if "-m" not in words[head:]:
        return command
    out = [shlex.quote(w) for w in words[:head]]
    for w in words[head:]:
        if w == "-m":
            continue
        key, eq, value = w.partition("=")
        if eq and "," in value and value[:1] not in "[{'\"":
            w = f"{key}={value.split(',')[0]}"
        out.append(shlex.quote(w))
    return " ".join(out)


def _other_commands() -> list[str]:
    return [c for marker, text in _blocks() if marker != "archive" for c in _commands(text)]


def test_every_other_readme_command_composes_or_runs(tmp_path):
    from bsrlc.data.legend import Legend
    from bsrlc.inference.dense import class_map_output
    from bsrlc.raster import COGWriter

    # a small class map for the assess commands (MAP.tif in the working directory)
    legend = Legend.from_config("urban")
    spec = class_map_output(
        tmp_path / "MAP.tif",
        legend,
        {
            "crs": "EPSG:3035",
            "transform": Affine(10, 0, 4_500_000, 0, -10, 3_500_000),
            "width": 200,
            "height": 200,
        },
    )
    codes = np.asarray(legend.codes, np.uint8)[
        (np.arange(200)[:, None] // 50 + np.arange(200)[None] // 80) % 4
    ]
    with COGWriter(
        spec.path,
        crs=spec.crs,
        transform=spec.transform,
        width=spec.width,
        height=spec.height,
        count=1,
        dtype="uint8",
        nodata=spec.nodata,
        colormap=spec.colormap,
        categories=spec.categories,
        tags=spec.tags,
    ) as w:
        w.write(codes[None], None)
    ran = []
    for command in _other_commands():
        if any(command.startswith(prefix) for prefix in NOT_RUN):
            continue
        words = shlex.split(command.split(" && ")[0].split("#")[0])
        if words[0] == "make":
            res = _bash(f"make -n -C {ROOT} {' '.join(words[1:])}", tmp_path, {})
        elif command.startswith(HYDRA):
            # run from the repository (train.py, predict.py live there), config only; Hydra
            # has no --cfg for a multirun: its first sweep value stands for the sweep
            res = _bash(_single_run(command.split("#")[0]) + " --cfg job", ROOT, {})
        elif command.startswith("python -m bsrlc.demo"):
            # as written, on the tiny world in the scratch folder
            extra = f" --size tiny --no-progress --data-dir {tmp_path / 'data'}"
            res = _bash(command.split("#")[0] + extra, ROOT, {})
        elif command.startswith("python -m bsrlc.assess"):
            if "labelled.gpkg" in command:  # the reference labels: the sample, labelled
                import geopandas as gpd

                sample = gpd.read_file(tmp_path / "sample.gpkg")
                sample["reference"] = sample[next(c for c in sample.columns if c.startswith("map"))]
                sample.to_file(tmp_path / "labelled.gpkg")
            res = _bash(command, tmp_path, {})
        else:
            pytest.fail(f"README command of an unknown kind (add it here): {command}")
        assert res.returncode == 0, f"{command}\n{res.stderr[-3000:]}"
        ran.append(command)
    assert len(ran) >= 15
    assert (tmp_path / "DIR" / "assessment.json").exists()
