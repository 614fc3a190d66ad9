"""Reading checkpoints without running code from them: the one place bsrlc calls ``torch.load``.

A checkpoint is a pickle, and a pickle can call any function while it loads. Every entry point
(fitting with ``ckpt_path``, test-only runs, export, predict) reads checkpoints through
:func:`read_checkpoint`, which uses ``torch.load(weights_only=True)``: only tensors, numbers,
strings and containers are rebuilt, and a file that asks for anything else is refused with a
one-line :class:`~bsrlc.errors.InputError` before any of its code runs. Lightning is then given
``weights_only=True`` as well, so it reads the file under the same rule.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from bsrlc.errors import InputError

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _refusal(path: Path, err: Exception) -> InputError:
    """The one-line message for a checkpoint that ``torch.load(weights_only=True)`` refused."""
    text = _ANSI.sub("", str(err))
    found = _GLOBAL.search(text)
    asks_code = any(k in text.lower() for k in ("unsupported global", "unsupported class"))
    if found or (isinstance(err, pickle.UnpicklingError) and asks_code):
        what = f"`{found.group(1)}`" if found else "an object that is not plain data"
        return InputError(
            f"{path}: refused to load: the checkpoint asks to run {what} while it loads, and "
            "bsrlc reads only plain data (weights_only); use a checkpoint written by bsrlc's "
            "train.py, or re-save a trusted one with its objects converted to plain data"
        )
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(err).__name__)
    return InputError(
        f"{path}: not a readable checkpoint ({first[:120]}); the file is truncated or not a "
        "torch checkpoint: give another file, or delete it and resume from an earlier one"
    )


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint's contents as plain data, never running code stored in it.

    Args:
        path: a ``.ckpt`` file.

    Returns:
        The checkpoint dictionary (tensors on the CPU).

    Raises:
        InputError: if the file is missing, truncated, not a checkpoint, or needs arbitrary
            objects (a pickle that would run code); the message is one line.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found; give an existing .ckpt file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # every failure becomes one line naming the file
        raise _refusal(path, err) from None
    if not isinstance(ckpt, dict):
        raise InputError(
            f"{path}: holds a {type(ckpt).__name__}, not a checkpoint dictionary; give a .ckpt "
            "written by train.py"
        )
    return ckpt


def check_checkpoint(path: str | Path) -> str:
    """Refuse an unsafe or unreadable checkpoint before Lightning opens it.

    Args:
        path: a ``.ckpt`` file.

    Returns:
        The path as a string, for ``trainer.fit(ckpt_path=...)`` / ``trainer.test``.

    Raises:
        InputError: as :func:`read_checkpoint`, and for a checkpoint without bsrlc metadata.
    """
    ckpt = read_checkpoint(path)
    if "state_dict" not in ckpt:
        raise InputError(
            f"{path}: no state_dict; not a Lightning checkpoint: give a .ckpt written by train.py"
        )
    return str(path)
