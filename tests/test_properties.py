"""Property-based tests (hypothesis) of everything that parses user input: the config loader, the
`--set` parser, the CSV readers and the probes.jsonl reader. Any input gives a valid result or a
clean ``PlasticError``, never another exception (which the CLI would show as a traceback)."""

import datetime as dt
import math
import string

import numpy as np
import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plasticlm.analysis import load_probes
from plasticlm.config import Config, describe, load_config
from plasticlm.errors import PlasticError
from plasticlm.files import read_csv_columns
from plasticlm.onset import read_scores_csv
from plasticlm.runlog import read_jsonl
from plasticlm.scaling import read_onsets_csv

# Deterministic (CI must not flake on a new example) and without an example database in the tree.
# No subnormal floats: training sets torch.set_flush_denormal(True), process-wide, and hypothesis
# refuses to generate them in such a process.
FLOATS = st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False)
PROPS = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

KEYS = [row[0] for row in describe()]
SECTIONS = sorted({k.split(".")[0] for k in KEYS})
WORDS = ["25K", "3K", "99K", "en", "vi", "xx", "synthetic", "local", "hf", "debian-docs", "cpu", "cuda", "gpu",
         "bpe", "bytes", "~", "~nobody/x", "/nonexistent", "", "continual", "permuted", "stationary", "\x00"]

scalars = st.one_of(
    st.integers(min_value=-10**20, max_value=10**20), FLOATS,
    st.booleans(), st.sampled_from(WORDS), st.text(max_size=12),
    st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2100, 1, 1)),
)
values = st.one_of(scalars, st.lists(scalars, max_size=4), st.dictionaries(st.sampled_from(WORDS[:6]), scalars,
                                                                         max_size=2))


@st.composite
def config_dicts(draw):
    """TOML documents close to real configs: real sections and keys, some misspelled, any values."""
    doc: dict = {}
    for _ in range(draw(st.integers(0, 6))):
        key = draw(st.one_of(st.sampled_from(KEYS), st.from_regex(r"[a-z_]{1,8}\.[a-z_]{1,10}", fullmatch=True)))
        section, dot, name = key.partition(".")
        if not dot:  # a top-level key (components, mitigations)
            doc[section] = draw(values)
            continue
        node = doc.setdefault(section, {})
        if isinstance(node, dict):
            node[name] = draw(values)
    if draw(st.booleans()):
        doc[draw(st.sampled_from(SECTIONS))] = draw(scalars)  # a section given as a value
    return doc


def _loads_or_plastic_error(fn):
    try:
        result = fn()
    except PlasticError as e:
        assert str(e)  # a message, always
        return None
    return result


@PROPS
@given(config_dicts())
def test_any_toml_document_gives_a_config_or_a_clean_error(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("cfg") / "c.toml"
    path.write_text(tomli_w.dumps(doc))
    cfg = _loads_or_plastic_error(lambda: load_config(path))
    if cfg is not None:
        assert isinstance(cfg, Config) and cfg.validate() == []
        assert all(math.isfinite(x) for x in [cfg.optim.lr, cfg.optim.eps, cfg.model.init_std])


@PROPS
@given(st.binary(max_size=200) | st.text(alphabet=string.printable + "[]=\"'.#é\x00", max_size=200).map(str.encode))
def test_any_bytes_as_a_config_file_give_a_config_or_a_clean_error(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("cfg") / "c.toml"
    path.write_bytes(raw)
    _loads_or_plastic_error(lambda: load_config(path))


set_values = st.one_of(st.text(max_size=20), st.sampled_from(WORDS), st.integers().map(str),
                       FLOATS.map(repr), st.lists(st.sampled_from(WORDS[:8]), max_size=3).map(
                           lambda xs: "[" + ",".join(xs) + "]"))
set_keys = st.one_of(st.sampled_from(KEYS), st.sampled_from(SECTIONS), st.text(max_size=15),
                     st.sampled_from(KEYS).map(lambda k: k + ".x"))
overrides = st.lists(st.one_of(st.tuples(set_keys, set_values).map("=".join), st.text(max_size=20)), max_size=5)


@PROPS
@given(overrides)
def test_any_set_overrides_give_a_config_or_a_clean_error(sets):
    cfg = _loads_or_plastic_error(lambda: load_config(None, sets))
    if cfg is not None:
        assert cfg.validate() == []


@PROPS
@given(st.sampled_from(["local", "hf", "synthetic", "debian-docs"]),
       st.one_of(st.sampled_from(WORDS), st.text(max_size=12)),
       st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=3)), max_size=3))
def test_any_source_path_and_languages_give_a_config_or_a_clean_error(source, path, langs):
    sets = [f"data.source={source}", f"data.local_dir={path}", f"data.hf_dataset={path}", "probe.after_languages=[]",
            "stream.languages=[" + ",".join(langs) + "]"]
    _loads_or_plastic_error(lambda: load_config(None, sets))


cells = st.one_of(st.integers(-5, 50).map(str), FLOATS.map(repr),
                  st.sampled_from(["", "nan", "null", "27M", "1.8T", "1e999", "-0", "abc", "9" * 400, " 3 ", '"']),
                  st.text(max_size=6))


@st.composite
def csv_files(draw):
    header = draw(st.lists(st.sampled_from(["task_index", "score", "params", "onset", "name", "seed", "x", ""]),
                           min_size=0, max_size=5))
    rows = draw(st.lists(st.lists(cells, min_size=0, max_size=len(header) + 1), max_size=8))
    sep = draw(st.sampled_from([",", ";"]))
    text = "\n".join(sep.join(r) for r in [header, *rows])
    return text.encode() if draw(st.booleans()) else text.encode() + draw(st.binary(max_size=8))


@PROPS
@given(csv_files())
def test_any_csv_gives_columns_or_a_clean_error(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("csv") / "in.csv"
    path.write_bytes(raw)
    cols = _loads_or_plastic_error(lambda: read_csv_columns(path, ["task_index", "score"]))
    if cols is not None:
        assert np.all(np.isfinite(cols["task_index"])) and len(cols["score"]) == len(cols["_line"]) > 0
    xy = _loads_or_plastic_error(lambda: read_scores_csv(path))
    if xy is not None:
        assert np.all(np.diff(xy[0]) > 0)  # sorted, no duplicates
    fit_in = _loads_or_plastic_error(lambda: read_onsets_csv(path))
    if fit_in is not None:
        params, onsets, skipped, _censored = fit_in
        assert params.size == onsets.size and np.all(np.isfinite(onsets))


@PROPS
@given(st.binary(max_size=300))
def test_any_bytes_as_csv_give_a_clean_error_or_columns(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("csv") / "in.csv"
    path.write_bytes(raw)
    _loads_or_plastic_error(lambda: read_scores_csv(path))
    _loads_or_plastic_error(lambda: read_onsets_csv(path))


json_values = st.recursive(st.none() | st.booleans() | st.integers(-3, 30) | FLOATS | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                      max_size=3), max_leaves=6)
probe_rows = st.fixed_dictionaries({}, optional={"task_index": json_values | st.integers(1, 9),
                                                 "tokens_seen": json_values | st.integers(0, 10**6),
                                                 "auc": json_values | st.floats(0.1, 9), "diverged": json_values})


@PROPS
@given(st.lists(probe_rows | json_values, max_size=8), st.binary(max_size=20))
def test_any_probes_jsonl_gives_rows_or_a_clean_error(tmp_path_factory, rows, tail):
    import json

    run = tmp_path_factory.mktemp("run")
    (run / "probes.jsonl").write_bytes("".join(json.dumps(r) + "\n" for r in rows).encode() + tail)
    loaded = _loads_or_plastic_error(lambda: load_probes(run))
    if loaded:
        assert [r["task_index"] for r in loaded] == sorted({r["task_index"] for r in loaded})
    _loads_or_plastic_error(lambda: read_jsonl(run / "probes.jsonl", strict=True))


@pytest.mark.parametrize("text", ["optim.lr=1e-3", "stream.languages=[en,fr]", "sweep.seeds=[0, 1]"])
def test_the_properties_are_not_vacuous(text):
    """Valid inputs do load (the properties above would also pass if everything were refused)."""
    assert isinstance(load_config(None, [text, "probe.after_languages=[]"]), Config)
