import math

import numpy as np
import pytest

from trainer import InMemorySink, train, true_entropy
from trainer.data import write_tokens

from .conftest import BufferedSink, SimulatedKill, tiny_spec


def _steps(sink, key):
    return [s for s, _ in sink.history(key)]


def _strictly_increasing(xs):
    return all(a < b for a, b in zip(xs, xs[1:]))


def test_loss_falls_and_stays_above_true_entropy(tmp_path):
    spec = tiny_spec(
        tokens=48 * 1024, batch=16, seq_len=32, val_tokens=4096, lr=1e-2, eval_interval_tokens=8 * 1024
    )
    sink = InMemorySink()
    res = train(spec, sink, checkpoint_dir=tmp_path)
    assert res.status == "finished", res.message
    h = true_entropy(spec.data)
    val = [v for _, v in sink.history("val_loss")]
    assert val[-1] < val[0] - 0.3 and val[-1] < math.log(16) - 0.5
    assert min(val) > h - 0.05  # finite val set noise
    assert res.val_loss == val[-1] and res.tokens == spec.tokens and res.steps == 96
    assert sink.params["true_entropy"] == pytest.approx(h)
    assert _steps(sink, "val_loss")[-1] == spec.tokens
    assert _strictly_increasing(_steps(sink, "train_loss"))
    assert res.flops == pytest.approx(res.tokens * float(sink.params["flops_per_token"]), rel=1e-6)
    lrs = [v for _, v in sink.history("lr")]
    assert lrs[-1] == pytest.approx(spec.recipe.lr * spec.recipe.min_lr_ratio)
    assert sink.tags["scalelab.device"].startswith("cpu")


def test_finished_run_is_not_retrained(tmp_path):
    spec = tiny_spec(tokens=4096)
    first = train(spec, InMemorySink(), checkpoint_dir=tmp_path)
    sink = InMemorySink()
    again = train(spec, sink, checkpoint_dir=tmp_path)
    assert again.status == "finished" and again.val_loss == first.val_loss and not sink.metrics


def test_kill_and_resume_equals_uninterrupted(tmp_path):
    # 200 steps: train metrics every 2 steps, checkpoints every 7 (mid log interval: the
    # loss and expert-load accumulators must survive the resume too)
    spec = tiny_spec(
        tokens=200 * 32,
        batch=4,
        seq_len=8,
        checkpoint_interval_tokens=32 * 7,
        eval_interval_tokens=32 * 40,
        val_tokens=256,
        model={"experts": 4, "top_k": 2},
    )
    ref_sink = InMemorySink()
    ref = train(spec, ref_sink, checkpoint_dir=tmp_path / "ref")
    assert ref.status == "finished", ref.message

    store = InMemorySink()
    with pytest.raises(SimulatedKill):  # dies between checkpoints: unflushed metrics are lost
        train(spec, BufferedSink(store, crash_at_step=32 * 104), checkpoint_dir=tmp_path / "run")
    assert store.metrics and max(s for _, _, s in store.metrics) == 32 * 98
    res = train(spec, BufferedSink(store), checkpoint_dir=tmp_path / "run")
    assert res.status == "finished", res.message
    assert res.resumed_from_tokens == 32 * 98
    assert res.val_loss == pytest.approx(ref.val_loss, abs=1e-5)
    for key in ("train_loss", "val_loss", "lr", "tokens", "expert_load_max_over_mean"):
        steps = _steps(store, key)
        assert _strictly_increasing(steps), key  # no duplicates
        assert steps == _steps(ref_sink, key), key  # no gaps
    for key in ("val_loss", "train_loss", "expert_load_max_over_mean", "moe_aux_loss"):
        for (_, a), (_, b) in zip(store.history(key), ref_sink.history(key)):
            assert a == pytest.approx(b, abs=1e-5), key


def test_should_stop_checkpoints_and_resume_continues(tmp_path):
    spec = tiny_spec(tokens=8192, checkpoint_interval_tokens=1024)
    ref = train(spec, InMemorySink(), checkpoint_dir=tmp_path / "ref")
    sink = InMemorySink()
    polls = []
    stopped = train(
        spec, sink, checkpoint_dir=tmp_path / "run", should_stop=lambda: polls.append(1) or len(polls) >= 3
    )
    assert stopped.status == "stopped" and 0 < stopped.tokens < spec.tokens
    resumed = train(spec, sink, checkpoint_dir=tmp_path / "run")
    assert resumed.status == "finished" and resumed.resumed_from_tokens == stopped.tokens
    assert resumed.val_loss == pytest.approx(ref.val_loss, abs=1e-5)
    assert _strictly_increasing(_steps(sink, "train_loss"))


@pytest.mark.parametrize(
    "recipe,words",
    [
        ({"lr": 10.0}, ""),  # huge lr explodes (NaN/inf or above the bound)
        ({"divergence_loss": 0.5}, "above the bound"),
    ],
)
def test_divergence_status(tmp_path, recipe, words):
    spec = tiny_spec(tokens=8192, **recipe)
    res = train(spec, InMemorySink(), checkpoint_dir=tmp_path)
    assert res.status == "diverged" and "train loss" in res.message and words in res.message
    assert res.tokens < spec.tokens


def test_wsd_branches_share_the_trunk(tmp_path):
    budgets = [2048, 4096, 6144]
    common = dict(schedule="wsd", cooldown_frac=0.25, warmup_tokens=256, eval_interval_tokens=1024)
    trunk_sink = InMemorySink()
    results, sinks = [], []
    for d in budgets:
        spec = tiny_spec(tokens=d, **common)
        sink = InMemorySink()
        res = train(
            spec, sink, checkpoint_dir=tmp_path / f"b{d}", trunk_dir=tmp_path / "trunk", trunk_sink=trunk_sink
        )
        assert res.status == "finished", res.message
        results.append((spec, res))
        sinks.append(sink)
    starts = [s.cooldown_start_tokens for s, _ in results]
    assert starts == [1536, 3072, 4608]
    # one point per cooldown, at its own budget
    for (spec, res), sink in zip(results, sinks):
        assert res.tokens == spec.tokens and _steps(sink, "val_loss")[-1] == spec.tokens
        assert min(_steps(sink, "train_loss")) > spec.cooldown_start_tokens
        assert sink.history("lr")[-1][1] == 0.0
    # each branch continued the trunk from the previous branch point, not from 0
    assert [r.resumed_from_tokens for _, r in results] == [0, 1536, 3072]
    assert _strictly_increasing(_steps(trunk_sink, "train_loss"))
    assert max(_steps(trunk_sink, "train_loss")) == starts[-1]
    kept = sorted(p.name for p in (tmp_path / "trunk").iterdir())
    assert [f"branch_{s:015d}.pt" for s in starts] == [k for k in kept if k.startswith("branch")]
    # the shared trunk is exact: a branch trained alone from 0 gets the same loss
    alone = train(
        results[1][0], InMemorySink(), checkpoint_dir=tmp_path / "alone", trunk_dir=tmp_path / "alone_trunk"
    )
    assert alone.val_loss == pytest.approx(results[1][1].val_loss, abs=1e-5)


def test_moe_run_logs_expert_load(tmp_path):
    spec = tiny_spec(tokens=4096, model={"experts": 4, "top_k": 2, "shared_experts": 1, "d_expert": 16})
    sink = InMemorySink()
    res = train(spec, sink, checkpoint_dir=tmp_path)
    assert res.status == "finished", res.message
    loads = [v for _, v in sink.history("expert_load_max_over_mean")]
    assert loads and all(1.0 <= v <= 4.0 for v in loads)
    assert sink.params["n_params_active_nonembedding"] < sink.params["n_params_embedding"] + 10**9


def test_tokens_source_tracks_epochs(tmp_path):
    rng = np.random.default_rng(0)
    write_tokens(tmp_path / "train.bin", rng.integers(0, 16, 1601))
    write_tokens(tmp_path / "val.bin", rng.integers(0, 16, 600))
    spec = tiny_spec(tokens=4096, data={"source": "tokens", "paths": (str(tmp_path),), "val_tokens": 256})
    sink = InMemorySink()
    res = train(spec, sink, checkpoint_dir=tmp_path / "ck")
    assert res.status == "finished", res.message
    assert res.epochs == pytest.approx(4096 / 1600) and sink.params["unique_tokens"] == 1601
    assert sink.history("epochs")[-1][1] == pytest.approx(res.epochs)


def test_failure_returns_status_with_traceback(tmp_path):
    assert train(tiny_spec(tokens=2048, seed=1), InMemorySink(), checkpoint_dir=tmp_path).status == "finished"
    spec = tiny_spec(tokens=4096)  # another run's checkpoint in this run's directory
    res = train(spec, InMemorySink(), checkpoint_dir=tmp_path)
    assert res.status == "failed" and "Traceback" in res.message and "belongs to" in res.message
    assert res.extra["error_type"]


def test_sink_error_fails_the_run_without_a_checkpoint(tmp_path):
    class Broken(InMemorySink):
        def flush(self):
            raise RuntimeError("lease lost")

    spec = tiny_spec(tokens=4096, checkpoint_interval_tokens=1024)
    res = train(spec, Broken(), checkpoint_dir=tmp_path)
    assert res.status == "failed" and res.extra["error_type"] == "RuntimeError"
    assert not (tmp_path / "ckpt.pt").exists()  # flush comes before the checkpoint


def test_default_text_corpus_trains_and_restores_threads(tmp_path):
    import torch

    spec = tiny_spec(tokens=2048, vocab=256, data={"source": "text"})
    before = torch.get_num_threads()
    sink = InMemorySink()
    res = train(spec, sink, checkpoint_dir=tmp_path, num_threads=2)
    assert res.status == "finished", res.message
    assert torch.get_num_threads() == before
    assert res.val_loss < math.log(256) + 0.5 and len(sink.params["data_hash"]) == 24
    assert 0 < res.epochs < 0.01


def test_zipf_language_is_learned_towards_its_true_loss(tmp_path):
    zipf = {"source": "zipf", "lexicon_size": 256, "zipf_exponent": 1.5, "min_word_len": 3, "max_word_len": 3}
    losses = {}
    for tokens in (2048, 16384):
        sink = InMemorySink()
        res = train(
            tiny_spec(tokens=tokens, vocab=16, seq_len=12, data=zipf, lr=2e-2, val_tokens=3072),
            sink,
            checkpoint_dir=tmp_path / str(tokens),
        )
        assert res.status == "finished", res.message
        losses[tokens] = res.val_loss
    floor = float(sink.params["val_true_loss"])
    assert float(sink.params["true_loss_floor"]) == pytest.approx(float(sink.params["true_entropy"]))
    assert losses[16384] < losses[2048] - 0.1  # more data, lower loss
    assert losses[16384] > floor - 0.01  # never below the true model's loss


def test_log_eval_schedule_evaluates_once_per_doubling_and_keeps_the_run_key(tmp_path):
    """train.eval_schedule: log gives every curve points on a log axis (D/64 ... D); it is a
    run-time setting: the run key and the legacy key of a linear-schedule spec are unchanged."""
    spec = tiny_spec(tokens=128 * 128, batch=8, seq_len=16, eval_schedule="log")
    sink = InMemorySink()
    assert train(spec, sink, checkpoint_dir=tmp_path).status == "finished"
    steps = _steps(sink, "val_loss")
    assert steps == [spec.tokens // 2**k for k in range(6, -1, -1)]
    linear = tiny_spec(tokens=128 * 128, batch=8, seq_len=16)
    assert spec.key() == linear.key() and "eval_schedule" not in linear.to_dict()["recipe"]
    with pytest.raises(ValueError, match="train.eval_schedule"):
        tiny_spec(eval_schedule="cubic")
