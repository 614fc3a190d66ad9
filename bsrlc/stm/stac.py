"""Local STAC catalogs and ItemCollections as a source of the tiled ingest.

``python -m bsrlc.stm stac=CATALOG.json grid.*=... periods=...`` (or ``source=stac
scenes=CATALOG.json``): every item of a local STAC Catalog / Collection (its items found
recursively), ItemCollection (``FeatureCollection``) or single Item is read with pystac and
described as a :class:`~bsrlc.stm.sources.SourceScene`, then composited by
:func:`bsrlc.stm.archive.ingest` like the folders of scenes.

What an item gives:

- **bands** from the eo extension: each asset band's ``eo:bands`` entry (STAC 1.0) or
  ``bands`` entry (STAC 1.1, ``eo:common_name``); common names map to bsrlc's bands
  (:data:`COMMON_NAMES`: ``blue`` -> BLU, ``green`` -> GRN, ``red`` -> RED, ``nir`` -> NIR
  (``nir08`` where an item has no ``nir``: Landsat 8/9 B5), ``swir16`` -> SW1, ``swir22`` -> SW2);
  other bands keep their eo name (``B05``, ``SR_B1``) or asset key, upper-cased. A band inside
  a multi-band asset is read as that band of the file;
- **scale, offset, nodata** from the raster extension (``raster:bands`` entries, or
  ``raster:scale`` / ``raster:offset`` / ``nodata`` of STAC 1.1 bands): reflectance =
  DN * scale + offset, so a Sentinel-2 baseline >= 04.00 item's offset (-0.1) is applied per
  item. Without them a Landsat Collection 2 Level-2 item gets the C2 scaling
  (2.75e-5, -0.2) and other items 1 / 0 (logged);
- **projection** from the proj extension (``proj:code`` / ``proj:epsg`` / ``proj:wkt2`` /
  ``proj:projjson`` on the item or on every band asset): an item without it is refused with
  one line naming the item and the fix;
- **QA** from the asset named (key, or eo name) ``qa_pixel`` (Landsat C2, decoder
  ``landsat_qa_pixel``, plus ``qa_radsat`` where there is one), ``scl`` (Sentinel-2 L2A,
  ``sentinel2_scl``) or ``qai`` (FORCE, ``force_qai``). QA is decoded to clear / not clear at
  its native resolution and then averaged onto the grid (never interpolated), exactly as for
  the folder sources; the decoders refuse a QA file that is not their product;
- the **product** (Landsat C2 L2 with ``qa_pixel``, Sentinel-2 L2A with ``scl``) sets the
  valid raw DN range and the output name (``landsat``, ``sentinel2``; otherwise ``stac``).

Loader: odc-stac or bsrlc's WarpReader? Measured (``/tmp`` script on the test fixture: six
Landsat C2-like items x 6 bands in UTM 33 / 34 onto one 500 x 500 px EPSG:3035 tile, local
GeoTIFFs, 1 thread, a shared 2-core machine, 3 repeats): ``odc.stac.load`` of the six
reflectance bands took 0.5-0.7 s (warm), :class:`~bsrlc.stm.sources.WarpReader` 1.1-1.2 s for
the same bands alone and 0.9-1.8 s for bands + QA_PIXEL + QA_RADSAT. So odc-stac is not slower:
its band warp is up to ~2x faster. It is still not used for the ingest, because it cannot do
what the ingest must: it resamples a QA asset like a band (nearest, or a kernel over bit
fields) instead of decoding it at native resolution and averaging the clear fraction, and it
cannot drop fill / out-of-range (saturated) DNs at native resolution before the warp, nor
mark target pixels whose kernel reaches one. Doing those next to an odc load means WarpReader's
QA and validity passes anyway (two reads of each band's window for the validity mask), a second
reading path in the tile loop, and values that differ from ``source=landsat_c2`` on the same
files (odc-stac's warp of the UTM 34 scenes differs by a median 2-3 DN; see
``tests/test_stm_stac.py::test_odc_stac_load_of_the_same_items``). The items are therefore
turned into SourceScenes (the STAC-derived file list, band numbers and scaling) read by
WarpReader: the same STMs as the folder sources, value for value, with the resumable per-tile
and dask machinery of :mod:`bsrlc.stm.archive` unchanged. :func:`odc_load` keeps an odc-stac
load of a catalog at hand (notebooks, cross-checks).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bsrlc.errors import ConfigError, InputError
from bsrlc.stm.sources import (
    LANDSAT_C2_VALID_RANGE,
    LANDSAT_RADSAT_EXTRA_BITS,
    S2_VALID_RANGE,
    Discovery,
    MaskLayer,
    SourceScene,
    radsat_clear,
)

log = logging.getLogger(__name__)

COMMON_NAMES = {
    "blue": "BLU",
    "green": "GRN",
    "red": "RED",
    "nir": "NIR",
    "swir16": "SW1",
    "swir22": "SW2",
}
"""STAC eo common name -> bsrlc band (``nir08`` stands in for ``nir`` where an item lacks it)."""

QA_ASSETS = {"qa_pixel": "landsat_qa_pixel", "scl": "sentinel2_scl", "qai": "force_qai"}
"""QA asset (key or eo band name, lower case) -> decoder of :mod:`bsrlc.stm.qa`."""

PROJ_KEYS = ("proj:code", "proj:epsg", "proj:wkt2", "proj:projjson")
"""Projection extension fields, any of which places an item (or asset) in a CRS."""

C2_SCALE, C2_OFFSET = 2.75e-5, -0.2
_REMOTE = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def read_items(path: str | Path) -> list[Any]:
    """The items of a local STAC JSON file.

    Args:
        path: a Catalog or Collection (items found recursively through its links), an
            ItemCollection (``"type": "FeatureCollection"``) or an Item.

    Returns:
        The ``pystac.Item`` objects.

    Raises:
        InputError: for a missing file, invalid JSON or a JSON that is no STAC object.
    """
    import pystac

    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"{path}: STAC file not found; set stac= to a local catalog.json, collection.json "
            "or ItemCollection JSON"
        )
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(
            f"{path}: not valid JSON ({err}); give a STAC catalog or ItemCollection file"
        ) from None
    kind = doc.get("type") if isinstance(doc, dict) else None
    try:
        if kind == "FeatureCollection":
            return list(pystac.ItemCollection.from_dict(doc, preserve_dict=False))
        if kind == "Feature":
            return [pystac.Item.from_file(str(path))]
        if kind in ("Catalog", "Collection"):
            cat: Any = pystac.read_file(str(path))
            return list(cat.get_items(recursive=True))
    except (pystac.STACError, KeyError, ValueError, TypeError, OSError) as err:
        raise InputError(
            f"{path}: not a readable STAC {kind} ({type(err).__name__}: {err}); fix the JSON "
            "or its links"
        ) from None
    raise InputError(
        f"{path}: JSON of type {kind!r} is no STAC Catalog, Collection, ItemCollection or Item; "
        "give the catalog.json (or an ItemCollection saved from a search)"
    )


def _asset_bands(asset: Any) -> list[dict[str, Any]]:
    """Per band of an asset: eo name, common name, scale, offset, nodata (STAC 1.0 and 1.1)."""
    extra = asset.extra_fields
    eo = extra.get("eo:bands") or []
    raster = extra.get("raster:bands") or []
    v11 = extra.get("bands") or []
    n = max(len(eo), len(raster), len(v11), 1)
    out = []
    for i in range(n):
        e = eo[i] if i < len(eo) else {}
        r = raster[i] if i < len(raster) else {}
        b = v11[i] if i < len(v11) else {}
        single = n == 1  # STAC 1.1 puts a single band's fields on the asset itself
        out.append(
            {
                "name": e.get("name") or b.get("name"),
                "common": e.get("common_name")
                or b.get("eo:common_name")
                or (extra.get("eo:common_name") if single else None),
                "scale": r.get("scale", b.get("raster:scale", extra.get("raster:scale"))),
                "offset": r.get("offset", b.get("raster:offset", extra.get("raster:offset"))),
                "nodata": r.get("nodata", b.get("nodata", extra.get("nodata"))),
            }
        )
    return out


def _local_path(item: Any, key: str, asset: Any, where: Path) -> Path:
    href = asset.get_absolute_href() or asset.href
    if href.lower().startswith("file://"):
        href = href[7:]
    if _REMOTE.match(href):
        raise InputError(
            f"{where}: item {item.id} asset {key} is not a local file ({href}); download the "
            "assets (e.g. with stac-asset) and point stac= at the local copy of the catalog"
        )
    return Path(href)


def _has_proj(fields: Mapping[str, Any]) -> bool:
    return any(fields.get(k) not in (None, "", {}) for k in PROJ_KEYS)


def _product(item: Any, qa: Mapping[str, Any]) -> str:
    platform = str(item.properties.get("platform", "")).lower()
    if "qa_pixel" in qa or platform.startswith("landsat"):
        return "landsat_c2"
    if "scl" in qa or platform.startswith("sentinel-2"):
        return "sentinel2_l2a"
    return "stac"


def _radsat_bits(item: Any, bands: Mapping[str, str]) -> tuple[int, ...]:
    """QA_RADSAT bits of the bands read: SR_B<n> / B<n> -> bit n-1, plus TM/ETM+ dropped pixel."""
    bits = []
    for name in bands.values():
        m = re.search(r"B(\d+)$", name or "", re.IGNORECASE)
        if m:
            bits.append(int(m.group(1)) - 1)
    platform = str(item.properties.get("platform", "")).upper().replace("-", "_")
    return (*sorted(set(bits)), *LANDSAT_RADSAT_EXTRA_BITS.get(platform, ()))


def item_scene(item: Any, where: Path) -> SourceScene:
    """Describe one STAC item as a scene.

    Args:
        item: a ``pystac.Item`` whose assets are local files.
        where: the STAC file (for messages).

    Returns:
        The scene (bands, band numbers, QA layers, scale / offset / nodata, valid range).

    Raises:
        InputError: for an item without projection information, without datetime, with a
            remote asset, or without the six common bands' common names and no other bands.
    """
    when = item.datetime or item.common_metadata.start_datetime
    if when is None:
        raise InputError(
            f"{where}: item {item.id} has no datetime (nor start_datetime); set the item's "
            "acquisition time"
        )
    bands: dict[str, Path] = {}
    index: dict[str, int] = {}
    scale: dict[str, float] = {}
    offset: dict[str, float] = {}
    nodata: set[float] = set()
    eo_names: dict[str, str] = {}
    qa: dict[str, tuple[Path, str]] = {}
    radsat: Path | None = None
    proj_assets: list[bool] = []
    common: dict[str, tuple[str, Any, int, dict[str, Any]]] = {}
    others: list[tuple[str, Any, int, dict[str, Any]]] = []
    for key, asset in item.assets.items():
        info = _asset_bands(asset)
        names = {key.lower(), *((b["name"] or "").lower() for b in info)}
        qa_kind = next((QA_ASSETS[n] for n in names if n in QA_ASSETS), None)
        if qa_kind is not None:
            qa[qa_kind] = (_local_path(item, key, asset, where), key)
            continue
        if "qa_radsat" in names:
            radsat = _local_path(item, key, asset, where)
            continue
        media = str(asset.media_type or "").lower()
        roles = set(asset.roles or [])
        if media and "tiff" not in media and "jp2" not in media:
            continue  # metadata, thumbnails
        if roles & {"thumbnail", "overview", "metadata"} and "data" not in roles:
            continue
        if not any(b["common"] or b["name"] for b in info) and media == "":
            continue
        for i, b in enumerate(info):
            c = (b["common"] or "").lower()
            if c in COMMON_NAMES or c == "nir08":
                common.setdefault(c, (key, asset, i + 1, b))
            else:
                others.append((key, asset, i + 1, b))
    if "nir" not in common and "nir08" in common:
        common["nir"] = common["nir08"]
    elif "nir08" in common:
        others.append(common["nir08"])
    ordered = [(COMMON_NAMES[c], common[c]) for c in COMMON_NAMES if c in common]
    for key, asset, i, b in others:
        label = str(b["name"] or (key if i == 1 else f"{key}_{i}")).upper()
        ordered.append((label, (key, asset, i, b)))
    product = _product(item, qa)
    for name, (key, asset, i, b) in ordered:
        if name in bands:
            continue
        bands[name] = _local_path(item, key, asset, where)
        index[name] = i
        eo_names[name] = str(b["name"] or key)
        proj_assets.append(_has_proj(asset.extra_fields))
        s = b["scale"]
        o = b["offset"]
        if s is None and product == "landsat_c2":
            s, o = C2_SCALE, C2_OFFSET if o is None else o
        scale[name] = float(s if s is not None else 1.0)
        offset[name] = float(o if o is not None else 0.0)
        if b["nodata"] is not None:
            nodata.add(float(b["nodata"]))
    if not bands:
        raise InputError(
            f"{where}: item {item.id} has no image assets with eo:bands / raster:bands; describe "
            "its bands with the eo extension (common_name blue, green, red, nir, swir16, swir22)"
        )
    if not _has_proj(item.properties) and not all(proj_assets):
        raise InputError(
            f"{where}: item {item.id} has no projection information (none of "
            f"{', '.join(PROJ_KEYS)} on the item or its band assets); add the projection "
            "extension (e.g. rio-stac with_proj=True, or proj:code=EPSG:32633 plus proj:shape "
            "and proj:transform) or ingest the files with source=landsat_c2|sentinel2_l2a"
        )
    masks: list[MaskLayer] = []
    for kind, (path, _) in qa.items():
        masks.append(MaskLayer(path, kind))
    if radsat is not None and "landsat_qa_pixel" in qa:
        bits = _radsat_bits(item, eo_names)
        masks.append(
            MaskLayer(radsat, functools.partial(radsat_clear, bits=bits), reason="saturation")
        )
    if not masks:
        log.info("%s: item %s has no QA asset (qa_pixel, scl, qai): fill only", where, item.id)
    if scale and all(scale[b] == 1.0 for b in scale) and product != "stac":
        log.info(
            "%s: item %s has no raster:bands scale; DNs are taken as reflectance", where, item.id
        )
    valid = {"landsat_c2": LANDSAT_C2_VALID_RANGE, "sentinel2_l2a": S2_VALID_RANGE}.get(product)
    if product == "landsat_c2" and "landsat_qa_pixel" not in qa:
        valid = None  # e.g. a Collection 1 or TOA item: the C2 SR range would not fit
    platform = str(item.properties.get("platform") or item.properties.get("constellation") or "")
    return SourceScene(
        id=item.id,
        date=when.date() if isinstance(when, dt.datetime) else when,
        product=product,
        sensor=platform.upper().replace("-", "_") or "unknown",
        bands=bands,
        masks=tuple(masks),
        scale=scale,
        offset=offset,
        nodata=nodata.pop() if len(nodata) == 1 else None,
        valid_range=valid,
        metadata=where,
        band_index={k: v for k, v in index.items() if v != 1},
    )


def discover_stac(path: str | Path, on_error: str = "fail") -> Discovery:
    """The scenes of a local STAC catalog / ItemCollection.

    Args:
        path: the STAC JSON file.
        on_error: ``fail`` raises on the first bad item; ``skip`` leaves it out and logs it.

    Returns:
        The scenes by date, the lines of skipped items, and the products found.

    Raises:
        ConfigError: for an unknown ``on_error``.
        InputError: for an unreadable catalog, no items, or a bad item (``on_error=fail``).
    """
    if on_error not in ("fail", "skip"):
        raise ConfigError(f"on_error={on_error}: use fail or skip")
    path = Path(path)
    items = read_items(path)
    if not items:
        raise InputError(f"{path}: the STAC file has no items; point stac= at a filled catalog")
    scenes: list[SourceScene] = []
    skipped: list[str] = []
    for item in items:
        try:
            scenes.append(item_scene(item, path))
        except InputError as err:
            if on_error == "fail":
                raise
            log.warning("skipped: %s", err)
            skipped.append(str(err))
    scenes.sort(key=lambda s: (s.date, s.id))
    return Discovery(scenes, skipped, sorted({s.product for s in scenes}))


def odc_load(
    path: str | Path,
    geobox: Any,
    bands: Sequence[str],
    resampling: str = "bilinear",
) -> Any:
    """``odc.stac.load`` of a local catalog's items onto a GeoBox (raw DNs, no QA).

    A cross-check and a convenience for notebooks; the ingest reads with WarpReader (see the
    module docstring for why).

    Args:
        path: the STAC JSON file.
        geobox: the target GeoBox (e.g. a tile's).
        bands: asset keys or eo common names to load.
        resampling: resampling of the bands.

    Returns:
        An ``xarray.Dataset`` with one variable per band and a ``time`` axis.
    """
    import odc.stac

    return odc.stac.load(read_items(path), bands=list(bands), geobox=geobox, resampling=resampling)


__all__ = ["COMMON_NAMES", "QA_ASSETS", "discover_stac", "item_scene", "odc_load", "read_items"]
