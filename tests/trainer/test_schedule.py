import math

import pytest

from trainer.schedule import cosine_lr, lr_at, wsd_lr

# (t, expected lr) with peak 1.0, warmup 100, total 1000, min_ratio 0.1
COSINE = [
    (0, 0.0),
    (50, 0.5),
    (100, 1.0),
    (550, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))),  # halfway: 0.55
    (1000, 0.1),
    (1200, 0.1),
]

# peak 2.0, warmup 100, cooldown from 800 to 1000 with 1 - sqrt
WSD = [
    (0, 0.0),
    (50, 1.0),
    (100, 2.0),
    (500, 2.0),
    (800, 2.0),
    (850, 2.0 * (1 - math.sqrt(0.25))),
    (900, 2.0 * (1 - math.sqrt(0.5))),
    (1000, 0.0),
]


@pytest.mark.parametrize("t,expected", COSINE)
def test_cosine_table(t, expected):
    assert cosine_lr(t, total=1000, warmup=100, peak=1.0, min_ratio=0.1) == pytest.approx(expected)


@pytest.mark.parametrize("t,expected", WSD)
def test_wsd_table(t, expected):
    assert wsd_lr(t, total=1000, warmup=100, peak=2.0, cooldown_start=800) == pytest.approx(expected)


def test_cosine_ends_exactly_at_budget_and_is_monotone_after_warmup():
    lrs = [cosine_lr(t, total=5000, warmup=250, peak=3e-3) for t in range(250, 5001, 50)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] == pytest.approx(3e-4)


def test_wsd_stable_phase_independent_of_budget():
    for t in range(0, 800, 37):
        a = wsd_lr(t, total=1000, warmup=100, peak=1.0, cooldown_start=800)
        b = wsd_lr(t, total=5000, warmup=100, peak=1.0, cooldown_start=4000)
        assert a == b


def test_no_warmup_and_dispatch():
    assert cosine_lr(0, total=100, warmup=0, peak=1.0) == pytest.approx(1.0)
    assert lr_at(10, schedule="wsd", total=100, warmup=0, peak=1.0, cooldown_start=80) == 1.0
    with pytest.raises(ValueError):
        lr_at(10, schedule="linear", total=100, warmup=0, peak=1.0)
