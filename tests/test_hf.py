"""Hugging Face interop: export a run as a transformers GPT-2, load it, compare logits, import it back."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file, save_model

from plasticlm.checkpoint import latest_checkpoint, weights_hash, with_checksums
from plasticlm.cli import main
from plasticlm.config import load_config
from plasticlm.data.prepare import prepare_data
from plasticlm.data.tokenizer import ByteTokenizer, load_tokenizer
from plasticlm.errors import PlasticError
from plasticlm.hf import (
    byte_tokenizer_json,
    check_gpt2_compatible,
    gpt2_overrides,
    load_gpt2_into,
    load_run_model,
)
from plasticlm.model import GPT, GPTConfig
from plasticlm.runlog import atomic_write_json, read_json
from plasticlm.train import Trainer, train

transformers = pytest.importorskip("transformers")  # in the dev extra; CI installs it

SEQ = 32


def _config(home, *extra):
    return load_config(None, [
        "data.source=synthetic", "data.synthetic_bytes=30000", "data.vocab_size=300", f"data.home={home}",
        "data.tokenizer_sample_bytes=10000", "model.preset=25K", f"model.seq_len={SEQ}", "stream.languages=[en,fr]",
        "probe.language=vi", "probe.after_languages=[]", "stream.tokens_per_task=384", "stream.cycles=1",
        "train.batch_size=4", "train.keep_last=2", "eval.sequences=4", "eval.batch_size=4", *extra,
    ])


@torch.no_grad()
def _randomize(model: GPT, seed: int) -> None:
    """Weights far from the init (biases and LayerNorms included), so that a wrong mapping, transpose or
    activation shows up in the logits."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name == "lm_head.weight":
            continue
        noise = torch.randn(p.shape, generator=g) * (0.3 if p.ndim == 2 else 0.5)
        layer_norm_weight = (".ln_" in name or name.startswith("ln_f")) and name.endswith("weight")
        p.copy_(1.0 + noise if layer_norm_weight else noise)


@pytest.fixture(scope="module", params=["exact", "tanh"])
def run(request, tmp_path_factory):
    """A real 2-task run (synthetic text, trained BPE) whose last checkpoint then gets random weights."""
    tmp = tmp_path_factory.mktemp(f"hf-{request.param}")
    torch.set_num_threads(1)
    cfg = _config(tmp / "home", f"model.gelu={request.param}")
    run_dir = tmp / "run"
    train(cfg, run_dir, quiet=True)
    path = latest_checkpoint(run_dir)
    model, _, _ = load_run_model(run_dir)
    _randomize(model, seed=1)
    save_model(model, str(path / "model.safetensors"))
    meta = with_checksums({k: v for k, v in read_json(path / "meta.json").items()
                           if k not in ("files", "meta_sha256")}, path)  # the new weights are the checkpoint's
    atomic_write_json(path / "meta.json", meta)
    return run_dir, cfg


def _export(run_dir, to, *extra, capsys=None):
    rc = main(["export", str(run_dir), "--to", str(to), "--json", *extra])
    assert rc == 0
    return json.loads(capsys.readouterr().out)


def _ids(vocab, n=3, seed=0):
    return torch.randint(0, vocab, (n, SEQ), generator=torch.Generator().manual_seed(seed))


def test_export_loads_in_transformers_with_the_same_logits(run, tmp_path, capsys):
    run_dir, cfg = run
    doc = _export(run_dir, tmp_path / "hf", capsys=capsys)
    assert doc["checkpoint"] == "task-000001" and doc["config"]["n_head"] == 2
    assert doc["config"]["activation_function"] == {"exact": "gelu", "tanh": "gelu_pytorch_tanh"}[cfg.model.gelu]
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == sorted(doc["files"])
    model, _, _ = load_run_model(run_dir)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").float().eval()
    assert type(hf).__name__ == "GPT2LMHeadModel"
    ids = _ids(model.config.vocab_size)
    with torch.no_grad():
        ours = model(ids)
        theirs = hf(ids).logits
    assert ours.abs().max() > 1.0  # not a trivially small output
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)
    # the comparison is sharp enough to tell the two GeLU variants apart
    other = "gelu_pytorch_tanh" if cfg.model.gelu == "exact" else "gelu"
    wrong = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", activation_function=other).float()
    with torch.no_grad():
        assert (wrong(ids).logits - ours).abs().max() > 1e-3


def test_export_brings_the_run_tokenizer(run, tmp_path, capsys):
    run_dir, cfg = run
    _export(run_dir, tmp_path / "hf", capsys=capsys)
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    data = prepare_data(cfg, progress=False)
    ours = load_tokenizer(data.tokenizer_path, cfg.data.eot_token)
    text = "Xin chao, the gioi! ceci est une phrase. 12345"
    assert tok(text)["input_ids"] == list(ours.encode(text))
    assert tok.eos_token == cfg.data.eot_token and tok.eos_token_id == data.eot_id
    assert tok.decode(ours.encode(text)) == text


def test_import_round_trip_gives_the_same_weights_and_logits(run, tmp_path, capsys):
    run_dir, cfg = run
    _export(run_dir, tmp_path / "hf", capsys=capsys)
    original, _, _ = load_run_model(run_dir)
    overrides = gpt2_overrides(tmp_path / "hf")
    assert f"model.init_from={tmp_path / 'hf'}" in overrides
    cfg2 = _config(cfg.data.home, *overrides)
    data = prepare_data(cfg2, progress=False)  # the exported tokenizer.json: same ids, same shards
    assert data.vocab_size == original.config.vocab_size
    trainer = Trainer(cfg2, tmp_path / "run2", data, quiet=True)
    assert weights_hash(trainer.model) == weights_hash(original)
    ids = _ids(original.config.vocab_size, seed=3)
    with torch.no_grad():
        assert torch.equal(trainer.model.eval()(ids), original(ids))


def test_import_names_the_settings_a_mismatched_run_needs(run, tmp_path, capsys):
    run_dir, cfg = run
    _export(run_dir, tmp_path / "hf", capsys=capsys)
    model = GPT(GPTConfig(n_layer=1, d_model=16, n_head=1, head_dim=16, vocab_size=300, seq_len=SEQ))
    with pytest.raises(PlasticError, match=r"n_layer 1 vs 2.*--set model.n_layer=2 --set model.d_model=32"):
        load_gpt2_into(model, tmp_path / "hf")


def test_import_reads_hub_style_names_and_a_longer_position_table(run, tmp_path, capsys):
    """Hub GPT-2 files store names without 'transformer.' and 1024 positions; a run may use fewer."""
    run_dir, cfg = run
    _export(run_dir, tmp_path / "hf", capsys=capsys)
    tensors = load_file(str(tmp_path / "hf" / "model.safetensors"))
    hub = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    hub["wpe.weight"] = torch.cat([hub["wpe.weight"], torch.randn(16, hub["wpe.weight"].shape[1])])
    hub["lm_head.weight"] = hub["wte.weight"].clone()
    (tmp_path / "hub").mkdir()
    save_file(hub, str(tmp_path / "hub" / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config["n_positions"] = SEQ + 16
    (tmp_path / "hub" / "config.json").write_text(json.dumps(config))
    original, _, _ = load_run_model(run_dir)
    fresh = GPT(original.config)
    info = load_gpt2_into(fresh, tmp_path / "hub")
    assert info["n_positions"] == SEQ + 16
    assert weights_hash(fresh) == weights_hash(original)
    hub["lm_head.weight"] = hub["lm_head.weight"] + 1.0  # an untied head cannot be reproduced
    save_file(hub, str(tmp_path / "hub" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(PlasticError, match="not tied"):
        load_gpt2_into(fresh, tmp_path / "hub")


def test_export_checkpoint_choice_and_target_rules(run, tmp_path, capsys):
    run_dir, _ = run
    doc = _export(run_dir, tmp_path / "hf", "--checkpoint", "0", capsys=capsys)
    assert doc["checkpoint"] == "task-000000" and doc["task_index"] == 0
    assert main(["export", str(run_dir), "--to", str(tmp_path / "hf")]) == 2  # an export is there
    assert "--overwrite" in capsys.readouterr().err
    assert _export(run_dir, tmp_path / "hf", "--overwrite", capsys=capsys)["checkpoint"] == "task-000001"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert main(["export", str(run_dir), "--to", str(tmp_path / "other"), "--overwrite"]) == 2
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    assert main(["export", str(run_dir), "--to", str(tmp_path / "x"), "--checkpoint", "7"]) == 2
    assert "saved: task-000000, task-000001" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_byte_tokenizer_json_encodes_as_the_bytes_tokenizer():
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(byte_tokenizer_json("<|endoftext|>"))
    text = "Tiếng Việt, 中文, русский  and  spaces\n\ttabs"
    assert tok.encode(text).ids == ByteTokenizer().encode(text).tolist()
    assert tok.token_to_id("<|endoftext|>") == ByteTokenizer.eot_id
    assert tok.decode(tok.encode(text).ids) == text


def test_models_gpt2_cannot_express_are_refused():
    with pytest.raises(PlasticError, match="n_head x head_dim"):
        check_gpt2_compatible(GPTConfig(n_layer=1, d_model=32, n_head=1, head_dim=16))
