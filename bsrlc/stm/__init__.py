"""Spectral-temporal metrics: per-pixel statistics over a period's clear observations."""

from bsrlc.stm.compose import (
    Scene,
    SensorConfig,
    composite,
    composite_periods,
    composite_window,
    discover_scenes,
)
from bsrlc.stm.metrics import compute_stm_block, parse_metrics
from bsrlc.stm.qa import DECODERS, get_decoder, register

__all__ = [
    "DECODERS",
    "Scene",
    "SensorConfig",
    "composite",
    "composite_periods",
    "composite_window",
    "compute_stm_block",
    "discover_scenes",
    "get_decoder",
    "parse_metrics",
    "register",
]
