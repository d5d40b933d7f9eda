import math

import pytest
import torch

from plasticlm.checkpoint import latest_checkpoint, list_checkpoints, weights_hash
from plasticlm.components import Component
from plasticlm.errors import PlasticError
from plasticlm.runlog import read_json, read_jsonl
from plasticlm.train import NonFiniteLoss, Trainer, resume, train
from tests.fakes import fake_data, tiny_config


class Recorder(Component):
    name = "recorder"

    def __init__(self):
        self.state_sizes, self.first_lrs, self.lrs = [], [], []

    def on_task_start(self, loop, task):
        self.state_sizes.append(len(loop.optimizer.state))
        self._first = True

    def on_step_end(self, loop, loss):
        self.lrs.append(loop.lr)
        if self._first:
            self.first_lrs.append(loop.lr)
            self._first = False


class Crash(Component):
    name = "crash"

    def __init__(self, at_step):
        self.at_step = at_step

    def on_step_end(self, loop, loss):
        if loop.step == self.at_step:
            raise KeyboardInterrupt("simulated kill")


def _rows(run_dir):
    return [{k: v for k, v in r.items() if k != "train/tokens_per_s"} for r in read_jsonl(run_dir / "metrics.jsonl")]


def test_each_task_writes_bpb_for_training_and_probe_languages(tmp_path):
    cfg = tiny_config()
    summary = train(cfg, tmp_path / "run", data=fake_data(), quiet=True)
    assert summary["steps"] == 30 and summary["tokens"] == 30 * 64
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    val_rows = [r for r in rows if "val/aa/bpb" in r]
    assert [r["task_index"] for r in val_rows] == [-1, 0, 1, 2, 3, 4, 5]
    for r in val_rows:
        for lang in ["aa", "bb", "cc", "vi"]:
            assert math.isfinite(r[f"val/{lang}/bpb"]) and r[f"val/{lang}/bpb"] > 0
            assert r[f"val/{lang}/bpb"] == pytest.approx(r[f"val/{lang}/loss"] / math.log(2) / 2.0)
    train_rows = [r for r in rows if "train/loss" in r]
    keys = {"train/lr", "train/tokens_per_s", "train/grad_norm", "tokens"}
    assert train_rows and all(keys <= set(r) for r in train_rows)
    info = read_json(tmp_path / "run" / "run.json")
    assert info["status"] == "done" and info["packages"]["torch"]
    assert (tmp_path / "run" / "config.toml").exists()
    # training makes progress on the languages it saw
    assert val_rows[-1]["val/cc/loss"] < val_rows[0]["val/cc/loss"]


def test_optimizer_reset_and_warmup_restart_at_each_task_start(tmp_path):
    cfg = tiny_config("optim.warmup_frac=0.4", "optim.lr=1e-3")
    rec = Recorder()
    train(cfg, tmp_path / "run", data=fake_data(), components=[rec], quiet=True)
    assert rec.state_sizes == [0] * 6  # no Adam state at any task start
    warmup = math.ceil(0.4 * 5)
    assert rec.first_lrs == pytest.approx([1e-3 / warmup] * 6)
    assert rec.lrs[:5] == pytest.approx([5e-4, 1e-3, 1e-3, 1e-3, 1e-3])


def test_stationary_run_resets_and_rewarms_every_task_worth_of_tokens(tmp_path):
    # the default: the stationary control differs from the continual run only in the data order
    rec = Recorder()
    train(tiny_config("stream.kind=stationary", "optim.warmup_frac=0.4", "optim.lr=1e-3"), tmp_path / "r",
          data=fake_data(), components=[rec], quiet=True)
    assert rec.state_sizes == [0] * 6
    assert rec.lrs[:5] == pytest.approx([5e-4, 1e-3, 1e-3, 1e-3, 1e-3]) and rec.lrs[5:7] == pytest.approx([5e-4, 1e-3])


def test_stationary_run_without_resets_warms_up_once(tmp_path):
    rec = Recorder()
    train(tiny_config("stream.kind=stationary", "optim.warmup_frac=0.4", "optim.lr=1e-3",
                      "optim.reset_at_task_start=false", "optim.rewarm_at_task_start=false"), tmp_path / "r",
          data=fake_data(), components=[rec], quiet=True)
    assert rec.lrs[:2] == pytest.approx([5e-4, 1e-3]) and rec.lrs[2:] == pytest.approx([1e-3] * 28)
    assert rec.state_sizes[0] == 0 and all(n > 0 for n in rec.state_sizes[1:])


def test_no_reset_when_disabled(tmp_path):
    rec = Recorder()
    train(tiny_config("optim.reset_at_task_start=false"), tmp_path / "r", data=fake_data(), components=[rec],
          quiet=True)
    assert rec.state_sizes[0] == 0 and all(n > 0 for n in rec.state_sizes[1:])


def test_reused_data_is_an_error_unless_allowed(tmp_path, capsys):
    data = fake_data(n_train=500)  # 2 cycles x 320 tokens = 640 per language from 500
    with pytest.raises(PlasticError, match=r"more than once: aa 1.28x .*stream.allow_reuse = true"):
        train(tiny_config("probe.steps=2"), tmp_path / "a", data=data, quiet=True)
    assert not (tmp_path / "a").exists()
    Trainer(tiny_config("probe.steps=2", "stream.allow_reuse=true"), tmp_path / "b", data)
    assert "aa 1.28x, bb 1.28x, cc 1.28x" in capsys.readouterr().err


def test_interrupted_and_resumed_run_is_bit_identical(tmp_path):
    cfg = tiny_config("train.checkpoint_every_tasks=1")
    data = fake_data()
    train(cfg, tmp_path / "a", data=data, quiet=True)
    ref = Trainer(cfg, tmp_path / "a", data, quiet=True)
    ref.restore(latest_checkpoint(tmp_path / "a"))

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "b", data=data, components=[Crash(at_step=13)], quiet=True)  # mid task 2
    assert read_json(tmp_path / "b" / "run.json")["status"] == "interrupted"
    assert latest_checkpoint(tmp_path / "b").name == "task-000001"
    resume(tmp_path / "b", data=data, quiet=True)
    got = Trainer(cfg, tmp_path / "b", data, quiet=True)
    got.restore(latest_checkpoint(tmp_path / "b"))
    assert weights_hash(got.model) == weights_hash(ref.model)
    assert _rows(tmp_path / "b") == _rows(tmp_path / "a")  # no duplicated or missing rows


def test_keep_last_prunes_old_checkpoints(tmp_path):
    train(tiny_config("train.keep_last=2"), tmp_path / "run", data=fake_data(), quiet=True)
    names = [p.name for p in list_checkpoints(tmp_path / "run")]
    assert names == ["task-000004", "task-000005"]


def test_non_finite_loss_stops_keeps_last_good_checkpoint(tmp_path):
    class Poison(Component):
        name = "poison"

        def on_after_backward(self, loop):
            if loop.step == 8:  # inside task 1
                next(loop.model.parameters()).grad.fill_(float("nan"))

    with pytest.raises(NonFiniteLoss, match="step 8"):
        train(tiny_config(), tmp_path / "run", data=fake_data(), components=[Poison()], quiet=True)
    info = read_json(tmp_path / "run" / "run.json")
    assert info["status"] == "failed" and "non-finite" in info["error"]
    ckpt = latest_checkpoint(tmp_path / "run")
    assert ckpt.name == "task-000000"
    m = Trainer(tiny_config(), tmp_path / "run", fake_data(), quiet=True)
    m.restore(ckpt)
    assert all(torch.isfinite(p).all() for p in m.model.parameters())


def test_existing_run_dir_is_not_overwritten(tmp_path):
    train(tiny_config(), tmp_path / "run", data=fake_data(), quiet=True)
    with pytest.raises(ValueError, match="plasticlm resume"):
        train(tiny_config(), tmp_path / "run", data=fake_data(), quiet=True)


class GradCapture(Component):
    name = "grads"

    def __init__(self):
        self.grads = []

    def on_after_backward(self, loop):
        self.grads.append(torch.cat([p.grad.flatten() for p in loop.model.parameters()]).clone())


def test_gradient_accumulation_matches_full_batch(tmp_path):
    data = fake_data()
    ga, gb = GradCapture(), GradCapture()
    a = Trainer(tiny_config(), tmp_path / "a", data, components=[ga], quiet=True)
    b = Trainer(tiny_config("train.micro_batch_size=2"), tmp_path / "b", data, components=[gb], quiet=True)
    for _ in range(3):
        la, lb = a.train_step(), b.train_step()
        assert la == pytest.approx(lb, rel=1e-5)
    # identical gradients up to float summation order (Adam's sign-like first update amplifies noise,
    # so weights are compared through their gradients, not after the steps)
    assert torch.allclose(ga.grads[0], gb.grads[0], rtol=1e-4, atol=1e-7)


def test_permuted_evaluation_uses_the_permutation_of_the_task_just_trained(tmp_path, monkeypatch):
    from plasticlm.components.core import Evaluator

    t = Trainer(tiny_config("stream.kind=permuted", "stream.permuted_base=aa"), tmp_path / "r", fake_data(),
                quiet=True)
    seen = []
    real = t.stream.permutation
    monkeypatch.setattr(t.stream, "permutation", lambda k: seen.append(k) or real(k))
    ev, view = next((c, v) for c, v in t.components.items if isinstance(c, Evaluator))
    ev.evaluate(view)
    t.task = t.stream.task(2)
    t.stream.step = 3 * t.stream.steps_per_task  # at the end of task 2 the stream already points at task 3
    ev.evaluate(view)
    assert seen == [0, 2]


def test_world_size_without_torchrun_is_a_clear_error(tmp_path, monkeypatch):
    """Several processes are started by torchrun (tests/test_dist.py); a stray WORLD_SIZE is named."""
    for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="start the processes with torchrun"):
        Trainer(tiny_config(), tmp_path / "r", fake_data(), quiet=True)


def test_a_config_that_cannot_run_leaves_no_run_directory(tmp_path, monkeypatch):
    for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError):
        train(tiny_config(), tmp_path / "run", data=fake_data(), quiet=True)
    assert not (tmp_path / "run" / "config.toml").exists()


def test_overwrite_refuses_a_directory_that_is_not_a_run(tmp_path):
    (tmp_path / "config.toml").write_text("# someone's project\n")
    with pytest.raises(ValueError, match="will not delete it"):
        train(tiny_config(), tmp_path, data=fake_data(), quiet=True, overwrite=True)
    assert (tmp_path / "config.toml").exists()


def test_resume_refuses_changed_data(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(), tmp_path / "run", data=fake_data(), components=[Crash(at_step=13)], quiet=True)
    with pytest.raises(ValueError, match="other data"):
        resume(tmp_path / "run", data=fake_data(n_train=15_000), quiet=True)
    resume(tmp_path / "run", data=fake_data(), quiet=True)  # the same data resumes
    assert read_json(tmp_path / "run" / "run.json")["status"] == "done"


def test_weight_decay_on_embeddings_is_a_visible_switch():
    from plasticlm.model import GPT, build_gpt_config
    from plasticlm.optim import param_groups

    model = GPT(build_gpt_config(tiny_config().model, 64))
    for on in (True, False):
        decayed = {id(p) for p in param_groups(model, 0.1, decay_embeddings=on)[0]["params"]}
        assert (id(model.wte.weight) in decayed, id(model.wpe.weight) in decayed) == (on, on)
        assert id(model.blocks[0].mlp.fc.weight) in decayed and id(model.blocks[0].mlp.fc.bias) not in decayed
