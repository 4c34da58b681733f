"""Three-level models with random slopes over level-2 units: the collapsed
engine's exact marginal likelihood and the effects drawn from their exact
conditional.

Given its level-3 unit's parts c_s (placed into the rows' variables by P,
the layout's ``place`` of level 3), the rows of class j are a two-level
model's cluster whose row means are moved by P c_s. The class's density with
its own effects (random intercepts and slopes) integrated out is
:func:`~bayes_msem.engines.collapsed_slopes.cluster_marginal`, and as a
function of c~ = c_s - E c_s it is Gaussian:

    log p(Y_j | c_s) = log p(Y_j | E c_s) + c~' a_j - 1/2 c~' A_j c~,
    a_j = P' Sigma_W^-1 s_j - N_j' m_j - W_j' v_j,
    A_j = n_j P' Sigma_W^-1 P - W_j' W_j,

with s_j the sum of the class's row residuals at E c_s, N_j = xsum_j * (D'
Sigma_W^-1 P) how c~ moves the class's score g_j (xsum_j the sums of the
entries of (1, x) the effects multiply), m_j the effects' prior mean, and
v_j = C_j^-1 L' g_j, W_j = C_j^-1 L' N_j in the whitened posterior of the
class's effects (C_j its Cholesky factor). Summing over the unit's classes
and integrating c~ ~ N(0, L3 L3') as in :func:`~bayes_msem.engines.collapsed.three_level_logp`:

    log p(Y_s) = sum_j log p(Y_j given E c_s) - 1/2 log det B_s + 1/2 norm(chol(B_s)^-1 L3' a_s)^2,
    B_s = I + L3' A_s L3,  a_s = sum_j a_j,  A_s = sum_j A_j.

A gradient costs O(classes r^3 + units k^3), r random effects per class and
k level-3 parts, whatever the number of rows.

A slope can have a part at level 3 too: a slope of the rows named in the
level-3 block, or a class covariate's slope written in the level-2 block.
Such a part does not move the rows directly (its column of P is zero) but the
prior mean of the class's random effects, by M_j c~ (the layout's
``unit_lift``: 1 at the slope for a slope of the rows, z_j times the class
level's (I - A)^-1 column of the variable it sits on for a class covariate's
slope). The class's marginal density is Gaussian in that mean too, so a_j and
A_j gain its score, its curvature and their cross term with the rows' move
(:func:`_with_slope_parts`), and the units' parts integrate out as before.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from bayes_msem.engines.collapsed_slopes import (
    cluster_marginal,
    draw_slope_cluster_effects,
    marginal_statistics,
    unrolled_solve_lower,
)
from bayes_msem.matrices import NUMPY_BACKEND, level_moments
from bayes_msem.spec import ModelSpec

__all__ = ["three_level_slopes_logp", "draw_three_level_slope_effects", "unit_membership", "draw_unit_deviations",
           "draw_units_and_shifts", "LevelPoint", "level_point", "UnitPartsTerms",
           "integrate_unit_parts", "unit_log_terms", "UnitPrior", "unit_parts_prior"]


class UnitPartsTerms(NamedTuple):
    """Per class, log p(Y_j | E c_s) (``base``); per level-3 unit, the mean of
    its parts (``top_mean``), chol(B_s) and u_s = chol(B_s)^-1 L3' a_s; L3;
    and per unit the log density of its own outcomes (:class:`UnitPrior`)."""

    base: object
    top_mean: object
    chol_b: object
    u: object
    L3: object
    outcome_logp: object
    lift: object = None  # M_j (clusters, e, k) where level 3 has slope parts (:class:`LevelPoint`)


def unit_membership(data) -> np.ndarray:
    """(level-3 units, clusters) of :class:`~bayes_msem.data.ClusterData`: 1 where the cluster lies in the unit."""
    upper = data.upper_levels[0]
    membership = np.zeros((upper.n_units, data.n_clusters))
    membership[upper.parent_index, np.arange(data.n_clusters)] = 1.0
    return membership


class UnitPrior(NamedTuple):
    """Every level-3 unit's parts c_s before its classes are seen: their mean
    (units, k) and covariance (k, k), given the unit's own observed outcomes
    v_s where the level has some, and log p(v_s) (units,; 0 without them)."""

    mean: object
    cov: object
    outcome_logp: object


def unit_parts_prior(top, upper, placement, backend) -> UnitPrior:
    """The :class:`UnitPrior` of a three-level model's top level at its
    moments ``top`` (``placement`` its :class:`~bayes_msem.layout.Placement`):
    the parts' node moments from the units' covariates (a slope's part is a
    latent node), conditioned on the units' outcomes (observed nodes that are
    not parts, first among the nodes) by the Gaussian rule where it has some."""
    xp = backend.xp
    split, own = placement.split_at, placement.outcomes_at
    node_mean = (top.alpha[None, :] + upper.covariates @ top.A_x.T) @ top.total.T  # (units, nodes)
    node_cov = top.total @ top.S @ top.total.T
    mean, cov = node_mean[:, split], node_cov[split][:, split]
    if len(own) == 0:
        return UnitPrior(mean, cov, xp.zeros(upper.n_units))
    cov_own = node_cov[own][:, own]
    chol = backend.cholesky(cov_own)
    residual = upper.outcomes - node_mean[:, own]  # (units, outcomes)
    white = backend.solve_lower(chol, residual.T)  # (outcomes, units)
    gain = backend.solve_lower(chol, node_cov[own][:, split])  # chol^-1 Cov(v, c): (outcomes, k)
    outcome_logp = -0.5 * (len(own) * np.log(2 * np.pi) + 2.0 * xp.sum(xp.log(xp.diagonal(chol)))
                           + xp.sum(white**2, axis=0))
    return UnitPrior(mean + white.T @ gain, cov - gain.T @ gain, outcome_logp)


def integrate_unit_parts(cov, precision, score, backend):
    """The Woodbury step that integrates each level-3 unit's parts c~ ~ N(0,
    ``cov``) out of exp(c~'score_s - 1/2 c~'precision_s c~): cov = L L' (no
    inverse of it needed), chol(B_s) of B_s = I + L' precision_s L and
    u_s = chol(B_s)^-1 L' score_s. Returns (L, chol_b, u)."""
    xp = backend.xp
    L = backend.cholesky(cov)
    chol_b = backend.cholesky(xp.eye(L.shape[0])[None] + xp.einsum("ab,sbc,cd->sad", L.T, precision, L))
    u = backend.solve_lower(chol_b, xp.einsum("ab,sb->sa", L.T, score)[:, :, None])[:, :, 0]
    return L, chol_b, u


def unit_log_terms(chol_b, u, xp):
    """What integrating each unit's parts out adds to its log density:
    1/2 norm(u_s)^2 - 1/2 log det B_s, (units,)."""
    return 0.5 * (xp.sum(u**2, axis=1) - 2.0 * xp.sum(xp.log(xp.diagonal(chol_b, axis1=1, axis2=2)), axis=1))


class LevelPoint(NamedTuple):
    """A three-level model at parameters theta: each level's moments, which
    parts level 3 has (``split``) and where they go in the rows (``P``,
    (p, k)), the level-3 units' parts before their classes are seen
    (:class:`UnitPrior`; their mean E c_s, (units, k)) and each class's
    row means at those (clusters, p) and, where level 3 has slope parts, how
    they move each class's random effects' prior mean (``lift``, M_j:
    (clusters, e, k)) and that move at E c_s (``effect_shift``, (clusters, e));
    None without slope parts."""

    within: object
    between: object
    top: object
    split: np.ndarray
    P: np.ndarray
    prior: UnitPrior
    row_means: object
    effect_shift: object
    lift: object


def level_point(spec: ModelSpec, theta, backend) -> LevelPoint:
    """The :class:`LevelPoint` of ``spec``'s three-level model at ``theta``."""
    levels, upper = spec.layout.levels, spec.data.upper_levels[0]
    within = level_moments(theta, spec.within, backend)
    top = level_moments(theta, levels[2].structure, backend)
    split, P = levels[2].placement.split_at, levels[2].placement.place
    between = level_moments(theta, levels[1].structure, backend)
    prior = unit_parts_prior(top, upper, levels[2].placement, backend)
    lift, effect_shift = None, None
    if levels[2].slope_parts:
        lift = levels[2].unit_lift(between.total[levels[1].random_effect_nodes], spec.data.between_covariates, backend)
        effect_shift = backend.xp.einsum("jk,jek->je", prior.mean[upper.parent_index], lift)
    return LevelPoint(within, between, top, split, P, prior,
                      within.mean[None, :] + (prior.mean @ P.T)[upper.parent_index], effect_shift, lift)


def _unit_slope_terms(spec: ModelSpec, stats: dict, theta, backend) -> UnitPartsTerms:
    xp = backend.xp
    within, between, top, split, P, prior, row_means, effect_shift, lift = level_point(spec, theta, backend)
    k = len(split)
    base, terms, factor, v = cluster_marginal(spec, stats, within, between, backend, row_means=row_means,
                                              effect_shift=effect_shift)
    SP = backend.inv(within.Sigma) @ P  # Sigma_W^-1 P
    sums = stats["sum_y"] - stats["n"][:, None] * row_means - stats["sum_x"] @ within.Pi.T  # s_j
    N = stats["x_effects"][:, 0, :][:, :, None] * (terms.SD.T @ P)[None]  # (J, e, k)
    LN = xp.einsum("er,jek->jrk", terms.L, N)
    r = len(v)
    W = xp.stack([xp.stack(unrolled_solve_lower(factor, [LN[:, i, c] for i in range(r)]), axis=1)
                  for c in range(k)], axis=2)  # (J, r, k)
    a = sums @ SP - xp.einsum("jek,je->jk", N, terms.m) - xp.einsum("jrk,jr->jk", W, xp.stack(v, axis=1))
    A = stats["n"][:, None, None] * (P.T @ SP)[None] - xp.einsum("jrk,jrl->jkl", W, W)
    if lift is not None:
        a, A = _with_slope_parts(a, A, lift, len(spec.layout.levels[1].random_effects), stats, terms, factor, v,
                                 N, W, xp)
    membership = unit_membership(spec.data)
    L3, chol_b, u = integrate_unit_parts(prior.cov, xp.einsum("sj,jkl->skl", membership, A), membership @ a, backend)
    return UnitPartsTerms(base, prior.mean, chol_b, u, L3, prior.outcome_logp, lift)


def _with_slope_parts(a, A, lift, e: int, stats, terms, factor, v, N, W, xp):
    """a_j and A_j with the unit's slope parts, which move the class effects'
    prior mean by M_j c~ (``lift``, (clusters, e, k)). As a function of that mean the class's
    marginal density has score Z'V^-1 r = g_j - Q_j' v_j and curvature
    Z'V^-1 Z = H_j - Q_j' Q_j, with H_j = DSD * XX_j and Q_j = C_j^-1 L' H_j;
    the rows' move P c~ and the mean's move meet in N_j - Q_j' W_j (e: the
    number of the class's random effects, static for the unrolled solves)."""
    r = len(v)
    H = stats["xx_effects"].reshape((-1, e, e)) * terms.DSD[None]
    LH = xp.einsum("er,jef->jrf", terms.L, H)
    Q = xp.stack([xp.stack(unrolled_solve_lower(factor, [LH[:, i, f] for i in range(r)]), axis=1)
                  for f in range(e)], axis=2)  # (J, r, e)
    score = terms.g - xp.einsum("jre,jr->je", Q, xp.stack(v, axis=1))
    cross = xp.einsum("jek,jel->jkl", lift, N - xp.einsum("jre,jrk->jek", Q, W))  # M_j'(N_j - Q_j'W_j)
    curvature = xp.einsum("jek,jef,jfl->jkl", lift, H - xp.einsum("jre,jrf->jef", Q, Q), lift)
    return a + xp.einsum("je,jek->jk", score, lift), A + cross + xp.swapaxes(cross, 1, 2) + curvature


def three_level_slopes_logp(spec: ModelSpec, stats: dict, theta, backend, per_unit: bool = False):
    """log p(Y | theta) of a three-level model with random slopes over level-2
    units, every effect integrated out (the module docstring); with
    ``per_unit`` the log density of each level-3 unit's data, (units,), for
    LOO. ``stats``: :func:`~bayes_msem.engines.collapsed_slopes.marginal_statistics`."""
    xp = backend.xp
    terms = _unit_slope_terms(spec, stats, theta, backend)
    per_school = unit_log_terms(terms.chol_b, terms.u, xp) + terms.outcome_logp
    if per_unit:
        return unit_membership(spec.data) @ terms.base + per_school
    return xp.sum(terms.base) + xp.sum(per_school)


def draw_unit_deviations(rng: np.random.Generator, chol_b, u, L) -> np.ndarray:
    """One draw of every level-3 unit's split parts less their mean, (units, k),
    from the Woodbury terms: L B^-1 L' g_s (= L chol_b^-T u_s) plus L chol_b^-T noise."""
    noise = rng.standard_normal(u.shape)
    return np.linalg.solve(np.swapaxes(chol_b, 1, 2), (u + noise)[:, :, None])[:, :, 0] @ L.T


def draw_three_level_slope_effects(spec: ModelSpec, theta_draws: np.ndarray, rng: np.random.Generator,
                                   unit_effects) -> tuple[np.ndarray, np.ndarray]:
    """Every level-3 unit's and class's effects from their exact conditional,
    once per posterior draw (:func:`draw_units_and_shifts`), each class's
    effects given its rows moved by P c_s
    (:func:`~bayes_msem.engines.collapsed_slopes.draw_slope_cluster_effects`).
    Returns (chains, draws, clusters, level-2 effects) and (chains, draws,
    units, level-3 effects)."""
    stats = marginal_statistics(spec)
    top_out, shifts, effect_shifts = draw_units_and_shifts(
        spec, theta_draws, rng, unit_effects, lambda theta: _unit_slope_terms(spec, stats, theta, NUMPY_BACKEND))
    middle_out = draw_slope_cluster_effects(spec, theta_draws, int(rng.integers(2**32)),
                                            spec.layout.levels[1].effect_nodes, row_shifts=shifts,
                                            effect_shifts=effect_shifts)
    return middle_out, top_out


def draw_units_and_shifts(spec: ModelSpec, theta_draws: np.ndarray, rng: np.random.Generator, unit_effects,
                          unit_terms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per posterior draw, every level-3 unit's parts c_s from N(E c_s + L3
    chol(B_s)^-T u_s, L3 B_s^-1 L3') (the Woodbury terms ``unit_terms(theta)``
    gives), its other effects by ``unit_effects(theta, parts)`` given the
    parts, and how the parts move each class's
    rows (P c_s) and its random effects' prior mean (M c_s, a slope's part).
    Returns the units' effects (chains, draws, units, level-3 effects) and the
    moves (chains, draws, clusters, p) and (chains, draws, clusters, e)."""
    levels, upper = spec.layout.levels, spec.data.upper_levels[0]
    chains, draws, _ = theta_draws.shape
    P = levels[2].placement.place
    top_out = np.empty((chains, draws, upper.n_units, len(levels[2].effects)))
    shifts = np.empty((chains, draws, spec.data.n_clusters, P.shape[0]))
    effect_shifts = np.zeros((chains, draws, spec.data.n_clusters, len(levels[1].random_effects)))
    for c in range(chains):
        for d in range(draws):
            terms = unit_terms(theta_draws[c, d])
            deviations = draw_unit_deviations(rng, terms.chol_b, terms.u, terms.L3)
            parts = terms.top_mean + deviations
            top_out[c, d] = unit_effects(theta_draws[c, d], parts)
            parts = parts[upper.parent_index]
            shifts[c, d] = parts @ P.T
            if terms.lift is not None:
                effect_shifts[c, d] = np.einsum("jk,jek->je", parts, terms.lift)
    return top_out, shifts, effect_shifts
