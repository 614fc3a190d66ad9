r"""``python -m bsrlc.stm``: composite scenes into STM rasters (config: conf/stm.yaml).

Examples:
    python -m bsrlc.stm sensor=landsat_c2 scenes=/data/l2 start=2018-01-01 end=2020-12-31
    python -m bsrlc.stm sensor=demo_landsat scenes=data/demo/scenes/landsat \
        'periods={2019:[2018-01-01,2020-12-31],2007:[2006-01-01,2008-12-31]}'
"""

from __future__ import annotations

import logging
import os
from typing import Any

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from bsrlc.config import conf_dir
from bsrlc.errors import ConfigError, exit_on_user_error
from bsrlc.stm.compose import (
    SensorConfig,
    composite,
    composite_periods,
    discover_scenes,
    parse_date,
)

log = logging.getLogger("bsrlc.stm")


def _plain(value: Any) -> Any:
    """OmegaConf containers to plain Python (resolved)."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def run(cfg: DictConfig) -> list[str]:
    """Composite according to a composed ``stm`` config.

    Args:
        cfg: the config (see conf/stm.yaml).

    Returns:
        The output files (written, or kept because they exist and overwrite is false).

    Raises:
        ConfigError: for missing scenes, bad sensor settings, or no label for a single window.
    """
    if OmegaConf.is_missing(cfg, "scenes") or cfg.scenes in (None, ""):
        raise ConfigError("scenes: required; set scenes=/path/to/folder (or a list of files)")
    sensor_cfg = _plain(cfg.sensor)
    try:
        sensor = SensorConfig(**sensor_cfg)
    except TypeError as err:
        raise ConfigError(f"sensor: {err}; see conf/sensor/*.yaml for the keys") from None
    bands = _plain(cfg.bands)
    scenes = discover_scenes(
        _plain(cfg.scenes), sensor, bands, cfg.glob, cfg.get("band_file_pattern")
    )
    common: dict[str, Any] = {
        "bands": bands,
        "metrics": list(_plain(cfg.metrics)),
        "indices": list(_plain(cfg.get("indices")) or []),
        "sensor": sensor,
        "block_size": int(cfg.block_size),
        "workers": cfg.get("workers"),
        "dask_address": cfg.get("dask_address"),
        "overwrite": bool(cfg.overwrite),
        "progress": bool(cfg.get("progress", True)),
    }
    if cfg.get("periods"):
        periods = {str(k): list(v) for k, v in _plain(cfg.periods).items()}
        return [str(p) for p in composite_periods(scenes, cfg.out_dir, periods, **common).values()]
    label = cfg.get("label")
    if label is None:
        if cfg.get("end") is None:
            raise ConfigError(
                "label: not set and no end date to take the year from; set label=..., end=... "
                "or periods={...}"
            )
        label = parse_date(cfg.end, "end").year
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
