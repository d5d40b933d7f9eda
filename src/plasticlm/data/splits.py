"""Document-level train/validation split, with the documents shuffled by a fixed seed.

The documents of a language are permuted with a generator seeded by ``data.split_seed`` and the
language code; the first ``round(n * data.val_fraction)`` (at least one, at most n - 1) form the
validation split, the rest the training split, both in the shuffled order. Shuffling matters: the
help pages come in topic order (Basic, Calc, ..., Writer), and without it each task would see one
narrow topic (data-sources.md, "Lessons from a CPU pilot"). The split depends only on the corpus
content (its sha256), the seed and the fraction, so it is fixed once built; the corpus builder
drops repeated documents, so the two splits never share a document text.
"""

from __future__ import annotations

import numpy as np

from plasticlm.data.paths import lang_seed
from plasticlm.errors import DataError


def split_indices(n_docs: int, lang: str, seed: int, val_fraction: float) -> tuple[list[int], list[int]]:
    """(train, validation) document indices, disjoint, covering 0..n_docs-1, in shuffled order."""
    if n_docs < 2:
        raise DataError(
            f"language {lang!r}: {n_docs} document(s); a train/validation split needs at least 2 (add data)"
        )
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"data.val_fraction = {val_fraction}: must be in (0, 1)")
    order = np.random.default_rng(lang_seed(seed, lang, "split")).permutation(n_docs)
    n_val = min(n_docs - 1, max(1, round(n_docs * val_fraction)))
    return order[n_val:].tolist(), order[:n_val].tolist()


def split_documents(docs: list[str], lang: str, seed: int, val_fraction: float) -> tuple[list[str], list[str]]:
    """(train documents, validation documents), see ``split_indices``."""
    train, val = split_indices(len(docs), lang, seed, val_fraction)
    return [docs[i] for i in train], [docs[i] for i in val]
