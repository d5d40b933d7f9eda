"""Loop components: what attaches to the training loop, built from the config through one registry.

``base`` defines ``Component`` (the hooks), ``LoopView`` (what a component sees) and ``Components``
(the run's ordered list); ``registry`` registers components and builds a run's from
``train.components``. The built-in components are registered by importing their modules here:

- ``task_reset``, ``train_metrics``, ``evaluate``, ``progress`` (core.py)
- ``mitigations`` (mitigations.py): the plasticity mitigations of the [mitigations] tables
- ``probe`` (probe.py): the plasticity probe
- ``diagnostics`` (diagnostics.py): plasticity diagnostics at the probe points (not in the default list)
- ``tensorboard``, ``wandb`` (trackers.py)
"""

from plasticlm.components import core, diagnostics, mitigations, probe, trackers  # noqa: F401  (importing registers them)
from plasticlm.components.base import HOOKS, Batch, Component, Components, LoopView, RandomStream
from plasticlm.components.registry import build_components, component_problems, register, registered, resolve

__all__ = ["HOOKS", "Batch", "Component", "Components", "LoopView", "RandomStream", "build_components",
           "component_problems", "register", "registered", "resolve"]
