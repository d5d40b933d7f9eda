"""The ``plasticlm`` command line. Thin: each sub-module parses its arguments and calls library code.

Every subcommand that has a result accepts ``--json`` and then prints exactly one JSON document on
stdout. User errors (``PlasticError``) print a message naming the problem and the fix on stderr and
exit with status 2.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from plasticlm.errors import NonFiniteLoss, PlasticError

EXIT_NON_FINITE = 3
"""Exit status of a run stopped by a non-finite loss (its last good checkpoint is kept)."""

# Each module defines ``register(subparsers)``; order is the order of `plasticlm --help`.
COMMAND_MODULES = (
    "plasticlm.cli.presets",
    "plasticlm.cli.config_cmd",
    "plasticlm.cli.corpus",
    "plasticlm.cli.train_cmd",
    "plasticlm.cli.probe_cmd",
    "plasticlm.cli.diagnose_cmd",
    "plasticlm.cli.onset_cmd",
    "plasticlm.cli.fit_cmd",
    "plasticlm.cli.plan_cmd",
    "plasticlm.cli.study_cmd",
    "plasticlm.cli.report_cmd",
    "plasticlm.cli.export_cmd",
    "plasticlm.cli.components_cmd",
    "plasticlm.cli.mitigations_cmd",
    "plasticlm.cli.compare_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plasticlm",
        description=(
            "Measure, predict and fight loss of plasticity in GPT-style language models: an open "
            "implementation of arXiv:2606.24752 (corpus -> tokens -> language stream -> training -> "
            "plasticity probes -> onsets -> scaling-law fits -> report)."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except PlasticError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLoss as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_NON_FINITE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `plasticlm ... --json | head`: the reader left; not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's final flush does not fail again
        return 141  # 128 + SIGPIPE, as a shell reports a command killed by a closed pipe
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" writing {e.filename}" if e.filename else ""
        print(f"error: no space left on device{where}. Files are written atomically, so what was complete "
              "before is intact: free space, then run the command again (`plasticlm resume RUN_DIR` continues a "
              "run from its last complete checkpoint)", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
