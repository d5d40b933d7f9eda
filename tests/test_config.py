import json
import re
import typing
from pathlib import Path

import pytest

from plasticlm.config import (
    Config,
    apply_overrides,
    dumps_json,
    dumps_toml,
    from_dict,
    load_config,
    loads_toml,
    to_dict,
)
from plasticlm.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_valid_and_round_trip_toml_and_json():
    cfg = Config()
    assert cfg.validate() == []
    assert loads_toml(dumps_toml(cfg)) == cfg
    assert from_dict(json.loads(dumps_json(cfg))) == cfg


def test_round_trip_with_overrides(tmp_path):
    cfg = load_config(None, ["model.preset=85K", "stream.languages=[en, fr]", "optim.lr=3e-3",
                             "stream.kind=stationary", "stream.weights=[1, 2]", "data.source=hf",
                             "data.hf_dataset=some/dataset", "data.hf_configs={en = 'en'}", "train.seed=7",
                             "probe.after_languages=[fr]"])
    assert cfg.model.preset == "85K"
    assert cfg.stream.languages == ["en", "fr"]
    assert cfg.optim.lr == 3e-3
    assert cfg.stream.weights == [1.0, 2.0]
    assert cfg.data.hf_configs == {"en": "en"}
    p = tmp_path / "c.toml"
    p.write_text(dumps_toml(cfg))
    assert load_config(p) == cfg


def test_unknown_keys_and_wrong_types_all_reported_at_once(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('[model]\npresett = "5M"\nseq_len = "long"\n[optimm]\nlr = 1\n[stream]\nkind = "stationry"\n')
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    text = "\n".join(ei.value.problems)
    assert len(ei.value.problems) == 4
    assert "'model.presett'" in text and "did you mean 'model.preset'" in text
    assert "model.seq_len = 'long'" in text
    assert "'optimm'" in text and "did you mean 'optim'" in text
    assert "did you mean 'stationary'" in text


def test_semantic_validation():
    with pytest.raises(ConfigError, match="probe language must be held out"):
        load_config(None, ["probe.language=en"])
    with pytest.raises(ConfigError, match=r"probe.after_languages has \['zh', 'de', 'ru'\]"):
        load_config(None, ["stream.languages=[en, fr]"])
    with pytest.raises(ConfigError, match="train.device = 'gpu'"):
        load_config(None, ["train.device=gpu"])
    with pytest.raises(ConfigError, match="Adam betas"):
        load_config(None, ["optim.beta2=1.5"])
    with pytest.raises(ConfigError, match="micro_batch_size"):
        load_config(None, ["train.batch_size=10", "train.micro_batch_size=3"])


def test_bool_and_int_strictness():
    with pytest.raises(ConfigError, match="must be bool"):
        from_dict({"optim": {"reset_at_task_start": 1}})
    with pytest.raises(ConfigError, match="must be int"):
        from_dict({"stream": {"cycles": 2.5}})
    assert from_dict({"stream": {"tokens_per_task": 5e9}}).stream.tokens_per_task == 5_000_000_000


def test_override_of_string_field_keeps_string():
    data = apply_overrides({}, ["model.preset=5"])
    assert data["model"]["preset"] == "5"


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(None, ["model.preset"])


@pytest.mark.parametrize("path", sorted((ROOT / "configs").rglob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    assert to_dict(cfg)


# A non-default value for every key that applies to some stream kinds only (config.KIND_KEYS), and the
# extra settings a kind needs for that value to be valid where the key applies.
KIND_EXAMPLES = {
    "stream.weights": ("stream.weights=[1, 2, 3, 4, 5, 6, 7, 8]", ()),
    "stream.replay_fraction": ("stream.replay_fraction=0.25", ()),
    "stream.permuted_base": ("stream.permuted_base=fr", ("probe.after_languages=[]",)),
    "probe.after_languages": ("probe.after_languages=[de]", ()),
    "sweep.stationary": ("sweep.stationary=true", ()),
}
KIND_SETUP = {"continual": (), "stationary": (), "permuted": ("probe.after_languages=[]",)}


def test_every_kind_specific_key_is_honoured_or_rejected_on_every_stream_kind():
    from plasticlm.config import KIND_KEYS, StreamConfig

    kinds = typing.get_args(typing.get_type_hints(StreamConfig)["kind"])
    assert set(KIND_EXAMPLES) == set(KIND_KEYS)  # a new kind-specific key needs an example here
    for key, (setting, needs) in KIND_EXAMPLES.items():
        applies, _ = KIND_KEYS[key]
        for kind in kinds:
            base = [f"stream.kind={kind}", *KIND_SETUP[kind]]
            if kind in applies:  # honoured: accepted as given
                section, name = key.split(".")
                value = to_dict(load_config(None, [*base, *needs, setting]))[section][name]
                assert value != to_dict(Config())[section][name]
            else:
                with pytest.raises(ConfigError) as ei:
                    load_config(None, [*base, *needs, setting])
                (problem,) = [p for p in ei.value.problems if p.startswith(key)]
                assert f"applies only to stream.kind = {' or '.join(applies)}" in problem
                assert f"this stream is {kind!r}" in problem


def test_permuted_stream_rejects_the_default_probe_languages_it_would_ignore():
    with pytest.raises(ConfigError, match=r"probe.after_languages = \['zh', 'de', 'ru'\] applies only to"):
        load_config(None, ["stream.kind=permuted"])
    assert load_config(ROOT / "configs/permuted.toml").stream.kind == "permuted"


@pytest.mark.parametrize("setting, message", [
    ("data.local_dir=/x", "applies only to data.source = local"),
    ("data.hf_streaming=false", "applies only to data.source = hf"),
    ("data.synthetic_bytes=10", "applies only to data.source = synthetic"),
    ("model.n_layer=3", "applies only to a model sized by explicit"),
    ("model.aspect=64", "applies only to a model sized by depth"),
    ("optim.min_lr_frac=0.2", "acts only with optim.schedule = 'cosine'"),
    ("optim.lr_anchor_values=[1e-3, 1e-4]", "acts only with optim.lr = 0.0"),
    ("sweep.stationary_presets=[25K]", "acts only with sweep.stationary = True"),
    ("sweep.stationary_probe_every_tokens=1000", "acts only with sweep.stationary = True"),
    ("data.slurm_time=1:00:00", "acts only with data.executor = 'slurm'"),
])
def test_keys_of_other_sources_modes_and_switches_are_rejected(setting, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, (["optim.lr=1e-3"] if "lr_anchor" in setting else []) + [setting])


def test_stationary_control_settings_are_checked():
    base = ["sweep.presets=[25K, 85K]", "sweep.stationary=true"]
    with pytest.raises(ConfigError, match=r"sweep.stationary_presets has \['5M'\], not in sweep.presets"):
        load_config(None, [*base, "sweep.stationary_presets=[5M]"])
    with pytest.raises(ConfigError, match="a stationary twin cannot replay"):
        load_config(None, [*base, "stream.replay_fraction=0.1"])
    with pytest.raises(ConfigError, match="sweep.stationary = True applies only to stream.kind = continual"):
        load_config(None, [*base, "stream.kind=stationary"])
    with pytest.raises(ConfigError, match=r"data.train_tokens_per_language names \['xx'\]"):
        load_config(None, ["data.train_tokens_per_language={xx = 5}"])


@pytest.mark.parametrize("name", ["continual", "stationary"])
def test_paper_configs_write_every_value_that_shapes_results(name):
    import tomllib

    raw = tomllib.loads((ROOT / "configs" / "paper" / f"{name}.toml").read_text())
    shaping = {
        "model": {"seq_len", "vocab_size", "init_std", "gelu"},
        "data": {"train_tokens", "val_tokens", "train_tokens_per_language", "val_fraction", "split_seed", "tokenizer",
                 "eot_token", "tasks"},
        "stream": {"kind", "languages", "tokens_per_task", "cycles", "seed", "allow_reuse"},
        "optim": {"lr", "lr_anchor_params", "lr_anchor_values", "beta1", "beta2", "eps", "weight_decay",
                  "decay_embeddings", "warmup_frac", "schedule", "grad_clip", "reset_at_task_start",
                  "rewarm_at_task_start"},
        "train": {"batch_size", "dtype"},
        "eval": {"every_tasks", "sequences"},
        "probe": {"language", "steps", "eval_every", "sequences", "train_offset_tokens", "at_cycle_end",
                  "after_languages", "every_tokens", "scratch_baseline"},
        "sweep": {"presets", "seeds", "stationary", "stationary_presets", "stationary_probe_every_tokens"},
    }
    missing = {section: sorted(keys - set(raw.get(section, {}))) for section, keys in shaping.items()}
    assert {k: v for k, v in missing.items() if v} == {}
    text = (ROOT / "configs" / "paper" / f"{name}.toml").read_text()
    for key in ("grad_clip", "decay_embeddings", "train_offset_tokens", "eps", "init_std", "dtype"):
        line = next(x for x in text.splitlines() if x.startswith(f"{key} "))
        assert "(not stated)" in line, line  # a choice the paper does not state says so
