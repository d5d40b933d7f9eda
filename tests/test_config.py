import json
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
                             "stream.weights=[1, 2]", "data.hf_configs={en = 'en'}", "train.seed=7",
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
