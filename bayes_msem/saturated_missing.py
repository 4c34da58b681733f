"""The saturated (unrestricted) model fitted to data with missing values, for
the posterior predictive checks (:mod:`bayes_msem.predictive`).

The saturated model is the one of :mod:`bayes_msem.predictive` (lavaan's
"h1"): level-1 outcomes regressed on the level-1 covariates with a free
within covariance; between parts and level-2 outcomes regressed on the
level-2 covariates with a free between covariance (split variables get no
between intercept). With missing values it has no closed form and no simple
EM (each cluster's effects and each row's missing values are coupled). It is
fitted here by maximizing the exact observed-data log-likelihood, the same
function the sampler uses (:func:`bayes_msem.engines.missing.cluster_terms`),
with its gradient from JAX and L-BFGS. The covariances are parametrized by
Cholesky factors with log-diagonals, so every step stays positive definite.

A replicated data set keeps the observed data's missing values (the same
holes), so its statistics have the same shapes and one compiled function
serves every replicate; each fit starts from the observed data's estimates.
On tests/data/mar_outcome.csv this reaches a higher maximum than lavaan
0.6-14's EM (whose ``unrestricted.logl`` is below its own model's logL there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bayes_msem.data import ClusterData
from bayes_msem.matrices import LevelMoments

__all__ = ["SaturatedFit", "MissingSaturated"]


@dataclass(frozen=True)
class SaturatedFit:
    """Maximized log-likelihood and the lower triangles of the within and
    between covariance estimates (between: split parts, then level-2 outcomes)."""

    loglik: float
    covariances: np.ndarray
    vector: np.ndarray  # the unconstrained estimates, a start for the next fit


class MissingSaturated:
    """The saturated model of one model's data layout, compiled once.

    ``fit(data)`` fits it to the observed data or to a replicate with the same
    holes (:func:`with_holes_of`)."""

    def __init__(self, spec):
        self.spec = spec
        layout = spec.layout
        self.level = layout.levels[1] if layout.multilevel else None
        self.p = spec.within.n_observed
        self.q = spec.data.within_covariates.shape[1]
        if self.level is not None:
            b_b, z_b, _ = self.level.placement
            self.order = np.concatenate([b_b, z_b]).astype(int)  # saturated between variables -> observed positions
            self.n_split, self.k = len(b_b), len(b_b) + len(z_b)
            self.n_between = spec.between.n_observed
            self.qw = spec.data.between_covariates.shape[1]
            self._placing = np.zeros((self.n_between, self.k))
            self._placing[self.order, np.arange(self.k)] = 1.0
        else:
            self.order, self.n_split, self.k, self.n_between, self.qw = np.zeros(0, int), 0, 0, 0, 0
        self._objective = None

    # unconstrained vector: within mean, Pi, Cholesky (log-diagonal); between intercepts of z, Pi_B, Cholesky
    def _sizes(self) -> list[int]:
        p, q, k = self.p, self.q, self.k
        return [p, p * q, p * (p + 1) // 2, k - self.n_split, k * self.qw, k * (k + 1) // 2]

    def _moments(self, vector, xp):
        """The two levels' moments at an unconstrained vector, as LevelMoments
        with no latent nodes (what :func:`cluster_terms` reads)."""
        pieces, start = [], 0
        for size in self._sizes():
            pieces.append(vector[start:start + size])
            start += size
        mean, pi, chol_w, z_mean, pi_b, chol_b = pieces
        p, q, k = self.p, self.q, self.k
        Sigma = _covariance(chol_w, p, xp)
        within = LevelMoments(mean=mean, Pi=pi.reshape((p, q)), Sigma=Sigma, total=xp.eye(p), A=None,
                              A_x=pi.reshape((p, q)), alpha=mean, S=Sigma)
        if self.level is None:
            return within, None
        E = self._placing  # (observed between variables, k): the saturated variables into their positions
        Pi_b = E @ pi_b.reshape((k, self.qw))
        alpha = E[:, self.n_split:] @ z_mean
        S = E @ _covariance(chol_b, k, xp) @ E.T
        between = LevelMoments(mean=alpha, Pi=Pi_b, Sigma=S, total=xp.eye(self.n_between), A=None, A_x=Pi_b,
                               alpha=alpha, S=S)
        return within, between


    def _compile(self):
        import jax
        import jax.numpy as jnp

        from bayes_msem.engines.missing import cluster_terms
        from bayes_msem.matrices import jax_backend

        backend = jax_backend()
        w = jnp.asarray(self.spec.data.between_covariates if self.level is not None else np.zeros((1, 0)))

        def negative(vector, stats):
            within, between = self._moments(vector, jnp)
            return -cluster_terms(stats, within, between, self.level, w, backend)["loglik"]

        self._objective = jax.jit(jax.value_and_grad(negative))

    def start(self, data: ClusterData) -> np.ndarray:
        """A start: the observed means and variances, no regression, no covariance."""
        y = data.within_outcomes
        mean = np.nan_to_num(np.nanmean(y, axis=0))
        variance = np.nan_to_num(np.nanvar(y, axis=0), nan=1.0) + 1e-3
        vector = [mean, np.zeros(self.p * self.q), _log_cholesky_of_diagonal(variance)]
        if self.level is not None:
            z = data.between_outcomes
            z_mean = np.nan_to_num(np.nanmean(z, axis=0)) if z.shape[1] else np.zeros(0)
            between_var = np.concatenate([0.2 * variance[_split_rows(self.level)],
                                          np.nan_to_num(np.nanvar(z, axis=0), nan=1.0) + 1e-3])
            vector += [z_mean, np.zeros(self.k * self.qw), _log_cholesky_of_diagonal(between_var)]
        else:
            vector += [np.zeros(0)] * 3
        return np.concatenate(vector)

    def fit(self, data: ClusterData, start: np.ndarray | None = None, stats: dict | None = None) -> SaturatedFit:
        """Maximum likelihood of the saturated model for ``data``; ``stats``, its
        :func:`~bayes_msem.engines.missing.missing_statistics` where the caller
        has them already."""
        import jax.numpy as jnp
        from scipy.optimize import minimize

        from bayes_msem.engines.missing import missing_statistics

        if self._objective is None:
            self._compile()
        stats = missing_statistics(self.spec, data) if stats is None else stats
        stats = {key: jnp.asarray(stats[key]) for key in _STATISTICS if key in stats}  # on the device once

        def objective(vector):
            value, gradient = self._objective(vector, stats)
            return float(value), np.asarray(gradient, dtype=float)

        x0 = self.start(data) if start is None else start
        result = minimize(objective, x0, jac=True, method="L-BFGS-B", options={"maxiter": 5000, "gtol": 1e-7})
        within, between = self._moments(result.x, np)
        triangles = [within.Sigma[np.tril_indices(self.p)]]
        if between is not None:
            Sigma_b = between.Sigma[np.ix_(self.order, self.order)]
            triangles.append(Sigma_b[np.tril_indices(self.k)])
        return SaturatedFit(loglik=-float(result.fun), covariances=np.concatenate(triangles), vector=result.x)


# what the summed likelihood reads (the per-row arrays serve per-unit likelihoods only)
_STATISTICS = ("patterns", "yy", "yx", "xx", "n", "sum_y", "sum_x", "z", "z_observed", "x_effects", "y_effects")


def _split_rows(level) -> np.ndarray:
    return level.placement.place.argmax(axis=0)


def _covariance(vector, size: int, xp):
    """L L' from a lower triangle stored row by row, with log-diagonal (any backend:
    the triangle is placed by a constant matrix, not by indexed assignment)."""
    rows, cols = np.tril_indices(size)
    values = xp.where(rows == cols, xp.exp(vector), vector)
    placing = np.zeros((size * size, len(rows)))
    placing[rows * size + cols, np.arange(len(rows))] = 1.0
    L = (placing @ values).reshape((size, size))
    return L @ L.T


def _log_cholesky_of_diagonal(variance: np.ndarray) -> np.ndarray:
    rows, cols = np.tril_indices(len(variance))
    return np.where(rows == cols, 0.5 * np.log(variance[rows]), 0.0)
