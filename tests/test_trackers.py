"""Experiment trackers: TensorBoard and Weights & Biases (offline) mirror the run's metrics rows."""

import struct
import time

import pytest

from plasticlm.checkpoint import latest_checkpoint, load_component_states
from plasticlm.runlog import read_jsonl
from plasticlm.train import train
from tests.fakes import WITH_PROBES, fake_data, tiny_config


def _metric_rows(run_dir):
    return read_jsonl(run_dir / "metrics.jsonl")


def test_tensorboard_gets_every_metric_of_every_row(tmp_path):
    pytest.importorskip("tensorboard")  # in the dev extra; CI installs it
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    train(tiny_config("train.tensorboard=true"), run_dir, data=fake_data(), quiet=True)
    events = EventAccumulator(str(run_dir / "logs" / "tensorboard"))
    events.Reload()
    rows = _metric_rows(run_dir)
    for key in ("train/loss", "train/lr", "val/aa/bpb", "val/vi/loss"):
        expected = [(r["step"], r[key]) for r in rows if key in r]
        got = [(e.step, e.value) for e in events.Scalars(key)]
        assert len(got) == len(expected) > 1, key
        for (s1, v1), (s2, v2) in zip(got, expected):
            assert s1 == s2 and v1 == pytest.approx(v2, rel=1e-6), key


def _wandb_records(path):
    """The protobuf records of a W&B transaction log (.wandb): a 7-byte header, then LevelDB-style
    32 KiB blocks of chunks (crc32 4, length 2, type 1: full, first, middle, last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw = path.read_bytes()
    assert raw[:4] == b":W&B"
    block, pos, records, partial = 32768, 7, [], b""
    while pos + 7 <= len(raw):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # block trailer or padding
            pos += left
            continue
        if pos + 7 + length > len(raw):  # still being written
            break
        data, pos = raw[pos + 7:pos + 7 + length], pos + 7 + length
        partial = data if kind in (1, 2) else partial + data
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(partial)
            records.append(rec)
    return records


def test_wandb_offline_run_has_the_config_and_every_metric(tmp_path, capfd):
    pytest.importorskip("wandb")  # in the dev extra; CI installs it
    import json

    run_dir = tmp_path / "run"
    cfg = tiny_config("train.wandb=true", WITH_PROBES, "probe.steps=4", "probe.eval_every=2", "probe.sequences=4")

    train(cfg, run_dir, data=fake_data(), quiet=True)
    assert capfd.readouterr().out == ""  # nothing on stdout: `plasticlm train --json` stays one document
    (log,) = (run_dir / "logs" / "wandb").glob("offline-run-*/run-*.wandb")
    run_id = load_component_states(latest_checkpoint(run_dir))["wandb"]["run_id"]
    assert log.name == f"run-{run_id}.wandb"  # kept as state: a resumed run continues it
    deadline = time.monotonic() + 120
    while True:  # W&B's service process may still be writing the log after finish() returned
        records = _wandb_records(log)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    (run_rec,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    config = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in run_rec.config.update}
    assert config["model"]["preset"] == "25K" and config["train"]["wandb_mode"] == "offline"
    logged: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            for k, v in items.items():
                logged.setdefault(k, []).append((items["_step"], v))
    rows = _metric_rows(run_dir)
    for key in ("train/loss", "val/bb/bpb", "probe/auc"):
        expected = [(r["step"], r[key]) for r in rows if key in r]
        assert len(expected) > 1 and [s for s, _ in logged[key]] == [s for s, _ in expected], key
        assert [v for _, v in logged[key]] == pytest.approx([v for _, v in expected]), key
