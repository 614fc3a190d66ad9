"""A Wald-protocol SR pair from one real Sentinel-2 scene: HR = the 10 m bands, LR = their mean.

Usage (one line)::

    python -m bsrlc.data.wald hr=DIR_OR_FILES out=DIR [bands=[B02,B03,B04,B08]] [split=0.65]
        [gap=8] [scale=3] [offset=DN] [dn_scale=1e-4] [names=[...]]

Wald's protocol tests super-resolution where a true HR exists: the HR is degraded to the LR
resolution, the model super-resolves that LR back, and the result is scored against the HR.
Here the HR is a scene's bands at their native pixel size (Sentinel-2: 10 m) and the LR is the
``scale x scale`` block mean on the nested grid (30 m: one LR pixel = 3 x 3 HR pixels, the same
origin), the same nesting as bsrlc's Landsat/Sentinel-2 STM pairs. The block mean is the
simplest sensor model (a box point-spread function, no noise, no spectral difference): a test
of the network on real image content, not of the Landsat-to-Sentinel-2 transfer.

Inputs (``hr=``): a scene folder (searched recursively, e.g. a SAFE product or a folder of
``*_B02.jp2``), a list of band files (``hr=[a_B02.tif,a_B03.tif]`` or ``hr=a.tif,b.tif``), or
one multi-band file whose band descriptions are the band names. A band is found by its name as a
token of the file name (``T33UUU_..._B02_10m.jp2``, ``s2_B02.jp2``, ``B02.tif``); where a band
exists at several resolutions the finest is taken. All bands must share one grid (CRS, pixel
size, extent), north up.

Reflectance: a file's GDAL scale/offset tags when it has them; else ``(DN + offset) x dn_scale``
(``dn_scale=`` default 1e-4, Sentinel-2's QUANTIFICATION_VALUE 10000) with ``offset=`` in DN
(Sentinel-2's ``BOA_ADD_OFFSET`` / ``RADIO_ADD_OFFSET``, -1000 since processing baseline 04.00),
taken from an ``MTD_MSIL2A.xml`` / ``MTD_MSIL1C.xml`` in the scene folder when ``offset=`` is
not given, else 0. L1C (top of atmosphere) and L2A (bottom of
atmosphere) scenes are handled alike. Stored 0 (and the file's nodata) is no data. Other
sensors: Landsat 8/9 Collection 1/2 Level-1 top-of-atmosphere reflectance is
``DN x 2e-5 - 0.1``, i.e. ``dn_scale=2e-5 offset=-5000`` (sun-angle correction not applied).

Band names: ``names=`` writes the bands under other names, in the order of ``bands=``, e.g.
a Landsat 8 scene for a model trained on Sentinel-2 B02, B03, B04, B08:
``bands=[B2,B3,B4,B5] names=[B02,B03,B04,B08]``.

Written to ``out``:

- ``HR.tif``: the bands cropped to whole LR pixels, int16 reflectance x 10000 (GDAL scale 1e-4,
  offset 0), nodata -32768, band descriptions = the band names;
- ``LR.tif``: the ``scale x scale`` mean of HR.tif's stored values, rounded to int16 (so its
  reflectance is the block mean of HR.tif's to 0.5e-4), nodata where any of its HR pixels is;
- ``test_region.geojson``: the held-out part, the southern LR rows ``[t + gap, rows)`` with
  ``t = floor(split x rows)``, in the rasters' CRS: give it to ``data.test_region`` with
  ``data.buffer=gap`` and no training patch reads a pixel south of row ``t`` (the training part
  is the northern ``split`` of the rows, the validation strip inside it);
- ``HR_test.tif`` / ``LR_test.tif``: the held-out part cropped, what ``predict.py`` super-resolves
  and ``python -m bsrlc.evaluation.sr`` scores;
- ``split.json``: the files, scalings, grid and the rows and bounds of each part.

One-line errors for bands on different grids, a missing band, a rotated grid, a split that
leaves a part too small.
"""

from __future__ import annotations

import json
import math
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bsrlc.errors import ConfigError, InputError, exit_on_user_error

USAGE = (
    "usage: python -m bsrlc.data.wald hr=DIR_OR_FILES out=DIR [bands=[B02,B03,B04,B08]]\n"
    "         [split=0.65] [gap=8] [scale=3] [offset=DN] [dn_scale=1e-4] [names=[...]]\n"
    "  hr: a Sentinel-2 scene folder (SAFE or band files), a list of band files, or one\n"
    "    multi-band file with band descriptions\n"
    "  split: the northern fraction of the rows for training; the rest, after a gap of `gap` LR\n"
    "    rows, is held out (test_region.geojson, HR_test.tif, LR_test.tif)\n"
    "  offset: DN added before x 1e-4 for files without scale/offset tags (Sentinel-2\n"
    "    BOA_ADD_OFFSET / RADIO_ADD_OFFSET, e.g. -1000); default: from MTD_MSI*.xml, else 0\n"
    "  dn_scale: reflectance per DN for those files (Landsat 8/9 L1: dn_scale=2e-5 offset=-5000)\n"
    "  names: the names the bands are written under (descriptions), in the order of bands="
)

_KEYS: dict[str, str | None] = {
    "hr": None,
    "out": None,
    "bands": "B02,B03,B04,B08",
    "split": "0.65",
    "gap": "8",
    "scale": "3",
    "offset": "",
    "dn_scale": "1e-4",
    "names": "",
}
"""Command-line keys and defaults (None: required)."""

HELP = ("-h", "--help", "help")

DN_SCALE = 1e-4
"""Reflectance per DN of Sentinel-2 L1C/L2A (QUANTIFICATION_VALUE 10000)."""

OUT_SCALE = 1e-4
"""Reflectance per stored unit of the written rasters."""

NODATA = -32768
"""The written rasters' nodata."""

MIN_ROWS = 16
"""The fewest LR rows the training and the held-out part may have."""

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt", ".img")
"""File endings taken as band rasters when searching a folder."""

S2_BAND_ORDER = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12",
)  # fmt: skip
"""Sentinel-2 bands in the order of ``band_id`` 0..12 in the product metadata."""


# -- arguments ---------------------------------------------------------------------------------


def _split_list(value: str) -> list[str]:
    """``[a,b]``, ``a,b`` or ``a`` as a list of stripped, non-empty items."""
    value = value.strip()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    return [v.strip().strip("'\"") for v in value.split(",") if v.strip()]


def parse_args(argv: Sequence[str]) -> dict[str, str]:
    """Parse ``key=value`` arguments.

    Args:
        argv: the arguments after the program name.

    Returns:
        Every key, defaults filled in.

    Raises:
        ConfigError: for an unknown key or a missing required one.
    """
    from bsrlc.cli import parse_key_values

    return parse_key_values(argv, _KEYS, "python -m bsrlc.data.wald")


def _number(key: str, value: str, kind: type) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(f"{key}={value}: not a {kind.__name__}") from None


# -- finding the bands -------------------------------------------------------------------------


def _token(band: str) -> re.Pattern[str]:
    """The band name as a token of a file name: not inside a longer name (B08 is not B08A)."""
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(band)}(?![A-Za-z0-9])", re.IGNORECASE)


def _pixel_size(path: Path) -> float:
    import rasterio

    try:
        with rasterio.open(path) as src:
            return float(abs(src.transform.a))
    except rasterio.errors.RasterioIOError as err:
        raise InputError(f"{path}: not a readable raster ({err}); give band rasters") from None


def find_bands(spec: str | Path | Sequence[str | Path], bands: Sequence[str]) -> dict[str, Any]:
    """Where each band is: ``{band: (file, band index)}``.

    Args:
        spec: a folder, a list of files, or one multi-band file (see the module doc).
        bands: the band names.

    Returns:
        band -> (path, 1-based band index in it).

    Raises:
        InputError: for a missing path or band, or a band found twice at the finest resolution.
    """
    import rasterio

    items = [Path(p) for p in ([spec] if isinstance(spec, str | Path) else spec)]
    for p in items:
        if not p.exists():
            raise InputError(f"{p}: not found; give hr= a scene folder or band files")
    if len(items) == 1 and items[0].is_file():
        with rasterio.open(items[0]) as src:
            names = [d or "" for d in src.descriptions]
        if src.count > 1:
            missing = [b for b in bands if b not in names]
            if missing:
                raise InputError(
                    f"{items[0]}: no band described as {', '.join(missing)} (it has "
                    f"{', '.join(n or '?' for n in names)}); set band descriptions or give one "
                    "file per band"
                )
            return {b: (items[0], names.index(b) + 1) for b in bands}
    if len(items) == 1 and items[0].is_dir():
        files = sorted(
            p for p in items[0].rglob("*") if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES
        )
        where = f"{items[0]}"
    else:
        files = [p for p in items if p.is_file()]
        where = ", ".join(p.name for p in items)
    out = {}
    for band in bands:
        token = _token(band)
        found = [p for p in files if token.search(p.stem)]
        if not found:
            raise InputError(
                f"{where}: no file named after band {band} (like *_{band}.jp2); check bands= "
                "or give the band files"
            )
        if len(found) > 1:  # e.g. B02_10m, B02_20m, B02_60m of an L2A product: the finest
            sizes = {p: _pixel_size(p) for p in found}
            finest = min(sizes.values())
            found = [p for p in found if math.isclose(sizes[p], finest)]
            if len(found) > 1:
                raise InputError(
                    f"{where}: band {band} is in {', '.join(str(p) for p in found)} at the same "
                    "pixel size; give the band files explicitly"
                )
        out[band] = (found[0], 1)
    return out


def metadata_offsets(folder: Path) -> dict[str, float]:
    """Per band DN offsets from a Sentinel-2 ``MTD_MSIL2A.xml`` / ``MTD_MSIL1C.xml``.

    Args:
        folder: the scene folder (searched recursively).

    Returns:
        band -> offset in DN (``BOA_ADD_OFFSET`` or ``RADIO_ADD_OFFSET``); empty without one.
    """
    if not folder.is_dir():
        return {}
    found = sorted(folder.rglob("MTD_MSIL*.xml"))
    if not found:
        return {}
    try:
        root = ET.parse(found[0]).getroot()
    except (ET.ParseError, OSError) as err:
        raise InputError(f"{found[0]}: not readable XML ({err}); give offset= instead") from None
    out = {}
    for el in root.iter():
        tag = el.tag.rsplit("}", 1)[-1]
        if tag in ("BOA_ADD_OFFSET", "RADIO_ADD_OFFSET") and (el.text or "").strip():
            bid = int(el.attrib.get("band_id", "-1"))
            if 0 <= bid < len(S2_BAND_ORDER):
                out[S2_BAND_ORDER[bid]] = float(el.text)  # type: ignore[arg-type]
    return out


# -- reading -----------------------------------------------------------------------------------


def _grid_text(src: Any) -> str:
    t = src.transform
    return f"{src.crs}, {abs(t.a):g} m pixels, {src.width}x{src.height} px at ({t.c:g}, {t.f:g})"


def read_bands(
    where: dict[str, tuple[Path, int]],
    offset: float | dict[str, float] | None = None,
    dn_scale: float = DN_SCALE,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any], list[str]]:
    """Read the bands as float64 reflectance on their common grid.

    Args:
        where: band -> (file, band index), from :func:`find_bands`.
        offset: DN offset(s) for files without scale/offset tags (one for all or per band).
        dn_scale: reflectance per DN for those files.

    Returns:
        (reflectance (C, H, W), valid (H, W), grid ``{"crs", "transform", "width",
        "height"}``, how each band was scaled).

    Raises:
        InputError: for bands on different grids, a rotated or south-up grid.
    """
    import rasterio

    arrays, scalings = [], []
    valid: np.ndarray | None = None
    grid: dict[str, Any] = {}
    first = ""
    for band, (path, idx) in where.items():
        with rasterio.open(path) as src:
            t = src.transform
            if t.b or t.d or t.e >= 0:
                raise InputError(
                    f"{path}: a rotated or south-up grid; warp the scene to a north-up grid first"
                )
            this = {"crs": src.crs, "transform": t, "width": src.width, "height": src.height}
            if not grid:
                grid, first = this, f"{band} ({path.name}: {_grid_text(src)})"
            elif this != grid:
                raise InputError(
                    f"bands on different grids: {first} and {band} ({path.name}: "
                    f"{_grid_text(src)}); give bands of one pixel size (Sentinel-2 10 m: B02, "
                    "B03, B04, B08) or resample them onto one grid first"
                )
            raw = src.read(idx)
            scale, add = float(src.scales[idx - 1]), float(src.offsets[idx - 1])
            nodata = src.nodata
        ok = np.isfinite(raw) if raw.dtype.kind == "f" else np.ones(raw.shape, bool)
        if nodata is not None and not math.isnan(nodata):
            ok &= raw != nodata
        if scale != 1.0 or add != 0.0:
            how = f"{band}: x {scale:g} + {add:g} (GDAL scale/offset tags)"
        elif raw.dtype.kind == "f":
            how = f"{band}: floating-point values taken as reflectance"
        else:
            ok &= raw != 0  # Sentinel-2's no-data DN
            dn = offset.get(band, 0.0) if isinstance(offset, dict) else float(offset or 0.0)
            scale, add = dn_scale, dn * dn_scale
            how = f"{band}: (DN + {dn:g}) x {dn_scale:g}"
        arrays.append(raw.astype(np.float64) * scale + add)
        valid = ok if valid is None else valid & ok
        scalings.append(how)
    assert valid is not None
    return np.stack(arrays), valid, grid, scalings


# -- the pair ----------------------------------------------------------------------------------


def block_mean(hr: np.ndarray, valid: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``scale x scale`` block mean of int16 HR values, rounded, and its validity.

    Args:
        hr: (C, H, W) int16 with H, W multiples of ``scale``.
        valid: (H, W) bool.
        scale: the block edge.

    Returns:
        (LR (C, H / scale, W / scale) int16 with :data:`NODATA` where any HR pixel is invalid,
        LR valid (H / scale, W / scale)).
    """
    c, h, w = hr.shape
    blocks = hr.reshape(c, h // scale, scale, w // scale, scale).astype(np.float64)
    lr = np.rint(blocks.mean(axis=(2, 4)))
    lr_ok = valid.reshape(h // scale, scale, w // scale, scale).all(axis=(1, 3))
    out = lr.astype(np.int16)
    out[:, ~lr_ok] = NODATA
    return out, lr_ok


def _to_int16(refl: np.ndarray, valid: np.ndarray) -> np.ndarray:
    out = np.clip(np.rint(refl / OUT_SCALE), -32767, 32767).astype(np.int16)
    out[:, ~valid] = NODATA
    return out


def _write(path: Path, data: np.ndarray, grid: dict[str, Any], bands: Sequence[str]) -> None:
    import rasterio

    from bsrlc.raster import atomic_path

    profile = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": "int16",
        "crs": grid["crs"],
        "transform": grid["transform"],
        "nodata": NODATA,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "predictor": 2,
        "interleave": "pixel",
    }
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
            dst.descriptions = tuple(bands)
            dst.scales = (OUT_SCALE,) * len(bands)
            dst.offsets = (0.0,) * len(bands)
            dst.update_tags(
                WALD="HR" if "HR" in path.stem else f"LR: block mean of HR ({path.stem})",
                REFLECTANCE="value x 1e-4",
            )


def _write_region(path: Path, bounds: Sequence[float], crs: Any) -> None:
    import geopandas as gpd
    from shapely.geometry import box

    from bsrlc.raster import atomic_path

    with atomic_path(path) as tmp:
        gpd.GeoDataFrame(
            {"name": ["test"], "split": ["test"]}, geometry=[box(*bounds)], crs=crs
        ).to_file(tmp, driver="GeoJSON")


def split_rows(rows: int, split: float, gap: int) -> tuple[int, int]:
    """The LR rows of the parts: training ``[0, t)``, held out ``[t + gap, rows)``.

    Args:
        rows: LR rows of the scene.
        split: the northern fraction for training.
        gap: LR rows between the parts.

    Returns:
        (t, first held-out row).

    Raises:
        ConfigError: if a part would have fewer than :data:`MIN_ROWS` rows.
    """
    if not 0 < split < 1:
        raise ConfigError(f"split={split}: give the training fraction of the rows, in (0, 1)")
    if gap < 0:
        raise ConfigError(f"gap={gap}: give LR rows between the parts, >= 0")
    t = math.floor(split * rows)
    if t < MIN_ROWS or rows - t - gap < MIN_ROWS:
        raise ConfigError(
            f"split={split} gap={gap} on {rows} LR rows leaves {t} training and "
            f"{max(rows - t - gap, 0)} held-out rows; each part needs {MIN_ROWS}: move split= "
            "or shrink gap="
        )
    return t, t + gap


def make_pair(
    hr: str | Path | Sequence[str | Path],
    out: str | Path,
    bands: Sequence[str] = ("B02", "B03", "B04", "B08"),
    split: float = 0.65,
    gap: int = 8,
    scale: int = 3,
    offset: float | None = None,
    dn_scale: float = DN_SCALE,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Write the Wald pair, the held-out region and its crops (see the module doc).

    Args:
        hr: the scene folder, band files or multi-band file.
        out: the output folder (created).
        bands: band names, in the order written.
        split: the northern fraction of the LR rows for training.
        gap: LR rows left out between the training and the held-out part.
        scale: LR pixel / HR pixel.
        offset: DN offset for files without scale/offset tags; None: from the scene's
            metadata, else 0.
        dn_scale: reflectance per DN for files without scale/offset tags.
        names: the names written (band descriptions), one per band; None: ``bands``.

    Returns:
        The split description (also written to ``out/split.json``).

    Raises:
        ConfigError: for a bad scale, split or gap, or no bands.
        InputError: for inputs that cannot be read or do not share a grid.
    """
    from affine import Affine

    if scale < 2:
        raise ConfigError(f"scale={scale}: give the LR/HR pixel size ratio, >= 2")
    bands = list(bands)
    if not bands or len(set(bands)) != len(bands):
        raise ConfigError(f"bands={bands}: give distinct band names, e.g. [B02,B03,B04,B08]")
    names = list(names) if names else list(bands)
    if len(names) != len(bands) or len(set(names)) != len(names):
        raise ConfigError(
            f"names={names}: give one distinct name per band of bands={bands}, in their order"
        )
    if not dn_scale > 0:
        raise ConfigError(f"dn_scale={dn_scale}: give the reflectance per DN, > 0 (e.g. 1e-4)")
    where = find_bands(hr, bands)
    source: str | dict[str, float]
    if offset is not None:
        offsets: float | dict[str, float] = float(offset)
        source = f"offset={offset:g}"
    else:
        folder = Path(hr) if isinstance(hr, str | Path) else Path()
        offsets = metadata_offsets(folder) if isinstance(hr, str | Path) else {}
        source = "MTD_MSI*.xml" if offsets else "none (0)"
    refl, valid, grid, scalings = read_bands(where, offsets, dn_scale)

    s = scale
    rows, cols = grid["height"] // s, grid["width"] // s
    if rows < 2 * MIN_ROWS or cols < MIN_ROWS:
        raise InputError(
            f"{where[bands[0]][0]}: {grid['width']}x{grid['height']} px make {cols}x{rows} LR "
            "pixels; give a larger scene"
        )
    refl, valid = refl[:, : rows * s, : cols * s], valid[: rows * s, : cols * s]
    hr_data = _to_int16(refl, valid)
    lr_data, lr_ok = block_mean(hr_data, valid, s)
    t_hr: Affine = grid["transform"]
    t_lr = t_hr * Affine.scale(s)
    hr_grid = {**grid, "width": cols * s, "height": rows * s}
    lr_grid = {**grid, "transform": t_lr, "width": cols, "height": rows}
    t, first = split_rows(rows, split, gap)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "HR.tif", hr_data, hr_grid, names)
    _write(out / "LR.tif", lr_data, lr_grid, names)
    test_hr = {**hr_grid, "transform": t_hr * Affine.translation(0, first * s)}
    test_lr = {**lr_grid, "transform": t_lr * Affine.translation(0, first)}
    test_hr["height"] = (rows - first) * s
    _write(out / "HR_test.tif", hr_data[:, first * s :], test_hr, names)
    _write(out / "LR_test.tif", lr_data[:, first:], {**test_lr, "height": rows - first}, names)

    def bounds(r0: int, r1: int) -> list[float]:
        left, top = t_lr * (0, r0)
        right, bottom = t_lr * (cols, r1)
        return [float(left), float(bottom), float(right), float(top)]

    test_bounds = bounds(first, rows)
    _write_region(out / "test_region.geojson", test_bounds, grid["crs"])
    info = {
        "protocol": "Wald: LR = the scale x scale block mean of the HR on the nested grid",
        "inputs": {b: f"{p}" + (f" (band {i})" if i != 1 else "") for b, (p, i) in where.items()},
        "bands": names,
        "source_bands": bands,
        "reflectance": {"scalings": scalings, "offset_source": source},
        "scale": s,
        "crs": str(grid["crs"]),
        "hr": {"file": "HR.tif", "size": [cols * s, rows * s], "transform": list(t_hr)[:6]},
        "lr": {"file": "LR.tif", "size": [cols, rows], "transform": list(t_lr)[:6]},
        "split": {
            "fraction": split,
            "gap_lr_rows": gap,
            "train": {"lr_rows": [0, t], "hr_rows": [0, t * s], "bounds": bounds(0, t)},
            "gap": {"lr_rows": [t, first], "bounds": bounds(t, first)},
            "test": {
                "lr_rows": [first, rows],
                "hr_rows": [first * s, rows * s],
                "bounds": test_bounds,
                "region": "test_region.geojson",
                "hr": "HR_test.tif",
                "lr": "LR_test.tif",
            },
            "use": (
                f"data.test_region=test_region.geojson data.buffer={gap}: no training patch "
                f"reads LR rows >= {t}"
            ),
        },
        "valid_fraction": {
            "hr": float(valid.mean()),
            "lr": float(lr_ok.mean()),
            "lr_train": float(lr_ok[:t].mean()),
            "lr_test": float(lr_ok[first:].mean()),
        },
    }
    from bsrlc.raster import atomic_path

    with atomic_path(out / "split.json") as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n")
    return info


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    """Write the pair; no argument, ``help``, ``-h`` or ``--help`` print the usage.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or any(a in HELP for a in argv):
        print(USAGE)
        return
    v = parse_args(argv)
    files = _split_list(v["hr"])
    info = make_pair(
        files[0] if len(files) == 1 else files,
        v["out"],
        bands=_split_list(v["bands"]),
        split=_number("split", v["split"], float),
        gap=_number("gap", v["gap"], int),
        scale=_number("scale", v["scale"], int),
        offset=_number("offset", v["offset"], float) if v["offset"] else None,
        dn_scale=_number("dn_scale", v["dn_scale"], float),
        names=_split_list(v["names"]) or None,
    )
    test = info["split"]["test"]
    print(
        f"{v['out']}: HR.tif {info['hr']['size'][0]}x{info['hr']['size'][1]}, LR.tif "
        f"{info['lr']['size'][0]}x{info['lr']['size'][1]}, train LR rows "
        f"{info['split']['train']['lr_rows']}, held out {test['lr_rows']} (test_region.geojson, "
        "HR_test.tif, LR_test.tif), split.json"
    )


if __name__ == "__main__":
    main()
