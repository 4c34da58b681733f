"""Per-cluster log-likelihood of two-level models with ordinal variables: LOO's unit.

Leave-one-cluster-out needs each cluster's likelihood with its effects
integrated out,

    p(y_j | theta) = E[ p(y_j | u, theta) ],  u ~ N(0, I),

where u are the cluster's standardized innovations (what the latent engine
samples) and p(y_j | u, theta) the product of its rows' probabilities given
the cluster effects (each row's within factors already integrated out by
quadrature, :func:`~bayes_msem.engines.ordinal.ordinal_level_logp`) times the
density of its level-2 outcomes. With ordinal variables there is no closed
form, so the expectation is taken by importance sampling, at each draw:

- Newton steps find the mode of each cluster's integrand
  log p(y_j | u, theta) - u'u / 2 (log-concave: the probit likelihood is,
  and integrating the within factors keeps it so), from the mean of the
  cluster's sampled innovations; JAX's derivatives give the gradient and,
  one direction per innovation, the Hessian of every cluster at once (the
  clusters do not interact);
- the proposal is a multivariate Student-t (``PROPOSAL_DF`` degrees of
  freedom) at that mode with the inverse of minus the Hessian as its scale
  (Laplace's approximation, with heavier tails), evaluated at the same
  scrambled-Sobol points at every draw (common random numbers: the estimate
  changes smoothly from draw to draw, as PSIS's weights need);
- the sum of the weights is divided by the same points' estimate of the
  Laplace normal's mass (exactly 1) rather than by their number, so that
  the error of the point set itself, common to both, cancels.

Cost per draw: ``LAPLACE_STEPS`` + 1 gradients and Hessians (r + 1 passes
over the rows each) and ``proposal_points(r)`` evaluations of the rows'
likelihood; JAX, compiled once per call, the points in chunks.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
from scipy import special, stats

from bayes_msem.engines.latent import (
    between_outcomes_logp,
    effects_from_innovations,
    fixed_drive,
    innovation_nodes,
    within_given_effects,
)
from bayes_msem.engines.ordinal import (
    OrdinalLayout,
    ordinal_layout,
    ordinal_level_logp,
    row_means_of,
)
from bayes_msem.matrices import NUMPY_BACKEND, jax_backend, level_moments
from bayes_msem.spec import ModelSpec

__all__ = ["ordinal_cluster_log_likelihood", "integrated_cluster_log_likelihood", "innovations_of",
           "importance_estimate", "conditional_terms", "proposal_points", "PROPOSAL_POINTS", "PROPOSAL_DF"]

PROPOSAL_POINTS = 64
PROPOSAL_DF = 10
LAPLACE_STEPS = 4
ROWS_PER_CHUNK = 50_000  # rows x points evaluated at once (memory: about 0.5 GB at 6 items x 9 nodes)
SOBOL_SEED = 20261130  # fixed: the same points in every session, so LOO is reproducible


def innovations_of(spec: ModelSpec, theta_draws: np.ndarray, effect_draws: np.ndarray) -> np.ndarray:
    """The standardized innovations u (draws, clusters, r) behind sampled
    cluster effects (draws, clusters, effects): the inverse of
    :func:`~bayes_msem.engines.latent.effects_from_innovations`."""
    clusters = spec.layout.levels[1]
    n_idx, random = clusters.effect_nodes, innovation_nodes(spec)
    columns = [list(n_idx).index(i) for i in random]
    out = np.empty(effect_draws.shape[:2] + (len(columns),))
    for s, (theta, effects) in enumerate(zip(theta_draws, effect_draws)):
        moments = level_moments(theta, clusters.structure)
        zeta = (effects @ (np.eye(len(n_idx)) - moments.A[np.ix_(n_idx, n_idx)]).T
                - fixed_drive(spec, moments, NUMPY_BACKEND))
        root = np.linalg.cholesky(moments.S[np.ix_(random, random)])
        out[s] = np.linalg.solve(root, zeta[:, columns].T).T
    return out


def _standard_t(r: int, points: int) -> tuple[np.ndarray, np.ndarray]:
    """Scrambled-Sobol points of the standard r-variate Student-t with
    ``PROPOSAL_DF`` degrees of freedom (points, r) and their log density (points,)."""
    sobol = stats.qmc.Sobol(r + 1, scramble=True, seed=SOBOL_SEED).random(points)
    nu = PROPOSAL_DF
    standardized = special.ndtri(sobol[:, :r]) / np.sqrt(stats.chi2.ppf(sobol[:, r], nu) / nu)[:, None]
    log_density = (special.gammaln((nu + r) / 2) - special.gammaln(nu / 2) - 0.5 * r * np.log(nu * np.pi)
                   - 0.5 * (nu + r) * np.log1p((standardized**2).sum(1) / nu))
    return standardized, log_density


def _tiled(spec: ModelSpec, layout: OrdinalLayout, copies: int):
    """The rows ``copies`` times over, copy k's clusters numbered k * J + j:
    every copy's rows meet their cluster at another importance point."""
    data = spec.data
    N, J = data.n_rows, data.n_clusters
    offsets = np.repeat(np.arange(copies), N)
    tiled_data = SimpleNamespace(cluster_index=np.tile(data.cluster_index, copies) + J * offsets,
                                 within_covariates=np.tile(data.within_covariates, (copies, 1)))
    patterns = tuple((rows if isinstance(rows, slice) else (rows[None, :] + N * np.arange(copies)[:, None]).ravel(),
                      C) for rows, C in layout.patterns)
    tiled_layout = replace(layout, codes=np.tile(layout.codes, (copies, 1)), patterns=patterns)
    return tiled_data, tiled_layout, np.tile(data.within_outcomes, (copies, 1))


def _cluster_terms(spec: ModelSpec, theta, u, layout: OrdinalLayout, tiled, backend, erfc):
    """log p(y_j | u_kj, theta) (points, clusters) at the innovations ``u``
    (points, clusters, r), on any array backend (NumPy, JAX)."""
    data = spec.data
    K, J = u.shape[0], data.n_clusters
    clusters = spec.layout.levels[1]
    between = level_moments(theta, clusters.structure, backend)
    effects = effects_from_innovations(spec, between, u, backend)
    moments, cluster_means = within_given_effects(spec, theta, effects.reshape(K * J, -1), backend)
    tiled_data, tiled_layout, values = tiled
    rows = ordinal_level_logp(theta, moments, row_means_of(moments, cluster_means, tiled_data), tiled_layout, values,
                              backend, erfc, per_row=True).reshape(K, data.n_rows)
    membership = np.zeros((data.n_rows, J))
    membership[np.arange(data.n_rows), data.cluster_index] = 1.0
    terms = rows @ membership
    if len(clusters.outcome_nodes):
        terms = terms + between_outcomes_logp(spec, theta, between, effects, backend, erfc, per_cluster=True)
    return terms


def proposal_points(r: int) -> int:
    """Importance points for r innovations per cluster: 32 for up to two,
    ``PROPOSAL_POINTS`` beyond."""
    return 32 if r <= 2 else PROPOSAL_POINTS


def _chunk(spec: ModelSpec, points: int) -> int:
    """Points evaluated at once: at most ``ROWS_PER_CHUNK`` rows in all."""
    return int(min(points, max(1, ROWS_PER_CHUNK // spec.data.n_rows)))


def _in_chunks(values: np.ndarray, chunk: int, fill: float) -> np.ndarray:
    """``values`` (points, ...) as (chunks, chunk, ...), the last chunk padded with ``fill``."""
    pad = -len(values) % chunk
    padded = np.concatenate([values, np.full((pad,) + values.shape[1:], fill)])
    return padded.reshape((-1, chunk) + values.shape[1:])


def conditional_terms(spec: ModelSpec, theta_draws: np.ndarray, u: np.ndarray) -> np.ndarray:
    """log p(y_j | u_kj, theta) per draw, point and cluster (draws, points,
    clusters), at the innovations ``u`` (points, clusters, r). JAX, compiled
    once per call; the points are taken in chunks of at most ``ROWS_PER_CHUNK`` rows."""
    import jax
    import jax.scipy.special as jsp

    backend = jax_backend()
    layout = ordinal_layout(spec)
    points = len(u)
    chunk = _chunk(spec, points)
    chunks = _in_chunks(u, chunk, 0.0)
    tiled = _tiled(spec, layout, chunk)

    @jax.jit
    def one_draw(theta, chunks):  # the points as an argument: constants this large slow XLA's compiler down
        terms = jax.lax.map(lambda piece: _cluster_terms(spec, theta, piece, layout, tiled, backend, jsp.erfc), chunks)
        return terms.reshape(-1, terms.shape[-1])[:points]

    return np.stack([np.asarray(one_draw(theta, chunks)) for theta in theta_draws])


def importance_estimate(spec: ModelSpec, theta_draws: np.ndarray, u: np.ndarray, log_ratio: np.ndarray) -> np.ndarray:
    """log of the mean over points k of p(y_j | u_kj, theta) / exp(log_ratio_kj),
    per draw and cluster (draws, clusters): the importance-sampling estimate
    of log p(y_j | theta) for points ``u`` (points, clusters, r) drawn from a
    proposal q with ``log_ratio`` = log q - log N(0, I)."""
    terms = conditional_terms(spec, theta_draws, u) - log_ratio[None]
    return special.logsumexp(terms, axis=1) - np.log(len(u))


def integrated_cluster_log_likelihood(spec: ModelSpec, theta_draws: np.ndarray, u_draws: np.ndarray,
                                      points: int | None = None) -> np.ndarray:
    """log p(cluster's data | theta) per draw (draws, clusters) by importance
    sampling around each cluster's mode at each draw (module docstring);
    the Newton steps start from the mean of ``u_draws``, posterior draws of
    the innovations (draws', clusters, r)."""
    import jax
    import jax.numpy as jnp
    import jax.scipy.special as jsp

    J, r = u_draws.shape[1:]
    if r == 0:  # nothing random between clusters: the effects are fixed given theta
        return conditional_terms(spec, theta_draws, np.zeros((1, J, 0)))[:, 0]
    backend = jax_backend()
    layout = ordinal_layout(spec)
    points = points or proposal_points(r)
    standardized, log_t = _standard_t(r, points)
    chunk = _chunk(spec, points)
    chunks = (_in_chunks(standardized, chunk, 0.0), _in_chunks(log_t, chunk, np.inf))  # padding: no weight
    single, tiled = _tiled(spec, layout, 1), _tiled(spec, layout, chunk)
    directions = np.zeros((r, J, r))  # one unit direction per innovation, in every cluster at once
    directions[np.arange(r), :, np.arange(r)] = 1.0

    def terms(theta, u, copies):
        return _cluster_terms(spec, theta, u, layout, copies, backend, jsp.erfc)

    @jax.jit
    def one_draw(theta, start, chunks):
        gradient = jax.grad(lambda u: (terms(theta, u[None], single)[0] - 0.5 * (u**2).sum(-1)).sum())

        def slope_and_precision(u):  # the gradient and minus each cluster's Hessian (J, r, r)
            slope, hessian_product = jax.linearize(gradient, u)
            # vmap over the directions, not a list of r products: XLA compiles one product, not r copies
            hessian = jnp.moveaxis(jax.vmap(hessian_product)(directions), 0, -1)
            return slope, -0.5 * (hessian + hessian.swapaxes(1, 2)) + 1e-9 * jnp.eye(r)

        def newton_step(step, carry):  # a loop XLA compiles once, not LAPLACE_STEPS copies
            u, _ = carry
            slope, precision = slope_and_precision(u)
            move = jnp.linalg.solve(precision, slope[..., None])[..., 0]
            # one pass more than LAPLACE_STEPS that stays put: it returns the precision at the mode without
            # a second copy of slope_and_precision in the program (which doubled the compile time)
            return u + jnp.where(step < LAPLACE_STEPS, move, 0.0), precision

        mode, precision = jax.lax.fori_loop(0, LAPLACE_STEPS + 1, newton_step, (start, jnp.zeros((J, r, r))))
        root = jnp.linalg.cholesky(precision)  # u = mode + root^-T z has covariance precision^-1
        scale = jnp.linalg.inv(root).swapaxes(1, 2)
        log_det = jnp.log(jnp.diagonal(root, axis1=1, axis2=2)).sum(-1)  # log |d z / d u|

        def weighted(piece):
            z, log_z = piece
            u = mode[None] + jnp.einsum("jab,kb->kja", scale, z)
            log_prior = -0.5 * (u**2).sum(-1) - 0.5 * r * np.log(2 * np.pi)
            return terms(theta, u, tiled) + log_prior - (log_z[:, None] + log_det[None])

        weights = jax.lax.map(weighted, chunks)
        return jsp.logsumexp(weights.reshape(-1, J), axis=0) - log_gaussian_mass

    # Divide by the same points' estimate of the Laplace normal's mass (exactly 1) instead of by their
    # number: the points' own error, common to the integrand and its normal approximation, cancels (measured
    # with five innovations and 32 points: errors of -0.05 in every cluster, from the points, become 0.01).
    log_gaussian_mass = special.logsumexp(-0.5 * (standardized**2).sum(1) - 0.5 * r * np.log(2 * np.pi) - log_t)
    start = u_draws.mean(axis=0)
    return np.stack([np.asarray(one_draw(theta, start, chunks)) for theta in theta_draws])


def ordinal_cluster_log_likelihood(spec: ModelSpec, theta_draws: np.ndarray, effect_draws: np.ndarray,
                                   points: int | None = None) -> np.ndarray:
    """log p(cluster's data | parameters) per draw, (chains, draws, clusters),
    the cluster effects integrated out by importance sampling (module
    docstring); ``effect_draws`` (chains, draws, clusters, effects), the
    sampled cluster effects, give the Newton steps their start."""
    flat_theta = theta_draws.reshape(-1, theta_draws.shape[-1])
    u_draws = innovations_of(spec, flat_theta, effect_draws.reshape((-1,) + effect_draws.shape[-2:]))
    out = integrated_cluster_log_likelihood(spec, flat_theta, u_draws, points)
    return out.reshape(theta_draws.shape[:-1] + (spec.data.n_clusters,))
