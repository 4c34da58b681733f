"""Three-level models with missing values: the collapsed engine's exact
observed-data likelihood and the effects drawn from their exact conditional.

Given its level-3 unit's parts c_s (placed into the rows' variables by P, the
layout's ``place`` of level 3), the rows of class j are a two-level model's
cluster whose row means are moved by P c_s. Its observed-data density with
its own effects integrated out, :func:`~bayes_msem.engines.missing.cluster_terms`
evaluated at the row means m_j = mu + P E c_s, is Gaussian in the move
s = P c~ (c~ = c_s - E c_s):

    log p(Y_j,obs | c_s) = log p(Y_j,obs | E c_s) + s' a_j - 1/2 s' A_j s,
    a_j = Ke_j - N_j m_j - F_j' mu_u - H_j' v_j,    A_j = N_j - H_j' H_j,

with N_j = sum_i K_o and Ke_j = sum_i K_o (y_i - Pi x_i) over the class's rows
(K_o the inverse of the observed block of Sigma_W, padded with zeros),
F_j = sum_i Z_i' K_o how the move shifts the class effects' score, and
H_j = C_j^-1 L' F_j, v_j = C_j^-1 L' g_j in the whitened posterior of the
class's effects. The unit's parts are then integrated out by the same
Woodbury step as with complete data
(:func:`~bayes_msem.engines.three_level_slopes.integrate_unit_parts`), with
a_s = sum_j P'a_j and A_s = sum_j P'A_j P. Every sum over rows is one over
(class, missing-data pattern): a gradient costs O(classes x patterns p^2 e +
classes e^3 + units k^3), never O(rows).
"""

from __future__ import annotations

import numpy as np

from bayes_msem.engines.missing import cluster_terms, draw_missing_cluster_effects, missing_statistics
from bayes_msem.engines.three_level_slopes import (
    UnitPartsTerms,
    draw_units_and_shifts,
    integrate_unit_parts,
    level_point,
    unit_log_terms,
    unit_membership,
)
from bayes_msem.matrices import NUMPY_BACKEND
from bayes_msem.spec import ModelSpec

__all__ = ["three_level_missing_logp", "draw_three_level_missing_effects"]


def _unit_missing_terms(spec: ModelSpec, stats: dict, theta, backend, per_unit: bool) -> UnitPartsTerms:
    xp = backend.xp
    within, between, top, split, P, prior, row_means, effect_shift, lift = level_point(spec, theta, backend)
    terms = cluster_terms(stats, within, between, spec.layout.levels[1], spec.data.between_covariates, backend,
                          per_unit=per_unit, row_means=row_means, effect_shift=effect_shift)
    score = terms["shift_score"] @ P
    precision = xp.einsum("pa,jpq,qb->jab", P, terms["shift_precision"], P)
    if lift is not None:  # slope parts also move the class effects' prior mean by M_j c~
        cross = xp.einsum("pa,jpe,jek->jak", P, terms["shift_mean_cross"], lift)
        score = score + xp.einsum("je,jek->jk", terms["mean_score"], lift)
        precision = (precision + cross + xp.swapaxes(cross, 1, 2)
                     + xp.einsum("jek,jef,jfl->jkl", lift, terms["mean_precision"], lift))
    membership = unit_membership(spec.data)
    L3, chol_b, u = integrate_unit_parts(prior.cov, xp.einsum("sj,jab->sab", membership, precision),
                                         membership @ score, backend)
    return UnitPartsTerms(terms["loglik"], prior.mean, chol_b, u, L3, prior.outcome_logp, lift)


def three_level_missing_logp(spec: ModelSpec, stats: dict, theta, backend, per_unit: bool = False):
    """log p(observed data | theta) of a three-level model with missing values,
    every effect integrated out (the module docstring); with ``per_unit`` the
    log density of each level-3 unit's observed data, (units,), for LOO.
    ``stats``: :func:`~bayes_msem.engines.missing.missing_statistics`."""
    xp = backend.xp
    terms = _unit_missing_terms(spec, stats, theta, backend, per_unit)
    per_school = unit_log_terms(terms.chol_b, terms.u, xp) + terms.outcome_logp
    if per_unit:
        return unit_membership(spec.data) @ terms.base + per_school
    return terms.base + xp.sum(per_school)


def draw_three_level_missing_effects(spec: ModelSpec, theta_draws: np.ndarray, rng: np.random.Generator,
                                     unit_effects) -> tuple[np.ndarray, np.ndarray]:
    """Every level-3 unit's and class's effects from their exact conditional
    given the observed values, once per posterior draw: the units' parts and
    other effects (:func:`~bayes_msem.engines.three_level_slopes.draw_units_and_shifts`),
    then each class's effects given its rows moved by P c_s
    (:func:`~bayes_msem.engines.missing.draw_missing_cluster_effects`)."""
    stats = missing_statistics(spec)
    top_out, shifts, effect_shifts = draw_units_and_shifts(
        spec, theta_draws, rng, unit_effects,
        lambda theta: _unit_missing_terms(spec, stats, theta, NUMPY_BACKEND, per_unit=False))
    middle_out = draw_missing_cluster_effects(spec, theta_draws, int(rng.integers(2**32)), row_shifts=shifts,
                                              effect_shifts=effect_shifts)
    return middle_out, top_out
