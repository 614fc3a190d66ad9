"""Experiment tracking helpers: W&B that never blocks, and run provenance.

W&B runs online only when an API key is configured *and* its server answers within a second;
otherwise runs are recorded offline (``wandb sync`` uploads them later). The decision is made
before the logger starts, so a run never waits on the network or prompts for a login.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from omegaconf import OmegaConf


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


@lru_cache(maxsize=1)
def wandb_offline() -> bool:
    """Decide whether W&B must run offline, and export the decision as ``WANDB_MODE``.

    Returns:
        True when ``WANDB_MODE`` is offline/disabled, there is no API key, or the W&B server
        does not answer within one second.
    """
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in {"offline", "disabled", "dryrun"}:
        return True
    offline = not _has_api_key()
    if not offline:
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("//")[-1]
        try:
            socket.create_connection((host.split("/")[0], 443), timeout=1.0).close()
        except OSError:
            offline = True
    if offline:
        os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_INIT_TIMEOUT", "30")
    return offline


def register_resolvers() -> None:
    """Register the OmegaConf resolvers the configs use (idempotent)."""
    if not OmegaConf.has_resolver("bsrlc_wandb_offline"):
        OmegaConf.register_new_resolver("bsrlc_wandb_offline", wandb_offline)


def git_commit(root: str | Path = ".") -> str:
    """The current git commit of ``root`` (with ``-dirty`` if there are changes).

    Args:
        root: a folder inside the repository.

    Returns:
        The commit hash, or ``"unknown"`` outside a repository.
    """
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def files_digest(paths: Iterable[str | Path]) -> tuple[list[str], str]:
    """A dataset fingerprint: the sorted file list and a hash of names, sizes and mtimes.

    Args:
        paths: the data files a run reads.

    Returns:
        (sorted file names, sha256 hex digest).
    """
    files = sorted(str(p) for p in paths)
    h = hashlib.sha256()
    for f in files:
        path = Path(f)
        if not path.exists():  # the datamodule reports missing inputs with their fix
            h.update(f"{f}|missing\n".encode())
            continue
        st = path.stat()
        h.update(f"{f}|{st.st_size}|{int(st.st_mtime)}\n".encode())
    return files, h.hexdigest()
