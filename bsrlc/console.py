"""What a run prints: Lightning's messages once each, without promotions or known noise.

:func:`quiet_lightning` is called where bsrlc starts Lightning (training, and prediction with
``Trainer.predict``); it is idempotent and changes nothing else about logging.
:func:`warnings_to_stderr` keeps warnings off stdout where a command logs there (predict.py).
"""

from __future__ import annotations

import logging
import sys
import warnings

KNOWN_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    # torch 2.9+ deprecates LeafSpec; Lightning's own _pytree helper still uses it (not our code)
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
)
"""Warnings from third-party code that bsrlc cannot act on: (message regex, category)."""


class _DropTips(logging.Filter):
    """Drop Lightning's "💡 Tip: ..." promotions (litlogger, litmodels, LitServe...)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).lstrip().startswith("💡")


_TIP_FILTER = _DropTips()


def quiet_lightning() -> None:
    """Silence Lightning's tips and the known deprecation warnings; print each message once.

    - Lightning logs its tips through ``rank_zero_info`` on one logger; a filter there drops
      them (and nothing else).
    - The warnings in :data:`KNOWN_WARNINGS` are ignored by message, so any other warning,
      including new deprecations, still shows.
    - ``import lightning`` gives the ``lightning`` logger a console handler of its own, while
      ``lightning.pytorch`` and ``lightning.fabric`` propagate to the root logger whenever it
      has handlers (Hydra's job logging, which also writes the run's log file). Then every
      message would print twice, so that extra handler is removed in that case, as Lightning's
      subpackages themselves intend.
    """
    import lightning  # the handler to remove is added on import

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if _TIP_FILTER not in logger.filters:
            logger.addFilter(_TIP_FILTER)
    for message, category in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    if logging.getLogger().hasHandlers():
        pkg = logging.getLogger(lightning.__name__)
        for handler in list(pkg.handlers):
            if handler is getattr(lightning, "_console", None):
                pkg.removeHandler(handler)


class _BelowWarning(logging.Filter):
    """Pass only records below WARNING (the stdout handler's share)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


class _LevelPrefix(logging.Formatter):
    """``warning: <message>`` (the level in lower case), like the ``error: ...`` lines."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {super().format(record)}"


_BELOW_WARNING = _BelowWarning()


def warnings_to_stderr() -> None:
    """Print WARNING and above on stderr as ``warning: ...`` where the log goes to stdout.

    Hydra's ``job_logging: stdout`` prints every record bare on stdout, so a warning about the
    input (nodata, saturation, a raster smaller than the model's receptive field) looked like
    any progress line and vanished when stdout was piped. Idempotent; changes nothing when the
    root logger has no stdout handler.
    """
    root = logging.getLogger()
    to_stdout = [
        h
        for h in root.handlers
        if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is sys.stdout
    ]
    if not to_stdout or any(getattr(h, "_bsrlc_warnings", False) for h in root.handlers):
        return
    for handler in to_stdout:
        handler.addFilter(_BELOW_WARNING)
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    err.setFormatter(_LevelPrefix("%(message)s"))
    err._bsrlc_warnings = True  # type: ignore[attr-defined]
    root.addHandler(err)
