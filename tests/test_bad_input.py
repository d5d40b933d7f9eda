"""Bad input (issue 18, item 2): every case exits 2 with a message naming the problem and the fix,
no traceback, and no run or study directory written. Config problems are refused alike by
`config validate`, `train`, `plan`, `study` and `sweep`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import plasticlm
from plasticlm.cli import main

# (id, TOML text, --set overrides, words the message must contain)
CONFIG_CASES = [
    ("unknown-preset", "", ["model.preset=99K"], ["model.preset = '99K'", "unknown preset", "known presets"]),
    ("unknown-preset-near", "", ["model.preset=25k"], ["did you mean '25K'"]),
    ("unknown-sweep-preset", "", ["sweep.presets=[3K, 4K]"], ["sweep.presets[1] = '4K'", "known presets"]),
    ("language-the-source-lacks", "", ["stream.languages=[en, xx]", "probe.after_languages=[]"],
     ["'xx'", "debian-docs", "--source"]),
    ("probe-language-the-source-lacks", "", ["probe.language=qq"], ["'qq'", "debian-docs"]),
    ("probe-language-is-trained", "", ["probe.language=en"], ["probe.language = 'en'", "held out"]),
    ("negative-lr", "", ["optim.lr=-1e-3"], ["optim.lr", ">= 0"]),
    ("nan-lr", "[optim]\nlr = nan\n", [], ["optim.lr = nan", "finite"]),
    ("inf-lr", "", ["optim.lr=inf"], ["optim.lr = inf", "finite"]),
    ("zero-batch", "", ["train.batch_size=0"], ["train.batch_size = 0", "> 0"]),
    ("negative-batch", "", ["eval.batch_size=-4"], ["eval.batch_size = -4", "> 0"]),
    ("zero-probe-steps", "", ["probe.steps=0"], ["probe.steps = 0", "> 0"]),
    ("zero-cycles", "", ["stream.cycles=0"], ["stream.cycles = 0", "> 0"]),
    ("negative-tokens-per-task", "", ["stream.tokens_per_task=-5"], ["stream.tokens_per_task = -5"]),
    ("zero-seq-len", "", ["model.seq_len=0"], ["model.seq_len = 0", "> 0"]),
    ("zero-log-every", "", ["train.log_every=0"], ["train.log_every = 0"]),
    ("zero-parallel", "", ["sweep.parallel=0"], ["sweep.parallel = 0"]),
    ("bpe-vocab-too-small", "", ["data.vocab_size=100"], ["data.vocab_size = 100", ">= 257"]),
    ("model-vocab-below-tokenizer", "", ["model.vocab_size=50"], ["model.vocab_size = 50", "model.vocab_size = 0"]),
    ("local-without-dir", "", ["data.source=local"], ["data.local_dir"]),
    ("local-dir-missing", "", ["data.source=local", "data.local_dir=/nonexistent/corpus"],
     ["/nonexistent/corpus", "no such directory"]),
    ("hf-without-dataset", "", ["data.source=hf"], ["data.hf_dataset"]),
    ("malformed-toml", "[model\npreset = '25K'\n", [], ["not valid TOML", "line 1"]),
    ("misspelled-section", "[optimm]\nlr = 1e-3\n", [], ["unknown key 'optimm'", "did you mean 'optim'"]),
    ("misspelled-key", "[stream]\ntoken_per_task = 5\n", [], ["stream.token_per_task", "stream.tokens_per_task"]),
    ("wrong-type", "[stream]\ncycles = 'two'\n", [], ["stream.cycles = 'two'", "must be int"]),
    ("toml-date", "[model]\npreset = 1979-05-27\n", [], ["model.preset", "must be str"]),
    ("bad-set-syntax", "", ["model.preset"], ["KEY=VALUE"]),
    ("set-into-a-value", "", ["model.preset.x=1"], ["model.preset"]),
]


def _command(cmd: str, cfg: Path, tmp: Path) -> list[str]:
    return {
        "validate": ["config", "validate", str(cfg)],
        "train": ["train", str(cfg), "--run-dir", str(tmp / "run"), "--quiet"],
        "plan": ["plan", str(cfg)],
        "study": ["study", str(cfg), "--quiet"],
        "sweep": ["sweep", str(cfg), "--quiet"],
    }[cmd]


@pytest.mark.parametrize("cmd", ["validate", "train", "plan", "study", "sweep"])
@pytest.mark.parametrize(("text", "overrides", "words"), [c[1:] for c in CONFIG_CASES],
                         ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_exits_2_naming_it_and_writes_nothing(cmd, text, overrides, words, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "study.toml"
    cfg.write_bytes(text.encode())
    argv = _command(cmd, cfg, tmp_path)
    for o in overrides:
        argv += ["--set", o]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    for w in words:
        assert w in err, (w, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.toml"]  # no run, study or cache written


def test_a_config_that_is_not_utf8_or_a_file(tmp_path, capsys):
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"\xff\xfe[model]\n")
    assert main(["config", "validate", str(bad)]) == 2
    assert "not UTF-8 text" in capsys.readouterr().err
    assert main(["config", "validate", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_validate_json_lists_every_problem(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[optim]\nlr = nan\n[train]\nlog_every = 0\n")
    assert main(["config", "validate", str(cfg), "--json"]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["valid"] is False and len(doc["problems"]) == 2


def test_every_case_also_fails_cleanly_as_a_process(tmp_path):
    """The console entry point: exit 2, one message, no traceback (three cases end to end)."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("[model\n")
    for argv in (["train", str(cfg), "--run-dir", str(tmp_path / "run")],
                 ["plan", "/dev/null/x.toml"],
                 ["onset", "--scores", str(cfg)]):
        p = subprocess.run([sys.executable, "-m", "plasticlm", *argv], capture_output=True, text=True, cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": str(Path(plasticlm.__file__).parents[1])})
        assert p.returncode == 2 and p.stderr.startswith("error: ") and "Traceback" not in p.stderr, p.stderr
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------- CSV for onset and fit

SCORES = "task_index,score\n" + "".join(f"{i},{v}\n" for i, v in [(1, 0), (2, -1), (3, -2), (4, -1), (5, 1)])
ONSETS = "name,params,onset\na,1e5,10\nb,1e6,20\nc,1e7,40\n"

CSV_CASES = [
    # (id, command, file bytes, words)
    ("onset-empty", "onset", b"", ["empty file", "task_index"]),
    ("onset-header-only", "onset", b"task_index,score\n", ["no data rows"]),
    ("onset-missing-column", "onset", b"task,score\n1,2\n", ["missing column", "task_index"]),
    ("onset-non-numeric", "onset", b"task_index,score\n1,abc\n", ["line 2", "'abc' is not a number"]),
    ("onset-empty-cell", "onset", b"task_index,score\n1,\n", ["line 2", "is empty"]),
    ("onset-infinite", "onset", b"task_index,score\n1,inf\n", ["not a finite number"]),
    ("onset-duplicated", "onset", SCORES.encode() + b"3,5\n", ["duplicate task_index 3", "lines 4 and 7"]),
    ("onset-too-short", "onset", b"task_index,score\n1,0\n2,-1\n3,-2\n4,0\n", ["4 probe point(s)", "at least 5"]),
    ("onset-nul-byte", "onset", b"task_index,score\n1,\x002\n", ["line 2", "is not a number"]),
    ("onset-unclosed-quote", "onset", b'task_index,score\n1,"2\n3,4\n5,6\n', ["column 'score'", "is not a number"]),
    ("onset-not-utf8", "onset", b"task_index,score\n1,\xff\n", ["not UTF-8"]),
    ("fit-empty", "fit", b"", ["empty file", "params"]),
    ("fit-non-numeric", "fit", b"params,onset\n1e5,ten\n", ["'ten' is not a number"]),
    ("fit-duplicated-run", "fit", ONSETS.encode() + b"b,1e6,20\n", ["lines 3 and 5", "name = b"]),
    ("fit-too-short", "fit", b"params,onset\n1e5,10\n1e6,20\n", ["2 point(s)", "at least 3"]),
    ("fit-no-onsets", "fit", b"params,onset\n1e5,\n1e6,\n1e7,\n", ["at least 3"]),
    ("fit-negative-params", "fit", b"params,onset\n-1e5,10\n1e6,20\n1e7,30\n", ["params", "> 0"]),
    ("fit-not-utf8", "fit", b"params,onset\n\xfe,1\n", ["not UTF-8"]),
]


@pytest.mark.parametrize(("cmd", "content", "words"), [c[1:] for c in CSV_CASES], ids=[c[0] for c in CSV_CASES])
def test_bad_csv_exits_2_naming_file_and_fix(cmd, content, words, tmp_path, capsys):
    path = tmp_path / "in.csv"
    path.write_bytes(content)
    argv = ["onset", "--scores", str(path)] if cmd == "onset" else ["fit", "--onsets", str(path), "--bootstrap", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "Traceback" not in err
    for w in words:
        assert w in err, (w, err)


def test_good_csv_still_works(tmp_path, capsys):
    (tmp_path / "s.csv").write_text(SCORES)
    assert main(["onset", "--scores", str(tmp_path / "s.csv"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["onset_task_index"] == 3
    (tmp_path / "o.csv").write_text(ONSETS + "d,1e6,22\n")  # another seed of size 1e6 is not a duplicate
    assert main(["fit", "--onsets", str(tmp_path / "o.csv"), "--bootstrap", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 4


# ---------------------------------------------------------------------------- probes.jsonl for onset RUN_DIR


def _row(k, auc=5.0):
    return {"checkpoint": f"task-{k - 1:06d}", "task_index": k, "tokens_seen": 100 * k, "auc": auc,
            "per_sequence": f"probes/task-{k - 1:06d}.npz"}


def _run_with_probes(tmp_path, lines: list[str]) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text("[data]\nsource = 'synthetic'\n")
    (run / "probes.jsonl").write_text("".join(line + "\n" for line in lines))
    return run


GOOD = [json.dumps(_row(k, a)) for k, a in zip(range(1, 7), [5.0, 4.0, 3.0, 4.0, 5.0, 6.0])]
JSONL_CASES = [
    ("malformed-line", GOOD[:2] + ["{not json"] + GOOD[2:], ["line 3 is not a JSON object"]),
    ("not-an-object", GOOD[:2] + ["[1, 2]"] + GOOD[2:], ["line 3 is not a JSON object"]),
    ("non-numeric-auc", GOOD[:2] + [json.dumps(_row(9, "high"))] + GOOD[2:], ["row 3", "auc"]),
    ("missing-task-index", [json.dumps({"auc": 1.0, "tokens_seen": 1})] + GOOD, ["row 1", "task_index"]),
    ("duplicated-probe", GOOD + [GOOD[2]], ["rows 3 and 7", "task_index 3"]),
    ("too-short", GOOD[:3], ["3 probe point(s)", "at least 5"]),
    ("empty", [], ["no probes yet", "plasticlm probe"]),
]


@pytest.mark.parametrize(("lines", "words"), [c[1:] for c in JSONL_CASES], ids=[c[0] for c in JSONL_CASES])
def test_bad_probes_jsonl_exits_2(lines, words, tmp_path, capsys):
    run = _run_with_probes(tmp_path, lines)
    assert main(["onset", str(run), "--bootstrap", "0"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for w in words:
        assert w in err, (w, err)


def test_a_torn_last_probe_row_is_ignored_not_an_error(tmp_path, capsys):
    run = _run_with_probes(tmp_path, GOOD)
    with open(run / "probes.jsonl", "a") as f:
        f.write('{"checkpoint": "task-0000')  # a kill in the middle of an append: no newline
    assert main(["onset", str(run), "--bootstrap", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_points"] == 6


# ---------------------------------------------------------------------------- directories


def _dirs(tmp_path) -> dict[str, Path]:
    (tmp_path / "empty").mkdir()
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "study" / "runs" / "3K-s0-continual").mkdir(parents=True)
    return {"missing": tmp_path / "missing", "file": tmp_path / "a-file", "empty": tmp_path / "empty",
            "study": tmp_path / "study"}


@pytest.mark.parametrize("cmd", ["probe", "onset", "resume", "report"])
@pytest.mark.parametrize("kind", ["missing", "file", "empty", "study"])
def test_a_directory_that_is_not_a_run_or_study(cmd, kind, tmp_path, capsys):
    path = _dirs(tmp_path)[kind]
    if cmd == "report" and kind == "study":
        pytest.skip("a study directory is what report reads")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main([cmd, str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "Traceback" not in err
    assert any(w in err for w in ("not a run directory", "no such directory", "not a directory", "no run found")), err
    if kind == "study":
        assert "study directory" in err  # says what it is and what to give instead
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


@pytest.mark.parametrize("argv", [
    ["study", "configs/demo.toml", "--parallel", "0", "--dry-run"],
    ["sweep", "configs/demo.toml", "--parallel", "-1"],
    ["probe", "runs/x", "--workers", "0"],
    ["onset", "--scores", "x.csv", "--bootstrap", "-5"],
    ["onset", "--scores", "x.csv", "--window", "4"],
    ["plan", "configs/demo.toml", "--mfu", "0"],
    ["plan", "configs/demo.toml", "--peak-tflops", "-1"],
])
def test_bad_numeric_arguments_exit_2(argv, capsys):
    root = Path(__file__).resolve().parents[1]
    argv = [str(root / a) if a.startswith("configs/") else a for a in argv]
    with pytest.raises(SystemExit) as e:  # argparse's own refusal, or ours through main
        raise SystemExit(main(argv))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "error" in err and "Traceback" not in err
