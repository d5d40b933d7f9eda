"""The streaming shard build (data/build.py) on corpora made in the test: local jsonl/parquet/txt read in
place, a tiny Hugging Face dataset saved to disk, token targets, several processes, resume after a crash."""

import json
from pathlib import Path

import numpy as np
import pytest

from plasticlm.config import load_config
from plasticlm.data import build as build_mod
from plasticlm.data.build import hash_is_val, route_salt
from plasticlm.data.prepare import prepare_data
from plasticlm.data.tokenizer import load_tokenizer
from plasticlm.errors import DataError

LANGS = ("en", "fr", "vi")
WORDS = {"en": "the cat sat on a mat and then it ran far away", "fr": "le chat est sur le tapis puis il court",
         "vi": "con meo ngoi tren tam tham roi chay di xa"}


def _doc(lang: str, i: int) -> str:
    w = WORDS[lang].split()
    return " ".join(w[(i * 7 + k * 3) % len(w)] for k in range(20 + i % 17)) + f" {lang}{i}."


def make_local(root: Path, n: int = 600) -> dict[str, list[str]]:
    """Per language: a .jsonl file, a .parquet file (several row groups) and a .txt file; returns the documents."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = {}
    for lang in LANGS:
        d = root / lang
        d.mkdir(parents=True)
        all_docs = [_doc(lang, i) for i in range(n)]
        a, b, c = all_docs[: n // 2], all_docs[n // 2 : n - 20], all_docs[n - 20 :]
        (d / "a.jsonl").write_text("".join(json.dumps({"text": x, "id": i}) + "\n" for i, x in enumerate(a)))
        pq.write_table(pa.table({"text": b}), d / "b.parquet", row_group_size=50)
        (d / "c.txt").write_text("\n\n".join(c) + "\n")
        docs[lang] = all_docs
    return docs


def local_cfg(root: Path, *extra: str):
    return load_config(None, [
        "data.source=local", f"data.local_dir={root}", "data.vocab_size=300", "data.tokenizer_sample_bytes=20000",
        "model.seq_len=16", "stream.languages=[en, fr]", "probe.after_languages=[]", "data.val_fraction=0.1", *extra])


def _decoded_docs(p, lang: str, split: str) -> list[str]:
    tok = load_tokenizer(p.tokenizer_path)
    return tok.decode(getattr(p, split)[lang]).split("<|endoftext|>")[:-1]


def test_local_files_in_place_hash_split_and_no_text_copy(tmp_path, home):
    docs = make_local(tmp_path / "corpus")
    p = prepare_data(local_cfg(tmp_path / "corpus", "data.tasks=3", "data.workers=1"), progress=False)
    assert not (home / "corpus").exists()  # read in place: no docs.jsonl copy of the text
    salt = route_salt(0, "fr")
    train, val = _decoded_docs(p, "fr", "train"), _decoded_docs(p, "fr", "val")
    assert sorted(train + val) == sorted(docs["fr"])  # every document once, jsonl, parquet and txt alike
    assert all(hash_is_val(d, salt, 0.1) for d in val) and not any(hash_is_val(d, salt, 0.1) for d in train)
    assert 0.03 < len(val) / len(docs["fr"]) < 0.2
    assert train != [d for d in docs["fr"] if d in set(train)]  # shuffled within each task
    entry = p.manifest["languages"]["fr"]
    assert entry["documents"] == len(docs["fr"]) and entry["train"]["documents"] == len(train)
    assert isinstance(p.train["fr"], np.memmap) and p.train["fr"].dtype == np.uint16
    assert not list((home / "work").rglob("task-*"))  # task files are removed once merged


def test_token_targets_cut_exactly_and_stop_reading(tmp_path, home):
    make_local(tmp_path / "corpus")
    cfg = local_cfg(tmp_path / "corpus", "data.tasks=2", "data.workers=1", "data.train_tokens=3000",
                    "data.val_tokens=400", "data.train_tokens_per_language={vi = 1500}")
    p = prepare_data(cfg, progress=False)
    assert {lang: (len(p.train[lang]), len(p.val[lang])) for lang in LANGS} == {
        "en": (3000, 400), "fr": (3000, 400), "vi": (1500, 400)}
    with pytest.raises(DataError, match=r"language 'en': the source gave [\d,]+ train tokens, fewer than the target"):
        prepare_data(local_cfg(tmp_path / "corpus", "data.workers=1", "data.train_tokens=10000000",
                               "data.val_tokens=10"), progress=False)


@pytest.mark.slow
def test_many_processes_build_the_same_shards_as_one(tmp_path, home, monkeypatch):
    make_local(tmp_path / "corpus")
    one = prepare_data(local_cfg(tmp_path / "corpus", "data.tasks=4", "data.workers=1"), progress=False)
    monkeypatch.setenv("PLASTICLM_HOME", str(tmp_path / "home2"))
    two = prepare_data(local_cfg(tmp_path / "corpus", "data.tasks=4", "data.workers=2"), progress=False)
    for lang in LANGS:
        assert two.manifest["languages"][lang]["train"]["sha256"] == one.manifest["languages"][lang]["train"]["sha256"]
    logs = list((tmp_path / "home2" / "work" / "logs").rglob("stats.json"))
    assert logs  # datatrove's local executor ran the tasks


def test_build_resumes_after_a_crash_and_keeps_finished_tasks(tmp_path, home, monkeypatch):
    make_local(tmp_path / "corpus")
    cfg = local_cfg(tmp_path / "corpus", "data.tasks=3", "data.workers=1")
    real, calls = build_mod.run_task, []

    def crash_on_second(b, t):
        calls.append((b.lang, t))
        if (b.lang, t) == ("en", 1) and calls.count(("en", 1)) == 1:
            raise KeyboardInterrupt("killed")
        return real(b, t)

    monkeypatch.setattr(build_mod, "run_task", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        prepare_data(cfg, progress=False)
    assert list((home / "work").rglob("task-00000.json"))  # the finished task is kept
    p = prepare_data(cfg, progress=False)
    assert calls.count(("en", 0)) == 1 and calls.count(("en", 1)) == 2  # only the unfinished task ran again
    monkeypatch.setattr(build_mod, "run_task", real)
    monkeypatch.setenv("PLASTICLM_HOME", str(tmp_path / "clean"))
    clean = prepare_data(cfg, progress=False)
    assert all(np.array_equal(p.train[lang], clean.train[lang]) for lang in LANGS)


def test_hf_dataset_saved_to_disk_streams_into_the_build(tmp_path, home, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for lang in LANGS:
        rows = {"text": [_doc(lang, i) for i in range(300)], "url": [f"u{i}" for i in range(300)]}
        datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "ds" / lang))
    cfg = load_config(None, [
        "data.source=hf", f"data.hf_dataset={tmp_path / 'ds'}", "data.hf_streaming=false", "data.vocab_size=300",
        "data.tokenizer_sample_bytes=20000", "model.seq_len=16", "stream.languages=[en, fr]",
        "probe.after_languages=[]", "data.tasks=2", "data.workers=1", "data.train_tokens=2000", "data.val_tokens=300"])
    p = prepare_data(cfg, progress=False)
    assert (len(p.train["vi"]), len(p.val["vi"])) == (2000, 300)
    assert set(_decoded_docs(p, "vi", "train")[:-1]) <= {_doc("vi", i) for i in range(300)}  # the last one is cut
    assert not (home / "corpus").exists()


def test_slurm_executor_is_built_from_the_config(tmp_path):
    pytest.importorskip("datatrove")
    from plasticlm.data.build_step import make_executor

    cfg = load_config(None, ["data.executor=slurm", "data.slurm_partition=cpu", "data.slurm_time=2:00:00",
                             "data.slurm_mem_per_cpu_gb=8"])
    b = build_mod.LangBuild(lang="en", base=str(tmp_path / "b"), work=str(tmp_path / "w"), tasks=5, direct=True,
                            tokenizer="bytes", eot_token="<|endoftext|>", vocab_size=257, split_seed=0,
                            val_fraction=0.1, targets=(0, 0), max_bytes=0, data={}, meta={})
    ex = make_executor(cfg.data, [b], tmp_path / "logs")
    assert type(ex).__name__ == "SlurmPipelineExecutor"
    assert (ex.tasks, ex.partition, ex.time, ex.cpus_per_task, ex.mem_per_cpu_gb) == (5, "cpu", "2:00:00", 1, 8)


def test_hf_streamed_dataset_is_split_between_tasks(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    import pyarrow as pa
    import pyarrow.parquet as pq

    from plasticlm.config import DataConfig
    from plasticlm.data.sources import make_source

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    (tmp_path / "pq" / "vi").mkdir(parents=True)
    for k in range(2):  # two files: one whole file per task
        pq.write_table(pa.table({"text": [f"doc {k}-{i}" for i in range(25)]}), tmp_path / "pq" / "vi" / f"{k}.parquet")
    src = make_source(DataConfig(source="hf", hf_dataset=str(tmp_path / "pq"), hf_streaming=True))
    parts = [list(src.task_documents("vi", t, 2)) for t in range(2)]
    assert sorted(parts[0] + parts[1]) == sorted(f"doc {k}-{i}" for k in range(2) for i in range(25))
    assert parts[0] and parts[1] and not set(parts[0]) & set(parts[1])
