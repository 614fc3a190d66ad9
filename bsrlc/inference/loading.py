"""Load a trained network and what inference needs from a Lightning checkpoint, safely.

Checkpoints are read by :func:`bsrlc.checkpoints.read_checkpoint` (``weights_only=True``): no
arbitrary object is unpickled.
The network is rebuilt from the ``_target_`` config stored in the checkpoint's hyperparameters
(plain data), so inference needs ``bsrlc.models`` but none of the training code.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bsrlc.checkpoints import read_checkpoint
from bsrlc.errors import InputError


@dataclass
class LoadedModel:
    """A network ready for inference and its metadata.

    Attributes:
        net: the network in eval mode.
        task: ``"sr"`` or ``"classify"``.
        bands: input band descriptions, in order.
        mean: per-band normalisation mean (reflectance).
        std: per-band normalisation std.
        meta: everything else stored with the weights (legend, scale, patch size, halo...).
        config: the network's constructor config.
    """

    net: nn.Module
    task: str
    bands: list[str]
    mean: list[float]
    std: list[float]
    meta: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


def build_from_config(cfg: dict[str, Any]) -> nn.Module:
    """Instantiate ``cfg["_target_"](**rest)`` for a network in ``bsrlc.models``.

    Args:
        cfg: a constructor config.

    Returns:
        The module.

    Raises:
        InputError: for a target outside ``bsrlc.models``.
    """
    target = str(cfg["_target_"])
    module_name, _, cls_name = target.rpartition(".")
    if not module_name.startswith("bsrlc.models"):
        raise InputError(f"network target {target} is not a bsrlc model; refusing to build it")
    cls = getattr(importlib.import_module(module_name), cls_name)
    kwargs = {k: v for k, v in cfg.items() if not k.startswith("_")}
    return cls(**kwargs)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load the inference network of an SR or classification checkpoint.

    Args:
        path: a ``.ckpt`` written by ``train.py``.
        device: where to put the network.

    Returns:
        The network (the EMA generator for SR) and its metadata.

    Raises:
        InputError: for a missing, unreadable or foreign checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: checkpoint not found; give model= an existing .ckpt or bundle")
    ckpt = read_checkpoint(path)
    meta = ckpt.get("bsrlc")
    if not meta:
        raise InputError(f"{path}: no bsrlc metadata; was it written by bsrlc's train.py?")
    hparams = ckpt.get("hyper_parameters", {})
    state = ckpt["state_dict"]
    if meta["task"] == "sr":
        cfg = dict(hparams["generator"])
        prefix = (
            "generator_ema.module."
            if any(k.startswith("generator_ema.module.") for k in state)
            else "generator."
        )
    elif meta["task"] == "classify":
        cfg = dict(hparams["net"])
        prefix = "net."
    else:
        raise InputError(f"{path}: unknown task {meta['task']!r}")
    net = build_from_config(cfg)
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    missing, _unexpected = net.load_state_dict(weights, strict=False)
    if missing:
        raise InputError(
            f"{path}: weights do not fit the stored network config (missing {missing[:3]}...); "
            "the checkpoint comes from another config"
        )
    net.eval().to(device)
    return LoadedModel(
        net=net,
        task=meta["task"],
        bands=list(meta["bands"]),
        mean=list(meta["mean"]),
        std=list(meta["std"]),
        meta=meta,
        config=cfg,
    )
