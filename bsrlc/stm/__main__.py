"""``python -m bsrlc.stm``: composite scenes into STM rasters (config: conf/stm.yaml)."""

from __future__ import annotations

import logging
import os

import hydra
from omegaconf import DictConfig, OmegaConf

from bsrlc.config import conf_dir
from bsrlc.errors import ConfigError, exit_on_user_error
from bsrlc.stm.compose import SensorConfig, composite, composite_periods, discover_scenes

log = logging.getLogger("bsrlc.stm")


def run(cfg: DictConfig) -> list[str]:
    """Composite according to a composed ``stm`` config.

    Args:
        cfg: the config.

    Returns:
        The written (or already existing) output files.

    Raises:
        ConfigError: if neither a date window nor periods are given consistently.
    """
    if cfg.get("workers"):
        import numba

        numba.set_num_threads(min(int(cfg.workers), numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    sensor = SensorConfig(**OmegaConf.to_container(cfg.sensor, resolve=True))  # type: ignore[arg-type]
    bands = list(cfg.bands)
    scenes_arg = cfg.scenes if isinstance(cfg.scenes, str) else list(cfg.scenes)
    scenes = discover_scenes(scenes_arg, sensor, bands, cfg.glob, cfg.get("band_file_pattern"))
    common = {
        "bands": bands,
        "metrics": list(cfg.metrics),
        "indices": list(cfg.get("indices") or []),
        "sensor": sensor,
        "block_size": int(cfg.block_size),
        "dask_address": cfg.get("dask_address"),
        "overwrite": bool(cfg.overwrite),
        "progress": bool(cfg.get("progress", True)),
    }
    if cfg.get("periods"):
        periods = {str(k): list(v) for k, v in cfg.periods.items()}
        return [str(p) for p in composite_periods(scenes, cfg.out_dir, periods, **common).values()]
    if cfg.get("label") is None:
        raise ConfigError("label: give a period label (used in the file name) or periods={...}")
    out = os.path.join(cfg.out_dir, f"{sensor.name}_{cfg.label}.tif")
    return [str(composite(scenes, out, start=cfg.start, end=cfg.end, **common))]


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="stm")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    """Entry point.

    Args:
        cfg: the composed config.
    """
    for path in run(cfg):
        print(path)


if __name__ == "__main__":
    main()
