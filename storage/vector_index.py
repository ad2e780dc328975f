"""Nearest-neighbour search over embedding vectors: an annoy index plus an exact delta buffer.

annoy indexes are immutable once built, so items added since the last build sit in a small
numpy matrix searched exactly (< 3.5 ms up to 50k items, FINDINGS.md); a search merges the two.
When the delta grows past :attr:`VectorIndex.rebuild_threshold`, the owner rebuilds: the new
index is written to a temporary file, ``os.replace``d over the old one and swapped in under a
lock, so a search always sees one whole index. Tuning from FINDINGS.md: 50 trees and
``search_k`` 10 000 (recall 0.92 at ~80k real vectors in ~1.5 ms; annoy's default search_k
recalls poorly).

Items are identified by caller-chosen integer keys (chunk keys of the search index); annoy's own
ids are dense slots ``0..n-1`` of each build, mapped back to keys through an array stored beside
the index. Files in ``directory``: ``vectors.ann``, ``vectors.keys.npy`` and ``vectors.json``
(dimension and item count, written last: files that disagree with it are ignored and rebuilt).
Vectors are L2-normalized on the way in, so scores are cosine similarities.

Only one process (the node) maintains a vector index; it is not shared between processes.
numpy and annoy come with the ``semantic`` extra: import this module only where the semantic
stack is expected (the engine imports it lazily).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from annoy import AnnoyIndex

__all__ = ["SEARCH_K", "TREES", "VectorIndex"]

TREES = 50
SEARCH_K = 10_000
_ANN = "vectors.ann"
_KEYS = "vectors.keys.npy"
_META = "vectors.json"
_log = logging.getLogger("dre.search")

Matrix = npt.NDArray[np.float32]


def _normalized(vectors: npt.ArrayLike, dim: int) -> Matrix:
    matrix = np.asarray(vectors, dtype=np.float32).reshape(-1, dim)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    result: Matrix = (matrix / norms).astype(np.float32)
    return result


class _Built:
    """One immutable annoy build and its slot -> key map."""

    def __init__(self, annoy: AnnoyIndex | None, keys: npt.NDArray[np.int64]) -> None:
        self.annoy = annoy
        self.keys = keys
        self.key_set = frozenset(int(k) for k in keys)


class VectorIndex:
    """Approximate (annoy) plus exact (delta) cosine search over keyed vectors."""

    def __init__(self, directory: Path, dim: int, *, trees: int = TREES,
                 search_k: int = SEARCH_K, rebuild_threshold: int = 2000) -> None:
        self.directory = directory
        self.dim = dim
        self.trees = trees
        self.search_k = search_k
        #: Rebuild once the delta (or the removed items) exceeds this, or a tenth of the index.
        self.rebuild_threshold = rebuild_threshold
        self._lock = threading.Lock()
        self._built = _Built(None, np.zeros(0, dtype=np.int64))
        self._delta_keys: list[int] = []
        self._delta = np.zeros((0, dim), dtype=np.float32)
        self._removed: set[int] = set()
        directory.mkdir(parents=True, exist_ok=True)
        self._load()

    # -- files -------------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            meta = json.loads((self.directory / _META).read_text())
            keys = np.load(self.directory / _KEYS)
            if meta.get("dim") != self.dim or meta.get("items") != len(keys):
                raise ValueError("metadata does not match")
            annoy = AnnoyIndex(self.dim, "angular")
            annoy.load(str(self.directory / _ANN))
            if annoy.get_n_items() != len(keys):
                raise ValueError("index does not match its keys")
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            _log.warning("ignoring the vector index in %s (%s); it will be rebuilt",
                         self.directory, exc)
            return
        self._built = _Built(annoy, keys.astype(np.int64))

    # -- changes -----------------------------------------------------------------------------

    def add(self, keys: Sequence[int], vectors: npt.ArrayLike) -> None:
        """Add (or replace) items; they are searchable at once, from the delta buffer."""
        if not keys:
            return
        matrix = _normalized(vectors, self.dim)
        with self._lock:
            replaced = set(keys)
            if replaced & set(self._delta_keys):
                keep = [i for i, k in enumerate(self._delta_keys) if k not in replaced]
                self._delta_keys = [self._delta_keys[i] for i in keep]
                self._delta = self._delta[keep]
            # A key also in the annoy build is shadowed there until the next rebuild.
            self._removed |= replaced & self._built.key_set
            self._delta_keys = [*self._delta_keys, *keys]
            self._delta = np.vstack([self._delta, matrix])

    def remove(self, keys: Iterable[int]) -> None:
        """Forget items (dropped from the annoy index at its next rebuild)."""
        gone = set(keys)
        if not gone:
            return
        with self._lock:
            keep = [i for i, k in enumerate(self._delta_keys) if k not in gone]
            if len(keep) != len(self._delta_keys):
                self._delta_keys = [self._delta_keys[i] for i in keep]
                self._delta = self._delta[keep]
            self._removed |= gone & self._built.key_set

    def __len__(self) -> int:
        with self._lock:
            return len(self._built.keys) - len(self._removed) + len(self._delta_keys)

    def keys(self) -> set[int]:
        """Every live key (built and delta)."""
        with self._lock:
            return (set(self._built.key_set) - self._removed) | set(self._delta_keys)

    @property
    def delta_size(self) -> int:
        """Items searched exactly (added since the last build)."""
        return len(self._delta_keys)

    def needs_rebuild(self) -> bool:
        """Whether the delta or the removed items have grown enough to rebuild."""
        with self._lock:
            churn = len(self._delta_keys) + len(self._removed)
            return churn > max(self.rebuild_threshold, len(self._built.keys) // 10)

    def rebuild(self, items: Iterable[tuple[int, bytes | npt.NDArray[np.float32]]]) -> int:
        """Build a new annoy index from every live ``(key, vector)`` (float32 bytes or array)
        and swap it in; returns its size. Items added meanwhile stay in the delta."""
        keys: list[int] = []
        annoy = AnnoyIndex(self.dim, "angular")
        tmp_ann = self.directory / f".{_ANN}.tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp_ann.unlink()
        annoy.on_disk_build(str(tmp_ann))
        for slot, (key, vector) in enumerate(items):
            raw = np.frombuffer(vector, dtype=np.float32) if isinstance(vector, bytes) \
                else np.asarray(vector, dtype=np.float32)
            annoy.add_item(slot, _normalized(raw, self.dim)[0].tolist())
            keys.append(key)
        annoy.build(self.trees, n_jobs=1)
        annoy.unload()
        key_array = np.asarray(keys, dtype=np.int64)
        tmp_keys = self.directory / f".{_KEYS}.tmp.npy"
        np.save(tmp_keys, key_array)
        tmp_meta = self.directory / f".{_META}.tmp"
        tmp_meta.write_text(json.dumps({"dim": self.dim, "items": len(keys),
                                        "trees": self.trees}))
        os.replace(tmp_ann, self.directory / _ANN)
        os.replace(tmp_keys, self.directory / _KEYS)
        os.replace(tmp_meta, self.directory / _META)
        loaded = AnnoyIndex(self.dim, "angular")
        loaded.load(str(self.directory / _ANN))
        built = _Built(loaded, key_array)
        with self._lock:
            keep = [i for i, k in enumerate(self._delta_keys) if k not in built.key_set]
            self._delta_keys = [self._delta_keys[i] for i in keep]
            self._delta = self._delta[keep]
            self._removed = set()
            self._built = built
        return len(keys)

    # -- search ------------------------------------------------------------------------------

    def search(self, vector: npt.ArrayLike, k: int) -> list[tuple[int, float]]:
        """The ``k`` items most similar to ``vector``: ``(key, cosine similarity)``, best
        first."""
        query = _normalized(vector, self.dim)[0]
        with self._lock:
            built, removed = self._built, frozenset(self._removed)
            delta_keys, delta = self._delta_keys, self._delta
        found: dict[int, float] = {}
        if built.annoy is not None and len(built.keys):
            slots, distances = built.annoy.get_nns_by_vector(
                query.tolist(), k + len(removed), search_k=self.search_k,
                include_distances=True)
            for slot, distance in zip(slots, distances, strict=True):
                key = int(built.keys[slot])
                if key not in removed:
                    # annoy's angular distance is sqrt(2 - 2 cos) of normalized vectors.
                    found[key] = 1.0 - distance * distance / 2.0
        if delta_keys:
            scores = delta @ query
            top = np.argsort(-scores)[:k]
            for i in top:
                key = delta_keys[int(i)]
                found[key] = max(found.get(key, -2.0), float(scores[int(i)]))
        return sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
