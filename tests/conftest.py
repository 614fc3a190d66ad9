"""Shared fixtures: the tiny demo world, generated once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory):
    """The tiny demo world (192x192 px at 10 m), generated once."""
    from bsrlc.data.demo import generate

    root = tmp_path_factory.mktemp("world") / "tiny"
    return generate("tiny", root)


@pytest.fixture(scope="session", autouse=True)
def _chip_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep chip caches of the tests out of the user's cache folder."""
    path = tmp_path_factory.mktemp("chips")
    os.environ["BSRLC_CACHE"] = str(path)
    return path
