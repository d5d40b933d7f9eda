"""`plasticlm corpus build|info`: build the per-language corpora (and optionally tokens), list them.

JSON output (``--json``) of both commands is one object::

    {"source": "debian-docs", "home": "...", "seconds": 41.2,            # seconds: build only
     "languages": [{"lang": "en", "source": "debian-docs", "built": true, "documents": 2101,
                    "bytes": 3412345, "sha256": "...", "path": ".../docs.jsonl", "provenance": {...},
                    # with build --tokens:
                    "train_tokens": ..., "val_tokens": ..., "bytes_per_token": ...}, ...],
     "tokenizer": {...}}                                                  # with build --tokens
"""

from __future__ import annotations

import time

from plasticlm.cli._common import add_json, add_set, load_config, print_json, print_table
from plasticlm.data.corpus import build_corpus, corpus_info
from plasticlm.data.paths import home_dir
from plasticlm.data.sources import SOURCE_NAMES, make_source

COLUMNS = ["lang", "source", "documents", "bytes", "sha256"]
TOKEN_COLUMNS = ["train_tokens", "val_tokens", "bytes_per_token"]


def _config(args):
    from plasticlm.data.prepare import default_languages

    overrides = list(args.overrides)
    if args.source:
        overrides.append(f"data.source={args.source}")
    cfg = load_config(args.config, overrides)
    langs = [x.strip() for x in args.langs.split(",") if x.strip()] if args.langs else default_languages(cfg)
    return cfg, langs


def _show(args, doc: dict, columns: list[str]) -> None:
    if args.json:
        print_json(doc)
        return
    rows = [{**r, "sha256": (r["sha256"][:16] if r["built"] else "(not built)")} for r in doc["languages"]]
    print_table(rows, columns)
    where = f"source {doc['source']}, cache {doc['home']}"
    print(f"{where}" + (f", {doc['seconds']:.1f} s" if "seconds" in doc else ""))


def run_build(args) -> int:
    from plasticlm.data.prepare import prepare_data

    cfg, langs = _config(args)
    t0 = time.perf_counter()
    progress = not args.quiet
    direct = make_source(cfg.data).direct
    if not (args.tokens and direct):  # a direct source's shards are built from its files: no text copy
        build_corpus(cfg.data, langs, force=args.force, progress=progress)
    doc = {"source": cfg.data.source, "home": str(home_dir(cfg.data.home)),
           "languages": [] if args.tokens and direct else corpus_info(cfg.data, langs)}
    columns = COLUMNS
    if args.tokens:
        prepared = prepare_data(cfg, langs, progress=progress)
        if direct:
            doc["languages"] = [{"lang": lang, "source": e["source"], "built": True, "documents": e["documents"],
                                 "bytes": e["bytes"], "sha256": e["train"]["sha256"]}
                                for lang, e in prepared.manifest["languages"].items()]
        for row in doc["languages"]:
            entry = prepared.manifest["languages"][row["lang"]]
            row.update(train_tokens=entry["train"]["count"], val_tokens=entry["val"]["count"],
                       bytes_per_token=round(entry["bytes_per_token"], 4))
        doc["tokenizer"] = prepared.manifest["tokenizer"]
        columns = COLUMNS + TOKEN_COLUMNS
    doc["seconds"] = round(time.perf_counter() - t0, 2)
    _show(args, doc, columns)
    return 0


def run_info(args) -> int:
    cfg, langs = _config(args)
    doc = {"source": cfg.data.source, "home": str(home_dir(cfg.data.home)), "languages": corpus_info(cfg.data, langs)}
    _show(args, doc, COLUMNS)
    return 0


def _common(p) -> None:
    p.add_argument("config", nargs="?", default=None, help="a TOML config (default: the built-in defaults)")
    p.add_argument("--source", choices=SOURCE_NAMES, help="corpus source (overrides data.source)")
    p.add_argument("--langs", help="comma-separated languages (default: stream.languages + probe.language)")
    add_set(p)
    add_json(p)


def register(sub) -> None:
    p = sub.add_parser("corpus", help="build or list the per-language text corpora")
    cs = p.add_subparsers(dest="corpus_command", metavar="ACTION", required=True)
    b = cs.add_parser("build", help="build the missing corpora (debian-docs: downloads ~9 .deb files with apt)")
    _common(b)
    b.add_argument("--force", action="store_true", help="rebuild even when cached")
    b.add_argument("--tokens", action="store_true", help="also train the tokenizer and write the token shards")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.set_defaults(func=run_build)
    i = cs.add_parser("info", help="per language: source, documents, bytes, sha256 of the built corpus")
    _common(i)
    i.set_defaults(func=run_info)

