"""A Hydra callback that tabulates a multirun's trials when the sweep ends."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def collect_trials(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Read every trial folder of a sweep: its overrides, metrics and failure.

    Args:
        sweep_dir: the multirun folder (``hydra.sweep.dir``).

    Returns:
        One row per trial: ``trial``, ``overrides``, ``status`` and the metrics.
    """
    rows = []
    for trial in sorted(Path(sweep_dir).iterdir(), key=lambda p: (len(p.name), p.name)):
        overrides_file = trial / ".hydra" / "overrides.yaml"
        if not overrides_file.exists():
            continue
        overrides = yaml.safe_load(overrides_file.read_text()) or []
        row: dict[str, Any] = {"trial": trial.name, "overrides": " ".join(overrides)}
        metrics_file = trial / "metrics.json"
        if (trial / "failed.txt").exists():
            row["status"] = "failed"
        elif metrics_file.exists():
            row["status"] = "ok"
            row.update(json.loads(metrics_file.read_text()))
        else:
            row["status"] = "incomplete"
        rows.append(row)
    return rows


def summary_markdown(rows: list[dict[str, Any]], metrics: list[str]) -> str:
    """A markdown table of trials and chosen metrics.

    Args:
        rows: from :func:`collect_trials`.
        metrics: metric columns to show (missing values print as ``-``).

    Returns:
        The table.
    """
    head = ["trial", "status", "overrides", *metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        vals = [f"{r[m]:.4g}" if isinstance(r.get(m), (int, float)) else "-" for m in metrics]
        lines.append("| " + " | ".join([r["trial"], r["status"], r["overrides"], *vals]) + " |")
    return "\n".join(lines) + "\n"


class SweepSummary(Callback):
    """Write ``summary.md`` and ``summary.json`` in the sweep folder and log the table.

    Args:
        metrics: metric names to tabulate; by default the optimised metric and the val/test
            metrics every trial logged.
    """

    def __init__(self, metrics: list[str] | None = None) -> None:
        self.metrics = list(metrics or [])

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Tabulate the trials.

        Args:
            config: the sweep's config.
            **kwargs: unused.
        """
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.exists():
            return
        rows = collect_trials(sweep_dir)
        metrics = self.metrics
        if not metrics:
            keys = sorted({k for r in rows for k in r if k.startswith(("val/", "test/"))})
            opt = config.get("optimized_metric")
            metrics = ([opt] if opt else []) + [k for k in keys if k != opt][:6]
        table = summary_markdown(rows, metrics)
        (sweep_dir / "summary.md").write_text(table)
        (sweep_dir / "summary.json").write_text(json.dumps(rows, indent=2))
        log.info("sweep summary (%s):\n%s", sweep_dir / "summary.md", table)
