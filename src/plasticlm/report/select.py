"""Which runs and numbers each part of the report shows: selection over what ``load`` read, no prose.

The runs of the scaling fit follow ``runspec.in_scaling_fit`` and its onsets ``records.fit_points``,
the rules the sweep used to write fit.json; the fit itself is fit.json's (``ReportInput.fit``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from plasticlm.records import fit_points as fit_records
from plasticlm.report.load import ReportInput, RunData
from plasticlm.runspec import in_scaling_fit

Bound = tuple[float, float]


def fit_runs(inp: ReportInput) -> list[RunData]:
    """The runs whose onsets the scaling law uses: those on the study's own stream without a mitigation
    (``in_scaling_fit``)."""
    if inp.config is None:
        return list(inp.runs)
    return [r for r in inp.runs if in_scaling_fit(r.stream, inp.config, r.method)]


def by_size(runs: Sequence[RunData]) -> list[tuple[str, list[RunData]]]:
    """Runs grouped by preset, in increasing size."""
    groups: dict[str, list[RunData]] = defaultdict(list)
    for r in runs:
        groups[r.preset or r.name].append(r)
    return sorted(groups.items(), key=lambda kv: (kv[1][0].params or 0, kv[0]))


def fit_points(inp: ReportInput) -> tuple[list[float], list[float]]:
    """(non-embedding params, onset) of the scaling law: fit.json's points, or without a fit the onsets
    ``records.fit_points`` would give it."""
    if inp.fit is not None:
        return [float(p) for p in inp.fit.params], [float(t) for t in inp.fit.onsets]
    if inp.config is None:
        return [], []
    pts = fit_records(inp.onsets, inp.config)
    return [float(r.non_embedding_params) for r in pts], [float(r.onset_task_index) for r in pts]


def stale_fit(inp: ReportInput) -> tuple[int, int] | None:
    """(onsets in fit.json, onsets the fit's rule takes from onsets.csv) when they differ, else None:
    fit.json was written before onsets.csv last changed."""
    if inp.fit is None or inp.config is None or not inp.onsets:
        return None
    now = sorted((float(r.non_embedding_params), float(r.onset_task_index))
                 for r in fit_records(inp.onsets, inp.config))
    fitted = sorted(zip(inp.fit.params.tolist(), inp.fit.onsets.tolist()))
    return None if now == fitted else (len(fitted), len(now))


def onset_bounds(inp: ReportInput) -> tuple[list[tuple[float, float, Bound | None]], list[Bound], list[Bound]]:
    """What the fit's runs say about onset vs size without a fit: (params, onset, CI) of the onsets,
    (params, lower bound) of runs still improving at their last probe, (params, onset) of left-censored
    onsets (at or before the first smoothed probe)."""
    found, later, earlier = [], [], []
    for r in fit_runs(inp):
        o = r.onset
        if not r.params or o is None or not r.probes:
            continue
        if o.censored == "left":
            earlier.append((float(r.params), float(o.onset_task_index)))
        elif o.onset_task_index is not None:
            ci = None if o.seq_ci95 is None else (float(o.seq_ci95[0]), float(o.seq_ci95[1]))
            found.append((float(r.params), float(o.onset_task_index), ci))
        elif o.code == "still_improving":
            last = max(p["task_index"] for p in r.probes)
            later.append((float(r.params), float(o.lower_bound_task_index or last)))
    return found, later, earlier


def stationary_pairs(inp: ReportInput) -> list[tuple[RunData, RunData]]:
    """(continual, stationary) runs of the same size and seed, both probed."""
    cont = {(r.preset, r.seed): r for r in inp.runs if r.stream == "continual" and r.probes}
    return [(cont[(s.preset, s.seed)], s) for s in inp.runs
            if s.stream == "stationary" and s.probes and (s.preset, s.seed) in cont]


def bpb_curves(run: RunData) -> dict[str, tuple[list[float], list[float]]]:
    """Validation bits per byte per language over training tokens (metrics.jsonl's val/<lang>/bpb), in
    the run's language order, then the others."""
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for row in run.metrics:
        for key, value in row.items():
            if key.startswith("val/") and key.endswith("/bpb") and value is not None:
                x, y = curves.setdefault(key[4:-4], ([], []))
                x.append(row["tokens"])
                y.append(value)
    order = list(run.config.stream.languages) if run.config else []
    return dict(sorted(curves.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0])))


def cycle_boundaries(run: RunData) -> list[float]:
    """Token counts at the evaluations after each cycle's last task."""
    tpc = run.tasks_per_cycle
    return sorted({row["tokens"] for row in run.metrics if tpc and row.get("task_index", -1) >= 0
                   and (row["task_index"] + 1) % tpc == 0 and any(k.startswith("val/") for k in row)})


def report_order(r: RunData) -> tuple[bool, int, int]:
    """Table order of runs: continual first, then by size and seed."""
    return r.stream != "continual", r.params or 0, r.seed or 0
