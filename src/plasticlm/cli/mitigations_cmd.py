"""`plasticlm mitigations`: the plasticity mitigations, their parameters, no-op settings and sources."""

from __future__ import annotations

from plasticlm.cli._common import add_json, print_json


def _setting(values: dict) -> str:
    return ", ".join(f"{k} = {v!r}" for k, v in values.items())


def run(args) -> int:
    from plasticlm.mitigations import describe_methods

    methods = describe_methods()
    if args.json:
        print_json(methods)
        return 0
    print(f"{len(methods)} methods, in the order their hooks run. Enable one in a run with a [mitigations.NAME] "
          "table or --set mitigations.NAME.KEY=VALUE (the loop component 'mitigations' runs them); compare them with "
          "`plasticlm compare CONFIG` (sweep.methods).")
    for m in methods:
        print(f"\n{m['name']}: {m['summary']}")
        print(f"  source: {m['citation']}")
        print(f"  no-op:  {_setting(m['noop'])} ({m['noop_note']})")
        cells = [(p["key"], repr(p["default"]), p["help"]) for p in m["params"]]
        wk, wd = (max(len(c[i]) for c in cells) for i in (0, 1))
        for key, default, meaning in cells:
            print(f"  {key:<{wk}} = {default:<{wd}}  {meaning}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "mitigations", help="list the plasticity mitigations with parameters, defaults, no-op settings and sources",
        description="The mitigation registry (plasticlm.mitigations): per method its parameters with type, default "
        "and meaning, the setting under which it is an exact no-op, and the paper it implements.",
    )
    add_json(p)
    p.set_defaults(func=run)
