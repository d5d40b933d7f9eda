"""Error types a user can act on. The CLI turns these into a message and exit status 2."""

from __future__ import annotations


class PlasticError(ValueError):
    """Bad input from the user: the message names the problem and the fix."""


class ConfigError(PlasticError):
    """One or more configuration problems, all listed at once."""

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s):\n{lines}")


class DataError(PlasticError):
    """Missing, empty or malformed corpus data."""


class DataWarning(UserWarning):
    """Data that was usable but suspicious (e.g. invalid UTF-8 replaced); the message names file and language."""


class NonFiniteLoss(RuntimeError):
    """The loss or gradient norm became NaN/inf; the run stops and keeps its last good checkpoint."""
