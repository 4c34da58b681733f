"""Ordinal variables in the latent engine: the probit likelihood of the rows.

An ordinal variable u is observed as the category k of its latent response u*
(``t_k <= u* < t_{k+1}``, with t_0 = -inf and t_K = +inf); u* is part of the
level's normal model like any continuous variable. Given the cluster effects,
a row's continuous values C and latent responses O* are jointly normal, so

    p(row) = p(C) * P(O* in its cell | C),

and where the ordinal variables are conditionally independent given C the
second factor is a product of differences of normal CDFs: exact, no sampling
of u*. Where a within factor links ordinal variables (the usual CFA of
questionnaire items) they are independent only given the factor, so the
factor scores are sampled per row (non-centered, ``row_factors``) and the
likelihood conditions on them as well. Variables that stay correlated given C
and the factors (a residual covariance or a regression between two ordinal
variables) are refused.

Cost per gradient: O(rows * p^2) for the conditional moments plus one normal
CDF pair per ordinal value; with row factors NUTS also moves rows x factors
more coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bayes_msem.engines.parameters import threshold_rows
from bayes_msem.errors import ModelSpecificationError
from bayes_msem.matrices import NUMPY_BACKEND, LevelStructure
from bayes_msem.spec import ModelSpec

__all__ = ["OrdinalLayout", "ordinal_layout", "ordinal_rows_logp", "threshold_matrix", "ordinal_unsupported"]

BEYOND = 1e8  # the open ends of the outer categories: finite, so gradients stay finite


@dataclass(frozen=True)
class OrdinalLayout:
    """Where the ordinal variables sit among the lowest level's observed ones,
    their coded values, their thresholds, and the factors sampled per row."""

    ordinal: np.ndarray  # positions among the level's observed variables
    continuous: np.ndarray
    codes: np.ndarray  # (rows, ordinal) category 0..K-1, -1 where missing
    threshold_free: np.ndarray  # (ordinal, max K - 1): 1-based free index, 0 where fixed or padding
    threshold_fixed: np.ndarray  # fixed values; +BEYOND in the padding of variables with fewer categories
    row_factors: np.ndarray  # positions among the level's nodes of the factors sampled per row


def threshold_matrix(theta, layout: OrdinalLayout, xp=np):
    """Cut points per ordinal variable, (ordinal, max K + 1): -BEYOND, the
    thresholds, +BEYOND (and +BEYOND padding)."""
    extended = xp.concatenate([xp.zeros(1), theta])  # position 0: fixed entries
    values = layout.threshold_fixed + extended[layout.threshold_free]
    n = layout.threshold_free.shape[0]
    return xp.concatenate([-BEYOND * xp.ones((n, 1)), values, BEYOND * xp.ones((n, 1))], axis=1)


def _normal_cdf_difference(lower, upper, erfc, xp):
    """Phi(upper) - Phi(lower), accurate in both tails (the difference of the
    smaller tail probabilities)."""
    root2 = np.sqrt(2.0)
    upper_tail = 0.5 * (erfc(lower / root2) - erfc(upper / root2))
    lower_tail = 0.5 * (erfc(-upper / root2) - erfc(-lower / root2))
    return xp.where(lower > 0, upper_tail, lower_tail)


def ordinal_rows_logp(codes, cond_mean, cond_sd, cuts, erfc, xp=np, per_row: bool = False):
    """Sum over rows and ordinal variables of log P(category | normal latent
    response with mean ``cond_mean`` (rows, ordinal) and SD ``cond_sd``
    (ordinal,) or (rows, ordinal)); missing values (code -1) count 0."""
    observed = codes >= 0
    safe = np.where(observed, codes, 0)
    columns = np.arange(codes.shape[1])[None, :]
    lower = (cuts[columns, safe] - cond_mean) / cond_sd
    upper = (cuts[columns, safe + 1] - cond_mean) / cond_sd
    probability = _normal_cdf_difference(lower, upper, erfc, xp)
    terms = xp.where(observed, xp.log(xp.maximum(probability, 1e-300)), 0.0)
    return terms.sum(axis=1) if per_row else terms.sum()


def conditional_moments(row_means, Sigma, values, layout: OrdinalLayout, backend=NUMPY_BACKEND):
    """The continuous variables' residuals (rows, c), their covariance, and the
    ordinal latent responses' mean (rows, o) and SD (o,) given them."""
    xp = backend.xp
    O, C = layout.ordinal, layout.continuous
    if len(C) == 0:
        return None, None, row_means[:, O], xp.sqrt(xp.diagonal(Sigma)[O])
    residual = values[:, C] - row_means[:, C]
    S_cc = Sigma[np.ix_(C, C)]
    weights = backend.solve(S_cc, Sigma[np.ix_(C, O)]).T  # (o, c): Sigma_OC Sigma_CC^-1
    mean = row_means[:, O] + residual @ weights.T
    variance = xp.diagonal(Sigma[np.ix_(O, O)]) - xp.sum(weights * Sigma[np.ix_(O, C)], axis=1)
    return residual, S_cc, mean, xp.sqrt(variance)


def _generic_moments(spec: ModelSpec, structure: LevelStructure):
    """(I - A)^-1, S and their node covariance at generic parameter values:
    every free loading and regression non-zero, every allowed covariance 0.1
    of the geometric mean of its variances. A conditional covariance that is
    zero here is zero structurally."""
    theta = np.array(spec.starts, dtype=float)
    kinds = np.array(spec.kinds)
    theta[np.isin(kinds, ["loading", "regression"])] += 0.37
    theta[kinds == "covariance"] = 0.0
    A = structure.A.fill(theta)
    A = A + 0.29 * (A == 0) * (structure.A.pattern.sum(0).reshape(A.shape) > 0)
    S = structure.S.fill(theta)
    d = np.sqrt(np.clip(np.diag(S), 1e-6, None))
    allowed = (structure.S.pattern.sum(0).reshape(S.shape) > 0) | (structure.S.fixed != 0)
    S = np.where(allowed & ~np.eye(len(S), dtype=bool), 0.1 * np.outer(d, d), S)
    total = np.linalg.inv(np.eye(len(A)) - A)
    return total @ S @ total.T


def _correlated_pairs(cov: np.ndarray, O, given) -> list[tuple[int, int]]:
    """Pairs of ``O`` whose covariance given the positions ``given`` is not zero."""
    if len(given):
        cov = cov - cov[:, given] @ np.linalg.solve(cov[np.ix_(given, given)], cov[given, :])
    block = cov[np.ix_(O, O)]
    return [(O[i], O[j]) for i in range(len(O)) for j in range(i) if abs(block[i, j]) > 1e-10]


def ordinal_layout(spec: ModelSpec) -> OrdinalLayout:
    """Positions, codes, thresholds, and which factors must be sampled per row
    (those without which the ordinal variables are not conditionally independent)."""
    structure = spec.within
    observed = list(structure.observed)
    O = np.array([observed.index(n) for n in spec.table.ordinal], dtype=int)
    C = np.array([i for i in range(len(observed)) if i not in O], dtype=int)
    values = spec.data.within_outcomes[:, O]
    codes = np.where(np.isnan(values), -1, np.nan_to_num(values)).astype(int)
    thresholds = threshold_rows(spec)
    width = max(len(t) for t in thresholds.values())
    free = np.zeros((len(O), width), dtype=int)
    fixed = np.full((len(O), width), BEYOND)
    for k, name in enumerate(spec.table.ordinal):
        for j, (index, value) in enumerate(thresholds[name]):
            free[k, j], fixed[k, j] = index, (0.0 if index else value)
    cov = _generic_moments(spec, structure)
    latent = np.arange(structure.n_observed, len(structure.nodes))
    factors = np.array([], dtype=int)
    pairs = _correlated_pairs(cov, O, C)
    if pairs and len(latent):
        factors = latent
        pairs = _correlated_pairs(cov, O, np.concatenate([C, latent]))
    if pairs:
        a, b = pairs[0]
        raise ModelSpecificationError(
            f"the ordinal variables {observed[a]} and {observed[b]} stay correlated given the continuous variables "
            "and the factors (a residual covariance or a regression between ordinal variables), which needs their "
            "joint normal probability: not supported yet. Let a factor carry their association instead.")
    return OrdinalLayout(ordinal=O, continuous=C, codes=codes, threshold_free=free, threshold_fixed=fixed,
                         row_factors=factors)


def ordinal_unsupported(spec: ModelSpec) -> str | None:
    """Why the latent engine cannot fit this model with ordinal variables, or None."""
    if not spec.table.ordinal:
        return None
    if spec.within.slopes_on_nodes:
        return "a random slope on a modelled variable together with ordinal variables is not supported yet"
    continuous = [n for n in spec.within.observed if n not in spec.table.ordinal]
    holes = [n for k, n in enumerate(spec.within.observed)
             if n in continuous and np.isnan(spec.data.within_outcomes[:, k]).any()]
    if holes:
        return (f"missing values of the continuous {', '.join(holes)} in a model with ordinal variables are not "
                "supported yet (missing values of the ordinal variables are); pass missing='listwise'")
    return None


def ordinal_within_logp(spec: ModelSpec, theta, moments, cluster_means):
    """The lowest level's log-likelihood in a model with ordinal variables
    (inside the latent engine's PyMC model): continuous values by their
    normal density, categories by the probit probabilities given them (and
    given the row factors where :func:`ordinal_layout` asks for them)."""
    import pymc as pm
    import pytensor.tensor as pt

    from bayes_msem.engines.latent import PYTENSOR_BACKEND, mvn_logp_from_scatter

    layout = ordinal_layout(spec)
    data, structure = spec.data, spec.within
    at, x = data.cluster_index, data.within_covariates
    Pi = moments.Pi
    shift = (Pi[at] @ x[:, :, None])[:, :, 0] if Pi.ndim == 3 else x @ Pi.T
    row_means = cluster_means[at] + shift
    Sigma = moments.Sigma
    if len(layout.row_factors):
        F, p = layout.row_factors, structure.n_observed
        nodes_cov = moments.total @ moments.S @ moments.total.T
        root = pt.linalg.cholesky(nodes_cov[np.ix_(F, F)])
        loading = PYTENSOR_BACKEND.solve_lower(root, nodes_cov[F, :p]).T  # (p, factors): V_oF L^-T
        pm.modelcontext(None).add_coord("row_factor", [structure.nodes[f] for f in F])
        scores = pm.Normal("row_factor_scores", 0.0, 1.0, shape=(data.n_rows, len(F)), dims=(None, "row_factor"))
        row_means = row_means + scores @ loading.T
        Sigma = Sigma - loading @ loading.T
    residual, S_cc, mean, sd = conditional_moments(row_means, Sigma, data.within_outcomes, layout, PYTENSOR_BACKEND)
    cuts = threshold_matrix(theta, layout, pt)
    logp = ordinal_rows_logp(layout.codes, mean, sd, cuts, pt.erfc, pt)
    if residual is not None:
        logp = logp + mvn_logp_from_scatter(residual.T @ residual, float(data.n_rows), S_cc)
    return logp
