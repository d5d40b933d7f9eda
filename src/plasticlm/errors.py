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


class CheckpointError(PlasticError):
    """A checkpoint that is damaged (its files do not match the checksums in its meta.json) or that
    could not be written (a full disk); the message names the file and what to do."""


class CheckpointWarning(UserWarning):
    """A damaged checkpoint was skipped and an earlier one used instead."""


class DataWarning(UserWarning):
    """Data that was usable but suspicious (e.g. invalid UTF-8 replaced); the message names file and language."""


class NonFiniteLoss(RuntimeError):
    """The loss or gradient norm became NaN/inf; the run stops and keeps its last good checkpoint."""
