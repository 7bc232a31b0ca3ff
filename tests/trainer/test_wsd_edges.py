"""WSD edges: the trunk's metrics are delivered (its sink closed) before the branch checkpoint
at the cooldown start, a checkpoint never covers undelivered trunk metrics, and a trunk is
never shared under a warmup that outlasts a branch's stable phase."""

from __future__ import annotations

import pytest

from trainer import InMemorySink, train
from trainer import checkpoint as ckpt
from trainer.spec import SpecError

from .conftest import BufferedSink, tiny_spec

WSD = dict(
    schedule="wsd",
    cooldown_frac=0.25,
    warmup_tokens=256,
    eval_interval_tokens=1024,
    checkpoint_interval_tokens=512,
)


class OutageSink(BufferedSink):
    """A trunk sink whose store is down: flush keeps everything buffered. close() retries past
    the backoff (as MlflowSink.close does): it delivers when the store came back, else raises."""

    def __init__(self, recovers: bool):
        super().__init__()
        self.recovers, self.closed = recovers, 0

    def flush(self):
        pass

    def close(self):
        self.closed += 1
        if not self.recovers:
            raise ConnectionError(f"{len(self.pending)} trunk metrics undelivered")
        BufferedSink.flush(self)


def _branch_ckpts(path):
    return sorted(p.name for p in path.glob("branch_*.pt")) if path.exists() else []


def test_trunk_sink_is_closed_before_the_branch_checkpoint(tmp_path):
    spec = tiny_spec(tokens=4096, **WSD)
    trunk = OutageSink(recovers=True)
    res = train(
        spec, InMemorySink(), checkpoint_dir=tmp_path / "b", trunk_dir=tmp_path / "trunk", trunk_sink=trunk
    )
    assert res.status == "finished", res.message
    assert trunk.closed >= 1 and not trunk.pending
    steps = [s for k, _, s in trunk.store.metrics if k == "train_loss"]
    assert max(steps) == spec.cooldown_start_tokens  # every trunk step delivered
    assert _branch_ckpts(tmp_path / "trunk") == [f"branch_{spec.cooldown_start_tokens:015d}.pt"]


def test_no_checkpoint_covers_undelivered_trunk_metrics(tmp_path):
    spec = tiny_spec(tokens=4096, **WSD)
    trunk = OutageSink(recovers=False)
    res = train(
        spec, InMemorySink(), checkpoint_dir=tmp_path / "b", trunk_dir=tmp_path / "trunk", trunk_sink=trunk
    )
    assert res.status == "failed" and "trunk metrics undelivered" in res.message
    assert trunk.pending and not trunk.store.metrics
    assert _branch_ckpts(tmp_path / "trunk") == []  # a resume retrains those steps
    assert not list((tmp_path / "trunk").glob("stable_*.pt"))
    assert not (tmp_path / "b" / "ckpt.pt").exists()


def test_cooldown_checkpoints_wait_for_the_trunk_sink(tmp_path, monkeypatch):
    # a trunk sink without close(): the branch's own checkpoints must not cover its backlog
    class NoClose(BufferedSink):
        def flush(self):
            pass

    saved = []
    real_save = ckpt.save
    monkeypatch.setattr(
        ckpt, "save", lambda path, **kw: (saved.append((path.name, kw["extra"])), real_save(path, **kw))
    )
    spec = tiny_spec(tokens=8192, **WSD)
    trunk = NoClose()
    res = train(
        spec, InMemorySink(), checkpoint_dir=tmp_path / "b", trunk_dir=tmp_path / "trunk", trunk_sink=trunk
    )
    assert res.status == "finished" and trunk.pending
    assert [(name, extra.get("finished")) for name, extra in saved] == [("ckpt.pt", True)]


def test_warmup_outlasting_the_stable_phase_is_refused():
    with pytest.raises(SpecError) as e:
        tiny_spec(tokens=2048, schedule="wsd", cooldown_frac=0.5, warmup_tokens=1500)
    assert e.value.field == "train.warmup_frac" and "warmup_frac + cooldown_frac <= 1" in str(e.value)
    tiny_spec(tokens=2048, schedule="wsd", cooldown_frac=0.5, warmup_tokens=1024)  # at the edge
    tiny_spec(tokens=2048, schedule="cosine", cooldown_frac=0.5, warmup_tokens=1500)
