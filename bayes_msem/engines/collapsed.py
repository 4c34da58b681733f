"""The *collapsed* engine: Gaussian cluster effects integrated out exactly.

Random slopes (on observed covariates) are handled in :mod:`.collapsed_slopes`.
Without random slopes, the rows of cluster j given its between effects are
normal with a shared mean, so the cluster effects can be integrated out. With
d_ij = y_ij - m - Pi x_ij (the within model's mean removed) and n_j rows,

    log p(Y_j, z_j) = -1/2 [(n_j - 1)(p log 2pi + log|Sigma_W|) + tr(Sigma_W^-1 W_j) + p log n_j]
                      + log N((dbar_j, z_j); (mu_b(w_j), mu_z(w_j)), V(n_j)),

    V(n) = [[Sigma_W / n + Sigma_bb, Sigma_bz], [Sigma_zb, Sigma_zz]],

where W_j is the within-cluster scatter of d (its sum over clusters comes from
pooled cross-products computed once) and Sigma_B, mu_B are the between level's
implied moments over the between parts of split variables (b) and the
between-only outcomes (z). V depends on a cluster only through its size, so
one Cholesky factor per distinct size is needed (Rosseel 2021; lavaan's
``lav_mvnorm_cluster``): a gradient costs O(sizes * k^3 + clusters * k^2),
whatever the number of rows.

Cluster effects (latent cluster means, between factor scores) are drawn after
sampling from their exact Gaussian conditional given each cluster's data, for
every posterior draw, so results look the same as the latent engine's.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pymc as pm

from bayes_msem.data import cluster_cross_products, cluster_mean_statistics
from bayes_msem.engines import collapsed_supported
from bayes_msem.engines.collapsed_slopes import draw_slope_cluster_effects, marginal_statistics, slopes_logp
from bayes_msem.engines.latent import PYTENSOR_BACKEND, cluster_scatter, mvn_logp_from_scatter
from bayes_msem.engines.missing import missing_logp, missing_statistics
from bayes_msem.engines.parameters import free_parameter_vector, parameter_names
from bayes_msem.engines.three_level_missing import draw_three_level_missing_effects, three_level_missing_logp
from bayes_msem.engines.three_level_slopes import (
    draw_three_level_slope_effects,
    draw_unit_deviations,
    integrate_unit_parts,
    three_level_slopes_logp,
    unit_log_terms,
    unit_membership,
    unit_parts_prior,
)
from bayes_msem.layout import LevelLayout, Placement
from bayes_msem.matrices import NUMPY_BACKEND, LevelMoments, jax_backend, level_moments, psd_root
from bayes_msem.spec import ModelSpec

__all__ = ["build_collapsed_model", "collapsed_logp", "draw_cluster_effects", "two_level_logp", "three_level_logp"]


def _observation_covariance(within: LevelMoments, between: LevelMoments, n, layout: Placement, xp):
    """V(n) of (dbar, z) for cluster size(s) n: a (..., k, k) array."""
    b_b, z_b, place = layout
    sigma_b = between.Sigma
    top_left = within.Sigma[None, :, :] / n[:, None, None] + (place @ sigma_b[b_b][:, b_b] @ place.T)[None]
    if len(z_b) == 0:
        return top_left
    top_right = place @ sigma_b[b_b][:, z_b]
    bottom = sigma_b[z_b][:, z_b]
    rows, p, n_z = len(n), place.shape[0], len(z_b)  # static sizes: the same code serves pytensor
    upper = xp.concatenate([top_left, xp.broadcast_to(top_right[None], (rows, p, n_z))], axis=2)
    lower = xp.concatenate([xp.broadcast_to(top_right.T[None], (rows, n_z, p)),
                            xp.broadcast_to(bottom[None], (rows, n_z, n_z))], axis=2)
    return xp.concatenate([upper, lower], axis=1)


def _observation_residuals(data, stats, within: LevelMoments, between: LevelMoments, layout: Placement):
    """(dbar_j - E dbar_j, z_j - E z_j) for every cluster: (clusters, k)."""
    b_b, z_b, place = layout
    w = data.between_covariates
    between_mean = between.mean[None, :] + w @ between.Pi.T  # (J, between observed)
    dbar = stats["mean_y"] - within.mean[None, :] - stats["mean_x"] @ within.Pi.T
    residual = dbar - between_mean[:, b_b] @ place.T
    if len(z_b):
        return residual, data.between_outcomes - between_mean[:, z_b]
    return residual, None


def build_collapsed_model(spec: ModelSpec, jax_likelihood: bool = False) -> pm.Model:
    """Build the PyMC model of the collapsed engine. With ``jax_likelihood``
    the likelihood is traced by JAX directly and enters as one Op
    (:mod:`.jax_likelihood`): what the numpyro sampler wants, as PyMC's own
    translation of the PyTensor graph to JAX made the gradient 2.3x slower."""
    supported, why = collapsed_supported(spec)
    if not supported:
        raise ValueError(f"the collapsed engine does not apply: {why}")
    coords = {"parameter": parameter_names(spec)}
    with pm.Model(coords=coords) as model:
        theta = free_parameter_vector(spec)
        pm.Deterministic("parameters", theta, dims="parameter")
        # With missing values the likelihood is always traced by JAX: PyTensor took over 5 minutes
        # to compile its gradient (10 clusters), and the Op serves PyTensor's samplers too.
        if jax_likelihood or spec.data.has_missing:
            from bayes_msem.engines.jax_likelihood import JaxLogLikelihood

            backend = jax_backend()
            loglik = JaxLogLikelihood(lambda values: collapsed_logp(spec, values, backend))(theta)
        else:
            loglik = collapsed_logp(spec, theta, PYTENSOR_BACKEND)
        pm.Potential("loglik", loglik)
    return model


def collapsed_logp(spec: ModelSpec, theta, backend):
    """log p(Y, z | theta) with every cluster effect integrated out, in
    ``backend``: by cluster sizes without random slopes, by clusters with them,
    by clusters and missing-data patterns where values are missing."""
    if spec.data.has_missing and len(spec.layout.levels) == 3:
        return three_level_missing_logp(spec, missing_statistics(spec), theta, backend)
    if spec.data.has_missing:
        return missing_logp(spec, theta, backend)
    if len(spec.layout.levels) == 3:
        return _spec_three_level_logp(spec, three_level_statistics(spec, per_unit=False), theta, backend)
    if spec.within.slopes:
        return slopes_logp(spec, theta, backend)
    within = level_moments(theta, spec.within, backend)
    between = level_moments(theta, spec.between, backend)
    return two_level_logp(spec.data, cluster_mean_statistics(spec.data), within, between, spec.layout.placement,
                          backend)


def two_level_logp(data, stats, within, between, layout: Placement, backend=PYTENSOR_BACKEND):
    """log p(Y, z) of a two-level model without random slopes, cluster effects
    integrated out (the formula in this module's docstring). ``within`` and
    ``between`` need only ``mean``, ``Pi`` and ``Sigma``, so the saturated
    model of the predictive checks goes through the same function (with the
    NumPy backend) as the sampler's likelihood."""
    xp = backend.xp
    k = layout[2].shape[0] + len(layout[1])
    inv_chol_v, logdet_v, residual = _cluster_observations(data, stats, within, between, layout, backend)
    whitened = xp.einsum("jab,jb->ja", inv_chol_v[stats["size_index"]], residual)
    quad = xp.sum(whitened**2)
    between_part = -0.5 * (data.n_clusters * k * np.log(2 * np.pi)
                           + xp.sum(stats["clusters_per_size"] * logdet_v) + quad)
    return _within_part(data, stats, within, layout[2].shape[0], backend) + between_part


def _within_part(data, stats, within, p: int, backend):
    """log density of the rows' deviations from their cluster means (n_rows -
    n_clusters degrees of freedom), with the p log n_j terms of the means' Jacobian."""
    Pi = within.Pi
    yx_pi = stats["yx_within"] @ Pi.T
    scatter = stats["yy_within"] - yx_pi - yx_pi.T + Pi @ stats["xx_within"] @ Pi.T
    return (mvn_logp_from_scatter(scatter, float(data.n_rows - data.n_clusters), within.Sigma, backend)
            - 0.5 * p * np.sum(np.log(data.cluster_sizes)))


def _cluster_observations(data, stats, within, between, layout: Placement, backend):
    """Each cluster's observation (dbar_j, z_j) given its level-2 moments: the
    inverse Cholesky factors of V(n) per size (G, k, k), their log
    determinants (G,), and the residuals from the level-2 mean (clusters, k)."""
    xp = backend.xp
    V = _observation_covariance(within, between, stats["sizes"], layout, xp)  # (G, k, k)
    chol_v = backend.cholesky(V)
    logdet_v = 2.0 * xp.sum(xp.log(xp.diagonal(chol_v, axis1=1, axis2=2)), axis=1)  # (G,)
    inv_chol_v = backend.solve_lower(chol_v, xp.broadcast_to(xp.eye(V.shape[-1]), V.shape))
    residual, z_residual = _observation_residuals(data, stats, within, between, layout)
    if z_residual is not None:
        residual = xp.concatenate([residual, z_residual], axis=1)
    return inv_chol_v, logdet_v, residual


def three_level_logp(data, stats, within, middle, top, layouts: tuple[LevelLayout, LevelLayout],
                     backend=PYTENSOR_BACKEND, per_unit: bool = False):
    """log p(Y) of a three-level model without random slopes, the level-2 and
    level-3 effects integrated out exactly, level by level.

    Given its level-3 unit's effects c_s (mean mu_c(w_s), covariance Sigma_3),
    cluster j's observation o_j = (dbar_j, z_j) is N(mu_j + Q c_s, V(n_j)) as in
    a two-level model, independently of the other clusters (Q places the
    level-3 parts into o_j). Integrating c_s out (Woodbury, with
    Sigma_3 = L L' so that no inverse of Sigma_3 is needed):

        log p(o_s) = sum_j log N(r_j; 0, V_j) - 1/2 log det B_s + 1/2 norm(B_s^-1/2 L' g_s)^2,
        M_s = sum_j Q' V_j^-1 Q,  B_s = I + L' M_s L,  g_s = sum_j Q' V_j^-1 r_j,

    r_j the residual from the mean with c_s at its mean. Where the unit has
    outcomes of its own (v_s, observed only at level 3), c_s's mean and
    covariance are those given v_s and log N(v_s) is added; a class outcome
    with a level-3 part takes that part through Q's rows for z_j. V_j depends on the
    cluster's size only, so M_s is a count-weighted sum over sizes: a
    gradient costs O(sizes k^3 + units k^2), whatever the number of rows.
    ``layouts`` are the LevelLayouts of levels 2 and 3. With ``per_unit`` the
    log density of each level-3 unit's data, (units,), for LOO: then ``stats``
    needs each cluster's centred cross-products (:func:`three_level_statistics`)."""
    xp = backend.xp
    p = layouts[0].placement.place.shape[0]
    inv_chol_v, logdet_v, residual = _cluster_observations(data, stats, within, middle, layouts[0].placement, backend)
    terms = _unit_terms(data, stats, inv_chol_v, residual, top, layouts, backend)
    k = terms.Q.shape[0]
    integrated = unit_log_terms(terms.chol_b, terms.u, xp) + terms.outcome_logp  # (S,)
    if per_unit:
        by_cluster = k * np.log(2 * np.pi) + logdet_v[stats["size_index"]] + xp.sum(terms.whitened**2, axis=1)
        between_parts = -0.5 * terms.membership @ by_cluster + integrated
        return terms.membership @ _within_part_per_cluster(data, stats, within, p, backend) + between_parts
    logdet = xp.sum(stats["clusters_per_size"] * logdet_v)
    between_part = (-0.5 * (data.n_clusters * k * np.log(2 * np.pi) + logdet + xp.sum(terms.whitened**2))
                    + xp.sum(integrated))
    return _within_part(data, stats, within, p, backend) + between_part


class _UnitTerms(NamedTuple):
    """What integrating out the level-3 units' split parts c_s needs (see
    :func:`three_level_logp`): the clusters' residuals from their mean at
    E c_s and whitened by V_j^-1/2, the units x clusters membership, Q (the
    parts into each cluster's observation), Sigma_3 = L L', the factor of
    B_s = I + L' M_s L and u_s = chol(B_s)^-1 L' g_s; E c_s and the log
    density of each unit's own outcomes (c_s's moments are given those,
    :func:`~bayes_msem.engines.three_level_slopes.unit_parts_prior`)."""

    residual: object
    whitened: object
    membership: np.ndarray
    Q: np.ndarray
    L: object
    chol_b: object
    u: object
    top_mean: object
    outcome_logp: object


def _unit_terms(data, stats, inv_chol_v, residual, top, layouts: tuple[LevelLayout, LevelLayout],
                backend) -> _UnitTerms:
    xp = backend.xp
    upper = data.upper_levels[0]
    Q = layouts[1].observation_place  # the level-3 parts into (dbar, z)
    prior = unit_parts_prior(top, upper, layouts[1].placement, backend)
    residual = residual - (prior.mean @ Q.T)[upper.parent_index]
    whitened = xp.einsum("jab,jb->ja", inv_chol_v[stats["size_index"]], residual)  # V_j^-1/2 r_j
    U = xp.einsum("gab,bc->gac", inv_chol_v, Q)  # V_g^-1/2 Q
    h = xp.einsum("jac,ja->jc", U[stats["size_index"]], whitened)  # Q' V_j^-1 r_j
    membership = unit_membership(data)
    sizes_per_unit = membership @ np.eye(len(stats["sizes"]))[stats["size_index"]]  # (S, G) clusters of each size
    M = xp.einsum("sg,gac,gad->scd", sizes_per_unit, U, U)  # sum_j Q' V_j^-1 Q
    g = membership @ h  # (S, split)
    L, chol_b, u = integrate_unit_parts(prior.cov, M, g, backend)
    return _UnitTerms(residual, whitened, membership, Q, L, chol_b, u, prior.mean, prior.outcome_logp)


def _has_random_slopes(spec: ModelSpec) -> bool:
    """Whether a three-level model has random slopes (of the rows' covariates,
    or of the classes' covariates over schools): the slope engine's case."""
    return bool(spec.within.slopes or spec.layout.levels[2].slope_parts)


def _spec_three_level_logp(spec: ModelSpec, stats, theta, backend, per_unit: bool = False):
    """:func:`three_level_logp` of a spec's model at free parameters ``theta``,
    or with random slopes :func:`~bayes_msem.engines.three_level_slopes.three_level_slopes_logp`
    (``stats`` from :func:`three_level_statistics`)."""
    if _has_random_slopes(spec):
        stats = {k: backend.asarray(v) for k, v in stats.items()}
        return three_level_slopes_logp(spec, stats, theta, backend, per_unit=per_unit)
    top = spec.layout.levels[2]
    return three_level_logp(spec.data, stats, level_moments(theta, spec.within, backend),
                            level_moments(theta, spec.between, backend), level_moments(theta, top.structure, backend),
                            spec.layout.levels[1:], backend, per_unit=per_unit)


def _within_part_per_cluster(data, stats, within, p: int, backend):
    """:func:`_within_part` cluster by cluster, (clusters,), from each cluster's
    cross-products (``stats["cross"]``, :func:`three_level_statistics`)."""
    xp = backend.xp
    Pi = within.Pi
    # the residuals y - Pi x around their cluster mean: m_j = ybar_j - Pi xbar_j
    scatter = cluster_scatter(stats["cross"], data.stats, stats["mean_y"] - stats["mean_x"] @ Pi.T, Pi)
    chol = backend.cholesky(within.Sigma)
    inv_chol = backend.solve_lower(chol, xp.eye(p))
    precision = inv_chol.T @ inv_chol
    logdet = 2.0 * xp.sum(xp.log(xp.diagonal(chol)))
    n = stats["n"]
    return -0.5 * ((n - 1) * (p * np.log(2 * np.pi) + logdet) + xp.sum(scatter * precision[None], axis=(1, 2))
                   + p * np.log(n))


def three_level_statistics(spec: ModelSpec, per_unit: bool) -> dict[str, np.ndarray]:
    """What the three-level density reads from the data: the clusters' means
    (:func:`~bayes_msem.data.cluster_mean_statistics`), with ``per_unit`` also
    each cluster's cross-products (``cross``) and sizes (``n``); with random
    slopes the per-cluster cross-products of the slope engine
    (:func:`~bayes_msem.engines.collapsed_slopes.marginal_statistics`)."""
    data = spec.data
    if _has_random_slopes(spec):
        return marginal_statistics(spec)
    if not per_unit:
        return cluster_mean_statistics(data)
    return {**cluster_mean_statistics(data), "cross": cluster_cross_products(data), "n": data.stats["n"]}


def three_level_unit_log_likelihood(spec: ModelSpec, theta_draws: np.ndarray) -> np.ndarray:
    """log p(data of a level-3 unit | parameters), every effect integrated out:
    (chains, draws, units), the units of LOO in a three-level model."""
    import jax
    import jax.numpy as jnp

    from bayes_msem.engines.collapsed_slopes import _in_chunks

    backend = jax_backend()
    if spec.data.has_missing:
        stats = missing_statistics(spec)
        logp = three_level_missing_logp
    else:
        stats, logp = three_level_statistics(spec, per_unit=True), _spec_three_level_logp
    per_draw = jax.jit(jax.vmap(lambda theta: logp(spec, stats, theta, backend, per_unit=True)))
    units = spec.data.upper_levels[0].n_units
    return np.stack([_in_chunks(lambda rows: per_draw(jnp.asarray(rows)), chain, units) for chain in theta_draws])


def draw_cluster_effects(spec: ModelSpec, theta_draws: np.ndarray, seed: int | None) -> np.ndarray:
    """Draw every cluster's between effects from their exact conditional given
    the cluster's data, once per posterior draw.

    ``theta_draws`` is (chains, draws, n_free); returns (chains, draws, clusters,
    cluster variables) in the order of the layout's ``levels[1].effects``.
    """
    rng = np.random.default_rng(seed)
    clusters = spec.layout.levels[1]
    if spec.within.slopes:
        return draw_slope_cluster_effects(spec, theta_draws, seed, clusters.effect_nodes)
    stats = cluster_mean_statistics(spec.data)
    chains, draws, _ = theta_draws.shape
    out = np.empty((chains, draws, spec.data.n_clusters, len(clusters.effects)))
    for c in range(chains):
        for d in range(draws):
            theta = theta_draws[c, d]
            within = level_moments(theta, spec.within)
            between = level_moments(theta, clusters.structure)
            residual = np.concatenate([part for part in _observation_residuals(
                spec.data, stats, within, between, clusters.placement) if part is not None], axis=1)
            out[c, d] = _draw_given_observations(rng, within, between, stats, clusters,
                                                 spec.data.between_covariates, residual)
    return out


def _draw_given_observations(rng, within, between, stats, clusters, covariates, residual) -> np.ndarray:
    """One draw of every cluster's effects (``clusters.effects``) given its
    observation's residual from its mean (clusters, k): the Gaussian conditional."""
    b_b, z_b, place = clusters.placement
    effect_nodes = clusters.effect_nodes
    observed_nodes = np.arange(clusters.structure.n_observed)  # observed variables come first among nodes
    node_mean, node_cov = between.node_moments(covariates)  # (J, nodes), (nodes, nodes)
    # Cov(effects, observation): observation = (P b + within noise, z)
    cross = node_cov[np.ix_(effect_nodes, observed_nodes[b_b])] @ place.T
    if len(z_b):
        cross = np.concatenate([cross, node_cov[np.ix_(effect_nodes, observed_nodes[z_b])]], axis=1)
    V = _observation_covariance(within, between, stats["sizes"], clusters.placement, np)
    gain = cross[None] @ np.linalg.inv(V)  # (G, effects, k)
    mean = node_mean[:, effect_nodes] + np.einsum("jek,jk->je", gain[stats["size_index"]], residual)
    cond_cov = node_cov[np.ix_(effect_nodes, effect_nodes)][None] - gain @ cross.T[None]
    root = psd_root(cond_cov)[stats["size_index"]]
    return mean + np.einsum("jef,jf->je", root, rng.standard_normal((len(residual), len(effect_nodes))))


def draw_three_level_effects(spec: ModelSpec, theta_draws: np.ndarray,
                             seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Draw every level-3 unit's and every cluster's effects from their exact
    conditional given the data, once per posterior draw: first a unit's split
    parts given its clusters' observations (the Woodbury terms of
    :func:`three_level_logp`), its other effects (factors) given those, then
    each cluster's effects given its observation less its unit's parts, as in
    a two-level model (with random slopes:
    :func:`~bayes_msem.engines.three_level_slopes.draw_three_level_slope_effects`).
    Returns (chains, draws, clusters, level-2 effects) and (chains, draws,
    units, level-3 effects), in the layout's ``effects`` order."""
    rng = np.random.default_rng(seed)
    data, (_, clusters, top) = spec.data, spec.layout.levels
    upper = data.upper_levels[0]

    def unit_effects(theta, parts):
        """The units' effects given their split parts (units, k) and their own outcomes."""
        node_mean, node_cov = level_moments(theta, top.structure).node_moments(upper.covariates)
        given = np.concatenate([top.placement.split_at, top.placement.outcomes_at])
        deviations = np.concatenate([parts, upper.outcomes], axis=1) - node_mean[:, given]
        gain = node_cov[np.ix_(top.effect_nodes, given)] @ np.linalg.inv(node_cov[np.ix_(given, given)])
        cond_cov = node_cov[np.ix_(top.effect_nodes, top.effect_nodes)] - gain @ node_cov[np.ix_(given, top.effect_nodes)]
        return (node_mean[:, top.effect_nodes] + deviations @ gain.T
                + rng.standard_normal((upper.n_units, len(top.effects))) @ psd_root(cond_cov).T)

    if spec.data.has_missing:
        return draw_three_level_missing_effects(spec, theta_draws, rng, unit_effects)
    if _has_random_slopes(spec):
        return draw_three_level_slope_effects(spec, theta_draws, rng, unit_effects)
    stats = cluster_mean_statistics(data)
    chains, draws, _ = theta_draws.shape
    middle_out = np.empty((chains, draws, data.n_clusters, len(clusters.effects)))
    top_out = np.empty((chains, draws, upper.n_units, len(top.effects)))
    for c in range(chains):
        for d in range(draws):
            theta = theta_draws[c, d]
            within, between = level_moments(theta, spec.within), level_moments(theta, clusters.structure)
            inv_chol_v, _, residual = _cluster_observations(data, stats, within, between, clusters.placement, NUMPY_BACKEND)
            terms = _unit_terms(data, stats, inv_chol_v, residual, level_moments(theta, top.structure),
                                (clusters, top), NUMPY_BACKEND)
            deviations = draw_unit_deviations(rng, terms.chol_b, terms.u, terms.L)
            top_out[c, d] = unit_effects(theta, terms.top_mean + deviations)
            middle_out[c, d] = _draw_given_observations(rng, within, between, stats, clusters, data.between_covariates,
                                                        terms.residual - (deviations @ terms.Q.T)[upper.parent_index])
    return middle_out, top_out
