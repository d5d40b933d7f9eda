"""The component contract (components/): built from the config through one registry, every hook in
order, own logs, own state and own random stream, all restored on resume."""

from pathlib import Path

import pytest

from plasticlm.checkpoint import latest_checkpoint, load_component_states, meta_digest, weights_hash
from plasticlm.cli import main
from plasticlm.components import HOOKS, Component, registered
from plasticlm.config import load_config
from plasticlm.errors import ConfigError
from plasticlm.runlog import atomic_write_json, read_json, read_jsonl
from plasticlm.train import Trainer, resume, train
from tests.fakes import fake_data, tiny_config

TOY = Path(__file__).parent / "configs" / "toy.toml"
STEP_HOOKS = ["on_step_start", "on_after_backward", "pre_optim_step", "on_step_end"]


class Crash(Component):
    name = "crash"

    def on_step_end(self, loop, loss):
        if loop.step == 13:  # inside task 2, after the checkpoint of task 1
            raise KeyboardInterrupt("simulated kill")


def _toy(trainer_or_components):
    return next(c for c in trainer_or_components if c.name == "toy")


def test_a_component_named_in_a_config_file_sees_every_hook_in_order(tmp_path):
    cfg = tiny_config(path=TOY)
    assert cfg.train.components[-1] == "tests.toy_component:toy" and cfg.components["toy"]["draws_per_task"] == 3
    t = Trainer(cfg, tmp_path / "run", fake_data(), quiet=True)
    toy = _toy(t.components)
    assert [c.name for c in t.components] == ["task_reset", "train_metrics", "evaluate", "progress", "toy"]
    assert toy.options.draws_per_task == 3 and toy.options.label == "from-config"  # [components.toy]
    t.fit()
    hooks = [h for h, _ in toy.events]
    assert set(hooks) == set(HOOKS)  # every hook fired
    # the loop's order: fit start (with the step-0 evaluation), per task: start, steps, end, cycle end,
    # checkpoint; fit end
    core = [h for h in hooks if h not in ("on_log", "on_evaluate")]
    per_task = ["on_task_start", *STEP_HOOKS * 5, "on_task_end"]
    expected = ["on_fit_start"]
    for k in range(6):
        expected += per_task + (["on_cycle_end"] if k % 3 == 2 else []) + ["on_checkpoint"]
    assert core == expected + ["on_fit_end"]
    # on_evaluate follows the on_log of its row, at fit start and at every task end
    evals = [i for i, h in enumerate(hooks) if h == "on_evaluate"]
    assert len(evals) == 7 and all(hooks[i - 1] == "on_log" for i in evals)
    assert hooks.index("on_evaluate") < hooks.index("on_task_start")
    rows = read_jsonl(tmp_path / "run" / "toy.jsonl")
    assert [r["task"] for r in rows] == list(range(6)) and rows[-1]["steps_seen"] == 30
    assert all(r["label"] == "from-config" and len(r["draws"]) == 3 for r in rows)
    assert len({tuple(r["draws"]) for r in rows}) == 6  # a fresh draw per task


def _whole_and_killed(tmp_path, data, cfg) -> None:
    """Run "a" uninterrupted and run "b" killed inside task 2 (its latest checkpoint: task 1)."""
    train(cfg, tmp_path / "a", data=data, quiet=True)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "b", data=data, components=[Crash()], quiet=True)
    assert latest_checkpoint(tmp_path / "b").name == "task-000001"


def test_component_state_logs_and_random_stream_are_restored_on_resume(tmp_path):
    data = fake_data()
    cfg = tiny_config(path=TOY)
    _whole_and_killed(tmp_path, data, cfg)
    # the kill left toy.jsonl with a row the checkpoint does not know (task 2 had started, no row yet),
    # and rows for tasks 0-1; add a stray row to show the resume rolls the log back to the checkpoint
    (tmp_path / "b" / "toy.jsonl").open("a").write('{"stray": true}\n')
    meta = read_json(latest_checkpoint(tmp_path / "b") / "meta.json")
    states = load_component_states(latest_checkpoint(tmp_path / "b"))  # components.pt (torch.save)
    assert meta["logs"]["toy"] == 2 and states["toy"] == {"steps_seen": 10, "batch_sum": states["toy"]["batch_sum"]}
    assert "components" not in meta
    assert meta["component_random"]["toy"] == 2  # two tasks started: two generators drawn
    resume(tmp_path / "b", data=data, quiet=True)
    assert read_jsonl(tmp_path / "b" / "toy.jsonl") == read_jsonl(tmp_path / "a" / "toy.jsonl")
    a, b = (Trainer(cfg, tmp_path / d, data, quiet=True) for d in "ab")
    for t, d in ((a, "a"), (b, "b")):
        t.restore(latest_checkpoint(tmp_path / d))
    assert weights_hash(a.model) == weights_hash(b.model)
    assert _toy(a.components).state_dict() == _toy(b.components).state_dict()


def test_a_checkpoint_with_the_states_in_meta_json_still_resumes_exactly(tmp_path):
    """Checkpoints written before components.pt kept the components' states in meta.json."""
    data = fake_data()
    _whole_and_killed(tmp_path, data, tiny_config(path=TOY))
    ckpt = latest_checkpoint(tmp_path / "b")
    meta = read_json(ckpt / "meta.json")
    old = {k: v for k, v in meta.items() if k not in ("files", "meta_sha256")}
    old["components"] = load_component_states(ckpt)
    (ckpt / "components.pt").unlink()
    files = {k: v for k, v in meta["files"].items() if k != "components.pt"}
    doc = {**old, "files": files}  # checksums as an old checkpoint recorded them: without components.pt
    doc["meta_sha256"] = meta_digest(doc)
    atomic_write_json(ckpt / "meta.json", doc)
    assert load_component_states(ckpt)["toy"]["steps_seen"] == 10
    resume(tmp_path / "b", data=data, quiet=True)
    assert read_jsonl(tmp_path / "b" / "toy.jsonl") == read_jsonl(tmp_path / "a" / "toy.jsonl")


def test_a_component_drawing_randomness_does_not_move_the_training_trajectory(tmp_path):
    data = fake_data()
    train(tiny_config(path=TOY), tmp_path / "toy", data=data, quiet=True)
    train(tiny_config(), tmp_path / "plain", data=data, quiet=True)
    ha = Trainer(tiny_config(), tmp_path / "plain", data, quiet=True)
    ha.restore(latest_checkpoint(tmp_path / "plain"))
    hb = Trainer(tiny_config(path=TOY), tmp_path / "toy", data, quiet=True)
    hb.restore(latest_checkpoint(tmp_path / "toy"))
    assert weights_hash(ha.model) == weights_hash(hb.model)


@pytest.mark.parametrize("overrides, message", [
    (["train.components=[task_reset, nosuch]"], "'nosuch' is not a registered component"),
    (["train.components=[task_reset, nosuch_module_xyz:toy]"], "cannot import 'nosuch_module_xyz'"),
    (["components.toy.draws_per_tsk=2"], "unknown key 'components.toy.draws_per_tsk'"),
    (["components.toy.draws_per_task=many"], "components.toy.draws_per_task"),
    (["components.evaluate.x=1"], "takes no options"),
    (["train.components=[task_reset, progress]", "components.toy.label=x"], "does not list"),
    (["train.components=[progress, progress]"], "listed more than once"),
])
def test_bad_component_configs_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config(TOY, overrides)


def test_components_command_lists_the_registry(capsys):
    import json

    assert main(["components", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = [r["name"] for r in rows]
    assert names[:8] == ["task_reset", "mitigations", "train_metrics", "evaluate", "probe", "progress", "tensorboard",
                         "wandb"]
    assert set(names) == set(registered())
