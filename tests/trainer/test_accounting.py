import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from trainer.accounting import (
    count_params,
    flops_per_token,
    forward_matmul_flops_per_token,
    shape_for_params,
    training_flops,
)
from trainer.model import GPT
from trainer.spec import ModelSpec, SpecError

SHAPES = [
    dict(n_layer=1, d_model=16, n_head=1, vocab_size=16, seq_len=8),
    dict(n_layer=2, d_model=32, n_head=2, vocab_size=64, seq_len=16),
    dict(n_layer=2, d_model=32, n_head=4, vocab_size=256, seq_len=16, tied_head=False),
    dict(n_layer=3, d_model=48, n_head=3, vocab_size=50, seq_len=12, d_ff=100),
    dict(n_layer=2, d_model=32, n_head=2, vocab_size=64, seq_len=16, experts=4, top_k=1),
    dict(n_layer=2, d_model=32, n_head=2, vocab_size=64, seq_len=16, experts=8, top_k=2, d_expert=32),
    dict(
        n_layer=3,
        d_model=24,
        n_head=3,
        vocab_size=40,
        seq_len=8,
        experts=4,
        top_k=2,
        d_expert=24,
        shared_experts=2,
        tied_head=False,
    ),
    dict(n_layer=1, d_model=16, n_head=2, vocab_size=16, seq_len=8, experts=3, top_k=3),
]


@pytest.mark.parametrize("shape", SHAPES)
def test_total_params_equal_numel(shape):
    m = ModelSpec(**shape)
    model = GPT(m)
    counts = count_params(m)
    assert counts.total == sum(p.numel() for p in model.parameters())
    emb = model.wte.weight.numel() + model.wpe.weight.numel()
    if not m.tied_head:
        emb += model.head.weight.numel()
    assert counts.embedding == emb
    assert counts.nonembedding == counts.total - emb


@pytest.mark.parametrize("shape", [s for s in SHAPES if s.get("experts", 1) > 1])
def test_moe_active_params(shape):
    m = ModelSpec(**shape)
    model = GPT(m)
    c = count_params(m)
    one_expert = sum(p[0].numel() for p in (model.blocks[0].ffn.w_in, model.blocks[0].ffn.w_out))
    assert c.per_routed_expert == one_expert == 2 * m.d_model * m.d_expert
    assert c.active == c.total - m.n_layer * (m.experts - m.top_k) * one_expert
    assert c.active_nonembedding == c.nonembedding - (c.total - c.active)
    if m.top_k < m.experts:
        assert c.active < c.total
    # active = embeddings + attention + router + shared + top_k routed (+ norms)
    d = m.d_model
    per_layer = 2 * d + 4 * d * d + d * m.experts + (m.shared_experts + m.top_k) * one_expert
    assert c.active == c.embedding + m.n_layer * per_layer + d


def test_dense_active_is_total_and_kaplan_nonembedding():
    m = ModelSpec(n_layer=4, d_model=64, n_head=4, vocab_size=256, seq_len=32)
    c = count_params(m)
    assert c.active == c.total
    # Kaplan's approximation 12·L·d² plus the norms
    assert c.nonembedding == 12 * 4 * 64 * 64 + (2 * 4 + 1) * 64


@pytest.mark.parametrize("shape", SHAPES)
def test_forward_flops_match_flop_counter(shape):
    m = ModelSpec(**shape)
    model = GPT(m)
    idx = torch.randint(0, m.vocab_size, (3, m.seq_len))
    # the math SDPA backend decomposes attention into counted matmuls
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(idx)
    assert counter.get_total_flops() == forward_matmul_flops_per_token(m) * 3 * m.seq_len


def test_flop_conventions():
    m = ModelSpec(n_layer=2, d_model=32, n_head=2, vocab_size=64, seq_len=16)
    c = count_params(m)
    assert flops_per_token(m, "6n") == 6 * c.total
    assert flops_per_token(m, "kaplan") == 6 * c.nonembedding + 6 * 2 * 16 * 32
    assert flops_per_token(m, "chinchilla") == 3 * forward_matmul_flops_per_token(m)
    assert training_flops(m, 1000) == 1000 * flops_per_token(m, "chinchilla")
    assert training_flops(m, 1000, "6n") == 6000 * c.total
    moe = ModelSpec(n_layer=2, d_model=32, n_head=2, vocab_size=64, seq_len=16, experts=8, top_k=2)
    assert flops_per_token(moe, "6n") == 6 * count_params(moe).active
    with pytest.raises(ValueError, match="unknown FLOP convention"):
        flops_per_token(m, "8n")


@pytest.mark.parametrize("target", [1e4, 3e4, 1e5, 3e5, 1e6, 3e6])
def test_shape_for_params_rule_and_nearest(target):
    kw = dict(d_head=16, aspect_ratio=16, vocab_size=64, seq_len=64)
    m = shape_for_params(target, **kw)
    assert m.d_head == 16 and m.d_model % 16 == 0 and m.d_ff == 4 * m.d_model
    assert m.d_model == max(16, round(16 * m.n_layer / 16) * 16)
    n = count_params(m).total
    for other in (m.n_layer - 1, m.n_layer + 1):  # neighbours are no closer in log space
        if other >= 1:
            d = max(16, round(16 * other / 16) * 16)
            o = count_params(ModelSpec(other, d, d // 16, 64, 64)).total
            assert abs(math.log(n / target)) <= abs(math.log(o / target)) + 1e-12


def test_shape_for_params_moe_keeps_dense_base_and_rejects_tiny():
    dense = shape_for_params(1e5, d_head=16, aspect_ratio=16, vocab_size=64, seq_len=64)
    moe = shape_for_params(1e5, d_head=16, aspect_ratio=16, vocab_size=64, seq_len=64, experts=4, top_k=1)
    assert (moe.n_layer, moe.d_model) == (dense.n_layer, dense.d_model) and moe.experts == 4
    with pytest.raises(SpecError) as e:
        shape_for_params(100, d_head=16, aspect_ratio=16, vocab_size=256, seq_len=64)
    assert e.value.field == "size" and "raise the size" in str(e.value)


def test_accounting_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, trainer, trainer.accounting, trainer.spec; "
        "trainer.count_params; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- architecture options

ARCH_COMBOS = [
    dict(pos=p, activation=a, norm=n, objective=o)
    for p in ("learned", "sinusoidal", "rope", "none")
    for a in ("gelu", "relu", "swiglu")
    for n in ("pre", "post")
    for o in ("clm", "mlm")
    if not (p == "none" and o == "mlm")
]
ARCH_SHAPES = [
    dict(n_layer=2, d_model=24, n_head=2, vocab_size=20, seq_len=8, d_ff=50),
    dict(
        n_layer=1,
        d_model=16,
        n_head=2,
        vocab_size=12,
        seq_len=6,
        experts=4,
        top_k=2,
        d_expert=20,
        shared_experts=1,
        tied_head=False,
    ),
]


@pytest.mark.parametrize("shape", ARCH_SHAPES, ids=["dense", "moe"])
@pytest.mark.parametrize("arch", ARCH_COMBOS, ids=lambda a: "-".join(a.values()))
def test_every_architecture_is_counted_exactly(arch, shape):
    m = ModelSpec(**shape, **arch)
    model = GPT(m)
    counts = count_params(m)
    assert counts.total == sum(p.numel() for p in model.parameters())
    emb = model.wte.weight.numel() + (model.wpe.weight.numel() if model.wpe is not None else 0)
    if not m.tied_head:
        emb += model.head.weight.numel()
    assert counts.embedding == emb
    assert model.wte.weight.shape[0] == m.vocab_size + (arch["objective"] == "mlm")
    if m.is_moe:
        one = sum(p[0].numel() for p in (model.blocks[0].ffn.w_in, model.blocks[0].ffn.w_out))
        assert counts.per_routed_expert == one
        assert counts.active == counts.total - m.n_layer * (m.experts - m.top_k) * one
    idx = torch.randint(0, m.vocab_size, (2, m.seq_len))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        logits, _, _ = model(idx)
    assert logits.shape == (2, m.seq_len, m.vocab_size)  # the mask token is never a logit
    assert counter.get_total_flops() == forward_matmul_flops_per_token(m) * 2 * m.seq_len


def test_swiglu_keeps_the_ungated_parameter_count():
    """Hidden width round(2/3·d_ff): exact parity when 3 divides d_ff, within 1 row otherwise."""
    base = dict(n_layer=2, d_model=24, n_head=2, vocab_size=20, seq_len=8)
    for d_ff in (96, 100):
        gelu = count_params(ModelSpec(**base, d_ff=d_ff)).total
        swiglu = count_params(ModelSpec(**base, d_ff=d_ff, activation="swiglu")).total
        if d_ff % 3 == 0:
            assert swiglu == gelu
        assert abs(swiglu - gelu) <= 2 * 3 * 24  # at most half a hidden unit per layer


def test_architecture_spec_errors_name_the_key():
    base = dict(n_layer=1, d_model=16, n_head=2, vocab_size=12, seq_len=6)
    with pytest.raises(SpecError) as e:
        ModelSpec(**base, pos="alibi")
    assert e.value.field == "model.pos" and "learned, sinusoidal, rope, none" in str(e.value)
    with pytest.raises(SpecError) as e:
        ModelSpec(**base, pos="none", objective="mlm")
    assert e.value.field == "model.pos" and "position-free" in str(e.value)
    with pytest.raises(SpecError) as e:
        ModelSpec(**base, activation="tanh")
    assert e.value.field == "model.activation" and "gelu, relu, swiglu" in str(e.value)
