import pytest
import torch

from plasticlm.model import (
    GPT,
    MICRO_PRESETS,
    PAPER_PRESETS,
    block_params,
    flops_per_token,
    from_depth,
    from_preset,
    non_embedding_params,
    preset_names,
    total_params,
)

# protocol.md's table (arXiv:2606.24752 size ladder).
PAPER_NON_EMBEDDING = {
    "5M": 4_933_120,
    "12M": 12_073_600,
    "27M": 27_925_632,
    "39M": 39_393_280,
    "53M": 53_615_232,
    "83M": 83_183_360,
    "106M": 106_109_696,
    "314M": 314_859_520,
}


@pytest.mark.parametrize("name", list(PAPER_PRESETS))
def test_paper_non_embedding_counts_match_protocol_table(name):
    c = from_preset(name)
    assert non_embedding_params(c) == PAPER_NON_EMBEDDING[name]
    L, d = c.n_layer, c.d_model
    assert non_embedding_params(c) == 12 * L * d * d + 14 * L * d
    assert c.head_dim == 64 and c.n_head * 64 == d


@pytest.mark.parametrize("name", preset_names())
@pytest.mark.parametrize("vocab,seq", [(1024, 128), (151_680, 2048)])
def test_analytic_counts_equal_module_numel(name, vocab, seq):
    c = from_preset(name, vocab_size=vocab, seq_len=seq)
    with torch.device("meta"):
        m = GPT(c)
    assert sum(p.numel() for p in m.parameters()) == total_params(c)
    assert sum(p.numel() for _, p in m.non_embedding_named_parameters()) == block_params(c)
    # the paper's convention carries one extra d per block (see model.non_embedding_params)
    assert non_embedding_params(c) - block_params(c) == c.n_layer * c.d_model


def test_micro_ladder_fixed_aspect_and_head_dim():
    aspects = {d // L for L, d, _ in MICRO_PRESETS.values()}
    heads = {d // h for _, d, h in MICRO_PRESETS.values()}
    assert aspects == {16} and heads == {16}
    counts = [non_embedding_params(from_preset(n)) for n in MICRO_PRESETS]
    assert counts == sorted(counts) and 5 <= len(counts) <= 6


def test_from_depth_dial():
    c = from_depth(4, aspect=80, head_dim=64)
    assert (c.n_layer, c.d_model, c.n_head) == (4, 320, 5)
    assert from_depth(16).d_model == 1280


def test_flops_per_token_is_6n_plus_attention():
    c = from_preset("5M", vocab_size=1000, seq_len=256)
    n = block_params(c) + 1000 * c.d_model
    assert flops_per_token(c) == 6 * n + 12 * c.n_layer * c.d_model * 256


def test_unknown_preset_suggests():
    with pytest.raises(ValueError, match="did you mean '5M'"):
        from_preset("5m")


def _tiny(**kw):
    torch.manual_seed(0)
    return GPT(from_preset("25K", vocab_size=64, seq_len=16, **kw))


def test_shapes_and_finite_loss():
    m = _tiny()
    idx = torch.randint(0, 64, (3, 16))
    logits = m(idx)
    assert logits.shape == (3, 16, 64)
    loss = m(idx, idx)
    assert loss.ndim == 0 and torch.isfinite(loss)
    # at init the loss is close to ln(V)
    assert abs(loss.item() - torch.log(torch.tensor(64.0)).item()) < 0.5


def test_tied_embeddings_and_names():
    m = _tiny()
    assert m.lm_head.weight is m.wte.weight
    names = dict(m.named_modules())
    for n in ["blocks.0.attn", "blocks.0.attn.qkv", "blocks.1.mlp.fc", "blocks.1.mlp.act", "blocks.1.mlp.proj", "ln_f"]:
        assert n in names


def test_init_std_and_residual_scaling():
    torch.manual_seed(0)
    m = GPT(from_preset("670K", vocab_size=512, seq_len=64))
    std = 0.02
    assert abs(m.blocks[0].mlp.fc.weight.std().item() - std) < 0.002
    assert abs(m.blocks[0].mlp.proj.weight.std().item() - std / (2 * 6) ** 0.5) < 0.001
    assert m.blocks[0].attn.qkv.bias.abs().sum() == 0


def test_causality_gradient_of_position_t_ignores_later_inputs():
    m = _tiny()
    T = 16
    idx = torch.randint(0, 64, (1, T))
    x = m.wte(idx).detach().requires_grad_(True)
    # run the blocks on an embedding we can differentiate against
    h = x + m.wpe(torch.arange(T))
    for b in m.blocks:
        h = b(h)
    logits = m.lm_head(m.ln_f(h))
    t = 5
    loss_t = torch.nn.functional.cross_entropy(logits[0, t : t + 1], idx[0, t + 1 : t + 2])
    loss_t.backward()
    g = x.grad[0].abs().sum(-1)
    assert torch.all(g[t + 1 :] == 0)
    assert torch.all(g[: t + 1] > 0)


def test_forward_rejects_too_long_sequence():
    m = _tiny()
    with pytest.raises(ValueError, match="seq_len"):
        m(torch.zeros(1, 17, dtype=torch.long))
