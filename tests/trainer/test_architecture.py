"""Architecture options in real tiny runs: length extrapolation and the masked-LM objective."""

import math

import numpy as np
import pytest

from trainer import train
from trainer.objectives import mlm_corrupt, mlm_val_rng
from trainer.sinks import InMemorySink
from trainer.spec import SpecError

from .conftest import tiny_spec


def _run(tmp_path, name, tokens=4096, **kw):
    sink = InMemorySink()
    result = train(tiny_spec(tokens, **kw), sink, checkpoint_dir=tmp_path / name)
    assert result.status == "finished", result.message
    return result, sink, {k: v for k, v, _ in sink.metrics}


@pytest.mark.parametrize("pos", ["sinusoidal", "rope", "none"])
def test_position_free_of_length_models_evaluate_at_4x(tmp_path, pos):
    result, sink, last = _run(tmp_path, pos, model=dict(pos=pos), eval_lengths=(1, 4), val_tokens=1024)
    for name in ("val_loss_len4x", "val_loss_len4x_tail", "val_loss_len1x"):
        assert math.isfinite(last[name]) and 0 < last[name] < 2 * math.log(16)
    assert sink.params["eval_len4x"] == "measured"
    assert last["val_loss"] == result.val_loss  # val_loss stays the training-length loss


def test_learned_positions_report_not_applicable(tmp_path):
    _, sink, last = _run(tmp_path, "learned", eval_lengths=(1, 2, 4), val_tokens=1024)
    assert sink.params["eval_len2x"] == sink.params["eval_len4x"] == "n/a"
    assert "positions past seq_len" in sink.params["eval_len_na_reason"]
    assert not any(k.startswith(("val_loss_len2x", "val_loss_len4x")) for k in last)
    assert math.isfinite(last["val_loss"])


def test_held_out_set_too_short_for_eval_lengths_names_val_tokens():
    with pytest.raises(SpecError) as e:
        tiny_spec(model=dict(pos="rope"), eval_lengths=(1, 8), val_tokens=64)
    assert e.value.field == "data.val_tokens" and "128" in str(e.value)


def test_mlm_masking_proportions_and_fixed_held_out_mask():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50, (400, 250))
    inputs, targets = mlm_corrupt(tokens, 50, rng)
    selected = targets != -100
    assert abs(selected.mean() - 0.15) < 0.005
    assert np.array_equal(targets[selected], tokens[selected])
    masked = (inputs == 50)[selected].mean()
    kept = (inputs == tokens)[selected].mean()  # includes random draws of the same token
    assert abs(masked - 0.8) < 0.01 and abs(kept - (0.1 + 0.1 / 50)) < 0.01
    assert (inputs[~selected] == tokens[~selected]).all()
    spec = tiny_spec(model=dict(objective="mlm"))
    a = mlm_corrupt(tokens, 50, mlm_val_rng(spec.data))
    b = mlm_corrupt(tokens, 50, mlm_val_rng(spec.data))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_mlm_loss_is_finite_and_below_the_unigram_entropy(tmp_path):
    # bidirectional context of an order-1 chain: both neighbours inform the masked token
    result, sink, _ = _run(
        tmp_path, "mlm", tokens=65536, d_model=32, n_layer=2, lr=3e-3, model=dict(objective="mlm", pos="rope")
    )
    from trainer.data import make_source

    val = make_source(tiny_spec().data, 0).val
    p = np.bincount(val.ravel(), minlength=16) / val.size
    unigram = float(-(p[p > 0] * np.log(p[p > 0])).sum())
    assert math.isfinite(result.val_loss)
    assert result.val_loss < unigram - 0.1, (result.val_loss, unigram)
