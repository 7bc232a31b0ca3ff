"""The model families: the T5-style encoder-decoder (span corruption) and the prefix LM.

Accounting is exact for every valid family x objective x axis combination (numel and
FlopCounterMode, as test_accounting does for clm/mlm), span corruption is T5's and fixed on the
held-out set, and an encoder-decoder learns a markov source.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from trainer import train
from trainer.accounting import (
    count_params,
    flops_per_example,
    flops_per_token,
    forward_matmul_flops_per_example,
    match_flops_depths,
)
from trainer.data import make_source
from trainer.encdec import build_model
from trainer.model import GPT
from trainer.objectives import prefix_split
from trainer.sinks import InMemorySink
from trainer.spans import noise_spans, span_corrupt
from trainer.spec import ModelSpec, RunSpec, SpecError
from trainer.tasks import make_task

from .conftest import tiny_spec

AXES = [
    dict(pos=p, activation=a, norm=n)
    for p in ("learned", "sinusoidal", "rope")
    for a in ("gelu", "relu", "swiglu")
    for n in ("pre", "post")
]
SHAPES = {
    "dense": dict(n_layer=2, d_model=24, n_head=2, vocab_size=20, seq_len=24, d_ff=50),
    "moe-untied-3+1": dict(
        n_layer=1,
        d_model=16,
        n_head=2,
        vocab_size=12,
        seq_len=20,
        experts=4,
        top_k=2,
        d_expert=20,
        shared_experts=1,
        tied_head=False,
        n_layer_enc=3,
        n_layer_dec=1,
    ),
}


def _numel(*modules) -> int:
    return sum(p.numel() for m in modules if m is not None for p in m.parameters())


@pytest.mark.parametrize("shape", list(SHAPES), ids=str)
@pytest.mark.parametrize("axes", AXES, ids=lambda a: "-".join(a.values()))
def test_encoder_decoder_is_counted_exactly(axes, shape):
    m = ModelSpec(**SHAPES[shape], **axes, family="encdec", objective="span")
    net = build_model(m)
    c = count_params(m)
    assert c.total == _numel(net)
    assert c.enc == _numel(net.encoder, net.ln_enc) and c.dec == _numel(net.decoder, net.ln_dec)
    assert c.embedding == _numel(net.wte, net.wpe_enc, net.wpe_dec, net.head)
    assert c.nonembedding == c.enc + c.dec == c.total - c.embedding
    noise, spans = m.span_layout
    assert net.wte.weight.shape[0] == m.vocab_size + spans  # one sentinel row per span, counted
    if m.is_moe:
        layers = m.n_layer_enc + m.n_layer_dec
        assert c.active == c.total - layers * (m.experts - m.top_k) * c.per_routed_expert
    B = 2
    src = torch.randint(0, m.embedding_rows, (B, m.enc_len))
    tgt = torch.randint(0, m.embedding_rows, (B, m.dec_len))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        logits, _, _ = net(src, tgt)
    assert logits.shape == (B, noise + spans - 1, m.vocab_size + spans)  # sentinels are logits
    assert counter.get_total_flops() == forward_matmul_flops_per_example(m) * B
    assert flops_per_example(m) == 3 * forward_matmul_flops_per_example(m)
    assert flops_per_token(m) * m.seq_len == pytest.approx(flops_per_example(m), rel=1e-12)


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
@pytest.mark.parametrize("axes", AXES, ids=lambda a: "-".join(a.values()))
def test_prefix_lm_is_counted_exactly(axes, moe):
    shape = SHAPES["moe-untied-3+1"] if moe else SHAPES["dense"]
    shape = {k: v for k, v in shape.items() if not k.startswith("n_layer_")}
    m = ModelSpec(**shape, **axes, objective="prefix")
    net = build_model(m)
    assert isinstance(net, GPT) and count_params(m).total == _numel(net)
    assert count_params(m) == count_params(dataclasses.replace(m, objective="clm"))
    windows = np.random.default_rng(0).integers(0, m.vocab_size, (2, m.seq_len + 1))
    x, y, prefix = (torch.from_numpy(a) for a in prefix_split(windows, np.random.default_rng(1)))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        net(x, y, prefix)  # the prefix mask changes no matmul
    assert counter.get_total_flops() == forward_matmul_flops_per_example(m) * 2


def test_other_conventions_and_flop_matching():
    dec = ModelSpec(n_layer=3, d_model=48, n_head=3, vocab_size=64, seq_len=64)
    ed = match_flops_depths(dec, dataclasses.replace(dec, family="encdec", objective="span"))
    c, I, O = count_params(ed), ed.enc_len, ed.dec_len
    assert (I, O) == (64 - 10 + 3, 10 + 3 - 1)  # T5's layout: 10 noise tokens in 3 spans
    # 6n: the parameters on each position's path (encoder: embedding, its position table and
    # the encoder; decoder: embedding, its position table and the decoder; the head is tied)
    emb, d = ed.embedding_rows * ed.d_model, ed.d_model
    assert flops_per_example(ed, "6n") == 6 * (I * (emb + I * d + c.enc) + O * (emb + O * d + c.dec))
    attn = 6 * ed.d_model * (ed.n_layer_enc * I * I + ed.n_layer_dec * (O * O + O * I))
    assert flops_per_example(ed, "kaplan") == 6 * (I * c.enc + O * c.dec) + attn
    # T5: an encoder-decoder at a decoder's FLOPs per token holds about twice its parameters
    assert abs(math.log(flops_per_token(ed) / flops_per_token(dec))) < 0.1
    assert 1.5 < c.total / count_params(dec).total < 2.2
    assert (ed.n_layer_enc, ed.n_layer_dec) == (3, 2) and ed.d_model == dec.d_model


def test_span_corruption_is_t5s_and_invertible():
    rng = np.random.default_rng(0)
    B, T, V = 300, 64, 50
    noise, spans = ModelSpec(1, 16, 1, V, T, family="encdec", objective="span").span_layout
    tokens = rng.integers(0, V, (B, T))
    inp, target = span_corrupt(tokens, V, noise, spans, rng)
    assert inp.shape == (B, T - noise + spans) and target.shape == (B, noise + spans)
    sentinels = V + np.arange(spans)
    for i in range(B):  # one sentinel per span, in order, in input and target
        assert list(inp[i][inp[i] >= V]) == list(sentinels) == list(target[i][target[i] >= V])
        assert target[i][0] == V  # the target starts with the first sentinel
        # rebuild the sequence: each input sentinel is replaced by its span's tokens
        parts = np.split(target[i], np.flatnonzero(target[i] >= V)[1:])
        rebuilt = np.concatenate([parts[t - V][1:] if t >= V else [t] for t in inp[i]])
        assert np.array_equal(rebuilt, tokens[i])
    span = noise_spans(2000, T, noise, spans, np.random.default_rng(1))
    assert ((span >= 0).sum(axis=1) == noise).all()
    lengths = np.stack([(span == k).sum(axis=1) for k in range(spans)], axis=1)
    assert (lengths >= 1).all() and abs(lengths.mean() - noise / spans) < 1e-9
    assert not (span[:, 0] >= 0).any()  # a kept run comes first
    assert set(np.unique(lengths)) > {1, 2, 3, 4}  # lengths vary around the mean


def test_span_masks_are_deterministic_and_held_out_fixed():
    spec = tiny_spec(seq_len=32, model=dict(family="encdec", objective="span", pos="rope"))
    source = make_source(spec.data, spec.seed)
    a = make_task(spec, source, torch.device("cpu"))
    other_run = dataclasses.replace(spec, seed=7)  # another run of the study: same held-out
    b = make_task(other_run, make_source(other_run.data, 7), torch.device("cpu"))
    assert all(torch.equal(x, y) for x, y in zip(a.val, b.val))
    src, tgt_in, labels = a.val
    assert torch.equal(tgt_in[:, 1:], labels[:, :-1]) and (tgt_in[:, 0] == spec.model.vocab_size).all()
    assert all(torch.equal(x, y) for x, y in zip(a.train_batch(3, 4), a.train_batch(3, 4)))
    assert not torch.equal(a.train_batch(3, 4)[0], a.train_batch(4, 4)[0])
    assert not torch.equal(a.train_batch(3, 4)[2], b.train_batch(3, 4)[2])  # per-run seed


def test_prefix_attention_is_bidirectional_inside_the_prefix_only():
    m = ModelSpec(n_layer=1, d_model=16, n_head=2, vocab_size=12, seq_len=10, pos="rope", objective="prefix")
    torch.manual_seed(0)
    net = build_model(m).eval()
    x = torch.randint(0, 12, (1, 10))
    changed = x.clone()
    changed[0, 3] = (x[0, 3] + 1) % 12
    prefix = torch.tensor([5])
    a, _, _ = net(x, prefix=prefix)
    b, _, _ = net(changed, prefix=prefix)
    moved = (a - b).abs().amax(-1)[0]
    assert (moved[:3] > 1e-6).all()  # inside the prefix, earlier positions see position 3
    assert (moved > 1e-6).all()  # and every later position does (causally)
    changed = x.clone()
    changed[0, 6] = (x[0, 6] + 1) % 12
    moved = (net(x, prefix=prefix)[0] - net(changed, prefix=prefix)[0]).abs().amax(-1)[0]
    assert (moved[:6] < 1e-6).all() and (moved[6:] > 1e-6).all()  # after the prefix: causal
    windows = np.arange(44).reshape(4, 11)
    _, y, p = prefix_split(windows, np.random.default_rng(0))
    for row, k in zip(y, p):  # the loss covers the tokens after the prefix
        assert (row[: k - 1] == -100).all() and (row[k - 1 :] != -100).all()


@pytest.mark.parametrize(
    "model, field, words",
    [
        (dict(family="encdec"), "model.objective", "objective: span"),
        (dict(family="encdec", objective="mlm"), "model.objective", "objective: span"),
        (dict(objective="span"), "model.objective", "family: encdec"),
        (dict(family="encdec", objective="span", span_noise_density=0), "model.span_noise_density", "(0, 1)"),
        (dict(family="encdec", objective="span", span_mean_length=0.5), "model.span_mean_length", ">= 1"),
        (dict(family="encdec", objective="span", seq_len=8), "model.seq_len", "too short"),
        (dict(objective="clm", span_mean_length=5), "model.span_mean_length", "objective: span"),
        (dict(n_layer_enc=2), "model.n_layer_enc", "family: encdec"),
        (dict(family="encdec", objective="span", pos="none"), "model.pos", "position-free"),
        (dict(objective="prefix", pos="none"), "model.pos", "position-free"),
    ],
)
def test_family_spec_errors_name_the_key(model, field, words):
    base = dict(n_layer=1, d_model=16, n_head=2, vocab_size=12, seq_len=32)
    with pytest.raises(SpecError) as e:
        ModelSpec(**{**base, **model})
    assert e.value.field == field and words in str(e.value)


def test_run_keys_of_decoders_unchanged_and_encdec_keyed_by_its_settings():
    spec = tiny_spec()
    assert not {"family", "n_layer_enc", "n_layer_dec", "span_noise_density"} & set(spec.to_dict()["model"])
    ed = tiny_spec(seq_len=32, model=dict(family="encdec", objective="span"))
    d = ed.to_dict()["model"]
    assert (d["family"], d["n_layer_enc"], d["n_layer_dec"]) == ("encdec", 1, 1)
    assert RunSpec.from_dict(ed.to_dict()) == ed
    other = tiny_spec(seq_len=32, model=dict(family="encdec", objective="span", span_mean_length=2))
    assert other.key() != ed.key() and other.model.span_mean_length == 2.0


def _target_unigram_entropy(task) -> float:
    """Entropy (nats) of the held-out target tokens' unigram distribution (sentinels included):
    the loss of the best predictor that ignores every input."""
    y = task.val[2].numpy().ravel()
    p = np.bincount(y) / y.size
    return float(-(p[p > 0] * np.log(p[p > 0])).sum())


def test_encoder_decoder_learns_a_markov_source(tmp_path):
    spec = tiny_spec(
        49152,
        seq_len=32,
        d_model=32,
        n_layer=2,
        batch=16,
        lr=1e-2,
        model=dict(family="encdec", objective="span", pos="rope"),
        data=dict(concentration=0.05),
    )
    sink = InMemorySink()
    result = train(spec, sink, checkpoint_dir=tmp_path / "t5")
    assert result.status == "finished", result.message
    unigram = _target_unigram_entropy(make_task(spec, make_source(spec.data, 0), torch.device("cpu")))
    # both neighbours of a span (and the span's own earlier tokens) inform each target token
    assert result.val_loss < unigram - 0.5, (result.val_loss, unigram)
    assert result.flops == pytest.approx(flops_per_token(spec.model) * spec.tokens)


@pytest.mark.parametrize(
    "model",
    [dict(family="encdec", objective="span", pos="rope"), dict(objective="prefix")],
    ids=["span", "prefix"],
)
def test_stopped_run_resumes_to_the_uninterrupted_result(tmp_path, model):
    spec = tiny_spec(4096, checkpoint_interval_tokens=512, model=model)
    ref = train(spec, InMemorySink(), checkpoint_dir=tmp_path / "ref")
    assert ref.status == "finished", ref.message
    polls: list[int] = []
    stopped = train(
        spec,
        InMemorySink(),
        checkpoint_dir=tmp_path / "run",
        should_stop=lambda: polls.append(1) or len(polls) >= 2,
    )
    assert stopped.status == "stopped" and 0 < stopped.tokens < spec.tokens
    resumed = train(spec, InMemorySink(), checkpoint_dir=tmp_path / "run")
    assert resumed.status == "finished" and resumed.resumed_from_tokens == stopped.tokens
    assert resumed.val_loss == pytest.approx(ref.val_loss, abs=1e-5)
