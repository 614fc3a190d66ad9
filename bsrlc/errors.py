"""User-facing errors.

Every problem a user can fix (bad input files, a wrong config) raises a :class:`BsrlcError` whose
message is one line naming the file, the problem and the fix. Entry points catch it, print
``error: <message>`` and exit with status 2 instead of showing a traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class BsrlcError(Exception):
    """A problem with the user's input or configuration, explained in one line."""


class InputError(BsrlcError):
    """Input data that cannot be used as given (wrong CRS, misaligned grids, missing bands...)."""


class ConfigError(BsrlcError):
    """A configuration value that is missing, unknown or inconsistent."""


# Files the demo workflow makes, and the stage that makes them (see bsrlc.demo).
_MADE_BY = (
    ("/demo/stm/", "python -m bsrlc.demo stage=stm"),
    ("/demo/points/", "python -m bsrlc.demo stage=world"),
    ("/demo/regions.geojson", "python -m bsrlc.demo stage=world"),
    ("/demo/truth/", "python -m bsrlc.demo stage=world"),
    ("/features/landsat_", "python -m bsrlc.demo stage=sr"),
    ("/runs/classify_", "python -m bsrlc.demo stage=classify"),
    ("/runs/sr/", "python -m bsrlc.demo stage=sr"),
)


def missing_file_fix(path: object, default: str) -> str:
    """The fix to name for a missing file: the command that makes it, if bsrlc makes it.

    Args:
        path: the missing file.
        default: the fix for any other file.

    Returns:
        E.g. ``"make it with: python -m bsrlc.demo stage=stm"``.
    """
    text = str(path).replace("\\", "/")
    for part, command in _MADE_BY:
        if part in text:
            return f"make it with: {command} (or fix the path)"
    return default


def exit_on_user_error(func: Callable[..., T]) -> Callable[..., T]:
    """Turn a :class:`BsrlcError` raised by ``func`` into a one-line message and exit status 2.

    Args:
        func: an entry-point function.

    Returns:
        The wrapped function.
    """

    @functools.wraps(func)
    def wrapper(*args: object, **kwargs: object) -> T:
        try:
            return func(*args, **kwargs)
        except BsrlcError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
