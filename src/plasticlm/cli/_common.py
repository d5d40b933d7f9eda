"""Shared CLI pieces: --set and --json arguments, loading a user's config, JSON printing, tables."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from plasticlm.config import Config
from plasticlm.config import load_config as load_config_file


def load_config(path: str | None, overrides: list[str] | None = None) -> Config:
    """``config.load_config`` with every whole-config check in place: the component and mitigation
    registries add theirs (``validate.add_config_check``) when imported, and the commands import library
    code only when they run, so a command that trains nothing would otherwise skip those checks."""
    import plasticlm.components  # noqa: F401 - registers the component and mitigation checks

    return load_config_file(path, overrides)


def add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set model.preset=85K --set stream.cycles=4 (repeatable)",
    )


def add_launcher(p: argparse.ArgumentParser) -> None:
    """``--launcher local|slurm`` of the commands that train a study's runs (sweep, study, compare)."""
    p.add_argument("--launcher", choices=["local", "slurm"], default="local",
                   help="local: this machine (a process pool of --parallel runs); slurm: job arrays per preset "
                   "through submitit (resources from the plan, config section [slurm]), post-hoc probes after "
                   "their runs, failed jobs resubmitted")


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{value} must be >= {low}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse then exits 2 naming the argument)."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0)


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))
