"""Prediction over rasters and periods: super-resolve, classify, summarise change.

Used by ``predict.py`` (``conf/predict/predict.yaml``). Models come from a checkpoint or a bundle
and run with PyTorch or ONNX Runtime. Each raster is a job of independent units (tiles) run by
Lightning's ``Trainer.predict`` (``trainer=ddp`` spreads them over GPUs and nodes) and saved as
they finish (:mod:`bsrlc.inference.jobs`); outputs are assembled and published atomically when
complete. Outputs that exist are skipped unless ``overwrite=true``, and a killed run resumes
from its finished tiles.

Each input raster becomes reflectance as in training (:mod:`bsrlc.data.reflectance`: its GDAL
scale/offset tags, else 1 for float and 1e-4 for integer data; ``input_scale=`` overrides it),
so a model trained on int16 x 1e-4 maps a float reflectance copy of the same data alike; values
that are no reflectance after scaling stop the run in one line naming the file
(:func:`bsrlc.inference.checks.input_scaling`).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bsrlc.config import plain
from bsrlc.console import warnings_to_stderr
from bsrlc.data.legend import Legend
from bsrlc.errors import ConfigError, InputError
from bsrlc.inference.jobs import (
    RasterJob,
    model_digest,
    outputs_exist,
    run_lightning,
    source_fingerprint,
)
from bsrlc.inference.loading import LoadedModel, load_checkpoint
from bsrlc.raster import band_indices, group_name, raster_info, raster_members, stack_rasters

log = logging.getLogger("bsrlc.predict")


class OnnxModule(nn.Module):
    """An ONNX Runtime session behind the nn.Module interface the tilers use.

    The session is created in each process that runs it (sessions cannot be pickled to the
    processes of a spawned DDP run).

    Args:
        make_session: creates the inference session.
        dense: expose ``forward_dense`` (classifiers).
        receptive_field: the network's receptive field (SR overlap).
    """

    def __init__(
        self, make_session: Callable[[], Any], dense: bool, receptive_field: int | None
    ) -> None:
        super().__init__()
        self.make_session = make_session
        self.session: Any = None
        self.receptive_field = receptive_field
        self._dense = dense

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "session": None}

    def forward(self, x: Tensor) -> Tensor:
        """Run the session.

        Args:
            x: the input batch.

        Returns:
            The output batch.
        """
        if self.session is None:
            self.session = self.make_session()
        out = self.session.run(None, {"input": x.detach().cpu().numpy().astype(np.float32)})[0]
        return torch.from_numpy(out).to(x.device)

    def forward_dense(self, x: Tensor) -> Tensor:
        """Dense classification (the bundle's network is already dense).

        Args:
            x: (B, C, H + 2 halo, W + 2 halo).

        Returns:
            (B, K, H, W).
        """
        return self.forward(x)


def load_model(path: str | Path, backend: str = "torch", device: str = "cpu") -> LoadedModel:
    """Load a checkpoint (``.ckpt``) or a bundle (folder or ``.zip``).

    Args:
        path: the model.
        backend: ``torch`` or ``onnxruntime`` (bundles only).
        device: torch device.

    Returns:
        The model with its metadata.

    Raises:
        ConfigError: for an unknown backend or onnxruntime with a checkpoint.
    """
    if backend not in {"torch", "onnxruntime"}:
        raise ConfigError(f"backend={backend}: use torch or onnxruntime")
    path = Path(path)
    if path.suffix == ".ckpt":
        if backend != "torch":
            raise ConfigError(f"{path}: onnxruntime needs a bundle; export one with bsrlc.export")
        return load_checkpoint(path, device)
    from bsrlc.export import load_bundle

    if not path.exists():
        raise InputError(f"{path}: model not found; give model= a .ckpt or a bundle")
    bundle = load_bundle(path)
    model = bundle.torch_model(device)
    if backend == "onnxruntime":
        model.net = OnnxModule(  # type: ignore[assignment]
            bundle.onnx_session,
            dense=model.task == "classify",
            receptive_field=bundle.metadata.get("receptive_field"),
        )
    return model


@dataclass
class PeriodInput:
    """One raster to predict.

    Attributes:
        path: the raster (for a raster group, the VRT that stacks its files).
        label: its period label (a year found in the name, else the file stem).
        name: what its outputs are named after: the file stem, or for a raster group its
            files' stems joined by ``+`` (:func:`~bsrlc.raster.group_name`).
    """

    path: Path
    label: str
    name: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            self.name = self.path.stem


PERIOD_PATTERN = r"(?<![0-9A-Za-z])((?:19|20)\d\d(?:_(?:19|20)\d\d)?)(?![0-9A-Za-z])"
"""A year (or ``YYYY_YYYY`` window) standing alone between separators in a file name."""


def period_label(path: Path, pattern: str | None = None) -> str:
    """The period label of an input raster, from its file name.

    Args:
        path: the raster.
        pattern: a regular expression whose first group is the label (default
            :data:`PERIOD_PATTERN`: the last year, or ``YYYY_YYYY`` window, between separators,
            between 1972 (Landsat 1) and next year; ``tile_2048`` is no year).

    Returns:
        The label, or the file stem when the name holds none.

    Raises:
        ConfigError: for an invalid pattern or one without a group.
    """
    import datetime as dt

    try:
        regex = re.compile(pattern or PERIOD_PATTERN)
    except re.error as err:
        raise ConfigError(f"period_pattern={pattern!r}: not a regular expression ({err})") from None
    if regex.groups < 1:
        raise ConfigError(f"period_pattern={pattern!r}: needs a group (...) around the label")
    found = [m.group(1) for m in regex.finditer(path.stem)]
    if pattern is None:
        last = dt.date.today().year + 1
        found = [f for f in found if all(1972 <= int(y) <= last for y in f.split("_"))]
    return found[-1] if found else path.stem


def find_inputs(
    inputs: str | Path | Sequence[str | Path | Sequence[str | Path]],
    pattern: str | None = None,
    vrt_dir: str | Path | None = None,
) -> list[PeriodInput]:
    """Expand a raster, a folder of rasters or a list into labelled inputs, sorted by label.

    A raster may be a raster group: files on one grid whose bands are found by description
    across them, ``a.tif+b.tif`` (or a nested list). It is stacked into a VRT in ``vrt_dir``
    (:func:`~bsrlc.raster.stack_rasters`), named and labelled after its files' stems joined by
    ``+``.

    Args:
        inputs: what the user gave as ``input=``.
        pattern: the period pattern (see :func:`period_label`).
        vrt_dir: where raster groups are stacked (default
            :func:`~bsrlc.raster.default_vrt_dir`).

    Returns:
        The inputs.

    Raises:
        InputError: if nothing is found, two inputs get the same period label, or a raster
            group is not usable (see :func:`~bsrlc.raster.stack_rasters`).
    """
    out: list[PeriodInput] = []
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    for item in items:
        members = raster_members(item)
        if len(members) > 1:
            name = group_name(members)
            label = period_label(Path(f"{name}.vrt"), pattern)
            out.append(PeriodInput(stack_rasters(members, vrt_dir), label, name))
            continue
        p = members[0]
        if p.is_dir():
            out.extend(PeriodInput(f, period_label(f, pattern)) for f in sorted(p.glob("*.tif")))
        elif p.exists():
            out.append(PeriodInput(p, period_label(p, pattern)))
        else:
            raise InputError(f"{p}: input raster or folder not found; fix input=")
    if not out:
        raise InputError(f"{inputs}: no .tif raster found; fix input=")
    labels = [i.label for i in out]
    twice = sorted({lab for lab in labels if labels.count(lab) > 1})
    if twice:
        raise InputError(
            f"{inputs}: several inputs get the period label(s) {twice}; give one raster per "
            "period or set period_pattern= to a regular expression whose group is the label"
        )
    return sorted(out, key=lambda i: i.label)


def check_bands(model: LoadedModel, raster: Path, what: str) -> None:
    """Fail in one line if the raster lacks a band the model needs.

    Args:
        model: the model.
        raster: the input raster.
        what: the model's role, for the message.

    Raises:
        InputError: naming the missing bands.
    """
    info = raster_info(raster)
    try:
        band_indices(info, model.bands)
    except InputError as err:
        raise InputError(f"{err} (the {what} model needs {len(model.bands)} bands)") from None


def predict(cfg: Any) -> dict[str, Any]:
    """Run the configured pipeline over every input.

    Args:
        cfg: the composed ``conf/predict.yaml``.

    Returns:
        ``{"sr": {label: path}, "maps": {label: path}, "summary": {...}}``.
    """
    from bsrlc.data.reflectance import Scaling
    from bsrlc.inference.checks import prepare_input
    from bsrlc.inference.dense import ClassifyJob, correct_priors
    from bsrlc.inference.sr import OUT_SCALE, SRJob, run_sr_job

    warnings_to_stderr()
    pipeline = str(cfg.pipeline)
    if pipeline not in {"sr", "classify", "sr+classify"}:
        raise ConfigError(f"pipeline={pipeline}: use sr, classify or sr+classify")
    out_dir = Path(cfg.out_dir)
    inputs = find_inputs(
        cfg.input if isinstance(cfg.input, str) else plain(cfg.input),
        cfg.get("period_pattern"),
        vrt_dir=out_dir / ".inputs",
    )
    device = str(cfg.device)
    override = input_scale_override(cfg.get("input_scale"))
    sr_model = cls_model = None
    if pipeline == "sr":
        sr_model = load_model(cfg.model, cfg.backend, device)
    elif pipeline == "classify":
        cls_model = load_model(cfg.model, cfg.backend, device)
    else:
        if not cfg.get("sr_model"):
            raise ConfigError("pipeline=sr+classify needs sr_model= (the SR checkpoint or bundle)")
        sr_model = load_model(cfg.sr_model, cfg.backend, device)
        cls_model = load_model(cfg.model, cfg.backend, device)
    for m, role in ((sr_model, "sr"), (cls_model, "classify")):
        if m is not None and m.task != role:
            raise ConfigError(f"the {role} model is a {m.task} model; check model=/sr_model=")
    trainer_kwargs = trainer_arguments(cfg)
    overwrite = bool(cfg.overwrite)
    progress = bool(cfg.progress)
    results: dict[str, Any] = {"sr": {}, "maps": {}, "priors": {}}
    rank_zero = True
    temporal = _temporal_mode(cfg) == "hmm" and cls_model is not None and len(inputs) > 1
    legend = Legend.from_config(cls_model.meta["legend"]) if cls_model is not None else None
    class_jobs: list[Any] = []
    # which weights computed the tiles of a resumable job (hashed once, not per period)
    sr_id = model_digest(sr_model.net, sr_model.meta) if sr_model is not None else ""
    cls_id = model_digest(cls_model.net, cls_model.meta) if cls_model is not None else ""
    for item in inputs:
        src = item.path
        if sr_model is not None:
            check_bands(sr_model, src, "SR")
            scaling = prepare_input(src, sr_model, "SR", override)[0]  # one for the raster
            job = SRJob(
                src,
                out_dir / f"{item.name}_sr.tif",
                sr_model.bands,
                int(sr_model.meta["scale"]),
                sr_model.mean,
                sr_model.std,
                input_scale=scaling.scale,
                input_offset=scaling.offset,
                unit=int(cfg.sr_unit),
                tile=int(cfg.sr_tile),
                model_id=sr_id,
            )
            _stamp(job, src, sr_id)
            if not _skip(job, overwrite):  # the demo and the tests run SR the same way
                rank_zero &= (
                    run_sr_job(
                        job,
                        sr_model.net,
                        trainer_kwargs=trainer_kwargs,
                        overwrite=overwrite,
                        progress=progress,
                    )
                    is not None
                )
            src = results["sr"][item.label] = job.outputs[0].path
        if cls_model is not None:
            check_bands(cls_model, src, "classification")
            if sr_model is None:  # bands may differ in scaling, as in training
                scalings = prepare_input(src, cls_model, "classification", override, True)
            else:  # an SR output: on the grid the SR model makes, int16 reflectance x 10000
                scalings = [Scaling(1 / OUT_SCALE, 0.0, "bsrlc's SR output")]
            name = f"{item.name}_map" + ("_independent" if temporal else "")
            cjob = ClassifyJob(
                src,
                out_dir / f"{name}.tif",
                cls_model.bands,
                cls_model.mean,
                cls_model.std,
                legend,
                int(cls_model.meta["halo"]),
                tile=int(cfg.tile),
                probabilities=bool(cfg.probabilities) or temporal,
                model_id=cls_id,
                temperature=float(cls_model.meta.get("temperature") or 1.0),
                input_scale=[sc.scale for sc in scalings],
                input_offset=[sc.offset for sc in scalings],
            )
            _stamp(cjob, src, cls_id)
            if not (outputs_exist(cjob) and not overwrite):
                correction = correct_priors(
                    cjob,
                    cls_model.net,
                    cls_model.meta.get("train_priors"),
                    plain(cfg.get("priors", "em")),
                    str(cfg.get("decision", "argmax")),
                    device,
                )
                log.info(
                    "%s: class priors %s",
                    item.label,
                    ", ".join(f"{k} {v:.3f}" for k, v in correction["priors"].items()),
                )
                results["priors"][item.label] = correction["priors"]
            rank_zero &= _run(cjob, cls_model, trainer_kwargs, overwrite, progress)
            results["maps"][item.label] = cjob.outputs[0].path
            class_jobs.append(cjob)
    if temporal and rank_zero and len(class_jobs) > 1:
        results["independent_maps"] = dict(results["maps"])
        results["maps"] = smooth_periods(class_jobs, list(results["maps"]), legend, cfg, out_dir)
    if not rank_zero:  # the other ranks of a ddp run: rank 0 summarises
        return results
    if cls_model is not None and results["maps"]:
        results["summary"] = summarise(
            results["maps"],
            Legend.from_config(cls_model.meta["legend"]),
            out_dir,
            cfg.get("change"),
        )
    return results


def input_scale_override(value: Any) -> float | None:
    """``input_scale=`` of the command line as a number (None: from each raster).

    Args:
        value: the configured value.

    Returns:
        The scale, or None.

    Raises:
        ConfigError: for anything but a positive number or null.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in {"", "null"}):
        return None
    try:
        scale = float(value)
    except (TypeError, ValueError):
        scale = float("nan")
    if not np.isfinite(scale) or scale <= 0 or isinstance(value, bool):
        raise ConfigError(
            f"input_scale={value}: give the reflectance of one stored unit (1e-4 for "
            "reflectance x 10000, 1 for reflectance) or null (from each raster)"
        )
    return scale


def _temporal_mode(cfg: Any) -> str:
    mode = str((cfg.get("temporal") or {}).get("mode", "none"))
    if mode not in {"none", "hmm"}:
        raise ConfigError(f"temporal.mode={mode}: use none or hmm")
    return mode


def smooth_periods(
    jobs: Sequence[Any], labels: Sequence[str], legend: Legend, cfg: Any, out_dir: Path
) -> dict[str, Path]:
    """Make the periods' class maps consistent over time (:mod:`bsrlc.inference.temporal`).

    Args:
        jobs: the periods' classification jobs (with probabilities), in time order.
        labels: their period labels.
        legend: the legend.
        cfg: the predict config (``temporal.stay``, ``temporal.transitions``, ``tile``,
            ``overwrite``).
        out_dir: where the maps go (``<stem>_map.tif``, the independent maps stay as
            ``<stem>_map_independent.tif``).

    Returns:
        Period label -> smoothed class map.
    """
    from bsrlc.inference.temporal import smooth_maps

    t = cfg.temporal
    dst = [out_dir / j.dst_path.name.replace("_map_independent", "_map") for j in jobs]
    written = smooth_maps(
        [j.outputs[1].path for j in jobs],
        dst,
        legend,
        float(t.get("stay", 0.9)),
        plain(t.get("transitions")) or None,
        tile=int(cfg.tile),
        overwrite=bool(cfg.overwrite),
        evidence_weight=float(t.get("evidence_weight", 1.0)),
    )
    return dict(zip(labels, written, strict=True))


def trainer_arguments(cfg: Any) -> dict[str, Any]:
    """``Trainer`` arguments of ``cfg.trainer`` (``trainer=local|ddp_sim|ddp``).

    Args:
        cfg: the predict config.

    Returns:
        Keyword arguments for :class:`lightning.pytorch.Trainer`.
    """
    from omegaconf import OmegaConf

    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True) if cfg.get("trainer") else {}
    kwargs = dict(kwargs or {})  # type: ignore[arg-type]
    kwargs.setdefault("accelerator", "gpu" if str(cfg.device).startswith("cuda") else "cpu")
    kwargs.setdefault("devices", 1)
    return kwargs


def _run(
    job: RasterJob,
    model: LoadedModel,
    trainer_kwargs: dict[str, Any],
    overwrite: bool,
    progress: bool,
) -> bool:
    """Run a job unless its outputs exist (and ``overwrite`` is false).

    Returns:
        Whether this process is global rank 0 (the one that assembled the outputs).
    """
    if _skip(job, overwrite):
        return True
    return run_lightning(job, model.net, trainer_kwargs, overwrite, progress) is not None


INPUTS_TAG = "INPUTS_DIGEST"
"""Output tag: a digest of the input's content and the model's weights that made the output."""


def _stamp(job: RasterJob, src: Path, model_id: str) -> None:
    """Tag a job's outputs with what they are computed from (:data:`INPUTS_TAG`).

    By content, not path or mtime: an input rewritten with its old mtime (``cp -p``) after a
    killed run would otherwise have its existing outputs kept. The same input and model give
    the same tag wherever they lie.
    """
    fp = source_fingerprint(src)
    digest = hashlib.blake2b(digest_size=16)
    for part in (type(job).__name__, str(fp["size"]), str(fp["blake2b"]), model_id):
        digest.update(part.encode() + b"\0")
    for spec in job.outputs:
        spec.tags[INPUTS_TAG] = digest.hexdigest()


def _skip(job: RasterJob, overwrite: bool) -> bool:
    """Whether a job's outputs exist and are kept (``overwrite`` false); logged.

    Raises:
        InputError: if an existing output was made from other input content or another model
            (its :data:`INPUTS_TAG` differs; outputs without the tag are kept as before).
    """
    if outputs_exist(job) and not overwrite:
        import rasterio

        path = job.outputs[0].path
        want = job.outputs[0].tags.get(INPUTS_TAG)
        with rasterio.open(path) as src:
            have = src.tags().get(INPUTS_TAG)
        if want and have and have != want:
            raise InputError(
                f"{path}: exists, made from other input content or another model (the input "
                "was rewritten since, or model= changed); set overwrite=true to recompute it, or "
                "choose another out_dir"
            )
        log.info("%s exists; skipped (overwrite=true recomputes it)", path)
        return True
    return False


def summarise(
    maps: dict[str, Path], legend: Legend, out_dir: Path, change: Sequence[str] | None = None
) -> dict[str, Any]:
    """Class areas per period (CSV, chart) and, for several periods, a change map and a GIF.

    A single map gets ``class_areas.csv`` (one row) and its chart only.

    Args:
        maps: period label -> class map (at least one).
        legend: the legend.
        out_dir: where to write.
        change: the two periods to compare (default: first and last).

    Returns:
        Paths of what was written and the areas; ``change`` and ``gif`` are None for one map.

    Raises:
        ConfigError: if ``change`` names periods that are not among the maps, or is given for
            a single map.
    """
    import rasterio

    from bsrlc.evaluation import maps as M
    from bsrlc.raster import category_names, write_cog

    with rasterio.open(next(iter(maps.values()))) as src:
        pixel_ha = abs(src.transform.a * src.transform.e) / 10_000
        crs, transform = src.crs, src.transform
    areas = M.class_areas(maps, legend, pixel_ha)
    csv = out_dir / "class_areas.csv"
    with open(csv, "w") as f:
        f.write("period," + ",".join(legend.names) + "\n")
        for label, per in areas.items():
            f.write(label + "," + ",".join(f"{per[n]:.2f}" for n in legend.names) + "\n")
    chart = M.areas_chart(areas, legend, out_dir / "class_areas.png")
    labels = list(maps)
    if len(labels) == 1:
        if change:
            raise ConfigError(
                f"change={list(change)}: needs two periods but input= gave one ({labels[0]}); "
                "drop change= or give a raster per period"
            )
        return {"areas": areas, "csv": csv, "chart": chart, "change": None, "gif": None}
    a, b = list(change) if change else [labels[0], labels[-1]]
    if a not in maps or b not in maps:
        raise ConfigError(f"change={[a, b]}: periods must be among {labels}")
    diff = M.change_map(M.read_map(maps[a])[0], M.read_map(maps[b])[0], legend)
    transitions = {
        f * 16 + t: f"{legend.name_of(f)} -> {legend.name_of(t)}"
        for f in legend.codes
        for t in legend.codes
        if f != t and f < 16 and t < 16  # change_map codes from * 16 + to
    }
    change_path = write_cog(
        out_dir / f"change_{a}_{b}.tif",
        diff,
        crs=crs,
        transform=transform,
        nodata=0,
        descriptions=["FROM_X16_PLUS_TO"],
        categories=category_names(transitions, nodata=0, nodata_name="no change or nodata"),
    )
    gif = M.maps_gif(maps, legend, out_dir / "maps.gif")
    return {"areas": areas, "csv": csv, "chart": chart, "change": change_path, "gif": gif}
