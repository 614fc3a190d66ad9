"""Where the Hydra configs live and small helpers shared by the entry points."""

from __future__ import annotations

import os
from pathlib import Path

CONF_DIR: Path = Path(__file__).resolve().parent.parent / "conf"
"""The repository's ``conf/`` tree (the package is installed in editable mode)."""


def conf_dir() -> str:
    """Return the config directory as a string for ``hydra.main(config_path=...)``.

    Returns:
        The absolute path of ``conf/``; ``BSRLC_CONF_DIR`` overrides it.
    """
    return os.environ.get("BSRLC_CONF_DIR", str(CONF_DIR))
