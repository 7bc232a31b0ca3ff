"""Plan the next runs: which (N, D) most shrink the uncertainty of the compute-optimal answer
per FLOP (Li et al. 2026, "Spend Less, Fit Better": variance reduction / cost^0.4).

Variance model (Laplace / Fisher, cheap enough to score hundreds of candidates at once):
the Approach 3 fit is an M-estimator on log-loss residuals r_i(theta), theta = (log E, log A,
log B, alpha, beta). Its covariance is sigma_eff^2 (J^T J)^-1 with J the Gauss-Newton Jacobian
of the residuals and sigma_eff^2 = E[psi^2] / E[psi']^2 for the Huber psi at the measured
residual scale (for delta << noise this is pi/2 * s^2, the L1 efficiency loss). The target
(log N_opt at C, or the predicted loss at C) gets its variance by the delta method. Adding a
run x changes the information by j(x) j(x)^T / sigma_eff^2, so the variance after adding it is
a Sherman-Morrison update: no refit per candidate. Greedy selection updates the covariance
after each pick. Validated against the run-level bootstrap in tests/analysis/test_planner.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.special import ndtr

from .laws.chinchilla import DEFAULT_DELTA, ChinchillaFit, predict_loss, theta_to_params

OBJECTIVES = ("log_n_opt", "loss")
Z95 = 1.959963984540054
PRIOR_SD = 10.0  # weak Gaussian prior on each theta component: keeps J^T J invertible
MIN_POINTS = 9  # below this (or < 3 distinct N or D) the planner proposes a seed design
LOG_E_FLOOR = -30.0  # log E below this is E = 0 for every loss scale
NOISE_FLOOR = 1e-3  # smallest residual sd (log loss) trusted from a handful of points


# ----------------------------------------------------------------------------- the model
def residual_jacobian(theta, N, D) -> np.ndarray:
    """(P, 5) d log L^ / d theta at the points: softmax weights of the log-sum-exp terms."""
    e, a, b, al, be = (float(v) for v in theta)
    lN, lD = np.log(np.asarray(N, float)), np.log(np.asarray(D, float))
    t = np.stack([np.full_like(lN, e), a - al * lN, b - be * lD], axis=1)
    w = np.exp(t - t.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    return np.stack([w[:, 0], w[:, 1], w[:, 2], -w[:, 1] * lN, -w[:, 2] * lD], axis=1)


def target_value(theta, target_flops: float, objective: str = "log_n_opt") -> float:
    """log N_opt(C) (Hoffmann's allocation, C = 6 N D) or the predicted loss at the optimum."""
    e, a, b, al, be = (float(v) for v in theta)
    if not (al > 0 and be > 0):
        return math.nan
    log_g = (math.log(al) + a - math.log(be) - b) / (al + be)
    log_n = log_g + be / (al + be) * math.log(target_flops / 6.0)
    if objective == "log_n_opt":
        return log_n
    log_d = -log_g + al / (al + be) * math.log(target_flops / 6.0)
    return float(predict_loss(theta_to_params(theta), math.exp(log_n), math.exp(log_d)))


def target_gradient(theta, target_flops: float, objective: str, h: float = 1e-6) -> np.ndarray:
    """Central differences of `target_value` in theta (5 pairs of evaluations: negligible)."""
    theta = np.asarray(theta, float)
    g = np.empty(5)
    for i in range(5):
        step = np.zeros(5)
        step[i] = h * max(1.0, abs(theta[i]))
        g[i] = (
            target_value(theta + step, target_flops, objective)
            - target_value(theta - step, target_flops, objective)
        ) / (2 * step[i])
    return g


def huber_noise_variance(residuals, delta: float = DEFAULT_DELTA, n_params: int = 5) -> float:
    """sigma_eff^2 = E[psi^2] / E[psi']^2 for Gaussian residuals of the measured scale s.

    s^2 = sum r^2 / (P - n_params), floored at NOISE_FLOOR^2. For delta >> s this is s^2 (least
    squares); for delta << s it tends to pi/2 s^2 (least absolute deviations)."""
    r = np.asarray(residuals, float)
    dof = max(r.size - n_params, 1)
    s = max(math.sqrt(float(np.sum(r**2)) / dof), NOISE_FLOOR)
    return sigma_eff2(s, delta)


def sigma_eff2(s: float, delta: float = DEFAULT_DELTA) -> float:
    """The Huber M-estimator's variance factor at Gaussian noise sd `s` (log loss)."""
    k = delta / s
    inside = 2 * ndtr(k) - 1  # P(|r| < delta) = E[psi']
    pdf = math.exp(-0.5 * k * k) / math.sqrt(2 * math.pi)
    e_psi2 = s * s * (inside - 2 * k * pdf) + delta * delta * (1 - inside)
    return e_psi2 / inside**2


@dataclass
class Laplace:
    """A fitted law's Gaussian approximation: theta, its covariance, the noise and the target."""

    theta: np.ndarray
    cov: np.ndarray  # (5, 5) covariance of theta
    sigma2: float  # sigma_eff^2 of one new run (log loss)
    target_flops: float
    objective: str
    value: float  # target at theta (log N_opt, or loss in nats)
    grad: np.ndarray  # d target / d theta
    n_points: int

    @property
    def variance(self) -> float:
        return float(self.grad @ self.cov @ self.grad)

    def ci95(self, variance: float | None = None) -> tuple[float, float]:
        """In natural units: N_opt in parameters (log-symmetric), or loss in nats."""
        sd = math.sqrt(max(self.variance if variance is None else variance, 0.0))
        if self.objective == "log_n_opt":
            return math.exp(self.value - Z95 * sd), math.exp(self.value + Z95 * sd)
        return self.value - Z95 * sd, self.value + Z95 * sd

    @property
    def natural_value(self) -> float:
        return math.exp(self.value) if self.objective == "log_n_opt" else self.value

    def relative_halfwidth(self, variance: float | None = None) -> float:
        """(hi - lo) / (2 value): `--until-ci 0.25` stops when this is below 0.25."""
        lo, hi = self.ci95(variance)
        return (hi - lo) / (2 * abs(self.natural_value))

    def add_runs(self, N, D) -> Laplace:
        """The model after adding runs at (N, D) with the measured noise (value unchanged)."""
        J = residual_jacobian(self.theta, N, D)
        info = np.linalg.inv(self.cov) + J.T @ J / self.sigma2
        return replace(self, cov=_sym_inv(info), n_points=self.n_points + len(J))


def _sym_inv(m: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(m)):
        return np.full_like(m, np.inf)
    out = np.linalg.pinv(0.5 * (m + m.T), hermitian=True)
    return 0.5 * (out + out.T)


def laplace(
    theta,
    N,
    D,
    loss,
    target_flops: float,
    objective: str = "log_n_opt",
    *,
    delta: float = DEFAULT_DELTA,
    sigma2: float | None = None,
) -> Laplace:
    """The Laplace approximation at fitted `theta` on points (N, D, loss).

    sigma2: the Huber-effective noise variance; by default measured from the residuals."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    theta = np.array(theta, float)
    theta[0] = max(theta[0], LOG_E_FLOOR)  # a fit at E = 0 (log E = -inf): keep it finite
    J = residual_jacobian(theta, N, D)
    if sigma2 is None:
        pred = np.log(predict_loss(theta_to_params(theta), N, D))
        sigma2 = huber_noise_variance(pred - np.log(np.asarray(loss, float)), delta)
    info = J.T @ J / sigma2 + np.eye(5) / PRIOR_SD**2
    return Laplace(
        theta=theta,
        cov=_sym_inv(info),
        sigma2=float(sigma2),
        target_flops=float(target_flops),
        objective=objective,
        value=target_value(theta, target_flops, objective),
        grad=target_gradient(theta, target_flops, objective),
        n_points=len(J),
    )


# ----------------------------------------------------------------------------- selection
def variance_after_each(model: Laplace, N, D) -> np.ndarray:
    """Target variance if ONE run at each candidate (N_i, D_i) were added (Sherman-Morrison)."""
    J = residual_jacobian(model.theta, N, D)  # (K, 5)
    Sj = J @ model.cov  # (K, 5): Sigma j per candidate
    gSj = Sj @ model.grad
    jSj = np.einsum("ij,ij->i", Sj, J)
    return model.variance - gSj**2 / (model.sigma2 + jSj)


@dataclass
class Pick:
    index: int  # into the candidate arrays
    n_params: float
    tokens: float
    flops: float
    variance_after: float  # target variance after this pick and the ones before it
    expected_ci95: tuple[float, float]
    score: float  # variance reduction / flops^gamma (in target units^2 / FLOP^gamma)


def greedy_picks(
    model: Laplace, N, D, cost, *, max_runs: int, max_flops: float = math.inf, gamma: float = 0.4, exclude=()
) -> list[Pick]:
    """Greedy: repeatedly take the candidate of best variance reduction / cost^gamma that still
    fits the remaining budget, updating the covariance after each pick. `exclude`: indices that
    must not be picked (points already done)."""
    N, D, cost = (np.asarray(v, float) for v in (N, D, cost))
    available = np.ones(N.size, bool)
    available[list(exclude)] = False
    picks: list[Pick] = []
    left, m = float(max_flops), model
    while len(picks) < max_runs:
        ok = available & (cost <= left)
        if not ok.any():
            break
        after = variance_after_each(m, N, D)
        score = np.where(ok, (m.variance - after) / cost**gamma, -np.inf)
        i = int(np.argmax(score))
        m = m.add_runs(N[i : i + 1], D[i : i + 1])
        available[i] = False
        left -= cost[i]
        picks.append(Pick(i, float(N[i]), float(D[i]), float(cost[i]), m.variance, m.ci95(), float(score[i])))
    return picks


def seed_design(N, D, cost, *, sizes: int = 3, budgets: int = 3, exclude=()) -> list[int]:
    """Indices of a sizes x budgets design spanning the candidates' N and D ranges (log-spaced,
    nearest candidate to each target); used when there are too few points to fit."""
    lN, lD = np.log(np.asarray(N, float)), np.log(np.asarray(D, float))
    taken = set(int(i) for i in exclude)
    out = []
    for tn in np.linspace(lN.min(), lN.max(), sizes):
        for td in np.linspace(lD.min(), lD.max(), budgets):
            d2 = (lN - tn) ** 2 + (lD - td) ** 2
            d2[list(taken)] = np.inf
            i = int(np.argmin(d2))
            if np.isfinite(d2[i]):
                taken.add(i)
                out.append(i)
    return out


def too_few_points(N, D) -> bool:
    """Not enough for an Approach 3 fit worth planning from."""
    N, D = np.asarray(N, float), np.asarray(D, float)
    return (
        N.size < MIN_POINTS
        or np.unique(np.round(np.log(N), 6)).size < 3
        or np.unique(np.round(np.log(D), 6)).size < 3
    )


# ----------------------------------------------------------------------------- the plan
@dataclass
class Plan:
    """What `suggest` prints. current/suggestions are in natural units (N_opt params, loss nats)."""

    target_flops: float
    objective: str
    value: float | None
    ci95: tuple[float, float] | None
    n_points: int
    picks: list[Pick]
    seed: bool  # True: too few points, the picks are a seed design
    message: str
    model: Laplace | None = field(default=None, repr=False)
    form: str | None = None  # the answer's form when `value`/`ci95` are the answer's
    interval: str = "laplace"  # what `ci95` is: "laplace" or "answer" (bootstrap with form selection)

    @property
    def flops_requested(self) -> float:
        return float(sum(p.flops for p in self.picks))

    def relative_halfwidth(self) -> float | None:
        """(hi - lo) / (2 value) of `ci95`: `--until-ci 0.25` stops when this is below 0.25."""
        if self.value is None or self.ci95 is None or not self.value:
            return None
        return (self.ci95[1] - self.ci95[0]) / (2 * abs(self.value))


def with_answer_interval(plan: Plan, answer) -> Plan:
    """The plan with the answer's value and 95% interval at its target (what the report and
    `fit` quote), and each pick's expected interval: the answer's narrowed by the planner's
    Laplace ratio sd_after / sd_now (in log N for N_opt, in nats for the loss)."""
    if plan.model is None or not answer.ok:
        return plan
    r = answer.row(plan.target_flops)
    key = "n_params" if plan.objective == "log_n_opt" else "loss"
    v, lo, hi = float(r[key]), float(r[f"{key}_lo"]), float(r[f"{key}_hi"])
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return replace(plan, form=answer.form)
    var0 = plan.model.variance
    picks = []
    for p in plan.picks:
        k = math.sqrt(max(p.variance_after, 0.0) / var0) if var0 > 0 else 1.0
        if key == "n_params":
            ci = (v * (lo / v) ** k, v * (hi / v) ** k)
        else:
            ci = (v - (v - lo) * k, v + (hi - v) * k)
        picks.append(replace(p, expected_ci95=ci))
    return replace(plan, value=v, ci95=(lo, hi), picks=picks, form=answer.form, interval="answer")


MAX_EXPONENT = 3.0  # alpha or beta above this: the points do not pin the law down


def degenerate(fit: ChinchillaFit, model: Laplace | None) -> str | None:
    """Why a fit is no base for planning (None if it is): failed, an exponent outside
    (0, MAX_EXPONENT), or a parameter the target depends on left at the prior's width."""
    if model is None:
        return f"the fit of {fit.n_points_} points failed ({fit.message_})"
    if not (0 < fit.alpha_ < MAX_EXPONENT and 0 < fit.beta_ < MAX_EXPONENT):
        return (
            f"the fit of {fit.n_points_} points is degenerate (alpha={fit.alpha_:.3g}, beta={fit.beta_:.3g})"
        )
    sd = np.sqrt(np.diag(model.cov))
    if not (np.all(np.isfinite(sd)) and np.isfinite(model.variance)):
        return f"the fit of {fit.n_points_} points gives no finite covariance"
    if np.any((sd > 0.5 * PRIOR_SD) & (model.grad != 0)):  # E does not move N_opt: ignored there
        return f"the {fit.n_points_} points do not identify the law's parameters the target needs"
    return None


def fit_points(N, D, loss, *, grid="coarse", delta: float = DEFAULT_DELTA) -> ChinchillaFit:
    return ChinchillaFit(delta=delta, grid=grid).fit(N, D, loss)


def plan_next_runs(
    N,
    D,
    loss,
    cand_N,
    cand_D,
    cand_cost,
    *,
    target_flops: float,
    objective: str = "log_n_opt",
    max_runs: int = 4,
    max_flops: float = math.inf,
    gamma: float = 0.4,
    exclude=(),
    fit: ChinchillaFit | None = None,
) -> Plan:
    """Fit the finished points and pick the next runs among the candidates (greedy, budgeted);
    with too few points (or an unusable fit) propose a seed design instead."""
    N, D, loss = (np.asarray(v, float) for v in (N, D, loss))
    cN, cD, cc = (np.asarray(v, float) for v in (cand_N, cand_D, cand_cost))
    if not too_few_points(N, D):
        fit = fit if fit is not None else fit_points(N, D, loss)
        model = (
            laplace(fit.theta_, N, D, loss, target_flops, objective, delta=fit.delta)
            if fit.success_
            else None
        )
        why = degenerate(fit, model)
        if why is None and model is not None:  # degenerate() is None only with a model
            picks = greedy_picks(
                model, cN, cD, cc, max_runs=max_runs, max_flops=max_flops, gamma=gamma, exclude=exclude
            )
            return Plan(
                target_flops,
                objective,
                model.natural_value,
                model.ci95(),
                N.size,
                picks,
                False,
                f"{len(picks)} run(s) chosen by variance reduction / FLOPs^{gamma:g}",
                model,
            )
    else:
        why = (
            f"{N.size} finished point(s) are too few for a fit (need >= {MIN_POINTS}, "
            "with >= 3 distinct N and D)"
        )
    idx = seed_design(cN, cD, cc, exclude=exclude)
    picks, left = [], max_flops
    for i in sorted(idx, key=lambda i: cc[i]):
        if cc[i] <= left:
            left -= cc[i]
            picks.append(
                Pick(i, float(cN[i]), float(cD[i]), float(cc[i]), math.nan, (math.nan, math.nan), math.nan)
            )
    return Plan(
        target_flops,
        objective,
        None,
        None,
        N.size,
        picks,
        True,
        f"seed design: {why}; run these {len(picks)} points (3 sizes x 3 budgets "
        "spanning the study's range), then ask again",
    )


# ----------------------------------------------------------------------------- report section
def ci_history(
    N,
    D,
    loss,
    flops,
    order,
    target_flops: float,
    objective: str = "log_n_opt",
    rounds=None,
    *,
    grid="coarse",
    max_prefixes: int = 24,
) -> list[dict]:
    """The target's 95% interval as points accumulate in `order` (finish time): one row per
    prefix that can be fitted (at most `max_prefixes`, evenly spaced, the last always), or per
    round when `rounds` (round of each point) is given."""
    N, D, loss, flops = (np.asarray(v, float) for v in (N, D, loss, flops))
    order = np.asarray(order)
    ends = list(range(1, len(order) + 1))
    if len(ends) > max_prefixes:
        ends = sorted({int(round(x)) for x in np.linspace(1, len(order), max_prefixes)})
    if rounds is not None:
        r = np.asarray(rounds)[order]
        ends = [i + 1 for i in range(len(order)) if i + 1 == len(order) or r[i + 1] != r[i]]
    rows = []
    for k in ends:
        idx = order[:k]
        if too_few_points(N[idx], D[idx]):
            continue
        fit = fit_points(N[idx], D[idx], loss[idx], grid=grid)
        if not fit.success_:
            continue
        m = laplace(fit.theta_, N[idx], D[idx], loss[idx], target_flops, objective)
        lo, hi = m.ci95()
        rows.append(
            {
                "n_points": k,
                "flops_spent": float(flops[idx].sum()),
                "value": m.natural_value,
                "lo": lo,
                "hi": hi,
                "round": None if rounds is None else int(np.asarray(rounds)[order][k - 1]),
            }
        )
    return rows


def ci_history_of(
    frame,
    target_flops: float,
    objective: str = "log_n_opt",
    *,
    n_col: str = "n_params",
    order_col=None,
    round_col=None,
    max_prefixes: int = 8,
) -> list[dict]:
    """`ci_history` for a study's points frame (analysis.data.Points.frame): runs in the order of
    `order_col` (e.g. an end time) within `round_col` (adaptive round; the `round` column when
    present), else by FLOPs."""
    import pandas as pd

    f = frame.reset_index(drop=True)
    round_col = round_col or ("round" if "round" in f.columns else None)
    keys = [c for c in (round_col, order_col or "flops") if c]
    order = f.sort_values(keys, kind="stable").index.to_numpy()
    rounds = None if round_col is None else pd.to_numeric(f[round_col]).fillna(0).to_numpy(int)
    return ci_history(
        f[n_col],
        f["tokens"],
        f["loss"],
        f["flops"],
        order,
        target_flops,
        objective,
        rounds,
        max_prefixes=max_prefixes,
    )
