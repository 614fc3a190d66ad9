"""What each part of the demo's SR recipe earns: an ablation on the demo world's 2019 pair.

    python benchmarks/sr_ablation.py [--quick] [--rows l1,l1_sam,...] [--jobs 2] [--threads 1]
        [--fraction 1] [--data data/demo] [--out DIR] [--reuse]

Every row is ``python train.py experiment=sr_demo`` plus the row's overrides (:data:`ROWS`),
trained in its own process with ``--threads`` torch threads, ``--jobs`` rows side by side (so
rows that are compared share the machine's load: their wall times compare). Each run's model
is then scored on the held-out block as the demo maps it: the whole 30 m raster super-resolved
in one pass (no patch edges), the block cropped out, and the metrics of
:mod:`bsrlc.evaluation.sr_metrics` (``SRMetrics`` and ``SRQuality``) against Sentinel-2, for
the model and the bicubic and harmonised bicubic baselines (the run's per-band gains, fitted on
training patches). A run with an adversarial phase is also scored at the end of its pretraining
(``checkpoints/pretrain_end.ckpt``): the row ``<name>@pretrain``.

Columns: PSNR and its gain over harmonised bicubic on the block (``gain``) and on the run's
test patches (``gain_patches``: ``test/psnr_gain_bicubic_harmonised`` of the best checkpoint,
patch_size-sized tiles scored one by one, the number the README quoted before), SAM, ERGAS,
spectrum_error, synthesis, improvement, hallucination, training time (``fit s``: the fit's wall
time; ``CPU s``: the training process's user + system CPU time, the fairer cost on a machine
shared with other jobs) and their ratios to the ``today`` row's (``cost``, ``CPU cost``).
``--fraction F`` runs every row on a schedule F as long (:func:`shorten`: both phases and the
GAN ramp, the per-phase learning-rate schedule following), for a machine too busy for the full
1600 batches. Prints a markdown table and, last, one JSON line
``{"benchmark": "sr_ablation", "rows": {...}, "baselines": {...}}``.

``--quick``: two rows of 30 steps on the tiny world (generated in a temporary folder when
``--data`` holds no demo world): checks that the script runs, measures nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]


def merge(*groups: list[str]) -> list[str]:
    """Overrides in order, a later value of a key replacing an earlier one (Hydra takes one)."""
    out: dict[str, str] = {}
    for group in groups:
        for item in group:
            out[item.split("=", 1)[0]] = item
    return list(out.values())


# name -> (what it is, overrides of experiment=sr_demo). The sr_demo of commit c7556e4 is
# "today": 1400 batches of L1 + 0.1 SAM + 0.1 LR consistency, then 200 adversarial ones.
NO_GAN = ["model.adversarial_steps=0", "model.pretrain_steps=1600"]
SR_DEMO_C7556E4 = [
    "model.pretrain_steps=1400",
    "model.adversarial_steps=200",
    "model.content_loss=l1",
    "model.w_sam=0.1",
    "model.w_lr=0.1",
    "model.generator.channels=32",
    "model.generator.n_blocks=6",
    "model.optimizer_g.lr=5e-4",
    "model.lr_schedule.pretrain.end=0.05",
    "model.lr_schedule.adversarial.start=0.05",
    "data.patch_size=24",
    "data.batch_size=16",
]
MSE_SAM = ["model.content_loss=mse", "model.w_sam=0.1", "model.w_lr=0"]
RRDB = [
    "model.generator._target_=bsrlc.models.sr.RRDBNet",
    "~model.generator.head_kernel",
    "~model.generator.tail_kernel",
    "+model.generator.growth=16",
    "model.generator.n_blocks=1",
]


def steps(n: int) -> list[str]:
    """A run of ``n`` batches without an adversarial phase."""
    return ["model.adversarial_steps=0", f"model.pretrain_steps={n}"]


ROWS: dict[str, tuple[str, list[str]]] = {
    "today": ("sr_demo of c7556e4: L1 + SAM + LR, 1400 + 200 GAN", SR_DEMO_C7556E4),
    "l1": ("L1 only, 1600", merge(SR_DEMO_C7556E4, NO_GAN, ["model.w_sam=0", "model.w_lr=0"])),
    "l1_sam": ("L1 + SAM, 1600", merge(SR_DEMO_C7556E4, NO_GAN, ["model.w_lr=0"])),
    "l1_sam_lr": ("L1 + SAM + LR, 1600 (today without GAN)", merge(SR_DEMO_C7556E4, NO_GAN)),
    "mse_sam": ("MSE + SAM, 1600", merge(SR_DEMO_C7556E4, NO_GAN, MSE_SAM)),
    "mse_sam_lr": (
        "MSE + SAM + LR, 1600 (today without GAN, MSE for L1)",
        merge(SR_DEMO_C7556E4, NO_GAN, ["model.content_loss=mse"]),
    ),
    "mse_sam_gan": (
        "MSE + SAM, 1400 + 200 GAN",
        merge(SR_DEMO_C7556E4, MSE_SAM),
    ),
    "mse_sam_800": ("MSE + SAM, 800", merge(SR_DEMO_C7556E4, MSE_SAM, steps(800))),
    "mse_sam_2000": ("MSE + SAM, 2000", merge(SR_DEMO_C7556E4, MSE_SAM, steps(2000))),
    "mse_sam_3200": ("MSE + SAM, 3200", merge(SR_DEMO_C7556E4, MSE_SAM, steps(3200))),
    "mse_sam_b10": (
        "MSE + SAM, 1600, 10 residual blocks (6 today)",
        merge(SR_DEMO_C7556E4, NO_GAN, MSE_SAM, ["model.generator.n_blocks=10"]),
    ),
    "mse_sam_c48": (
        "MSE + SAM, 1600, 48 channels (32 today)",
        merge(SR_DEMO_C7556E4, NO_GAN, MSE_SAM, ["model.generator.channels=48"]),
    ),
    "rrdb_mse_sam": (
        "MSE + SAM, 1600, RRDB (32 ch, growth 16, 1 block)",
        merge(SR_DEMO_C7556E4, NO_GAN, MSE_SAM, RRDB),
    ),
}
"""The ablation's rows: name -> (description, overrides of ``experiment=sr_demo``)."""

QUICK = [
    "data.patch_size=16",
    "data.samples_per_epoch=160",
    "trainer.val_check_interval=10",
    "model.adv_ramp_steps=5",
]
QUICK_STEPS = {"pretrain": 20, "adversarial": 10}

KEYS = (
    "psnr",
    "ssim",
    "sam",
    "ergas",
    "spectrum_error",
    "synthesis",
    "improvement",
    "omission",
    "hallucination",
    "consistency",
    "psnr_shift",
)


def _quick(overrides: list[str]) -> list[str]:
    """A row shrunk to a few steps (its phases kept: with or without a GAN phase)."""
    out = [o for o in overrides if not o.startswith(("model.pretrain_steps", "model.adversa"))]
    gan = "model.adversarial_steps=0" not in overrides
    steps = [
        f"model.pretrain_steps={QUICK_STEPS['pretrain']}",
        f"model.adversarial_steps={QUICK_STEPS['adversarial'] if gan else 0}",
    ]
    return merge(out, QUICK, steps)


def shorten(overrides: list[str], fraction: float) -> list[str]:
    """A row on a shorter schedule: its phases and the GAN ramp ``fraction`` as long.

    The learning-rate schedule follows (it is set per phase), so a shortened row is the same
    recipe in fewer batches; validation stays every ``trainer.val_check_interval`` batches.

    Raises:
        SystemExit: for a fraction outside (0, 1].
    """
    if not 0 < fraction <= 1:
        sys.exit(f"--fraction {fraction}: use a number in (0, 1]")
    if fraction == 1:
        return overrides
    from omegaconf import OmegaConf

    demo = OmegaConf.load(REPO / "conf" / "experiment" / "sr_demo.yaml").model
    given = dict(o.split("=", 1) for o in overrides)
    pre = int(given.get("model.pretrain_steps", demo.pretrain_steps))
    adv = int(given.get("model.adversarial_steps", demo.adversarial_steps))
    ramp = int(given.get("model.adv_ramp_steps", demo.adv_ramp_steps))
    new_adv = round(adv * fraction)
    return merge(
        overrides,
        [
            f"model.pretrain_steps={max(1, round(pre * fraction))}",
            f"model.adversarial_steps={new_adv}",
            f"model.adv_ramp_steps={min(new_adv, max(1, round(ramp * fraction)))}",
        ],
    )


def demo_data(data: Path, quick: bool, tmp: Path) -> dict[str, Any]:
    """The 2019 pair, the regions file and the held-out block of a demo world.

    Args:
        data: the demo world's folder (``data/demo``).
        quick: generate the tiny world under ``tmp`` when ``data`` holds none.
        tmp: scratch folder.

    Returns:
        ``{"lr", "hr", "regions", "block"}`` (block: 10 m rows/cols ``(r0, c0, r1, c1)``).
    """
    from bsrlc.data.demo import DemoWorld

    stm = data / "stm"
    if not (stm / "landsat_2019.tif").exists() or not (data / "world.json").exists():
        if not quick:
            sys.exit(
                f"{data}: no demo world with its STMs; make it with "
                "`python -m bsrlc.demo stage=stm` (or give --data)"
            )
        from bsrlc.data.demo import generate
        from bsrlc.demo import build_stms

        world = generate("tiny", tmp / "tiny")
        stms = build_stms(world, progress=False)
        lr, hr, root = stms["landsat"]["2019"], stms["sentinel2"]["2019"], world.root
    else:
        world = DemoWorld.load(data)
        lr, hr, root = stm / "landsat_2019.tif", stm / "sentinel2_2019.tif", data
    return {
        "lr": Path(lr),
        "hr": Path(hr),
        "regions": Path(root) / "regions.geojson",
        "block": tuple(int(v) for v in world.test_block_10m),
    }


def train_rows(
    rows: dict[str, list[str]], pair: dict[str, Any], out: Path, jobs: int, threads: int
) -> dict[str, dict[str, Any]]:
    """Train the rows, ``jobs`` at a time, each in its own ``train.py`` process.

    Returns:
        name -> ``{"run": folder, "wall_s": process wall time, "cpu_s": its CPU time (user +
        system, the process and the children it waited for), "rc": exit status}``.
    """
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "BSRLC_ROOT": str(out / "root"),
        "WANDB_MODE": "offline",
    }
    pending = list(rows.items())
    running: dict[str, tuple[subprocess.Popen, float, Any]] = {}
    done: dict[str, dict[str, Any]] = {}
    while pending or running:
        while pending and len(running) < jobs:
            name, overrides = pending.pop(0)
            run = out / name
            cmd = [
                sys.executable,
                str(REPO / "train.py"),
                "experiment=sr_demo",
                f"hydra.run.dir={run}",
                f"task_name=sr_ablation_{name}",
                f"data.lr_path={pair['lr']}",
                f"data.hr_path={pair['hr']}",
                f"data.test_region={pair['regions']}",
                "data.cache_dir=null",
                "logger=csv",
                *overrides,
            ]
            run.mkdir(parents=True, exist_ok=True)
            log = (run / "train.out").open("w")
            print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(overrides)}", flush=True)
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            running[name] = (proc, time.perf_counter(), log)
        time.sleep(2)
        for name, (proc, t0, log) in list(running.items()):
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == 0:
                continue
            proc.returncode = os.waitstatus_to_exitcode(status)
            log.close()
            wall = time.perf_counter() - t0
            cpu = usage.ru_utime + usage.ru_stime
            done[name] = {
                "run": out / name,
                "wall_s": round(wall, 1),
                "cpu_s": round(cpu, 1),
                "rc": proc.returncode,
            }
            print(
                f"[{time.strftime('%H:%M:%S')}] {name}: rc {proc.returncode}, {wall:.0f} s wall, "
                f"{cpu:.0f} s CPU",
                flush=True,
            )
            del running[name]
    return done


def _read(path: Path, bands: list[str]) -> Any:
    """Bands of a raster as (1, C, H, W) float32 reflectance."""
    import numpy as np
    import rasterio
    import torch

    from bsrlc.evaluation.sr import raster_scaling
    from bsrlc.raster import band_indices, raster_info

    idx = band_indices(raster_info(path), bands)
    with rasterio.open(path) as src:
        scale, offset, _ = raster_scaling(src, idx, None)
        arr = src.read(idx).astype(np.float64) * scale[:, None, None] + offset[:, None, None]
    return torch.from_numpy(arr.astype(np.float32))[None]


class BlockScorer:
    """Scores checkpoints on the held-out block: the whole LR super-resolved, the block cropped.

    Args:
        pair: :func:`demo_data`'s dict.
        scale: the resolution ratio.
        data_range: of PSNR and SSIM (sr_demo's model.data_range).
    """

    def __init__(self, pair: dict[str, Any], scale: int = 3, data_range: float = 0.5) -> None:
        self.pair, self.scale, self.data_range = pair, scale, data_range
        self._cache: dict[tuple[str, ...], tuple[Any, Any]] = {}

    def _pair(self, bands: list[str]) -> tuple[Any, Any]:
        key = tuple(bands)
        if key not in self._cache:
            self._cache[key] = (_read(self.pair["lr"], bands), _read(self.pair["hr"], bands))
        return self._cache[key]

    def scores(self, estimate: Any, lr: Any, hr: Any) -> dict[str, float]:
        """SRMetrics and SRQuality of a full-raster estimate on the block.

        SRQuality gets the block with a halo of its border (15 px at x3), so both score exactly
        the block's pixels.
        """
        from bsrlc.evaluation.sr_metrics import SRMetrics, SRQuality, nested_border

        r0, c0, r1, c1 = self.pair["block"]
        s, b = self.scale, nested_border(self.scale)
        b = min(b, r0, c0, hr.shape[-2] - r1, hr.shape[-1] - c1) // s * s

        def crop(x: Any, halo: int = 0) -> Any:
            return x[..., r0 - halo : r1 + halo, c0 - halo : c1 + halo]

        lr_c = lr[..., (r0 - b) // s : (r1 + b) // s, (c0 - b) // s : (c1 + b) // s]
        plain = SRMetrics(self.data_range, float(s))
        plain.update(crop(estimate), crop(hr))
        quality = SRQuality(s, self.data_range, b)
        quality.update(crop(estimate, b), lr_c, crop(hr, b))
        values = {**plain.compute(), **quality.compute()}
        return {k: round(float(values[k]), 4) for k in KEYS}

    def score(self, ckpt: Path) -> dict[str, Any]:
        """The model's and its baselines' scores.

        Returns:
            ``{"model": {...}, "bicubic": {...}, "bicubic_harmonised": {...}, "infer_s"}``.
        """
        import torch

        from bsrlc.evaluation.sr_metrics import apply_band_gains, bicubic_upsample
        from bsrlc.inference.loading import load_checkpoint, read_checkpoint

        model = load_checkpoint(ckpt)
        state = read_checkpoint(ckpt)["state_dict"]
        lr, hr = self._pair(model.bands)
        mean = torch.tensor(model.mean)[None, :, None, None]
        std = torch.tensor(model.std)[None, :, None, None]
        t0 = time.perf_counter()
        with torch.no_grad():
            sr = model.net((lr - mean) / std) * std + mean
        infer_s = time.perf_counter() - t0
        up = bicubic_upsample(lr, self.scale)
        harmonised = apply_band_gains(up, state["harm_gain"], state["harm_offset"])
        return {
            "model": self.scores(sr, lr, hr),
            "bicubic": self.scores(up, lr, hr),
            "bicubic_harmonised": self.scores(harmonised, lr, hr),
            "infer_s": round(infer_s, 2),
        }


def _checkpoints(run: Path) -> dict[str, Path]:
    """The run's end-of-training model and, with a GAN phase, its end-of-pretraining one."""
    folder = run / "checkpoints"
    out = {}
    if (folder / "pretrain_end.ckpt").exists():
        out["@pretrain"] = folder / "pretrain_end.ckpt"
    if (folder / "last.ckpt").exists():
        out[""] = folder / "last.ckpt"
    return out


def _params(ckpt: Path) -> int:
    from bsrlc.inference.loading import load_checkpoint

    return sum(p.numel() for p in load_checkpoint(ckpt).net.parameters())


def collect(
    names: list[str], trained: dict[str, dict[str, Any]], scorer: BlockScorer
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Score every trained row (and its pretraining end); the baselines once."""
    rows: dict[str, dict[str, Any]] = {}
    baselines: dict[str, Any] = {}
    for name in names:
        info = trained[name]
        run = Path(info["run"])
        metrics_file = run / "metrics.json"
        if info.get("rc") or not metrics_file.exists():
            why = f"rc {info.get('rc')}" if info.get("rc") else "stopped before its metrics.json"
            rows[name] = {"error": f"training failed ({why}), see {run}/train.out"}
            continue
        metrics = json.loads(metrics_file.read_text())
        for suffix, ckpt in _checkpoints(run).items():
            steps = _steps(ckpt)
            scored = scorer.score(ckpt)
            if not baselines:
                baselines = {k: scored[k] for k in ("bicubic", "bicubic_harmonised")}
            model = scored["model"]
            harm = scored["bicubic_harmonised"]
            row = {
                "what": ROWS[name][0] if name in ROWS else name,
                **model,
                "gain": round(model["psnr"] - harm["psnr"], 3),
                "sam_gain": round(harm["sam"] - model["sam"], 3),
                "ergas_gain": round(harm["ergas"] - model["ergas"], 3),
                "params": _params(ckpt),
                "steps": steps["pretrain"] if suffix else steps["total"],
                "infer_s": scored["infer_s"],
            }
            if not suffix:
                row["gain_patches"] = round(
                    float(metrics.get("test/psnr_gain_bicubic_harmonised", float("nan"))), 3
                )
                row["fit_s"] = metrics.get("time/fit_s")
                row["wall_s"] = info.get("wall_s")
                row["cpu_s"] = info.get("cpu_s")
            rows[name + suffix] = row
    for key, ratio in (("fit_s", "cost"), ("cpu_s", "cpu_cost")):
        ref = rows.get("today", {}).get(key)
        for row in rows.values():
            if ref and row.get(key):
                row[ratio] = round(row[key] / ref, 2)
    return rows, baselines


def _steps(ckpt: Path) -> dict[str, int]:
    from bsrlc.inference.loading import read_checkpoint

    hp = read_checkpoint(ckpt).get("hyper_parameters", {})
    pre, adv = int(hp.get("pretrain_steps", 0)), int(hp.get("adversarial_steps", 0))
    return {"pretrain": pre, "total": pre + adv}


def table(rows: dict[str, dict[str, Any]], baselines: dict[str, Any]) -> str:
    """The markdown table of the rows and the baselines."""
    head = (
        "| row | what | steps | PSNR | gain (block) | gain (patches) | SAM | ERGAS | "
        "spectrum_error | synthesis | improvement | hallucination | fit s | cost | CPU s | "
        "CPU cost |"
    )
    lines = [head, "|" + "---|" * 16]

    def num(v: Any, f: str) -> str:
        return "–" if v is None or v != v else format(v, f)

    for name, key in (("bicubic", "bicubic"), ("harmonised bicubic", "bicubic_harmonised")):
        b = baselines.get(key)
        if b:
            lines.append(
                f"| {name} | baseline | – | {b['psnr']:.2f} | – | – | {b['sam']:.2f} | "
                f"{b['ergas']:.2f} | {b['spectrum_error']:.3f} | {b['synthesis']:.4f} | "
                f"{b['improvement']:.3f} | {b['hallucination']:.3f} | – | – | – | – |"
            )
    for name, r in rows.items():
        if "error" in r:
            lines.append(f"| {name} | {r['error']} |" + " |" * 14)
            continue
        lines.append(
            f"| {name} | {r['what']} | {r['steps']} | {r['psnr']:.2f} | {r['gain']:+.2f} | "
            f"{num(r.get('gain_patches'), '+.2f')} | {r['sam']:.2f} | {r['ergas']:.2f} | "
            f"{r['spectrum_error']:.3f} | {r['synthesis']:.4f} | {r['improvement']:.3f} | "
            f"{r['hallucination']:.3f} | {num(r.get('fit_s'), '.0f')} | "
            f"{num(r.get('cost'), '.2f')} | {num(r.get('cpu_s'), '.0f')} | "
            f"{num(r.get('cpu_cost'), '.2f')} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two rows of 30 steps (tiny world)")
    ap.add_argument("--rows", default="", help="comma-separated rows (default: all)")
    ap.add_argument("--jobs", type=int, default=2, help="rows trained side by side")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per row")
    ap.add_argument("--data", type=Path, default=REPO / "data" / "demo", help="the demo world")
    ap.add_argument("--out", type=Path, default=None, help="run folders (default: temporary)")
    ap.add_argument(
        "--fraction",
        type=float,
        default=1.0,
        help="every row on a schedule this fraction as long (phases and GAN ramp; default 1)",
    )
    ap.add_argument("--reuse", action="store_true", help="score rows already trained in --out")
    args = ap.parse_args()
    names = [n for n in args.rows.split(",") if n] or list(ROWS)
    if args.quick and not args.rows:
        names = ["l1", "today"]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        sys.exit(f"--rows: unknown {', '.join(unknown)}; use {', '.join(ROWS)}")
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        out = (args.out or tmp / "runs").resolve()
        pair = demo_data(args.data.resolve(), args.quick, tmp)
        todo = {}
        trained: dict[str, dict[str, Any]] = {}
        for n in names:
            if args.reuse and (out / n / "metrics.json").exists():
                trained[n] = {"run": out / n, "rc": 0}
                timing = out / n / "timing.json"
                if timing.exists():
                    trained[n].update(json.loads(timing.read_text()))
            else:
                todo[n] = _quick(ROWS[n][1]) if args.quick else shorten(ROWS[n][1], args.fraction)
        t0 = time.perf_counter()
        for name, info in train_rows(todo, pair, out, args.jobs, args.threads).items():
            trained[name] = info
            timing = {k: info[k] for k in ("wall_s", "cpu_s")}
            (out / name / "timing.json").write_text(json.dumps(timing))
        train_s = time.perf_counter() - t0
        rows, baselines = collect(names, trained, BlockScorer(pair))
        print(table(rows, baselines))
        print(
            json.dumps(
                {
                    "benchmark": "sr_ablation",
                    "quick": args.quick,
                    "block": pair["block"],
                    "jobs": args.jobs,
                    "threads": args.threads,
                    "fraction": args.fraction,
                    "train_s": round(train_s, 1),
                    "rows": rows,
                    "baselines": baselines,
                }
            )
        )


if __name__ == "__main__":
    main()
