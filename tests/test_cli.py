import json
import subprocess
import sys

from plasticlm.cli import build_parser, main


def test_help_lists_subcommands(capsys):
    text = build_parser().format_help()
    for cmd in ["presets", "config"]:
        assert cmd in text


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "plasticlm.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "presets" in out.stdout


HEAVY_IMPORTS = ("torch", "matplotlib", "scipy.stats", "huggingface_hub", "transformers", "datasets")
"""What building the parser must not load: with them `plasticlm --help` took 3-10 s, and every command
paid for all of them; each command now imports the library code it calls (tests/test_architecture.py)."""


def test_parsing_any_command_imports_no_heavy_library():
    code = ("import sys; from plasticlm.cli import build_parser; build_parser().parse_args(sys.argv[1:]); "
            f"print([m for m in {HEAVY_IMPORTS!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code, "train", "configs/demo.toml", "--set", "model.preset=3K"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_presets_json(capsys):
    assert main(["presets", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by = {r["name"]: r for r in rows}
    assert by["314M"]["non_embedding_params"] == 314_859_520
    for r in rows:
        assert {"name", "n_layer", "d_model", "n_head", "non_embedding_params", "total_params",
                "flops_per_token"} <= set(r)


def test_config_validate_misspelled_key_exits_2_and_names_it(tmp_path, capsys):
    p = tmp_path / "bad.toml"
    p.write_text("[stream]\ntoken_per_task = 100\n")
    assert main(["config", "validate", str(p)]) == 2
    err = capsys.readouterr().err
    assert "stream.token_per_task" in err and "stream.tokens_per_task" in err


def test_config_validate_json_and_show(tmp_path, capsys):
    p = tmp_path / "ok.toml"
    p.write_text("[model]\npreset = '85K'\n")
    assert main(["config", "validate", str(p), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["valid"] is True
    assert main(["config", "show", str(p), "--json", "--set", "stream.cycles=3"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["model"]["preset"] == "85K" and shown["stream"]["cycles"] == 3


def test_missing_config_file_exits_2(capsys):
    assert main(["config", "show", "/nonexistent.toml"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_reader_that_leaves_early_is_not_a_traceback():
    """`plasticlm ... --json | head`: the closed pipe ends the command quietly with 141 (128 + SIGPIPE)."""
    proc = subprocess.Popen([sys.executable, "-m", "plasticlm", "presets", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the command has written anything (its imports take far longer)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_config_validate_in_a_fresh_process_runs_the_component_checks(tmp_path):
    """The registries add their checks when imported; a command that trains nothing must still run them."""
    bad = tmp_path / "bad.toml"
    bad.write_text('[train]\ncomponents = ["no_such_component"]\n')
    out = subprocess.run([sys.executable, "-m", "plasticlm", "config", "validate", str(bad)], capture_output=True,
                         text=True)
    assert out.returncode == 2 and "'no_such_component' is not a registered component" in out.stderr
