"""`plasticlm corpus build|info` on the synthetic source (the debian-docs build is a slow test)."""

import json

from plasticlm.cli import build_parser, main

SYN = ["--source", "synthetic", "--set", "data.synthetic_bytes=20000"]


def test_help_lists_corpus():
    assert "corpus" in build_parser().format_help()


def test_build_then_info_json_and_reproducible(home, capsys):
    assert main(["corpus", "info", *SYN, "--json"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert [r["built"] for r in before["languages"]] == [False] * 9

    assert main(["corpus", "build", *SYN, "--json"]) == 0
    out = capsys.readouterr()
    built = json.loads(out.out)
    langs = [r["lang"] for r in built["languages"]]
    assert langs == ["en", "zh", "fr", "ja", "es", "de", "pt", "ru", "vi"]  # stream.languages + probe.language
    for r in built["languages"]:
        assert {"lang", "source", "documents", "bytes", "sha256"} <= set(r) and r["bytes"] >= 20_000
    assert built["source"] == "synthetic" and built["seconds"] >= 0

    assert main(["corpus", "build", *SYN, "--force", "--quiet", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert [r["sha256"] for r in again["languages"]] == [r["sha256"] for r in built["languages"]]

    assert main(["corpus", "info", *SYN, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [r["sha256"] for r in info["languages"]] == [r["sha256"] for r in built["languages"]]


def test_build_tokens_table(home, capsys):
    args = ["corpus", "build", *SYN, "--langs", "en,vi", "--tokens", "--quiet",
            "--set", "data.vocab_size=300", "--set", "model.seq_len=16"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "bytes_per_token" in out and " vi " in out
    assert main([*args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["lang"] for r in doc["languages"]] == ["en", "vi"]
    assert doc["languages"][0]["train_tokens"] > 0 and doc["tokenizer"]["vocab_size"] == 300


def test_config_file_and_errors_exit_2(home, tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nsource = "local"\nlocal_dir = "%s"\n' % (tmp_path / "nothing"))
    assert main(["corpus", "build", str(cfg), "--langs", "en"]) == 2
    assert "data.local_dir = " in capsys.readouterr().err  # refused when the config loads (validate.py)
    (tmp_path / "nothing").mkdir()
    assert main(["corpus", "build", str(cfg), "--langs", "en"]) == 2
    assert "language 'en': no directory" in capsys.readouterr().err
    assert main(["corpus", "build", "--set", "data.sourc=local"]) == 2
    assert "data.source" in capsys.readouterr().err
