"""The synthetic, local and hf corpus sources, and the corpus cache built from them."""

import json
import time
import warnings
from pathlib import Path

import pytest

from plasticlm.config import DataConfig
from plasticlm.data.corpus import build_corpus, iter_documents
from plasticlm.data.sources import make_source
from plasticlm.data.sources.synthetic import generate
from plasticlm.errors import DataError, DataWarning

# --------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_by_seed_and_language():
    a = list(generate("en", 20_000, seed=0))
    assert a == list(generate("en", 20_000, seed=0))
    assert a != list(generate("en", 20_000, seed=1))
    vi = list(generate("vi", 20_000, seed=0))
    assert set(" ".join(a).split()).isdisjoint(set(" ".join(vi).split())) or a != vi
    assert sum(len(d.encode()) for d in a) >= 20_000


def test_synthetic_languages_have_different_words():
    words = {lang: set(" ".join(generate(lang, 30_000)).lower().replace(".", "").split()) for lang in ["en", "fr"]}
    overlap = len(words["en"] & words["fr"]) / len(words["en"])
    assert overlap < 0.2


def test_synthetic_is_fast_and_sized():
    t0 = time.perf_counter()
    docs = list(generate("ja", 400_000))
    assert time.perf_counter() - t0 < 5
    assert 400_000 <= sum(len(d.encode()) for d in docs) < 410_000


def test_synthetic_corpus_cache_and_sha(home):
    data = DataConfig(source="synthetic", synthetic_bytes=20_000)
    m = build_corpus(data, ["en", "vi"], progress=False)
    assert m["en"]["bytes"] >= 20_000 and m["en"]["documents"] > 10
    again = build_corpus(data, ["en", "vi"], force=True, progress=False)
    assert again["vi"]["sha256"] == m["vi"]["sha256"]
    other = build_corpus(DataConfig(source="synthetic", synthetic_bytes=20_000, synthetic_seed=1), ["en"],
                         progress=False)
    assert other["en"]["sha256"] != m["en"]["sha256"] and other["en"]["source_key"] != m["en"]["source_key"]


def test_max_bytes_caps_every_source(home):
    m = build_corpus(DataConfig(source="synthetic", synthetic_bytes=50_000, max_bytes_per_language=10_000),
                     ["de"], progress=False)["de"]
    assert 10_000 <= m["bytes"] < 12_000 and m["capped"]


# --------------------------------------------------------------------------- local


def _local(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    (root / "en" / "sub").mkdir(parents=True)
    para = "First paragraph\nstill first.\n"
    (root / "en" / "a.txt").write_text(para + "\nSecond one.\n\n\n" + para)
    (root / "en" / "sub" / "b.jsonl").write_text(
        json.dumps({"text": "From jsonl", "id": 1}) + "\n\n" + json.dumps({"text": "Also jsonl"}) + "\n"
    )
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["From parquet", None, "   "], "n": [1, 2, 3]}), root / "en" / "c.parquet")
    (root / "en" / "ignored.csv").write_text("x")
    return root


def test_local_txt_jsonl_parquet(tmp_path, home):
    root = _local(tmp_path)
    data = DataConfig(source="local", local_dir=str(root))
    docs = list(make_source(data).documents("en"))
    assert docs == ["First paragraph\nstill first.", "Second one.", "First paragraph\nstill first.",
                    "From parquet", "   ", "From jsonl", "Also jsonl"]
    m = build_corpus(data, ["en"], progress=False)["en"]
    # the repeated paragraph and the whitespace-only row are dropped
    assert list(iter_documents(Path(m["path"]))) == [
        "First paragraph\nstill first.", "Second one.", "From parquet", "From jsonl", "Also jsonl"]
    assert m["duplicates_dropped"] == 1 and m["empty_dropped"] == 1 and m["provenance"]["files"] == 3


def test_local_txt_one_document_per_file(tmp_path):
    root = _local(tmp_path)
    docs = list(make_source(DataConfig(source="local", local_dir=str(root), local_txt_docs="file")).documents("en"))
    assert docs[0].startswith("First paragraph\nstill first.\n\nSecond one.")


def test_local_invalid_utf8_is_replaced_counted_and_warned(tmp_path, home):
    d = tmp_path / "c" / "fr"
    d.mkdir(parents=True)
    (d / "bad.txt").write_bytes(b"Bonjour " + b"\xff\xfe" + b" le monde\n\nDeux." + b"\xc3")
    data = DataConfig(source="local", local_dir=str(tmp_path / "c"))
    with pytest.warns(DataWarning, match=r"bad\.txt: 3 invalid UTF-8") as rec:
        m = build_corpus(data, ["fr"], progress=False)["fr"]
    assert "'fr'" in str(rec[0].message)
    assert m["provenance"]["replacements"] == 3
    assert list(iter_documents(Path(m["path"])))[0] == "Bonjour \ufffd\ufffd le monde"


def test_local_missing_and_empty_language_errors(tmp_path, home):
    root = tmp_path / "c"
    (root / "de").mkdir(parents=True)
    data = DataConfig(source="local", local_dir=str(root))
    with pytest.raises(DataError, match=r"language 'es': no directory"):
        build_corpus(data, ["es"], progress=False)
    with pytest.raises(DataError, match=r"language 'de': .* has no .txt"):
        build_corpus(data, ["de"], progress=False)
    (root / "de" / "blank.txt").write_text("\n \n")
    with pytest.raises(DataError, match=r"language 'de': .*no documents"):
        build_corpus(data, ["de"], progress=False)
    with pytest.raises(DataError, match="data.local_dir"):
        make_source(DataConfig(source="local"))


def test_local_bad_jsonl_names_file_and_line(tmp_path):
    d = tmp_path / "c" / "en"
    d.mkdir(parents=True)
    (d / "x.jsonl").write_text('{"text": "ok"}\n{"body": "no text"}\n')
    with pytest.raises(DataError, match=r"x\.jsonl:2"):
        list(make_source(DataConfig(source="local", local_dir=str(tmp_path / "c"))).documents("en"))


def test_local_cache_key_follows_files(tmp_path, home):
    root = _local(tmp_path)
    data = DataConfig(source="local", local_dir=str(root))
    k1 = make_source(data).key()
    (root / "en" / "new.txt").write_text("More text.")
    assert make_source(data).key() != k1


# --------------------------------------------------------------------------- hf


@pytest.fixture
def hf_offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_hf_from_save_to_disk(tmp_path, home, hf_offline):
    datasets = pytest.importorskip("datasets")
    for lang in ["en", "vi"]:
        rows = {"text": [f"{lang} document {i}" for i in range(30)], "meta": list(range(30))}
        datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "ds" / lang))
    data = DataConfig(source="hf", hf_dataset=str(tmp_path / "ds"), hf_streaming=False)
    m = build_corpus(data, ["en", "vi"], progress=False)
    assert m["vi"]["documents"] == 30
    assert list(iter_documents(Path(m["vi"]["path"])))[:2] == ["vi document 0", "vi document 1"]
    capped = DataConfig(source="hf", hf_dataset=str(tmp_path / "ds" / "{lang}"), max_bytes_per_language=40)
    assert build_corpus(capped, ["en"], progress=False)["en"]["documents"] == 4  # 13-byte docs until >= 40 bytes


def test_hf_local_parquet_dir_per_language_config(tmp_path, home, hf_offline):
    pytest.importorskip("datasets")
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "pq" / "vie_Latn").mkdir(parents=True)
    pq.write_table(pa.table({"content": ["xin chao", "tam biet"]}), tmp_path / "pq" / "vie_Latn" / "train.parquet")
    data = DataConfig(source="hf", hf_dataset=str(tmp_path / "pq"), hf_configs={"vi": "vie_Latn"},
                      hf_text_field="content", hf_streaming=True)
    assert list(make_source(data).documents("vi")) == ["xin chao", "tam biet"]
    bad = DataConfig(source="hf", hf_dataset=str(tmp_path / "pq"), hf_configs={"vi": "vie_Latn"}, hf_streaming=False)
    with pytest.raises(DataError, match="no column 'text'"):
        list(make_source(bad).documents("vi"))


def test_hf_errors(tmp_path, hf_offline):
    with pytest.raises(DataError, match="data.hf_dataset"):
        make_source(DataConfig(source="hf"))
    with pytest.raises(DataError, match="max_bytes_per_language"):
        list(make_source(DataConfig(source="hf", hf_dataset="someone/corpus")).documents("vi"))
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="same text"):
        list(make_source(DataConfig(source="hf", hf_dataset=str(tmp_path / "flat"))).documents("vi"))


def test_no_warnings_from_clean_local_data(tmp_path, home):
    root = _local(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        build_corpus(DataConfig(source="local", local_dir=str(root)), ["en"], progress=False)
