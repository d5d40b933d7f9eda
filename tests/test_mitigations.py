"""Mitigations (issue 16): the rules each method states, and the failure modes of public code.

A tiny GPT from the micro ladder trains a few steps in a hand-written loop that calls the hooks at
the places the training loop will (plasticlm.mitigations.base): forward, loss + loss_term,
backward, clip, pre_optim_step, AdamW step, post_optim_step; task boundaries reset the optimizer
as TaskBoundaryReset does. The loop-level resume test waits for the component registry.
"""

import copy
import dataclasses
import io
import json
import math

import pytest
import torch

from plasticlm.cli import main
from plasticlm.config import OptimConfig, from_dict, to_dict
from plasticlm.data.stream import Task
from plasticlm.diagnostics import dormant_mask
from plasticlm.errors import ConfigError, PlasticError
from plasticlm.mitigations import REGISTRY, build, build_all, describe_methods, parse_config, parse_mitigations
from plasticlm.mitigations.fire import newton_schulz
from plasticlm.mitigations.units import bias_corrected, reset_optimizer_entries, reset_units, select_units
from plasticlm.mitigations.upgd import UPGD
from plasticlm.mitigations.weight_clip import init_bound
from plasticlm.model import GPT, flops_per_token, from_preset, param_init
from plasticlm.optim import build_optimizer, reset_optimizer_state

VOCAB, SEQ, BATCH, LR = 64, 16, 4, 1e-2
NAMES = ["cbp", "redo", "shrink_perturb", "l2_init", "weight_clip", "upgd", "fire", "selective_reinit", "replay"]


# ---------------------------------------------------------------------------- a tiny loop


def tiny(preset: str = "25K", seed: int = 0):
    torch.manual_seed(seed)
    model = GPT(from_preset(preset, vocab_size=VOCAB, seq_len=SEQ))
    return model, build_optimizer(model, OptimConfig(weight_decay=0.1, beta2=0.95), LR)


def batches(n: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, VOCAB, (BATCH, SEQ), generator=g), torch.randint(0, VOCAB, (BATCH, SEQ), generator=g))
            for _ in range(n)]


def task(index: int) -> Task:
    return Task(index=index, cycle=0, position=index, lang=f"l{index}", switch=True, is_cycle_end=False)


def train(model, opt, mits, data, start: int = 0, steps_per_task: int = 4, fit_start: bool = True) -> None:
    """Steps start .. start+len(data)-1 (0-based global step), tasks of ``steps_per_task`` steps."""
    if fit_start:
        for m in mits:
            m.on_fit_start(model, opt)
    for i, (x, y) in enumerate(data):
        step = start + i
        if step % steps_per_task == 0:
            reset_optimizer_state(opt)  # the paper's task-boundary reset (TaskBoundaryReset)
            for m in mits:
                m.on_task_start(model, opt, task(step // steps_per_task))
        for m in mits:
            m.on_step_start((x, y))
        loss = model(x, y)
        for m in mits:
            term = m.loss_term(model)
            if term is not None:
                loss = loss + term
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for m in mits:
            m.pre_optim_step(model, opt)
        opt.step()
        for m in mits:
            m.post_optim_step(model, opt, step + 1)
        opt.zero_grad(set_to_none=True)
        if (step + 1) % steps_per_task == 0:
            for m in mits:
                m.on_task_end(model, opt, task(step // steps_per_task))


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def opt_tensors(opt) -> dict:
    """Every optimizer state tensor, keyed by parameter position and buffer name."""
    index = {id(p): i for i, p in enumerate(p for g in opt.param_groups for p in g["params"])}
    out = {}
    for p, st in opt.state.items():
        for k, v in st.items():
            out[f"{index[id(p)]}.{k}"] = torch.as_tensor(v).clone()
    return out


def weights(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------- registry, configs, CLI


def test_registry_holds_the_named_methods_each_with_a_valid_default_and_a_noop_setting():
    assert set(REGISTRY) == set(NAMES)
    for name, (cls, factory) in REGISTRY.items():
        default = parse_config(name)
        assert default.validate() == [] and not default.is_noop, name
        noop = parse_config(name, cls.NOOP)
        assert noop.is_noop and cls.CITATION and "arXiv" in cls.CITATION, name
        assert isinstance(build(name, noop), factory)
        with pytest.raises(dataclasses.FrozenInstanceError):
            default.__setattr__(next(iter(cls.NOOP)), 1)


def test_unknown_methods_keys_and_bad_values_are_all_named_at_once():
    with pytest.raises(ConfigError) as e:
        parse_mitigations({"cbpp": {}, "cbp": {"replacment_rate": 1e-4}, "redo": {"tau": -1.0, "batch": "val"},
                           "weight_clip": {"kappa": 0.5}})
    text = str(e.value)
    assert "unknown mitigation 'cbpp' (did you mean 'cbp'?)" in text
    assert "'mitigations.cbp.replacment_rate'" in text and "mitigations.cbp.replacement_rate" in text
    assert "mitigations.redo.batch = 'val'" in text
    assert "mitigations.weight_clip.kappa = 0.5" in text
    assert len(e.value.problems) == 4
    with pytest.raises(ConfigError, match=r"tau = -1.0: must be in \[0.0, 1.0\]"):
        parse_config("redo", {"tau": -1.0})
    with pytest.raises(ConfigError, match="must be a table"):
        parse_mitigations({"cbp": 3})


def test_parse_mitigations_returns_hook_order_and_typed_values():
    cfgs = parse_mitigations({"weight_clip": {"kappa": 3}, "cbp": {"maturity": 10.0}, "upgd": {}})
    assert list(cfgs) == ["upgd", "cbp", "weight_clip"]
    assert cfgs["weight_clip"].kappa == 3.0 and isinstance(cfgs["cbp"].maturity, int)


def test_cli_lists_methods_with_parameters_noop_and_citation(capsys):
    assert main(["mitigations", "--json"]) == 0
    methods = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in methods] == list(REGISTRY)
    for m in methods:
        keys = {p["key"] for p in m["params"]}
        assert set(m["noop"]) <= keys and m["citation"] and m["summary"]
        assert all(p["help"] and "default" in p for p in m["params"])
    assert main(["mitigations"]) == 0
    text = capsys.readouterr().out
    assert "cbp" in text and "no-op:  replacement_rate = 0.0" in text
    assert methods == json.loads(json.dumps(describe_methods()))


def test_replay_maps_to_stream_and_schedule_settings():
    overrides = build("replay", {"fraction": 0.1}).config_overrides()
    assert overrides == {"stream.replay_fraction": 0.1, "optim.rewarm_at_task_start": True, "optim.schedule": "cosine"}
    data = to_dict(from_dict({}))
    for key, value in overrides.items():  # the dotted keys name real config fields of the right type
        section, field = key.split(".")
        data[section][field] = value
    cfg = from_dict(data)
    assert cfg.stream.replay_fraction == 0.1 and cfg.optim.schedule == "cosine"
    assert build("replay", REGISTRY["replay"][0].NOOP).config_overrides() == {}


# ---------------------------------------------------------------------------- reset_units


def _stepped(preset="25K"):
    """A model and optimizer after two steps, so that every Adam moment is non-zero."""
    model, opt = tiny(preset)
    train(model, opt, [], batches(2))
    return model, opt


def test_reset_units_touches_exactly_the_units_and_their_optimizer_state():
    model, opt = _stepped()
    mlp = model.blocks[1].mlp
    idx = torch.tensor([3, 17, 100])
    before, state_before = weights(model), copy.deepcopy(opt.state_dict())
    rng = torch.get_rng_state()
    reset_units(mlp.fc, mlp.proj, idx, opt, torch.Generator().manual_seed(5), init_std=0.02)
    assert torch.equal(torch.get_rng_state(), rng)
    after = model.state_dict()
    rows = torch.zeros(mlp.fc.weight.shape[0], dtype=torch.bool)
    rows[idx] = True
    w0, w1 = before["blocks.1.mlp.fc.weight"], after["blocks.1.mlp.fc.weight"]
    assert torch.equal(w1[~rows], w0[~rows]) and not torch.equal(w1[rows], w0[rows])
    assert torch.equal(after["blocks.1.mlp.fc.bias"][rows], torch.zeros(3))
    assert torch.equal(after["blocks.1.mlp.fc.bias"][~rows], before["blocks.1.mlp.fc.bias"][~rows])
    assert torch.equal(after["blocks.1.mlp.proj.weight"][:, rows], torch.zeros(mlp.proj.weight.shape[0], 3))
    assert torch.equal(after["blocks.1.mlp.proj.weight"][:, ~rows], before["blocks.1.mlp.proj.weight"][:, ~rows])
    changed = {"blocks.1.mlp.fc.weight", "blocks.1.mlp.fc.bias", "blocks.1.mlp.proj.weight"}
    assert_same_tensors({k: v for k, v in after.items() if k not in changed},
                        {k: v for k, v in before.items() if k not in changed})
    where = {"weight_in": (mlp.fc.weight, (rows,)), "bias_in": (mlp.fc.bias, (rows,)),
             "weight_out": (mlp.proj.weight, (slice(None), rows))}
    params = [p for g in opt.param_groups for p in g["params"]]
    pos = {id(p): i for i, p in enumerate(params)}
    for key in ("exp_avg", "exp_avg_sq"):
        for p, sel in where.values():
            buf, old = opt.state[p][key], state_before["state"][pos[id(p)]][key]
            assert torch.equal(buf[sel], torch.zeros_like(buf[sel])) and old[sel].abs().sum() > 0
            keep = torch.ones_like(buf, dtype=torch.bool)
            keep[sel] = False
            assert torch.equal(buf[keep], old[keep])
    # the scalar step is shared by every row: untouched; every other parameter's state untouched
    for i, p in enumerate(params):
        assert torch.equal(opt.state[p]["step"], state_before["state"][i]["step"])
        if all(p is not q for q, _ in where.values()):
            for key in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(opt.state[p][key], state_before["state"][i][key])


def test_reset_units_draws_from_the_init_distribution_with_its_own_generator():
    model, opt = _stepped("85K")  # d 48: 192 units x 48 inputs
    mlp = model.blocks[0].mlp
    std = param_init(model.config, "blocks.0.mlp.fc.weight")[1]
    all_units = torch.arange(mlp.fc.weight.shape[0])
    reset_units(mlp.fc, mlp.proj, all_units, opt, torch.Generator().manual_seed(7), std)
    w = mlp.fc.weight.detach()
    assert abs(w.std().item() / std - 1) < 0.05 and abs(w.mean().item()) < 0.05 * std
    expected = torch.randn(w.shape, generator=torch.Generator().manual_seed(7)) * std
    assert torch.equal(w, expected)


def test_reset_units_resets_a_per_element_step_and_rejects_bad_indices():
    lin_in, lin_out = torch.nn.Linear(4, 6), torch.nn.Linear(6, 3)
    opt = torch.optim.AdamW(list(lin_in.parameters()) + list(lin_out.parameters()))
    for p in list(lin_in.parameters()) + list(lin_out.parameters()):  # AdamGnT-style per-element steps
        opt.state[p] = {"step": torch.full(p.shape, 9.0), "exp_avg": torch.ones(p.shape),
                        "exp_avg_sq": torch.ones(p.shape)}
    reset_units(lin_in, lin_out, torch.tensor([1, 4]), opt, torch.Generator(), 0.02)
    step_in, step_out = opt.state[lin_in.weight]["step"], opt.state[lin_out.weight]["step"]
    assert step_in[[1, 4]].eq(0).all() and step_in[[0, 2, 3, 5]].eq(9).all()
    assert step_out[:, [1, 4]].eq(0).all() and step_out[:, [0, 2, 3, 5]].eq(9).all()
    assert opt.state[lin_out.bias]["step"].eq(9).all()
    for bad in ([6], [1, 1], [-1]):
        with pytest.raises(PlasticError, match="distinct and in"):
            reset_units(lin_in, lin_out, torch.tensor(bad), opt, torch.Generator(), 0.02)
    with pytest.raises(PlasticError, match="hidden layer"):
        reset_units(lin_in, lin_in, torch.tensor([0]), opt, torch.Generator(), 0.02)
    reset_optimizer_entries(torch.optim.AdamW([torch.nn.Parameter(torch.ones(2))]), torch.ones(2), 0)  # no state: ok


# ---------------------------------------------------------------------------- CBP


def test_cbp_ranks_by_bias_corrected_utility():
    # unit 0 matured recently: raw 0.0635 < 0.09 but corrected 0.0635 / (1 - 0.99^101) = 0.0996 > 0.09
    util = torch.tensor([0.0635, 0.09, 0.5], dtype=torch.float64)
    age = torch.tensor([101, 1000, 1000])
    scores = bias_corrected(util, age, 0.99)
    assert scores[0] == pytest.approx(0.0635 / (1 - 0.99**101))
    picked, budget = select_units(scores, age, maturity=100, budget=0.0, rate=1 / 3)
    assert picked.tolist() == [1] and budget == pytest.approx(0.0)
    raw, _ = select_units(util, age, maturity=100, budget=0.0, rate=1 / 3)
    assert raw.tolist() == [0]  # what ranking by the raw utility would have done


def test_cbp_in_training_replaces_the_unit_with_lowest_corrected_utility_and_resets_its_moments():
    model, opt = tiny("3K")
    cbp = build("cbp", {"replacement_rate": 0.0, "maturity": 100, "decay": 0.99})
    train(model, opt, [cbp], batches(3))
    n = cbp.util[0].numel()
    # every unit has a large utility except two; unit 5 matured recently and looks worst by its raw
    # average (62.9 < 89.1 after this step's decay), but its corrected utility is 98.0 > 89.1
    cbp.age[0][:] = 1000
    cbp.util[0][:] = 1e3
    cbp.age[0][5], cbp.util[0][5] = 101, 63.5
    cbp.util[0][9] = 90.0
    cbp.cfg = parse_config("cbp", {"replacement_rate": 1.5 / n, "maturity": 100, "decay": 0.99})
    fc, proj = model.blocks[0].mlp.fc, model.blocks[0].mlp.proj
    x, y = batches(1, seed=9)[0]
    cbp.on_step_start((x, y))
    model(x, y).backward()
    opt.step()
    w_before = fc.weight.detach().clone()
    m_fc, m_proj = opt.state[fc.weight]["exp_avg"].clone(), opt.state[proj.weight]["exp_avg_sq"].clone()
    cbp.post_optim_step(model, opt, 4)
    assert cbp.last_replaced[0].tolist() == [9]
    changed = (fc.weight.detach() != w_before).any(1)
    assert torch.nonzero(changed).flatten().tolist() == [9]
    keep = torch.ones(n, dtype=torch.bool)
    keep[9] = False
    assert opt.state[fc.weight]["exp_avg"][9].eq(0).all() and opt.state[fc.weight]["exp_avg_sq"][9].eq(0).all()
    assert opt.state[proj.weight]["exp_avg_sq"][:, 9].eq(0).all() and m_proj[:, 9].abs().sum() > 0
    assert torch.equal(opt.state[fc.weight]["exp_avg"][keep], m_fc[keep])
    assert torch.equal(opt.state[proj.weight]["exp_avg_sq"][:, keep], m_proj[:, keep])
    assert cbp.age[0][9] == 0 and cbp.util[0][9] == 0 and cbp.budget[0] == pytest.approx(0.5)


def test_cbp_budget_does_not_pile_up_while_immature_and_reset_units_are_not_replaced_again():
    model, opt = tiny("25K")  # 2 layers x 128 units
    rate, maturity, steps = 0.02, 6, 20
    cbp = build("cbp", {"replacement_rate": rate, "maturity": maturity})
    cbp.on_fit_start(model, opt)
    last_reset: dict[tuple[int, int], int] = {}
    counts = []
    for step, batch in enumerate(batches(steps)):
        train(model, opt, [cbp], [batch], start=step, steps_per_task=1000, fit_start=False)
        counts.append([len(r) for r in cbp.last_replaced])
        for layer, idx in enumerate(cbp.last_replaced):
            for u in idx.tolist():
                if (layer, u) in last_reset:  # a replaced unit must mature again first
                    assert step - last_reset[(layer, u)] > maturity
                last_reset[(layer, u)] = step
        if step < maturity:
            assert counts[-1] == [0, 0] and cbp.budget == [0.0, 0.0]
    # never more than the per-step rate can pay for (rate * 128 = 2.56): no burst at maturity (a
    # budget that had grown while every unit was immature would spend 0.02 * 128 * 7 = 17 units here)
    assert max(max(c) for c in counts) <= math.ceil(rate * 128)
    assert counts[maturity] == [2, 2]
    assert sum(sum(c) for c in counts) > 0


def test_cbp_replaces_exactly_what_the_eligible_units_paid_for():
    model, opt = tiny("25K")
    rate, maturity = 0.03, 3
    cbp = build("cbp", {"replacement_rate": rate, "maturity": maturity})
    cbp.on_fit_start(model, opt)
    paid, replaced = [0.0, 0.0], [0, 0]
    for step, batch in enumerate(batches(15)):
        train(model, opt, [cbp], [batch], start=step, steps_per_task=1000, fit_start=False)
        for layer, idx in enumerate(cbp.last_replaced):
            eligible = int((cbp.age[layer] > maturity).sum()) + len(idx)  # the replaced ones were eligible
            paid[layer] += rate * eligible
            replaced[layer] += len(idx)
    for layer in range(2):
        assert replaced[layer] == pytest.approx(paid[layer] - cbp.budget[layer], abs=1e-9)
        assert 0.0 <= cbp.budget[layer] < 1.0


# ---------------------------------------------------------------------------- ReDo


def test_redo_resets_exactly_the_dormant_units():
    model, opt = tiny("25K")
    train(model, opt, [], batches(2))
    held = batches(1, seed=3)[0][0]
    dead = {0: [4, 50, 77], 1: [0, 127]}
    with torch.no_grad():
        for layer, units in dead.items():
            fc = model.blocks[layer].mlp.fc
            fc.weight[units] = 0.0
            fc.bias[units] = -4.0  # GeLU(-4) = -1.3e-4: small but not zero (a score, not a test h == 0)
    redo = build("redo", {"every": 3, "tau": 0.1})
    redo.set_held_out(held)
    expected = redo.dormant_units(model)
    for layer, units in dead.items():
        assert set(units) <= set(torch.nonzero(expected[layer]).flatten().tolist())
    before = weights(model)
    redo.post_optim_step(model, opt, 2)  # not a multiple of every: nothing
    assert_same_tensors(weights(model), before)
    redo.post_optim_step(model, opt, 3)
    for layer in range(2):
        idx = torch.nonzero(expected[layer]).flatten()
        assert torch.equal(redo.last_reset[layer], idx)
        fc_w = model.blocks[layer].mlp.fc.weight.detach()
        changed = (fc_w != before[f"blocks.{layer}.mlp.fc.weight"]).any(1)
        assert torch.equal(torch.nonzero(changed).flatten(), idx)
        assert model.blocks[layer].mlp.proj.weight[:, idx].eq(0).all()
        assert opt.state[model.blocks[layer].mlp.fc.weight]["exp_avg"][idx].eq(0).all()
    # the measurement is diagnostics.dormant_mask on the MLP activations of the held-out batch
    acts = {}
    hook = model.blocks[0].mlp.act.register_forward_hook(lambda m, i, o: acts.setdefault("h", o.detach()))
    with torch.no_grad():
        model.eval()
        model(held)
        model.train()
    hook.remove()
    assert torch.equal(redo.dormant_units(model)[0], dormant_mask(acts["h"], 0.1))
    assert acts["h"][..., dead[0]].ne(0).all()


def test_redo_without_a_reference_batch_says_how_to_give_one():
    model, opt = tiny("3K")
    redo = build("redo", {"every": 1})
    with pytest.raises(PlasticError, match="set_held_out"):
        redo.post_optim_step(model, opt, 1)


# ---------------------------------------------------------------------------- L2 Init, S&P, clipping


def test_l2_init_gradient_is_lambda_times_drift_with_layernorm_excluded():
    model, opt = tiny("25K")
    l2 = build("l2_init", {"strength": 0.3})
    theta0 = weights(model)
    train(model, opt, [l2], batches(3))
    opt.zero_grad(set_to_none=True)
    l2.loss_term(model).backward()
    for name, p in model.named_parameters():
        if any(ln in name.split(".") for ln in ("ln_1", "ln_2", "ln_f")):
            assert p.grad is None, name
        else:
            torch.testing.assert_close(p.grad, 0.3 * (p.detach() - theta0[name]), rtol=1e-5, atol=1e-9)
            assert p.grad.abs().sum() > 0, name


def test_shrink_perturb_is_exactly_lambda_theta_plus_sigma_eps_every_step():
    model, opt = tiny("3K")
    sp = build("shrink_perturb", {"shrink": 0.9, "sigma": 0.01}, seed=4)
    gen = copy.deepcopy(sp.generator)
    before = weights(model)
    sp.post_optim_step(model, opt, 1)
    for name, p in model.named_parameters():  # the tied embedding once
        eps = torch.randn(p.shape, generator=gen)
        torch.testing.assert_close(p.detach(), before[name] * 0.9 + 0.01 * eps, rtol=1e-6, atol=1e-9)  # 1 ulp


def test_shrink_perturb_at_task_switches_only_and_toward_a_fresh_init():
    model, opt = tiny("3K")
    sp = build("shrink_perturb", {"shrink": 0.5, "sigma": 0.5, "at": "task", "noise": "init"})
    before = weights(model)
    sp.post_optim_step(model, opt, 1)
    sp.on_task_start(model, opt, task(0))  # the first task is not a switch
    assert_same_tensors(weights(model), before)
    sp.on_task_start(model, opt, task(1))
    ln = model.blocks[0].ln_1
    assert torch.equal(ln.weight.detach(), torch.ones_like(ln.weight))  # 0.5 * 1 + 0.5 * 1 (its init)
    assert torch.equal(ln.bias.detach(), torch.zeros_like(ln.bias))
    w = model.blocks[0].mlp.fc.weight.detach()
    fresh = (w - 0.5 * before["blocks.0.mlp.fc.weight"]) / 0.5
    assert abs(fresh.std().item() / 0.02 - 1) < 0.15


def test_weight_clip_clips_to_kappa_times_the_init_bound_and_touches_nothing_else():
    model, opt = tiny("3K")
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(8.0)
    before = weights(model)
    build("weight_clip", {"kappa": 2.0}).post_optim_step(model, opt, 1)
    after = model.state_dict()
    for name, _ in model.named_parameters():
        kind, std = param_init(model.config, name)
        if kind == "constant":
            assert torch.equal(after[name], before[name]), name
            continue
        bound = 2.0 * math.sqrt(3.0) * std
        assert init_bound(model, name) == pytest.approx(math.sqrt(3.0) * std)
        assert torch.equal(after[name], before[name].clamp(-bound, bound)), name
        assert (before[name].abs() > bound).any() and (before[name].abs() <= bound).any()


# ---------------------------------------------------------------------------- UPGD, FIRE, selective reinit


def test_upgd_gates_the_adamw_step_and_the_noise_by_one_minus_scaled_utility():
    for gate in (True, False):
        model, opt = tiny("3K")
        ref, ref_opt = tiny("3K")
        upgd = build("upgd", {"beta": 0.9, "sigma": 0.5, "gate_gradient": gate}, seed=2)
        gen = copy.deepcopy(upgd.generator)
        x, y = batches(1)[0]
        for m in (model, ref):
            m(x, y).backward()
        before = weights(model)
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        upgd.pre_optim_step(model, opt)
        opt.step()
        ref_opt.step()  # the same AdamW step without the rule
        upgd.post_optim_step(model, opt, 1)
        u = {n: -grads[n] * before[n] for n in grads}  # u_hat after one step: (1-beta) u / (1-beta)
        top = max(v.max().item() for v in u.values())
        groups = {id(p): g for g in opt.param_groups for p in g["params"]}
        for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
            s = torch.sigmoid(u[n] / top)
            lr, wd = LR, groups[id(p)]["weight_decay"]
            noise = torch.randn(p.shape, generator=gen) * lr * 0.5
            decayed = before[n] * (1 - lr * wd)
            if gate:
                expected = decayed + (1 - s) * ((q.detach() - decayed) - noise)
            else:
                expected = q.detach() - (1 - s) * noise
            torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-7)
    assert isinstance(upgd, UPGD)


def test_fire_orthogonalises_q_k_v_separately_and_drops_their_optimizer_state():
    model, opt = _stepped("25K")
    fire = build("fire", {"iterations": 40})
    before = weights(model)
    a = model.config.attn_dim
    fire.on_task_start(model, opt, task(0))  # the first task: nothing
    assert_same_tensors(weights(model), before)
    fire.on_task_start(model, opt, task(1))
    for name, p in model.named_parameters():
        if not (name.startswith("blocks.") and name.endswith("weight") and p.ndim == 2):
            assert torch.equal(p.detach(), before[name]), name
            continue
        blocks = p.detach().split(a) if "qkv" in name else [p.detach()]
        olds = before[name].split(a) if "qkv" in name else [before[name]]
        for w, old in zip(blocks, olds):
            m, n = w.shape
            gram = w.T @ w if m >= n else w @ w.T
            torch.testing.assert_close(gram, torch.eye(min(m, n)) * (m / n), atol=2e-3, rtol=0)
            u, _, vh = torch.linalg.svd(old.double(), full_matrices=False)
            torch.testing.assert_close(w.double(), u @ vh * math.sqrt(m / n), atol=2e-3, rtol=0)
        assert p not in opt.state, name
    assert model.blocks[0].attn.qkv.bias in opt.state  # biases keep their state
    # one polar factor of the fused qkv would not make each of Q, K, V an isometry
    fused = newton_schulz(before["blocks.0.attn.qkv.weight"], 40)
    q = fused[:a]
    assert not torch.allclose(q @ q.T, torch.eye(a) * (q @ q.T).trace() / a, atol=1e-2)


def test_selective_reinit_replaces_the_lowest_utility_weights_and_their_moments_only():
    model, opt = tiny("3K")
    sr = build("selective_reinit", {"rate": 0.0, "maturity": 2})
    train(model, opt, [sr], batches(3))
    name = "blocks.0.mlp.fc.weight"
    w = model.blocks[0].mlp.fc.weight
    sr.util[name][:] = 1.0
    low = [(0, 0), (5, 3), (60, 15)]
    for i, j in low:
        sr.util[name][i, j] = 1e-9
    sr.cfg = parse_config("selective_reinit", {"rate": 3.2 / w.numel(), "maturity": 2})
    for other in sr.budget:
        sr.budget[other] = -1e9 if other != name else 0.0
    before, moments = w.detach().clone(), opt.state[w]["exp_avg"].clone()
    sr.post_optim_step(model, opt, 4)
    mask = torch.zeros_like(w, dtype=torch.bool)
    for i, j in low:
        mask[i, j] = True
    assert torch.equal(w.detach()[~mask], before[~mask]) and (w.detach()[mask] != before[mask]).all()
    assert opt.state[w]["exp_avg"][mask].eq(0).all() and torch.equal(opt.state[w]["exp_avg"][~mask], moments[~mask])
    assert sr.age[name][mask].eq(0).all() and sr.age[name][~mask].eq(4).all()


# ---------------------------------------------------------------------------- no-op and resume

ACTIVE = {
    "cbp": {"replacement_rate": 0.05, "maturity": 2},
    "redo": {"every": 2, "tau": 0.6, "batch": "train"},
    "shrink_perturb": {"shrink": 0.99, "sigma": 1e-3},
    "l2_init": {"strength": 0.1},
    "weight_clip": {"kappa": 1.0},
    "upgd": {"sigma": 1e-2, "beta": 0.9},
    "fire": {"every_tasks": 1, "iterations": 5},
    "selective_reinit": {"rate": 0.01, "maturity": 2},
    "replay": {"fraction": 0.1},
}


@pytest.fixture(scope="module")
def baseline():
    torch.set_num_threads(1)  # as the tests (conftest); a module fixture runs before that autouse fixture
    model, opt = tiny("3K")
    rng = torch.get_rng_state()
    train(model, opt, [], batches(6))
    return weights(model), opt_tensors(opt), torch.get_rng_state(), rng


@pytest.mark.parametrize("name", NAMES)
def test_noop_setting_is_bit_identical_to_the_baseline(name, baseline):
    w0, o0, rng_after0, rng_before = baseline
    model, opt = tiny("3K")
    assert torch.equal(torch.get_rng_state(), rng_before)
    mit = build(name, {**ACTIVE[name], **REGISTRY[name][0].NOOP})
    assert mit.cfg.is_noop
    train(model, opt, [mit], batches(6))
    mit.close()
    assert_same_tensors(weights(model), w0)
    assert_same_tensors(opt_tensors(opt), o0)
    assert torch.equal(torch.get_rng_state(), rng_after0)  # the global RNG was not touched
    if name not in ("cbp", "selective_reinit"):  # those two still track utilities at their no-op
        assert mit.extra_flops_per_step(model.config, BATCH * SEQ, 4) == 0.0


def _snapshot(model, opt, mit) -> bytes:
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "mit": mit.state_dict()}, buf)
    return buf.getvalue()


@pytest.mark.parametrize("load_first", [True, False], ids=["restore-then-fit-start", "fit-start-then-restore"])
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_continues_bit_identically(name, load_first, baseline):
    data = batches(8)
    model, opt = tiny("3K")
    mit = build(name, ACTIVE[name], seed=3)
    train(model, opt, [mit], data[:3])  # steps 0-2; a task switch at step 4 is still to come
    saved = _snapshot(model, opt, mit)
    train(model, opt, [mit], data[3:], start=3, fit_start=False)
    mit.close()

    state = torch.load(io.BytesIO(saved), weights_only=False)
    model2, opt2 = tiny("3K", seed=1)  # another init: everything must come from the state
    mit2 = build(name, ACTIVE[name], seed=99)  # another seed: the generator must come from the state
    model2.load_state_dict(state["model"])
    opt2.load_state_dict(state["opt"])
    if load_first:
        mit2.load_state_dict(state["mit"])
        mit2.on_fit_start(model2, opt2)
    else:
        mit2.on_fit_start(model2, opt2)
        mit2.load_state_dict(state["mit"])
    train(model2, opt2, [mit2], data[3:], start=3, fit_start=False)
    mit2.close()
    assert_same_tensors(weights(model2), weights(model))
    assert_same_tensors(opt_tensors(opt2), opt_tensors(opt))
    assert torch.equal(mit2.generator.get_state(), mit.generator.get_state())
    assert_same_state(mit2.state_dict(), mit.state_dict())


def assert_same_state(a, b, where="state") -> None:
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


@pytest.mark.parametrize("name", [n for n in NAMES if n != "replay"])
def test_each_active_method_changes_training(name, baseline):
    model, opt = tiny("3K")
    mit = build(name, ACTIVE[name], seed=3)
    train(model, opt, [mit], batches(6))
    mit.close()
    assert any(not torch.equal(a, b) for a, b in zip(weights(model).values(), baseline[0].values()))
    assert mit.extra_flops_per_step(model.config, BATCH * SEQ, 4) > 0


def test_loading_a_state_without_generator_is_an_error():
    with pytest.raises(PlasticError, match="no generator"):
        build("cbp").load_state_dict({})


def test_all_methods_compose_in_hook_order_noop_together_and_resume_together(baseline):
    noop = build_all({n: {**ACTIVE[n], **REGISTRY[n][0].NOOP} for n in reversed(NAMES)})
    assert [m.name for m in noop] == list(REGISTRY)
    model, opt = tiny("3K")
    train(model, opt, noop, batches(6))
    assert_same_tensors(weights(model), baseline[0])

    data = batches(8)
    model, opt = tiny("3K")
    active = build_all({n: ACTIVE[n] for n in NAMES}, seed=5)
    train(model, opt, active, data[:3])
    saved = [m.state_dict() for m in active]
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "mits": saved}, buf)
    train(model, opt, active, data[3:], start=3, fit_start=False)
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=False)
    model2, opt2 = tiny("3K", seed=1)
    model2.load_state_dict(state["model"])
    opt2.load_state_dict(state["opt"])
    active2 = build_all({n: ACTIVE[n] for n in NAMES}, seed=6)
    for m, s in zip(active2, state["mits"]):
        m.load_state_dict(s)
        m.on_fit_start(model2, opt2)
    train(model2, opt2, active2, data[3:], start=3, fit_start=False)
    for m in active + active2:
        m.close()
    assert_same_tensors(weights(model2), weights(model))


def test_extra_flops_follow_the_stated_counts():
    c = from_preset("25K", vocab_size=VOCAB, seq_len=SEQ)
    tokens = BATCH * SEQ
    redo = build("redo", {"every": 10})
    assert redo.extra_flops_per_step(c, tokens, 50) == pytest.approx(flops_per_token(c) / 3 * tokens / 10)
    per_step = build("shrink_perturb", {"at": "step"}).extra_flops_per_step(c, tokens, 50)
    assert build("shrink_perturb", {"at": "task"}).extra_flops_per_step(c, tokens, 50) == pytest.approx(per_step / 50)
    fire1 = build("fire", {"every_tasks": 1}).extra_flops_per_step(c, tokens, 50)
    assert build("fire", {"every_tasks": 2}).extra_flops_per_step(c, tokens, 50) == pytest.approx(fire1 / 2)
    cbp = build("cbp")
    assert cbp.extra_flops_per_step(c, 2 * tokens, 50) > cbp.extra_flops_per_step(c, tokens, 50)
    assert build("replay").extra_flops_per_step(c, tokens, 50) == 0.0  # replayed tokens replace fresh ones
