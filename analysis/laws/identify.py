"""Honest fits: is every parameter determined by the data, and did the optimiser finish?

Identifiability is read from the curvature of the fit, not from its success: the Gauss-Newton
matrix J^T J of the log-loss residuals (J = d log L^ / d parameters at the optimum, columns
scaled to unit length so units do not matter) has a (near) zero eigenvalue exactly when some
direction in parameter space leaves every prediction unchanged. With two model sizes, for
example, E, A and alpha trade off exactly (the objective is the same for every E in a wide
range): the fit may "succeed" but its E, and everything derived from it, is arbitrary. The
parameters named are the ones that move most along each flat direction.

Convergence is judged relative to the objective: a tight polish from the returned point that
lowers the objective by less than CONVERGED_RTOL (relative) means the point is an optimum.
"""

from __future__ import annotations

import numpy as np

# a direction is flat when its curvature is below this fraction of the largest one: exact
# degeneracies sit at ~1e-16, the worst identified designs tried (3 sizes x 3 budgets, one
# decade each) above 1e-9
FLAT_RTOL = 1e-11
CONVERGED_RTOL = 1e-9  # a polish lowering the objective by less than this (relative): converged
# names of the free-form parameters in theta order (log E, log A, log B, alpha, beta)
THETA_NAMES = ("E", "A", "B", "alpha", "beta")


def log_loss_jacobian(theta, N, D) -> np.ndarray:
    """(P, 5) d log L^ / d theta at the points, theta = (log E, log A, log B, alpha, beta):
    the softmax weights of the log-sum-exp terms."""
    e, a, b, al, be = (float(v) for v in theta)
    lN, lD = np.log(np.asarray(N, float)), np.log(np.asarray(D, float))
    t = np.stack([np.full_like(lN, e), a - al * lN, b - be * lD], axis=1)
    w = np.exp(t - t.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    return np.stack([w[:, 0], w[:, 1], w[:, 2], -w[:, 1] * lN, -w[:, 2] * lD], axis=1)


def flat_parameters(J: np.ndarray, names, *, rtol: float = FLAT_RTOL, weights=None) -> list[str]:
    """The parameters along flat directions of J^T J (J: (P, n) Jacobian of the residuals in
    the fit's own parameters, `names` theirs). Empty when every direction is curved."""
    J = np.asarray(J, float)
    if weights is not None:
        J = J * np.sqrt(np.asarray(weights, float))[:, None]
    if not np.all(np.isfinite(J)):
        return list(names)
    norms = np.linalg.norm(J, axis=0)
    dead = [n for n, v in zip(names, norms) if not v > 0]
    if dead:
        return dead
    Js = J / norms
    w, V = np.linalg.eigh(Js.T @ Js)
    out: list[str] = []
    for i in np.flatnonzero(w < rtol * max(float(w.max()), 1e-300)):
        v = np.abs(V[:, i])
        for j in np.argsort(-v):
            if (v[j] >= 0.1 or not out) and names[j] not in out:
                out.append(names[j])
    return out


def flat_message(flat: list[str], n_points: int) -> str:
    """The message of a fit with flat directions (starts with "unidentifiable")."""
    return (
        f"unidentifiable: flat direction in {', '.join(flat)} (the objective does not change "
        f"along it on these {n_points} points, so {'it is' if len(flat) == 1 else 'they are'} not "
        "determined); add runs that vary it (more model sizes or token budgets) or fix a "
        "parameter (--form tied, --form fixed-e)"
    )


def relative_drop(f0: float, f1: float, floor: float = 0.0) -> float:
    """(f0 - f1) / max(|f0|, floor), never negative."""
    return max(0.0, (f0 - min(f0, f1)) / max(abs(f0), floor, 1e-300))
