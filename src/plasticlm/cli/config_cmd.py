"""`plasticlm config show|validate|keys`."""

from __future__ import annotations

import json
import sys

from plasticlm.cli._common import add_json, add_set, load_config, print_json
from plasticlm.config import describe, dumps_toml, to_dict
from plasticlm.errors import ConfigError


def run_show(args) -> int:
    cfg = load_config(args.file, args.overrides)
    if args.json:
        print_json(to_dict(cfg))
    else:
        sys.stdout.write(dumps_toml(cfg))
    return 0


def run_validate(args) -> int:
    try:
        load_config(args.file, args.overrides)
    except ConfigError as e:
        if args.json:
            print_json({"valid": False, "file": args.file, "problems": e.problems})
        else:
            print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print_json({"valid": True, "file": args.file, "problems": []})
    else:
        print(f"{args.file}: valid")
    return 0


def run_keys(args) -> int:
    rows = describe()
    if args.json:
        print_json([dict(zip(("key", "type", "default", "help"), r)) for r in rows])
        return 0
    for key, tp, default, help_ in rows:
        print(f"{key} ({tp}, default {default})\n    {help_}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("config", help="show, validate or document configuration files")
    cs = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    s = cs.add_parser("show", help="print the resolved config (TOML, or JSON with --json)")
    s.add_argument("file", help="a TOML config, e.g. configs/demo.toml")
    add_set(s)
    add_json(s)
    s.set_defaults(func=run_show)
    v = cs.add_parser("validate", help="exit 0 if the config is valid, else 2 naming each bad key/value")
    v.add_argument("file")
    add_set(v)
    add_json(v)
    v.set_defaults(func=run_validate)
    k = cs.add_parser("keys", help="list every config key with its type, default and meaning")
    add_json(k)
    k.set_defaults(func=run_keys)


__all__ = ["register", "json"]
