"""Score a super-resolved raster against its HR reference and LR input, with baselines.

Usage (one line)::

    python -m bsrlc.evaluation.sr sr=SR.tif hr=HR.tif lr=LR.tif out=scores.json
        [scale=3] [bands=BLU_P50,GRN_P50,...] [input_scale=1e-4] [data_range=1.0]
        [border=15] [tile=240]

Writes a JSON file whose top level holds the SR's scores (``psnr ssim sam ergas`` of
:class:`~bsrlc.evaluation.sr_metrics.SRMetrics` and :data:`~bsrlc.evaluation.sr_metrics.
QUALITY_KEYS` of :class:`~bsrlc.evaluation.sr_metrics.SRQuality`), the same scores of the
baselines made from the LR (``bicubic``; ``bicubic_harmonised``: bicubic with per-band gains and
offsets fitted to the HR over the whole raster) and of the HR itself (``hr``: the floor of every
score, e.g. the consistency a perfect Sentinel-2 estimate has with a Landsat LR), plus units,
the settings and how many pixels counted. Infinite or undefined values (the HR's PSNR) are
written as null.

Grids: SR and HR on one grid; the HR nested in the LR (HR pixel = LR pixel / ``scale``, HR
origin on an LR pixel corner, HR inside the LR). Bands: ``bands=`` names them by description
(patterns like ``*_P50``, matched in the SR) in all three rasters; without it, the SR's band
descriptions are looked up in HR and LR, or, without descriptions, bands pair by position.
Reflectance: each raster's values x ``input_scale`` when it is given; else the raster's GDAL
scale/offset tags when set; else float rasters as they are and integer rasters x 1e-4.

The rasters are read in tiles of about ``tile`` HR pixels, each with a halo of ``border`` pixels
that the metrics crop off again (opensr-test's border, :func:`~bsrlc.evaluation.sr_metrics.
nested_border`: 15 at x3): so every score covers the raster less ``border`` pixels along its
edges, the bicubic baselines are seamless, and per-image quantities (correctness's threshold,
the spectra, the best shift) are per tile. Tiles touching nodata or non-finite values in any
of the three rasters are skipped and counted. No argument, ``help`` or ``--help`` print the
usage.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bsrlc.errors import ConfigError, InputError, exit_on_user_error

if TYPE_CHECKING:
    import numpy as np
    import rasterio

    from bsrlc.raster import RasterInfo

USAGE = (
    "usage: python -m bsrlc.evaluation.sr sr=SR.tif hr=HR.tif lr=LR.tif out=scores.json\n"
    "         [scale=3] [bands=NAME,...] [input_scale=S] [data_range=1.0] [border=B] [tile=240]\n"
    "  SR and HR on one grid, the HR nested in the LR (pixel size / scale, origin on the LR grid)\n"
    "  bands: band descriptions or patterns (*_P50); default: the SR's descriptions, or all\n"
    "  input_scale: reflectance per stored unit; default: GDAL scale/offset tags, else 1 for\n"
    "    float rasters and 1e-4 for integer ones\n"
    "  border: HR pixels left out along the edges (multiple of scale; default opensr-test's 16\n"
    "    rounded down to one: 15 at x3)"
)

_KEYS: dict[str, str | None] = {
    "sr": None,
    "hr": None,
    "lr": None,
    "out": None,
    "scale": "3",
    "bands": "",
    "input_scale": "",
    "data_range": "1.0",
    "border": "",
    "tile": "240",
}
"""Command-line keys and defaults (None: required)."""

HELP = ("-h", "--help", "help")
"""Arguments that print the usage (as does no argument at all)."""

MAX_PIXELS = 200_000_000
"""The largest HR raster scored (pixels): about an hour of CPU for the four rows of scores."""

ROWS = ("sr", "bicubic", "bicubic_harmonised", "hr")
"""The rows of scores: the SR, both baselines, and the HR itself."""


def parse_args(argv: Sequence[str]) -> dict[str, str]:
    """Parse ``key=value`` arguments.

    Args:
        argv: the arguments after the program name.

    Returns:
        Every key of the command, defaults filled in.

    Raises:
        ConfigError: for an unknown key or a missing required one.
    """
    from bsrlc.cli import parse_key_values

    return parse_key_values(argv, _KEYS, "python -m bsrlc.evaluation.sr")


def _number(values: dict[str, str], key: str, kind: type) -> Any:
    try:
        return kind(values[key])
    except ValueError:
        raise ConfigError(f"{key}={values[key]}: not a {kind.__name__}") from None


# -- inputs ------------------------------------------------------------------------------------


def _select_bands(
    infos: dict[str, RasterInfo], bands: Sequence[str] | None
) -> tuple[list[str], dict[str, list[int]]]:
    """Band names and each raster's 1-based band indexes, in one order."""
    from bsrlc.raster import band_indices, expand_band_patterns

    sr, hr, lr = infos["sr"], infos["hr"], infos["lr"]
    if bands:
        names = expand_band_patterns(sr, bands)
        return names, {k: band_indices(info, names) for k, info in infos.items()}
    if all(sr.descriptions) and all(set(sr.descriptions) <= set(i.descriptions) for i in (hr, lr)):
        names = list(sr.descriptions)
        return names, {k: band_indices(info, names) for k, info in infos.items()}
    if sr.count == hr.count == lr.count:
        names = [d or f"band{i + 1}" for i, d in enumerate(sr.descriptions)]
        return names, {k: list(range(1, hr.count + 1)) for k in infos}
    raise InputError(
        f"{sr.name}, {hr.name} and {lr.name}: {sr.count}, {hr.count} and {lr.count} bands without "
        "matching band descriptions; name the bands to compare with bands=NAME,... "
        "(or give rasters with the same bands)"
    )


def raster_scaling(
    src: rasterio.io.DatasetReader, indexes: Sequence[int], input_scale: float | None
) -> tuple[np.ndarray, np.ndarray, str]:
    """Per-band reflectance = stored value x scale + offset.

    Args:
        src: the open raster.
        indexes: its 1-based bands to read.
        input_scale: the scale given on the command line, or None.

    Returns:
        (scale (C,), offset (C,), where they come from).
    """
    import numpy as np

    n = len(indexes)
    if input_scale is not None:
        return np.full(n, input_scale), np.zeros(n), f"input_scale={input_scale:g}"
    scales = np.array([src.scales[i - 1] for i in indexes], dtype=np.float64)
    offsets = np.array([src.offsets[i - 1] for i in indexes], dtype=np.float64)
    if np.any(scales != 1) or np.any(offsets != 0):
        return scales, offsets, "GDAL scale/offset tags"
    if np.issubdtype(np.dtype(src.dtypes[indexes[0] - 1]), np.floating):
        return np.ones(n), np.zeros(n), "float: as stored"
    return np.full(n, 1e-4), np.zeros(n), "integer: x 1e-4"


def _splits(length: int, tile: int, scale: int) -> list[tuple[int, int]]:
    """(start, size) pieces of ``length`` (a multiple of ``scale``), about ``tile`` long."""
    units = length // scale
    n = max(1, min(units, round(length / tile)))
    base, extra = divmod(units, n)
    out, start = [], 0
    for i in range(n):
        size = (base + (i < extra)) * scale
        out.append((start, size))
        start += size
    return out


class _Layout:
    """Where the scored region lies in the HR and LR rasters, and its tiles."""

    def __init__(self, hr: RasterInfo, lr: RasterInfo, scale: int, border: int, tile: int) -> None:
        lrx, lry = lr.res
        self.scale, self.border = scale, border
        self.lr_col = round((hr.transform.c - lr.transform.c) / lrx)
        self.lr_row = round((lr.transform.f - hr.transform.f) / lry)
        self.width = (hr.width // scale) * scale  # whole LR pixels only
        self.height = (hr.height // scale) * scale
        if (
            self.lr_col < 0
            or self.lr_row < 0
            or self.lr_col + self.width // scale > lr.width
            or self.lr_row + self.height // scale > lr.height
        ):
            raise InputError(
                f"{hr.name} and {lr.name}: the HR extent is not inside the LR extent; crop the "
                "HR (and SR) to the LR's bounds (gdalwarp -te <LR bounds>) or give an LR that "
                "covers them"
            )
        inner_w, inner_h = self.width - 2 * border, self.height - 2 * border
        if min(inner_w, inner_h) < 11:
            raise InputError(
                f"{hr.name}: {hr.width}x{hr.height} px leave {max(inner_w, 0)}x"
                f"{max(inner_h, 0)} px inside a border of {border}; give a larger raster or "
                "a smaller border="
            )
        self.cols = _splits(inner_w, tile, scale)
        self.rows = _splits(inner_h, tile, scale)

    def tiles(self) -> Iterator[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]]:
        """Each tile's HR and LR windows (col, row, width, height), halo included."""
        b, s = self.border, self.scale
        for r0, h in self.rows:
            for c0, w in self.cols:
                hr_win = (c0, r0, w + 2 * b, h + 2 * b)  # interior offset b cancels the halo
                lr_win = (
                    self.lr_col + c0 // s,
                    self.lr_row + r0 // s,
                    hr_win[2] // s,
                    hr_win[3] // s,
                )
                yield hr_win, lr_win


def _read(
    src: rasterio.io.DatasetReader,
    indexes: Sequence[int],
    window: tuple[int, int, int, int],
    scaling: tuple[np.ndarray, np.ndarray, str],
) -> tuple[np.ndarray, bool]:
    """A window as float32 reflectance (C, H, W), and whether it is free of nodata/NaN."""
    import numpy as np
    from rasterio.windows import Window

    raw = src.read(list(indexes), window=Window(*window))
    ok = True
    if src.nodata is not None:
        ok = not bool(np.isnan(raw).any() if math.isnan(src.nodata) else (raw == src.nodata).any())
    scale, offset = scaling[0][:, None, None], scaling[1][:, None, None]
    out = (raw.astype(np.float64) * scale + offset).astype(np.float32)
    return out, ok and bool(np.isfinite(out).all())


def score_rasters(
    sr: str | Path,
    hr: str | Path,
    lr: str | Path,
    scale: int = 3,
    bands: Sequence[str] | None = None,
    input_scale: float | None = None,
    data_range: float = 1.0,
    border: int | None = None,
    tile: int = 240,
) -> dict[str, Any]:
    """Score an SR raster, the bicubic baselines and the HR itself (see the module doc).

    Args:
        sr: the super-resolved raster.
        hr: the HR reference on the SR's grid.
        lr: the LR input the HR nests in.
        scale: the resolution ratio.
        bands: band descriptions or patterns to compare; None: see the module doc.
        input_scale: reflectance per stored unit; None: tags, else by data type.
        data_range: the reflectance range of PSNR and SSIM.
        border: HR pixels left out along the edges (a multiple of ``scale``); None: 15 at x3.
        tile: about how many HR pixels a tile's side has.

    Returns:
        The JSON document as a dict (floats; None for non-finite values).

    Raises:
        InputError: for rasters that do not fit together, are too large, or have no tile free
            of nodata.
        ConfigError: for a border that is not a multiple of the scale.
    """
    import torch

    from bsrlc.evaluation.sr_metrics import (
        METRIC_UNITS,
        QUALITY_HIGHER_IS_BETTER,
        QUALITY_UNITS,
        BandGainFitter,
        SRMetrics,
        SRQuality,
        apply_band_gains,
        bicubic_upsample,
        crop_border,
        nested_border,
    )
    from bsrlc.raster import check_aligned, check_same_grid, open_raster, raster_info

    border = nested_border(scale) if border is None else border
    if border < 0 or border % scale:
        raise ConfigError(f"border={border}: must be a multiple of scale={scale} (0, 3, 6, ...)")
    if tile < 3 * scale:
        raise ConfigError(f"tile={tile}: give at least {3 * scale} HR pixels")
    paths = {"sr": sr, "hr": hr, "lr": lr}
    infos = {k: raster_info(p) for k, p in paths.items()}
    check_same_grid([infos["hr"], infos["sr"]], "the SR and HR rasters")
    check_aligned(infos["lr"], infos["hr"], scale)
    pixels = infos["hr"].width * infos["hr"].height
    if pixels > MAX_PIXELS:
        raise InputError(
            f"{infos['hr'].name}: {pixels / 1e6:.0f} Mpx is more than the {MAX_PIXELS / 1e6:.0f} "
            "Mpx scored at once; score a region (gdal_translate -srcwin on SR and HR, "
            "-projwin on the LR)"
        )
    names, indexes = _select_bands(infos, bands)
    layout = _Layout(infos["hr"], infos["lr"], scale, border, tile)

    srcs = {k: open_raster(p) for k, p in paths.items()}
    try:
        scalings = {k: raster_scaling(srcs[k], indexes[k], input_scale) for k in paths}

        def tiles() -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None]:
            for hr_win, lr_win in layout.tiles():
                arrays, ok = {}, True
                for k, win in (("sr", hr_win), ("hr", hr_win), ("lr", lr_win)):
                    arrays[k], good = _read(srcs[k], indexes[k], win, scalings[k])
                    ok = ok and good
                if not ok:
                    yield None
                    continue
                yield tuple(torch.from_numpy(arrays[k])[None] for k in ("sr", "lr", "hr"))  # type: ignore[misc]

        fitter = BandGainFitter()  # pass 1: the harmonised baseline's gains over the raster
        valid_tiles = 0
        for t in tiles():
            if t is not None:
                _, lr_t, hr_t = t
                up = bicubic_upsample(lr_t, scale)
                fitter.update(crop_border(up, border), crop_border(hr_t, border))
                valid_tiles += 1
        if not valid_tiles:
            raise InputError(
                f"{infos['sr'].name}, {infos['hr'].name} and {infos['lr'].name}: every tile "
                "touches nodata or non-finite values in one of them; give rasters with valid "
                "pixels inside the border (or a smaller tile=)"
            )
        gains = fitter.compute()

        plain = {r: SRMetrics(data_range, float(scale)) for r in ROWS}
        quality = {r: SRQuality(scale, data_range, border) for r in ROWS}
        scored = skipped = 0
        for t in tiles():  # pass 2: the scores
            if t is None:
                skipped += 1
                continue
            sr_t, lr_t, hr_t = t
            up = bicubic_upsample(lr_t, scale)
            estimates = {
                "sr": sr_t,
                "bicubic": up,
                "bicubic_harmonised": apply_band_gains(up, *gains),
                "hr": hr_t,
            }
            for row, est in estimates.items():
                plain[row].update(crop_border(est, border), crop_border(hr_t, border))
                quality[row].update(est, lr_t, hr_t)
            scored += crop_border(hr_t, border)[0, 0].numel()
    finally:
        for src in srcs.values():
            src.close()

    rows = {}
    for row in ROWS:
        values = {**plain[row].compute(), **quality[row].compute()}
        rows[row] = {k: _finite(v) for k, v in values.items()}
    units = {**METRIC_UNITS, **QUALITY_UNITS}
    better = {"psnr": True, "ssim": True, "sam": False, "ergas": False, **QUALITY_HIGHER_IS_BETTER}
    n_tiles = len(layout.rows) * len(layout.cols)
    return {
        **rows["sr"],
        **{row: rows[row] for row in ROWS[1:]},
        "units": units,
        "higher_is_better": better,
        "inputs": {
            **{k: str(infos[k].name) for k in paths},
            "bands": names,
            "reflectance": {k: scalings[k][2] for k in paths},
        },
        "settings": {
            "scale": scale,
            "border": border,
            "tile": tile,
            "data_range": data_range,
            "reference": "bicubic",
            "harmonise": "histogram matching to the HR (synthesis, correctness)",
            "correctness_norm": "percent",
            "consistency": "mean |3x3 block mean of SR - LR|",
            "psnr_shift": "best of integer shifts up to 2 HR px, per-band bias removed",
        },
        "pixels_scored": scored,
        "tiles": {"scored": n_tiles - skipped, "skipped_nodata": skipped},
        "harmonised_gains": {"gain": gains[0].tolist(), "offset": gains[1].tolist()},
        "note": "null: infinite (a perfect match) or undefined",
    }


def _finite(value: Any) -> float | None:
    x = float(value)
    return x if math.isfinite(x) else None


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    """Score and write the JSON; no argument, ``help``, ``-h`` or ``--help`` print the usage.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or any(a in HELP for a in argv):
        print(USAGE)
        return
    v = parse_args(argv)
    from bsrlc.raster import atomic_path

    scores = score_rasters(
        v["sr"],
        v["hr"],
        v["lr"],
        scale=_number(v, "scale", int),
        bands=[b for b in v["bands"].split(",") if b] or None,
        input_scale=_number(v, "input_scale", float) if v["input_scale"] else None,
        data_range=_number(v, "data_range", float),
        border=_number(v, "border", int) if v["border"] else None,
        tile=_number(v, "tile", int),
    )
    text = json.dumps(scores, indent=2) + "\n"
    try:
        with atomic_path(v["out"]) as tmp:
            tmp.write_text(text)
    except OSError as err:
        raise InputError(f"{v['out']}: cannot write ({err.strerror}); fix out=") from None
    print(v["out"])


if __name__ == "__main__":
    main()
