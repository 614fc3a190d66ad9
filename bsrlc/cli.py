"""Hydra entry points that answer ``--help`` fast and explain a typo'd override in one line.

:func:`hydra_entry` replaces ``@hydra.main(...)`` on a task function. Before Hydra runs it
composes the config with Hydra's compose API (Hydra and OmegaConf only: the entry point imports
torch, Lightning and the rest of bsrlc inside its task function), and

- answers ``--help`` / ``-h`` with Hydra's help template, listing only the config groups this
  config's defaults use (``conf/`` also holds the groups of other entry points, e.g. ``sensor``
  of ``python -m bsrlc.stm``, which Hydra's own help would list too);
- checks every override: an option of a config group that does not exist
  (``experiment=clasify_demo``) or a key that the composed config lacks
  (``trainer.max_epoch=3``) raises :class:`~bsrlc.errors.ConfigError` naming the closest
  valid names, which :func:`~bsrlc.errors.exit_on_user_error` prints as one line with exit
  status 2, like every other user error.

Anything the check does not recognise (Hydra's own flags and ``hydra.*`` overrides, glob or
range sweeps, a composition that fails for another reason) is left to Hydra unchanged.
"""

from __future__ import annotations

import difflib
import functools
import string
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bsrlc.errors import ConfigError, exit_on_user_error

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override
    from omegaconf import DictConfig

T = TypeVar("T")

HYDRA_ONLY_FLAGS = (
    "hydra_help",
    "version",
    "info",
    "shell_completion",
    "experimental_rerun",
    "config_path",
    "config_name",
    "config_dir",
)
"""Hydra flags whose handling (or a config other than the entry point's) is left to Hydra."""


def hydra_entry(
    config_path: str, config_name: str
) -> Callable[[Callable[[DictConfig], T]], Callable[..., T | None]]:
    """``hydra.main(version_base="1.3", ...)`` with fast help and checked overrides.

    The task function is wrapped in :func:`~bsrlc.errors.exit_on_user_error` as well, so a
    :class:`~bsrlc.errors.BsrlcError` raised while it runs is a one-line message too.

    Args:
        config_path: the config directory (absolute, or relative to the working directory).
        config_name: the primary config in it, without ``.yaml``.

    Returns:
        A decorator turning ``task(cfg)`` into the entry point ``main()``.
    """
    import hydra

    def decorate(task: Callable[[DictConfig], T]) -> Callable[..., T | None]:
        hydra_main = hydra.main(
            version_base="1.3", config_path=config_path, config_name=config_name
        )(exit_on_user_error(task))

        @functools.wraps(task)
        @exit_on_user_error
        def main(cfg: DictConfig | None = None) -> T | None:
            if cfg is not None:  # called with a composed config: no command line to read
                return hydra_main(cfg)
            from hydra._internal.utils import get_args_parser

            args = get_args_parser().parse_args(sys.argv[1:])
            if not any(getattr(args, flag, None) for flag in HYDRA_ONLY_FLAGS):
                text = precheck(config_path, config_name, args.overrides, with_help=args.help)
                if text is not None:
                    print(text)
                    return None
            return hydra_main()

        return main

    return decorate


def precheck(
    config_path: str, config_name: str, overrides: list[str], with_help: bool = False
) -> str | None:
    """Check the overrides against the configs; ``with_help``: also render the help text.

    Args:
        config_path: the config directory.
        config_name: the primary config.
        overrides: the command line's overrides.
        with_help: render the help text (of the config composed with ``overrides``).

    Returns:
        The help text when ``with_help`` is set (and the config composes), else None.

    Raises:
        ConfigError: for an option of a config group, or a key, that does not exist.
    """
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    if GlobalHydra.instance().is_initialized():
        return None  # inside a running Hydra app (or a test's compose): nothing to check here
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return None  # a syntax error: Hydra explains it with the offending override
    config_dir = str(Path(config_path).resolve())
    with _hydra_context(config_dir) as options:
        groups = [o for o in parsed if options(o.key_or_group)]
        for o in groups:
            _check_group_option(o, options(o.key_or_group))
        cfg = None
        if not any(o.is_sweep_override() for o in groups):
            cfg = _compose(config_name, [o.input_line for o in groups if o.input_line])
        if cfg is not None:
            for o in parsed:
                if o not in groups:
                    _check_key(o, cfg, options)
        if not with_help:
            return None
        full = _compose(config_name, overrides) if overrides else cfg
        return None if full is None else help_text(full, options)


def help_text(cfg: DictConfig, options: Callable[[str], list[str]]) -> str:
    """Hydra's help template, with only the groups of this config listed.

    Args:
        cfg: the composed config, with its ``hydra`` node.
        options: the options of a config group.

    Returns:
        The help text.
    """
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import get_args_parser
    from omegaconf import OmegaConf

    groups = [g for g in cfg.hydra.runtime.choices if g != "hydra" and not g.startswith("hydra/")]
    lines = []
    for group in sorted(groups):
        names = sorted(options(group))
        if names:
            lines.append(f"{group}: {', '.join(names)}")
    app = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return string.Template(cfg.hydra.help.template).safe_substitute(
        FLAGS_HELP=Hydra.format_args_help(get_args_parser()),
        APP_CONFIG_GROUPS="\n".join(lines),
        HYDRA_CONFIG_GROUPS="use --hydra-help",
        CONFIG=OmegaConf.to_yaml(app),
    )


@contextmanager
def _hydra_context(config_dir: str) -> Iterator[Callable[[str], list[str]]]:
    """Hydra initialised on ``config_dir``; yields ``options(group)`` ([] when not a group)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    script = Path(sys.argv[0])
    job_name = (script.parent.name if script.stem == "__main__" else script.stem) or "app"
    with initialize_config_dir(config_dir=config_dir, version_base="1.3", job_name=job_name):
        loader = GlobalHydra.instance().config_loader()

        @functools.cache
        def options(group: str) -> list[str]:
            if group == "hydra" or group.startswith("hydra/"):
                return []  # Hydra's own groups: left to Hydra
            return list(loader.get_group_options(group))

        yield options


def _compose(config_name: str, overrides: list[str]) -> DictConfig | None:
    """The config composed like Hydra would, or None when it cannot be (Hydra will say why)."""
    from hydra import compose

    try:
        return compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    except Exception:  # any failure here is Hydra's to report, not ours
        return None


def _check_group_option(o: Override, names: list[str]) -> None:
    """Raise ConfigError if ``group=option`` names an option the group does not have."""
    from hydra.core.override_parser.types import ValueType

    if o.is_delete():
        return
    if o.is_sweep_override():
        if o.value_type not in (ValueType.CHOICE_SWEEP, ValueType.SIMPLE_CHOICE_SWEEP):
            return  # glob(...) and the like: Hydra expands them against the group itself
        chosen: list[Any] = list(o.sweep_string_iterator())
    else:
        value = o.value()
        chosen = value if isinstance(value, list) else [value]
    for name in chosen:
        if name is None or not isinstance(name, str) or "/" in name or name in names:
            continue
        raise ConfigError(
            f"{o.key_or_group}={name}: no such option of group {o.key_or_group}; "
            f"{_did_you_mean(name, names)}(options: {', '.join(sorted(names))})"
        )


def _check_key(o: Override, cfg: DictConfig, options: Callable[[str], list[str]]) -> None:
    """Raise ConfigError if the key of ``key=value`` (or ``~key``) is not in the config."""
    from omegaconf import DictConfig, OmegaConf

    key = o.key_or_group
    if o.is_add() or o.is_force_add() or key.startswith("hydra") or "/" in key:
        return  # new keys, Hydra's own settings and nested groups: Hydra's to judge
    node: Any = cfg
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, DictConfig) or node._is_none() or node._is_missing():
            return  # a list, a value or null below: Hydra's checks are enough
        keys = [str(k) for k in node.keys() if not (depth == 0 and k == "hydra")]
        if part not in keys:
            where = ".".join(parts[:depth])
            if depth == 0:  # a typo'd group name is a typo'd top-level key too
                keys += [g for g in cfg.hydra.runtime.choices if "/" not in g and options(g)]
            names = sorted(set(keys))
            close = _did_you_mean(part, names, prefix=f"{where}." if where else "")
            notes = [] if close else [f"keys: {', '.join(names)}"]
            if not o.is_delete():
                notes.append(f"+{key}=... adds a new key")
            what = f"{'~' if o.is_delete() else ''}{key}: no key {part!r} in {where or 'config'}"
            raise ConfigError(f"{what}{'; ' if close else ' '}{close}({'; '.join(notes)})")
        if OmegaConf.is_interpolation(node, part):
            return
        node = node._get_node(part)


def _did_you_mean(name: str, candidates: list[str], prefix: str = "") -> str:
    """``"did you mean a or b? "`` from the closest candidates, or ``""`` when none is close."""
    scored = [(difflib.SequenceMatcher(None, name, c).ratio(), c) for c in candidates]
    best = max((score for score, _ in scored), default=0.0)
    # the best match and any about as close (max_epoch: max_epochs, not min_epochs too)
    close = [c for score, c in sorted(scored, reverse=True) if score >= max(0.6, best - 0.1)][:3]
    return f"did you mean {' or '.join(prefix + c for c in close)}? " if close else ""


def parse_key_values(
    argv: Sequence[str], keys: dict[str, str | None], command: str
) -> dict[str, str]:
    """``key=value`` arguments of a small command without Hydra, defaults filled in.

    Args:
        argv: the arguments after the program name.
        keys: key -> default (None: required).
        command: how the command is run, named in errors (``python -m bsrlc.data.wald``).

    Returns:
        Every key, defaults filled in ("" for an optional key without one).

    Raises:
        ConfigError: for an unknown key (with the closest one) or a missing required one.
    """
    values = dict(keys)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in keys:
            close = difflib.get_close_matches(key, list(keys), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(
                f"unknown argument {arg!r}{hint}; use key=value with keys {', '.join(keys)} "
                f"({command} --help)"
            )
        values[key] = value
    missing = [k for k, v in values.items() if keys[k] is None and not v]
    if missing:
        raise ConfigError(f"missing {' '.join(k + '=...' for k in missing)} ({command} --help)")
    return {k: v or "" for k, v in values.items()}
