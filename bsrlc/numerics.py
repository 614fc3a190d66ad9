"""Reproducible CPU numerics: the same weights whatever the thread count, load or x86 CPU.

Training on CPU is deterministic for a given process setup, but float sums depend on how they
are split: torch splits reductions over its intra-op threads (``OMP_NUM_THREADS``, by default
the machine's cores) and picks kernels by the widest vector unit it finds (AVX2 or AVX-512),
and so do oneDNN (convolutions) and MKL (matrix products). Two tiny classifier runs started with
1 and with 2 threads differ by 8e-8 in their weights after three epochs; over a long SR run
such differences grow into visibly different tables.

:func:`pin_cpu_numerics` fixes both: a fixed number of intra-op threads, and the instruction
set capped for ATen (``ATEN_CPU_CAPABILITY``), oneDNN (``ONEDNN_MAX_CPU_ISA``) and MKL
(``MKL_CBWR``, its conditional numerical reproducibility mode). torch reads these lazily (at
its first kernel dispatch, first oneDNN primitive, first MKL call), so they must be set before
the first tensor operation of the process; a capability fixed earlier is reported.

``python train.py numerics.threads=2 numerics.cpu_isa=avx2`` (``conf/train.yaml``) and ``python
-m bsrlc.demo`` (always) use it. The price: the pinned thread count (no more cores used) and,
on AVX-512 machines, the slower AVX2 kernels; GPU runs are unaffected (cuDNN has its own
``trainer.deterministic``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from bsrlc.errors import ConfigError

log = logging.getLogger(__name__)

ISAS = {"default": ("default", "SSE41", "COMPATIBLE"), "avx2": ("avx2", "AVX2", "AVX2")}
"""``cpu_isa`` -> (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, MKL_CBWR)."""


def pin_cpu_numerics(threads: int | None = None, cpu_isa: str | None = None) -> dict[str, Any]:
    """Fix the intra-op thread count and the CPU instruction set of torch, oneDNN and MKL.

    Args:
        threads: torch intra-op threads (None: leave as is).
        cpu_isa: ``avx2`` (any x86 CPU of the last decade) or ``default`` (no vector
            extensions: slow, for CPUs without AVX2); None: leave as is.

    Returns:
        What is in effect: ``{"threads", "cpu_capability"}`` (``cpu_capability`` None when
        ``cpu_isa`` is None).

    Raises:
        ConfigError: for an unknown ``cpu_isa`` or a thread count below 1.
    """
    if cpu_isa is not None and cpu_isa not in ISAS:
        raise ConfigError(f"numerics.cpu_isa={cpu_isa}: use {', '.join(ISAS)} or null")
    if threads is not None and int(threads) < 1:
        raise ConfigError(f"numerics.threads={threads}: use a positive count or null")
    capability = None
    if cpu_isa is not None:
        aten, onednn, mkl = ISAS[cpu_isa]
        os.environ["ATEN_CPU_CAPABILITY"] = aten
        os.environ["ONEDNN_MAX_CPU_ISA"] = onednn
        os.environ["MKL_CBWR"] = mkl
    import torch

    if cpu_isa is not None:
        capability = torch.backends.cpu.get_cpu_capability()
        # ATen takes the lower of the requested and the supported capability
        if cpu_isa == "avx2" and capability not in {"AVX2", "DEFAULT"}:
            log.warning(
                "numerics.cpu_isa=avx2 came too late: torch already uses %s kernels (set it "
                "before the first tensor operation)",
                capability,
            )
    if threads is not None:
        torch.set_num_threads(int(threads))
    return {"threads": torch.get_num_threads(), "cpu_capability": capability}


def pin_from_config(cfg: Any) -> dict[str, Any] | None:
    """Apply ``cfg.numerics`` (``threads``, ``cpu_isa``) when either is set.

    Args:
        cfg: a composed config with an optional ``numerics`` node.

    Returns:
        :func:`pin_cpu_numerics`'s result, or None when nothing is pinned.
    """
    node = cfg.get("numerics") if hasattr(cfg, "get") else None
    if not node or (node.get("threads") is None and node.get("cpu_isa") is None):
        return None
    state = pin_cpu_numerics(node.get("threads"), node.get("cpu_isa"))
    log.info("CPU numerics pinned: %s", state)
    return state
