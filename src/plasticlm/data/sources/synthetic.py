"""Synthetic languages: Markov sources over language-specific word inventories (data-sources.md).

Every language code gets its own generator seeded from ``data.synthetic_seed`` and the code, so any
language (including the probe, e.g. "vi") works. A language is
  - a word inventory: words of 1-3 syllables built from the language's own consonants and vowels
    (a few accented or non-Latin letters per language, so text is multi-byte UTF-8 as in real data);
    frequent words are short (Zipf's law of abbreviation);
  - a first-order Markov chain over word ranks: a Zipfian unigram (exponent 1.1) and, per word,
    16 successors with Dirichlet(0.3) weights; 10% of steps jump back to the unigram.
With ``data.synthetic_shared_grammar`` (default) all languages share one chain and differ only in
their words ("permuted vocabularies"): task switches are abrupt and every task is equally hard.
Otherwise each language has its own chain ("disjoint" structures). Generation takes well under a
second per 400 KB.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Any

import numpy as np

from plasticlm.data.paths import lang_seed, stable_hash
from plasticlm.data.sources import Source

GENERATOR_VERSION = 1
N_WORDS = 512
N_SUCC = 16
JUMP = 0.1
_CONSONANTS = "bcdfghjklmnprstvwz"
_VOWELS = "aeiou"
# Extra letters drawn per language (ASCII source: escapes), so that languages differ in script too.
_EXTRA = (
    "\u00e9\u00e8\u00ea\u00e0\u00e2\u00f4\u00fb\u00e7\u00f1\u00f8\u00e5\u00e6\u00df\u00fc\u00f6\u00e4"
    "\u0103\u01a1\u01b0\u0111\u03b1\u03b2\u03b3\u03b4\u03bb\u03bc\u0431\u0434\u0436\u0437\u0438\u043b"
)


def _inventory(rng: np.random.Generator) -> list[str]:
    """N_WORDS distinct words sorted by length (rank 0 = most frequent = shortest)."""
    cons = list(rng.choice(list(_CONSONANTS), size=12, replace=False))
    vows = list(rng.choice(list(_VOWELS), size=4, replace=False))
    extra = list(rng.choice(list(_EXTRA), size=4, replace=False))
    cons += extra[:2]
    vows += extra[2:]
    words: set[str] = set()
    out: list[str] = []
    while len(out) < N_WORDS:
        n_syl = int(rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25]))
        w = "".join(
            cons[rng.integers(len(cons))] + vows[rng.integers(len(vows))]
            + (cons[rng.integers(len(cons))] if rng.random() < 0.3 else "")
            for _ in range(n_syl)
        )
        if w not in words:
            words.add(w)
            out.append(w)
    return sorted(out, key=lambda w: (len(w), w))


def _grammar(rng: np.random.Generator) -> tuple[list[float], list[list[int]], list[list[float]]]:
    """(unigram CDF, successors per word, successor CDF per word)."""
    uni = np.arange(1, N_WORDS + 1, dtype=np.float64) ** -1.1
    uni /= uni.sum()
    succ = rng.choice(N_WORDS, size=(N_WORDS, N_SUCC), p=uni)
    cum = np.cumsum(rng.dirichlet(np.full(N_SUCC, 0.3), size=N_WORDS), axis=1)
    cum[:, -1] = 1.0
    uni_cum = np.cumsum(uni)
    uni_cum[-1] = 1.0
    return uni_cum.tolist(), succ.tolist(), cum.tolist()


def generate(lang: str, n_bytes: int, seed: int = 0, shared_grammar: bool = True) -> Iterator[str]:
    """Documents of the synthetic language ``lang`` until at least ``n_bytes`` UTF-8 bytes are out."""
    words = _inventory(np.random.default_rng(lang_seed(seed, lang, "synthetic-words")))
    uni_cum, succ, cum = _grammar(
        np.random.default_rng(lang_seed(seed, "" if shared_grammar else lang, "synthetic-grammar"))
    )
    rng = np.random.default_rng(lang_seed(seed, lang, "synthetic-text"))
    total = 0
    while total < n_bytes:
        n_sent = int(rng.integers(2, 11))
        lengths = rng.integers(4, 17, size=n_sent)
        u = rng.random((int(lengths.sum()), 2)).tolist()
        k = 0
        sentences = []
        for length in lengths.tolist():
            w = bisect.bisect(uni_cum, u[k][1])
            out = [words[w]]
            k += 1
            for _ in range(length - 1):
                jump, pick = u[k]
                k += 1
                w = bisect.bisect(uni_cum, pick) if jump < JUMP else succ[w][bisect.bisect(cum[w], pick)]
                out.append(words[w])
            s = " ".join(out)
            sentences.append(s[0].upper() + s[1:] + ".")
        doc = " ".join(sentences)
        total += len(doc.encode("utf-8"))
        yield doc


class SyntheticSource(Source):
    """Generated languages, deterministic by ``data.synthetic_seed``, sized by ``data.synthetic_bytes``."""

    name = "synthetic"

    def settings(self) -> dict[str, Any]:
        d = self.data
        return {
            "version": GENERATOR_VERSION,
            "seed": d.synthetic_seed,
            "bytes": d.synthetic_bytes,
            "shared_grammar": d.synthetic_shared_grammar,
        }

    def key(self) -> str:
        return f"synthetic-{stable_hash(self.settings())[:12]}"

    def documents(self, lang: str) -> Iterator[str]:
        d = self.data
        return generate(lang, d.synthetic_bytes, d.synthetic_seed, d.synthetic_shared_grammar)

    def provenance(self, lang: str) -> dict[str, Any]:
        return {"generator": "markov-words", **self.settings()}
