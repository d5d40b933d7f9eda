"""Splits, tokenizers, token shards and prepare_data on small synthetic corpora."""

import json
from pathlib import Path

import numpy as np
import pytest

from plasticlm.config import load_config
from plasticlm.data import build as build_mod
from plasticlm.data import prepare as prepare_mod
from plasticlm.data import shards
from plasticlm.data.corpus import iter_documents
from plasticlm.data.prepare import PreparedData, default_languages, prepare_data
from plasticlm.data.sources.synthetic import SyntheticSource
from plasticlm.data.splits import split_documents, split_indices
from plasticlm.data.tokenizer import ByteTokenizer, load_tokenizer, take_bytes, train_bpe
from plasticlm.errors import ConfigError, DataError, PlasticError

SMALL = [
    "data.source=synthetic", "data.synthetic_bytes=30000", "data.vocab_size=300",
    "data.tokenizer_sample_bytes=10000", "model.seq_len=32", "stream.languages=[en,fr]", "probe.after_languages=[]",
]


def small(*extra: str):
    return load_config(None, [*SMALL, *extra])


# --------------------------------------------------------------------------- splits


def test_split_disjoint_deterministic_and_shuffled():
    train, val = split_indices(200, "en", seed=0, val_fraction=0.1)
    assert len(val) == 20 and len(train) == 180
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(range(200))
    assert (train, val) == split_indices(200, "en", 0, 0.1)
    assert val != split_indices(200, "en", 1, 0.1)[1]
    assert val != split_indices(200, "fr", 0, 0.1)[1]  # each language its own permutation
    assert train != sorted(train)  # shuffled: topic order is broken (data-sources.md, Lessons)


def test_split_keeps_one_document_each_side_and_rejects_one_document():
    assert split_indices(2, "vi", 0, 0.01) == ([split_indices(2, "vi", 0, 0.01)[0][0]],
                                               [split_indices(2, "vi", 0, 0.01)[1][0]])
    assert len(split_indices(3, "vi", 0, 0.99)[0]) == 1
    with pytest.raises(DataError, match="language 'vi': 1 document"):
        split_documents(["only"], "vi", 0, 0.1)


# --------------------------------------------------------------------------- tokenizers


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    text = "h\u00e9llo \u4f60\u597d"
    ids = tok.encode(text)
    assert ids.max() < 256 and tok.vocab_size == 257 and tok.eot_id == 256
    assert tok.decode([*ids.tolist(), 256, *tok.encode("x").tolist()]) == text + "<|endoftext|>x"


def test_bpe_is_lossless_deterministic_and_checks_vocab(tmp_path):
    texts = ["Hello world, hello again.", "Xin ch\u00e0o th\u1ebf gi\u1edbi", "\u4f60\u597d\u4e16\u754c  \n x"] * 20
    a, b = train_bpe(texts, 300, "<|endoftext|>"), train_bpe(texts, 300, "<|endoftext|>")
    assert a.to_str() == b.to_str() and a.get_vocab_size() == 300 and a.token_to_id("<|endoftext|>") == 0
    (tmp_path / "t.json").write_text(a.to_str())
    tok = load_tokenizer(tmp_path / "t.json")
    for t in [*texts[:3], "literal <|endoftext|> in text"]:
        ids = tok.encode(t)
        assert tok.eot_id not in ids and tok.decode(ids) == t
    with pytest.raises(DataError, match="vocab_size"):
        train_bpe(texts, 200, "<|endoftext|>")
    with pytest.raises(DataError, match="no end-of-document token '<eos>'"):
        load_tokenizer(tmp_path / "t.json", "<eos>")
    with pytest.raises(DataError, match="does not exist"):
        load_tokenizer(tmp_path / "missing.json")


def test_take_bytes_cuts_at_character_boundary():
    out = take_bytes(["ab", "\u00e9\u00e9\u00e9", "zz"], 5)
    assert out == ["ab", "\u00e9"] and sum(len(x.encode()) for x in out) <= 5


# --------------------------------------------------------------------------- prepare_data


def test_prepare_data_interface_and_round_trip(home):
    cfg = small()
    p = prepare_data(cfg, progress=False)
    assert isinstance(p, PreparedData)
    assert default_languages(cfg) == ["en", "fr", "vi"]
    assert sorted(p.train) == sorted(p.val) == ["en", "fr", "vi"]
    assert p.vocab_size == 300 and p.eot_id == 0 and Path(p.tokenizer_path).is_file()
    tok = load_tokenizer(p.tokenizer_path)
    for lang in p.train:
        tr, va = p.train[lang], p.val[lang]
        assert isinstance(tr, np.memmap) and tr.dtype == np.uint16 and tr.ndim == 1
        assert int(tr.max()) < p.vocab_size and tr[-1] == p.eot_id and va[-1] == p.eot_id
        assert 1.5 < p.bytes_per_token[lang] < 6
    # decode(tokens) == documents joined by the separator, in the shuffled split order
    m = p.manifest["languages"]["fr"]
    docs = list(iter_documents(Path(home) / "corpus" / p.manifest["source_key"] / "fr" / "docs.jsonl"))
    train_docs, val_docs = split_documents(docs, "fr", cfg.data.split_seed, cfg.data.val_fraction)
    assert tok.decode(p.val["fr"]) == "".join(d + "<|endoftext|>" for d in val_docs)
    assert m["val"]["documents"] == len(val_docs) and m["train"]["documents"] == len(train_docs)
    assert m["val"]["bytes"] == sum(len(d.encode()) for d in val_docs)
    assert p.bytes_per_token["fr"] == pytest.approx(m["val"]["bytes"] / len(p.val["fr"]))
    assert p.manifest["tokenizer"]["vocab_size"] == 300 and p.manifest["source"] == "synthetic"
    assert m["sha256"] and m["documents"] == len(docs)


def test_shard_header_and_file(home):
    p = prepare_data(small(), progress=False)
    path = Path(p.manifest["languages"]["en"]["train"]["path"])
    header = json.loads(path.with_suffix(".json").read_text())
    assert header["dtype"] == "uint16" and header["count"] == len(p.train["en"])
    assert header["vocab_size"] == 300 and header["eot_id"] == 0
    assert header["tokenizer_hash"] == p.manifest["tokenizer"]["hash"]
    assert path.stat().st_size == 2 * header["count"]
    import hashlib

    assert hashlib.sha256(path.read_bytes()).hexdigest() == header["sha256"]
    assert header["corpus_sha256"] == p.manifest["languages"]["en"]["sha256"]


def test_second_call_uses_caches(home, monkeypatch):
    first = prepare_data(small(), progress=False)

    def boom(*a, **k):
        raise AssertionError("rebuilt a cached artefact")

    monkeypatch.setattr(prepare_mod, "build_bpe", boom)
    monkeypatch.setattr(prepare_mod, "build_languages", boom)
    monkeypatch.setattr(SyntheticSource, "documents", boom)
    again = prepare_data(small(), progress=False)
    assert again.manifest == first.manifest
    assert np.array_equal(again.val["vi"], first.val["vi"])
    # asking for the probe language alone gives the same tokenizer and tokens
    vi = prepare_data(small(), ["vi"], progress=False)
    assert list(vi.train) == ["vi"] and vi.tokenizer_path == first.tokenizer_path


def test_tokenizer_cache_key_follows_settings(home):
    a = prepare_data(small(), progress=False)
    b = prepare_data(small("data.vocab_size=320"), progress=False)
    c = prepare_data(small("data.split_seed=1"), progress=False)
    assert len({a.tokenizer_path, b.tokenizer_path, c.tokenizer_path}) == 3
    assert b.vocab_size == 320
    assert not np.array_equal(np.asarray(a.val["en"][:50]), np.asarray(c.val["en"][:50]))


def test_bytes_tokenizer_and_uint32(home, tmp_path):
    p = prepare_data(small("data.tokenizer=bytes"), progress=False)
    assert p.tokenizer_path == "bytes" and p.vocab_size == 257 and p.eot_id == 256
    assert p.train["en"].dtype == np.uint16
    assert p.bytes_per_token["en"] < 1.0  # bytes plus one separator per document
    assert shards.dtype_for(151_680) == np.uint32 and shards.dtype_for(65_536) == np.uint16


def test_external_tokenizer_json(home, tmp_path):
    tok = train_bpe(["some text to learn from " * 5, "autre texte"] * 10, 280, "<|endoftext|>")
    (tmp_path / "tok.json").write_text(tok.to_str())
    p = prepare_data(small(f"data.tokenizer={tmp_path / 'tok.json'}"), progress=False)
    # a tiny training text runs out of merges: the vocabulary is the tokenizer's real size
    assert p.vocab_size == tok.get_vocab_size() <= 280 and p.manifest["tokenizer"]["kind"] == "file"


def test_too_short_for_one_sequence_names_language_and_fix(home):
    with pytest.raises(DataError) as e:
        prepare_data(small("model.seq_len=4000"), progress=False)
    msg = str(e.value)
    assert "language 'en': val split has" in msg and "lower model.seq_len or add data" in msg


def test_probe_language_in_training_languages_is_rejected(home):
    cfg = small()
    cfg.stream.languages = ["en", "vi"]
    with pytest.raises(ConfigError, match="held out"):
        prepare_data(cfg, progress=False)


def test_model_vocab_smaller_than_tokenizer_is_an_error(home):
    # Known from the config alone for a BPE of data.vocab_size ids: refused when the config loads.
    with pytest.raises(PlasticError, match="model.vocab_size = 100"):
        prepare_data(small("model.vocab_size=100"), progress=False)


def test_interrupted_shard_write_leaves_no_cache(home, monkeypatch):
    real = shards.encode_documents
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(build_mod, "BATCH_DOCS", 8)
    monkeypatch.setattr(shards, "encode_documents", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare_data(small("data.workers=1"), progress=False)  # one worker: the build tasks run in-process
    leftovers = [p for p in (home / "tokens").rglob("*") if p.is_file()]
    assert leftovers == []  # neither a partial .bin nor a temp file
    monkeypatch.setattr(shards, "encode_documents", real)
    p = prepare_data(small(), progress=False)
    assert p.train["en"][-1] == p.eot_id

