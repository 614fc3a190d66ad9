"""Dense inference vs classifying every pixel's patch, same model and weights, side by side.

    python benchmarks/dense.py [--quick] [--size 1024] [--channels 24] [--no-malloc-tuning]

Builds the default :class:`~bsrlc.models.centre_patch.CentrePatchCNN` (random weights, random
BatchNorm statistics, eval mode) and its attention variant (``conf/model/centre_patch_attention``:
the same convs, the centre attending over the 3 x 3 feature window), and classifies a size x size
tile (plus its P // 2 halo) twice: in one dense pass (``forward_dense``) and patch by patch
(``extract_patches`` + ``forward`` in batches). The per-patch path is timed on the first
``--rows`` output rows and extrapolated linearly to the whole tile (it does the same work for
every row); its logits on those rows are compared with the dense ones. ``flop_ratio`` is the
ratio of the arithmetic both paths do (counted by ``torch.utils.flop_counter``): dense
evaluation removes the recomputation of overlapping patches, so its speedup tracks that ratio.

glibc's default malloc returns large freed blocks to the OS, so every big temporary tensor is
page-faulted in afresh (about 4 us per 4 KiB page on small VMs); PyTorch's CPU tuning guide
recommends an allocator that keeps memory (jemalloc/tcmalloc). Without LD_PRELOAD, the script
tunes glibc to the same effect (``mallopt``) for both paths; ``--no-malloc-tuning`` turns that off.
It also sets ``OMP_WAIT_POLICY=PASSIVE`` (unless set): on a machine shared with other jobs,
spinning OpenMP threads that get descheduled stall every parallel region of both paths.

Prints human lines and, last, one JSON line: {"benchmark": "dense", "speedup_vs_per_patch": ...,
"max_abs_diff": ..., "mpix_per_s": ..., "attention": {...}, ...}.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import time
from typing import Any

# Idle OpenMP threads sleep instead of spinning: on a shared machine a spinning thread that is
# descheduled stalls every parallel region (must be set before torch loads OpenMP).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bsrlc.models.centre_patch import CentrePatchCNN, extract_patches

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3


def tune_glibc_malloc() -> str:
    """Keep freed heap memory for reuse instead of returning it to the OS (glibc only).

    Returns:
        What was done, for the JSON.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        ok = (
            libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)  # the largest glibc allows
            and libc.mallopt(M_TRIM_THRESHOLD, 2 << 30)
            and libc.mallopt(M_TOP_PAD, 64 << 20)
        )
    except (OSError, AttributeError):
        return "default (not glibc)"
    return "glibc mallopt: mmap_threshold 32 MiB, trim_threshold 2 GiB" if ok else "default"


def randomise(model: nn.Module, seed: int) -> nn.Module:
    """Give BatchNorm layers non-trivial statistics so eval-mode norm is not the identity.

    Args:
        model: the network.
        seed: RNG seed.

    Returns:
        The model in eval mode.
    """
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(c, generator=gen) * 0.2 - 0.1)
    return model.eval()


def compare(model: CentrePatchCNN, tile: torch.Tensor, rows: int, batch: int) -> dict[str, Any]:
    """Time the dense pass over the tile and the per-patch path on its first rows.

    Args:
        model: the network (eval mode).
        tile: (1, C, H + 2h, W + 2h) input with halo.
        rows: output rows classified patch by patch.
        batch: patches per forward call.

    Returns:
        Timings, throughput, speedup and the largest logit difference.
    """
    p, halo = model.patch_size, model.halo
    h, w = tile.shape[2] - 2 * halo, tile.shape[3] - 2 * halo
    with torch.inference_mode():
        model.forward_dense(tile[:, :, : 8 + 2 * halo, :256])  # warm-up (oneDNN primitives)
        model(extract_patches(tile[:, :, :p, : p + 7], p))
        t0, c0 = time.perf_counter(), time.process_time()
        dense = model.forward_dense(tile)  # (1, K, H, W)
        t_dense, c_dense = time.perf_counter() - t0, time.process_time() - c0

        r0 = h // 2  # rows from the middle of the tile
        t0, c0 = time.perf_counter(), time.process_time()
        patches = extract_patches(tile[:, :, r0 : r0 + rows + 2 * halo], p)  # (rows * W, C, P, P)
        per_patch = torch.cat(
            [model(patches[i : i + batch]) for i in range(0, len(patches), batch)]
        )
        t_rows, c_rows = time.perf_counter() - t0, time.process_time() - c0
        # the arithmetic each path does (convs and matmuls; the dense pass counted over the
        # whole tile, the per-patch path over one row): the speedup dense evaluation can
        # reach is about their ratio
        with FlopCounterMode(display=False) as dense_flops:
            model.forward_dense(tile)
        with FlopCounterMode(display=False) as patch_flops:
            model(extract_patches(tile[:, :, r0 : r0 + 1 + 2 * halo], p))
    t_patch = t_rows * h / rows  # linear in rows: every row is the same amount of work
    # CPU time (all threads) is the work done; wall time also counts waiting for a busy machine
    cpu_speedup = c_rows * h / rows / c_dense
    ref = dense[0, :, r0 : r0 + rows].permute(1, 2, 0).reshape(-1, dense.shape[1])  # (rows*W, K)
    return {
        "dense_s": round(t_dense, 2),
        "per_patch_s_extrapolated": round(t_patch, 1),
        "per_patch_rows_timed": rows,
        "per_patch_s_timed": round(t_rows, 2),
        "speedup_vs_per_patch": round(t_patch / t_dense, 1),
        "cpu_time_speedup": round(cpu_speedup, 1),
        "flop_ratio": round(patch_flops.get_total_flops() * h / dense_flops.get_total_flops(), 1),
        "max_abs_diff": float((per_patch - ref).abs().max()),
        "max_abs_logit": float(ref.abs().max()),
        "mpix_per_s": round(h * w / t_dense / 1e6, 4),
        "per_patch_mpix_per_s": round(h * w / t_patch / 1e6, 5),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer per-patch rows (< 2 min, 2 cores)")
    ap.add_argument("--size", type=int, default=1024, help="tile edge (output pixels)")
    ap.add_argument("--channels", type=int, default=24, help="input bands")
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--rows", type=int, default=None, help="per-patch rows to time")
    ap.add_argument("--batch", type=int, default=1024, help="patches per forward call")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-malloc-tuning", action="store_true", help="keep glibc's defaults")
    ap.add_argument("--hidden", type=int, default=None, help="hidden width of the CNN's head")
    ap.add_argument("--attn-dim", type=int, default=128, help="token width of the attention")
    ap.add_argument(
        "--attn-channels",
        default="32,32,64,64,128,128",
        help="conv widths of the attention variant (conf/model/centre_patch_attention.yaml)",
    )
    args = ap.parse_args()
    allocator = "default" if args.no_malloc_tuning else tune_glibc_malloc()
    torch.set_num_threads(args.threads)
    rows = args.rows or (6 if args.quick else 24)

    torch.manual_seed(0)
    results: dict[str, dict[str, Any]] = {}
    for name, attention in (("cnn", False), ("attention", True)):
        kwargs: dict[str, Any] = {}
        if attention:
            channels = [int(c) for c in args.attn_channels.split(",")]
            kwargs = {"attention": True, "attn_dim": args.attn_dim, "channels": channels}
        net = CentrePatchCNN(args.channels, args.classes, hidden=args.hidden, **kwargs)
        model = randomise(net, 1)
        gen = torch.Generator().manual_seed(2)
        n = args.size + 2 * model.halo
        tile = torch.randn(1, args.channels, n, n, generator=gen)
        results[name] = compare(model, tile, rows, args.batch)
        r = results[name]
        print(
            f"{name:9s} dense {r['dense_s']:6.1f} s ({r['mpix_per_s']:.3f} Mpx/s) | per patch "
            f"{r['per_patch_s_extrapolated']:7.1f} s (from {rows} rows) | speedup "
            f"{r['speedup_vs_per_patch']:5.1f}x (CPU time {r['cpu_time_speedup']:.1f}x, "
            f"FLOP ratio {r['flop_ratio']:.1f}x) | "
            f"max |diff| {r['max_abs_diff']:.2e} "
            f"(logits up to {r['max_abs_logit']:.2f})"
        )
    cnn, att = results["cnn"], results["attention"]
    print(
        f"tile {args.size}x{args.size}x{args.channels}, P=15, {args.threads} threads, "
        f"batch {args.batch}, allocator: {allocator}"
    )
    print(
        json.dumps(
            {
                "benchmark": "dense",
                "speedup_vs_per_patch": cnn["speedup_vs_per_patch"],
                "max_abs_diff": cnn["max_abs_diff"],
                "mpix_per_s": cnn["mpix_per_s"],
                "per_patch_rows_timed": rows,
                "cpu_time_speedup": cnn["cpu_time_speedup"],
                "flop_ratio": cnn["flop_ratio"],
                "dense_s": cnn["dense_s"],
                "per_patch_s_extrapolated": cnn["per_patch_s_extrapolated"],
                "attention": {
                    k: att[k]
                    for k in (
                        "speedup_vs_per_patch",
                        "cpu_time_speedup",
                        "flop_ratio",
                        "max_abs_diff",
                        "mpix_per_s",
                        "dense_s",
                        "per_patch_s_extrapolated",
                    )
                },
                "tile": [args.size, args.size, args.channels],
                "hidden": args.hidden,
                "attn_dim": args.attn_dim,
                "attn_channels": args.attn_channels,
                "patch_size": 15,
                "threads": args.threads,
                "batch": args.batch,
                "allocator": allocator,
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                "device": "cpu",
            }
        )
    )


if __name__ == "__main__":
    main()
