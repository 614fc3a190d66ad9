"""Spectral-temporal metrics (STMs): per-pixel statistics over a period's clear observations.

``python -m bsrlc.stm`` (config ``conf/stm.yaml``) or, from Python::

    scenes = discover_scenes("scenes/landsat", SensorConfig(...), ["BLU", "GRN", "RED"])
    composite(scenes, "stm/landsat_2019.tif", ["BLU", "GRN", "RED"], ["p25", "p50", "count"],
              sensor, start="2018-01-01", end="2020-12-31")
"""

from __future__ import annotations

import importlib
from typing import Any

# Names are imported on first use (PEP 562), so `python -m bsrlc.stm --help` does not load
# numba, rasterio and odc-geo before it prints.
_WHERE = {
    **dict.fromkeys(
        (
            "OUT_NODATA",
            "OUT_SCALE",
            "Scene",
            "SceneReader",
            "SensorConfig",
            "StmPlan",
            "composite",
            "composite_periods",
            "composite_window",
            "discover_scenes",
            "plan_stm",
            "select_scenes",
            "split_bands",
        ),
        "compose",
    ),
    **dict.fromkeys(
        ("INDICES", "IndexDef", "compute_index", "normalized_difference", "register_index"),
        "indices",
    ),
    **dict.fromkeys(
        ("MetricSpec", "compute_stm_block", "compute_stm_int16", "parse_metrics"), "metrics"
    ),
    **dict.fromkeys(("DECODERS", "check_options", "get_decoder", "register"), "qa"),
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"bsrlc.stm.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'bsrlc.stm' has no attribute {name!r}")


__all__ = [
    "DECODERS",
    "INDICES",
    "OUT_NODATA",
    "OUT_SCALE",
    "IndexDef",
    "MetricSpec",
    "Scene",
    "SceneReader",
    "SensorConfig",
    "StmPlan",
    "check_options",
    "composite",
    "composite_periods",
    "composite_window",
    "compute_index",
    "compute_stm_block",
    "compute_stm_int16",
    "discover_scenes",
    "get_decoder",
    "normalized_difference",
    "parse_metrics",
    "plan_stm",
    "register",
    "register_index",
    "select_scenes",
    "split_bands",
]
