r"""``python -m bsrlc.stm``: composite scenes into STM rasters (config: conf/stm.yaml).

Examples:
    python -m bsrlc.stm sensor=landsat_c2 scenes=/data/l2 start=2018-01-01 end=2020-12-31
    python -m bsrlc.stm sensor=demo_landsat scenes=data/demo/scenes/landsat \
        'periods={2019:[2018-01-01,2020-12-31],2007:[2006-01-01,2008-12-31]}'

Period labels are strings. YAML 1.1 and Hydra's override grammar read ``2008_2013`` as the
integer 20082013 (underscores separate digits); on the command line the label is taken back as
typed (``label=2008_2013`` and ``periods={2008_2013:[...]}`` both give ``..._2008_2013.tif``).
In a YAML file the text is lost, so an integer that reads as two years run together (8 digits,
19xx/20xx twice) is refused: quote it there (``label: "2008_2013"``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from bsrlc.config import conf_dir, plain
from bsrlc.errors import ConfigError, exit_on_user_error
from bsrlc.stm.compose import (
    SensorConfig,
    composite,
    composite_periods,
    discover_scenes,
    parse_date,
)

log = logging.getLogger("bsrlc.stm")


_TWO_YEARS = re.compile(r"(?:19|20)\d\d(?:19|20)\d\d")
_UNDERSCORED = re.compile(r"(?<![\w.])[+-]?\d+(?:_\d+)+(?![\w.])")


def typed_numbers(overrides: list[str] | None = None) -> dict[str, str]:
    """Numbers written with underscores in the command-line overrides, by their integer text.

    Hydra reads ``2008_2013`` as the integer 20082013; this maps ``"20082013"`` back to the
    text as typed, so labels can be restored.

    Args:
        overrides: override strings; None = this Hydra run's task overrides (none outside a
            Hydra run).

    Returns:
        integer text -> typed text, e.g. ``{"20082013": "2008_2013"}``.
    """
    if overrides is None:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return {}
        overrides = list(HydraConfig.get().overrides.task)
    out: dict[str, str] = {}
    for text in overrides:
        for token in _UNDERSCORED.findall(text):
            out.setdefault(str(int(token.replace("_", ""))), token)
    return out


def period_label(value: Any, key: str, typed: Mapping[str, str]) -> str:
    """A period label as a string, as the user wrote it.

    Args:
        value: the parsed label (a string, or a number YAML/Hydra made of it).
        key: the config key, for messages (``label`` or ``periods``).
        typed: :func:`typed_numbers` of the command line.

    Returns:
        The label.

    Raises:
        ConfigError: for an integer that reads as two years run together (``2008_2013`` in
            YAML becomes 20082013), telling how to quote it.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        return str(value)
    text = str(value)
    if text in typed:
        return typed[text]
    if _TWO_YEARS.fullmatch(text):
        quoted = f"{text[:4]}_{text[4:]}"
        how = (
            f'label: "{quoted}" in YAML, label=\'"{quoted}"\' on the command line'
            if key == "label"
            else f'periods: {{"{quoted}": [start, end]}} in YAML'
        )
        raise ConfigError(
            f"{key}: label {value} looks like two years run together (YAML reads 2008_2013 as "
            f"the integer 20082013); quote it: {how}"
        )
    return text


def run(cfg: DictConfig) -> list[str]:
    """Composite according to a composed ``stm`` config.

    Args:
        cfg: the config (see conf/stm.yaml).

    Returns:
        The output files (written, or kept because they exist and overwrite is false).

    Raises:
        ConfigError: for missing scenes, bad sensor settings, no label for a single window, or
            a label that YAML turned into a number (see :func:`period_label`).
    """
    if OmegaConf.is_missing(cfg, "scenes") or cfg.scenes in (None, ""):
        raise ConfigError("scenes: required; set scenes=/path/to/folder (or a list of files)")
    sensor_cfg = plain(cfg.sensor)
    if cfg.get("valid_range") is not None:
        sensor_cfg["valid_range"] = plain(cfg.valid_range)
    try:
        sensor = SensorConfig(**sensor_cfg)
    except TypeError as err:
        raise ConfigError(f"sensor: {err}; see conf/sensor/*.yaml for the keys") from None
    bands = plain(cfg.bands)
    scenes = discover_scenes(
        plain(cfg.scenes), sensor, bands, cfg.glob, cfg.get("band_file_pattern")
    )
    common: dict[str, Any] = {
        "bands": bands,
        "metrics": list(plain(cfg.metrics)),
        "indices": list(plain(cfg.get("indices")) or []),
        "sensor": sensor,
        "block_size": int(cfg.block_size),
        "workers": cfg.get("workers"),
        "dask_address": cfg.get("dask_address"),
        "overwrite": bool(cfg.overwrite),
        "progress": bool(cfg.get("progress", True)),
    }
    typed = typed_numbers()
    if cfg.get("periods"):
        periods = {
            period_label(k, "periods", typed): list(v) for k, v in plain(cfg.periods).items()
        }
        return [str(p) for p in composite_periods(scenes, cfg.out_dir, periods, **common).values()]
    label = cfg.get("label")
    if label is None:
        if cfg.get("end") is None:
            raise ConfigError(
                "label: not set and no end date to take the year from; set label=..., end=... "
                "or periods={...}"
            )
        label = parse_date(cfg.end, "end").year
    label = period_label(label, "label", typed)
    out = os.path.join(cfg.out_dir, f"{sensor.name}_{label}.tif")
    return [str(composite(scenes, out, start=cfg.get("start"), end=cfg.get("end"), **common))]


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="stm")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    """Entry point: prints the output paths, one a line.

    Args:
        cfg: the composed config.
    """
    for path in run(cfg):
        print(path)


if __name__ == "__main__":
    main()
