"""Bundles you can trust: signed with a shared key, zip members checked, extraction cleaned up."""

from __future__ import annotations

import gc
import json
import logging
import zipfile

import pytest

from bsrlc.errors import InputError
from bsrlc.export import KEY_ENV, _digest, export_bundle, load_bundle


def test_signed_bundles_refuse_deliberate_edits(tmp_path, checkpoints, monkeypatch, caplog):
    cls = checkpoints[1]
    monkeypatch.setenv(KEY_ENV, "s3cret")
    signed = export_bundle(cls, tmp_path / "signed")
    assert load_bundle(signed).metadata["signature"]
    # a deliberate edit that recomputes the unkeyed content hash still fails the signature
    meta = json.loads((signed / "metadata.json").read_text())
    meta["temperature"] = 0.01
    meta["content_hash"] = _digest(signed, meta)
    (signed / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="signature does not match"):
        load_bundle(signed)
    signed2 = export_bundle(cls, tmp_path / "signed2", check=False)
    monkeypatch.setenv(KEY_ENV, "another key")
    with pytest.raises(InputError, match="signature does not match"):
        load_bundle(signed2)
    monkeypatch.delenv(KEY_ENV)
    unsigned = export_bundle(cls, tmp_path / "unsigned", check=False)
    assert "signature" not in load_bundle(unsigned).metadata
    with caplog.at_level(logging.WARNING):
        load_bundle(tmp_path / "signed2")  # signed, no key here: loads, says so
    assert "signature not checked" in caplog.text
    monkeypatch.setenv(KEY_ENV, "s3cret")
    with pytest.raises(InputError, match="unsigned bundle, but BSRLC_BUNDLE_KEY is set"):
        load_bundle(unsigned)


def test_zip_bundles_extract_only_their_members_and_clean_up(tmp_path, checkpoints):
    import tempfile
    from pathlib import Path

    zipped = export_bundle(checkpoints[1], tmp_path / "cls", zip_bundle=True, check=False)
    before = set(Path(tempfile.gettempdir()).glob("bsrlc-bundle-*"))
    bundle = load_bundle(zipped)
    folder = bundle.folder
    assert (folder / "model.onnx").exists() and bundle.torch_model() is not None
    bundle.close()
    assert not folder.exists()
    with load_bundle(zipped) as b:
        folder = b.folder
    assert not folder.exists()
    load_bundle(zipped).torch_model()  # dropped at once: cleaned by the garbage collector
    gc.collect()
    assert set(Path(tempfile.gettempdir()).glob("bsrlc-bundle-*")) == before
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(zipped) as src, zipfile.ZipFile(evil, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name))
        dst.writestr("../outside.txt", "x")
    with pytest.raises(InputError, match=r"unexpected member\(s\) \['../outside.txt'\]"):
        load_bundle(evil)
    assert not (tmp_path / "outside.txt").exists()
    assert set(Path(tempfile.gettempdir()).glob("bsrlc-bundle-*")) == before
