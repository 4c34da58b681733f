"""Model checking: pointwise log-likelihoods for leave-one-out cross-validation
and the comparison of fitted models.

In a two-level model the unit left out is a whole cluster (its rows and its
level-2 outcomes), with the cluster effects integrated out, so PSIS-LOO
estimates how well the model predicts a new cluster
(:func:`bayes_msem.engines.collapsed_slopes.cluster_log_likelihood`; with
ordinal variables by importance sampling,
:mod:`bayes_msem.engines.ordinal_clusters`). In a single-level model the unit
is a row.
"""

from __future__ import annotations

import numpy as np

from bayes_msem.matrices import level_moments

__all__ = ["row_log_likelihood", "compare"]


def row_log_likelihood(spec, theta_draws: np.ndarray) -> np.ndarray:
    """log p(y_i | parameters) of every row of a single-level model: (chains, draws, rows)."""
    data, structure = spec.data, spec.within
    y, x = data.within_outcomes, data.within_covariates
    p = y.shape[1]
    out = np.empty(theta_draws.shape[:2] + (len(y),))
    for c, chain in enumerate(theta_draws):
        for d, theta in enumerate(chain):
            moments = level_moments(theta, structure)
            residual = y - moments.mean - x @ moments.Pi.T
            chol = np.linalg.cholesky(moments.Sigma)
            white = np.linalg.solve(chol, residual.T)
            out[c, d] = -0.5 * (p * np.log(2 * np.pi) + 2 * np.log(np.diag(chol)).sum() + (white**2).sum(axis=0))
    return out


def compare(results: dict, ic: str = "loo"):
    """Compare fitted models by leave-one-cluster-out (PSIS-LOO) expected log
    predictive density (or ``ic="waic"``): ArviZ's comparison table, best
    model first.

    ``results`` maps a name to a :class:`~bayes_msem.results.FitResult`. All
    must be fitted to the same data (the same clusters or rows).
    """
    from bayes_msem.results import _import_arviz

    az = _import_arviz()
    units = {name: _unit(result) for name, result in results.items()}
    if len({tuple(u) for u in units.values()}) > 1:
        raise ValueError("the models were fitted to different clusters or rows; LOO compares models of the same data")
    return az.compare({name: result.idata for name, result in results.items()}, ic=ic)


def _unit(result) -> list:
    if not result.add_log_likelihood():
        raise ValueError("this result has no pointwise log-likelihood: LOO needs the marginal likelihood per "
                         "cluster, which models with random slopes on latent within variables lack so far, and "
                         "cross-classified models too (their likelihood does not factor over the units of either "
                         "classification)")
    loglik = result.idata.log_likelihood["loglik"]
    return list(loglik[loglik.dims[-1]].values)
