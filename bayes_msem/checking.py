"""Model checking: pointwise log-likelihoods for leave-one-out cross-validation
and the comparison of fitted models.

In a two-level model the unit left out is a whole cluster (its rows and its
level-2 outcomes), with the cluster effects integrated out, so PSIS-LOO
estimates how well the model predicts a new cluster
(:func:`bayes_msem.engines.collapsed_slopes.cluster_log_likelihood`; with
ordinal variables by importance sampling,
:mod:`bayes_msem.engines.ordinal_clusters`); in a three-level model a whole
level-3 unit. In a single-level model the unit is a row.

A cross-classified model's likelihood does not factor over the units of either
classification, so there the unit is a row given the sampled effects of its
two units (:func:`crossed_row_log_likelihood`, brms's default for models with
group effects): PSIS-LOO then estimates how well the model predicts a new row
of the same units, not a new unit.
"""

from __future__ import annotations

import numpy as np

from bayes_msem.matrices import NUMPY_BACKEND, level_moments

__all__ = ["row_log_likelihood", "crossed_row_log_likelihood", "compare"]


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


def crossed_row_log_likelihood(spec, theta_draws: np.ndarray, effect_draws: np.ndarray | None,
                               unit_draws: np.ndarray | None) -> np.ndarray | None:
    """log p(y_i | parameters, the effects of row i's two units) of every row of
    a cross-classified model, (chains, draws, rows), from the sampled effects of
    the first (``effect_draws``: chains, draws, clusters, effects) and second
    classification (``unit_draws``): the terms of the sampler's own row
    likelihood (:func:`~bayes_msem.engines.missing.each_rows_own_means_logp`)
    at the rows' means given both units' effects
    (:func:`~bayes_msem.imputation.row_moments`). Missing values: each row's
    observed ones. None where a classification has outcomes of its own (they
    belong to no row) or a random slope on a modelled variable gives rows their
    own covariance."""
    from bayes_msem.data import missing_pattern_statistics
    from bayes_msem.engines.missing import each_rows_own_means_logp
    from bayes_msem.imputation import row_moments

    if effect_draws is None or unit_draws is None or any(level.outcomes for level in spec.layout.levels[1:]):
        return None
    stats = missing_pattern_statistics(spec.data)
    out = np.empty(theta_draws.shape[:2] + (spec.data.n_rows,))
    for c, chain in enumerate(theta_draws):
        for d, theta in enumerate(chain):
            mean, Sigma = row_moments(spec, theta, effect_draws[c, d], unit_draws[c, d])
            if Sigma.ndim != 2:
                return None
            out[c, d] = each_rows_own_means_logp(stats, Sigma, mean, NUMPY_BACKEND)
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
                         "per row in cross-classified models, which those with outcomes observed above the rows "
                         "or random slopes on modelled variables lack so far")
    loglik = result.idata.log_likelihood["loglik"]
    return list(loglik[loglik.dims[-1]].values)
