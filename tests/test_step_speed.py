"""The faster step (README "Step speed"): the loss kernel, the optimizer implementations, the per-device
defaults of train.dtype / train.compile, and `plasticlm bench`'s MFU. No test needs a GPU."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from plasticlm import model as model_module
from plasticlm.cli import main
from plasticlm.config import OptimConfig, load_config
from plasticlm.errors import ConfigError
from plasticlm.model import GPT, UNDERFLOW_P, from_preset, linear_cross_entropy
from plasticlm.optim import build_optimizer
from plasticlm.step import autocast_context, compile_for_training, resolve_compile, resolve_dtype

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 16 rows (the minimum) at a 64-token vocabulary: several chunks and a ragged last one."""
    monkeypatch.setattr(model_module, "LOSS_CHUNK_ELEMENTS", 16 * 64)


def _reference(h, w, targets):
    h, w = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    loss = F.cross_entropy(h @ w.t(), targets)
    loss.backward()
    return loss, h.grad, w.grad


def test_linear_cross_entropy_matches_torch_in_value_and_gradients(small_chunks):
    gen = torch.Generator().manual_seed(0)
    h = (torch.randn(90, 12, generator=gen) * 2).requires_grad_()  # 90 rows: 5 chunks of 16 and one of 10
    w = torch.randn(64, 12, generator=gen).requires_grad_()
    targets = torch.randint(0, 64, (90,), generator=gen)
    ref, ref_h, ref_w = _reference(h, w, targets)
    ours = linear_cross_entropy(h, w, targets)
    ours.backward()
    assert torch.allclose(ours, ref, rtol=1e-6, atol=1e-6)
    assert torch.allclose(h.grad, ref_h, rtol=1e-5, atol=1e-7)
    assert torch.allclose(w.grad, ref_w, rtol=1e-5, atol=1e-7)


def test_linear_cross_entropy_scales_by_the_incoming_gradient_and_computes_no_gradient_without_grad_mode():
    gen = torch.Generator().manual_seed(1)
    h, w = torch.randn(20, 8, generator=gen, requires_grad=True), torch.randn(30, 8, generator=gen, requires_grad=True)
    targets = torch.randint(0, 30, (20,), generator=gen)
    (linear_cross_entropy(h, w, targets) * 0.25).backward()  # a micro-batch's share of the mean
    _, ref_h, ref_w = _reference(h, w, targets)
    assert torch.allclose(h.grad, ref_h * 0.25, rtol=1e-5) and torch.allclose(w.grad, ref_w * 0.25, rtol=1e-5)
    with torch.no_grad():  # evaluation: the loss alone, equal to the training path's
        assert linear_cross_entropy(h, w, targets).item() == pytest.approx(F.cross_entropy(h @ w.t(), targets).item())


def test_linear_cross_entropy_stays_exact_where_the_target_probability_underflows():
    # target probabilities of about e^-300 and e^-20000: -log p would be inf in float32
    logits = torch.tensor([[0.0, 200.0, -100.0], [1e4, -1e4, 0.0], [1.0, 2.0, 3.0]])
    targets = torch.tensor([2, 1, 0])
    assert torch.exp(torch.log_softmax(logits, -1)[0, 2]) < UNDERFLOW_P
    h = torch.eye(3).requires_grad_()  # h W^T = the logits, with W = logits^T
    loss = linear_cross_entropy(h, logits.t().contiguous(), targets)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, targets).item())
    loss.backward()
    assert torch.isfinite(h.grad).all()


def test_linear_cross_entropy_supports_a_second_and_a_double_backward(small_chunks):
    # the saved gradients serve any number of first-order backwards; create_graph (Hessian diagnostics)
    # recomputes with differentiable ops
    gen = torch.Generator().manual_seed(2)
    h = torch.randn(20, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(64, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    targets = torch.randint(0, 64, (20,), generator=gen)
    assert torch.autograd.gradcheck(lambda a, b: linear_cross_entropy(a, b, targets), (h, w))
    assert torch.autograd.gradgradcheck(lambda a, b: linear_cross_entropy(a, b, targets), (h, w))
    loss = linear_cross_entropy(h, w, targets)
    first = torch.autograd.grad(loss, (h, w), retain_graph=True)
    second = torch.autograd.grad(loss, (h, w))
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def _trained(fused_loss: bool, impl: str, steps: int = 3) -> tuple[list[float], dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = GPT(from_preset("3K", vocab_size=64, seq_len=16, fused_loss=fused_loss))
    opt = build_optimizer(model, OptimConfig(impl=impl), 1e-2)
    x = torch.randint(0, 64, (4, 17), generator=torch.Generator().manual_seed(1))
    losses = []
    for _ in range(steps):
        loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("fused_loss,impl", [(True, "fused"), (True, "foreach"), (False, "fused")])
def test_fast_paths_train_to_the_old_path_within_float_tolerance(fused_loss, impl):
    old_losses, old_state = _trained(False, "forloop")
    losses, state = _trained(fused_loss, impl)
    assert losses == pytest.approx(old_losses, rel=1e-5)
    for k in old_state:
        # Adam turns rounding in a near-zero gradient into up to lr per step: 1.5e-5 measured at lr 1e-2
        assert torch.allclose(state[k], old_state[k], rtol=1e-4, atol=1e-4), k


def test_the_default_step_is_deterministic_on_cpu():
    (la, sa), (lb, sb) = _trained(True, "fused"), _trained(True, "fused")
    assert la == lb and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_optim_impl_is_typed():
    assert load_config(None, ["optim.impl=foreach"]).optim.impl == "foreach"
    with pytest.raises(ConfigError, match="optim.impl"):
        load_config(None, ["optim.impl=apex"])


def test_gpu_defaults_resolve_per_device():
    cfg = load_config(None)
    assert (cfg.train.dtype, cfg.train.compile) == ("auto", "auto")
    # auto: bf16 autocast and torch.compile on CUDA; float32 and eager on CPU (as before these keys)
    assert resolve_dtype(CUDA, cfg.train.dtype) == "bfloat16"
    assert resolve_dtype(CPU, cfg.train.dtype) == "float32"
    assert resolve_compile(CUDA, cfg.train.compile) is True
    assert resolve_compile(CPU, cfg.train.compile) is False
    # explicit settings win on either device
    assert resolve_dtype(CUDA, "float32") == "float32" and resolve_dtype(CPU, "bfloat16") == "bfloat16"
    assert resolve_compile(CPU, "on") is True and resolve_compile(CUDA, "off") is False
    assert isinstance(autocast_context(CPU, "auto"), type(autocast_context(CPU, "float32")))
    assert isinstance(autocast_context(CPU, "bfloat16"), torch.autocast)
    model = torch.nn.Linear(2, 2)
    assert compile_for_training(model, CPU, "auto") is model
    with pytest.raises(ConfigError, match="train.compile"):
        load_config(None, ["train.compile=maybe"])


def test_bench_runs_the_training_step_and_reports_mfu_against_a_stated_peak(capsys):
    assert main(["bench", "--presets", "3K", "--batch-size", "2", "--seq-len", "32", "--steps", "2",
                 "--device", "cpu", "--threads", "1", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["preset"] == "3K" and row["dtype"] == "float32" and row["compile"] is False
    assert 0 < row["mfu"] <= 1
    assert row["peak_source"].startswith("measured float32") and row["peak_flops"] > 0
    assert row["tokens_per_s"] > 0 and row["peak_mem_mb"] > 0
    assert main(["bench", "--presets", "3K", "--batch-size", "2", "--seq-len", "32", "--steps", "1",
                 "--device", "cpu", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "MFU against the measured float32" in out and "mfu" in out


def test_bench_with_a_strategy_outside_torchrun_says_to_start_it_with_torchrun(capsys, monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    assert main(["bench", "--presets", "3K", "--strategy", "ddp", "--device", "cpu", "--steps", "1"]) == 2
    assert "torchrun --nproc_per_node=2 -m plasticlm bench --strategy ddp" in capsys.readouterr().err
