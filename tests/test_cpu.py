"""Process settings for CPU steps (plasticlm.cpu): glibc keeps a step's freed memory mapped, which
removes the page faults between steps and changes no number (README "Step speed")."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from plasticlm import cpu
from plasticlm.config import load_config
from plasticlm.errors import ConfigError

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# One process per setting (retaining cannot be undone in a process, and what a process did before
# moves glibc's state): the same model trained from the same seed, with the page faults of its last steps.
SCRIPT = """
import json, resource, sys, torch
from plasticlm.cpu import configure_cpu
from plasticlm.model import GPT, from_preset

def train():
    torch.manual_seed(0)
    model = GPT(from_preset("3K", vocab_size=1024, seq_len=128))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    x = torch.randint(0, 1024, (4, 129), generator=torch.Generator().manual_seed(1))
    losses, faults = [], 0
    for i in range(6):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if i >= 3:  # after warm-up
            faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    return {"losses": losses, "faults_per_step": faults / 3,
            "weights": [p.detach().flatten().tolist()[:50] for p in model.parameters()]}

configure_cpu(1, sys.argv[1])
print(json.dumps(train()))
"""


def _train_in_a_process(malloc: str, env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, malloc], capture_output=True, text=True, check=True,
                         env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's; elsewhere train.malloc does nothing")
def test_retained_memory_removes_the_page_faults_of_a_step_and_changes_no_number():
    # glibc's mmap threshold starts at 128 KiB and then follows the largest block freed, so how often the
    # defaults fault depends on the process's history (86 to ~1,000 faults per step here): pin it at its
    # starting value, where every block above 128 KiB is mapped afresh.
    system = _train_in_a_process("system", {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)})
    retain = _train_in_a_process("retain", dict(os.environ))
    assert retain["losses"] == system["losses"] and retain["weights"] == system["weights"]
    assert system["faults_per_step"] > 100, system["faults_per_step"]
    # retained: 0 faults in most runs, up to 80 in some (not torch's blocks: 320 KiB a step), so a
    # tenth of the defaults' rather than a fixed count
    assert retain["faults_per_step"] < system["faults_per_step"] / 10, (retain, system["faults_per_step"])


def test_retaining_does_nothing_off_glibc(monkeypatch):
    monkeypatch.setattr(cpu, "_retained", False)
    monkeypatch.setattr(cpu.platform, "libc_ver", lambda: ("", ""))
    assert cpu.retain_freed_memory() is False


def test_train_malloc_is_typed():
    assert load_config(None, ["train.malloc=system"]).train.malloc == "system"
    with pytest.raises(ConfigError, match="train.malloc"):
        load_config(None, ["train.malloc=jemalloc"])
