"""Prior checks: draws from the prior, prior predictive data sets, the log prior
of posterior draws, and power-scaling sensitivity (Kallioinen et al. 2023).

The priors are those the engines sample with (:mod:`bayes_msem.engines.parameters`):
a variance row's prior is on its standard deviation unless written ``[var]``,
and the covariances of a block of correlated variables come from one
correlation matrix (LKJ, or patterned for a partial pattern) times the
standard deviations. Densities and draws come
from :meth:`~bayes_msem.priors.PriorSpec.logpdf` and ``.draw``, which the tests
hold against PyMC's distributions.

Power-scaling raises the prior (or the likelihood) to a power alpha near 1 and
measures, by Pareto-smoothed importance weights on the existing draws, how far
each parameter's posterior moves (ArviZ's ``psens``): no refit. A parameter
whose posterior moves with the prior *and* the likelihood signals prior-data
conflict; one that moves with the prior only has a prior that dominates a weak
likelihood.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayes_msem.priors import constrained_correlation, lkj_draw, lkj_logpdf, patterned_draw, patterned_logpdf
from bayes_msem.simulate import categorize_outcomes, draw_outcomes

__all__ = ["prior_draws", "log_prior", "sample_prior_predictive", "powerscale_sensitivity", "SENSITIVITY_THRESHOLD"]

# Kallioinen et al. (2023) and priorsense: above this the posterior moves noticeably
SENSITIVITY_THRESHOLD = 0.05


def _on_prior_scale(kind: str, prior, values: np.ndarray) -> np.ndarray:
    """A parameter's values as its prior sees them (a variance's SD unless ``[var]``)."""
    return np.sqrt(np.clip(values, 0.0, None)) if prior.on_sd(kind) else values


def prior_draws(spec, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` draws of the free-parameter vector from the prior: (n, free parameters).
    Where a covariance is fixed at a non-zero value or equal to another, the
    prior is truncated to positive definite matrices, and thresholds to
    increasing values: draws outside are redrawn."""
    kept, count = [], 0
    for _ in range(100):
        theta, feasible = _draws_once(spec, n, rng)
        kept.append(theta[feasible])
        count += int(feasible.sum())
        if count >= n:
            return np.concatenate(kept)[:n]
    raise ValueError("the priors almost never allow the covariances that are fixed or set equal (they need larger "
                     "variances) or almost never give increasing thresholds; check those values against the "
                     "variances' priors, and the thresholds' priors against each other")


def _order_thresholds(spec, theta: np.ndarray) -> np.ndarray:
    """Which draws have every ordinal variable's thresholds increasing, as the
    model's prior requires (it is the priors' product restricted to increasing
    values). Where a variable's thresholds are free, its own and share one
    prior (the default), sorted independent draws are draws of that restricted
    prior: they are sorted in place. Otherwise (different priors, a fixed or
    shared threshold) sorting would give another distribution, and the draws
    that do not increase are left to be drawn again."""
    vectors = spec.table.ordered_threshold_vectors()
    increasing = np.ones(len(theta), dtype=bool)
    for variable, thresholds in spec.table.thresholds().items():
        free = vectors.get(variable)
        if free is not None and len({spec.priors[f - 1] for f in free}) == 1:
            columns = [f - 1 for f in free]
            theta[:, columns] = np.sort(theta[:, columns], axis=1)
            continue
        cuts = np.column_stack([theta[:, f - 1] if f else np.full(len(theta), value) for f, value in thresholds])
        increasing &= np.all(np.diff(cuts, axis=1) > 0, axis=1)
    return increasing


def _draws_once(spec, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` draws ignoring the positive-definiteness of given covariances and
    the order of thresholds, and which of them keep both."""
    theta = np.zeros((n, len(spec.priors)))
    for k, (kind, prior) in enumerate(zip(spec.kinds, spec.priors)):
        if kind == "covariance":
            continue  # from the block's correlation matrix, below
        draws = prior.draw(rng, n)
        theta[:, k] = draws**2 if prior.on_sd(kind) else draws
    feasible = _order_thresholds(spec, theta)
    for block in spec.covariance_blocks:
        sd = _block_sds(spec, block, theta)
        size = len(block.nodes)
        if block.constrained:
            owners = block.owners()
            cpc = rng.uniform(-1.0, 1.0, size=(n, len(owners)))
            corr, margins, _ = constrained_correlation(cpc, size, owners,
                                                       block.targets(lambda f: theta[:, f - 1]), list(sd.T))
            feasible &= np.all(np.stack(margins) > 0, axis=0)
        elif block.pattern is None:
            corr = lkj_draw(rng, size, block.eta, n)
        else:
            corr = patterned_draw(rng, size, list(block.pattern), block.eta, n)
        for (i, j), free in block.free_index.items():
            if (i, j) not in block.followers:
                theta[:, free - 1] = corr[:, i, j] * sd[:, i] * sd[:, j]
    return theta, feasible


def _block_sds(spec, block, theta: np.ndarray) -> np.ndarray:
    """Standard deviations of a covariance block's variables per draw: (draws, block size)."""
    structure = spec.structure(block.level)
    variances = np.stack([np.diag(structure.S.fill(t)) for t in theta])
    return np.sqrt(np.clip(variances[:, list(block.nodes)], 0.0, None))


def log_prior(spec, theta: np.ndarray) -> np.ndarray:
    """log prior density of each draw of the free-parameter vector ``theta``
    (draws, free parameters), on the scale each prior is placed on; LKJ terms
    up to their constant."""
    total = np.zeros(len(theta))
    for k, (kind, prior) in enumerate(zip(spec.kinds, spec.priors)):
        if kind != "covariance":
            total += prior.logpdf(_on_prior_scale(kind, prior, theta[:, k]))
    for block in spec.covariance_blocks:
        if block.constrained:
            continue  # uniform partial correlations: a constant inside the positive definite region
        sd = _block_sds(spec, block, theta)
        corr = np.broadcast_to(np.eye(len(block.nodes)), (len(theta),) + (len(block.nodes),) * 2).copy()
        for (i, j), free in block.free_index.items():
            corr[:, i, j] = corr[:, j, i] = theta[:, free - 1] / (sd[:, i] * sd[:, j])
        total += (lkj_logpdf(corr, block.eta) if block.pattern is None
                  else patterned_logpdf(corr, list(block.pattern), block.eta))
    return total


def sample_prior_predictive(spec, draws: int = 500, seed: int | None = None):
    """Parameters drawn from the prior and, for each, a data set drawn from the
    model with the covariates as observed: an ArviZ InferenceData with groups
    ``prior``, ``prior_predictive`` and ``observed_data`` (so that
    ``az.plot_ppc(idata, group="prior")`` compares them)."""
    import xarray as xr

    from bayes_msem.results import _import_arviz, build_posterior

    rng = np.random.default_rng(seed)
    theta = prior_draws(spec, draws, rng)
    data = spec.data
    # in a three-level or cross-classified model each row's level-3 unit, and the units' covariates
    upper = next(((level.row_index, level.covariates) for level in data.upper_levels), None)
    outcomes = [draw_outcomes(rng, t, spec.layout, data.within_covariates, data.between_covariates,
                              data.cluster_index, upper) for t in theta]
    unit_outcomes = [v for _, _, v in outcomes]
    outcomes = [categorize_outcomes(y, z, spec.table, spec.layout, t) for (y, z, _), t in zip(outcomes, theta)]
    chain_draw = {"chain": [0], "draw": np.arange(draws)}
    parameters = xr.DataArray(theta[None], dims=("chain", "draw", "parameter"), coords=chain_draw)
    predicted, observed = {}, {}
    for k, name in enumerate(spec.within.observed):
        predicted[name] = (("chain", "draw", "row"), np.stack([y[:, k] for y, _ in outcomes])[None])
        observed[name] = ("row", data.within_outcomes[:, k])
    for k, name in enumerate(spec.table.between_outcomes):
        predicted[name] = (("chain", "draw", "cluster"), np.stack([z[:, k] for _, z in outcomes])[None])
        observed[name] = ("cluster", data.between_outcomes[:, k])
    for k, name in enumerate(spec.layout.levels[2].outcomes if len(spec.layout.levels) > 2 else ()):
        predicted[name] = (("chain", "draw", "unit"), np.stack([v[:, k] for v in unit_outcomes])[None])
        observed[name] = ("unit", data.upper_levels[0].outcomes[:, k])
    az = _import_arviz()
    return az.InferenceData(prior=build_posterior(spec.table.rows, parameters, None, spec.table.level_names),
                            prior_predictive=xr.Dataset(predicted, coords=chain_draw),
                            observed_data=xr.Dataset(observed))


def powerscale_sensitivity(idata, var_names: list[str]) -> pd.DataFrame:
    """Prior and likelihood power-scaling sensitivity of each parameter
    (ArviZ's ``psens``, the cumulative Jensen-Shannon distance per unit change
    of log2 alpha) with a diagnosis as priorsense gives it. ``idata`` needs the
    ``log_prior`` and ``log_likelihood`` groups."""
    import warnings

    from bayes_msem.results import _import_arviz

    az = _import_arviz()
    kept = idata.log_likelihood["draw"].values
    if len(kept) != idata.posterior.sizes["draw"]:  # a thinned log-likelihood (importance sampling per draw)
        idata = az.InferenceData(posterior=idata.posterior.sel(draw=kept), log_prior=idata.log_prior.sel(draw=kept),
                                 log_likelihood=idata.log_likelihood)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ warns about Pareto k of tiny perturbations
        prior = az.psens(idata, component="prior", var_names=var_names)
        likelihood = az.psens(idata, component="likelihood", var_names=var_names)
    rows = []
    for name in var_names:
        p_values, l_values = prior[name], likelihood[name]
        levels = p_values["level"].values if "level" in p_values.dims else [p_values.attrs.get("level", "")]
        for level, p_value, l_value in zip(levels, np.atleast_1d(p_values.values), np.atleast_1d(l_values.values)):
            rows.append({"parameter": name, "level": str(level), "prior": float(p_value),
                         "likelihood": float(l_value), "diagnosis": _diagnosis(float(p_value), float(l_value))})
    return pd.DataFrame(rows)


def _diagnosis(prior: float, likelihood: float) -> str:
    if prior >= SENSITIVITY_THRESHOLD and likelihood >= SENSITIVITY_THRESHOLD:
        return "prior-data conflict"
    if prior >= SENSITIVITY_THRESHOLD:
        return "strong prior / weak likelihood"
    return "-"
