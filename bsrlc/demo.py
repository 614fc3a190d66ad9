"""``make demo``: the whole workflow on the demo world, step by step, resumable.

Each step skips work whose outputs exist (delete ``data/demo`` or ``outputs/demo`` to redo).
Steps: generate the world; composite STMs for every period and sensor.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from bsrlc.data.demo import DemoWorld, generate
from bsrlc.errors import exit_on_user_error
from bsrlc.stm import SensorConfig, composite_periods, discover_scenes

log = logging.getLogger("bsrlc.demo")

DEMO_METRICS = ["min", "p10", "p25", "p50", "p75", "p90", "max", "mean", "std", "count"]
DEMO_INDICES = ["NDVI", "NDBI"]
BANDS = ["BLU", "GRN", "RED", "NIR", "SW1", "SW2"]
SENSORS = {
    "landsat": SensorConfig(
        name="landsat", scale=1e-4, decoder="landsat_qa_pixel", mask_suffix="_QA_PIXEL"
    ),
    "sentinel2": SensorConfig(
        name="sentinel2", scale=1e-4, decoder="sentinel2_scl", mask_suffix="_SCL"
    ),
}


def build_stms(world: DemoWorld, progress: bool = True) -> dict[str, dict[str, Path]]:
    """Composite every period of every sensor of a demo world into ``<world>/stm``.

    Args:
        world: the generated world.
        progress: show progress bars.

    Returns:
        sensor -> period label -> STM path.
    """
    out: dict[str, dict[str, Path]] = {}
    periods = {str(y): [f"{y - 1}-01-01", f"{y + 1}-12-31"] for y in world.spec.periods}
    for name, sensor in SENSORS.items():
        scenes = discover_scenes(world.root / "scenes" / name, sensor, BANDS)
        years = sorted({s.date.year for s in scenes})
        wanted = {k: v for k, v in periods.items() if int(k) in years}
        out[name] = composite_periods(
            scenes,
            world.root / "stm",
            wanted,
            bands=BANDS,
            metrics=DEMO_METRICS,
            indices=DEMO_INDICES,
            sensor=sensor,
            progress=progress,
        )
    return out


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    """Run the demo workflow.

    Args:
        argv: command-line arguments (default: ``sys.argv``).
    """
    ap = argparse.ArgumentParser(prog="python -m bsrlc.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="demo", choices=["demo", "tiny"])
    ap.add_argument("--data-dir", default="data", type=Path)
    ap.add_argument("--out-dir", default="outputs", type=Path)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    t0 = time.perf_counter()
    world = generate(args.size, args.data_dir / args.size)
    stms = build_stms(world, progress=not args.no_progress)
    for sensor, paths in stms.items():
        for label, path in paths.items():
            log.info("STM %s %s: %s", sensor, label, path)
    log.info("demo finished in %.0f s", time.perf_counter() - t0)


if __name__ == "__main__":
    main()
