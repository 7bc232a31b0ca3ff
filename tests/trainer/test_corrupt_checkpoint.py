"""A corrupt checkpoint of an interrupted run: detected on load, set aside (`*.corrupt`), the
run resumes from the previous good checkpoint or restarts, says so, and finishes."""

from __future__ import annotations

import pytest
import torch

from trainer import InMemorySink, train
from trainer import checkpoint as ckpt

from .conftest import BufferedSink, SimulatedKill, tiny_spec


def _spec():
    return tiny_spec(
        tokens=64 * 32,
        batch=4,
        seq_len=8,
        checkpoint_interval_tokens=32 * 8,
        eval_interval_tokens=32 * 16,
        val_tokens=256,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return train(_spec(), InMemorySink(), checkpoint_dir=tmp_path_factory.mktemp("ref"))


def _interrupted(path):
    with pytest.raises(SimulatedKill):
        train(_spec(), BufferedSink(crash_at_step=32 * 44), checkpoint_dir=path)
    assert torch.load(path / "ckpt.pt", weights_only=True)["tokens"] == 32 * 40


def _garble(f):
    data = bytearray(f.read_bytes())
    f.write_bytes(bytes(data[: len(data) // 2]))  # a torn copy


def test_corrupt_newest_checkpoint_resumes_from_the_previous_one(tmp_path, reference, caplog):
    _interrupted(tmp_path)
    prev = ckpt.previous_path(tmp_path / "ckpt.pt")
    assert torch.load(prev, weights_only=True)["tokens"] == 32 * 32
    _garble(tmp_path / "ckpt.pt")
    sink = InMemorySink()
    res = train(_spec(), sink, checkpoint_dir=tmp_path)
    assert res.status == "finished", res.message
    assert res.resumed_from_tokens == 32 * 32 and res.val_loss == pytest.approx(reference.val_loss, abs=1e-6)
    assert (tmp_path / "ckpt.pt.corrupt").exists()
    note = sink.tags["scalelab.checkpoint_recovery"]
    assert str(tmp_path / "ckpt.pt") in note and "set aside as" in note
    assert "resumed from an earlier checkpoint at 1024 tokens" in note
    assert str(tmp_path / "ckpt.pt") in caplog.text
    assert not res.message  # a finished run carries no error


def test_no_good_checkpoint_restarts_the_run(tmp_path, reference):
    _interrupted(tmp_path)
    _garble(tmp_path / "ckpt.pt")
    _garble(ckpt.previous_path(tmp_path / "ckpt.pt"))
    sink = InMemorySink()
    res = train(_spec(), sink, checkpoint_dir=tmp_path)
    assert res.status == "finished", res.message
    assert res.resumed_from_tokens == 0 and res.val_loss == pytest.approx(reference.val_loss, abs=1e-6)
    assert (tmp_path / "ckpt.pt.corrupt").exists() and (tmp_path / "ckpt.prev.pt.corrupt").exists()
    assert "restarted the run from scratch" in sink.tags["scalelab.checkpoint_recovery"]
    assert "checkpoint_recovery" in res.extra


def test_load_names_the_file_and_leaves_os_errors_alone(tmp_path):
    bad = tmp_path / "ckpt.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ckpt.CorruptCheckpoint) as e:
        ckpt.load(bad)
    assert str(bad) in str(e.value)
    torch.save({"model": {}}, bad)  # loadable, but not a checkpoint
    with pytest.raises(ckpt.CorruptCheckpoint, match="missing optimizer"):
        ckpt.load(bad)
    with pytest.raises(FileNotFoundError):
        ckpt.load(tmp_path / "absent.pt")
    assert ckpt.set_aside(bad).name == "ckpt.pt.corrupt"
    bad.write_bytes(b"again")
    assert ckpt.set_aside(bad).name == "ckpt.pt.corrupt.1"


def _rot_bits(f, n=64):
    """Flip n bytes inside the largest tensor stored in checkpoint f (its zip member's data, not
    a header): torch.load still loads it, with wrong numbers."""
    import struct
    import zipfile

    with zipfile.ZipFile(f) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(f.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len + info.file_size // 2 - n // 2
    for k in range(n):
        data[start + k] ^= 0xFF
    f.write_bytes(bytes(data))
    return info.filename


def test_bit_rot_is_detected_before_the_weights_load(tmp_path):
    """torch.load checks no CRC: 64 flipped bytes load silently as other weights."""
    model = torch.nn.Linear(64, 64)
    path = tmp_path / "ckpt.pt"
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ckpt.save(path, model=model, optimizer=opt, step=1, tokens=8, position=1)
    member = _rot_bits(path)
    rotten = torch.load(path, weights_only=True)["model"]  # no error from torch itself
    assert not torch.equal(rotten["weight"], model.state_dict()["weight"])
    with pytest.raises(ckpt.CorruptCheckpoint, match="CRC-32 check failed") as e:
        ckpt.load(path)
    assert member in str(e.value) and str(path) in str(e.value)


def test_bit_rot_in_the_newest_checkpoint_resumes_from_the_previous_one(tmp_path, reference):
    _interrupted(tmp_path)
    _rot_bits(tmp_path / "ckpt.pt")
    sink = InMemorySink()
    res = train(_spec(), sink, checkpoint_dir=tmp_path)
    assert res.status == "finished", res.message
    assert res.resumed_from_tokens == 32 * 32 and res.val_loss == pytest.approx(reference.val_loss, abs=1e-6)
    assert (tmp_path / "ckpt.pt.corrupt").exists()
    assert "CRC-32 check failed" in sink.tags["scalelab.checkpoint_recovery"]
