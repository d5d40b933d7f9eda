"""The plasticity probe as a loop component: probes at the scheduled task boundaries (in-run), or keeps
those checkpoints for post-hoc probing (``probe.in_run = false``). The probe itself is ``probe.py``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from plasticlm.checkpoint import checkpoint_name
from plasticlm.components.base import Component, LoopView
from plasticlm.components.registry import register
from plasticlm.probe import ProbeSetup, probe_row, probe_task_indices, run_probe, scratch_baseline
from plasticlm.runlog import atomic_write_bytes

if TYPE_CHECKING:  # pragma: no cover
    from plasticlm.data.stream import Task


@register("probe")
class ProbeComponent(Component):
    """Plasticity probes (arXiv:2606.24752, "Probe") at the task boundaries that ``[probe]`` schedules;
    rows in probes.jsonl, scores in metrics.jsonl (``probe/auc``)."""

    def __init__(self, loop: LoopView, options: None = None):
        cfg = loop.cfg
        s = loop.stream
        self.points = set(probe_task_indices(cfg, s.num_tasks, s.tasks_per_cycle, s.tokens_per_task))
        self.names = {checkpoint_name(k) for k in self.points}
        self.in_run = cfg.probe.in_run
        self.scratch: dict | None = None
        self.setup = None
        if not self.points:
            return
        # post-hoc rows (`plasticlm probe`) are not the run's to roll back on resume
        self.log = loop.open_log("probes.jsonl", rollback=self.in_run)
        perm = s.probe_permutation() if s.kind == "permuted" else None
        self.setup = ProbeSetup.build(cfg, loop.data, loop.gpt_config, loop.peak_lr, loop.device, perm)

    def on_fit_start(self, loop: LoopView) -> None:
        if self.in_run and loop.cfg.probe.scratch_baseline and self.points:
            self.scratch = scratch_baseline(self.setup, loop.cfg.train.seed)
            loop.update_run_info(scratch=self.scratch)

    def on_task_end(self, loop: LoopView, task: Task) -> None:
        if not (self.in_run and task.index in self.points):
            return
        name = checkpoint_name(task.index)
        # every rank probes the same copy (the ranks stay in step; under FSDP a gathered one); rank 0 writes
        result = run_probe(loop.full_model(), self.setup)
        if loop.is_main:
            atomic_write_bytes(loop.run_dir / "probes" / f"{name}.npz", result.npz_bytes())
            self.log.append(probe_row(name, task, loop.tokens, result, self.scratch))
            loop.log({"probe/auc": result.auc, "probe/final_loss": result.final_loss,
                      "probe/seconds": result.seconds})

    def wants_checkpoint(self, task: Task) -> bool:
        """Post-hoc probing (``probe.in_run = false``) needs a checkpoint at every probe point."""
        return not self.in_run and task.index in self.points

    def pinned_checkpoints(self) -> set[str]:
        """Kept from pruning until probed post hoc (in-run probes need no checkpoint afterwards)."""
        return set() if self.in_run else set(self.names)
