"""`plasticlm probe --model`: the plasticity probe of a transformers causal LM built here (no downloads)."""

import json
import shutil

import numpy as np
import pytest
import torch

from plasticlm.cli import main
from plasticlm.data.tokenizer import train_bpe
from plasticlm.hf import tokenizer_files
from plasticlm.onset import dauc, find_onset
from plasticlm.runlog import read_jsonl

transformers = pytest.importorskip("transformers")  # in the dev extra; CI installs it

EOT = "<|endoftext|>"
SEQ = 32
CONFIG = """
[data]
source = "synthetic"
synthetic_bytes = 30000
home = "{home}"
[model]
preset = "25K"
seq_len = {seq}
[stream]
languages = ["en", "fr"]
tokens_per_task = 384
cycles = 1
[train]
batch_size = 4
seed = 3
[eval]
sequences = 4
batch_size = 4
[probe]
language = "vi"
after_languages = []
steps = 4
eval_every = 2
sequences = 4
bootstrap = 50
"""


def _write_tokenizer(d, texts):
    tok = train_bpe(texts, 300, EOT)
    d.mkdir(parents=True, exist_ok=True)
    for name, text in tokenizer_files(tok.to_str(), EOT, SEQ).items():
        (d / name).write_text(text)
    return tok.get_vocab_size()


def _tiny_gpt2(vocab):
    cfg = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=vocab, n_positions=64,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg)


def _train(model, steps, seed):
    """A few AdamW steps on a fixed random batch, so that checkpoints differ."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (4, SEQ), generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """A directory of two checkpoints (step-2/, step-4/) of a tiny GPT-2, with its BPE at the top."""
    root = tmp_path_factory.mktemp("hf-series") / "series"
    texts = [f"mot {i} chu {i * 7 % 13} tieng viet {i % 5}" for i in range(300)]
    vocab = _write_tokenizer(root, texts)
    model = _tiny_gpt2(300)
    assert vocab <= 300
    for step in (2, 4):
        _train(model, 2, seed=step)
        model.save_pretrained(root / f"step-{step}")
    return root


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    """The probe recipe and data; one $PLASTICLM_HOME for the module (corpus and shards built once)."""
    d = tmp_path_factory.mktemp("hf-config")
    path = d / "probe.toml"
    path.write_text(CONFIG.format(home=d / "home", seq=SEQ))
    return path


def _probe(capsys, *args):
    rc = main(["probe", *map(str, args), "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return json.loads(captured.out)


def test_a_series_of_checkpoints_gets_probe_rows_and_an_onset_answer(series, config, tmp_path, capsys):
    out = tmp_path / "out"
    doc = _probe(capsys, "--model", series, config, "--out", out)
    rows = read_jsonl(out / "probes.jsonl")
    assert [r["checkpoint"] for r in rows] == ["step-2", "step-4"] == doc["probed"]
    assert [r["task_index"] for r in rows] == [2, 4] and [r["step"] for r in rows] == [2, 4]
    assert [r["path"] for r in rows] == [str(series / "step-2"), str(series / "step-4")]
    scratch = doc["scratch"]
    assert scratch["auc"] > 0 and doc["device"] == "cpu" and doc["dtype"] == "float32"
    for r in rows:
        assert r["auc"] > 0 and r["diverged"] is None and r["tokens_seen"] is None
        assert [s for s, _ in r["curve"]] == [0, 2, 4]  # probe.steps 4, eval_every 2
        assert r["auc"] == pytest.approx(np.trapezoid([v for _, v in r["curve"]], [0, 2, 4]) / 4)
        assert r["dauc_scratch"] == pytest.approx(dauc(r["auc"], scratch["auc"]))
        with np.load(out / r["per_sequence"]) as z:
            assert z["per_sequence"].shape == (3, 4)  # eval steps x probe.sequences
    assert rows[0]["auc"] != rows[1]["auc"]  # the checkpoints differ, and so do their scores
    # the same keys as plasticlm's own probes.jsonl rows, plus the checkpoint's path and step
    assert {"checkpoint", "task_index", "cycle", "lang", "tokens_seen", "auc", "final_loss", "curve", "scratch_auc",
            "dauc_scratch", "probe_tokens", "seconds", "per_sequence", "diverged", "replicate_aucs"} < set(rows[0])
    onset = doc["onset"]
    assert onset["code"] == "too_few_points" and onset["onset_task_index"] is None and onset["n_points"] == 2
    assert [s["checkpoint"] for s in onset["scores"]] == ["step-2", "step-4"]
    assert onset["scores"][0]["dauc"] == 0.0
    # a second call probes nothing and gives the same rows
    again = _probe(capsys, "--model", series, config, "--out", out)
    assert again["probed"] == [] and [r["auc"] for r in again["rows"]] == [r["auc"] for r in rows]


def test_a_longer_series_gets_the_onset_of_plasticlms_rule(series, config, tmp_path, capsys):
    longer = tmp_path / "longer"
    shutil.copytree(series, longer)
    model = transformers.AutoModelForCausalLM.from_pretrained(longer / "step-4")
    for step in (6, 8, 10):
        _train(model, 2, seed=step)
        model.save_pretrained(longer / f"checkpoint-{step}")
    model.save_pretrained(longer)  # the HF Trainer's layout: the final model on top of its checkpoints
    doc = _probe(capsys, "--model", longer, config, "--out", tmp_path / "out", "--set", "probe.bootstrap=20")
    assert doc["probed"] == ["step-2", "step-4", "checkpoint-6", "checkpoint-8", "checkpoint-10"]
    x = [r["task_index"] for r in doc["rows"]]
    y = [dauc(r["auc"], doc["rows"][0]["auc"]) for r in doc["rows"]]
    expected = find_onset(x, y, 3)
    assert doc["onset"]["code"] == expected.code and doc["onset"]["code"] != "too_few_points"
    assert doc["onset"]["onset_task_index"] == expected.onset_task_index
    assert doc["onset"]["ci95"] is not None  # 5 points: the bootstrap over validation sequences runs


def test_a_single_model_directory_and_a_name_in_the_local_cache(series, config, tmp_path, capsys, monkeypatch):
    single = tmp_path / "model"
    shutil.copytree(series / "step-4", single)
    doc = _probe(capsys, "--model", single, config, "--out", tmp_path / "a", "--tokenizer", series)
    assert [r["checkpoint"] for r in doc["rows"]] == ["model"] and doc["rows"][0]["task_index"] == 0
    assert doc["onset"]["code"] == "too_few_points"
    # the same model under a name in a (here: fabricated) Hugging Face cache, found offline
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    snap = cache / "models--tiny--gpt" / "snapshots" / "abc123"
    shutil.copytree(single, snap)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(series / f, snap / f)
    (cache / "models--tiny--gpt" / "refs").mkdir()
    (cache / "models--tiny--gpt" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    named = _probe(capsys, "--model", "tiny/gpt", config, "--out", tmp_path / "b")
    assert named["rows"][0]["checkpoint"] == "tiny--gpt"
    assert named["rows"][0]["auc"] == pytest.approx(doc["rows"][0]["auc"], rel=1e-6)
    assert named["scratch"]["auc"] == doc["scratch"]["auc"]  # the same architecture: the cached baseline


def test_bad_input_exits_2_naming_the_fix(series, config, tmp_path, capsys):
    def _fails(*args):
        out = [] if "--out" in args or "--model" not in args else ["--out", tmp_path / "never"]
        assert main(["probe", *map(str, args), *map(str, out)]) == 2
        assert not (tmp_path / "never").exists()  # nothing written for a refused start
        return capsys.readouterr().err

    assert "not in the local Hugging Face cache" in _fails("--model", tmp_path / "nope", config)
    assert "huggingface-cli download" in _fails("--model", "nobody/no-such-model-xyz", config)
    (tmp_path / "empty").mkdir()
    assert "no config.json and no checkpoint directories" in _fails("--model", tmp_path / "empty", config)
    no_tok = tmp_path / "no-tok"
    shutil.copytree(series / "step-2", no_tok)
    assert "--tokenizer DIR" in _fails("--model", no_tok, config)
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=64).save_pretrained(encoder)
    err = _fails("--model", encoder, config, "--tokenizer", series)
    assert "not a causal language model" in err
    err = _fails("--model", series, config, "--set", "model.seq_len=128")
    assert "--set model.seq_len=64" in err
    assert "only apply with --model" in _fails(tmp_path, "--tokenizer", series)
    out = tmp_path / "o"
    _probe(capsys, "--model", series / "step-2", config, "--out", out, "--tokenizer", series)
    err = _fails("--model", series / "step-4", config, "--out", out, "--tokenizer", series)
    assert "holds probes of another model" in err


def test_a_plasticlm_export_scores_as_plasticlms_own_probe(tmp_path, capsys):
    """The same recipe: a run's checkpoint, exported to transformers and probed with --model, gets the AUC that
    the run's own in-run probe gave it (same data, same LR, same steps; float tolerance)."""
    cfg_text = CONFIG.format(home=tmp_path / "home", seq=SEQ).replace(
        'synthetic_bytes = 30000', 'synthetic_bytes = 30000\nvocab_size = 300\ntokenizer_sample_bytes = 10000')
    config = tmp_path / "run.toml"
    config.write_text(cfg_text + "\n[optim]\nlr = 3e-3\n")
    run_dir = tmp_path / "run"
    assert main(["train", str(config), "--run-dir", str(run_dir), "--quiet"]) == 0
    ours = read_jsonl(run_dir / "probes.jsonl")
    assert [r["checkpoint"] for r in ours] == ["task-000001"]
    assert main(["export", str(run_dir), "--to", str(tmp_path / "hf"), "--checkpoint", "task-000001"]) == 0
    capsys.readouterr()
    doc = _probe(capsys, "--model", tmp_path / "hf", config, "--out", tmp_path / "out")
    (row,) = doc["rows"]
    assert row["task_index"] == ours[0]["task_index"] == 2 and row["tokens_seen"] == ours[0]["tokens_seen"]
    assert row["auc"] == pytest.approx(ours[0]["auc"], rel=1e-4)
    (written,) = read_jsonl(tmp_path / "out" / "probes.jsonl")
    assert [v for _, v in written["curve"]] == pytest.approx([v for _, v in ours[0]["curve"]], rel=1e-4)
