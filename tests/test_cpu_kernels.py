"""plasticlm's CPU kernels (plasticlm.cpu_kernels): attention (model.fused_attention) the same function as
SDPA, GeLU (model.fused_gelu) the same as nn.GELU."""

from __future__ import annotations

import ctypes
import dataclasses

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from plasticlm import cpu_kernels
from plasticlm.model import GPT, from_preset

needs_kernel = pytest.mark.skipif(cpu_kernels.library() is None,
                                  reason="no CPU attention kernel here (needs x86-64 with AVX2 and a C++ compiler)")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max())


@needs_kernel
@pytest.mark.parametrize("shape", [(2, 128, 3, 16), (3, 37, 2, 32), (2, 70, 3, 64), (1, 1, 1, 16), (2, 9, 1, 16)])
def test_outputs_and_gradients_equal_sdpa_in_float64(shape):
    """Padding of T to a multiple of 8, every built head dim, a single token: within float32 rounding of
    the exact (float64) function."""
    B, T, H, K = shape
    torch.manual_seed(0)
    qkv, grad = torch.randn(B, T, 3, H, K, dtype=torch.float64), torch.randn(B, T, H, K, dtype=torch.float64)
    exact_in = qkv.clone().requires_grad_()
    exact = cpu_kernels.sdpa_causal_attention(exact_in)
    exact.backward(grad)
    ours_in = qkv.float().requires_grad_()
    ours = cpu_kernels.causal_attention(ours_in)
    ours.backward(grad.float())
    assert ours.shape == (B, T, H, K)
    assert rel(ours, exact) < 1e-5
    assert rel(ours_in.grad, exact_in.grad) < 1e-5


@needs_kernel
def test_large_scores_stay_finite_and_exact():
    """The softmax subtracts each row's maximum: scores of +-60 (exp would overflow float32 unshifted)."""
    torch.manual_seed(1)
    qkv = (torch.randn(2, 24, 3, 2, 16) * 8).requires_grad_()
    out = cpu_kernels.causal_attention(qkv)
    assert torch.isfinite(out).all()
    assert rel(out, cpu_kernels.sdpa_causal_attention(qkv.double())) < 1e-5


@needs_kernel
def test_splitting_the_batch_over_threads_changes_no_bit():
    torch.manual_seed(2)
    qkv, grad = torch.randn(5, 40, 3, 2, 16), torch.randn(5, 40, 2, 16)
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            x = qkv.clone().requires_grad_()
            out = cpu_kernels.causal_attention(x)
            out.backward(grad)
            results.append((out.detach(), x.grad))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


@needs_kernel
def test_double_backward_equals_sdpa():
    """create_graph (the Hessian diagnostics): the gradient of a gradient."""
    torch.manual_seed(3)
    qkv, grad, v = torch.randn(2, 16, 3, 2, 16), torch.randn(2, 16, 2, 16), torch.randn(2, 16, 3, 2, 16)
    def hvp(fn):
        x = qkv.clone().requires_grad_()
        (g,) = torch.autograd.grad(fn(x), x, grad, create_graph=True)
        return torch.autograd.grad((g * v).sum(), x)[0]

    ours = hvp(cpu_kernels.causal_attention)  # no context needed: its backward takes SDPA's math path
    with sdpa_kernel(SDPBackend.MATH):  # SDPA's CPU flash kernel has no double backward
        exact = hvp(cpu_kernels.sdpa_causal_attention)
    assert rel(ours, exact) < 1e-4


def _models(preset: str = "85K"):
    out = []
    for fused in (True, False):
        torch.manual_seed(0)
        out.append(GPT(from_preset(preset, fused_attention=fused, fused_gelu=fused)))
    return out


@needs_kernel
def test_the_model_uses_the_kernel_and_trains_as_with_sdpa(monkeypatch):
    """Loss and every parameter's gradient equal to float rounding, and after 20 AdamW steps the losses
    still agree to 1e-4 relative: the kernel changes no result beyond float tolerance."""
    calls = []
    attention, gelu = cpu_kernels.causal_attention, cpu_kernels.gelu
    monkeypatch.setattr(cpu_kernels, "causal_attention", lambda qkv: calls.append("attention") or attention(qkv))
    monkeypatch.setattr(cpu_kernels, "gelu", lambda x: calls.append("gelu") or gelu(x))
    fused, sdpa = _models()
    x = torch.randint(0, 1024, (4, 65), generator=torch.Generator().manual_seed(0))
    losses = []
    for m in (fused, sdpa):
        loss = m(x[:, :-1], x[:, 1:])
        loss.backward()
        losses.append(loss)
    assert sorted(calls) == ["attention"] * fused.config.n_layer + ["gelu"] * fused.config.n_layer
    assert rel(losses[0], losses[1]) < 2e-6
    grads = {n: p.grad for n, p in sdpa.named_parameters()}
    assert max(rel(p.grad, grads[n]) for n, p in fused.named_parameters()) < 1e-4
    for m in (fused, sdpa):
        opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
        for i in range(20):
            xb = x.roll(i, dims=1)
            opt.zero_grad()
            m(xb[:, :-1], xb[:, 1:]).backward()
            opt.step()
    with torch.no_grad():
        final = [m(x[:, :-1], x[:, 1:]) for m in (fused, sdpa)]
    assert rel(final[0], final[1]) < 1e-4


def test_without_the_kernel_the_model_takes_sdpa(monkeypatch):
    """No kernel here (no compiler, not x86 AVX2): the same numbers as model.fused_attention = false."""
    monkeypatch.setattr(cpu_kernels, "library", lambda: None)
    fused, sdpa = _models("25K")
    x = torch.randint(0, 1024, (2, 33), generator=torch.Generator().manual_seed(0))
    assert torch.equal(fused(x), sdpa(x))


@needs_kernel
@pytest.mark.parametrize("n", [1, 7, 8, 4099, 200_003])
def test_gelu_equals_the_exact_one_in_float64(n):
    """Values from -10 to 10 and beyond, lengths with a tail after the last 8-lane vector, and one split
    over threads (the longest): within float32 rounding of the float64 GeLU, as nn.GELU is."""
    torch.manual_seed(4)
    x = torch.cat([torch.randn(n) * 4, torch.tensor([0.0, -0.0, -12.0, 12.0, -1e4, 1e4])])
    grad = torch.randn_like(x)
    exact_in = x.double().requires_grad_()
    exact = torch.nn.functional.gelu(exact_in)
    exact.backward(grad.double())
    ours_in = x.clone().requires_grad_()
    ours = cpu_kernels.gelu(ours_in)
    ours.backward(grad)
    torch_err = float((torch.nn.functional.gelu(x).double() - exact.detach()).abs().max())
    assert float((ours.detach().double() - exact.detach()).abs().max()) < max(4 * torch_err, 1e-6)
    assert rel(ours_in.grad, exact_in.grad) < 1e-6


@needs_kernel
def test_gelu_keeps_shape_and_non_contiguous_input_and_double_backward():
    torch.manual_seed(5)
    x = torch.randn(6, 10).t()  # not contiguous
    assert torch.allclose(cpu_kernels.gelu(x), torch.nn.functional.gelu(x), atol=1e-6)
    v = torch.randn(10, 6)

    def hvp(fn):
        a = x.clone().requires_grad_()
        (g,) = torch.autograd.grad(fn(a).sum(), a, create_graph=True)
        return torch.autograd.grad((g * v).sum(), a)[0]

    assert rel(hvp(cpu_kernels.gelu), hvp(torch.nn.functional.gelu)) < 1e-5


def test_the_mlp_activation_stays_a_gelu_module_for_hooks():
    """Diagnostics hook blocks.{i}.mlp.act: it stays an nn.GELU, the tanh one never takes the kernel."""
    exact, tanh = (GPT(from_preset("3K", gelu=g)).blocks[0].mlp.act for g in ("exact", "tanh"))
    assert isinstance(exact, torch.nn.GELU) and exact.fused and not tanh.fused


def test_where_the_kernel_does_not_apply():
    cases = [torch.zeros(1, 4, 3, 1, 8), torch.zeros(1, 4, 3, 1, 16, dtype=torch.float64),
             torch.zeros(1, 4, 3, 1, 16, dtype=torch.bfloat16)]
    assert not any(cpu_kernels.applies(qkv) for qkv in cases)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not cpu_kernels.applies(torch.zeros(1, 4, 3, 1, 16))


def test_a_failed_build_warns_with_the_reason_and_falls_back(monkeypatch, tmp_path):
    import torch.utils.cpp_extension as cpp_extension

    monkeypatch.setattr(cpu_kernels, "_cpu_has_avx2", lambda: True)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))  # nothing built there

    attempts = []

    def fail(*args, **kwargs):
        attempts.append(1)
        raise RuntimeError("Error building extension\ncpu_kernels.cpp:1: error: no compiler here\nninja: stopped")

    monkeypatch.setattr(cpp_extension, "load", fail)
    for _ in range(2):  # the second process (call) reads the reason instead of trying again
        with pytest.warns(RuntimeWarning, match="could not be built .*error: no compiler here.*delete .*"
                                                "build-failed.txt.*fused_gelu = false"):
            assert cpu_kernels.library.__wrapped__() is None
    assert attempts == [1]


def test_the_config_switch_reaches_the_model():
    from plasticlm.config import load_config
    from plasticlm.model import build_gpt_config

    cfg = load_config(None, ["model.fused_attention=false", "model.fused_gelu=false"])
    gpt = build_gpt_config(cfg.model, 1024)
    assert gpt.fused_attention is False and gpt.fused_gelu is False
    assert dataclasses.replace(gpt, fused_attention=True) != gpt
    assert all(not b.attn.fused and not b.mlp.act.fused for b in GPT(gpt).blocks)


@needs_kernel
def test_a_built_kernel_loads_without_building(monkeypatch):
    import torch.utils.cpp_extension as cpp_extension

    assert cpu_kernels.library_path().exists()  # built by needs_kernel's library() call
    monkeypatch.setattr(cpp_extension, "load", lambda *a, **k: pytest.fail("built again"))
    assert cpu_kernels.library.__wrapped__() is not None


@needs_kernel
@pytest.mark.timeout(300)
def test_a_build_killed_midway_does_not_block_the_next(monkeypatch, tmp_path):
    """torch's build lock is a file; a process SIGKILLed while holding it leaves it behind, and
    torch.utils.cpp_extension would then wait on it forever. The next build removes it (it holds
    plasticlm's flock, which died with the killed process) and finishes."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    path = cpu_kernels.library_path()
    assert path.is_relative_to(tmp_path) and not path.exists()
    (path.parent / "build").mkdir(parents=True)
    (path.parent / "build" / "lock").write_text("")  # what a killed build leaves
    cpu_kernels.build(path)
    assert path.exists() and not (path.parent / "build" / "lock").exists()
    assert path.stat().st_mode & 0o777 == 0o755  # loadable by others, as a linker writes it
    lib = ctypes.CDLL(str(path))
    assert lib.plasticlm_attention_forward is not None


def test_an_unloadable_library_warns_and_is_not_taken_for_a_failed_build(monkeypatch, tmp_path):
    monkeypatch.setattr(cpu_kernels, "_cpu_has_avx2", lambda: True)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    path = cpu_kernels.library_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a shared library")
    with pytest.warns(RuntimeWarning, match="could not be built .*OSError"):
        assert cpu_kernels.library.__wrapped__() is None
    assert not (path.parent / cpu_kernels.FAILED_NAME).exists()
