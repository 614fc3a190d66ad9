r"""``python -m bsrlc.timeseries``: build per tile-year stores of clear observations.

Usage (key=value, as the Hydra entry points; values are YAML)::

    python -m bsrlc.timeseries scenes=data/demo/scenes/landsat sensor=demo_landsat year=2019 \
        out=data/obs
    # two sensors on one grid, in priority order (the first wins on a shared day):
    python -m bsrlc.timeseries 'scenes=[/data/s2_on_grid,/data/landsat_on_grid]' \
        'sensor=[sentinel2_l2a,landsat_c2]' year=2019 out=/data/obs tile_size=3000

Keys:
    scenes: a folder (scenes of other years are skipped), or a list of folders, one per source.
    sensor: a preset of conf/sensor/ (demo_landsat, demo_sentinel2, landsat_c2, sentinel2_l2a,
        force), one per folder. Default demo_landsat. ``sensor.KEY=value`` changes one field
        of every preset (e.g. ``sensor.mask_suffix=_QA sensor.decoder=valid``).
    year: the year (required).
    out: the output folder (required); one ``{tile}_{year}.obs`` folder per tile.
    bands: [BLU, GRN, RED, NIR, SW1, SW2] (default), or a mapping name -> name in the files.
    glob: which files are scenes (default ``*.tif``); band_file_pattern: see conf/stm.yaml.
    tile_size: tile edge in pixels (default null: one tile); tiles: only these tile ids.
    overwrite: rebuild existing stores (default false).

Scenes as delivered (any CRS; Landsat C2 L2 folders, Sentinel-2 L2A), warped onto the tiles of
a target grid as ``python -m bsrlc.stm source=...`` does::

    python -m bsrlc.timeseries source=landsat_c2 scenes=/data/c2 year=2019 out=/data/obs \
        grid.crs=EPSG:3035 grid.resolution=30 grid.tile_size=30000 'tiles=[X0105_Y0091]'

    source: landsat_c2, sentinel2_l2a or auto (one per folder, or one for all); null (default):
        scenes already on one grid (the keys above).
    grid.crs, grid.resolution, grid.tile_size, grid.origin: the target grid (defaults EPSG:3035,
        30, 30000, [0, 7200000]); grid.fine=true: the tiles' 10 m pixels.
    resampling (bilinear), min_clear_fraction (1.0), boa_offset (Sentinel-2 without metadata).

stdout gets the store folders, one a line; a problem with the input is one line on stderr
(exit status 2) naming the file, the problem and the fix. The store layout and the rules for
leap days, same-day observations and tiles are in :mod:`bsrlc.timeseries.store`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from bsrlc.errors import ConfigError, InputError, exit_on_user_error

KEYS = (
    "source",
    "grid",
    "resampling",
    "min_clear_fraction",
    "boa_offset",
    "scenes",
    "sensor",
    "year",
    "out",
    "bands",
    "glob",
    "band_file_pattern",
    "tile_size",
    "tiles",
    "overwrite",
    "name",
)
DEFAULTS: dict[str, Any] = {
    "sensor": "demo_landsat",
    "bands": ["BLU", "GRN", "RED", "NIR", "SW1", "SW2"],
    "glob": "*.tif",
    "band_file_pattern": None,
    "tile_size": None,
    "tiles": None,
    "overwrite": False,
    "name": None,
    "source": None,
    "grid": {},
    "resampling": "bilinear",
    "min_clear_fraction": 1.0,
    "boa_offset": None,
}


def parse_args(argv: list[str]) -> dict[str, Any]:
    """``key=value`` arguments (values parsed as YAML) over :data:`DEFAULTS`.

    Args:
        argv: the arguments.

    Returns:
        The settings.

    Raises:
        ConfigError: for an unknown key, an argument without ``=``, or a missing required key.
    """
    from omegaconf import OmegaConf

    fields = [a for a in argv if a.startswith("sensor.")]
    argv = [a for a in argv if not a.startswith("sensor.")]
    for a in argv:
        key = a.split("=", 1)[0].split(".", 1)[0]
        if "=" not in a or key not in KEYS:
            raise ConfigError(
                f"{a}: not a key=value setting of {', '.join(KEYS)}; see python -m "
                "bsrlc.timeseries --help"
            )
    try:
        cfg = OmegaConf.to_container(OmegaConf.from_dotlist(argv))
        sensor_fields = OmegaConf.to_container(OmegaConf.from_dotlist(fields))
    except Exception as err:  # omegaconf's grammar errors
        raise ConfigError(f"{' '.join(argv)}: cannot parse ({err}); write key=value") from None
    out = {**DEFAULTS, **cfg}  # type: ignore[dict-item]
    out["sensor_fields"] = sensor_fields.get("sensor", {})  # type: ignore[union-attr]
    for key in ("scenes", "year", "out"):
        if out.get(key) in (None, ""):
            raise ConfigError(
                f"{key}: required; e.g. python -m bsrlc.timeseries scenes=DIR sensor=demo_landsat "
                "year=2019 out=DIR"
            )
    return out


def sensor_config(name: str, fields: dict[str, Any] | None = None) -> Any:
    """A sensor preset of ``conf/sensor/{name}.yaml`` as a SensorConfig.

    Args:
        name: the preset.
        fields: fields to change.

    Returns:
        The SensorConfig.

    Raises:
        ConfigError: for an unknown preset or field.
    """
    from omegaconf import OmegaConf

    from bsrlc.config import conf_dir
    from bsrlc.stm.compose import SensorConfig

    path = Path(conf_dir()) / "sensor" / f"{name}.yaml"
    if not path.is_file():
        have = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"sensor={name}: no {path}; use one of {', '.join(have)}")
    values = {**OmegaConf.to_container(OmegaConf.load(path)), **(fields or {})}  # type: ignore[dict-item]
    try:
        return SensorConfig(**values)
    except TypeError as err:
        raise ConfigError(f"sensor: {err}; see conf/sensor/*.yaml for the keys") from None


def run(cfg: dict[str, Any]) -> list[Path]:
    """Build the stores of a parsed command line.

    Args:
        cfg: from :func:`parse_args`.

    Returns:
        The store folders.

    Raises:
        ConfigError: for as many sensors as folders not given, a non-integer year.
    """
    from bsrlc.timeseries.store import build_store, folder_source

    folders = cfg["scenes"] if isinstance(cfg["scenes"], list) else [cfg["scenes"]]
    sensors = cfg["sensor"] if isinstance(cfg["sensor"], list) else [cfg["sensor"]]
    if len(sensors) == 1 and len(folders) > 1:
        sensors = sensors * len(folders)
    if len(sensors) != len(folders):
        raise ConfigError(
            f"sensor={sensors}: {len(sensors)} sensors for {len(folders)} scene folders; give one "
            "sensor per folder, in the same order"
        )
    try:
        year = int(cfg["year"])
    except (TypeError, ValueError):
        raise ConfigError(f"year={cfg['year']}: not a year; write e.g. year=2019") from None
    names = cfg["name"] if isinstance(cfg["name"], list) else [cfg["name"]] * len(folders)
    if cfg.get("source"):
        return run_archive(cfg, folders, names, year)
    sources = []
    for folder, sensor, name in zip(folders, sensors, names, strict=False):
        sc = sensor_config(str(sensor), cfg.get("sensor_fields"))
        sources.append(
            folder_source(
                folder,
                sc,
                cfg["bands"],
                year,
                name=name or str(sensor),
                glob=cfg["glob"],
                band_file_pattern=cfg["band_file_pattern"],
            )
        )
    return build_store(
        sources,
        cfg["out"],
        year,
        tile_size=cfg["tile_size"],
        tiles_wanted=cfg["tiles"],
        overwrite=bool(cfg["overwrite"]),
    )


def run_archive(cfg: dict[str, Any], folders: list[Any], names: list[Any], year: int) -> list[Path]:
    """Stores of scenes as delivered (``source=`` set), warped onto the target grid's tiles.

    Args:
        cfg: from :func:`parse_args`.
        folders: one scene folder per source, in priority order.
        names: the sources' names (None: the product).
        year: the year; scenes of other years in the folders are skipped.

    Returns:
        The store folders.

    Raises:
        ConfigError: for an unknown source or grid key.
        InputError: for a folder without scenes of the year.
    """
    from bsrlc.stm.grid import DEFAULT_ORIGIN, TargetGrid
    from bsrlc.stm.sources import discover_sources
    from bsrlc.timeseries.store import build_archive_store

    kinds = cfg["source"] if isinstance(cfg["source"], list) else [cfg["source"]] * len(folders)
    if len(kinds) != len(folders):
        raise ConfigError(
            f"source={kinds}: {len(kinds)} sources for {len(folders)} folders; give one per folder"
        )
    g = dict(cfg.get("grid") or {})
    unknown = set(g) - {"crs", "resolution", "tile_size", "origin", "fine"}
    if unknown:
        raise ConfigError(
            f"grid.{sorted(unknown)[0]}: unknown; use grid.crs, grid.resolution, grid.tile_size, "
            "grid.origin or grid.fine"
        )
    grid = TargetGrid(
        crs=str(g.get("crs") or "EPSG:3035"),
        resolution=float(g.get("resolution") or 30.0),
        tile_size=float(g.get("tile_size") or 30_000.0),
        origin=tuple(g["origin"]) if g.get("origin") is not None else DEFAULT_ORIGIN,
    )
    sources = []
    for folder, kind, name in zip(folders, kinds, names, strict=False):
        product = None if kind == "auto" else str(kind)
        found = discover_sources(folder, product, boa_offset=cfg.get("boa_offset")).scenes
        scenes = [s for s in found if s.date.year == year]
        if not scenes:
            years = sorted({s.date.year for s in found})
            raise InputError(
                f"{folder}: no scene of {year} ({len(found)} scenes of years "
                f"{', '.join(map(str, years))}); set year= to one of them or point scenes= at "
                "another folder"
            )
        sources.append((str(name or kind), scenes))
    return build_archive_store(
        sources,
        cfg["out"],
        year,
        grid,
        tiles_wanted=cfg["tiles"],
        bands=list(cfg["bands"]),
        resampling=str(cfg["resampling"]),
        min_clear_fraction=float(cfg["min_clear_fraction"]),
        fine=bool(g.get("fine", False)),
        overwrite=bool(cfg["overwrite"]),
    )


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    """Entry point: prints the store folders, one a line.

    Args:
        argv: the arguments (None: ``sys.argv[1:]``).
    """
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    for path in run(parse_args(argv)):
        print(path)


if __name__ == "__main__":
    main()
