"""Caches under $PLASTICLM_HOME (issue 18, item 1, "Caches"): two processes that build the same
corpus, tokenizer and token shards at once both succeed and leave one valid copy, each artefact built
once (the second waits for the first, then reads its cache); a half-written cache entry (what a kill
leaves) is never used."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from plasticlm.config import load_config
from plasticlm.data import shards
from plasticlm.data.prepare import prepare_data

pytestmark = pytest.mark.faults

SETS = ["data.source=synthetic", "data.synthetic_bytes=30000", "data.vocab_size=300",
        "data.tokenizer_sample_bytes=10000", "model.seq_len=32", "stream.languages=[en,fr]",
        "probe.after_languages=[]"]
"""Synthetic en, fr and vi: a corpus, a byte-level BPE and token shards to build."""
BUILDERS = {"corpus": ("plasticlm.data.corpus", "_write_language"),
            "tokenizer": ("plasticlm.data.prepare", "build_bpe"),
            "shards": ("plasticlm.data.build", "merge_split")}
"""The function that writes each kind of cache entry (one call per language, tokenizer, or split)."""


def _summary(p) -> dict:
    """What a build gave: tokenizer hash and, per language and split, the shard's sha256 and tokens."""
    langs = p.manifest["languages"]
    return {"tokenizer": p.manifest["tokenizer"]["hash"],
            "shards": {lang: {s: (e[s]["sha256"], e[s]["count"]) for s in ("train", "val")}
                       for lang, e in langs.items()},
            "corpus": {lang: e["sha256"] for lang, e in langs.items()},
            "arrays": {lang: int(np.asarray(p.train[lang]).astype(np.int64).sum()) for lang in p.train}}


def _build(home: str, barrier, out, slow: float) -> None:
    """A process that builds everything at the same moment as its twin, each write made ``slow``
    seconds longer so that the two overlap; reports how many entries it wrote itself."""
    import importlib

    os.environ["PLASTICLM_HOME"] = home
    counts = {k: 0 for k in BUILDERS}
    for kind, (module, name) in BUILDERS.items():
        mod = importlib.import_module(module)
        real = getattr(mod, name)

        def wrapped(*a, _real=real, _kind=kind, **k):
            counts[_kind] += 1
            time.sleep(slow)
            return _real(*a, **k)

        setattr(mod, name, wrapped)
    barrier.wait(timeout=300)
    p = prepare_data(load_config(None, SETS), progress=False)
    out.put((os.getpid(), counts, _summary(p)))


def test_two_processes_building_the_same_caches_at_once_build_each_entry_once(tmp_path, monkeypatch):
    ctx = mp.get_context("forkserver")  # children forked from a process that imported torch once
    ctx.set_forkserver_preload(["tests.kill_child"])
    home = tmp_path / "home"
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_build, args=(str(home), barrier, out, 0.4)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)
    assert [p.exitcode for p in procs] == [0, 0]  # both succeeded
    results = [out.get(timeout=10) for _ in procs]
    (_, c1, s1), (_, c2, s2) = results
    assert s1 == s2  # with the same data
    # each entry written once in all: 3 corpora, 1 tokenizer, 3 x 2 shards
    assert {k: c1[k] + c2[k] for k in BUILDERS} == {"corpus": 3, "tokenizer": 1, "shards": 6}
    monkeypatch.setenv("PLASTICLM_HOME", str(tmp_path / "alone"))
    assert _summary(prepare_data(load_config(None, SETS), progress=False)) == s1  # = a build alone
    assert len([p for p in (home / "tokenizers").iterdir() if p.is_dir()]) == 1
    for lang in ("en", "fr", "vi"):  # one shard pair per language and split, nothing left behind
        names = sorted(p.name for p in (home / "tokens").rglob(f"{lang}/*"))
        assert len(names) == 4 and all(n.endswith((".bin", ".json")) for n in names), names
    assert not [p for p in home.rglob("*") if p.name.endswith((".tmp", ".partial"))]


# ---------------------------------------------------------------------------- half-written entries


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A complete cache, and what prepare_data gives from it."""
    home = tmp_path_factory.mktemp("cache") / "home"
    with pytest.MonkeyPatch.context() as mp_:
        mp_.setenv("PLASTICLM_HOME", str(home))
        return home, _summary(prepare_data(load_config(None, SETS), progress=False))


def _content(path: Path):
    """A file's bytes; a JSON file's contents without wall times (the tokenizer's train_seconds)."""
    if path.suffix != ".json":
        return path.read_bytes()
    return {k: v for k, v in json.loads(path.read_text()).items() if not k.endswith("seconds")}


def _one(home: Path, pattern: str) -> Path:
    found = sorted(home.rglob(pattern))
    assert found, pattern
    return found[0]


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _leftover_temp(path: Path) -> None:
    """A temporary file of an atomic write killed half-way (runlog.atomic_write_bytes's name)."""
    (path.parent / f".{path.name}.k1ll3d.tmp").write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _killed_shard_build(home: Path) -> None:
    """en's shards gone (headers too) and its build killed: a task's files half written, no marker."""
    bin_path = _one(home, "en/*.val.bin")
    base = bin_path.with_name(bin_path.name[: -len(".val.bin")])
    for p in base.parent.glob(base.name + ".*"):
        p.unlink()
    work = Path(str(base).replace(f"{os.sep}tokens{os.sep}", f"{os.sep}work{os.sep}"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "task-00000.train.bin.partial").write_bytes(b"\x01\x00" * 7)
    (work / "task-00000.val.bin").write_bytes(b"\x02\x00" * 3)  # renamed, but its marker never written


DAMAGE = {
    # a corpus whose docs.jsonl was being replaced: half of it under the final name, no manifest
    "corpus-no-manifest": lambda h: (_truncate(_one(h, "en/docs.jsonl")), _one(h, "en/manifest.json").unlink()),
    # a manifest with a docs.jsonl of another size (rewritten by a killed build)
    "corpus-short-docs": lambda h: _truncate(_one(h, "fr/docs.jsonl")),
    # the BPE written, its meta.json (written last) not
    "tokenizer-no-meta": lambda h: (_truncate(_one(h, "tokenizer.json")), _one(h, "tokenizers/*/meta.json").unlink()),
    # a shard whose header (written last) is missing
    "shard-no-header": lambda h: (_truncate(_one(h, "en/*.train.bin")), _one(h, "en/*.train.json").unlink()),
    # a shard shorter than its header says
    "shard-short": lambda h: _truncate(_one(h, "vi/*.val.bin")),
    "shard-build-killed": _killed_shard_build,
    # temporary files of killed writes beside every entry
    "temp-files": lambda h: [_leftover_temp(p) for p in [*h.rglob("docs.jsonl"), *h.rglob("manifest.json"),
                                                           *h.rglob("tokenizer.json"), *h.rglob("*.bin")]],
}


@pytest.mark.parametrize("case", DAMAGE)
def test_a_half_written_cache_entry_is_never_used(case, built, tmp_path, monkeypatch):
    clean, expected = built
    home = tmp_path / "home"
    shutil.copytree(clean, home)
    DAMAGE[case](home)
    monkeypatch.setenv("PLASTICLM_HOME", str(home))
    got = prepare_data(load_config(None, SETS), progress=False)
    assert _summary(got) == expected
    for p in clean.rglob("*"):  # every damaged entry rebuilt as it was; the temporary files ignored
        rel = p.relative_to(clean)
        if p.is_file() and rel.parts[0] != "work":
            assert _content(home / rel) == _content(p), rel
    for lang in got.train:
        for split in ("train", "val"):
            path = Path(got.manifest["languages"][lang][split]["path"])
            assert shards.read_header(path.with_name(path.name[: -len(f".{split}.bin")]), split) is not None
