"""Checks of a whole configuration that need more than its own fields: the size presets, what the
corpus source can serve, numbers that must be finite or positive for the loop to run.

``Config.validate`` (config.py) holds the checks between a config's own fields; this module holds
the rest of what can be known without reading any data, so that ``plasticlm config validate``
refuses everything ``train``, ``plan`` and ``study`` would refuse later. ``config.from_dict`` calls
``config_problems`` after ``Config.validate``; every problem names the key and the fix. Also here:
the checks that a directory given to ``probe``, ``onset``, ``resume`` or ``report`` is what the
command needs.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from plasticlm.data.sources import make_source
from plasticlm.errors import DataError, PlasticError
from plasticlm.presets import preset_names

# (key, minimum, strict): ``strict`` means the value must be > minimum, else >= minimum.
_BOUNDS: list[tuple[str, float, bool]] = [
    ("model.aspect", 0, True),
    ("model.head_dim", 0, True),
    ("model.init_std", 0, True),
    ("model.depth", 0, False),
    ("model.n_layer", 0, False),
    ("model.d_model", 0, False),
    ("model.n_head", 0, False),
    ("model.vocab_size", 0, False),
    ("data.tokenizer_sample_bytes", 0, True),
    ("data.workers", 0, False),
    ("train.log_every", 0, True),
    ("train.threads", 0, False),
    ("train.checkpoint_every_tasks", 0, False),
    ("train.keep_last", 0, False),
    ("eval.every_tasks", 0, False),
    ("probe.bootstrap", 0, False),
    ("sweep.parallel", 0, True),
]


def _get(cfg: Any, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def _non_finite(cfg: Any) -> list[str]:
    """TOML reads ``nan`` and ``inf`` as floats: no float setting of this project may be either."""
    out = []
    for sec in dataclasses.fields(cfg):
        if not dataclasses.is_dataclass(getattr(cfg, sec.name)):  # [components.*]: checked by each component
            continue
        for f in dataclasses.fields(getattr(cfg, sec.name)):
            v = getattr(getattr(cfg, sec.name), f.name)
            vals = v if isinstance(v, list) else [v]
            if any(isinstance(x, float) and not math.isfinite(x) for x in vals):
                out.append(f"{sec.name}.{f.name} = {v!r}: must be a finite number")
    return out


def _bounds(cfg: Any) -> list[str]:
    out = []
    for key, low, strict in _BOUNDS:
        v = _get(cfg, key)
        if (v <= low) if strict else (v < low):
            out.append(f"{key} = {v}: must be {'>' if strict else '>='} {low:g}")
    return out


def preset_problem(name: str, key: str) -> str | None:
    """A message for an unknown size preset (with a "did you mean"), or None when it is known."""
    names = preset_names()
    if name in names:
        return None
    lower = {n.lower(): n for n in names}
    close = difflib.get_close_matches(name.lower(), list(lower), n=1)
    hint = f" (did you mean {lower[close[0]]!r}?)" if close else ""
    return f"{key} = {name!r}: unknown preset{hint}; known presets: {', '.join(names)} (`plasticlm presets`)"


def _model(cfg: Any) -> list[str]:
    out = []
    m = cfg.model
    if m.depth == 0 and m.preset:
        out.append(preset_problem(m.preset, "model.preset"))
    out += [preset_problem(name, f"sweep.presets[{i}]") for i, name in enumerate(cfg.sweep.presets)]
    if cfg.data.tokenizer == "bpe" and cfg.data.vocab_size < 257:
        out.append(f"data.vocab_size = {cfg.data.vocab_size}: a byte-level BPE needs >= 257 (256 bytes + the "
                   "end-of-document token)")
    tok_vocab = {"bpe": cfg.data.vocab_size, "bytes": 257}.get(cfg.data.tokenizer)
    if m.vocab_size and tok_vocab and m.vocab_size < tok_vocab:
        out.append(f"model.vocab_size = {m.vocab_size} is smaller than the tokenizer's {tok_vocab} ids "
                   f"(data.tokenizer = {cfg.data.tokenizer!r}): set model.vocab_size = 0 to take it from the tokenizer")
    return [p for p in out if p]


def _languages(cfg: Any) -> list[str]:
    """Every language the run reads must be one the corpus source can serve."""
    try:
        return make_source(cfg.data).language_problems(cfg.data_languages())
    except DataError as e:
        return [f"data.source = {cfg.data.source!r}: {e}"]
    except (ValueError, RuntimeError, OSError) as e:  # a path with a NUL byte, ~user that does not exist
        return [f"data.source = {cfg.data.source!r}: data.local_dir = {cfg.data.local_dir!r} is not a usable path "
                f"({e})"]


def config_problems(cfg: Any) -> list[str]:
    """Problems of a ``Config`` that its own fields cannot show (empty when it can run)."""
    problems = _non_finite(cfg) + _bounds(cfg)
    if problems:
        return problems
    problems = _model(cfg) + _languages(cfg)
    for check in _CHECKS:
        problems += check(cfg)
    return problems


_CHECKS: list[Callable[[Any], list[str]]] = []


def add_config_check(check: Callable[[Any], list[str]]) -> None:
    """Register a whole-config check of a layer above the config (e.g. the component registry: which
    component names exist is known only once their modules are imported). Runs after the checks here."""
    if check not in _CHECKS:
        _CHECKS.append(check)


# ---------------------------------------------------------------------------- directories


def require_dir(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise PlasticError(f"{p}: no such directory; give {what}")
    if not p.is_dir():
        raise PlasticError(f"{p} is a file, not a directory; give {what}")
    return p


def require_run_dir(path: str | Path) -> Path:
    """``path`` must be a run directory written by `plasticlm train` (it has config.toml)."""
    p = require_dir(path, "a run directory written by `plasticlm train`")
    if not (p / "config.toml").is_file():
        hint = f" (it looks like a study directory: give one of {p / 'runs'}/*)" if (p / "runs").is_dir() else ""
        raise PlasticError(f"{p} is not a run directory (no config.toml){hint}; start a run with `plasticlm train`")
    return p
