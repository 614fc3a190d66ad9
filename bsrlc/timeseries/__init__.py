"""Annual temporal encoding: compact per tile-year observation stores, encoded per batch.

A compact per tile-year store of clear observations (:mod:`bsrlc.timeseries.store`) is
scattered into the 365-day encoding per batch (:mod:`bsrlc.timeseries.encoding`).

``python -m bsrlc.timeseries scenes=DIR sensor=NAME year=YYYY out=DIR`` builds the stores; from
Python::

    src = folder_source("scenes/landsat", sensor, ["BLU", "GRN", "RED", "NIR"], 2019)
    [path] = build_store([src], "obs", 2019)
    ds = PointSeries(path, rows, cols, labels)
    for batch in DataLoader(ds, batch_size=256, collate_fn=collate_packed):
        x = encode(batch, device="cuda")        # (256, 7, 365)
"""

from __future__ import annotations

import importlib
from typing import Any

# torch and rasterio are imported on first use (PEP 562): `python -m bsrlc.timeseries --help`
# answers at once.
_WHERE = {
    **dict.fromkeys(
        (
            "N_DAYS",
            "VALUE_SCALE",
            "ObservationStore",
            "Observations",
            "Source",
            "build_archive_store",
            "build_store",
            "day_index",
            "folder_source",
            "merge_observations",
            "plan_sources",
            "store_path",
            "window_observations",
        ),
        "store",
    ),
    **dict.fromkeys(("PointSeries", "collate_packed", "encode", "fill_linear"), "encoding"),
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"bsrlc.timeseries.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'bsrlc.timeseries' has no attribute {name!r}")


__all__ = sorted(_WHERE)
