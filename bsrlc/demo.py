"""``make demo``: the whole workflow on the demo world, writing ``outputs/demo/``.

1. generate the demo world (``data/demo``) and composite STMs for every period and sensor;
2. train the SR model (``experiment=sr_demo``) on the latest Landsat / Sentinel-2 pair;
3. super-resolve the Landsat STMs of every period, and upsample them by nearest neighbour;
4. train the centre-patch classifier on Sentinel-2, on super-resolved Landsat and on
   NN-upsampled Landsat (latest period), and the per-pixel MLP on super-resolved Landsat;
5. map every period, evaluate on the held-out block (latest period and an earlier one),
   estimate areas with confidence intervals, and summarise change;
6. write ``report.md``, ``metrics.json``, figures, COG maps and a change GIF.

Steps whose outputs exist are skipped (``--force`` reruns everything). ``stage=NAME`` stops
after one stage (``world``, ``stm``, ``sr``, ``classify``, ``maps`` or ``report``, the default),
running the stages before it that have not run yet, e.g. ``python -m bsrlc.demo stage=stm``
to get the world and its STMs for your own experiments.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio

from bsrlc.data.demo import DemoWorld, generate
from bsrlc.errors import ConfigError, exit_on_user_error
from bsrlc.stm import SensorConfig, composite_periods, discover_scenes

if TYPE_CHECKING:
    from bsrlc.evaluation.figures import SRFigure

log = logging.getLogger("bsrlc.demo")

DEMO_METRICS = ["min", "p10", "p25", "p50", "p75", "p90", "max", "mean", "std", "count"]
DEMO_INDICES = ["NDVI", "NDBI"]
BANDS = ["BLU", "GRN", "RED", "NIR", "SW1", "SW2"]
SENSORS = {
    "landsat": SensorConfig(
        name="landsat", scale=1e-4, decoder="landsat_qa_pixel", mask_suffix="_QA_PIXEL"
    ),
    "sentinel2": SensorConfig(
        name="sentinel2", scale=1e-4, decoder="sentinel2_scl", mask_suffix="_SCL"
    ),
}
RGB = ["RED_P50", "GRN_P50", "BLU_P50"]
# How the demo's maps are made (as predict.py's priors= and decision=).
MAPPING = {"priors": "em", "decision": "argmax"}
# Whether the demo's maps of inputs with several periods are the HMM-smoothed ones in maps/hmm/
# (else the independent EM-corrected maps in maps/ are reported and the HMM ones only in the
# ablation). The HMM setting is chosen on validation points among the settings that move no
# class's share in any period by more than HMM_AREA_TOLERANCE (log ratio to the independent
# maps): without that check the chosen setting moved between runs and over-mapped residential
# areas (1.3x) in one of two.
HMM_MAPS = True
HMM_AREA_TOLERANCE = 0.15


def build_stms(world: DemoWorld, progress: bool = True) -> dict[str, dict[str, Path]]:
    """Composite every period of every sensor of a demo world into ``<world>/stm``.

    Args:
        world: the generated world.
        progress: show progress bars.

    Returns:
        sensor -> period label -> STM path.
    """
    out: dict[str, dict[str, Path]] = {}
    periods = {str(y): [f"{y - 1}-01-01", f"{y + 1}-12-31"] for y in world.spec.periods}
    for name, sensor in SENSORS.items():
        scenes = discover_scenes(world.root / "scenes" / name, sensor, BANDS)
        years = sorted({s.date.year for s in scenes})
        wanted = {k: v for k, v in periods.items() if int(k) in years}
        out[name] = composite_periods(
            scenes,
            world.root / "stm",
            wanted,
            bands=BANDS,
            metrics=DEMO_METRICS,
            indices=DEMO_INDICES,
            sensor=sensor,
            progress=progress,
        )
    return out


def _compose(experiment: str, overrides: list[str], out_dir: Path) -> Any:
    """The training config of ``python train.py experiment=... overrides`` writing to out_dir."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from bsrlc.config import conf_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[f"experiment={experiment}", *overrides],
            return_hydra_config=True,
        )
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
        cfg.paths.root_dir = str(Path.cwd())
        cfg.paths.work_dir = str(Path.cwd())
        cfg.paths.log_dir = str(out_dir / "logs")
        del cfg.hydra
    GlobalHydra.instance().clear()
    return cfg


def train_run(experiment: str, overrides: list[str], out_dir: Path, force: bool) -> Path:
    """Train one experiment in-process (as ``python train.py experiment=...`` would).

    Args:
        experiment: the experiment config.
        overrides: Hydra overrides.
        out_dir: the run's folder.
        force: retrain even if a checkpoint exists.

    Returns:
        The best checkpoint (``last.ckpt`` when no metric is monitored).
    """
    best_file = out_dir / "best_checkpoint.txt"
    if best_file.exists() and not force and Path(best_file.read_text().strip()).exists():
        log.info("%s: already trained (%s)", experiment, best_file.read_text().strip())
        return Path(best_file.read_text().strip())
    from bsrlc.training import train

    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    cfg = _compose(experiment, overrides, out_dir)
    t0 = time.perf_counter()
    metrics = train(cfg)
    log.info("%s trained in %.0f s", experiment, time.perf_counter() - t0)
    ckpts = sorted((out_dir / "checkpoints").glob("epoch_*.ckpt"))
    best = ckpts[-1] if ckpts else out_dir / "checkpoints" / "last.ckpt"
    best_file.write_text(str(best))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    return best


SR_BLOCK_ROWS = {
    "bicubic": "bicubic",
    "bicubic_harmonised": "harmonised bicubic",
    "sr_pretrain": "SR after the L1 phase",
    "sr": "SR (the demo's model)",
    "hr": "HR itself (floor)",
}
"""Rows of the report's SR table (``metrics["sr_block"]``), in order, and their labels."""

SR_BLOCK_KEYS = (
    ("psnr", "PSNR (dB)", ".2f"),
    ("ssim", "SSIM", ".3f"),
    ("sam", "SAM (deg)", ".2f"),
    ("ergas", "ERGAS", ".2f"),
    ("consistency", "consistency", ".4f"),
    ("synthesis", "synthesis", ".4f"),
    ("improvement", "improvement", ".3f"),
    ("omission", "omission", ".3f"),
    ("hallucination", "hallucination", ".3f"),
    ("spectrum_error", "spectrum error", ".3f"),
)
"""Columns of the report's SR table: metric key, header, format."""


def _crop(src_path: Path, dst: Path, window: tuple[int, int, int, int], bands: list[str]) -> Path:
    """Copy the named bands of a window ``(col, row, width, height)`` of a raster to ``dst``."""
    from rasterio.windows import Window

    from bsrlc.raster import band_indices, raster_info

    idx = band_indices(raster_info(src_path), bands)
    with rasterio.open(src_path) as src:
        win = Window(*window)
        profile = {
            "driver": "GTiff",
            "width": window[2],
            "height": window[3],
            "count": len(idx),
            "dtype": src.dtypes[0],
            "crs": src.crs,
            "transform": src.window_transform(win),
            "nodata": src.nodata,
        }
        data = src.read(idx, window=win)
        with rasterio.open(dst, "w", **profile) as out:
            out.write(data)
            out.descriptions = tuple(bands)
            out.scales = tuple(src.scales[i - 1] for i in idx)
            out.offsets = tuple(src.offsets[i - 1] for i in idx)
    return dst


def score_sr_block(
    world: DemoWorld,
    lr: Path,
    hr: Path,
    srs: dict[str, Path],
    bands: list[str],
    scale: int,
    data_range: float,
    work: Path,
) -> dict[str, dict[str, float | None]]:
    """Score SR rasters on the held-out block with ``bsrlc.evaluation.sr.score_rasters``.

    The block is cut out of SR, HR and LR with a halo of the scorer's border (15 px at x3, less
    where the raster ends), so every score covers exactly the block. The baselines' and the HR's
    rows come from the first SR's scoring (they do not depend on the SR); the harmonised
    bicubic's gains are fitted to the HR over the block itself (the scorer's; the training
    logs' harmonised baseline fits them on training patches).

    Args:
        world: the demo world (its ``test_block_10m``).
        lr: the LR raster the SR was made from.
        hr: the HR reference.
        srs: row name -> SR raster (on the HR grid).
        bands: the SR's bands.
        scale: the resolution ratio.
        data_range: the reflectance range of PSNR and SSIM (the SR task's).
        work: a folder for the cut-outs.

    Returns:
        Row name -> metric -> value, rows ``bicubic``, ``bicubic_harmonised``, the ``srs`` and
        ``hr``.
    """
    from bsrlc.evaluation.sr import score_rasters
    from bsrlc.evaluation.sr_metrics import nested_border
    from bsrlc.raster import raster_info

    r0, c0, r1, c1 = world.test_block_10m
    info = raster_info(hr)
    border = min(nested_border(scale), r0, c0, info.height - r1, info.width - c1)
    border -= border % scale
    hr_win = (c0 - border, r0 - border, c1 - c0 + 2 * border, r1 - r0 + 2 * border)
    lr_win = tuple(v // scale for v in hr_win)
    work.mkdir(parents=True, exist_ok=True)
    hr_c = _crop(hr, work / "hr.tif", hr_win, bands)
    lr_c = _crop(lr, work / "lr.tif", lr_win, bands)  # type: ignore[arg-type]
    rows: dict[str, dict[str, float | None]] = {}
    for name, path in srs.items():
        sr_c = _crop(path, work / f"{name}.tif", hr_win, bands)
        scores = score_rasters(sr_c, hr_c, lr_c, scale=scale, data_range=data_range, border=border)
        for base in ("bicubic", "bicubic_harmonised", "hr"):
            rows.setdefault(base, scores[base])
        rows[name] = {k: scores[k] for k in scores["bicubic"]}
    return {k: rows[k] for k in (*SR_BLOCK_ROWS, *srs) if k in rows}


def _sr_block(
    world: DemoWorld,
    stms: dict[str, dict[str, Path]],
    latest: str,
    ckpt: Path,
    model: Any,
    sr_raster: Path,
    feats: Path,
    progress: bool,
) -> dict[str, Any]:
    """The report's SR table: the demo's SR, its phases and the baselines on the held-out block.

    With an adversarial phase, the models at the end of the L1 phase
    (``checkpoints/pretrain_end.ckpt``) and at the end of the run (``last.ckpt``) super-resolve
    the latest Landsat STM too, as rows of their own (``sr_pretrain``, ``sr_gan``).
    """
    from bsrlc.inference.loading import load_checkpoint, read_checkpoint
    from bsrlc.inference.sr import SRJob, run_sr_job
    from bsrlc.tasks.sr import PRETRAIN_CHECKPOINT

    hp = read_checkpoint(ckpt).get("hyper_parameters", {})
    scale = int(model.meta["scale"])
    srs = {"sr": sr_raster}
    folder = Path(ckpt).parent
    phases = {"sr_pretrain": folder / PRETRAIN_CHECKPOINT, "sr_gan": folder / "last.ckpt"}
    gan = bool(hp.get("discriminator")) and int(hp.get("adversarial_steps") or 0) > 0
    if gan and all(p.exists() for p in phases.values()):
        for name, path in phases.items():
            out = feats / f"landsat_{name}_{latest}.tif"
            if not out.exists():
                m = load_checkpoint(path)
                job = SRJob(stms["landsat"][latest], out, m.bands, scale, m.mean, m.std)
                run_sr_job(job, m.net, progress=progress)
            srs[name] = out
    rows = score_sr_block(
        world,
        stms["landsat"][latest],
        stms["sentinel2"][latest],
        srs,
        list(model.bands),
        scale,
        float(hp.get("data_range", 0.5)),
        feats / "sr_block",
    )
    return {
        "rows": rows,
        "adversarial_phase": gan,
        "model_checkpoint": Path(ckpt).name,
        "block": list(world.test_block_10m),
    }


def _rgb(path: Path, window: tuple[slice, slice] | None = None) -> np.ndarray:
    with rasterio.open(path) as src:
        names = list(src.descriptions)
        arr = src.read([names.index(b) + 1 for b in RGB]).astype(np.float32) * 1e-4
    if window is not None:
        arr = arr[:, window[0], window[1]]
    return (np.clip(arr / 0.25, 0, 1).transpose(1, 2, 0) * 255).astype(np.uint8)


def _rgb_reflectance(path: Path) -> np.ndarray:
    """The RGB bands of a raster as (3, H, W) float32 reflectance, NaN where nodata."""
    with rasterio.open(path) as src:
        names = list(src.descriptions)
        idx = [names.index(b) + 1 for b in RGB]
        arr = src.read(idx).astype(np.float32)
        valid = src.read_masks(idx).all(0) if src.nodata is not None else None
    arr *= 1e-4
    if valid is not None:
        arr[:, ~valid] = np.nan
    return arr


# SR figure rows, from the demo world's cover map: covers whose share in a crop adds to its
# score, covers that subtract, and the least mean score of a crop worth showing (a 2-pixel road
# across a 96-pixel crop is 2 % of it). A road and the railway through open land, houses in
# gardens, industrial roofs.
_BUILT = ("ROOF_RED", "ROOF_GREY", "ROOF_IND", "OPEN_ART", "GARDEN")
SR_FIGURE_ROWS: dict[str, tuple[tuple[str, ...], tuple[str, ...], float]] = {
    "road": (("ROAD",), _BUILT, 0.015),
    "dense suburb": (("ROOF_RED", "ROOF_GREY"), ("OPEN_ART",), 0.1),
    "industrial": (("ROOF_IND",), (), 0.1),
    "railway": (("RAIL",), _BUILT, 0.015),
}


def sr_panel_figure(
    lr_path: Path,
    sr_path: Path,
    hr_path: Path,
    dst: Path,
    cover_path: Path | None = None,
    held_out: tuple[int, int, int, int] | None = None,
    scale: int = 3,
    crop: int = 96,
) -> SRFigure:
    """The report's SR figure: LR | bicubic | SR | HR crops at native resolution.

    Rows are chosen by land cover when the world's cover map is given (:data:`SR_FIGURE_ROWS`:
    the crop with the largest share of each cover), wholly inside the held-out block when one
    there holds enough of it, else wholly outside, else anywhere (the row label says which);
    without a cover map, or to make up four rows, by content (a road by line energy, a dense
    suburb by local variance, :func:`~bsrlc.evaluation.figures.content_scores`). Panels share
    the 2-98 % stretch of their HR crop (:func:`~bsrlc.evaluation.figures.sr_figure`).

    Args:
        lr_path: the Landsat STM (30 m).
        sr_path: its super-resolved 10 m raster.
        hr_path: the Sentinel-2 STM (10 m) of the same period.
        dst: the PNG.
        cover_path: the world's cover map of that period (10 m codes).
        held_out: the held-out block in 10 m pixels (row0, col0, row1, col1).
        scale: HR pixels per LR pixel.
        crop: crop edge in HR pixels (made a multiple of ``scale``, at most a quarter of the
            raster).

    Returns:
        What was written (path, crops and their labels, stretches).
    """
    import torch

    from bsrlc.data import demo as world_module
    from bsrlc.evaluation.figures import SRExample, content_scores, pick_crops, sr_figure

    lr, sr_img, hr = (_rgb_reflectance(p) for p in (lr_path, sr_path, hr_path))
    h, w = hr.shape[1:]
    crop = max(scale, min(crop, min(h, w) // 4) // scale * scale)
    filled = np.where(np.isnan(lr), np.nanmean(lr, axis=(1, 2), keepdims=True), lr)
    with torch.no_grad():
        bicubic = torch.nn.functional.interpolate(
            torch.from_numpy(filled)[None], scale_factor=scale, mode="bicubic", align_corners=False
        )[0].numpy()
    # where crops may lie, in turn: inside the held-out block, wholly outside it, anywhere
    areas: list[tuple[str, np.ndarray]] = [("", np.ones((h, w), bool))]
    if held_out is not None:
        r0, c0, r1, c1 = held_out
        inside = np.zeros((h, w), bool)
        inside[r0:r1, c0:c1] = True
        areas = [
            (" (held-out block)", inside),
            (" (training area)", ~inside),
            (" (partly held out)", np.ones((h, w), bool)),
        ]
    picked: dict[str, tuple[int, int]] = {}
    if cover_path is not None and cover_path.exists():
        with rasterio.open(cover_path) as src:
            cover = src.read(1)
        for label, (plus, minus, least) in SR_FIGURE_ROWS.items():
            score = np.isin(cover, [getattr(world_module, c) for c in plus]).astype(np.float64)
            score -= np.isin(cover, [getattr(world_module, c) for c in minus])
            for where, allowed in areas:
                got = pick_crops(
                    {label: np.where(allowed, score, -1e6)},  # no window crosses the border
                    crop,
                    scale,
                    taken=list(picked.values()),
                    min_mean=least,
                )
                if got:
                    picked[label + where] = got[label]
                    break
    if len(picked) < 4:  # no cover map, or covers missing: choose by content
        content = content_scores(hr)
        scores = {f"{k} (by content)": v for k, v in content.items()}
        for k in range(4):
            scores[f"detail {k + 1} (by content)"] = content["dense suburb"]
        for label, corner in pick_crops(scores, crop, scale, taken=list(picked.values())).items():
            if len(picked) < 4:
                picked[label] = corner
    examples = []
    for label, (r, c) in picked.items():
        hr_win = (slice(None), slice(r, r + crop), slice(c, c + crop))
        lr_win = (
            slice(None),
            slice(r // scale, (r + crop) // scale),
            slice(c // scale, (c + crop) // scale),
        )
        examples.append(
            SRExample(label, lr[lr_win], bicubic[hr_win], sr_img[hr_win], hr[hr_win], (r, c))
        )
    return sr_figure(
        examples,
        dst,
        scale,
        titles=("Landsat 30 m (its pixels)", "bicubic x3", "super-resolved", "Sentinel-2 10 m"),
        title=f"{crop * 10} m crops, true colour (P50), each row stretched to its HR 2-98 %",
    )


STAGES = ("world", "stm", "sr", "classify", "maps", "report")


def run(
    size: str,
    data_dir: Path,
    out_dir: Path,
    force: bool = False,
    progress: bool = True,
    stage: str = "report",
    pin_numerics: bool = False,
) -> dict[str, Any]:
    """Run the demo workflow.

    Args:
        size: ``demo`` or ``tiny``.
        data_dir: where the world is generated.
        out_dir: where the report and outputs go (``outputs/demo``).
        force: redo every step.
        progress: show progress bars.
        stage: the last stage to run (one of :data:`STAGES`).
        pin_numerics: pin torch to :data:`DEMO_THREADS` threads and :data:`DEMO_CPU_ISA`
            kernels first (``python -m bsrlc.demo`` does; :mod:`bsrlc.numerics`).

    Returns:
        The metrics written to ``metrics.json`` (after ``report``), else ``{"stage": stage}``.

    Raises:
        ConfigError: for an unknown stage.
    """
    if stage not in STAGES:
        from bsrlc.cli import _did_you_mean

        raise ConfigError(
            f"stage={stage}: unknown; {_did_you_mean(stage, list(STAGES))}(stages: "
            f"{', '.join(STAGES)})"
        )

    def stop(name: str) -> bool:
        if name == stage:
            log.info("stage %s done (%.0f s); stopping as asked", name, time.perf_counter() - t0)
        return name == stage

    if pin_numerics:  # the same tables on any x86 machine and load (bsrlc.numerics)
        from bsrlc.numerics import pin_cpu_numerics

        log.info("CPU numerics pinned: %s", pin_cpu_numerics(DEMO_THREADS, DEMO_CPU_ISA))
    import torch

    from bsrlc.data.legend import Legend
    from bsrlc.evaluation import maps as M
    from bsrlc.inference.loading import load_checkpoint
    from bsrlc.inference.resample import nearest_upsample
    from bsrlc.inference.sr import SRJob, run_sr_job
    from bsrlc.inference.temporal import smooth_maps

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    t0 = t_start
    world = generate(size, data_dir / size)
    if stop("world"):
        return {"stage": stage}
    stms = build_stms(world, progress=progress)
    timings["world_and_stms_s"] = time.perf_counter() - t_start
    if stop("stm"):
        return {"stage": stage}
    years = [str(y) for y in world.spec.periods]
    latest, early = years[-1], years[1]
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = out_dir / "runs"
    feats = out_dir / "features"
    maps_dir = out_dir / "maps"
    figs = out_dir / "figures"
    for d in (feats, maps_dir, figs):
        d.mkdir(parents=True, exist_ok=True)
    regions = world.root / "regions.geojson"
    tiny = size == "tiny"
    small = ["data.cache_dir=null"]

    # 2. Super-resolution.
    t0 = time.perf_counter()
    sr_over = [
        f"data.lr_path={stms['landsat'][latest]}",
        f"data.hr_path={stms['sentinel2'][latest]}",
        f"data.test_region={regions}",
        "logger=csv",
        *small,
    ]
    if tiny:
        sr_over += [
            "data.patch_size=16",
            "trainer.max_steps=20",
            "trainer.val_check_interval=10",
            "model.pretrain_steps=10",
            "data.samples_per_epoch=160",
        ]
    sr_ckpt = train_run("sr_demo", sr_over, runs / "sr", force)
    timings["sr_train_s"] = time.perf_counter() - t0
    sr_metrics = json.loads((runs / "sr" / "metrics.json").read_text())
    sr = load_checkpoint(sr_ckpt)
    scale = int(sr.meta["scale"])

    # 3. SR and nearest-neighbour 10 m features for every period.
    t0 = time.perf_counter()
    sr_feats, nn_feats = {}, {}
    for y in years:
        sr_feats[y] = feats / f"landsat_sr_{y}.tif"
        nn_feats[y] = feats / f"landsat_nn_{y}.tif"
        if force or not sr_feats[y].exists():  # as predict.py does (one SR path)
            job = SRJob(stms["landsat"][y], sr_feats[y], sr.bands, scale, sr.mean, sr.std)
            run_sr_job(job, sr.net, overwrite=force, progress=progress)  # resumes a killed run
        if force or not nn_feats[y].exists():
            nearest_upsample(stms["landsat"][y], nn_feats[y], sr.bands, scale)
    sr_block = _sr_block(world, stms, latest, sr_ckpt, sr, sr_feats[latest], feats, progress)
    timings["sr_inference_s"] = time.perf_counter() - t0
    if stop("sr"):
        return {"stage": stage}

    # 4. Classifiers on each input (latest period's points).
    t0 = time.perf_counter()
    points = {y: world.root / world.points[int(y)] for y in years}

    # Landsat-based inputs train on every period's points through that period's features, so
    # states that exist only in some periods (the 2013 construction site, TM/ETM+ looks) are
    # learnt; Sentinel-2 exists in the latest period only. `sr_10m_latest_only` is the seed's
    # way (latest period's points only), kept for the ablation.
    def listed(paths: list[Path]) -> str:
        return "[" + ",".join(str(p) for p in paths) + "]"

    all_pts = listed([points[y] for y in years])
    inputs = {
        "s2_10m": ("classify_demo", str(stms["sentinel2"][latest]), str(points[latest]), []),
        "sr_10m": ("classify_demo", listed([sr_feats[y] for y in years]), all_pts, []),
        "landsat_30m_nn": ("classify_demo", listed([nn_feats[y] for y in years]), all_pts, []),
        "pixel_sr_10m": (
            "classify_demo",
            listed([sr_feats[y] for y in years]),
            all_pts,
            ["model=pixel_mlp"],
        ),
        "sr_10m_latest_only": ("classify_demo", str(sr_feats[latest]), str(points[latest]), []),
    }
    cls_ckpts, cls_configs = {}, {}
    for name, (exp, raster, pts, extra) in inputs.items():
        over = [
            f"data.raster={raster}",
            f"data.points={pts}",
            "logger=csv",
            f"data.bands=[{','.join(sr.bands)}]",
            *small,
            *extra,
        ]
        if raster.startswith("["):  # four periods of points: as many steps in fewer epochs
            over.append("trainer.max_epochs=15")
        if tiny:
            over += ["trainer.max_epochs=2", "data.block_size=32"]
        cls_ckpts[name] = train_run(exp, over, runs / f"classify_{name}", force)
        cls_configs[name] = (exp, over)
    timings["classify_train_s"] = time.perf_counter() - t0
    if stop("classify"):
        return {"stage": stage}

    # 5. Maps and evaluation.
    t0 = time.perf_counter()
    legend = Legend.from_config("urban")
    classify_metrics: dict[str, dict[str, Any]] = {"latest": {}, "early": {}}
    per_period_input = {
        "s2_10m": {latest: stms["sentinel2"][latest]},
        "sr_10m": sr_feats,
        "landsat_30m_nn": nn_feats,
        "pixel_sr_10m": sr_feats,
    }
    # Every period mapped independently (calibrated, EM prior-corrected), then, for inputs with
    # several periods, made consistent by the HMM with parameters chosen on that classifier's
    # validation points, written to maps/hmm/ (HMM_MAPS chooses which set the demo reports).
    map_paths: dict[str, dict[str, Path]] = {}
    independent: dict[str, dict[str, Path]] = {}
    smoothed: dict[str, dict[str, Path]] = {}
    temporal: dict[str, Any] = {}
    models = {name: load_checkpoint(ckpt) for name, ckpt in cls_ckpts.items()}
    (maps_dir / "hmm").mkdir(exist_ok=True)
    for name, per_year in per_period_input.items():
        several = len(per_year) > 1
        independent[name] = {y: maps_dir / f"{name}_{y}.tif" for y in per_year}
        for y, raster in per_year.items():
            if force or not independent[name][y].exists():
                _map(
                    models[name],
                    raster,
                    independent[name][y],
                    legend,
                    progress,
                    probabilities=several,
                    **MAPPING,
                )
        map_paths[name] = independent[name]
        if several:
            smoothed[name] = {y: maps_dir / "hmm" / f"{name}_{y}.tif" for y in per_year}
            probas = [p.with_name(p.stem + "_proba.tif") for p in independent[name].values()]
            run_dir = runs / f"classify_{name}"
            val = _validation_points(*cls_configs[name], run_dir, dict(per_year))
            temporal[name] = _select_hmm(probas, val, legend)
            if force or not all(p.exists() for p in smoothed[name].values()):
                smooth_maps(
                    probas,
                    list(smoothed[name].values()),
                    legend,
                    stay=temporal[name]["stay"],
                    evidence_weight=temporal[name]["evidence_weight"],
                    overwrite=True,
                )
            if HMM_MAPS:
                map_paths[name] = smoothed[name]
        for y in per_year:
            dst = map_paths[name][y]
            for key, year in (("latest", latest), ("early", early)):
                if y == year:
                    res = M.evaluate_at_points(dst, points[year], legend)
                    classify_metrics[key][name] = {
                        k: res[k] for k in ("oa", "macro_f1", "kappa", "f1", "n", "confusion")
                    }
    timings["maps_s"] = time.perf_counter() - t0
    if stop("maps"):
        return {"stage": stage}

    # Wall-to-wall accuracy: every map against the truth, in the held-out block and everywhere.
    r0, c0, r1, c1 = world.test_block_10m
    truths = {y: M.read_map(world.root / world.truth[int(y)])[0] for y in years}
    maps_eval: dict[str, dict[str, Any]] = {}
    for name, per_year in map_paths.items():
        for y, path in per_year.items():
            codes = M.read_map(path)[0]
            held = M.wall_to_wall(codes[r0:r1, c0:c1], truths[y][r0:r1, c0:c1], legend)
            whole = M.wall_to_wall(codes, truths[y], legend)
            maps_eval.setdefault(y, {})[name] = {
                "area_oa": held["area_oa"],
                "area_ratio": held["area_ratio"],
                "users_accuracy": held["users_accuracy"],
                "producers_accuracy": held["producers_accuracy"],
                "world_area_ratio": whole["area_ratio"],
                "world_area_oa": whole["area_oa"],
            }
    flicker = {
        name: M.flicker([M.read_map(per_year[y])[0] for y in years])
        for name, per_year in map_paths.items()
        if len(per_year) == len(years)
    }
    flicker["truth"] = M.flicker([truths[y] for y in years])
    flicker_other = {  # the set of maps not reported
        name: M.flicker([M.read_map(per_year[y])[0] for y in years])
        for name, per_year in (independent if HMM_MAPS else smoothed).items()
        if len(per_year) == len(years) and name in smoothed
    }
    site = world.construction_site()
    construction: dict[str, Any] = {}
    if site is not None:
        period, (rows, cols) = site
        truth_site = truths[period][rows, cols]
        mapped_site = M.read_map(map_paths["sr_10m"][period])[0][rows, cols]
        open_code = legend.codes[legend.names.index("artificial open spaces")]
        is_open = truth_site == open_code
        construction = {
            "period": period,
            "share_artificial_open": float((mapped_site[is_open] == open_code).mean()),
        }

    # Ablation: what each remedy gains on the SR CNN's maps, by area (every parameter comes from
    # training/validation data or the maps themselves; the held-out block is only scored).
    ablation = _ablation(
        models,
        sr_feats,
        truths,
        world,
        legend,
        maps_dir / "ablation",
        {"independent": independent["sr_10m"], "smoothed": smoothed["sr_10m"]},
        temporal["sr_10m"],
        progress,
    )

    # Area-adjusted accuracy of the latest SR map on the held-out block.
    sr_map, _ = M.read_map(map_paths["sr_10m"][latest])
    truth, _ = M.read_map(world.root / world.truth[int(latest)])
    area_acc = M.stratified_area_accuracy(
        sr_map[r0:r1, c0:c1],
        truth[r0:r1, c0:c1],
        legend,
        per_class=50 if tiny else 100,
        pixel_area=0.01,
        seed=0,
    )
    areas = M.class_areas(map_paths["sr_10m"], legend, 0.01)
    truth_areas = M.class_areas({y: world.root / world.truth[int(y)] for y in years}, legend, 0.01)
    with open(out_dir / "class_areas.csv", "w") as f:
        f.write("period," + ",".join(legend.names) + "\n")
        for y in years:
            f.write(y + "," + ",".join(f"{areas[y][n]:.2f}" for n in legend.names) + "\n")

    # Figures.
    M.areas_chart(areas, legend, figs / "class_areas.png")
    M.maps_gif(map_paths["sr_10m"], legend, out_dir / "change.gif")
    first = M.read_map(map_paths["sr_10m"][years[0]])[0]
    change = M.change_map(first, sr_map, legend)
    from bsrlc.raster import write_cog

    with rasterio.open(map_paths["sr_10m"][latest]) as src:
        write_cog(
            maps_dir / f"change_{years[0]}_{latest}.tif",
            change,
            crs=src.crs,
            transform=src.transform,
            nodata=0,
            descriptions=["FROM_X16_PLUS_TO"],
        )
    panels = []
    for y in years:
        panels.append((f"truth {y}", M.read_map(world.root / world.truth[int(y)])[0]))
        panels.append((f"SR map {y}", M.read_map(map_paths["sr_10m"][y])[0]))
    M.maps_figure(panels, legend, figs / "maps_vs_truth.png", cols=4)
    block = (slice(r0, r1), slice(c0, c1))
    lr_block = (slice(r0 // 3, r1 // 3), slice(c0 // 3, c1 // 3))
    inputs_fig = [
        (
            "Landsat STM 30 m (NN)",
            np.repeat(np.repeat(_rgb(stms["landsat"][latest], lr_block), 3, 0), 3, 1),
        ),
        ("super-resolved 10 m", _rgb(sr_feats[latest], block)),
        ("Sentinel-2 STM 10 m", _rgb(stms["sentinel2"][latest], block)),
        ("truth", truth[block]),
    ]
    for name in ("landsat_30m_nn", "sr_10m", "s2_10m", "pixel_sr_10m"):
        inputs_fig.append((f"map: {name}", M.read_map(map_paths[name][latest])[0][block]))
    M.maps_figure(inputs_fig, legend, figs / "held_out_block.png", cols=4)
    import imageio.v3 as iio

    from bsrlc.evaluation.figures import confusion_figure

    for name, res in classify_metrics["latest"].items():
        iio.imwrite(
            figs / f"confusion_{name}.png",
            confusion_figure(np.array(res["confusion"]), legend.names, f"{name}, {latest}"),
        )
    cover = world.root / world.truth[int(latest)].replace("truth_", "cover_")
    sr_panel_figure(
        stms["landsat"][latest],
        sr_feats[latest],
        stms["sentinel2"][latest],
        figs / "sr_panel.png",
        cover,
        world.test_block_10m,
        scale,
    )

    # Metrics contract.
    def sr_keys(prefix: str) -> dict[str, float]:
        return {k: float(sr_metrics[f"test/{prefix}{k}"]) for k in ("psnr", "ssim", "sam", "ergas")}

    metrics = {
        "sr": {
            "model": sr_keys(""),
            "bicubic": sr_keys("bicubic_"),
            "bicubic_harmonised": sr_keys("bicubic_harmonised_"),
        },
        "sr_block": sr_block,
        "classify": {
            period: {
                name: {k: float(v[k]) for k in ("oa", "macro_f1", "kappa")}
                for name, v in per.items()
            }
            for period, per in classify_metrics.items()
        },
        "maps": {y: maps_eval[y] for y in years if y in maps_eval},
        "flicker": flicker,
        "flicker_independent" if HMM_MAPS else "flicker_hmm": flicker_other,
        "temporal": {
            name: {k: v for k, v in sel.items() if k != "candidates"}
            for name, sel in temporal.items()
        },
        "construction_site": construction,
        "ablation": ablation,
        "area_adjusted": area_acc.to_dict(),
        "periods": {"latest": latest, "early": early},
    }
    timings["total_s"] = time.perf_counter() - t_start
    metrics["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out_dir / "report.md").write_text(
        _report(world, metrics, classify_metrics, area_acc, areas, truth_areas, legend, years)
    )
    del torch
    log.info("demo finished in %.0f s -> %s", timings["total_s"], out_dir)
    return metrics


def _report(
    world: DemoWorld,
    metrics: dict[str, Any],
    classify_metrics: dict[str, dict[str, Any]],
    area_acc: Any,
    areas: dict[str, dict[str, float]],
    truth_areas: dict[str, dict[str, float]],
    legend: Any,
    years: list[str],
) -> str:
    sr = metrics["sr"]
    lines = [
        f"# bsrlc demo report ({world.spec.size} x {world.spec.size} px world, "
        f"seed {world.spec.seed})",
        "",
        "Produced by `make demo` (`python -m bsrlc.demo`). Every number below is measured on the",
        "held-out test block, which no training step reads. Timings: "
        + ", ".join(f"{k} {v}" for k, v in metrics["timings_s"].items())
        + ".",
        "",
        *_maps_table(metrics, legend, years),
        "## Super-resolution (Landsat STM 30 m -> 10 m, latest period, held-out block)",
        "",
        *_sr_table(metrics["sr_block"]),
        "",
        "The SR rasters the demo maps from, scored on the whole held-out block by",
        "`python -m bsrlc.evaluation.sr`'s `score_rasters` (PSNR and SSIM with a reflectance range",
        "of 0.5). Harmonised bicubic: bicubic with a gain and offset per band fitted to the",
        "Sentinel-2 block itself (an upper bound of what a linear sensor correction gives).",
        "consistency: mean |3x3 mean of the estimate - Landsat| (the HR's own value is the floor:",
        "the sensors differ); synthesis: the detail added over bicubic; improvement / omission /",
        "hallucination: opensr-test's shares of the pixels that differ; spectrum error: the",
        "log10 power ratio to Sentinel-2 above 1/4 cycle per pixel (0 = as sharp as the HR).",
        "",
        "On the training run's test patches (tiles of `data.patch_size`, each scored alone;",
        "the harmonised baseline's gains fitted on training patches):",
        "",
        "| method | PSNR (dB) | SSIM | SAM (deg) | ERGAS |",
        "|---|---|---|---|---|",
    ]
    for name in ("model", "bicubic", "bicubic_harmonised"):
        m = sr[name]
        lines.append(
            f"| {name} | {m['psnr']:.2f} | {m['ssim']:.3f} | {m['sam']:.2f} | {m['ergas']:.2f} |"
        )
    gain = sr["model"]["psnr"] - sr["bicubic_harmonised"]["psnr"]
    lines += [
        "",
        f"PSNR gain over bicubic + per-band linear harmonisation: {gain:+.2f} dB. ",
        "",
        "![SR panel](figures/sr_panel.png)",
        "",
        "Crops chosen by land cover (a road, a dense suburb, industrial roofs, the railway),",
        "in the held-out block where it has them (row labels say where); every panel at native",
        "resolution (integer zoom, the Landsat panel shows its 30 m pixels), the four panels of",
        "a row stretched alike (2-98 % of the Sentinel-2 crop per band).",
        "",
        "## Classification on the held-out block",
        "",
        "| input | period | OA | macro F1 | kappa | test points |",
        "|---|---|---|---|---|---|",
    ]
    for period, per in classify_metrics.items():
        year = metrics["periods"][period]
        for name, v in per.items():
            lines.append(
                f"| {name} | {period} ({year}) | {v['oa']:.3f} | {v['macro_f1']:.3f} | "
                f"{v['kappa']:.3f} | {v['n']} |"
            )
    lines += [
        "",
        "The Landsat-based classifiers are trained on the points of every period (through",
        "that period's input), the Sentinel-2 one on the latest period's (no Sentinel-2",
        "earlier: `s2_10m` has no early row). Scores of the reported maps at the test points.",
        "",
        "![held-out block](figures/held_out_block.png)",
        "",
        "## Area-adjusted accuracy of the latest SR map (held-out block)",
        "",
        "Stratified random sample by mapped class, reference labels from the truth map,",
        "estimators of Olofsson et al. (2014); areas in hectares with 95% confidence intervals.",
        "",
        area_acc.to_markdown("ha"),
        "## Maps over time (SR classifier)",
        "",
        "| period | " + " | ".join(legend.names) + " |",
        "|---|" + "---|" * len(legend),
    ]
    for y in years:
        mapped = " | ".join(f"{areas[y][n]:,.1f} ({truth_areas[y][n]:,.1f})" for n in legend.names)
        lines.append(f"| {y} | {mapped} |")
    lines += [
        "",
        "Mapped area in ha (truth in brackets). Maps: "
        f"`maps/{'hmm/' if HMM_MAPS else ''}sr_10m_YYYY.tif`; change between the",
        f"first and last period: `maps/change_{years[0]}_{years[-1]}.tif`; "
        "animation: `change.gif`.",
        "",
        "![class areas](figures/class_areas.png)",
        "",
        "![maps vs truth](figures/maps_vs_truth.png)",
        "",
    ]
    return "\n".join(lines)


def _sr_table(block: dict[str, Any]) -> list[str]:
    """The report's SR table (rows of :data:`SR_BLOCK_ROWS`, columns of :data:`SR_BLOCK_KEYS`)."""
    rows = block["rows"]
    labels = dict(SR_BLOCK_ROWS)
    if block["adversarial_phase"]:
        labels["sr_gan"] = "SR after the GAN phase"
        labels["sr"] = f"SR (the demo's model: {block['model_checkpoint']}, best val PSNR)"
    else:
        labels["sr"] = "SR after the L1 phase (the demo's model; no GAN phase)"
    lines = [
        "| method | " + " | ".join(h for _, h, _ in SR_BLOCK_KEYS) + " |",
        "|---|" + "---|" * len(SR_BLOCK_KEYS),
    ]
    for name in ("bicubic", "bicubic_harmonised", "sr_pretrain", "sr_gan", "sr", "hr"):
        if name not in rows:
            continue
        cells = []
        for key, _, fmt in SR_BLOCK_KEYS:
            value = rows[name].get(key)
            cells.append("–" if value is None else format(value, fmt))
        lines.append(f"| {labels[name]} | " + " | ".join(cells) + " |")
    if not block["adversarial_phase"]:
        lines += [
            "",
            "sr_demo trains no adversarial phase: in the SR ablation (`python "
            "benchmarks/sr_ablation.py`, README) it did not earn its place.",
        ]
    return lines


def _map(
    model: Any,
    raster: Path,
    dst: Path,
    legend: Any,
    progress: bool,
    priors: str = "em",
    decision: str = "argmax",
    probabilities: bool = True,
) -> Path:
    """Map a raster as ``predict.py`` does: calibrated, prior-corrected (probabilities for HMM)."""
    from bsrlc.inference.dense import classify_raster

    return classify_raster(
        model.net,
        raster,
        dst,
        model.bands,
        model.mean,
        model.std,
        legend,
        int(model.meta["halo"]),
        progress=progress,
        probabilities=probabilities,
        temperature=float(model.meta.get("temperature") or 1.0),
        train_priors=model.meta.get("train_priors"),
        priors=priors,
        decision=decision,
    )


# Remedies for maps that are wrong by area, added one at a time (see the report's ablation):
# (label, classifier, mapping options; or the demo's own SR maps: "independent" periods, or
# "smoothed" by the HMM).
ABLATION: list[tuple[str, str, dict[str, str] | str]] = [
    ("seed: latest-period points, no correction", "sr_10m_latest_only", {"priors": "none"}),
    ("+ points of every period", "sr_10m", {"priors": "none"}),
    ("+ calibrated EM class-prior correction", "sr_10m", "independent"),
    ("+ area-matched decision", "sr_10m", {"priors": "em", "decision": "area"}),
    ("EM correction + HMM over periods", "sr_10m", "smoothed"),
]


def _validation_points(
    experiment: str, overrides: list[str], run_dir: Path, features: dict[str, Path]
) -> dict[str, np.ndarray]:
    """The validation points of a trained multi-period classifier: pixel, period, class index."""
    from hydra.utils import instantiate

    cfg = _compose(experiment, overrides, run_dir)
    dm = instantiate(cfg.data)
    dm.setup("split")  # the training run's split (same config and seed), no statistics
    period_of = {str(p.resolve()): i for i, p in enumerate(features.values())}
    rows, cols, period, labels = [], [], [], []
    for raster, r, c, lab in dm.split_table["val"]:
        rows.append(r)
        cols.append(c)
        period.append(np.full(len(r), period_of[str(Path(raster).resolve())]))
        labels.append(lab)
    return {
        k: np.concatenate(v)
        for k, v in zip(
            ("rows", "cols", "period", "labels"), (rows, cols, period, labels), strict=True
        )
    }


def _area_weights(period: np.ndarray, labels: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """Weights that turn balanced points into an area sample: class share / class count.

    The shares are each period's EM estimates (the probability rasters' priors), not the truth.
    """
    weights = np.zeros(labels.size)
    for t in np.unique(period):
        for c in np.unique(labels[period == t]):
            sel = (period == t) & (labels == c)
            weights[sel] = priors[t, c] / sel.sum()
    return weights


def _select_hmm(probas: list[Path], val: dict[str, np.ndarray], legend: Any) -> dict[str, Any]:
    """HMM parameters chosen on validation points, flicker counted on a pixel sample."""
    from bsrlc.inference.temporal import select_parameters

    stack, priors = [], []
    for p in probas:
        with rasterio.open(p) as src:
            stack.append(src.read(list(range(1, len(legend) + 1))).astype(np.float32) / 254.0)
            priors.append(json.loads(src.tags()["PRIORS"]))
    proba = np.stack(stack)  # (T, K, H, W)
    proba /= np.maximum(proba.sum(1, keepdims=True), 1e-9)
    rng = np.random.default_rng(0)
    h, w = proba.shape[2:]
    pick = rng.choice(h * w, size=min(50_000, h * w), replace=False)
    flat = proba.reshape(*proba.shape[:2], -1)
    out = select_parameters(
        proba[:, :, val["rows"], val["cols"]],
        val["period"],
        val["labels"],
        legend.names,
        priors,
        flicker_sample=flat[:, :, pick],
        point_weights=_area_weights(val["period"], val["labels"], np.asarray(priors)),
        area_tolerance=HMM_AREA_TOLERANCE,
    )
    log.info(
        "HMM chosen on validation points: stay %s, evidence weight %s",
        out["stay"],
        out["evidence_weight"],
    )
    return out


def _ablation(
    models: dict[str, Any],
    features: dict[str, Path],
    truths: dict[str, np.ndarray],
    world: DemoWorld,
    legend: Any,
    out: Path,
    demo_maps: dict[str, dict[str, Path]],
    hmm: dict[str, Any],
    progress: bool,
) -> dict[str, Any]:
    """Area accuracy of the SR CNN's maps of every period under each remedy of ``ABLATION``.

    Rows that are the demo's own SR maps (``demo_maps["independent"|"smoothed"]``) reuse them;
    ``hmm`` is the HMM setting chosen for them on the validation points.
    """
    from bsrlc.evaluation import maps as M

    years = list(features)
    r0, c0, r1, c1 = world.test_block_10m
    site = world.construction_site()
    open_code = legend.codes[legend.names.index("artificial open spaces")]
    rows = []
    for k, (label, model_name, mapping) in enumerate(ABLATION):
        codes: dict[str, np.ndarray]
        if isinstance(mapping, str):
            codes = {y: M.read_map(p)[0] for y, p in demo_maps[mapping].items()}
        elif model_name == "sr_10m":
            # The demo's own classifier: other decisions on the logits its maps already came
            # from, read back from their probability rasters instead of classifying again.
            train = models[model_name].meta.get("train_priors")
            codes = {
                y: _decide_from_probabilities(
                    p.with_name(p.stem + "_proba.tif"), legend, train, **mapping
                )
                for y, p in demo_maps["independent"].items()
            }
        else:
            folder = out / f"v{k}"
            folder.mkdir(parents=True, exist_ok=True)
            paths = {y: folder / f"sr_10m_{y}.tif" for y in years}
            for y, raster in features.items():
                if not paths[y].exists():
                    _map(
                        models[model_name],
                        raster,
                        paths[y],
                        legend,
                        progress,
                        probabilities=False,
                        **mapping,
                    )
            codes = {y: M.read_map(p)[0] for y, p in paths.items()}
        row: dict[str, Any] = {"remedy": label, "area_oa": {}, "area_ratio": {}}
        for y in years:
            held = M.wall_to_wall(codes[y][r0:r1, c0:c1], truths[y][r0:r1, c0:c1], legend)
            row["area_oa"][y] = held["area_oa"]
            row["area_ratio"][y] = held["area_ratio"]
        row["world_area_ratio"] = M.wall_to_wall(codes[years[-1]], truths[years[-1]], legend)[
            "area_ratio"
        ]
        row["flicker"] = M.flicker([codes[y] for y in years])
        if site is not None:
            period, (sr, sc) = site
            is_open = truths[period][sr, sc] == open_code
            row["construction_site"] = float((codes[period][sr, sc][is_open] == open_code).mean())
        rows.append(row)
    return {"rows": rows, "hmm": {k: v for k, v in hmm.items() if k != "candidates"}}


def _decide_from_probabilities(
    proba_path: Path,
    legend: Any,
    train_priors: list[float] | None,
    priors: str = "em",
    decision: str = "argmax",
) -> np.ndarray:
    """A class map under another prior/decision option, from an EM-corrected probability raster.

    The raster holds ``softmax(z / T + log(em / train))`` per class (``PRIORS`` tag: ``em``),
    so ``log p - log(em / train)`` is the calibrated logit ``z / T`` up to a constant per pixel:
    ``priors="none"`` is its argmax; ``decision="area"`` shifts the EM-corrected logits until the
    class shares equal the EM priors, as :func:`bsrlc.inference.dense.correct_priors` does on a
    pixel sample. Probabilities are stored in steps of 1/254, so a near-tie can fall either way.

    Returns:
        (rows, cols) class codes, 0 where the raster is nodata.
    """
    from bsrlc.inference.priors import area_matching_offset, prior_offset

    k = len(legend)
    with rasterio.open(proba_path) as src:
        p = src.read(list(range(1, k + 1))).astype(np.float64)
        em = np.asarray(json.loads(src.tags()["PRIORS"]), np.float64)
        valid = src.read(k + 1) != 255
    train = np.asarray(train_priors if train_priors is not None else [1.0 / k] * k, np.float64)
    z = np.log(np.maximum(p, 0.5)) - prior_offset(train, em)[:, None, None]  # 0 -> half a step
    if priors == "em":
        z = z + prior_offset(train, em)[:, None, None]
    elif priors != "none":
        raise ValueError(f"priors={priors}: the ablation derives em or none")
    if decision == "area":
        z = z + np.asarray(area_matching_offset(z[:, valid].T, em))[:, None, None]
    codes = np.asarray(legend.code_of(z.argmax(0)), np.uint8)
    codes[~valid] = 0
    return codes


def _num(value: float) -> str:
    """Two decimals; a dash for an undefined ratio (a class neither mapped nor present)."""
    return "–" if not np.isfinite(value) else f"{value:.2f}"


def _maps_table(metrics: dict[str, Any], legend: Any, years: list[str]) -> list[str]:
    """The report's lead table: each whole map against the truth, by area."""
    short = {n: n.split()[0] for n in legend.names}
    head = " | ".join(f"{short[n]} UA / PA / ratio" for n in legend.names)
    lines = [
        "## Maps by area (each map against the truth, wall to wall)",
        "",
        "OA by area over the held-out block and the whole world; per class, in the held-out",
        "block: user's accuracy / producer's accuracy / mapped-to-true area ratio, then the",
        "area ratio over the whole world. This, not the point sample below, judges the map.",
        "",
        f"| period | input | OA block | OA world | {head} | world ratio "
        + " / ".join(short[n] for n in legend.names)
        + " |",
        "|---|---|---|---|" + "---|" * len(legend) + "---|",
    ]
    for y in reversed(years):
        for name, m in metrics["maps"].get(y, {}).items():
            cells = " | ".join(
                f"{_num(m['users_accuracy'][n])} / {_num(m['producers_accuracy'][n])} / "
                f"{_num(m['area_ratio'][n])}"
                for n in legend.names
            )
            world = " / ".join(f"{m['world_area_ratio'][n]:.2f}" for n in legend.names)
            lines.append(
                f"| {y} | {name} | {m['area_oa']:.3f} | {m['world_area_oa']:.3f} | {cells} | "
                f"{world} |"
            )
    flick = ", ".join(f"{k} {v:.4f}" for k, v in metrics["flicker"].items())
    lines += ["", f"Flicker (share of pixels that change and change back): {flick}."]
    temporal = metrics.get("temporal") or {}
    if temporal:
        chosen = "; ".join(
            f"{k}: stay {v['stay']}, evidence weight {v['evidence_weight']}"
            for k, v in temporal.items()
        )
        if "flicker_independent" in metrics:
            lines.append(
                "Each period is mapped on its own (calibrated, EM class-prior correction), then "
                "the periods of each input are made consistent by the HMM (maps in `maps/hmm/`; "
                f"parameters chosen on each classifier's validation points, among the settings "
                f"that change no class's share in any period by more than "
                f"{HMM_AREA_TOLERANCE:.2f} in log ratio: {chosen}). Flicker of the independent "
                "maps in `maps/`: "
                + ", ".join(f"{k} {v:.4f}" for k, v in metrics["flicker_independent"].items())
                + "."
            )
        else:
            lines.append(
                "Maps are made period by period (calibrated, EM class-prior correction). The "
                f"HMM over periods (parameters chosen on validation points: {chosen}) is in "
                "`maps/hmm/`; its flicker: "
                + ", ".join(f"{k} {v:.4f}" for k, v in metrics["flicker_hmm"].items())
                + "."
            )
    site = metrics.get("construction_site") or {}
    if site:
        lines.append(
            f"Construction site ({site['period']}): {site['share_artificial_open']:.3f} of its "
            "artificial open space mapped as such by the SR map."
        )
    ab = metrics.get("ablation") or {}
    if ab:
        lines += [
            "",
            "### What each remedy gains (SR CNN, held-out block, by area)",
            "",
            "Each row adds one remedy to the one above (the HMM row smooths the EM-corrected",
            "probabilities of every period; staying probability "
            f"{ab['hmm']['stay']} and evidence weight {ab['hmm']['evidence_weight']} chosen on",
            "the classifier's validation points, weighted to the EM area shares: the smoothest",
            "setting within one standard error of the most accurate among those that keep every",
            "period's class shares). Area ratio = mapped / true",
            "area in the latest period.",
            "",
            "| remedy | "
            + " | ".join(f"OA {y}" for y in years)
            + " | area ratio "
            + " / ".join(short[n] for n in legend.names)
            + " | construction site open | flicker |",
            "|---|" + "---|" * len(years) + "---|---|---|",
        ]
        for row in ab["rows"]:
            ratio = " / ".join(f"{row['area_ratio'][years[-1]][n]:.2f}" for n in legend.names)
            lines.append(
                f"| {row['remedy']} | "
                + " | ".join(f"{row['area_oa'][y]:.3f}" for y in years)
                + f" | {ratio} | {row.get('construction_site', float('nan')):.3f} | "
                f"{row['flicker']:.4f} |"
            )
    return [*lines, ""]


DEMO_THREADS = 2
"""torch intra-op threads of ``python -m bsrlc.demo`` (the 2-core machine its tables come from)."""

DEMO_CPU_ISA = "avx2"
"""The instruction set ``python -m bsrlc.demo`` pins torch, oneDNN and MKL to."""


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    """Run the demo workflow from the command line.

    Args:
        argv: command-line arguments (default: ``sys.argv``).
    """
    ap = argparse.ArgumentParser(prog="python -m bsrlc.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="demo", choices=["demo", "tiny"])
    ap.add_argument("--data-dir", default="data", type=Path)
    ap.add_argument("--out-dir", default=None, type=Path, help="default: outputs/<size>")
    ap.add_argument("--force", action="store_true", help="redo every step")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--stage", default="report", help=f"stop after this stage: {', '.join(STAGES)}")
    ap.add_argument("options", nargs="*", help="stage=NAME (the same as --stage NAME)")
    args = ap.parse_args(argv)
    stage = args.stage
    for option in args.options:
        key, _, value = option.partition("=")
        if key != "stage" or not value:
            raise ConfigError(f"{option}: unknown option; use stage=NAME ({', '.join(STAGES)})")
        stage = value
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    out = args.out_dir or Path("outputs") / args.size
    run(
        args.size,
        args.data_dir,
        out,
        force=args.force,
        progress=not args.no_progress,
        stage=stage,
        pin_numerics=True,
    )


if __name__ == "__main__":
    main()
