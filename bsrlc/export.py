"""Export a checkpoint to a self-contained model bundle: ``python -m bsrlc.export``.

A bundle is a folder (optionally zipped) with:

- ``model.onnx``: the network with dynamic batch, height and width (opset >= 17). SR
  generators map normalised LR to normalised HR; classifiers are exported in their dense form
  (a tile with a halo in, one score per pixel out).
- ``weights.safetensors``: the same weights for PyTorch, loaded without unpickling anything.
- ``metadata.json``: everything inference needs (task, input bands in order, normalisation,
  how the training raster was stored (``input_scale``, ``input_offset``; bundles without
  ``input_offset`` mean 0), scale, patch size and halo / receptive field, legend, the network's
  constructor config), the resolved training config, the package version and a content hash
  over all of it.

What the content hash protects: a bundle whose files were damaged or changed (a truncated copy,
a bit flip, an edited metadata.json) refuses to load. It does not protect against a deliberate
edit, since whoever edits the files can recompute an unkeyed hash. For that, sign bundles: with
``BSRLC_BUNDLE_KEY`` set (a secret shared by who exports and who predicts), export writes an
HMAC-SHA256 of the content hash into metadata.json, and loading with the key set refuses a
bundle whose signature is missing or wrong. Loading a signed bundle without the key warns that
the signature was not checked.

Zip bundles are read member by member: only the three expected names, each under a size limit,
are extracted, into a temporary folder that is removed when the bundle is closed (or garbage
collected, or the process ends).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import shutil
import tempfile
import weakref
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bsrlc import __version__
from bsrlc.errors import InputError

if TYPE_CHECKING:  # torch is imported where it is used: `python -m bsrlc.export --help` is fast
    from omegaconf import DictConfig
    from torch import Tensor, nn

    from bsrlc.inference.loading import LoadedModel

log = logging.getLogger("bsrlc.export")

OPSET = 17
FILES = ("model.onnx", "weights.safetensors", "metadata.json")
# Largest member of a zip bundle read (uncompressed bytes): the weights of a large generator
# are a few hundred MB; metadata is small.
MAX_MEMBER_BYTES = {
    "model.onnx": 4 * 2**30,
    "weights.safetensors": 4 * 2**30,
    "metadata.json": 64 * 2**20,
}
KEY_ENV = "BSRLC_BUNDLE_KEY"


def _signature(content_hash: str, key: str) -> str:
    return hmac.new(key.encode(), content_hash.encode(), hashlib.sha256).hexdigest()


def dense_classifier(net: nn.Module) -> nn.Module:
    """Wrap a centre-patch classifier so ``forward`` is its dense form (for ONNX).

    Args:
        net: a classifier with ``forward_dense``.

    Returns:
        A module mapping (B, C, H + 2*halo, W + 2*halo) to dense logits (B, K, H, W).
    """
    from torch import nn

    class DenseClassifier(nn.Module):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: Tensor) -> Tensor:
            return self.net.forward_dense(x)

    return DenseClassifier(net)


def _digest(folder: Path, metadata: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for name in FILES[:2]:
        h.update(name.encode())
        h.update(hashlib.sha256((folder / name).read_bytes()).digest())
    meta = {k: v for k, v in metadata.items() if k not in ("content_hash", "signature")}
    h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()


def _example_input(model: LoadedModel) -> Tensor:
    import torch

    c = len(model.bands)
    if model.task == "sr":
        return torch.randn(1, c, 24, 24)
    halo = int(model.meta.get("halo", 0))
    return torch.randn(1, c, 16 + 2 * halo, 20 + 2 * halo)


def export_bundle(
    checkpoint: str | Path,
    out_dir: str | Path,
    zip_bundle: bool = False,
    opset: int = OPSET,
    check: bool = True,
    atol: float = 1e-4,
) -> Path:
    """Write a model bundle from a Lightning checkpoint.

    Args:
        checkpoint: a ``.ckpt`` written by ``train.py``.
        out_dir: the bundle folder (replaced atomically).
        zip_bundle: also write ``<out_dir>.zip``.
        opset: the ONNX opset (>= 17).
        check: compare ONNX Runtime with PyTorch on random input.
        atol: the tolerance of that comparison.

    Returns:
        The bundle folder (or zip).

    Raises:
        InputError: if the networks disagree beyond ``atol``.
    """
    import torch
    from safetensors.torch import save_file

    from bsrlc.checkpoints import read_checkpoint
    from bsrlc.inference.loading import load_checkpoint

    model = load_checkpoint(checkpoint)
    out_dir = Path(out_dir)
    ckpt = read_checkpoint(checkpoint)
    net = model.net.eval()
    export_net: nn.Module = net
    if model.task == "classify":
        if not hasattr(net, "forward_dense"):
            raise InputError(
                f"{checkpoint}: this classifier has no dense form (padded variant); export a "
                "valid-conv centre-patch model, or run it with backend=torch"
            )
        export_net = dense_classifier(net).eval()
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(
            f"{out_dir.parent}: cannot create output folder ({err.strerror})"
        ) from None
    tmp = Path(tempfile.mkdtemp(prefix=".bundle-", dir=out_dir.parent))  # same file system
    try:
        x = _example_input(model)
        torch.onnx.export(
            export_net,
            (x,),
            str(tmp / "model.onnx"),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={
                "input": {0: "batch", 2: "height", 3: "width"},
                "output": {0: "batch", 2: "out_height", 3: "out_width"},
            },
            opset_version=max(opset, OPSET),
            dynamo=False,
        )
        save_file(
            {k: v.contiguous() for k, v in net.state_dict().items()}, tmp / "weights.safetensors"
        )
        metadata = {
            "format": "bsrlc-bundle/1",
            "task": model.task,
            "bands": model.bands,
            "mean": model.mean,
            "std": model.std,
            # reflectance = stored value x input_scale + input_offset of the training raster
            "input_scale": model.meta.get("input_scale", 1e-4),
            "input_offset": model.meta.get("input_offset") or 0.0,  # or one per band
            "grid": model.meta.get("grid"),
            "scale": model.meta.get("scale"),
            "receptive_field": model.meta.get("receptive_field"),
            "patch_size": model.meta.get("patch_size"),
            "halo": model.meta.get("halo"),
            "legend": model.meta.get("legend"),
            "temperature": model.meta.get("temperature"),
            "train_priors": model.meta.get("train_priors"),
            "network": model.config,
            "training_config": ckpt.get("hyper_parameters", {}),
            "bsrlc_version": __version__,
            "source_checkpoint": Path(checkpoint).name,
            "onnx_opset": max(opset, OPSET),
        }
        metadata["content_hash"] = _digest(tmp, metadata)
        key = os.environ.get(KEY_ENV)
        if key:
            metadata["signature"] = _signature(metadata["content_hash"], key)
        (tmp / "metadata.json").write_text(json.dumps(metadata, indent=2))
        if check:
            diff = check_onnx(tmp, export_net)
            log.info("ONNX Runtime vs PyTorch: max abs diff %.2e", diff)
            if diff > atol:
                raise InputError(f"{checkpoint}: ONNX output differs from PyTorch by {diff:.2e}")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if zip_bundle:
        zip_path = out_dir.with_suffix(".zip")
        with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
            for name in FILES:
                z.write(out_dir / name, name)
        return zip_path
    return out_dir


def check_onnx(folder: Path, reference: nn.Module, seed: int = 0) -> float:
    """Max abs difference between ONNX Runtime and PyTorch on random inputs of two sizes.

    Args:
        folder: the bundle folder.
        reference: the PyTorch module that was exported.
        seed: random seed.

    Returns:
        The largest absolute difference.
    """
    import numpy as np
    import onnxruntime as ort
    import torch

    meta = json.loads((folder / "metadata.json").read_text())
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(seed)
    halo = int(meta.get("halo") or 0) if meta["task"] == "classify" else 0
    worst = 0.0
    for h, w in ((20, 28), (33, 17)):
        x = torch.randn(2, len(meta["bands"]), h + 2 * halo, w + 2 * halo, generator=g)
        with torch.no_grad():
            ref = reference(x).numpy()
        out = session.run(None, {"input": x.numpy()})[0]
        worst = max(worst, float(np.abs(out - ref).max()))
    return worst


@dataclass
class Bundle:
    """A loaded, verified bundle.

    Attributes:
        path: where it came from.
        metadata: the parsed ``metadata.json``.
        folder: the folder holding the files (extracted for zips).
    """

    path: Path
    metadata: dict[str, Any]
    folder: Path

    def close(self) -> None:
        """Remove the extracted files of a zip bundle (a folder bundle is left as it is)."""
        cleanup = getattr(self, "_cleanup", None)
        if cleanup is not None:
            cleanup()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def torch_model(self, device: str = "cpu") -> LoadedModel:
        """The network rebuilt from its config with the safetensors weights.

        Args:
            device: torch device.

        Returns:
            The loaded model.
        """
        from safetensors.torch import load_file

        from bsrlc.inference.loading import LoadedModel, build_from_config

        m = self.metadata
        net = build_from_config(dict(m["network"]))
        net.load_state_dict(load_file(self.folder / "weights.safetensors"))
        keys = ("scale", "receptive_field", "patch_size", "halo", "legend")
        meta = {k: m.get(k) for k in (*keys, "temperature", "train_priors", "input_scale", "grid")}
        meta["input_offset"] = m.get("input_offset") or 0.0  # absent in older bundles: 0
        return LoadedModel(
            net.eval().to(device),
            m["task"],
            m["bands"],
            m["mean"],
            m["std"],
            {**meta, "task": m["task"]},
            dict(m["network"]),
        )

    def onnx_session(self) -> Any:
        """An ONNX Runtime session of the bundle's network.

        Returns:
            ``onnxruntime.InferenceSession``.
        """
        import onnxruntime as ort

        providers = ort.get_available_providers()
        return ort.InferenceSession(str(self.folder / "model.onnx"), providers=providers)


def load_bundle(path: str | Path) -> Bundle:
    """Open a bundle folder or zip and verify its content hash.

    Args:
        path: the bundle.

    Returns:
        The bundle.

    Raises:
        InputError: if files are missing or the hash does not match (tampered or corrupt).
    """
    path = Path(path)
    if path.suffix != ".zip":
        return Bundle(path, _verify(path, path), path)
    folder = Path(tempfile.mkdtemp(prefix="bsrlc-bundle-"))
    try:
        _extract(path, folder)
        metadata = _verify(path, folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    bundle = Bundle(path, metadata, folder)
    # the extracted files go with the bundle (closed, garbage collected or at exit)
    bundle._cleanup = weakref.finalize(bundle, shutil.rmtree, str(folder), True)  # type: ignore[attr-defined]
    return bundle


def _extract(path: Path, folder: Path) -> None:
    """Extract the expected members of a zip bundle, each within its size limit."""
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise InputError(f"{path}: not a readable zip ({err}); re-export the bundle") from None
    with z:
        names = z.namelist()
        extra = sorted(set(names) - set(FILES))
        if extra:
            raise InputError(
                f"{path}: unexpected member(s) {extra[:5]} (a bundle holds only "
                f"{', '.join(FILES)}); re-export it with python -m bsrlc.export"
            )
        for name in FILES:
            if name not in names:
                continue
            info = z.getinfo(name)
            if info.file_size > MAX_MEMBER_BYTES[name]:
                raise InputError(
                    f"{path}: {name} is {info.file_size / 2**20:.0f} MiB uncompressed, above the "
                    f"{MAX_MEMBER_BYTES[name] / 2**20:.0f} MiB limit; not a bsrlc bundle"
                )
            with z.open(info) as src, open(folder / name, "wb") as dst:
                # copy at most the declared size: a forged header cannot make it write more
                shutil.copyfileobj(_Limited(src, info.file_size), dst, 2**20)


class _Limited:
    """A reader that stops after ``limit`` bytes."""

    def __init__(self, raw: Any, limit: int) -> None:
        self.raw, self.left = raw, limit

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        data = self.raw.read(self.left if n < 0 else min(n, self.left))
        self.left -= len(data)
        return data


def _verify(path: Path, folder: Path) -> dict[str, Any]:
    """The bundle's metadata, once its files, content hash and signature (if keyed) check out."""
    missing = [f for f in FILES if not (folder / f).exists()]
    if missing:
        raise InputError(f"{path}: not a bsrlc bundle (missing {', '.join(missing)}); re-export it")
    try:
        metadata = json.loads((folder / "metadata.json").read_text())
    except ValueError as err:
        raise InputError(
            f"{path}: metadata.json is not JSON ({err}); re-export the bundle"
        ) from None
    if metadata.get("content_hash") != _digest(folder, metadata):
        raise InputError(
            f"{path}: content hash does not match metadata.json; the bundle was modified or is "
            "corrupt, re-export it with python -m bsrlc.export"
        )
    key = os.environ.get(KEY_ENV)
    signature = metadata.get("signature")
    if key:
        if not signature:
            raise InputError(
                f"{path}: unsigned bundle, but {KEY_ENV} is set; export it with the key set, or "
                f"unset {KEY_ENV} to accept unsigned bundles"
            )
        if not hmac.compare_digest(signature, _signature(metadata["content_hash"], key)):
            raise InputError(
                f"{path}: signature does not match {KEY_ENV}; the bundle was signed with another "
                "key or edited after signing, re-export it"
            )
    elif signature:
        log.warning("%s: signed bundle, signature not checked (%s is not set)", path, KEY_ENV)
    return metadata


def _main() -> None:
    from bsrlc.cli import hydra_entry
    from bsrlc.config import conf_dir

    @hydra_entry(config_path=conf_dir(), config_name="export")
    def main(cfg: DictConfig) -> None:
        out = export_bundle(cfg.checkpoint, cfg.out_dir, bool(cfg.zip), int(cfg.opset))
        print(out)

    main()


if __name__ == "__main__":
    _main()
