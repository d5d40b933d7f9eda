"""The diagnostics agree with direct computations on constructed inputs (issue 15, acceptance 1)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from plasticlm import diagnostics as dg
from plasticlm.errors import PlasticError
from plasticlm.model import GPT, block_params, from_preset

RANKS = [dg.effective_rank, dg.srank, dg.approximate_rank, dg.stable_rank]


# ------------------------------------------------------------------ ranks


def numpy_ranks(h: np.ndarray, delta=0.01, threshold=0.99) -> dict[str, float]:
    """The spec's formulas written directly on numpy's singular values."""
    s = np.linalg.svd(h.astype(np.float64), compute_uv=False)
    p = s / s.sum()
    nz = p[p > 0]
    cum1, cum2 = np.cumsum(s) / s.sum(), np.cumsum(s**2) / np.sum(s**2)
    return {
        "effective_rank": float(np.exp(-np.sum(nz * np.log(nz)))),
        "srank": int(np.argmax(cum1 >= 1 - delta - 1e-12)) + 1,
        "approximate_rank": int(np.argmax(cum2 >= threshold - 1e-12)) + 1,
        "stable_rank": float(np.sum(s**2) / s[0] ** 2),
    }


@pytest.mark.parametrize("n", [1, 7, 64, 100])
def test_identity_ranks(n):
    h = torch.eye(n)
    assert dg.effective_rank(h).value == pytest.approx(n, rel=1e-12)
    assert dg.stable_rank(h).value == pytest.approx(n, rel=1e-12)
    # k equal singular values reach k/n: the first k with k/n >= 0.99
    assert dg.srank(h).value == math.ceil(0.99 * n - 1e-9)
    assert dg.approximate_rank(h).value == math.ceil(0.99 * n - 1e-9)
    assert dg.srank(h, delta=0.5).value == math.ceil(0.5 * n - 1e-9)


def test_identity_100_counts_99_of_100_as_reaching_099():
    # 99 equal values out of 100 reach 0.99 exactly; float rounding must not push srank to 100
    assert dg.srank(torch.eye(100)).value == 99
    assert dg.approximate_rank(torch.eye(100)).value == 99


def test_rank_one_matrix_has_rank_one_everywhere():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(50, 1, generator=g, dtype=torch.float64) @ torch.randn(1, 20, generator=g, dtype=torch.float64)
    for fn in RANKS:
        r = fn(h)
        assert r.value == pytest.approx(1.0, abs=1e-9), fn.__name__
        assert (r.n, r.d, r.truncated) == (50, 20, False)


def test_known_spectrum():
    # singular values 4, 2, 1, 1 (diagonal matrix padded with zero rows)
    h = torch.zeros(6, 4)
    h[0, 0], h[1, 1], h[2, 2], h[3, 3] = 4.0, 2.0, 1.0, 1.0
    p = np.array([4, 2, 1, 1]) / 8
    assert dg.effective_rank(h).value == pytest.approx(math.exp(-np.sum(p * np.log(p))))
    assert dg.stable_rank(h).value == pytest.approx((16 + 4 + 1 + 1) / 16)
    assert dg.srank(h, delta=0.25).value == 2  # 6/8 = 0.75 >= 0.75
    assert dg.srank(h, delta=0.2).value == 3  # 7/8 >= 0.8
    assert dg.approximate_rank(h, threshold=0.9).value == 2  # 20/22 = 0.909
    assert dg.approximate_rank(h, threshold=0.95).value == 3  # 21/22 = 0.955


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), d=st.integers(1, 40), seed=st.integers(0, 2**31 - 1),
       decay=st.floats(0.0, 3.0, allow_subnormal=False))
def test_random_matrices_match_numpy(n, d, seed, decay):
    # random matrices with a decaying column scale, so the ranks are not all min(n, d)
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((n, d)) * np.exp(-decay * np.arange(d))
    want = numpy_ranks(h)
    t = torch.from_numpy(h).float()
    want_f32 = numpy_ranks(t.double().numpy())
    assert dg.effective_rank(t).value == pytest.approx(want["effective_rank"], rel=1e-5)
    assert dg.stable_rank(t).value == pytest.approx(want["stable_rank"], rel=1e-5)
    assert dg.srank(t).value == want_f32["srank"]
    assert dg.approximate_rank(t).value == want_f32["approximate_rank"]
    q = min(n, d)
    for fn in RANKS:
        r = fn(t)
        assert 1.0 - 1e-9 <= r.value <= q + 1e-9
        assert (r.n, r.d, r.truncated) == (n, d, n < d)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(1e-3, 1e3))
def test_ranks_are_scale_invariant(seed, scale):
    h = torch.randn(30, 12, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    for fn in RANKS:
        assert fn(h * scale).value == pytest.approx(fn(h).value, rel=1e-9)


def test_fewer_rows_than_columns_is_flagged_and_capped():
    h = torch.randn(5, 32, generator=torch.Generator().manual_seed(1))
    for fn in RANKS:
        r = fn(h)
        assert r.truncated and (r.n, r.d) == (5, 32)
        assert r.value <= 5 + 1e-9


def test_zero_matrix_ranks_are_zero():
    for fn in RANKS:
        assert fn(torch.zeros(8, 4)).value == 0


@pytest.mark.parametrize("bad", [torch.ones(3), torch.ones(2, 3, 4), torch.ones(0, 3),
                                 torch.tensor([[1.0, float("nan")]])])
def test_rank_bad_input_is_a_plastic_error(bad):
    with pytest.raises(PlasticError):
        dg.effective_rank(bad)


def test_rank_bad_parameters():
    with pytest.raises(PlasticError, match="delta"):
        dg.srank(torch.eye(3), delta=1.0)
    with pytest.raises(PlasticError, match="threshold"):
        dg.approximate_rank(torch.eye(3), threshold=0.0)


# ------------------------------------------------------------------ dormancy and GraMa


def test_dormant_units_with_known_scores():
    # unit i has |h| = c_i on every token (random signs): hbar = c exactly
    c = torch.tensor([1.0, 0.0, 2.0, 0.005, 1.0, 0.0199, 0.04])
    signs = torch.randint(0, 2, (4, 9, len(c)), generator=torch.Generator().manual_seed(0)) * 2 - 1
    acts = signs * c
    s = c / c.mean()  # mean 0.5807: scores 0.0086 (unit 3), 0.0343 (unit 5), 0.069 (unit 6)
    assert torch.equal(dg.dormant_mask(acts), s <= 0.01)
    assert dg.dormant_mask(acts).tolist() == [False, True, False, True, False, False, False]
    assert dg.dormant_fraction(acts) == pytest.approx(2 / 7)
    assert dg.dormant_mask(acts, eps=0.05).tolist() == [False, True, False, True, False, True, False]
    assert dg.dormant_fraction(acts, eps=0.0) == pytest.approx(1 / 7)  # exactly silent units only
    other = torch.zeros(5, 3)  # a silent 3-unit layer: pooled over layers as count / total
    assert dg.pooled_fraction([dg.dormant_mask(acts), dg.dormant_mask(other)]) == pytest.approx(5 / 10)


def test_dormant_is_score_based_so_negative_gelu_outputs_count():
    # GeLU outputs are negative for negative inputs; a unit that is always about -0.17 is not dormant
    x = torch.full((2, 16, 3), -0.75)
    x[..., 1] = 2.0
    x[..., 2] = -8.0  # GeLU(-8) ~ -5e-15: contributes nothing
    acts = F.gelu(x)
    assert dg.dormant_mask(acts).tolist() == [False, False, True]


def test_silent_layer_is_all_dormant():
    assert dg.dormant_fraction(torch.zeros(3, 5, 8)) == 1.0


def test_dormant_bad_input():
    with pytest.raises(PlasticError):
        dg.dormant_mask(torch.zeros(0, 4))
    with pytest.raises(PlasticError, match="eps"):
        dg.dormant_mask(torch.ones(2, 4), eps=-0.1)


def test_mean_abs_per_unit_accumulates_over_batches():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(2, 5, 6, generator=g), torch.randn(2, 5, 6, generator=g)
    both = dg.mean_abs_per_unit(torch.cat([a, b]))
    assert torch.allclose((dg.mean_abs_per_unit(a) + dg.mean_abs_per_unit(b)) / 2, both)


def test_grama_finds_units_without_gradient():
    # units 1 and 4 feed nothing downstream (outgoing weights zero): dL/dz is exactly 0 for them
    torch.manual_seed(0)
    fc, proj = nn.Linear(8, 6), nn.Linear(6, 3)
    with torch.no_grad():
        proj.weight[:, [1, 4]] = 0.0
    z = fc(torch.randn(4, 10, 8))
    z.retain_grad()
    proj(F.gelu(z)).square().mean().backward()
    assert dg.grama_mask(z.grad).tolist() == [False, True, False, False, True, False]
    assert dg.grama_fraction(z.grad) == pytest.approx(2 / 6)
    g = z.grad.abs().reshape(-1, 6).double().mean(0)
    assert torch.equal(dg.grama_mask(z.grad, eps=0.5), g / g.mean() <= 0.5)


# ------------------------------------------------------------------ attention entropy


def uniform_causal(B, H, T):
    mask = torch.tril(torch.ones(T, T))
    return (mask / mask.sum(-1, keepdim=True)).expand(B, H, T, T)


@pytest.mark.parametrize("query_start", [0, 1, 5, 11])
def test_uniform_causal_attention_has_maximum_entropy(query_start):
    ent = dg.attention_entropy(uniform_causal(2, 3, 12), query_start)
    h_max = dg.max_attention_entropy(12, query_start)
    assert ent.shape == (3,)
    assert torch.allclose(ent, torch.full((3,), h_max, dtype=torch.float64), rtol=1e-6)
    assert dg.lazy_collapsed(ent, h_max).lazy.all()


def test_max_attention_entropy_values():
    assert dg.max_attention_entropy(3) == pytest.approx((0 + math.log(2) + math.log(3)) / 3)
    assert dg.max_attention_entropy(2048, 256) == pytest.approx(np.mean(np.log(np.arange(257, 2049))))
    with pytest.raises(PlasticError, match="query_start"):
        dg.max_attention_entropy(10, 10)


def test_attention_to_one_key_has_zero_entropy():
    p = torch.zeros(1, 2, 6, 6)
    p[..., 0] = 1.0  # every query attends to the first token (0 log 0 = 0 elsewhere)
    ent = dg.attention_entropy(p)
    assert torch.equal(ent, torch.zeros(2, dtype=torch.float64))
    assert dg.lazy_collapsed(ent, dg.max_attention_entropy(6)).collapsed.all()


def test_attention_entropy_matches_numpy_on_random_probs():
    g = torch.Generator().manual_seed(2)
    B, H, T = 3, 4, 9
    scores = torch.randn(B, H, T, T, generator=g).masked_fill(~torch.tril(torch.ones(T, T, dtype=torch.bool)),
                                                               float("-inf"))
    p = scores.softmax(-1).double().numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(p), 0.0)
    want = -plogp.sum(-1)[:, :, 4:].mean(axis=(0, 2))
    got = dg.attention_entropy(torch.from_numpy(p), query_start=4)
    assert np.allclose(got.numpy(), want, rtol=1e-12)
    one_head = dg.attention_entropy(torch.from_numpy(p[:, 2]), query_start=4)
    assert one_head.dim() == 0 and one_head.item() == pytest.approx(want[2])


def test_lazy_collapsed_thresholds_are_strict():
    h_max = 3.0
    ent = torch.tensor([0.95, 0.5, 0.05, 0.9, 0.1]) * h_max
    ent[3], ent[4] = 0.9 * h_max, 0.1 * h_max
    cls = dg.lazy_collapsed(ent, h_max)
    assert cls.lazy.tolist() == [True, False, False, False, False]
    assert cls.collapsed.tolist() == [False, False, True, False, False]
    cls = dg.lazy_collapsed(ent, h_max, lazy=0.4, collapsed=0.2)
    assert cls.lazy.tolist() == [True, True, False, True, False]
    assert cls.collapsed.tolist() == [False, False, True, False, True]
    with pytest.raises(PlasticError):
        dg.lazy_collapsed(ent, h_max, lazy=0.1, collapsed=0.9)


def dense_probs(q, k, scale=None):
    T = q.shape[-2]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = (q @ k.transpose(-1, -2)) * scale
    return s.masked_fill(~torch.tril(torch.ones(T, T, dtype=torch.bool)), float("-inf")).softmax(-1)


@pytest.mark.parametrize("chunk", [1, 5, 16, 37, 100])
@pytest.mark.parametrize("query_start", [0, 10, 36])
def test_chunked_qk_entropy_equals_dense(chunk, query_start):
    g = torch.Generator().manual_seed(4)
    q, k = torch.randn(2, 3, 37, 8, generator=g), torch.randn(2, 3, 37, 8, generator=g)
    q[:, 1] *= 20.0  # a sharp (near collapsed) head
    q[:, 2] *= 0.01  # a near-uniform (lazy) head
    want = dg.attention_entropy(dense_probs(q.double(), k.double()), query_start)
    got = dg.attention_entropy_from_qk(q, k, query_start=query_start, chunk=chunk)
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-7)
    exact = dg.attention_entropy_from_qk(q.double(), k.double(), query_start=query_start, chunk=chunk)
    assert torch.allclose(exact, want, rtol=1e-10, atol=1e-12)


def test_qk_entropy_of_equal_keys_is_the_maximum():
    q, k = torch.randn(1, 2, 20, 4), torch.ones(1, 2, 20, 4)
    assert torch.allclose(dg.attention_entropy_from_qk(q, k, query_start=3, chunk=6).float(),
                          torch.full((2,), dg.max_attention_entropy(20, 3)), rtol=1e-5)


def test_split_qkv_matches_the_models_attention():
    # the dense attention built from split_qkv reproduces the model's attention output
    torch.manual_seed(0)
    cfg = from_preset("85K", seq_len=24)
    attn = GPT(cfg).blocks[1].attn
    x = torch.randn(2, 24, cfg.d_model)
    with torch.no_grad():
        q, k, v = dg.split_qkv(attn.qkv(x), cfg.n_head)
        y = (dense_probs(q, k) @ v).transpose(1, 2).reshape(2, 24, cfg.attn_dim)
        assert torch.allclose(attn.proj(y), attn(x), atol=1e-5)
    with pytest.raises(PlasticError, match="multiple"):
        dg.split_qkv(torch.zeros(1, 4, 10), 2)


def test_qk_entropy_bad_input():
    with pytest.raises(PlasticError):
        dg.attention_entropy_from_qk(torch.zeros(1, 2, 4, 3), torch.zeros(1, 2, 5, 3))
    with pytest.raises(PlasticError, match="chunk"):
        dg.attention_entropy_from_qk(torch.zeros(1, 2, 4, 3), torch.zeros(1, 2, 4, 3), chunk=0)
    with pytest.raises(PlasticError, match="query_start"):
        dg.attention_entropy(uniform_causal(1, 1, 4), query_start=4)


# ------------------------------------------------------------------ parameters, features, gradients


@pytest.fixture
def micro():
    torch.manual_seed(0)
    return GPT(from_preset("25K", seq_len=16))


def test_mean_abs_param_matches_manual_count(micro):
    c = micro.config
    tensors = []
    for b in micro.blocks:  # spelled out module by module, not through the model's helper
        for mod in (b.ln_1, b.attn.qkv, b.attn.proj, b.ln_2, b.mlp.fc, b.mlp.proj):
            tensors += [mod.weight, mod.bias]
    assert sum(t.numel() for t in tensors) == block_params(c)
    pooled = torch.cat([t.detach().double().flatten() for t in tensors])
    assert dg.mean_abs_param(micro) == pytest.approx(pooled.abs().mean().item(), rel=1e-12)
    # pooled over elements: not the mean of per-tensor means
    per_tensor = np.mean([t.detach().abs().mean().item() for t in tensors])
    assert abs(dg.mean_abs_param(micro) - per_tensor) > 1e-4


def test_mean_abs_param_excludes_embeddings_and_final_norm(micro):
    before = dg.mean_abs_param(micro)
    with torch.no_grad():
        micro.wte.weight.fill_(100.0)
        micro.wpe.weight.fill_(-100.0)
        micro.ln_f.weight.fill_(50.0)
    assert dg.mean_abs_param(micro) == before
    with torch.no_grad():
        for p in micro.blocks.parameters():
            p.fill_(-0.3)
    assert dg.mean_abs_param(micro) == pytest.approx(0.3, rel=1e-7)  # float32 0.3


def test_param_norms_and_drift(micro):
    init = {n: t.clone() for n, t in micro.state_dict().items()}
    norms = dg.param_norms(micro)
    names = [n for n, _ in micro.named_parameters()]
    assert list(norms.parts) == names and "lm_head.weight" not in norms.parts  # tied: counted once
    assert norms.parts["blocks.1.mlp.fc.weight"] == pytest.approx(micro.blocks[1].mlp.fc.weight.norm().item())
    flat = torch.cat([p.detach().double().flatten() for p in micro.parameters()])
    assert norms.total == pytest.approx(flat.norm().item(), rel=1e-12)

    drift = dg.drift_from_init(micro, init)
    assert drift.total == 0.0
    delta = torch.randn_like(micro.blocks[0].attn.proj.bias)
    with torch.no_grad():
        micro.blocks[0].attn.proj.bias.add_(delta)
    drift = dg.drift_from_init(micro, init)
    assert drift.total == pytest.approx(delta.norm().item(), rel=1e-6)
    assert drift.parts["blocks.0.attn.proj.bias"] == pytest.approx(delta.norm().item(), rel=1e-6)
    assert drift.parts["wte.weight"] == 0.0


def test_drift_names_missing_and_misshaped_tensors(micro):
    init = {n: t.clone() for n, t in micro.state_dict().items()}
    del init["wpe.weight"]
    init["ln_f.bias"] = torch.zeros(3)
    with pytest.raises(PlasticError, match=r"wpe.weight is missing.*ln_f.bias has shape"):
        dg.drift_from_init(micro, init)


def test_feature_norm():
    h = torch.tensor([[[3.0, 4.0], [0.0, 1.0]], [[6.0, 8.0], [0.0, 0.0]]])
    assert dg.feature_norm(h) == pytest.approx((5 + 1 + 10 + 0) / 4)


def test_grad_norm_global_and_per_block(micro):
    with pytest.raises(PlasticError, match="backward"):
        dg.grad_norm(micro)
    idx = torch.randint(0, 1024, (2, 16), generator=torch.Generator().manual_seed(0))
    micro(idx, idx.roll(-1, 1)).backward()
    gn = dg.grad_norm(micro)
    assert set(gn.parts) == {"blocks.0", "blocks.1", "wte", "wpe", "ln_f"}
    flat = torch.cat([p.grad.double().flatten() for p in micro.parameters()])
    assert gn.total == pytest.approx(flat.norm().item(), rel=1e-9)
    block1 = torch.cat([p.grad.double().flatten() for p in micro.blocks[1].parameters()])
    assert gn.parts["blocks.1"] == pytest.approx(block1.norm().item(), rel=1e-9)


def test_qkv_head_norms_follow_the_forward_layout(micro):
    attn = micro.blocks[0].attn
    H, K, d = attn.n_head, attn.head_dim, micro.config.d_model
    with torch.no_grad():  # silence the key rows of head 1 (weight and bias)
        attn.qkv.weight[d + K: d + 2 * K] = 0.0
        attn.qkv.bias[d + K: d + 2 * K] = 0.0
    norms = dg.qkv_head_norms(micro)
    assert set(norms) == {"blocks.0.attn", "blocks.1.attn"}
    assert norms["blocks.0.attn"].shape == (3, H)
    assert norms["blocks.0.attn"][1, 1] == 0.0 and (norms["blocks.0.attn"].flatten()[[0, 1, 2, 4, 5]] > 0).all()
    q, k, v = dg.split_qkv(attn.qkv(torch.randn(1, 5, d)), H)
    assert (k[:, 1] == 0).all() and (k[:, 0] != 0).any()
    w = micro.blocks[1].attn.qkv.weight.detach().double()
    assert norms["blocks.1.attn"][2, 0] == pytest.approx(w[2 * d: 2 * d + K].norm().item(), rel=1e-12)


def test_layernorm_gain_stats(micro):
    stats = dg.layernorm_gain_stats(micro)
    assert set(stats) == {"blocks.0.ln_1", "blocks.0.ln_2", "blocks.1.ln_1", "blocks.1.ln_2", "ln_f"}
    assert stats["ln_f"] == {"mean": 1.0, "std": 0.0, "min": 1.0, "max": 1.0, "bias_mean_abs": 0.0}
    with torch.no_grad():
        micro.blocks[1].ln_2.weight.copy_(torch.linspace(0.0, 2.0, micro.config.d_model))
    s = dg.layernorm_gain_stats(micro)["blocks.1.ln_2"]
    g = np.linspace(0.0, 2.0, micro.config.d_model)
    assert (s["mean"], s["min"], s["max"]) == pytest.approx((1.0, 0.0, 2.0))
    assert s["std"] == pytest.approx(g.std(), rel=1e-6)


# ------------------------------------------------------------------ sharpness


class Quadratic(nn.Module):
    """loss(x) = 0.5 x^T A x: the Hessian is A everywhere."""

    def __init__(self, n):
        super().__init__()
        self.x = nn.Parameter(torch.randn(n, dtype=torch.float64))
        self.unused = nn.Parameter(torch.ones(2, dtype=torch.float64))  # a zero Hessian row
        self.linear = nn.Parameter(torch.ones(1, dtype=torch.float64))  # the loss is linear in it

    def forward(self, A):
        return 0.5 * self.x @ A @ self.x + 3.0 * self.linear.sum()


def sym_with_eigs(eigs, seed=0):
    Q, _ = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=torch.Generator().manual_seed(seed),
                                       dtype=torch.float64))
    return Q @ torch.diag(torch.tensor(eigs, dtype=torch.float64)) @ Q.T


def test_hessian_top_eigenvalue_of_a_quadratic():
    model = Quadratic(5)
    A = sym_with_eigs([5.0, 2.0, 1.0, -0.5, 0.1])
    model.x.grad = torch.full((5,), 7.0, dtype=torch.float64)
    x0 = model.x.detach().clone()
    r = dg.hessian_top_eigenvalue(model, (A,), iters=50, tol=1e-6)
    assert r.value == pytest.approx(5.0, rel=1e-5) and r.converged and r.iters < 50
    assert torch.equal(model.x, x0) and torch.equal(model.x.grad, torch.full((5,), 7.0, dtype=torch.float64))
    again = dg.hessian_top_eigenvalue(model, (A,), iters=50, tol=1e-6)
    assert again == r  # deterministic given the seed
    flat = dg.hessian_top_eigenvalue(model, (torch.zeros(5, 5, dtype=torch.float64),))
    assert (flat.value, flat.converged) == (0.0, True)


def test_hessian_largest_magnitude_keeps_its_sign():
    r = dg.hessian_top_eigenvalue(Quadratic(3), (sym_with_eigs([1.0, -3.0, 0.5], seed=1),), iters=100, tol=1e-8)
    assert r.value == pytest.approx(-3.0, rel=1e-5)


def test_hessian_of_least_squares_matches_numpy():
    # mean squared error of a linear layer: the Hessian is (2/N) [X 1]^T [X 1]
    g = torch.Generator().manual_seed(5)
    X, y = torch.randn(40, 3, generator=g), torch.randn(40, 1, generator=g)
    lin = nn.Linear(3, 1)
    Xa = np.hstack([X.numpy(), np.ones((40, 1))]).astype(np.float64)
    want = np.linalg.eigvalsh(2 / 40 * Xa.T @ Xa).max()
    r = dg.hessian_top_eigenvalue(lin, (X, y), iters=100, tol=1e-7,
                                  loss_fn=lambda m, b: F.mse_loss(m(b[0]), b[1]))
    assert r.value == pytest.approx(want, rel=1e-4)


def test_hessian_leaves_a_gpt_unchanged(micro):
    idx = torch.randint(0, 1024, (2, 16), generator=torch.Generator().manual_seed(0))
    micro.eval()
    before = {n: p.detach().clone() for n, p in micro.named_parameters()}
    r = dg.hessian_top_eigenvalue(micro, (idx, idx.roll(-1, 1)), iters=3)
    assert math.isfinite(r.value) and r.iters <= 3
    assert all(torch.equal(p, before[n]) for n, p in micro.named_parameters())
    assert all(p.grad is None for p in micro.parameters()) and not micro.training
    assert dg.hessian_top_eigenvalue(micro, (idx, idx.roll(-1, 1)), iters=3) == r
