"""User-facing errors.

Every problem a user can fix (bad input files, a wrong config) raises a :class:`BsrlcError` whose
message is one line naming the file, the problem and the fix. Entry points catch it, print
``error: <message>`` and exit with status 2 instead of showing a traceback.
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
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


class DiskFullError(InputError):
    """A write failed because the disk (or the user's quota) is full."""


DISK_FULL_CODES = (errno.ENOSPC, errno.EDQUOT)
DISK_FULL_WORDS = ("no space left", "disk full", "quota exceeded", "not enough space")
LOW_SPACE = 4 * 2**20
"""Free bytes below which a failed write is taken for a full disk (GDAL and torch often lose the
system's reason: "Write failed", "unexpected pos")."""


def free_bytes(folder: str | os.PathLike[str]) -> int:
    """Free bytes on the file system of ``folder`` (or of its nearest existing parent).

    Args:
        folder: a folder, which need not exist yet.

    Returns:
        The bytes available to this user, or -1 if they cannot be found.
    """
    path = os.path.abspath(os.fspath(folder))
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return -1


def format_bytes(n: float) -> str:
    """``n`` bytes as ``"812 KiB"``, ``"3.4 MiB"`` or ``"1.25 GiB"``."""
    if n < 0:
        return "unknown"
    if n < 2**20:
        return f"{n / 2**10:.0f} KiB"
    if n < 2**30:
        return f"{n / 2**20:.1f} MiB"
    return f"{n / 2**30:.2f} GiB"


def is_disk_full(err: BaseException, folder: str | os.PathLike[str], need: int = 0) -> bool:
    """Whether a failed write into ``folder`` looks like a full disk.

    True for ENOSPC / EDQUOT anywhere in the exception's chain, for a message saying so, or when
    less than ``max(need, LOW_SPACE)`` bytes are left (call it before removing what the failed
    write left).

    Args:
        err: the exception.
        folder: where it was writing.
        need: bytes the write needed, if known.

    Returns:
        Whether to report a full disk.
    """
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if getattr(e, "errno", None) in DISK_FULL_CODES:
            return True
        if any(w in str(e).lower() for w in DISK_FULL_WORDS):
            return True
        e = e.__cause__ or e.__context__
    free = free_bytes(folder)
    return 0 <= free < max(need, LOW_SPACE)


def disk_full_error(
    folder: str | os.PathLike[str], what: str, kept: str = "", key: str = "out_dir"
) -> DiskFullError:
    """The one-line error for a write that found the disk full.

    Args:
        folder: where it was writing.
        what: what it was writing (``"tile X0001_Y0002.tif"``).
        kept: what is kept for the rerun (``"12 of 40 tiles are finished and kept"``).
        key: the setting that chooses the folder.

    Returns:
        The error to raise.
    """
    kept = f"; {kept}" if kept else ""
    return DiskFullError(
        f"{folder}: disk full while writing {what} ({format_bytes(free_bytes(folder))} free)"
        f"{kept}; free space (or choose another {key}) and rerun"
    )


def check_free_space(
    folder: str | os.PathLike[str], need: int, what: str, key: str = "out_dir"
) -> None:
    """Refuse early when ``folder`` clearly lacks the ``need`` bytes ``what`` will take.

    Args:
        folder: where the output goes (need not exist yet).
        need: a low estimate of the bytes needed.
        what: what needs them (``"the 40 STM tiles to compute"``).
        key: the setting that chooses the folder.

    Raises:
        DiskFullError: if less than ``need`` bytes are free.
    """
    free = free_bytes(folder)
    if 0 <= free < need:
        raise DiskFullError(
            f"{folder}: {format_bytes(free)} free, but {what} need at least about "
            f"{format_bytes(need)}; free space or choose another {key}"
        )


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

    So is an ``OSError`` of a full disk (ENOSPC, EDQUOT), naming the folder and its free space.

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
        except OSError as err:  # a full disk where no writer said so (logs, tables, figures)
            if err.errno not in DISK_FULL_CODES:
                raise
            name = os.fsdecode(err.filename) if err.filename else ""
            folder = os.path.dirname(os.path.abspath(name)) if name else os.getcwd()
            what = os.path.basename(name) if name else "an output"
            print(f"error: {disk_full_error(folder, what, key='output folder')}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
