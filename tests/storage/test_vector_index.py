"""The vector index: annoy + exact delta, rebuilds swapped atomically, reloading from disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from dre.storage.vector_index import VectorIndex

DIM = 16


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def exact_top(data: np.ndarray, keys: list[int], query: np.ndarray, k: int) -> list[int]:
    normed = data / np.linalg.norm(data, axis=1, keepdims=True)
    scores = normed @ (query / np.linalg.norm(query))
    return [keys[i] for i in np.argsort(-scores)[:k]]


def test_delta_only_is_exact(tmp_path: Path) -> None:
    index = VectorIndex(tmp_path, DIM)
    data = vectors(200)
    keys = list(range(1000, 1200))
    index.add(keys, data)
    query = vectors(1, seed=9)[0]
    found = index.search(query, 10)
    assert [k for k, _ in found] == exact_top(data, keys, query, 10)
    assert found[0][1] <= 1.0 + 1e-6 and found[0][1] >= found[-1][1]


def test_rebuild_then_merge_with_delta_and_reload(tmp_path: Path) -> None:
    index = VectorIndex(tmp_path, DIM, rebuild_threshold=50)
    data = vectors(500)
    index.add(list(range(500)), data)
    assert index.needs_rebuild()
    assert index.rebuild((i, data[i].tobytes()) for i in range(500)) == 500
    assert index.delta_size == 0 and not index.needs_rebuild()
    extra = vectors(20, seed=3)
    index.add(list(range(500, 520)), extra)
    # Searching for an item finds it (annoy part and delta part alike).
    assert index.search(data[42], 1)[0][0] == 42
    assert index.search(extra[7], 1)[0][0] == 507
    # A removed item is never returned, even before the next rebuild.
    index.remove([42])
    assert 42 not in [k for k, _ in index.search(data[42], 10)]
    # Recall of the approximate part against exact search.
    all_data = np.vstack([data, extra])
    all_keys = list(range(520))
    hits = 0
    for q in vectors(20, seed=5):
        expected = set(exact_top(all_data, all_keys, q, 10)) - {42}
        hits += len(expected & {k for k, _ in index.search(q, 10)})
    assert hits / (20 * 9) > 0.9
    # A new process loads the built index from disk.
    reopened = VectorIndex(tmp_path, DIM)
    assert len(reopened) == 500
    assert reopened.search(data[3], 1)[0][0] == 3


def test_inconsistent_files_are_ignored(tmp_path: Path) -> None:
    index = VectorIndex(tmp_path, DIM)
    data = vectors(30)
    index.rebuild((i, data[i]) for i in range(30))
    (tmp_path / "vectors.json").write_text('{"dim": 16, "items": 31}')
    assert len(VectorIndex(tmp_path, DIM)) == 0
    # A dimension that differs from the stored one is ignored as well, not misread.
    (tmp_path / "vectors.json").write_text('{"dim": 16, "items": 30}')
    assert len(VectorIndex(tmp_path, DIM)) == 30
    assert len(VectorIndex(tmp_path, 8)) == 0
