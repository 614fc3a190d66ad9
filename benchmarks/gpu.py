"""GPU benchmark: sr_seed training throughput (fp32 vs bf16), peak memory, prediction Mpx/s, DDP.

THE ONE COMMAND on a machine with a CUDA GPU and bsrlc's environment (about 3-5 minutes on
one H100/H200, capped at 9 minutes by ``--budget 540``; every stage has its own timeout and the JSON
line is printed whatever fails):

    python benchmarks/gpu.py --out DIR        # DIR: result.json and one log per stage

On this workplace's H200 device machine (its image has torch and Lightning but not rasterio,
Hydra, geopandas, ...): first, here, ``python benchmarks/gpu.py --fetch-wheels
outputs/gpu_wheels`` (10 wheels, 46 MiB, for its Python 3.12; ``outputs/`` is git-ignored), then
one ``run`` with ``carry=["outputs/gpu_wheels"]`` and ``timeout_s=600``:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target
    /tmp/site outputs/gpu_wheels/*.whl && export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 &&
    python3 benchmarks/gpu.py --out $OUT/gpu

(8 files come back: ``result.json`` and the 7 stage logs). Other options:

    python benchmarks/gpu.py [--quick] [--lr-px 1024] [--pretrain-steps 150] [--gan-steps 150]
        [--warmup 25] [--budget 540] [--out DIR] [--work DIR] [--keep]

Each stage runs in its own child process with a timeout (its process group is killed when the
time is up), so a stage that fails or hangs is recorded in ``stages`` and the others still run:

* ``inputs``: a synthetic 30-band STM pair of the ``sr_seed`` bands (Landsat 30 m, ``--lr-px``
  square; Sentinel-2 10 m, three times that, nested on the same grid; int16 reflectance x 1e4),
  small crops of both for warm-ups and a CSV of labelled points for the classifier;
* ``train_fp32`` / ``train_bf16``: ``train.py experiment=sr_seed`` on that pair with
  ``trainer.precision=32-true`` / ``bf16-mixed`` (the seed's SRResNet 64 x 16 and PatchGAN,
  batch 32 of 32 px LR patches, 8 loader workers), ``--pretrain-steps`` L1 batches then
  ``--gan-steps`` adversarial ones. A callback (:func:`step_timer`, given to train.py as
  ``+callbacks.bench_timer``) times each phase after ``--warmup`` batches with CUDA synchronised
  at the marks (start-up, data caching, cuDNN autotuning, the phase-boundary checkpoint fall
  outside the windows) and reads ``torch.cuda.max_memory_allocated``;
* ``classify_train``: a few batches of ``experiment=classify_seed`` with the dense centre-patch
  CNN (its attention head, 18 bands) on the points: a classifier checkpoint to predict with;
* ``sr_predict`` / ``classify_predict``: ``bsrlc.predict.predict`` (what ``predict.py`` runs)
  with ``device=cuda`` in a child process, first on the small crop (CUDA context, cuDNN), then
  timed on the whole raster: SR of the 30 m raster (output ``(3 * lr_px)^2`` px) with the bf16
  run's checkpoint, dense classification of the 10 m raster (``priors=none``: no EM pass).
  Mpx/s of output, wall time of the whole job (reading, network in fp32, tile store, COG
  assembly), peak GPU memory;
* ``ddp``: with more than one visible GPU, the bf16 training again with ``trainer=ddp
  trainer.devices=N`` and the overrides in :data:`DDP_WORKAROUNDS` (batches/s per rank = global
  batches/s, N x 32 samples each; ``scaling_efficiency`` = that over one GPU's); with one GPU,
  skipped with the reason.

``--quick`` runs the same stages and code paths on the CPU at tiny sizes (a 64 px 30 m raster,
a few steps, DDP on 2 CPU processes): it checks that the script works (CI), it measures
nothing. Without CUDA and without ``--quick`` the script says so in one line and exits 2.

Prints a markdown table and, last, one JSON line::

    {"benchmark": "gpu", "device": ..., "sr_train": {"fp32_steps_s", "bf16_steps_s",
     "bf16_speedup", "peak_mem_gb", "fp32_gan_steps_s", "bf16_gan_steps_s",
     "bf16_gan_speedup", "fp32_peak_mem_gb", "full_recipe_h", ...},
     "sr_predict_mpx_s", "classify_predict_mpx_s", "ddp": {...},
     "stages": {name: {"ok", "wall_s", "error"}}, ...}

``*_steps_s`` are batches per second of the L1 phase, ``*_gan_steps_s`` of the adversarial
phase (generator and discriminator, two thirds of the recipe's 60000 batches);
``full_recipe_h`` is the bf16 estimate of sr_seed's whole schedule (20000 L1 + 40000
adversarial batches, validation excluded); memory in GiB. Exit status 0 when every stage that
ran succeeded, 1 otherwise (the JSON line is printed either way).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent

SENSOR_BANDS = ("BLU", "GRN", "RED", "NIR", "SW1", "SW2")
STATS = ("MIN", "P25", "P50", "P75", "MAX")
SR_BANDS = [f"{b}_{s}" for s in STATS for b in SENSOR_BANDS]
"""The 30 bands of ``conf/experiment/sr_seed.yaml``, in its order."""

CRS = "EPSG:32633"
ORIGIN = (500_000.0, 6_100_000.0)
RECIPE = {"pretrain": 20000, "adversarial": 40000}
"""sr_seed's schedule (``model.pretrain_steps``, ``model.adversarial_steps``)."""

FULL = {"lr_px": 1024, "pretrain": 150, "gan": 150, "warmup": 25, "points": 4000}
QUICK = {"lr_px": 64, "pretrain": 6, "gan": 6, "warmup": 2, "points": 300}
DDP_WORKAROUNDS = [
    # Lightning cannot rebuild bsrlc's ResumableLoader with its DistributedSampler (TypeError:
    # multiple values for argument 'sampler'); without it each rank draws its own batches (the
    # same work per rank and step as a sharded run)
    "++trainer.use_distributed_sampler=false",
    # the L1 phase leaves the discriminator unused: plain DDP stops at the second batch
    "trainer.strategy=ddp_find_unused_parameters_true",
]
"""Overrides ``trainer=ddp`` needs for sr_seed today (recorded in the JSON's ``ddp``)."""
DEVICE_WHEELS = [
    "hydra-core",
    "omegaconf",
    "rasterio",
    "affine",
    "cligj",
    "click-plugins",
    "pyproj",
    "shapely",
    "geopandas",
]
"""What bsrlc's training and prediction import that the H200 image lacks (antlr4 aside)."""
TIMEOUTS = {
    "inputs": 180,
    "train_fp32": 300,
    "train_bf16": 300,
    "classify_train": 240,
    "sr_predict": 240,
    "classify_predict": 240,
    "ddp": 300,
}
"""Each stage's own time limit (s); the whole run is also capped by ``--budget``."""


# --------------------------------------------------------------------------- timer callback


def step_timer(out: str, warmup: int, pretrain: int, total: int) -> Any:
    """A Lightning callback timing the two phases of an SR run (given to train.py by Hydra).

    ``+callbacks.bench_timer._target_=gpu.step_timer`` with ``benchmarks/`` on ``PYTHONPATH``.
    Batches are counted by the callback itself. Marks, CUDA synchronised: after batch
    ``warmup``, ``pretrain``, ``pretrain + warmup`` and ``total``; the L1 phase's rate is over
    the first two, the adversarial phase's over the last two. Each rank writes
    ``out`` (rank 0) or ``out.rank<N>``.

    Args:
        out: the JSON file to write when training ends.
        warmup: batches left out at the start of each phase.
        pretrain: batches of the L1 phase (``model.pretrain_steps``).
        total: all batches (``pretrain`` + ``model.adversarial_steps``).

    Returns:
        The callback.
    """
    import lightning as L
    import torch

    marks_at = sorted({warmup, pretrain, pretrain + warmup, total})

    class StepTimer(L.Callback):
        def __init__(self) -> None:
            self.n = 0
            self.marks: dict[int, float] = {}
            self.cuda = False

        def _now(self) -> float:
            if self.cuda:
                torch.cuda.synchronize()
            return time.perf_counter()

        def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            self.cuda = pl_module.device.type == "cuda"
            if self.cuda:
                torch.cuda.reset_peak_memory_stats(pl_module.device)
            self.marks[0] = self._now()

        def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
            self.n += 1
            if self.n in marks_at:
                self.marks[self.n] = self._now()

        def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            m = self.marks
            res: dict[str, Any] = {
                "batches": self.n,
                "precision": str(trainer.precision),
                "world_size": trainer.world_size,
                "device": str(pl_module.device),
            }
            if warmup in m and pretrain in m and pretrain > warmup:
                res["l1_steps_s"] = (pretrain - warmup) / (m[pretrain] - m[warmup])
            if pretrain + warmup in m and total in m and total > pretrain + warmup:
                res["gan_steps_s"] = (total - pretrain - warmup) / (m[total] - m[pretrain + warmup])
            if self.cuda:
                dev = pl_module.device
                res["peak_mem_gb"] = torch.cuda.max_memory_allocated(dev) / 2**30
                res["peak_reserved_gb"] = torch.cuda.max_memory_reserved(dev) / 2**30
                res["gpu"] = torch.cuda.get_device_name(dev)
                # "fp32" as PyTorch runs it by default: cuDNN convolutions may use TF32
                res["cudnn_allow_tf32"] = bool(torch.backends.cudnn.allow_tf32)
                res["matmul_precision"] = torch.get_float32_matmul_precision()
            dm = trainer.datamodule
            res["batch_size"] = getattr(dm, "batch_size", None)
            rank = trainer.global_rank
            path = Path(out if rank == 0 else f"{out}.rank{rank}")
            path.write_text(json.dumps(res))

    return StepTimer()


# --------------------------------------------------------------------------- inputs


def _write(path: Path, bands: list[tuple[str, Any]], res: float) -> None:
    """A tiled, uncompressed int16 GeoTIFF, one named band at a time."""
    import rasterio
    from affine import Affine

    h, w = bands[0][1].shape
    profile = {
        "driver": "GTiff",
        "width": w,
        "height": h,
        "count": len(bands),
        "dtype": "int16",
        "nodata": -9999,
        "crs": CRS,
        "transform": Affine(res, 0, ORIGIN[0], 0, -res, ORIGIN[1]),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    with rasterio.open(path, "w", **profile) as dst:
        for i, (name, data) in enumerate(bands, start=1):
            dst.write(data, i)
            dst.set_band_description(i, name)


def make_inputs(work: Path, lr_px: int, n_points: int) -> dict[str, Any]:
    """The synthetic pair (and crops) of the sr_seed bands and the classifier's points.

    HR (10 m) is a blocky field with fine noise, a different brightness per band; LR (30 m) is
    its 3 x 3 block mean, on the nested grid (same origin). Points are random pixel centres of
    the HR raster away from its edges, classes 1-4 of the urban legend in turn.

    Args:
        work: the folder to write into.
        lr_px: edge of the 30 m raster (the 10 m one is three times larger).
        n_points: labelled points.

    Returns:
        The paths and sizes written.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    hr_px = 3 * lr_px
    crop = min(64, lr_px // 2)
    base = rng.integers(300, 3500, (lr_px // 4 + 1, lr_px // 4 + 1)).astype(np.int16)
    field = np.kron(base, np.ones((12, 12), np.int16))[:hr_px, :hr_px]
    hr_bands, lr_bands = [], []
    for k, name in enumerate(SR_BANDS):
        noise = rng.integers(-150, 150, (hr_px, hr_px), dtype=np.int16)
        hr = np.clip(field + noise + 40 * (k % 6) + 60 * (k // 6), 1, 9000).astype(np.int16)
        lr = hr.reshape(lr_px, 3, lr_px, 3).mean(axis=(1, 3)).round().astype(np.int16)
        hr_bands.append((name, hr))
        lr_bands.append((name, lr))
    paths = {
        "lr": work / "landsat_30m.tif",
        "hr": work / "sentinel2_10m.tif",
        "lr_small": work / "landsat_30m_small.tif",
        "hr_small": work / "sentinel2_10m_small.tif",
        "points": work / "points.csv",
    }
    _write(paths["lr"], lr_bands, 30.0)
    _write(paths["hr"], hr_bands, 10.0)
    _write(paths["lr_small"], [(n, b[:crop, :crop]) for n, b in lr_bands], 30.0)
    _write(paths["hr_small"], [(n, b[: 3 * crop, : 3 * crop]) for n, b in hr_bands], 10.0)
    margin = 10  # distinct pixels (two classes on one pixel are refused)
    inner = hr_px - 2 * margin
    flat = rng.choice(inner * inner, size=min(n_points, inner * inner), replace=False)
    rows, cols = flat // inner + margin, flat % inner + margin
    lines = ["x,y,class"]
    for i, (r, c) in enumerate(zip(rows, cols, strict=True)):
        x, y = ORIGIN[0] + 10 * c + 5, ORIGIN[1] - 10 * r - 5
        lines.append(f"{x},{y},{i % 4 + 1}")
    paths["points"].write_text("\n".join(lines) + "\n")
    return {
        **{k: str(v) for k, v in paths.items()},
        "lr_px": lr_px,
        "hr_px": hr_px,
        "bands": len(SR_BANDS),
        "points_n": n_points,
    }


# --------------------------------------------------------------------------- predict stage


def run_predict(
    pipeline: str, model: str, raster: str, small: str, out: Path, device: str
) -> dict[str, Any]:
    """``bsrlc.predict.predict`` (what ``predict.py`` runs) once on a crop, then timed.

    Args:
        pipeline: ``sr`` or ``classify``.
        model: the checkpoint.
        raster: the raster to time.
        small: a crop of it for the warm-up run.
        out: output folder.
        device: ``cuda`` or ``cpu``.

    Returns:
        ``{"mpx_s", "s", "output_px", "warmup_s", "peak_mem_gb"?}``.
    """
    import rasterio
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from bsrlc.config import conf_dir
    from bsrlc.predict import predict

    def cfg_for(src: str, sub: str) -> Any:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=f"{conf_dir()}/predict", version_base="1.3"):
            cfg = compose(
                "predict",
                [
                    f"model={model}",
                    f"input={src}",
                    f"out_dir={out / sub}",
                    f"pipeline={pipeline}",
                    f"device={device}",
                    "progress=false",
                    "overwrite=true",
                    "priors=none",
                ],
            )
        GlobalHydra.instance().clear()
        return cfg

    t0 = time.perf_counter()
    predict(cfg_for(small, "warmup"))
    warm = time.perf_counter() - t0
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = predict(cfg_for(raster, "timed"))
    wall = time.perf_counter() - t0
    written = next(iter(result["sr" if pipeline == "sr" else "maps"].values()))
    with rasterio.open(written) as ds:
        px = ds.width * ds.height
    res: dict[str, Any] = {"mpx_s": px / wall / 1e6, "s": wall, "output_px": px, "warmup_s": warm}
    if device == "cuda":
        res["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return res


# --------------------------------------------------------------------------- orchestration


class Runner:
    """Runs stages as child processes with timeouts, under an overall time budget."""

    def __init__(self, logs: Path, budget: float, env: dict[str, str]) -> None:
        self.logs, self.env = logs, env
        self.deadline = time.monotonic() + budget
        self.stages: dict[str, dict[str, Any]] = {}
        self.proc: subprocess.Popen | None = None
        self.stopped: str | None = None

    def handle_signals(self) -> None:
        """On SIGTERM, SIGINT or SIGHUP end the running stage; the rest are not started."""
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._stop)

    def _stop(self, signum: int, frame: Any) -> None:
        """On a signal: end the running stage's process group; the rest are not started."""
        self.stopped = signal.Signals(signum).name
        if self.proc is not None and self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def skip(self, name: str, reason: str) -> None:
        """Record a stage as not run."""
        self.stages[name] = {"ok": None, "wall_s": 0.0, "error": None, "skipped": reason}
        print(f"[{time.strftime('%H:%M:%S')}] {name}: skipped ({reason})", flush=True)

    def run(
        self, name: str, cmd: list[str], result: Path | None = None, limit: float | None = None
    ) -> dict[str, Any] | None:
        """Run one stage; record it; return its result JSON (None when it failed).

        Args:
            name: the stage.
            cmd: its command line.
            result: the JSON file it writes (default: its stdout's last line), or a file
                that must exist (any suffix but ``.json``; the result is then ``{}``).
            limit: its time limit (default: :data:`TIMEOUTS`), capped by the budget left.

        Returns:
            The parsed result, or None.
        """
        left = self.deadline - time.monotonic()
        timeout = min(limit or TIMEOUTS[name], left)
        why = f"stopped by {self.stopped}" if self.stopped else None
        if why is None and left < 10:
            why = "no time left in --budget"
        if why:
            self.stages[name] = {"ok": False, "wall_s": 0.0, "cpu_s": 0.0, "error": why}
            print(f"[{time.strftime('%H:%M:%S')}] {name}: {why}", flush=True)
            return None
        log = self.logs / f"{name}.log"
        print(f"[{time.strftime('%H:%M:%S')}] {name} (limit {timeout:.0f} s)", flush=True)
        t0 = time.perf_counter()
        error = None
        with log.open("w") as fh:
            fh.write(" ".join(cmd) + "\n")
            fh.flush()
            proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=self.env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: workers and ranks die with it
            )
            self.proc = proc
            rc, cpu = None, 0.0
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    proc.returncode = rc = os.waitstatus_to_exitcode(status)
                    cpu = usage.ru_utime + usage.ru_stime
                    break
                if time.perf_counter() - t0 > timeout:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    error = f"timed out after {timeout:.0f} s"
                    break
                time.sleep(0.2)
        wall = time.perf_counter() - t0
        self.proc = None
        out = None
        if error is None and self.stopped:
            error = f"stopped by {self.stopped}"
        if error is None and rc != 0:
            error = f"exit status {rc}: {_last_error(log)}"
        if error is None:
            try:
                if result is not None and result.suffix != ".json":
                    if not result.exists():
                        raise FileNotFoundError(f"{result} not written")
                    out = {}
                else:
                    text = result.read_text() if result else log.read_text().splitlines()[-1]
                    out = json.loads(text)
            except (OSError, ValueError, IndexError) as exc:
                error = f"no result ({type(exc).__name__}: {exc}); see {log.name}"
        self.stages[name] = {
            "ok": error is None,
            "wall_s": round(wall, 1),
            "cpu_s": round(cpu, 1),
            "error": error,
        }
        status = "ok" if error is None else f"FAILED: {error}"
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {wall:.1f} s, {status}", flush=True)
        return out


def _last_error(log: Path) -> str:
    """The last line of a log that looks like an error (else its last line), shortened."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    lines = [ln for ln in lines if "HYDRA_FULL_ERROR" not in ln]
    for line in reversed(lines):
        if re.match(r"(error:|[\w.]*(Error|Exception)\b)", line):
            return line[-400:]
    for line in reversed(lines):
        if "rror" in line:
            return line[-400:]
    return lines[-1][-400:] if lines else "no output"


def train_cmd(
    run: Path,
    inputs: dict[str, Any],
    precision: str,
    cfg: dict[str, int],
    quick: bool,
    timer_out: Path,
    ddp_devices: int = 0,
) -> list[str]:
    """``train.py experiment=sr_seed`` on the synthetic pair with the step timer.

    Args:
        run: the run folder (``hydra.run.dir``).
        inputs: :func:`make_inputs`' result.
        precision: Lightning's precision (``32-true``, ``bf16-mixed``).
        cfg: step counts (``pretrain``, ``gan``, ``warmup``).
        quick: CPU and tiny patches.
        timer_out: the timer's JSON.
        ddp_devices: 0: one device; N: ``trainer=ddp`` on N devices (CPU processes if quick).

    Returns:
        The command line.
    """
    p, a, w = cfg["pretrain"], cfg["gan"], cfg["warmup"]
    cmd = [
        sys.executable,
        str(REPO / "train.py"),
        "experiment=sr_seed",
        f"hydra.run.dir={run}",
        "task_name=bench_gpu",
        "optimized_metric=null",
        f"data.lr_path={inputs['lr']}",
        f"data.hr_path={inputs['hr']}",
        "data.test_region=null",
        f"data.cache_dir={run.parent / 'cache'}",
        "logger=csv",
        "test=false",
        f"model.pretrain_steps={p}",
        f"model.adversarial_steps={a}",
        f"model.adv_ramp_steps={a}",
        "trainer.max_steps=-1",
        f"trainer.precision={precision}",
        "trainer.log_every_n_steps=50",
        "callbacks.model_checkpoint.last_every_n_train_steps=1000000",
        "+callbacks.bench_timer._target_=gpu.step_timer",
        f"+callbacks.bench_timer.out={timer_out}",
        f"+callbacks.bench_timer.warmup={w}",
        f"+callbacks.bench_timer.pretrain={p}",
        f"+callbacks.bench_timer.total={p + a}",
    ]
    if ddp_devices:
        cmd += [
            "trainer=ddp",
            f"trainer.devices={ddp_devices}",
            *DDP_WORKAROUNDS,
        ]
    if quick:
        cmd += [
            "trainer.accelerator=cpu",
            "data.patch_size=16",
            "data.batch_size=4",
            "data.num_workers=0",
            "data.samples_per_epoch=400",
            "trainer.val_check_interval=100",
            "model.generator.channels=8",
            "model.generator.n_blocks=2",
            "+model.discriminator.channels=[8,8,8,8,8]",
        ]
        if ddp_devices:
            cmd += ["trainer.sync_batchnorm=false", "trainer.precision=32-true"]
    return cmd


def classify_cmd(run: Path, inputs: dict[str, Any], quick: bool) -> list[str]:
    """``train.py experiment=classify_seed`` with the dense network, a few batches."""
    cmd = [
        sys.executable,
        str(REPO / "train.py"),
        "experiment=classify_seed",
        f"hydra.run.dir={run}",
        "task_name=bench_gpu_classify",
        "optimized_metric=null",
        f"data.raster={inputs['hr']}",
        f"data.points={inputs['points']}",
        f"data.points_crs={CRS}",
        "data.split_column=null",
        "data.min_points_per_class=null",
        f"data.cache_dir={run.parent / 'cache'}",
        "model.net._target_=bsrlc.models.centre_patch.CentrePatchCNN",
        "logger=csv",
        "test=false",
        "trainer.max_epochs=1",
        "trainer.max_steps=5",
        "+trainer.limit_val_batches=2",
    ]
    if quick:
        cmd += [
            "trainer.accelerator=cpu",
            "trainer.precision=32-true",
            "data.batch_size=32",
            "data.num_workers=0",
            "data.block_size=32",
            "model.net.channels=[8,8,8,8,8,8]",
            "model.net.attn_dim=16",
        ]
    return cmd


def fetch_wheels(dest: Path) -> None:
    """Download the wheels of :data:`DEVICE_WHEELS` for the GPU machine's Python 3.12.

    Versions are this environment's (``importlib.metadata``); antlr4's runtime has no wheel on
    PyPI and is built here (pure Python).

    Args:
        dest: the folder (``outputs/gpu_wheels``: ignored by git, named in the run's carry).
    """
    from importlib.metadata import version

    dest.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={version(name)}" for name in DEVICE_WHEELS]
    platforms = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28)] + ["manylinux2014_x86_64"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--python-version", "3.12", "--implementation", "cp", "-d", str(dest)]
    cmd += [a for p in platforms for a in ("--platform", p)]
    subprocess.run([*cmd, *pins], check=True)
    antlr = f"antlr4-python3-runtime=={version('antlr4-python3-runtime')}"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dest), antlr], check=True
    )
    wheels = sorted(dest.glob("*.whl"))
    size = sum(w.stat().st_size for w in wheels) / 2**20
    print(f"{len(wheels)} wheels, {size:.0f} MiB in {dest}")


def usage_error(message: str) -> NoReturn:
    """Print one line to stderr and exit with status 2."""
    print(message, file=sys.stderr)
    sys.exit(2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes on the CPU (CI)")
    ap.add_argument("--lr-px", type=int, default=None, help="30 m raster edge (default 1024)")
    ap.add_argument("--pretrain-steps", type=int, default=None, help="L1 batches (default 150)")
    ap.add_argument("--gan-steps", type=int, default=None, help="adversarial batches (150)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed batches per phase (25)")
    ap.add_argument("--budget", type=float, default=540.0, help="cap on the whole run (s)")
    ap.add_argument("--out", default=None, help="stage logs and result.json (small) go here")
    ap.add_argument("--work", default=None, help="inputs, runs, outputs (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    ap.add_argument(
        "--fetch-wheels",
        default=None,
        metavar="DIR",
        help="download here the wheels the GPU machine lacks, then exit",
    )
    ap.add_argument("--stage", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--args", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.fetch_wheels:
        fetch_wheels(Path(args.fetch_wheels))
        return
    if args.stage:  # a child process: one stage, its JSON on the last line
        kw = json.loads(args.args)
        if args.stage == "inputs":
            res = make_inputs(Path(kw["work"]), kw["lr_px"], kw["points"])
        else:
            res = run_predict(**{**kw, "out": Path(kw["out"])})
        print(json.dumps(res))
        return

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.quick:
        usage_error(
            "benchmarks/gpu.py: no CUDA device visible (torch.cuda.is_available() is False); "
            "run with --quick to check the script on the CPU"
        )
    sizes = dict(QUICK if args.quick else FULL)
    for key, val in (
        ("lr_px", args.lr_px),
        ("pretrain", args.pretrain_steps),
        ("gan", args.gan_steps),
        ("warmup", args.warmup),
    ):
        if val is not None:
            sizes[key] = val
    if sizes["warmup"] >= min(sizes["pretrain"], sizes["gan"]):
        usage_error(
            "benchmarks/gpu.py: --warmup must be smaller than --pretrain-steps and --gan-steps"
        )
    if sizes["lr_px"] < 64:
        usage_error("benchmarks/gpu.py: --lr-px must be at least 64")
    device = "cuda" if cuda and not args.quick else "cpu"
    n_gpus = torch.cuda.device_count() if cuda else 0

    tmp = None
    if args.work:
        work = Path(args.work).resolve()
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.mkdtemp(prefix="bsrlc_gpu_bench_")
        work = Path(tmp)
    logs = Path(args.out).resolve() if args.out else work
    logs.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        # benchmarks/ for the step timer, the checkout for bsrlc (where it is not installed)
        "PYTHONPATH": os.pathsep.join(
            [str(HERE), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
        "WANDB_MODE": "offline",
        "BSRLC_ROOT": str(work / "root"),
        "BSRLC_CACHE": str(work / "cache"),
        "PYTHONUNBUFFERED": "1",
    }
    if args.quick:
        env["CUDA_VISIBLE_DEVICES"] = ""
    runner = Runner(logs, args.budget, env)
    runner.handle_signals()  # e.g. an outer `timeout`: the JSON line still comes
    me = [sys.executable, str(Path(__file__).resolve())]

    def child(stage: str, **kw: Any) -> list[str]:
        return [*me, "--stage", stage, "--args", json.dumps(kw)]

    t_all = time.perf_counter()
    train: dict[str, Any] = {}
    pred: dict[str, Any] = {}
    ddp: dict[str, Any] = {}
    inputs = runner.run(
        "inputs", child("inputs", work=str(work), lr_px=sizes["lr_px"], points=sizes["points"])
    )
    precisions = {"fp32": "32-true", "bf16": "bf16-mixed"}
    if inputs is None:
        for name in ("train_fp32", "train_bf16", "classify_train", "sr_predict"):
            runner.skip(name, "no inputs")
        runner.skip("classify_predict", "no inputs")
        runner.skip("ddp", "no inputs")
    else:
        for label, precision in precisions.items():
            run = work / "runs" / f"sr_{label}"
            timer = work / f"timer_{label}.json"
            cmd = train_cmd(run, inputs, precision, sizes, args.quick, timer)
            train[label] = runner.run(f"train_{label}", cmd, timer)
        cls_run = work / "runs" / "classify"
        cls_ckpt = cls_run / "checkpoints" / "last.ckpt"
        runner.run("classify_train", classify_cmd(cls_run, inputs, args.quick), cls_ckpt)
        sr_ckpt = work / "runs" / "sr_bf16" / "checkpoints" / "last.ckpt"
        if not sr_ckpt.exists():
            sr_ckpt = work / "runs" / "sr_fp32" / "checkpoints" / "last.ckpt"
        if sr_ckpt.exists():
            pred["sr"] = runner.run(
                "sr_predict",
                child(
                    "sr_predict",
                    pipeline="sr",
                    model=str(sr_ckpt),
                    raster=inputs["lr"],
                    small=inputs["lr_small"],
                    out=str(work / "predict_sr"),
                    device=device,
                ),
            )
        else:
            runner.skip("sr_predict", "no SR checkpoint (both trainings failed)")
        if cls_ckpt.exists():
            pred["classify"] = runner.run(
                "classify_predict",
                child(
                    "classify_predict",
                    pipeline="classify",
                    model=str(cls_ckpt),
                    raster=inputs["hr"],
                    small=inputs["hr_small"],
                    out=str(work / "predict_classify"),
                    device=device,
                ),
            )
        else:
            runner.skip("classify_predict", "no classifier checkpoint")
        n_ddp = 2 if args.quick else n_gpus
        if n_ddp > 1:
            run = work / "runs" / "sr_ddp"
            timer = work / "timer_ddp.json"
            cmd = train_cmd(run, inputs, "bf16-mixed", sizes, args.quick, timer, n_ddp)
            res = runner.run("ddp", cmd, timer)
            if res:
                ddp = {"devices": n_ddp, "overrides": DDP_WORKAROUNDS, **res}
                # per-rank batches/s over one device's at the same precision: 1 = linear
                same = {"32-true": "fp32", "bf16-mixed": "bf16"}.get(str(res.get("precision")))
                single = (train.get(same or "") or {}).get("l1_steps_s")
                if single and res.get("l1_steps_s"):
                    ddp["scaling_efficiency"] = res["l1_steps_s"] / single
                if res.get("l1_steps_s") and res.get("batch_size"):
                    ddp["l1_samples_s"] = res["l1_steps_s"] * n_ddp * res["batch_size"]
        else:
            reason = f"{n_gpus} CUDA device visible; DDP needs 2 or more"
            runner.skip("ddp", reason)
            ddp = {"skipped": reason}

    fp32, bf16 = train.get("fp32") or {}, train.get("bf16") or {}

    def ratio(a: Any, b: Any) -> float | None:
        return round(a / b, 3) if a and b else None

    def r(v: Any, n: int = 3) -> Any:
        return round(v, n) if isinstance(v, float) else v

    sr_train = {
        "fp32_steps_s": r(fp32.get("l1_steps_s")),
        "bf16_steps_s": r(bf16.get("l1_steps_s")),
        "bf16_speedup": ratio(bf16.get("l1_steps_s"), fp32.get("l1_steps_s")),
        "peak_mem_gb": r(bf16.get("peak_mem_gb")),
        "fp32_gan_steps_s": r(fp32.get("gan_steps_s")),
        "bf16_gan_steps_s": r(bf16.get("gan_steps_s")),
        "bf16_gan_speedup": ratio(bf16.get("gan_steps_s"), fp32.get("gan_steps_s")),
        "fp32_peak_mem_gb": r(fp32.get("peak_mem_gb")),
        "bf16_peak_reserved_gb": r(bf16.get("peak_reserved_gb")),
        "batch_size": bf16.get("batch_size") or fp32.get("batch_size"),
        "fp32_cudnn_tf32": fp32.get("cudnn_allow_tf32"),
        "full_recipe_h": (
            round(
                (
                    RECIPE["pretrain"] / bf16["l1_steps_s"]
                    + RECIPE["adversarial"] / bf16["gan_steps_s"]
                )
                / 3600,
                2,
            )
            if bf16.get("l1_steps_s") and bf16.get("gan_steps_s")
            else None
        ),
    }
    sr_p, cls_p = pred.get("sr") or {}, pred.get("classify") or {}
    gpu_name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    result = {
        "benchmark": "gpu",
        "device": gpu_name,
        "quick": args.quick,
        "sr_train": sr_train,
        "sr_predict_mpx_s": r(sr_p.get("mpx_s")),
        "classify_predict_mpx_s": r(cls_p.get("mpx_s")),
        "sr_predict_peak_mem_gb": r(sr_p.get("peak_mem_gb")),
        "classify_predict_peak_mem_gb": r(cls_p.get("peak_mem_gb")),
        "sr_predict_output_mpx": r(sr_p["output_px"] / 1e6) if sr_p else None,
        "classify_predict_output_mpx": r(cls_p["output_px"] / 1e6) if cls_p else None,
        "ddp": {k: r(v) for k, v in ddp.items()},
        "gpus": n_gpus,
        "sizes": sizes,
        "torch": torch.__version__,
        "wall_s": round(time.perf_counter() - t_all, 1),
        "stages": runner.stages,
    }

    def cell(v: Any) -> str:
        return "-" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))

    print(f"\n| measure ({gpu_name}) | fp32 | bf16 | bf16 / fp32 |")
    print("|---|---|---|---|")
    print(
        f"| SR train, L1 phase (batches/s) | {cell(sr_train['fp32_steps_s'])} | "
        f"{cell(sr_train['bf16_steps_s'])} | {cell(sr_train['bf16_speedup'])} |"
    )
    print(
        f"| SR train, adversarial phase (batches/s) | {cell(sr_train['fp32_gan_steps_s'])} | "
        f"{cell(sr_train['bf16_gan_steps_s'])} | {cell(sr_train['bf16_gan_speedup'])} |"
    )
    print(
        f"| SR train, peak memory (GiB) | {cell(sr_train['fp32_peak_mem_gb'])} | "
        f"{cell(sr_train['peak_mem_gb'])} | |"
    )
    print(f"| SR predict (Mpx/s of output) | {cell(result['sr_predict_mpx_s'])} | | |")
    print(f"| classify predict (Mpx/s) | {cell(result['classify_predict_mpx_s'])} | | |")
    print(f"| DDP | {cell(ddp.get('devices'))} devices | {cell(ddp.get('l1_steps_s'))} | |")
    for name, st in runner.stages.items():
        print(f"stage {name}: {'ok' if st['ok'] else st.get('skipped') or st['error']}")
    line = json.dumps(result)
    (logs / "result.json").write_text(line + "\n")
    if tmp and not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
        if not args.out:
            print(f"(stage logs removed with {tmp}; --out DIR keeps them)", file=sys.stderr)
    print(line)
    failed = [n for n, s in runner.stages.items() if s["ok"] is False]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
