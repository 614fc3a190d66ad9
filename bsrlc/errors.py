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
