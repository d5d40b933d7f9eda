"""The language stream: continual, stationary or permuted, as a resumable state object.

Continual (arXiv:2606.24752, "multilingual continual learning problem"): the training languages in
a fixed order; task k serves ``tokens_per_task`` fresh tokens of language ``order[k mod n]``; a
cycle is one pass over all languages. Each language's training tokens are read in order and wrap
around when exhausted; how many times each language has wrapped is reported (``epochs``), since
small corpora are reused many times (README, "Data").

Stationary (the paper's control): every sequence of every batch is drawn from the uniform (or
weighted) mixture of the same languages, with the same token budget; "tasks" are then only
equal-sized segments (``task.switch`` False) for evaluation, checkpoints, probes and the optimizer
reset and warm-up restart (``optim.reset_at_task_start``, ``optim.rewarm_at_task_start``), so that
the control differs from the continual run only in the data order.

Permuted: one base language whose token ids are remapped by a fresh random permutation for each
task (the language-model analogue of Permuted MNIST). ``probe_permutation`` is a held-out
permutation for the probe.

Replay (Ibrahim et al. 2024, arXiv 2403.08763): a fraction of each batch's sequences is drawn from
languages seen in earlier tasks.

A batch is ``B`` windows of ``T + 1`` consecutive tokens (inputs ``[:-1]``, targets ``[1:]``);
consecutive windows start ``T`` tokens apart, so a step consumes exactly ``B * T`` fresh tokens.
All state (task, step, per-language cursors and wrap counts, the RNG) is in ``state_dict()``,
JSON-serialisable, so a resumed stream serves exactly the batches an uninterrupted one would.
Under data parallelism every rank steps the same global stream and keeps its own slice of rows.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from plasticlm.config import StreamConfig
from plasticlm.errors import DataError


@dataclass(frozen=True)
class Task:
    """One task instance of the stream."""

    index: int  # global task index, 0-based
    cycle: int  # 0-based cycle
    position: int  # index within the cycle
    lang: str  # language served ("mix" for stationary segments)
    switch: bool  # True where the data distribution changes at its start (continual, permuted)
    is_cycle_end: bool  # the last task of its cycle


def steps_per_task(tokens_per_task: int, batch_size: int, seq_len: int) -> int:
    """Whole optimizer steps a task serves: round(tokens_per_task / (B T)), at least 1 (the one rule
    for the stream, `plasticlm plan` and the sweep; 5B / (256 x 2048) -> 9,537 as in the paper)."""
    return max(1, round(tokens_per_task / (batch_size * seq_len)))


def task_count(cfg: StreamConfig) -> int:
    """Task instances in a run: one task per language per cycle (arXiv:2606.24752: 8 languages x
    cycles), for every stream kind (a stationary or permuted stream has as many equal segments). The one
    rule for the stream, the probe schedule, `plasticlm plan` and the sweep."""
    return len(cfg.languages) * cfg.cycles


class LanguageStream:
    """Serves (inputs, targets) batches of token ids for the configured stream kind."""

    def __init__(
        self,
        cfg: StreamConfig,
        train_tokens: dict[str, np.ndarray],
        seq_len: int,
        batch_size: int,
        vocab_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.cfg = cfg
        self.kind = cfg.kind
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.vocab_size = vocab_size
        if batch_size % world_size:
            raise DataError(f"train.batch_size = {batch_size} is not divisible by world size {world_size}")
        self.rank, self.world_size = rank, world_size
        self.languages = list(cfg.languages)
        if self.kind == "permuted":
            self.sources = [cfg.permuted_base]
        else:
            self.sources = list(self.languages)
        for lang in self.sources:
            if lang not in train_tokens:
                raise DataError(f"no training tokens for language {lang!r}: build the corpus for it")
            n = len(train_tokens[lang])
            if n < seq_len + 1:
                raise DataError(
                    f"language {lang!r} has {n} training tokens, fewer than one sequence "
                    f"(model.seq_len + 1 = {seq_len + 1}): lower model.seq_len or add data"
                )
        self.tokens = {lang: train_tokens[lang] for lang in self.sources}
        tokens_per_step = batch_size * seq_len
        self.steps_per_task = steps_per_task(cfg.tokens_per_task, batch_size, seq_len)
        self.tokens_per_task = self.steps_per_task * tokens_per_step
        if self.tokens_per_task != cfg.tokens_per_task:
            warnings.warn(
                f"stream.tokens_per_task = {cfg.tokens_per_task} is not a multiple of batch_size * seq_len "
                f"= {tokens_per_step}; each task serves {self.tokens_per_task} tokens "
                f"({self.steps_per_task} steps)",
                stacklevel=2,
            )
        self.tasks_per_cycle = len(self.languages)
        self.num_tasks = task_count(cfg)
        self.total_steps = self.num_tasks * self.steps_per_task
        w = np.asarray(cfg.weights or [1.0] * len(self.languages), dtype=np.float64)
        self.weights = w / w.sum()
        self._window = np.arange(seq_len + 1)
        # state
        self.step = 0  # global step (batches served)
        self.cursor = {lang: 0 for lang in self.sources}
        self.epochs = {lang: 0 for lang in self.sources}
        self.served = {lang: 0 for lang in self.sources}  # fresh tokens served per source
        self.rng = np.random.default_rng(cfg.seed)

    # ---------------------------------------------------------------- tasks
    def task(self, index: int) -> Task:
        cycle, position = divmod(index, self.tasks_per_cycle)
        if self.kind == "stationary":
            lang, switch = "mix", False
        elif self.kind == "permuted":
            lang, switch = self.cfg.permuted_base, True
        else:
            lang, switch = self.languages[position], True
        return Task(index, cycle, position, lang, switch, position == self.tasks_per_cycle - 1)

    @property
    def task_index(self) -> int:
        return self.step // self.steps_per_task

    @property
    def step_in_task(self) -> int:
        return self.step % self.steps_per_task

    @property
    def done(self) -> bool:
        return self.step >= self.total_steps

    def permutation(self, task_index: int) -> np.ndarray:
        """The token-id permutation of a permuted-stream task (deterministic by seed and task)."""
        return np.random.default_rng([self.cfg.seed, 7919, task_index]).permutation(self.vocab_size)

    def probe_permutation(self) -> np.ndarray:
        """A held-out permutation (never used by a training task) for the permuted stream's probe."""
        return np.random.default_rng([self.cfg.seed, 7919, -1 % 2**32]).permutation(self.vocab_size)

    # ---------------------------------------------------------------- serving
    def _take(self, lang: str, rows: int) -> np.ndarray:
        """``rows`` consecutive windows from ``lang``'s cursor, wrapping around its tokens."""
        arr = self.tokens[lang]
        n = len(arr)
        start = self.cursor[lang]
        starts = start + self.seq_len * np.arange(rows)
        if start + self.seq_len * rows + 1 <= n:
            out = np.lib.stride_tricks.sliding_window_view(
                np.asarray(arr[start : start + self.seq_len * rows + 1]), self.seq_len + 1
            )[:: self.seq_len]
        else:
            out = np.asarray(arr)[(starts[:, None] + self._window[None, :]) % n]
        new = start + self.seq_len * rows
        self.epochs[lang] += new // n
        self.cursor[lang] = new % n
        self.served[lang] += self.seq_len * rows
        return out.astype(np.int64, copy=False)

    def _row_languages(self, task: Task) -> list[str]:
        """The source language of each of the B rows of the next global batch."""
        B = self.batch_size
        if self.kind == "stationary":
            idx = self.rng.choice(len(self.languages), size=B, p=self.weights)
            return [self.languages[i] for i in idx]
        rows = [task.lang] * B
        if self.kind == "continual" and self.cfg.replay_fraction > 0 and task.index > 0:
            seen = sorted({self.languages[i % self.tasks_per_cycle] for i in range(task.index)} - {task.lang})
            n_replay = int(round(self.cfg.replay_fraction * B))
            if seen and n_replay:
                picks = self.rng.choice(len(seen), size=n_replay)
                rows[B - n_replay :] = [seen[i] for i in picks]
        return rows

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        """The next (inputs, targets) of this rank, shape (B / world_size, T) each, int64."""
        if self.done:
            raise StopIteration("the stream is exhausted (all tasks served)")
        task = self.task(self.task_index)
        langs = self._row_languages(task)
        batch = np.empty((self.batch_size, self.seq_len + 1), dtype=np.int64)
        for lang in dict.fromkeys(langs):  # first-seen order: deterministic
            rows = [i for i, row_lang in enumerate(langs) if row_lang == lang]
            batch[rows] = self._take(lang, len(rows))
        if self.kind == "permuted":
            batch = self.permutation(task.index)[batch]
        self.step += 1
        per = self.batch_size // self.world_size
        mine = batch[self.rank * per : (self.rank + 1) * per]
        return mine[:, :-1], mine[:, 1:]

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {
            "kind": self.kind,
            "step": self.step,
            "cursor": dict(self.cursor),
            "epochs": dict(self.epochs),
            "served": dict(self.served),
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict) -> None:
        if state["kind"] != self.kind:
            raise DataError(f"stream state is for kind {state['kind']!r}, this stream is {self.kind!r}")
        self.step = int(state["step"])
        self.cursor = {k: int(v) for k, v in state["cursor"].items()}
        self.epochs = {k: int(v) for k, v in state["epochs"].items()}
        self.served = {k: int(v) for k, v in state["served"].items()}
        self.rng.bit_generator.state = state["rng"]

    def reuse(self) -> dict[str, float]:
        """Per language: fresh tokens served / training tokens available (1.0 = one epoch)."""
        return {lang: self.served[lang] / len(self.tokens[lang]) for lang in self.sources}
