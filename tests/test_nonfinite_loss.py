"""A NaN or Inf in the training loss itself (issue 18, item 1; tests/test_train.py poisons a gradient):
`plasticlm train` stops with exit status 3 before the weights take the step, and the last good
checkpoint stays, intact and finite. The poison is test-only: the model's loss is wrapped here."""

from __future__ import annotations

import math

import pytest
import torch

import plasticlm.train
from plasticlm.checkpoint import latest_checkpoint, list_checkpoints, verify_checkpoint
from plasticlm.cli import main
from plasticlm.config import dumps_toml
from plasticlm.model import GPT
from plasticlm.runlog import read_json, read_jsonl
from tests.fakes import WITH_PROBES, fake_data, tiny_config, use_fake_data

pytestmark = pytest.mark.faults

PROBE = ("probe.steps=4", "probe.eval_every=2", "probe.sequences=4", WITH_PROBES)
"""A short probe (the scratch baseline runs one at the start)."""
POISON_AT = 8
"""The training step whose loss is poisoned (the 8th; the loop counts steps from 1 in its message and
run.json): inside task 1 (5 steps per task), after checkpoint task-000000."""

CASES = [("nan", "value-and-gradient"), ("inf", "value-and-gradient"), ("nan", "value-only"),
         ("-inf", "value-only")]
"""value-and-gradient: the loss tensor is multiplied by the poison (its gradient turns non-finite too);
value-only: the loss's value is the poison while its gradient stays finite, so that only the check on
the loss itself can stop the step."""


def _poison_the_loss(monkeypatch, value: float, how: str) -> None:
    """Poison the training loss of the run's own model at step POISON_AT (its probes and the scratch
    baseline's model, which also train, are other instances and left alone)."""
    real_forward, real_init = GPT.forward, plasticlm.train.Trainer.__init__
    seen = {"model": None, "steps": 0}

    def init(self, *a, **k):
        real_init(self, *a, **k)
        seen["model"] = self.model

    def forward(self, idx, targets=None):
        out = real_forward(self, idx, targets)
        if self is not seen["model"] or targets is None or not torch.is_grad_enabled():
            return out  # evaluation, probes, the scratch baseline
        seen["steps"] += 1
        if seen["steps"] != POISON_AT:  # one forward per step (no micro-batches)
            return out
        if how == "value-and-gradient":
            return out * value
        return out - out.detach() + value  # value = poison, d/dweights = that of the real loss

    monkeypatch.setattr(plasticlm.train.Trainer, "__init__", init)
    monkeypatch.setattr(GPT, "forward", forward)


@pytest.mark.parametrize(("value", "how"), CASES, ids=[f"{v}-{h}" for v, h in CASES])
def test_a_non_finite_loss_exits_3_and_keeps_the_last_good_checkpoint(value, how, tmp_path, home, monkeypatch,
                                                                      capsys):
    cfg_path = tmp_path / "run.toml"
    cfg_path.write_text(dumps_toml(tiny_config(*PROBE)))
    use_fake_data(monkeypatch, fake_data())
    _poison_the_loss(monkeypatch, float(value), how)
    run = tmp_path / "run"

    assert main(["train", str(cfg_path), "--run-dir", str(run), "--quiet"]) == 3
    err = capsys.readouterr().err
    assert f"non-finite loss ({float(value)})" in err and f"at step {POISON_AT}" in err and "Traceback" not in err
    info = read_json(run / "run.json")
    assert info["status"] == "failed" and info["step"] == POISON_AT and "non-finite" in info["error"]

    # the last good checkpoint (after task 0) stays: intact, `latest`, finite weights and optimizer state
    assert [c.name for c in list_checkpoints(run)] == ["task-000000"]
    ckpt = latest_checkpoint(run)
    assert ckpt.name == "task-000000" and verify_checkpoint(ckpt) == []
    monkeypatch.undo()
    t = plasticlm.train.Trainer(tiny_config(*PROBE), run, fake_data(), quiet=True)
    t.restore(ckpt, truncate_logs=False)
    assert all(torch.isfinite(p).all() for p in t.model.parameters())
    assert all(torch.isfinite(v).all() for s in t.optimizer.state.values() for v in s.values() if v.dim())
    # no non-finite number was logged, and no row after the poisoned step
    rows = read_jsonl(run / "metrics.jsonl")
    assert rows and max(r["step"] for r in rows) < POISON_AT
    assert all(math.isfinite(v) for r in rows for v in r.values() if isinstance(v, float))
