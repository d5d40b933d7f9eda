"""Checkpoints across topologies: what a checkpoint holds when a run trains on several processes, and
how any checkpoint loads into any topology (``checkpoint.py`` writes and verifies the directory).

Two formats of the model and optimizer state inside ``checkpoints/task-NNNNNN/``:

- **full** (one process, DDP): ``model.safetensors`` and ``optim.pt``, written by rank 0 alone.
  Under DDP every rank holds the full weights and the same optimizer state, so rank 0's copy is the
  run's (the same files as a one-process run).
- **sharded** (FSDP2): ``dcp/``, a ``torch.distributed.checkpoint`` directory in which every rank
  writes its own shards of the model and optimizer state dicts (keyed by parameter name), so no
  rank ever holds the whole state. It is written into a staging directory first and moved into the
  checkpoint by rank 0, which then publishes the checkpoint as usual (complete or absent; its files
  are checksummed in meta.json like the others).

``rng.pt`` holds rank 0's RNG state under ``cpu``/``cuda`` (the one-process layout) and, with
several ranks, every rank's state under ``ranks``.

Loading (``load_model_and_optim``): a full checkpoint into a sharded model is distributed from the
full tensors every rank reads; a sharded checkpoint into a plain module (one process, DDP, a probe)
is read whole by each process on its own (DCP ``no_dist``), into a sharded model collectively and
resharded to the current number of ranks. So a run resumes on the same or another number of
ranks, under the same or the other strategy, and any checkpoint loads into one process for probes.
A run's RNG is restored per rank when the number of ranks is unchanged, else every rank takes rank
0's state (the training loop draws no random numbers after the initialisation: the stream has its
own generator in its state, components their own random streams, and probes fork the RNG).
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
    set_state_dict,
)

from plasticlm import dist

SHARDED_DIR = "dcp"
"""The sharded (FSDP) state inside a checkpoint directory."""

# ---------------------------------------------------------------------- RNG


def local_rng(device: torch.device | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def process_rng() -> dict[str, Any]:
    """rng.pt of a one-process run: the CPU generator's state and every visible GPU's."""
    out: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def gathered_rng(device: torch.device | None = None) -> dict[str, Any]:
    """The content of rng.pt (collective under several ranks: every rank calls it)."""
    if dist.world_size() == 1:
        return process_rng()
    states = dist.all_gather_objects(local_rng(device))
    return {"cpu": states[0]["cpu"], "ranks": states}


def restore_rng(rng: dict[str, Any]) -> None:
    """This rank's RNG from rng.pt: its own state when the checkpoint has one per rank for the same
    number of ranks, else rank 0's."""
    ranks = rng.get("ranks")
    if ranks and len(ranks) == dist.world_size():
        mine = ranks[dist.rank()]
        torch.set_rng_state(mine["cpu"])
        if "cuda" in mine and torch.cuda.is_available():
            torch.cuda.set_rng_state(mine["cuda"], torch.cuda.current_device())
        return
    torch.set_rng_state(rng["cpu"])
    if isinstance(rng.get("cuda"), list) and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"][: torch.cuda.device_count()])


# ---------------------------------------------------------------------- save (sharded)


def stage_sharded(root: Path, name: str, model: torch.nn.Module,
                  optimizer: torch.optim.Optimizer) -> Callable[[Path], None]:
    """Every rank writes its shards of the model and optimizer state into ``root/.dcp-NAME``
    (collective); returns the writer that rank 0 passes to ``save_checkpoint`` to move it in."""
    staging = root / f".dcp-{name}"
    if dist.is_main():
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".dcp-*"):  # left by a save that was killed
            shutil.rmtree(stale, ignore_errors=True)
    dist.barrier()
    msd, osd = get_state_dict(model, optimizer)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(staging))
    dist.barrier()

    def write(tmp: Path) -> None:
        os.replace(staging, tmp / SHARDED_DIR)

    return write


def sharded_files(path: Path) -> list[str]:
    """The files of a checkpoint's ``dcp/`` directory, relative to the checkpoint (for checksums)."""
    d = path / SHARDED_DIR
    return sorted(str(p.relative_to(path)) for p in d.rglob("*") if p.is_file()) if d.is_dir() else []


# ---------------------------------------------------------------------- load


def checkpoint_format(path: str | Path) -> str:
    return "sharded" if (Path(path) / SHARDED_DIR).is_dir() else "full"


def full_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict of a possibly sharded model (collective under FSDP)."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))


def param_fqns(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The parameter name of each optimizer slot, in ``optimizer.state_dict()``'s index order."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def _by_name(osd: dict[str, Any], fqns: list[str]) -> dict[str, Any]:
    """A ``torch.optim`` state dict (keyed by slot index) keyed by parameter name instead."""
    return {"state": {fqns[int(i)]: s for i, s in osd["state"].items()},
            "param_groups": [{**g, "params": [fqns[int(i)] for i in g["params"]]} for g in osd["param_groups"]]}


def load_model_and_optim(path: str | Path, model: torch.nn.Module,
                         optimizer: torch.optim.Optimizer | None = None) -> None:
    """Load a checkpoint's weights (and optimizer state) into ``model``, whatever the checkpoint's
    format and the model's sharding (plain single-process files into a plain model are handled by
    ``checkpoint.load_checkpoint`` itself)."""
    path = Path(path)
    if checkpoint_format(path) == "sharded":
        if optimizer is not None:
            msd, osd = get_state_dict(model, optimizer)
            state = {"model": msd, "optim": osd}
        else:
            state = {"model": get_model_state_dict(model)}
        with warnings.catch_warnings():  # a plain module loads alone: DCP says so in a warning
            warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process.*")
            dcp.load(state, checkpoint_id=str(path / SHARDED_DIR), no_dist=not dist.is_sharded(model))
        if optimizer is not None:
            set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        else:
            set_model_state_dict(model, state["model"])
        return
    full = StateDictOptions(full_state_dict=True)
    weights = load_file(str(path / "model.safetensors"))
    if "lm_head.weight" not in weights:  # tied to wte: stored once
        weights["lm_head.weight"] = weights["wte.weight"]
    set_model_state_dict(model, weights, options=full)
    if optimizer is not None:
        osd = torch.load(path / "optim.pt", weights_only=True)
        set_optimizer_state_dict(model, optimizer, _by_name(osd, param_fqns(model, optimizer)), options=full)
