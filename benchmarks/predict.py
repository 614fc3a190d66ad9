"""Prediction throughput and memory in the real pipeline (jobs run by ``Trainer.predict``).

    python benchmarks/predict.py [--quick] [--size 4096] [--bands 6]

Generates a size x size, 6-band 10 m STM raster and a (size / 3)^2 30 m one, then, each stage
in its own process (so each peak RSS is its own):

* ``sr``: the default SRResNet (64 channels, 16 blocks, random weights) super-resolves the 30 m
  raster to size x size (an :class:`~bsrlc.inference.sr.SRJob`);
* ``classify``: the default centre-patch CNN (15 x 15, valid convs) maps the 10 m raster
  densely (a :class:`~bsrlc.inference.dense.ClassifyJob`);
* ``per_patch``: the same job's tile computation (read, normalise, network, class codes) and
  weights on a crop, once dense and once classifying every pixel's patch in batches (the
  network without its dense form), side by side.

Throughput is megapixels of output per second, wall time of the whole job (reading, network,
tile store, COG assembly). Prints human lines and, last, one JSON line:
{"benchmark": "predict", "sr_mpix_per_s", "classify_mpix_per_s", "peak_rss_mb",
"dense_speedup", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from affine import Affine

BANDS = ["BLU_P50", "GRN_P50", "RED_P50", "NIR_P50", "SW1_P50", "SW2_P50"]


def make_raster(path: Path, size: int, res: float, bands: int) -> Path:
    """A textured int16 STM raster written block by block (memory stays small).

    Args:
        path: where.
        size: rows and columns.
        res: pixel size (m).
        bands: band count.

    Returns:
        The path.
    """
    import rasterio
    from rasterio.windows import Window

    rng = np.random.default_rng(0)
    block = 512
    pattern = rng.integers(200, 4000, (bands, block, block)).astype(np.int16)
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": bands,
        "dtype": "int16",
        "nodata": -9999,
        "crs": "EPSG:32633",
        "transform": Affine(res, 0, 500_000, 0, -res, 6_100_000),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as dst:
        for i, name in enumerate(BANDS[:bands], start=1):
            dst.set_band_description(i, name)
        for r in range(0, size, block):
            for c in range(0, size, block):
                h, w = min(block, size - r), min(block, size - c)
                dst.write(
                    np.roll(pattern, (r + c) // block, axis=1)[:, :h, :w], window=Window(c, r, w, h)
                )
    return path


def stage(name: str, src: Path, out: Path, bands: int, crop: int) -> dict[str, Any]:
    """Run one stage in this process.

    Args:
        name: ``sr``, ``classify`` or ``per_patch``.
        src: the input raster.
        out: output folder.
        bands: band count.
        crop: crop edge for ``per_patch``.

    Returns:
        The stage's measurements.
    """
    from bsrlc.data.legend import Legend
    from bsrlc.inference.dense import ClassifyJob
    from bsrlc.inference.jobs import run_lightning
    from bsrlc.inference.sr import SRJob
    from bsrlc.models.centre_patch import CentrePatchCNN
    from bsrlc.models.sr import SRResNet

    torch.manual_seed(0)
    names = BANDS[:bands]
    mean, std = [0.2] * bands, [0.1] * bands
    trainer = {"accelerator": "cpu", "devices": 1}
    legend = Legend.from_config(
        {"name": "urban", "classes": [{"code": i, "name": f"c{i}"} for i in range(1, 5)]}
    )
    if name == "sr":
        net = SRResNet(bands, channels=64, n_blocks=16, scale=3).eval()
        job = SRJob(src, out / "sr.tif", names, 3, mean, std)
        t0 = time.perf_counter()
        run_lightning(job, net, trainer, overwrite=True, progress=False)
        wall = time.perf_counter() - t0
        px = job.outputs[0].width * job.outputs[0].height
        return {"mpix_per_s": px / wall / 1e6, "s": wall, "output_px": px}
    net = CentrePatchCNN(bands, 4).eval()
    if name == "classify":
        job = ClassifyJob(src, out / "map.tif", names, mean, std, legend, net.halo)
        t0 = time.perf_counter()
        run_lightning(job, net, trainer, overwrite=True, progress=False)
        wall = time.perf_counter() - t0
        px = job.outputs[0].width * job.outputs[0].height
        return {"mpix_per_s": px / wall / 1e6, "s": wall, "output_px": px}

    class PerPatch(torch.nn.Module):  # the same weights without the dense form
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x)

    import rasterio
    from rasterio.windows import Window

    with rasterio.open(src) as ds:  # a crop: the per-patch path is slow
        profile = {**ds.profile, "width": crop, "height": crop}
        profile["transform"] = ds.window_transform(Window(0, 0, crop, crop))
        data = ds.read(window=Window(0, 0, crop, crop))
        descriptions = ds.descriptions
    small = out / "crop.tif"
    with rasterio.open(small, "w", **profile) as dst:
        dst.write(data)
        for i, d in enumerate(descriptions, start=1):
            dst.set_band_description(i, d)
    job = ClassifyJob(small, out / "crop_map.tif", names, mean, std, legend, net.halo, tile=crop)
    times, codes = {}, {}
    with torch.inference_mode():
        for label, model in (("dense", net), ("per_patch", PerPatch(net).eval())):
            job.compute(0, model, torch.device("cpu"))  # warm-up (oneDNN primitives, file open)
            t0 = time.perf_counter()
            codes[label] = job.compute(0, model, torch.device("cpu"))[0]
            times[label] = time.perf_counter() - t0
    same = float((codes["dense"] == codes["per_patch"]).mean())
    return {
        "dense_s": times["dense"],
        "per_patch_s": times["per_patch"],
        "dense_speedup": times["per_patch"] / times["dense"],
        "same_class_fraction": same,
        "crop": crop,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1024 px output, 128 px crop")
    ap.add_argument("--size", type=int, default=None, help="output edge (default 4096)")
    ap.add_argument("--bands", type=int, default=6)
    ap.add_argument("--crop", type=int, default=None, help="per-patch comparison crop edge")
    ap.add_argument("--stage", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--src", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    size = args.size or (1024 if args.quick else 4096)
    crop = args.crop or (128 if args.quick else 256)
    if args.stage:  # a child process: run one stage, print its JSON
        res = stage(args.stage, Path(args.src), Path(args.out), args.bands, crop)
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(res))
        return
    with tempfile.TemporaryDirectory(prefix="bsrlc_bench_") as tmp:
        root = Path(tmp)
        hr = make_raster(root / "stm_10m.tif", size, 10.0, args.bands)
        lr = make_raster(root / "stm_30m.tif", -(-size // 3), 30.0, args.bands)
        results = {}
        for name, src in (("sr", lr), ("classify", hr), ("per_patch", hr)):
            cmd = [sys.executable, __file__, "--stage", name, "--src", str(src), "--out", tmp]
            cmd += ["--bands", str(args.bands), "--crop", str(crop)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode:
                sys.exit(f"stage {name} failed:\n{proc.stderr[-3000:]}")
            results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    sr, cls, pp = results["sr"], results["classify"], results["per_patch"]
    print(
        f"SR        {sr['output_px'] / 1e6:7.1f} Mpx out in {sr['s']:6.1f} s: "
        f"{sr['mpix_per_s']:.3f} Mpx/s, peak RSS {sr['peak_rss_mb']:.0f} MB"
    )
    print(
        f"classify  {cls['output_px'] / 1e6:7.1f} Mpx out in {cls['s']:6.1f} s: "
        f"{cls['mpix_per_s']:.3f} Mpx/s, peak RSS {cls['peak_rss_mb']:.0f} MB"
    )
    print(
        f"per patch {crop}x{crop} crop: dense {pp['dense_s']:.2f} s vs per patch "
        f"{pp['per_patch_s']:.1f} s = {pp['dense_speedup']:.1f}x "
        f"(same class on {pp['same_class_fraction']:.4%} of pixels)"
    )
    print(
        json.dumps(
            {
                "benchmark": "predict",
                "sr_mpix_per_s": round(sr["mpix_per_s"], 4),
                "classify_mpix_per_s": round(cls["mpix_per_s"], 4),
                "peak_rss_mb": round(max(r["peak_rss_mb"] for r in results.values())),
                "dense_speedup": round(pp["dense_speedup"], 1),
                "size": size,
                "bands": args.bands,
                "crop": crop,
                "sr_peak_rss_mb": round(sr["peak_rss_mb"]),
                "classify_peak_rss_mb": round(cls["peak_rss_mb"]),
                "dense_same_class_fraction": pp["same_class_fraction"],
                "threads": torch.get_num_threads(),
                "device": "cpu",
            }
        )
    )


if __name__ == "__main__":
    main()
