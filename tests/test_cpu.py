"""Process settings for CPU steps (plasticlm.cpu): glibc keeps a step's freed memory mapped, which
removes the page faults between steps and changes no number (README "Step speed")."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from plasticlm import cpu
from plasticlm.config import load_config
from plasticlm.errors import ConfigError

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# One process, first with the C library's defaults, then retained (retaining cannot be undone in a
# process): the same model trained twice from the same seed, with the page faults of its last steps.
SCRIPT = """
import json, resource, torch
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

configure_cpu(1, "system")
system = train()
configure_cpu(1, "retain")
print(json.dumps({"system": system, "retain": train()}))
"""


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's; elsewhere train.malloc does nothing")
def test_retained_memory_removes_the_page_faults_of_a_step_and_changes_no_number():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout
    runs = json.loads(out.strip().splitlines()[-1])
    system, retain = runs["system"], runs["retain"]
    assert retain["losses"] == system["losses"] and retain["weights"] == system["weights"]
    # the 3K step at batch 4 x 128 returned its 2 MiB logits and more to the OS every step (~1,000 faults)
    assert system["faults_per_step"] > 100, system["faults_per_step"]
    assert retain["faults_per_step"] < 10, retain["faults_per_step"]


def test_retaining_does_nothing_off_glibc(monkeypatch):
    monkeypatch.setattr(cpu, "_retained", False)
    monkeypatch.setattr(cpu.platform, "libc_ver", lambda: ("", ""))
    assert cpu.retain_freed_memory() is False


def test_train_malloc_is_typed():
    assert load_config(None, ["train.malloc=system"]).train.malloc == "system"
    with pytest.raises(ConfigError, match="train.malloc"):
        load_config(None, ["train.malloc=jemalloc"])
