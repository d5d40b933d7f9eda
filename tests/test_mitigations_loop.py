"""The mitigations inside the real training loop (components/mitigations.py), on the tiny configs of
tests/fakes.py: every method at its no-op setting is bit-identical to the baseline run, resume with
the methods on is exact, replay's stream and schedule settings take effect, bad tables are config
errors. The rules of each method (and that a reset zeroes exactly the affected optimizer moments)
are tested on their own in tests/test_mitigations.py."""

import json

import pytest
import torch

from plasticlm.checkpoint import latest_checkpoint, load_component_states, weights_hash
from plasticlm.cli import main
from plasticlm.components import Component
from plasticlm.config import load_config
from plasticlm.errors import ConfigError, PlasticError
from plasticlm.mitigations import REGISTRY
from plasticlm.runlog import read_json, read_jsonl
from plasticlm.train import Trainer, resume, train
from tests.fakes import fake_data, tiny_config
from tests.test_mitigations import ACTIVE, NAMES

LOOP_ACTIVE = {**ACTIVE, "redo": {"every": 4, "tau": 0.6}, "replay": {"fraction": 0.25}}
"""Settings that act within the tiny run's 30 steps (redo on its held-out batch, as by default;
replay of one sequence in 4)."""
TIMING = ("train/tokens_per_s",)
SHORT = ("model.preset=3K", "stream.cycles=1")
"""One cycle of the 3 tiny tasks on the smallest preset: enough for the no-op comparisons."""


def table(methods: dict[str, dict]) -> list[str]:
    """--set arguments that enable ``methods`` with their settings."""
    out = []
    for name, settings in methods.items():
        out += [f"mitigations.{name}.{k}={json.dumps(v)}" for k, v in settings.items()] or [f"mitigations.{name}={{}}"]
    return out


def metrics(run_dir) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_jsonl(run_dir / "metrics.jsonl")]


def final_weights(run_dir, cfg, data) -> str:
    t = Trainer(cfg, run_dir, data, quiet=True)
    t.restore(latest_checkpoint(run_dir))
    return weights_hash(t.model)


class Crash(Component):
    name = "crash"

    def on_step_end(self, loop, loss):
        if loop.step == 13:  # inside task 2, after the checkpoint of task 1
            raise KeyboardInterrupt("simulated kill")


@pytest.fixture(scope="module")
def data():
    return fake_data()


@pytest.fixture(scope="module")
def baseline(data, tmp_path_factory):
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("baseline") / "run"
    train(tiny_config(*SHORT), run, data=data, quiet=True)
    return run


@pytest.mark.parametrize("name", NAMES)
def test_every_method_at_its_noop_setting_is_bit_identical_to_the_baseline(name, data, baseline, tmp_path):
    settings = {**LOOP_ACTIVE[name], **REGISTRY[name][0].NOOP}
    cfg = tiny_config(*SHORT, *table({name: settings}))
    train(cfg, tmp_path / "run", data=data, quiet=True)
    assert final_weights(tmp_path / "run", cfg, data) == final_weights(baseline, tiny_config(*SHORT), data)
    assert metrics(tmp_path / "run") == metrics(baseline)
    info = read_json(tmp_path / "run" / "run.json")["mitigations"]
    assert list(info) == [name] and info[name]["config"] == {**info[name]["config"], **settings}


def test_an_active_method_changes_training_and_reports_its_work(data, baseline, tmp_path):
    cfg = tiny_config(*SHORT, *table({"cbp": LOOP_ACTIVE["cbp"]}))
    train(cfg, tmp_path / "run", data=data, quiet=True)
    assert final_weights(tmp_path / "run", cfg, data) != final_weights(baseline, tiny_config(*SHORT), data)
    rows = read_jsonl(tmp_path / "run" / "mitigations.jsonl")
    assert [r["task_index"] for r in rows] == list(range(3)) and rows[-1]["cbp"] > rows[0]["cbp"] > 0
    assert read_json(tmp_path / "run" / "run.json")["mitigations"]["cbp"]["extra_flops_per_step"] > 0


def _interrupted_and_resumed(cfg, data, tmp_path):
    train(cfg, tmp_path / "a", data=data, quiet=True)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "b", data=data, components=[Crash()], quiet=True)
    assert latest_checkpoint(tmp_path / "b").name == "task-000001"
    resume(tmp_path / "b", data=data, quiet=True)
    assert final_weights(tmp_path / "b", cfg, data) == final_weights(tmp_path / "a", cfg, data)
    assert metrics(tmp_path / "b") == metrics(tmp_path / "a")
    assert read_jsonl(tmp_path / "b" / "mitigations.jsonl") == read_jsonl(tmp_path / "a" / "mitigations.jsonl")
    return latest_checkpoint(tmp_path / "b")


def test_resume_with_every_method_on_is_exact(data, tmp_path):
    cfg = tiny_config(*table(LOOP_ACTIVE))
    ckpt = _interrupted_and_resumed(cfg, data, tmp_path)
    # the states travel in components.pt (tensors), meta.json stays JSON
    assert "components" not in read_json(ckpt / "meta.json")
    states = load_component_states(ckpt)["mitigations"]["methods"]
    assert list(states) == list(REGISTRY)
    assert isinstance(states["l2_init"]["theta0"]["wte.weight"], torch.Tensor)
    assert isinstance(states["cbp"]["generator"], torch.Tensor)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_resume_with_each_method_alone_is_exact(name, data, tmp_path):
    _interrupted_and_resumed(tiny_config(*table({name: LOOP_ACTIVE[name]})), data, tmp_path)


def test_replay_sets_the_stream_and_schedule_of_the_run_but_not_of_the_probe(data, tmp_path):
    cfg = tiny_config(*SHORT, *table({"replay": {"fraction": 0.25}}))
    t = Trainer(cfg, tmp_path / "run", data, quiet=True)
    assert t.stream.cfg.replay_fraction == 0.25
    assert t.schedule.cfg.schedule == "cosine" and t.schedule.restart
    assert t.cfg.stream.replay_fraction == 0.0 and t.cfg.optim.schedule == "constant"  # the probe's recipe
    lrs = [t.schedule(s) for s in range(t.stream.steps_per_task)]
    assert lrs[-1] < max(lrs)  # re-decays within each task
    # and it acts: the replayed sequences change training (a no-op replay does not: see above)
    t.fit()
    base = Trainer(tiny_config(*SHORT), tmp_path / "base", data, quiet=True)
    base.fit()
    assert weights_hash(t.model) != weights_hash(base.model)


@pytest.mark.parametrize("overrides, message", [
    (["mitigations.cpb.replacement_rate=0.1"], "unknown mitigation 'cpb' (did you mean 'cbp'?)"),
    (["mitigations.cbp.replacement_rat=0.1"], "unknown key 'mitigations.cbp.replacement_rat'"),
    (["mitigations.cbp.decay=1.5"], "mitigations.cbp.decay = 1.5: must be in"),
    (["mitigations.replay.fraction=0.25", "stream.replay_fraction=0.1"], "remove one of the two"),
    (["mitigations.replay.fraction=0.25", "stream.kind=stationary"], "replays earlier languages"),
    (["mitigations.cbp={}", "train.components=[task_reset, evaluate]"], "does not list 'mitigations'"),
    (["mitigations.cbp={}", "sweep.methods=[baseline, redo]"], "without a [mitigations.<method>] table"),
    (["mitigations.cbp={}", "mitigations.redo={}", "sweep.methods=[baseline, cbp]"], "not in sweep.methods"),
])
def test_bad_mitigation_tables_are_config_errors(overrides, message):
    with pytest.raises(ConfigError) as e:
        tiny_config(*overrides)
    assert message in str(e.value)


def test_config_validate_names_a_bad_mitigation_key(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text("[mitigations.cbp]\nreplacement_rate = 1e-5\nmaturty = 10\n")
    assert main(["config", "validate", str(path), "--json"]) == 2
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert problems == [p for p in problems if "mitigations.cbp.maturty" in p] and problems


def test_training_a_comparison_config_itself_is_refused(data, tmp_path):
    cfg = tiny_config("mitigations.cbp={}", "sweep.methods=[baseline, cbp]")
    with pytest.raises(PlasticError, match="plasticlm compare"):
        Trainer(cfg, tmp_path / "run", data, quiet=True)


def test_a_checkpoint_of_other_mitigations_is_refused_on_restore(data, tmp_path):
    cfg = tiny_config(*SHORT, *table({"cbp": LOOP_ACTIVE["cbp"]}))
    train(cfg, tmp_path / "run", data=data, quiet=True)
    t = Trainer(tiny_config(*SHORT, "mitigations.redo={}"), tmp_path / "run", data, quiet=True)
    with pytest.raises(PlasticError, match="resume with the .mitigations. tables"):
        t.restore(latest_checkpoint(tmp_path / "run"))
    assert load_config(tmp_path / "run" / "config.toml").mitigations == {"cbp": LOOP_ACTIVE["cbp"]}
