"""Approach 3 against the checks table of SCALING.md (Epoch subset of 240 points unless said)."""

import numpy as np
import pytest
from scipy.optimize import minimize

from analysis import ChinchillaFit, check_convergence, compute_optimal, huber_objective
from analysis.laws.chinchilla import (
    CHINCHILLA_PUBLISHED,
    _fg_batch,
    allocation_constants,
    hoffmann_grid,
    params_to_theta,
    predict_loss,
)

from .conftest import rel


def test_data_and_outlier_policy(epoch_all, epoch_points):
    assert len(epoch_all) == 245
    assert len(epoch_points) == 240
    assert epoch_points.excluded == {"outlier (top-loss)": 5}
    assert epoch_points.loss.max() < 3.4470
    assert epoch_points.dropped["loss"].min() >= 3.4469
    assert any("outlier policy" in n for n in epoch_points.notes)
    # D is derived from C as C / (6N)
    np.testing.assert_allclose(epoch_points.D * 6 * epoch_points.N, epoch_points.C, rtol=1e-12)


def test_grid_is_hoffmanns():
    g = hoffmann_grid()
    assert g.shape == (4500, 5)
    assert sorted(set(g[:, 3])) == [0, 0.5, 1, 1.5, 2]
    assert sorted(set(g[:, 1])) == [0, 5, 10, 15, 20, 25]


def test_full_grid_fit(epoch_fit):
    f = epoch_fit
    assert f.success_ and f.converged_, f.message_
    assert abs(f.E_ - 1.8172) <= 0.002
    assert abs(f.alpha_ - 0.3473) <= 0.002
    assert abs(f.beta_ - 0.3672) <= 0.002
    assert rel(f.A_, 477.8) <= 0.02
    assert rel(f.B_, 2143) <= 0.03
    assert f.objective_ <= 1.0183e-3
    assert f.n_starts_ == 4500 and f.n_points_ == 240


def test_implied_exponents_and_tokens_per_param(epoch_fit):
    assert abs(epoch_fit.exponents_["a"] - 0.514) <= 0.003
    co = epoch_fit.compute_optimal([1e21, 1e24])
    assert abs(co.tokens_per_param[0] - 21.4) <= 0.5
    assert abs(co.tokens_per_param[1] - 17.6) <= 0.5
    # allocation is consistent: 6 N D = C and the loss is the law's prediction
    np.testing.assert_allclose(6 * co.n_params * co.tokens, co.flops, rtol=1e-10)
    np.testing.assert_allclose(co.loss, epoch_fit.predict(co.n_params, co.tokens))


def test_allocation_is_the_loss_minimum_at_fixed_compute(epoch_fit):
    C = 1e22
    N = np.logspace(8, 12, 20001)
    L = epoch_fit.predict(N, C / (6 * N))
    n_best = N[np.argmin(L)]
    assert rel(n_best, epoch_fit.compute_optimal([C]).n_params[0]) < 1e-3


def test_objective_at_chinchilla_published(epoch_points):
    f = huber_objective(CHINCHILLA_PUBLISHED, epoch_points.N, epoch_points.D, epoch_points.loss)
    assert rel(f, 4.121e-3) < 1e-3


def test_allocation_with_rounded_published_params():
    k = allocation_constants(CHINCHILLA_PUBLISHED)
    assert rel(k["G"], 1.3447) < 1e-4
    assert abs(k["a"] - 0.45161) < 1e-5
    co = compute_optimal(CHINCHILLA_PUBLISHED, [5.76e23, 1e21])
    assert rel(co.n_params[0], 3.219e10) < 1e-3
    assert abs(co.tokens_per_param[1] - 50.08) < 0.01


def test_all_245_points_outliers_kept(epoch_all):
    f = ChinchillaFit().fit(epoch_all.N, epoch_all.D, epoch_all.loss)
    assert f.converged_
    assert abs(f.E_ - 1.891) < 0.002
    assert abs(f.alpha_ - 0.349) < 0.002
    assert abs(f.beta_ - 0.453) < 0.002
    assert epoch_all.excluded == {}  # nothing dropped silently


def test_optimiser_guard(epoch_points):
    """Plain L-BFGS-B (scipy defaults) from Chinchilla's values stops early; reject it."""
    lN, lD, lL = np.log(epoch_points.N), np.log(epoch_points.D), np.log(epoch_points.loss)

    def fun(x):
        return float(_fg_batch(x[None], lN, lD, lL, 1e-3)[0][0])

    x0 = params_to_theta(CHINCHILLA_PUBLISHED)
    res = minimize(fun, x0, method="L-BFGS-B")
    assert res.success  # scipy calls it converged ...
    assert res.nit < 20
    assert res.fun > 1.1e-3  # ... 14% above the optimum ...
    assert np.allclose(np.exp(res.x[1:3]), [406.4, 410.7], rtol=1e-3)  # A, B never moved
    stopped = {
        "E": np.exp(res.x[0]),
        "A": np.exp(res.x[1]),
        "B": np.exp(res.x[2]),
        "alpha": res.x[3],
        "beta": res.x[4],
    }
    rep = check_convergence(stopped, epoch_points.N, epoch_points.D, epoch_points.loss)
    assert not rep.converged and "stopped early" in rep.message
    assert rep.polished_objective <= 1.0184e-3
    # Chinchilla's own values are not an optimum either
    assert not check_convergence(
        CHINCHILLA_PUBLISHED, epoch_points.N, epoch_points.D, epoch_points.loss
    ).converged


def test_fitter_does_not_accept_an_early_stop(epoch_points):
    """A fitter whose only start is Chinchilla's point still ends at the true optimum,
    because the candidate goes through the convergence check and its polish."""
    f = ChinchillaFit(grid=params_to_theta(CHINCHILLA_PUBLISHED)[None]).fit(
        epoch_points.N, epoch_points.D, epoch_points.loss
    )
    assert f.converged_
    assert f.objective_ <= 1.0183e-3


def test_synthetic_noise_free_same_design(epoch_points, epoch_fit):
    truth = epoch_fit.params_
    L = predict_loss(truth, epoch_points.N, epoch_points.D)
    f = ChinchillaFit().fit(epoch_points.N, epoch_points.D, L)
    assert f.converged_, f.message_
    for k, v in truth.items():
        assert rel(f.params_[k], v) < 1e-4, k


def test_synthetic_noisy_realistic_design(rng):
    """A grid of 7 sizes x 6 token counts, 1% lognormal noise: parameters recovered roughly."""
    truth = {"E": 1.7, "A": 400.0, "B": 1500.0, "alpha": 0.33, "beta": 0.30}
    N = np.repeat(np.logspace(7, 10, 7), 6)
    D = np.tile(np.logspace(9, 12, 6), 7)
    L = predict_loss(truth, N, D) * np.exp(rng.normal(0, 0.01, N.size))
    f = ChinchillaFit().fit(N, D, L)
    assert f.converged_
    assert abs(f.E_ - 1.7) < 0.1
    assert abs(f.alpha_ - 0.33) < 0.05 and abs(f.beta_ - 0.30) < 0.05


@pytest.mark.parametrize(
    "case,kw,expect",
    [
        ("single size", dict(N=[1e8] * 10, D=np.logspace(9, 11, 10)), "single model size"),
        ("single D", dict(N=np.logspace(7, 9, 10), D=[1e10] * 10), "single token count"),
        (
            "too few",
            dict(N=[1e7, 1e8, 1e9, 1e7, 1e8], D=[1e9, 1e9, 1e9, 1e10, 1e10]),
            "more points than parameters",
        ),
        ("nan", dict(N=[1e7, 1e8, np.nan, 1e7, 1e8, 1e9, 2e9], D=[1e9] * 4 + [1e10] * 3), "non-finite"),
        ("negative", dict(N=[1e7, 1e8, -1e9, 1e7, 1e8, 1e9, 2e9], D=[1e9] * 4 + [1e10] * 3), "non-positive"),
    ],
)
def test_unidentifiable_is_reported_not_raised(case, kw, expect):
    N = np.asarray(kw["N"], float)
    D = np.asarray(kw["D"], float)
    L = 2 + 1 / np.sqrt(np.abs(np.nan_to_num(N, nan=1.0))) + 1 / np.sqrt(D)
    f = ChinchillaFit().fit(N, D, L)
    assert not f.success_ and not f.identifiable_ and not f.converged_
    assert "unidentifiable" in f.message_ and expect in f.message_
    assert np.isnan(f.alpha_)
