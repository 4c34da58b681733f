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
engine's two-level models): O(cells x patterns p^2).

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

from bayes_msem.data import missing_pattern_statistics, within_cross_products
from bayes_msem.engines import outcomes_above_rows
from bayes_msem.engines.latent import PYTENSOR_BACKEND, effects_from_innovations, innovation_nodes, within_logp
from bayes_msem.engines.missing import observed_rows_logp
from bayes_msem.engines.parameters import free_parameter_vector, parameter_names
from bayes_msem.matrices import level_moments
from bayes_msem.spec import ModelSpec

__all__ = ["crossed_supported", "build_crossed_model", "crossed_cells"]

# The posterior's name and dimension of each classification's effects (the three-level results' names).
CLASSIFICATIONS = (("cluster_effects", "cluster"), ("unit_effects", "unit"))


def crossed_supported(spec: ModelSpec) -> tuple[bool, str]:
    """Which cross-classified models the latent engine takes so far: random
    intercepts of both classifications with covariates at every level."""
    if spec.table.ordinal:
        return False, "ordinal variables: cross-classified models take continuous variables so far"
    if spec.within.slopes:
        return False, "random slopes: cross-classified models take random intercepts so far"
    problem = outcomes_above_rows(spec, "cross-classified models", "classification")
    if problem:
        return False, problem
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
        within = level_moments(theta, spec.within, PYTENSOR_BACKEND)
        cell_means = pt.zeros((len(cells), spec.within.n_observed)) + within.mean[None, :]
        for k, (name, dim) in enumerate(CLASSIFICATIONS, start=1):
            level = levels[k]
            random = innovation_nodes(spec, k)
            model.add_coord(f"{dim}_innovation", [level.nodes[i] for i in random])
            model.add_coord(f"{dim}_variable", list(level.effects))
            innovations = pm.Normal(f"{dim}_innovations", 0.0, 1.0, dims=(dim, f"{dim}_innovation"))
            moments = level_moments(theta, level.structure, PYTENSOR_BACKEND)
            effects = effects_from_innovations(spec, moments, innovations, level=k)
            pm.Deterministic(name, effects, dims=(dim, f"{dim}_variable"))
            split = [list(level.effects).index(n) for n in level.split]
            cell_means = cell_means + effects[cells[:, k - 1]][:, split] @ level.placement.place.T
        pm.Potential("within_loglik", _within_logp(data, row_cell, within, cell_means))
    return model


def _within_logp(data, row_cell: np.ndarray, within, cell_means):
    """The rows' log-likelihood given their cells' means (cells, p): from
    cross-products per cell, or per cell and missing-data pattern."""
    if data.has_missing:
        stats = missing_pattern_statistics(data, groups=row_cell)
        return observed_rows_logp(stats, within, cell_means, PYTENSOR_BACKEND)
    stats = within_cross_products(data, row_cell)
    return within_logp({k: pt.as_tensor_variable(v) if k != "n" else v for k, v in stats.items()}, cell_means,
                       within.Pi, within.Sigma)
