"""`plasticlm components`: the registered loop components, their options and the default order."""

from __future__ import annotations

import dataclasses

from plasticlm.cli._common import add_json, print_json
from plasticlm.config import TrainConfig


def describe_components() -> list[dict]:
    from plasticlm.components import registered

    default = TrainConfig().components
    out = []
    order = {n: i for i, n in enumerate(default)}
    for name, entry in sorted(registered().items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])):
        options = [{"key": f.name, "default": f.default if f.default is not dataclasses.MISSING else None,
                    "help": f.metadata.get("help", "")} for f in dataclasses.fields(entry.options or object)] \
            if entry.options else []
        out.append({"name": name, "summary": entry.doc, "default_position": default.index(name) + 1
                    if name in default else None, "options": options})
    return out


def run(args) -> int:
    rows = describe_components()
    if args.json:
        print_json(rows)
        return 0
    print("Loop components fire in the order of train.components (default: "
          f"{', '.join(TrainConfig().components)}); options go in [components.NAME].")
    for r in rows:
        where = f"default #{r['default_position']}" if r["default_position"] else "not in the default list"
        print(f"\n{r['name']} ({where}): {r['summary']}")
        for o in r["options"]:
            print(f"  {o['key']} = {o['default']!r}  {o['help']}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "components", help="list the loop components (evaluation, probes, trackers, ...) and their options",
        description="The component registry (plasticlm.components): every component that can attach to the training "
        "loop, in the default firing order, with its options. A run's components are train.components.",
    )
    add_json(p)
    p.set_defaults(func=run)
