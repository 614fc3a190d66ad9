r"""``python -m bsrlc.stm``: composite scenes into STM rasters (config: conf/stm.yaml).

Examples:
    python -m bsrlc.stm sensor=landsat_c2 scenes=/data/l2 start=2018-01-01 end=2020-12-31
    python -m bsrlc.stm sensor=demo_landsat scenes=data/demo/scenes/landsat \
        'periods={2019:[2018-01-01,2020-12-31],2007:[2006-01-01,2008-12-31]}'

Archives as delivered (any path/row, UTM zone; :mod:`bsrlc.stm.archive`), tiled onto the grid:
    python -m bsrlc.stm source=landsat_c2 scenes=/data/c2 grid.crs=EPSG:3035 \
        grid.resolution=30 grid.tile_size=30000 'periods={2019:[2018-01-01,2020-12-31]}'

A local STAC catalog or ItemCollection (:mod:`bsrlc.stm.stac`), or a FORCE Level-2 datacube on
its own grid (:mod:`bsrlc.stm.force`):
    python -m bsrlc.stm stac=/data/catalog.json 'periods={2019:[2018-01-01,2020-12-31]}'
    python -m bsrlc.stm source=force scenes=/data/force/level2 'periods={...}'
FORCE TSA STM outputs used as STMs (band names mapped, one VRT per period, nothing computed):
    python -m bsrlc.stm source=force_tsa scenes=/data/force/higher-level out_dir=/data/stm

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

from omegaconf import DictConfig, OmegaConf

from bsrlc.cli import hydra_entry
from bsrlc.config import conf_dir, plain
from bsrlc.errors import ConfigError

# The compositing modules (numba, rasterio, odc-geo) are imported where they are used, so that
# `python -m bsrlc.stm --help` answers at once.

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
    from bsrlc.stm.compose import (
        SensorConfig,
        composite,
        composite_periods,
        discover_scenes,
        parse_date,
    )

    if cfg.get("stac"):
        if cfg.get("source") not in (None, "", "stac", "auto"):
            raise ConfigError(
                f"stac={cfg.stac} with source={cfg.source}: stac= reads a STAC catalog; drop "
                "source= (or use source=stac scenes=CATALOG.json)"
            )
        return run_archive(cfg, source="stac", scenes=str(cfg.stac))
    if OmegaConf.is_missing(cfg, "scenes") or cfg.scenes in (None, ""):
        raise ConfigError(
            "scenes: required; set scenes=/path/to/folder (or a list of files), or "
            "stac=CATALOG.json"
        )
    if cfg.get("source") == "force_tsa":
        return run_force_tsa(cfg)
    if cfg.get("source"):
        return run_archive(cfg)
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


def _periods(cfg: DictConfig) -> dict[str, list[Any]]:
    """Label -> [start, end]: ``periods``, or the one window of ``start``, ``end``, ``label``."""
    from bsrlc.stm.compose import parse_date

    typed = typed_numbers()
    if cfg.get("periods"):
        return {period_label(k, "periods", typed): list(v) for k, v in plain(cfg.periods).items()}
    label = cfg.get("label")
    if label is None:
        if cfg.get("end") is None:
            raise ConfigError(
                "label: not set and no end date to take the year from; set label=..., end=... "
                "or periods={...}"
            )
        label = parse_date(cfg.end, "end").year
    return {period_label(label, "label", typed): [cfg.get("start"), cfg.get("end")]}


SOURCES = (
    "landsat_c2",
    "sentinel2_l2a",
    "stac",
    "force",
    "force_tsa",
    "auto",
)
"""Values of ``source=``: :data:`bsrlc.stm.sources.PRODUCTS` and the other kinds."""


def run_archive(cfg: DictConfig, source: str | None = None, scenes: str | None = None) -> list[str]:
    """Tiled ingest of scenes as delivered (``source=`` or ``stac=`` set; see conf/stm.yaml).

    Args:
        cfg: the config.
        source: the source kind (None: ``cfg.source``).
        scenes: the folder or catalog (None: ``cfg.scenes``).

    Returns:
        The VRT mosaic of each period, one per period.

    Raises:
        ConfigError: for an unknown source, a bands mapping or bad grid settings.
    """
    from bsrlc.stm.archive import detect_source, ingest_folder
    from bsrlc.stm.grid import DEFAULT_ORIGIN, TargetGrid

    source = str(source or cfg.source)
    if source not in SOURCES:
        raise ConfigError(
            f"source={source}: unknown; use {', '.join(SOURCES)} (or leave it unset for scenes "
            "already on one grid)"
        )
    if scenes is None:
        scenes = plain(cfg.scenes)
    if not isinstance(scenes, str):
        raise ConfigError(
            f"scenes={scenes}: with source= give one folder of scenes as delivered (or a STAC "
            "JSON file)"
        )
    bands = plain(cfg.bands)
    if not isinstance(bands, list):
        raise ConfigError(
            f"bands={bands}: with source= list band names (BLU, GRN, RED, NIR, SW1, SW2, or a "
            "product's own such as B05); products map their files themselves"
        )
    g = plain(cfg.get("grid")) or {}
    origin = g.get("origin")
    extra: dict[str, Any] = {}
    is_force = source == "force" or (source == "auto" and detect_source(scenes) == "force")
    grid: TargetGrid | None = TargetGrid(
        crs=str(g.get("crs") or "EPSG:3035"),
        resolution=float(g.get("resolution") or 30.0),
        tile_size=float(g.get("tile_size") or 30_000.0),
        origin=tuple(origin) if origin is not None else DEFAULT_ORIGIN,
    )
    if is_force:
        # the cube's grid (CRS, origin, tile size; the BOA's pixel size) unless grid.* says
        # otherwise: crs, tile_size or origin set -> the grid above; grid.resolution alone
        # picks the pixel size on the cube's grid
        typed = _typed_grid_keys()
        own = any(
            k in typed or g.get(k) != DEFAULTS_GRID[k] for k in ("crs", "tile_size", "origin")
        )
        if not own:
            grid = None
            if "resolution" in typed or g.get("resolution") != DEFAULTS_GRID["resolution"]:
                extra["cube_resolution"] = float(g["resolution"])
        if cfg.get("force_sensors"):
            extra["force_sensors"] = [str(x) for x in plain(cfg.force_sensors)]
    vrts = ingest_folder(
        scenes,
        cfg.out_dir,
        _periods(cfg),
        source=source,
        boa_offset=cfg.get("boa_offset"),
        on_error=str(cfg.get("on_error") or "fail"),
        grid=grid,
        bands=bands,
        metrics=list(plain(cfg.metrics)),
        indices=list(plain(cfg.get("indices")) or []),
        name=cfg.get("name"),
        bounds=g.get("bounds"),
        region=g.get("region"),
        tiles=g.get("tiles"),
        valid_range=plain(cfg.get("valid_range")),
        resampling=str(cfg.get("resampling") or "bilinear"),
        min_clear_fraction=float(cfg.get("min_clear_fraction") or 1.0),
        block_size=int(cfg.block_size),
        overviews=bool(cfg.get("overviews", False)),
        overwrite=bool(cfg.overwrite),
        workers=cfg.get("workers"),
        dask_address=cfg.get("dask_address"),
        progress=bool(cfg.get("progress", True)),
        **extra,
    )
    return [str(p) for p in vrts.values()]


DEFAULTS_GRID = {"crs": "EPSG:3035", "resolution": 30, "tile_size": 30000, "origin": None}
"""conf/stm.yaml's grid defaults: with source=force, values left at these take the cube's."""


def _typed_grid_keys() -> set[str]:
    """The grid.* keys typed on the command line (even at their default values)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return set()
    keys = (o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task)
    return {k[5:] for k in keys if k.startswith("grid.")}


def run_force_tsa(cfg: DictConfig) -> list[str]:
    """FORCE TSA STM outputs as bsrlc STMs: one VRT per period (``source=force_tsa``).

    Args:
        cfg: the config (``scenes``: the TSA output cube; ``name``, ``out_dir``,
            ``force_stm``: the TSA parameter file's STM list for files without band names).
            The VRTs are always rewritten (they only point at FORCE's files).

    Returns:
        The VRT of each period.
    """
    from bsrlc.stm.force import adapt_tsa

    vrts = adapt_tsa(
        str(cfg.scenes),
        cfg.out_dir,
        name=cfg.get("name") or "force",
        stm=plain(cfg.get("force_stm")),
    )
    return [str(p) for p in vrts.values()]


@hydra_entry(config_path=conf_dir(), config_name="stm")
def main(cfg: DictConfig) -> None:
    """Entry point: prints the output paths, one a line.

    Args:
        cfg: the composed config.
    """
    for path in run(cfg):
        print(path)


if __name__ == "__main__":
    main()
