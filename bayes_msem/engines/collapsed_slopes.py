"""The collapsed engine for models with random slopes on observed covariates,
and the exact per-cluster marginal likelihood of every collapsible model
(the unit of leave-one-cluster-out LOO; without slopes ``Z`` has only the
between-part columns).

With a random slope the rows of a cluster no longer share one covariance, so
clusters cannot be grouped by size (:mod:`.collapsed`). They are still
Gaussian given the cluster effects, and the effects enter linearly: per row,

    y_ij = mu + Pi x_ij + Z_ij u_j + e_ij,   e_ij ~ N(0, Sigma_W),

where ``u_j`` holds the between parts of split variables (placed by ``P``)
and the random slopes (slope k adds ``T_k * x_ij[l_k]``, with ``T_k`` the
column of (I - A_W)^-1 of the outcome it sits on). The between level writes
every between variable as ``e_j = m_j + F xi_j`` with ``xi_j ~ N(0, I)``
(``F`` need not be square: zero variances are allowed), conditioned on the
cluster's observed level-2 outcomes. Integrating ``xi_j`` out by the Woodbury
identity and the matrix determinant lemma needs, per cluster, only

    H_j = sum_i Z_ij' Sigma_W^-1 Z_ij   and   g_j = sum_i Z_ij' Sigma_W^-1 r_ij,

which follow from the per-cluster cross-products of (1, x) and (y; 1, x)
computed once. A gradient therefore costs O(clusters * r^3) for r random
effects, whatever the cluster sizes (Rockwood 2020; PERFORMANCE.md).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from bayes_msem.data import cluster_cross_products
from bayes_msem.engines.latent import PYTENSOR_BACKEND, cluster_scatter, pooled_scatter
from bayes_msem.matrices import LevelMoments, jax_backend, level_moments
from bayes_msem.spec import ModelSpec

__all__ = ["slope_statistics", "slopes_logp", "draw_slope_cluster_effects", "cluster_marginal_logp",
           "cluster_log_likelihood"]


CHUNK_ELEMENTS = 200_000  # draws x clusters handled at once after sampling


def slope_statistics(spec: ModelSpec) -> dict[str, np.ndarray]:
    """The per-cluster cross-products of x~ = (1, x) and (y; x~) that the
    columns of Z pick (the layout's ``random_effect_columns``), selected once here rather
    than at every gradient: ``xx_effects`` (clusters, e*e) flattened, for the
    one matrix product that builds every cluster's precision
    (:func:`_effects_posterior`); ``x_effects`` (clusters, q+1, e) and
    ``yx_effects`` (clusters, p, e)."""
    data = spec.data
    cross, stats = cluster_cross_products(data), data.stats
    n, sum_x, sum_y = stats["n"], stats["sum_x"], stats["sum_y"]
    xx = np.concatenate([np.concatenate([n[:, None, None], sum_x[:, None, :]], axis=2),
                         np.concatenate([sum_x[:, :, None], cross["xx"]], axis=2)], axis=1)
    yx = np.concatenate([sum_y[:, :, None], cross["yx"]], axis=2)
    which = spec.layout.levels[1].random_effect_columns
    return {"xx_effects": xx[:, which][:, :, which].reshape(len(xx), -1), "x_effects": xx[:, :, which],
            "yx_effects": yx[:, :, which]}


def _effects_posterior(L, DSD, xx_effects, g, spec: ModelSpec, backend):
    """The cluster effects' posterior on the eta scale: precision
    M_j = I + L'H_j L with H_j = DSD * XX_j (elementwise), its Cholesky factor
    C_j and v_j = C_j^-1 L'g_j, so that the posterior mean is C_j^-T v_j and
    log p(Y_j) gains |v_j|^2 / 2 - log|C_j|.

    The lower triangle of every M_j comes from one product of the flattened
    XX_j (clusters, e*e) with W[(k,l), (a,b)] = L[k,a] L[l,b] DSD[k,l]: a
    matrix product over clusters instead of two tiny ones per cluster, which
    halved the gradient of this step in JAX. The r x r work after it is
    unrolled into elementwise operations over clusters, which XLA fuses (its
    batched LAPACK calls were the bottleneck at 500 clusters)."""
    e, r = L.shape[0], len(spec.layout.levels[1].innovations)  # static, as the unrolled loops need
    lower = [(i, j) for i in range(r) for j in range(i + 1)]
    W = (L[:, None, :, None] * L[None, :, None, :] * DSD[:, :, None, None]).reshape((e * e, r * r))
    entries = xx_effects @ W[:, [i * r + j for i, j in lower]]
    M = {pair: entries[:, k] + (1.0 if pair[0] == pair[1] else 0.0) for k, pair in enumerate(lower)}
    factor = unrolled_cholesky(M, r, backend)
    h = g @ L
    return factor, unrolled_solve_lower(factor, [h[:, i] for i in range(r)])


def _between_factor(spec: ModelSpec, between: LevelMoments, backend):
    """Between variables as ``mean_j + F eta_j`` with eta_j ~ N(0, I), given the
    cluster's observed level-2 outcomes z_j; also the residuals of z_j and
    their covariance (None without such outcomes)."""
    clusters = spec.layout.levels[1]
    random = clusters.innovations
    root = backend.cholesky(between.S[np.ix_(random, random)])
    F = between.total[:, random] @ root
    w = spec.data.between_covariates
    mean = (between.alpha[None, :] + w @ between.A_x.T) @ between.total.T
    if not clusters.outcomes:
        return mean, F, None
    z_idx = clusters.outcome_nodes
    F_z = F[z_idx]
    G = F_z @ F_z.T
    residual = spec.data.between_outcomes - mean[:, z_idx]
    K = backend.solve(G, F_z).T  # (random, z): F_z' G^-1
    mean = mean + (residual @ K.T) @ F.T
    F = F @ (backend.eye(len(random)) - K @ F_z)
    return mean, F, (residual, G)


class _ClusterTerms(NamedTuple):
    """What integrating out each cluster's effects needs (:func:`_cluster_terms`)."""

    DSD: object  # D' Sigma_W^-1 D: H_j = DSD * XX_j
    SD: object  # Sigma_W^-1 D
    g: object  # (clusters, e): g_j less H_j m_j
    m: object  # (clusters, e): the effects' prior means
    prior_shift: object  # (clusters,): the part of sum r'S^-1 r that the prior mean changes
    L: object  # (e, r): the effects' rows of F
    mean: object  # (clusters, nodes): every between variable's prior mean
    F: object  # (nodes, r): between variables = mean + F eta
    outcomes: tuple | None  # level-2 outcomes' residuals and covariance


def _cluster_terms(spec, stats, within: LevelMoments, between: LevelMoments, backend, row_means=None,
                   effect_shift=None):
    """DSD = D'Sigma_W^-1 D (H_j = DSD * XX_j), g_j (after subtracting the prior
    mean), the part of sum r'S^-1 r that the prior mean changes, and the factor
    L of the effects' covariance. ``row_means`` (clusters, p), the rows' means
    before Pi x and the cluster effects, default the within mean (a
    three-level model adds each cluster's share of its unit's effects);
    ``effect_shift`` (clusters, effects), where given, moves the effects'
    prior means (a three-level model's slope parts of the unit above)."""
    D = spec.layout.levels[1].effect_design(within.total, backend)
    effect_nodes = spec.layout.levels[1].random_effect_nodes
    SD = backend.inv(within.Sigma) @ D
    DSD = D.T @ SD
    x_eff, yx_eff, xx = stats["x_effects"], stats["yx_effects"], stats["xx_effects"]
    means = within.mean[None, :] if row_means is None else row_means
    # sum_i r_ij x~_ij[which]' with r = y - mu - Pi x
    rx = yx_eff - means[:, :, None] * x_eff[:, 0, :][:, None, :] - within.Pi[None] @ x_eff[:, 1:, :]
    g0 = (rx * SD[None]).sum(axis=1)  # (J, effects)
    mean, F, outcomes = _between_factor(spec, between, backend)
    m = mean[:, effect_nodes] if effect_shift is None else mean[:, effect_nodes] + effect_shift
    e = len(effect_nodes)
    Hm = (xx.reshape((xx.shape[0], e, e)) * DSD[None] * m[:, None, :]).sum(axis=2)
    g = g0 - Hm
    prior_shift = 2.0 * (m * g0).sum(axis=1) - (m * Hm).sum(axis=1)  # per cluster
    return _ClusterTerms(DSD, SD, g, m, prior_shift, F[effect_nodes], mean, F, outcomes)


def cluster_marginal_logp(spec: ModelSpec, stats: dict, theta, backend, total: bool = False):
    """log p(Y_j, z_j | parameters) of every cluster, with its effects
    integrated out: a (clusters,) vector, or with ``total=True`` its sum, where
    the residual scatter is then pooled over clusters (what the sampler needs,
    and cheaper). ``stats`` holds :func:`slope_statistics`, the per-cluster
    cross-products (:func:`bayes_msem.data.cluster_cross_products`) and the
    pooled ones of :attr:`ClusterData.stats`. The same code runs in PyTensor
    (the sampler), JAX (after sampling) and NumPy."""
    within = level_moments(theta, spec.within, backend)
    between = level_moments(theta, spec.between, backend)
    return cluster_marginal(spec, stats, within, between, backend, total=total)[0]


def cluster_marginal(spec: ModelSpec, stats: dict, within: LevelMoments, between: LevelMoments, backend,
                     total: bool = False, row_means=None, effect_shift=None):
    """:func:`cluster_marginal_logp` at given moments, with ``row_means`` and
    ``effect_shift`` (see :func:`_cluster_terms`); also returns the cluster
    terms and the effects' posterior factor and whitened mean
    (:func:`_effects_posterior`)."""
    data = spec.data
    p = spec.within.n_observed
    terms = _cluster_terms(spec, stats, within, between, backend, row_means, effect_shift)
    # without cluster effects: the ordinary within likelihood at the fixed part
    means = backend.zeros((data.n_clusters, p)) + (within.mean[None, :] if row_means is None else row_means)
    chol_w = backend.cholesky(within.Sigma)
    logdet_w = 2.0 * backend.log(chol_w.diagonal()).sum()
    n = stats["n"]
    if total:
        quad = (backend.inv(within.Sigma) * pooled_scatter(stats["pooled"], means, within.Pi)).sum()
        within_part = -0.5 * (n.sum() * (p * np.log(2 * np.pi) + logdet_w) + quad)
    else:
        scatter = cluster_scatter(stats, stats, means, within.Pi)
        quad = (backend.inv(within.Sigma)[None] * scatter).sum(axis=(1, 2))  # tr(Sigma^-1 S_j)
        within_part = -0.5 * (n * (p * np.log(2 * np.pi) + logdet_w) + quad)
    factor, v = _effects_posterior(terms.L, terms.DSD, stats["xx_effects"], terms.g, spec, backend)
    logdet_m = 2.0 * sum(backend.log(factor[i][i]) for i in range(len(v)))
    between_part = 0.5 * (terms.prior_shift + sum(x**2 for x in v) - logdet_m)
    if terms.outcomes is not None:
        residual, G = terms.outcomes
        chol_g = backend.cholesky(G)
        white = backend.solve_lower(chol_g, residual.T)
        between_part = between_part - 0.5 * (residual.shape[1] * np.log(2 * np.pi)
                                             + 2.0 * backend.log(chol_g.diagonal()).sum() + (white**2).sum(axis=0))
    logp = within_part + between_part.sum() if total else within_part + between_part
    return logp, terms, factor, v


def unrolled_cholesky(M: dict, r: int, backend) -> list[list]:
    """Lower Cholesky factors of a batch of small positive definite matrices,
    given as ``M[(i, j)]`` (batch,) arrays for i >= j; returned as a nested list
    of (batch,) arrays (entries above the diagonal left out). ``r`` must be
    known when the graph is built."""
    L: list[list] = [[None] * r for _ in range(r)]
    for i in range(r):
        for j in range(i + 1):
            total = M[(i, j)]
            for k in range(j):
                total = total - L[i][k] * L[j][k]
            L[i][j] = backend.sqrt(total) if i == j else total / L[j][j]
    return L


def unrolled_solve_lower(L: list[list], b: list) -> list:
    """Solve L x = b for every batch entry; ``b`` a list of r (batch,) arrays."""
    x: list = []
    for i, b_i in enumerate(b):
        total = b_i
        for k in range(i):
            total = total - L[i][k] * x[k]
        x.append(total / L[i][i])
    return x


def unrolled_solve_upper(L: list[list], b: list) -> list:
    """Solve L' x = b for every batch entry (L from :func:`unrolled_cholesky`)."""
    r = len(b)
    x: list = [None] * r
    for i in reversed(range(r)):
        total = b[i]
        for k in range(i + 1, r):
            total = total - L[k][i] * x[k]
        x[i] = total / L[i][i]
    return x


def marginal_statistics(spec: ModelSpec) -> dict[str, np.ndarray]:
    """Everything :func:`cluster_marginal_logp` reads from the data."""
    stats = spec.data.stats
    return {**slope_statistics(spec), **cluster_cross_products(spec.data),
            "sum_y": stats["sum_y"], "sum_x": stats["sum_x"], "n": stats["n"]}


def slopes_logp(spec: ModelSpec, theta, backend=PYTENSOR_BACKEND):
    """Marginal log-likelihood with every cluster effect integrated out, in
    ``backend`` (PyTensor for PyMC's samplers, JAX for numpyro)."""
    stats = {k: backend.asarray(v) for k, v in marginal_statistics(spec).items()}
    pooled = {k: backend.asarray(v) for k, v in spec.data.stats.items()}
    pooled["n"] = spec.data.stats["n"]
    return cluster_marginal_logp(spec, {**stats, "pooled": pooled}, theta, backend, total=True)


def cluster_log_likelihood(spec: ModelSpec, theta_draws: np.ndarray) -> np.ndarray:
    """log p(Y_j, z_j | parameters) per draw and cluster, cluster effects
    integrated out: (chains, draws, clusters), for leave-one-cluster-out LOO."""
    import jax
    import jax.numpy as jnp

    backend = jax_backend()
    stats = {k: jnp.asarray(v) for k, v in marginal_statistics(spec).items()}
    per_draw = jax.jit(jax.vmap(lambda theta: cluster_marginal_logp(spec, stats, theta, backend)))
    return np.stack([_in_chunks(lambda rows: per_draw(jnp.asarray(rows)), chain, spec.data.n_clusters)
                     for chain in theta_draws])


def _in_chunks(function, draws: np.ndarray, n_clusters: int) -> np.ndarray:
    """Apply a function vectorized over draws to a few draws at a time: all at once,
    its per-cluster intermediates took 4.3 GiB at 5000 clusters x 1000 draws.
    Every chunk has the same length (the last is padded by repeating its final
    draw), so a jitted ``function`` is compiled once."""
    size = min(len(draws), max(1, CHUNK_ELEMENTS // max(n_clusters, 1)))
    padded = np.concatenate([draws, np.repeat(draws[-1:], -len(draws) % size, axis=0)])
    pieces = [np.asarray(function(padded[i:i + size])) for i in range(0, len(padded), size)]
    return np.concatenate(pieces)[:len(draws)]


def draw_slope_cluster_effects(spec: ModelSpec, theta_draws: np.ndarray, seed: int | None,
                               effect_index: np.ndarray, row_shifts: np.ndarray | None = None,
                               effect_shifts: np.ndarray | None = None) -> np.ndarray:
    """Draw every cluster's between variables (those in ``effect_index``) from
    their exact conditional given the cluster's data, once per posterior draw.

    ``theta_draws`` is (chains, draws, n_free); returns (chains, draws,
    clusters, len(effect_index)). ``row_shifts`` (chains, draws, clusters, p),
    where given, moves the mean of every row of a cluster (a three-level
    model's drawn level-3 parts); ``effect_shifts`` (chains, draws, clusters,
    random effects) moves the prior mean of the cluster's random effects (the
    drawn slope parts of its level-3 unit), and the cluster's own parts are
    returned, without them. The per-draw work (a batch of small Cholesky
    factors per cluster) runs through JAX, jit-compiled and vectorized over
    draws: with NumPy it took about 50 ms per draw at 5000 clusters.
    """
    import jax
    import jax.numpy as jnp

    backend = jax_backend()
    stats = {k: jnp.asarray(v) for k, v in slope_statistics(spec).items()}
    between_structure = spec.layout.levels[1].structure

    def one_draw(theta, noise, shift, effect_shift):
        within = level_moments(theta, spec.within, backend)
        between = level_moments(theta, between_structure, backend)
        terms = _cluster_terms(spec, stats, within, between, backend, within.mean[None, :] + shift, effect_shift)
        factor, v = _effects_posterior(terms.L, terms.DSD, stats["xx_effects"], terms.g, spec, backend)
        eta = jnp.stack(unrolled_solve_upper(factor, [v_i + noise[:, i] for i, v_i in enumerate(v)]), axis=1)
        return (terms.mean + eta @ terms.F.T)[:, effect_index]

    draw_all = jax.jit(jax.vmap(one_draw))
    # standard normals from NumPy: JAX's threefry generator took a third of this step
    rng = np.random.default_rng(seed)
    chains, draws, _ = theta_draws.shape
    n_clusters, p = spec.data.n_clusters, spec.within.n_observed
    shape = (n_clusters, len(spec.layout.levels[1].innovations))
    n_free = theta_draws.shape[2]
    e = len(spec.layout.levels[1].random_effects)
    if row_shifts is None:
        row_shifts = np.zeros((chains, draws, n_clusters, p))
    if effect_shifts is None:
        effect_shifts = np.zeros((chains, draws, n_clusters, e))
    moved = n_free + n_clusters * p  # where the effects' shifts start among the joined columns
    out = np.empty((chains, draws, n_clusters, len(effect_index)))
    for c in range(chains):  # filled in place: stacking the chains' results copied 0.8 GB at 5000 clusters
        # the draws and their shifts side by side, so that _in_chunks cuts them alike
        joined = np.concatenate([theta_draws[c], row_shifts[c].reshape(draws, -1),
                                 effect_shifts[c].reshape(draws, -1)], axis=1)
        out[c] = _in_chunks(lambda rows: draw_all(jnp.asarray(rows[:, :n_free]),
                                                  rng.standard_normal((len(rows), *shape)),
                                                  jnp.asarray(rows[:, n_free:moved].reshape(len(rows), n_clusters, p)),
                                                  jnp.asarray(rows[:, moved:].reshape(len(rows), n_clusters, e))),
                            joined, n_clusters)
    return out
