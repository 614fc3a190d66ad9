"""Where the Hydra configs live and small helpers shared by the entry points."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CONF_DIR: Path = Path(__file__).resolve().parent.parent / "conf"
"""The repository's ``conf/`` tree (the package is installed in editable mode)."""


def conf_dir() -> str:
    """Return the config directory as a string for ``hydra.main(config_path=...)``.

    Returns:
        The absolute path of ``conf/``; ``BSRLC_CONF_DIR`` overrides it.
    """
    return os.environ.get("BSRLC_CONF_DIR", str(CONF_DIR))


def plain(value: Any) -> Any:
    """Plain dicts and lists instead of OmegaConf nodes, at any depth (anything else unchanged).

    Args:
        value: a DictConfig/ListConfig, a container holding them, or anything else.

    Returns:
        Resolved plain Python containers (safe to store in a checkpoint or JSON).
    """
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value
