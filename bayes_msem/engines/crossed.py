"""Cross-classified models in the latent engine: rows in the units of two
classifications that cross (pupils of a primary and a secondary school; the
level-2 blocks are named by their cluster columns).

Each classification's units get their effects as in a two-level model,
sampled non-centered from that level's matrices and covariates
(:func:`~bayes_msem.engines.latent.effects_from_innovations`); a row's mean
adds the split parts of its unit in both. Rows that share both units (a
*cell*) share their mean, so the within likelihood comes from cross-products
per cell computed once (:func:`~bayes_msem.data.within_cross_products`): a
gradient costs O(cells p^2), not O(rows p^2). With missing values, each row's
observed values enter by their normal density given its cell's means, from
sums per cell and missing-data pattern
(:func:`~bayes_msem.engines.missing.observed_rows_logp`, as in the latent
engine's two-level models): O(cells x patterns p^2). Random slopes of
level-1 covariates vary over the first classification, and over the second
where its block names them (the cell's slope is the sum of its two units'
parts): every row of a cell shares them, so the likelihood comes from cross-products per cell
(:func:`~bayes_msem.engines.latent.cluster_scatter`), or per row where values
are missing.

Variables observed only above the rows (one value per unit of either
classification) enter by their normal density given their unit's sampled
effects (:func:`~bayes_msem.engines.latent.between_outcomes_logp`).

The exact marginal likelihood is not block diagonal here (two rows of one
primary school are correlated through different secondary schools), so the
collapsed engine does not take these models; integrating one classification
out would need a sparse Cholesky factor of a (units x units) matrix per
gradient, which is left for later.
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from bayes_msem.data import cluster_cross_products, missing_pattern_statistics, within_cross_products
from bayes_msem.engines.latent import (
    PYTENSOR_BACKEND,
    between_outcomes_logp,
    cluster_scatter,
    effects_from_innovations,
    innovation_nodes,
    mvn_logp_from_scatter,
    outcome_coupling,
    within_logp,
)
from bayes_msem.engines.missing import observed_rows_logp, rows_with_own_means_logp
from bayes_msem.engines.ordinal import row_means_of
from bayes_msem.engines.parameters import free_parameter_vector, parameter_names
from bayes_msem.matrices import level_moments
from bayes_msem.spec import ModelSpec

__all__ = ["crossed_supported", "build_crossed_model", "crossed_cells"]

# The posterior's name and dimension of each classification's effects (the three-level results' names).
CLASSIFICATIONS = (("cluster_effects", "cluster"), ("unit_effects", "unit"))


def crossed_supported(spec: ModelSpec) -> tuple[bool, str]:
    """Which cross-classified models the latent engine takes so far: random
    intercepts of both classifications with covariates and (complete)
    outcomes at every level, and random slopes of level-1 covariates over the
    first classification, or over both (a slope named in the second
    classification's block too)."""
    if spec.table.ordinal:
        return False, "ordinal variables: cross-classified models take continuous variables so far"
    if spec.within.slopes_on_nodes:
        return False, ("a random slope on a modelled variable (a latent within part or a factor): cross-classified "
                       "models take random slopes of covariates so far")
    second = spec.layout.levels[2]
    own = [name for k, name in enumerate(second.split) if second.lifted_slopes[k] >= 0]
    if own:
        return False, (f"random slope(s) {', '.join(own)} of a first-classification covariate varying over the "
                       "second classification: cross-classified models take random slopes of level-1 covariates, "
                       "so far")
    for level in (1, 2):
        problem = outcome_coupling(spec, level)
        if problem:
            return False, problem
    holes = np.isnan(spec.data.between_outcomes).any(axis=0)
    if holes.any():
        return False, (f"missing values of the first classification's outcome(s) "
                       f"{', '.join(n for n, h in zip(spec.layout.levels[1].outcomes, holes) if h)}: cross-classified "
                       "models take complete outcomes above the rows, so far")
    return True, ("cross-classified: the effects of both classifications are sampled (the marginal likelihood is not "
                  "block diagonal, so the collapsed engine does not apply)")


def crossed_cells(spec: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """The cells (pairs of units met in the data) as (cells, 2) unit codes of
    the two classifications, and each row's cell."""
    pairs = np.stack([spec.data.cluster_index, spec.data.upper_levels[0].row_index], axis=1)
    cells, row_cell = np.unique(pairs, axis=0, return_inverse=True)
    return cells, row_cell.reshape(-1)


def build_crossed_model(spec: ModelSpec) -> pm.Model:
    """The PyMC model of a cross-classified model: ``parameters`` and each
    classification's effects, ``cluster_effects`` (dims cluster,
    cluster_variable) and ``unit_effects`` (dims unit, unit_variable)."""
    data, levels = spec.data, spec.layout.levels
    labels = ([str(c) for c in data.cluster_labels], [str(c) for c in data.upper_levels[0].labels])
    coords = {"parameter": parameter_names(spec), "cluster": labels[0], "unit": labels[1]}
    cells, row_cell = crossed_cells(spec)
    with pm.Model(coords=coords) as model:
        theta = free_parameter_vector(spec)
        pm.Deterministic("parameters", theta, dims="parameter")
        effects = []
        for k, (name, dim) in enumerate(CLASSIFICATIONS, start=1):
            level_effects, moments = _classification_effects(spec, theta, k, name, dim)
            effects.append(level_effects)
            if spec.layout.levels[k].outcomes:  # the units' own outcomes given their effects
                pm.Potential(f"{dim}_outcomes_loglik", between_outcomes_logp(spec, theta, moments, level_effects,
                                                                             level=k))
        within = _cell_moments(spec, theta, [level_effects[cells[:, k]] for k, level_effects in enumerate(effects)])
        cell_means = within.mean + pt.zeros((len(cells), spec.within.n_observed))
        for k, level_effects in enumerate(effects, start=1):
            level = levels[k]
            split = [list(level.effects).index(n) for n in level.split]
            cell_means = cell_means + level_effects[cells[:, k - 1]][:, split] @ level.placement.place.T
        pm.Potential("within_loglik", _within_logp(data, row_cell, within, cell_means))
    return model


def _classification_effects(spec: ModelSpec, theta, k: int, name: str, dim: str):
    """Classification ``k``'s effects (units, effects), sampled non-centered,
    kept in the posterior as ``name`` with dims (``dim``, ``dim``_variable),
    and the level's moments."""
    model, level = pm.modelcontext(None), spec.layout.levels[k]
    random = innovation_nodes(spec, k)
    model.add_coord(f"{dim}_innovation", [level.nodes[i] for i in random])
    model.add_coord(f"{dim}_variable", list(level.effects))
    innovations = pm.Normal(f"{dim}_innovations", 0.0, 1.0, dims=(dim, f"{dim}_innovation"))
    moments = level_moments(theta, level.structure, PYTENSOR_BACKEND)
    effects = effects_from_innovations(spec, moments, innovations, level=k)
    pm.Deterministic(name, effects, dims=(dim, f"{dim}_variable"))
    return effects, moments


def _cell_moments(spec: ModelSpec, theta, cell_effects: list):
    """The rows' moments per cell given the effects of its unit in each
    classification (cells, effects), first then second: with random slopes
    ``Pi`` has a cell axis. A slope is its part in the first classification
    plus, where the second's block names it, its part there."""
    within = spec.within
    if not within.slopes:
        return level_moments(theta, within, PYTENSOR_BACKEND)
    first, second = spec.layout.crossed_slope_columns()
    slopes = [cell_effects[0][:, a] + (cell_effects[1][:, b] if b >= 0 else 0.0) for a, b in zip(first, second)]
    return level_moments(theta, within, PYTENSOR_BACKEND, pt.stack(slopes, axis=1))


def _within_logp(data, row_cell: np.ndarray, within, cell_means):
    """The rows' log-likelihood given their cells' means (cells, p) and
    regression weights (``within.Pi``, per cell with random slopes): from
    cross-products per cell, or with missing values each row's observed
    values (per cell and missing-data pattern; per row with random slopes)."""
    slopes = within.Pi.ndim == 3
    if data.has_missing:
        stats = missing_pattern_statistics(data, groups=row_cell)
        if not slopes:
            return observed_rows_logp(stats, within, cell_means, PYTENSOR_BACKEND)
        return rows_with_own_means_logp(stats, within.Sigma, row_means_of(within, cell_means, data, row_cell),
                                        PYTENSOR_BACKEND)
    stats = within_cross_products(data, row_cell)
    if not slopes:
        return within_logp({k: pt.as_tensor_variable(v) if k != "n" else v for k, v in stats.items()}, cell_means,
                           within.Pi, within.Sigma)
    cross = {k: pt.as_tensor_variable(v) for k, v in cluster_cross_products(data, row_cell).items()}
    scatter = cluster_scatter(cross, {k: pt.as_tensor_variable(v) for k, v in stats.items()}, cell_means, within.Pi)
    return mvn_logp_from_scatter(scatter.sum(0), float(stats["n"].sum()), within.Sigma)
