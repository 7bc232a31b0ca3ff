"""Architecture comparison on synthetic studies whose true laws are known."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from analysis.compare import compare_architectures, compute_multiplier, length_table
from analysis.report.compare import architecture_section

BASE = dict(E=1.7, A=400.0, alpha=0.34, B=410.0, beta=0.28)
LAWS = {
    "learned-gelu-pre-clm": BASE,
    "rope-swiglu-pre-clm": dict(BASE, A=280.0, B=290.0),  # a better constant only
    "learned-relu-pre-clm": dict(BASE, alpha=0.45),
}  # a steeper N exponent


def synthetic(laws, objective="clm", experts=1, noise=0.003, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for arch, p in laws.items():
        pos, act, norm, _ = arch.split("-")
        for N in np.geomspace(1e6, 1e8, 4):
            for D in np.geomspace(1e8, 1e10, 4):
                loss = (p["E"] + p["A"] / N ** p["alpha"] + p["B"] / D ** p["beta"]) * np.exp(
                    rng.normal(0, noise)
                )
                rows.append(
                    dict(
                        n_params=N,
                        tokens=D,
                        flops=6 * N * D,
                        loss=loss,
                        arch=f"{pos}-{act}-{norm}-{objective}",
                        pos=pos,
                        activation=act,
                        norm=norm,
                        objective=objective,
                        experts=experts,
                        top_k=1,
                    )
                )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def comparison():
    return compare_architectures(synthetic(LAWS), n_boot=10)


def test_delta_exponent_intervals_separate_constant_from_exponent_changes(comparison):
    (c,) = comparison
    assert c.baseline == "learned-gelu-pre-clm"
    ci = c.joint.result_.ci95
    lo, hi = ci["delta_alpha[learned-relu-pre-clm]"]
    assert 0 < lo < 0.11 < hi  # true Δα = 0.11: detected
    for key in ("delta_alpha[rope-swiglu-pre-clm]", "delta_beta[rope-swiglu-pre-clm]"):
        lo, hi = ci[key]
        assert lo < 0 < hi  # constant only: not distinguishable
    assert abs(c.joint.result_.params["E"] - 1.7) < 0.05


def test_compute_multiplier_matches_the_true_laws(comparison):
    (c,) = comparison
    m = c.multipliers[c.multipliers["variant"] == "rope-swiglu-pre-clm"]
    true = compute_multiplier(LAWS["rope-swiglu-pre-clm"], BASE, m["flops"].to_numpy())
    assert np.all(true > 5)  # 0.7x the reducible terms: ~10x compute
    assert np.all(np.abs(np.log(m["multiplier"] / true)) < 0.25)
    assert np.all(m["lo"] <= m["multiplier"]) and np.all(m["multiplier"] <= m["hi"])
    # a steeper exponent: the advantage grows with compute
    relu = c.multipliers[c.multipliers["variant"] == "learned-relu-pre-clm"]["multiplier"]
    assert relu.is_monotonic_increasing and relu.iloc[0] > 1


def test_crossover_is_found_where_a_worse_constant_meets_a_steeper_exponent():
    laws = {
        "learned-gelu-pre-clm": BASE,
        "rope-gelu-pre-clm": dict(BASE, A=2000.0, alpha=0.45),
    }  # worse small, better large
    (c,) = compare_architectures(synthetic(laws), n_boot=2)
    (x,) = c.crossovers["rope-gelu-pre-clm"]
    p = c.joint.params_of(c.joint.theta_, "rope-gelu-pre-clm")
    b = c.joint.params_of(c.joint.theta_, c.baseline)
    assert compute_multiplier(p, b, [x / 10])[0] < 1 < compute_multiplier(p, b, [x * 10])[0]


def test_never_pools_objectives_or_moe_settings():
    frame = pd.concat(
        [
            synthetic(LAWS),
            synthetic(
                {"learned-gelu-pre-clm": BASE, "rope-gelu-pre-clm": dict(BASE, A=300.0)}, objective="mlm"
            ),
            synthetic({"learned-gelu-pre-clm": BASE}, experts=8),
        ]
    )
    comps = compare_architectures(frame, n_boot=0)
    assert [c.stratum for c in comps] == ["clm", "mlm"]  # the MoE stratum has one variant
    assert comps[1].baseline == "learned-gelu-pre-mlm"
    assert set(comps[1].joint.variants_) == {"learned-gelu-pre-mlm", "rope-gelu-pre-mlm"}


def test_report_section_has_multiplier_and_delta_exponent_intervals():
    frame = synthetic(LAWS)
    frame["val_loss_len1x"] = frame["loss"]
    frame["val_loss_len4x"] = np.where(frame["pos"] == "learned", np.nan, frame["loss"] + 0.3)
    sec = architecture_section(frame, n_boot=3)
    md = sec["markdown"]
    assert sec["title"] == "Architecture comparison"
    assert "Δα vs baseline [95%]" in md and "Effective compute multiplier" in md
    assert "rope-swiglu-pre-clm" in md and "not distinguishable" in md and "| differ |" in md
    assert "Length extrapolation" in md and "n/a" in md
    assert set(sec["figures"]) == {
        "arch_compute_multiplier.png",
        "arch_loss_vs_compute.png",
        "arch_length_extrapolation.png",
    }


def test_length_table_uses_the_longest_run_per_size_and_leaves_learned_na():
    frame = synthetic({"learned-gelu-pre-clm": BASE, "rope-gelu-pre-clm": BASE})
    frame["val_loss_len2x"] = np.where(frame["pos"] == "rope", frame["loss"] + 0.1, np.nan)
    t = length_table(frame)
    assert len(t) == 2 * 4 and set(t["arch"]) == {"learned-gelu-pre-clm", "rope-gelu-pre-clm"}
    rope = t[t["arch"] == "rope-gelu-pre-clm"]
    assert np.allclose(rope["len2x"] - rope["loss"], 0.1)
    assert t[t["arch"] == "learned-gelu-pre-clm"]["len2x"].isna().all()


def test_compare_does_not_import_torch_or_ray():
    code = "import sys, analysis.compare; print('torch' in sys.modules or 'ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
