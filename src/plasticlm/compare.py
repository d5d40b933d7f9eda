"""Mitigations compared at matched compute: ``plasticlm compare CONFIG``.

A comparison is a study with a method axis (``sweep.methods``: "baseline" and mitigations, each with
the settings of its ``[mitigations.<method>]`` table; ``runspec.expand``). The sweep trains and
probes every preset x seed x method (resumable, ``--parallel``); every run of a preset reads the same
training tokens and gets the same probes (the probe recipe is the study's for every method), and
each method's extra FLOPs per optimizer step (``Mitigation.extra_flops_per_step``, recorded in the
run's run.json) are reported beside the training FLOPs. Per preset and method, over seeds:

- the onset of the seed-averaged dAUC curve with its 95% CI from a bootstrap over runs
  (``analysis.onset_of_seeds``, sizes.csv) and the seeds' own onsets (onsets.csv);
- dAUC at the last probe, and the area under the dAUC curve (trapezoids over task instances; dAUC
  points x task instances: lower = more plasticity kept), means over seeds;
- the final validation bits per byte of each training language (a method that keeps plasticity by
  wrecking the model shows it here) and the mean forgetting of the training languages
  (``forgetting.forgetting_from_run``: final bpb - best bpb), means over seeds;
- wall time (mean over seeds) and its overhead against the baseline (runs trained in parallel share
  the CPU: a rough figure);
- Welch's t-test (unequal variances) of the method against the baseline over seeds, on the seeds'
  onsets (runs without an onset left out) and on the area under the dAUC curve; p-values are
  two-sided, None with fewer than two runs on a side or no variance at all.

The table is ``compare.csv`` in the study directory (``CompareRecord``, written atomically and read
back into equal records by ``read_compare``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plasticlm.analysis import load_probes
from plasticlm.config import BASELINE_METHOD, Config
from plasticlm.errors import ConfigError, PlasticError
from plasticlm.forgetting import forgetting_from_run
from plasticlm.model import build_gpt_config, flops_per_token
from plasticlm.records import OnsetRecord, SizeRecord, _cell, _number, _parse, _read_csv, _write_csv
from plasticlm.runlog import read_json, read_jsonl
from plasticlm.runspec import RunSpec, expand
from plasticlm.sweep import _vocab_size as vocab_size
from plasticlm.sweep import run_status, run_sweep

Number = int | float


@dataclass(frozen=True)
class CompareRecord:
    """One preset and method over its seeds: a row of compare.csv (module docstring)."""

    preset: str
    method: str
    n_seeds: int
    """Finished runs used."""
    onset_task_index: Number | None
    """The onset of the seed-averaged dAUC curve (sizes.csv), also when left-censored."""
    onset_code: str | None
    onset_ci95_low: Number | None
    onset_ci95_high: Number | None
    """95% bootstrap interval over runs (seeds)."""
    onset_mean: float | None
    """Mean of the seeds' own onsets (those that have one)."""
    seed_onsets: tuple[Number | None, ...]
    dauc_last: float | None
    auc_dauc: float | None
    final_bpb: tuple[tuple[str, float | None], ...]
    """(language, final validation bpb) of each training language, in stream order."""
    mean_forgetting: float | None
    tokens: int | None
    """Training tokens per run (equal for every run of a comparison)."""
    probe_tokens: int | None
    """Probe tokens per run (the probe budget; equal for every run of a preset)."""
    extra_flops_per_step: float | None
    extra_flops_fraction: float | None
    """Extra FLOPs per step / training FLOPs per step (6 N per token, model.flops_per_token)."""
    wall_time_s: float | None
    wall_overhead: float | None
    """wall_time_s / the baseline's - 1."""
    p_onset: float | None
    p_auc_dauc: float | None
    """Welch t-test against the baseline over seeds (two-sided)."""


COMPARE_COLUMNS = [f.name for f in dataclasses.fields(CompareRecord)]
_TEXT = ("preset", "method", "onset_code", "seed_onsets", "final_bpb")


def _bpb_cell(pairs: tuple[tuple[str, float | None], ...]) -> str:
    return ";".join(f"{lang}={_cell(v)}" for lang, v in pairs)


def _bpb_parse(text: str) -> tuple[tuple[str, float | None], ...]:
    if not text:
        return ()
    out = []
    for item in text.split(";"):
        lang, sep, value = item.partition("=")
        if not sep or not lang:
            raise ValueError(f"{item!r} is not language=value")
        out.append((lang, _number(value)))
    return tuple(out)


def write_compare(records: list[CompareRecord], path: Path) -> None:
    rows = []
    for r in records:
        d = dataclasses.asdict(r)
        d["seed_onsets"] = ";".join(_cell(x) for x in r.seed_onsets)
        d["final_bpb"] = _bpb_cell(r.final_bpb)
        rows.append([d[c] for c in COMPARE_COLUMNS])
    _write_csv(path, COMPARE_COLUMNS, rows)


def read_compare(path: Path) -> list[CompareRecord]:
    """compare.csv back into the records it was written from."""
    out = []
    for line, row in _read_csv(path, COMPARE_COLUMNS):
        nums = {k: _parse(path, line, k, _number, row[k]) for k in COMPARE_COLUMNS if k not in _TEXT}
        seeds = () if row["seed_onsets"] == "" and nums["n_seeds"] == 0 else \
            _parse(path, line, "seed_onsets", lambda t: tuple(_number(x) for x in t.split(";")), row["seed_onsets"])
        out.append(CompareRecord(preset=row["preset"], method=row["method"], onset_code=row["onset_code"] or None,
                                 seed_onsets=seeds, final_bpb=_parse(path, line, "final_bpb", _bpb_parse,
                                                                     row["final_bpb"]), **nums))
    return out


# --------------------------------------------------------------------------------------------
# Per run, per method
# --------------------------------------------------------------------------------------------


def run_stats(run_dir: Path, cfg: Config, vocab_size: int) -> dict[str, Any] | None:
    """What a comparison reads of one finished run (None when it is not finished)."""
    if run_status(run_dir) != "done":
        return None
    info = read_json(run_dir / "run.json")
    rows = load_probes(run_dir)
    x = np.array([r["task_index"] for r in rows], dtype=np.float64)
    y = np.array([r["dauc"] for r in rows], dtype=np.float64)
    last_val: dict[str, Any] = {}
    for row in reversed(read_jsonl(run_dir / "metrics.jsonl")):
        if any(k.startswith("val/") for k in row):
            last_val = row
            break
    forgetting = forgetting_from_run(run_dir)
    gpt = build_gpt_config(cfg.model, vocab_size)
    tokens_per_step = cfg.train.batch_size * cfg.model.seq_len
    extra = sum(m["extra_flops_per_step"] for m in (info.get("mitigations") or {}).values())
    return {
        "dauc_last": float(y[-1]) if y.size else None,
        "auc_dauc": float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2)) if y.size > 1 else None,
        "final_bpb": {lang: last_val.get(f"val/{lang}/bpb") for lang in cfg.stream.languages},
        "mean_forgetting": forgetting.get("mean_forgetting") if isinstance(forgetting, dict) else None,
        "tokens": info.get("tokens"),
        "probe_tokens": int(sum(r.get("probe_tokens") or 0 for r in rows)),
        "extra_flops_per_step": float(extra),
        "extra_flops_fraction": float(extra) / (flops_per_token(gpt) * tokens_per_step),
        "wall_time_s": info.get("wall_time_s"),
    }


def _mean(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def welch_p(a: list[Any], b: list[Any]) -> float | None:
    """Two-sided p-value of Welch's t-test between two samples (None values left out); None with
    fewer than two values on a side or no variance in either."""
    a2 = [float(v) for v in a if v is not None]
    b2 = [float(v) for v in b if v is not None]
    if len(a2) < 2 or len(b2) < 2:
        return None
    if np.var(a2) == 0 and np.var(b2) == 0:
        return None if a2[0] != b2[0] else 1.0
    from scipy.stats import ttest_ind  # heavy (1.5 s), and only this test needs it

    p = float(ttest_ind(a2, b2, equal_var=False).pvalue)
    return None if math.isnan(p) else p


def compare_records(cfg: Config, specs: list[RunSpec], study_dir: Path, onsets: list[OnsetRecord],
                    sizes: list[SizeRecord], vocab_size: int) -> list[CompareRecord]:
    """One ``CompareRecord`` per preset and method of the study's own stream, in expansion order."""
    kind = cfg.stream.kind
    by_name = {r.name: r for r in onsets}
    size_of = {(z.preset, z.method): z for z in sizes if z.stream == kind}
    groups: dict[tuple[str, str], list[RunSpec]] = {}
    for s in specs:
        if s.stream == kind and s.method is not None:
            groups.setdefault((s.preset, s.method), []).append(s)
    per_run = {s.name: run_stats(s.run_dir(study_dir), s.cfg, vocab_size) for ss in groups.values() for s in ss}

    def runs(preset: str, method: str) -> list[tuple[RunSpec, dict[str, Any]]]:
        return [(s, per_run[s.name]) for s in groups.get((preset, method), []) if per_run[s.name] is not None]

    out = []
    for (preset, method), _ in groups.items():
        done, base = runs(preset, method), runs(preset, BASELINE_METHOD)

        def col(key: str, group: list[tuple[RunSpec, dict[str, Any]]] = done) -> list[Any]:
            return [st[key] for _, st in group]

        z = size_of.get((preset, method))
        seed_onsets = tuple(by_name[s.name].onset_task_index for s, _ in done if s.name in by_name)
        base_onsets = [by_name[s.name].onset_task_index for s, _ in base if s.name in by_name]
        wall, base_wall = _mean(col("wall_time_s")), _mean(col("wall_time_s", base))
        test = method != BASELINE_METHOD
        out.append(CompareRecord(
            preset=preset, method=method, n_seeds=len(done),
            onset_task_index=z.onset_task_index if z else None, onset_code=z.code if z else None,
            onset_ci95_low=z.runs_ci95_low if z else None, onset_ci95_high=z.runs_ci95_high if z else None,
            onset_mean=_mean(list(seed_onsets)), seed_onsets=seed_onsets,
            dauc_last=_mean(col("dauc_last")), auc_dauc=_mean(col("auc_dauc")),
            final_bpb=tuple((lang, _mean([b[lang] for b in col("final_bpb")])) for lang in cfg.stream.languages),
            mean_forgetting=_mean(col("mean_forgetting")),
            tokens=_single(col("tokens")), probe_tokens=_single(col("probe_tokens")),
            extra_flops_per_step=_mean(col("extra_flops_per_step")),
            extra_flops_fraction=_mean(col("extra_flops_fraction")),
            wall_time_s=wall, wall_overhead=None if wall is None or not base_wall else wall / base_wall - 1.0,
            p_onset=welch_p(list(seed_onsets), base_onsets) if test else None,
            p_auc_dauc=welch_p(col("auc_dauc"), col("auc_dauc", base)) if test else None,
        ))
    return out


def _single(values: list[Any]) -> Any:
    """The one value every run has (None when none has one); an error when runs differ: a comparison
    at matched compute needs the same tokens and probe budget in every run."""
    vals = sorted({v for v in values if v is not None})
    if len(vals) > 1:
        raise PlasticError(f"runs of one method differ in training or probe tokens ({vals}); a comparison needs "
                           "matched compute: train them with the same study config")
    return vals[0] if vals else None


def matched_compute(records: list[CompareRecord]) -> dict[str, Any]:
    """Whether every method of each preset read the same training tokens and probe tokens."""
    out: dict[str, Any] = {}
    for preset in dict.fromkeys(r.preset for r in records):
        rs = [r for r in records if r.preset == preset and r.n_seeds]
        tokens, probes = {r.tokens for r in rs}, {r.probe_tokens for r in rs}
        out[preset] = {"tokens": sorted(tokens), "probe_tokens": sorted(probes),
                       "matched": len(tokens) <= 1 and len(probes) <= 1}
    return out


def check_comparison(cfg: Config) -> None:
    """A comparison needs a method axis with the baseline in it."""
    methods = cfg.sweep.methods
    if not methods:
        raise ConfigError(["sweep.methods is empty: a comparison needs a method axis, e.g. sweep.methods = "
                           "[\"baseline\", \"cbp\"] with a [mitigations.cbp] table"], "compare")
    if BASELINE_METHOD not in methods:
        raise ConfigError([f"sweep.methods = {methods} has no {BASELINE_METHOD!r}: every method is tested against "
                           "the baseline; add it"], "compare")


def run_compare(cfg: Config, study_dir: str | Path | None = None, *, config_path: str | None = None,
                parallel: int | None = None, quiet: bool = False, data: Any = None,
                launcher: str = "local") -> dict[str, Any]:
    """The study's sweep (trains and probes what is missing; ``launcher`` as in ``run_sweep``), then
    compare.csv; returns the document of `plasticlm compare --json`."""
    check_comparison(cfg)
    summary = run_sweep(cfg, study_dir, config_path=config_path, parallel=parallel, quiet=quiet, data=data,
                        launcher=launcher)
    study_dir = Path(summary["study_dir"])
    specs = expand(cfg)
    onsets = [OnsetRecord(**r) for r in summary["onsets"]]
    sizes = [SizeRecord(**{**z, "seed_onsets": None if z["seed_onsets"] is None else tuple(z["seed_onsets"])})
             for z in summary["sizes"]]
    vocab = data.vocab_size if data is not None else vocab_size(cfg, quiet)
    records = compare_records(cfg, specs, study_dir, onsets, sizes, vocab)
    write_compare(records, study_dir / "compare.csv")
    return {"study_dir": str(study_dir), "compare_csv": str(study_dir / "compare.csv"), "runs": len(specs),
            "methods": list(cfg.sweep.methods), "seeds": list(cfg.sweep.seeds), "test": "welch",
            "matched_compute": matched_compute(records), "rows": [dataclasses.asdict(r) for r in records]}

