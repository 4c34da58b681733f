"""Missing values under MAR: the observed-data likelihood with the cluster
effects integrated out (full information, lavaan's ``missing = "ml"``).

In cluster j, row i has its own set of observed level-1 outcomes o_i (its
missing-data *pattern*). Given the cluster's random effects u_j (the between
parts of the split variables and the random slopes on covariates), rows are
independent::

    y_i,o ~ N(mu_o + Pi_o x_i + Z_i,o u_j, Sigma_W,oo),   Z_i = D diag(x~_i[c]),

where x~ = (1, x), c picks the entry each effect multiplies (1 for a between
part, the covariate for a slope) and D the outcomes it moves (the layout's
``effect_design``). Integrating u_j ~ N(m_j, Sigma_u,j) out (Woodbury;
Rosseel 2021, "Evaluating the observed log-likelihood function in two-level
SEM with missing data", Psych 3(2))::

    log p(Y_j) = sum_i log N(y_i,o; mu_o + Pi_o x_i, Sigma_W,oo)
                 + m_j'g0_j - 1/2 m_j'A_j m_j - 1/2 log|M_j| + 1/2 h_j' M_j^-1 h_j,
    A_j = sum_i Z_i' K_o Z_i,   g0_j = sum_i Z_i' K_o (y_i - mu - Pi x_i),
    M_j = I + L_j' A_j L_j,     h_j = L_j' (g0_j - A_j m_j),   L_j L_j' = Sigma_u,j,

where K_o is Sigma_W,oo's inverse padded with zeros to p x p. Level-2
outcomes z_j, themselves possibly missing, enter first: log p(z_j,obs), and
u_j's mean and covariance are those given z_j,obs.

Everything about the rows enters through sums per (cluster, pattern) computed
once (:func:`bayes_msem.data.missing_pattern_statistics`), so a gradient costs
O(clusters x patterns per cluster x p^2 e + clusters x e^3) for e random
effects, never O(rows).
A single-level model is the case without u_j. With no missing value it equals
:func:`bayes_msem.engines.collapsed.two_level_logp` (a test), which stays the
faster path for complete data (one factorization per cluster size).
"""

from __future__ import annotations

import numpy as np

from bayes_msem.data import missing_pattern_statistics
from bayes_msem.layout import LevelLayout
from bayes_msem.matrices import NUMPY_BACKEND, LevelMoments, level_moments, psd_root

__all__ = ["masked_inverse", "missing_logp", "missing_statistics", "cluster_terms", "observed_rows_logp",
           "rows_with_own_means_logp", "each_rows_own_means_logp", "draw_missing_cluster_effects", "missing_unit_log_likelihood"]

LOG_2PI = np.log(2 * np.pi)
JITTER = 1e-10  # relative: keeps the Cholesky factor of a singular Sigma_u (between variances fixed at 0) finite


def masked_inverse(Sigma, masks: np.ndarray, backend=NUMPY_BACKEND):
    """For masks (..., p) of observed entries (1/0): Sigma's observed block
    inverted and padded with zeros to p x p, and its log-determinant.
    The missing entries are replaced by an identity block, whose inverse is
    again identity and whose log-determinant is 0, so shapes stay fixed."""
    xp = backend.xp
    p = masks.shape[-1]
    outer = masks[..., :, None] * masks[..., None, :]
    eye = np.eye(p)
    filled = outer * Sigma + (1.0 - masks)[..., :, None] * eye
    chol = backend.cholesky(filled)
    logdet = 2.0 * xp.sum(xp.log(xp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    inv_chol = backend.solve_lower(chol, xp.broadcast_to(eye, filled.shape))
    return outer * (xp.swapaxes(inv_chol, -1, -2) @ inv_chol), logdet


def cluster_terms(stats: dict, within: LevelMoments, between: LevelMoments | None, level: LevelLayout | None,
                  w: np.ndarray, backend=NUMPY_BACKEND, per_unit: bool = False, with_loglik: bool = True,
                  row_means=None, effect_shift=None) -> dict:
    """The pieces of the module docstring's formula: ``loglik``, summed over
    units (or per unit, ``per_unit``; left out with ``with_loglik=False``), and
    where there are random effects ``mu_u``, ``L``, ``chol_M`` and ``h`` per unit
    (what drawing them needs). ``level`` is the layout's level 2 (None in a
    single-level model).

    ``row_means`` (units, p) replaces the within level's mean per unit (a
    three-level model's clusters, moved by their level-3 unit's parts); the
    terms then also hold how each unit's log density changes when its row
    means move by s: ``shift_score`` a_j and ``shift_precision`` A_j in
    log p(Y_j | means + s) = loglik_j + s'a_j - 1/2 s'A_j s, exact because
    the density is Gaussian in s (:mod:`bayes_msem.engines.three_level_missing`).

    No array is indexed by pattern inside: sums over patterns are products
    with the (units x G) counts, whose gradients stay matrix products (a
    gather by pattern and its scatter-add gradient took twice as long under JAX).

    ``effect_shift`` (units, e), where given, moves the random effects' prior
    mean (a three-level model's slope parts of the unit above); the terms then
    also hold how the log density changes when that mean moves by d:
    ``mean_score`` g_j - Q_j'v_j, ``mean_precision`` A_j - Q_j'Q_j and, with
    the row move s, ``shift_mean_cross`` F_j' - H_j'Q_j (units, p, e), where
    Q_j = C_j^-1 L' A_j: log p gains d'score - 1/2 d'precision d - s'cross d."""
    xp = backend.xp
    units, p = stats["n"].shape[0], stats["patterns"].shape[1]
    means = xp.zeros((units, p)) + within.mean[None, :] if row_means is None else row_means
    rows = _row_pieces(stats, within, means, backend)
    loglik = rows["partial"]
    shifts = row_means is not None

    def total(loglik):  # the rows' quadratic form in y - Pi x: per unit, or pooled over patterns
        if not with_loglik:
            return None
        if per_unit:
            return loglik - 0.5 * _row_quadratic(stats, rows["K"], within.Pi, xp, units)
        return xp.sum(loglik) - 0.5 * _pooled_quadratic(stats, rows["K"], within.Pi, xp)

    # moving the row means by s adds s'(Ke - N m) - 1/2 s'N s to the rows' part
    score, precision = (rows["Ke"] - rows["Nc"], rows["N"]) if shifts else (None, None)
    if between is None:
        return {"loglik": total(loglik)}
    prior, z_loglik = _effects_prior(stats, between, level, w, backend)
    loglik = loglik + z_loglik
    e = len(level.random_effect_nodes)
    if e == 0:
        return {"loglik": total(loglik), "shift_score": score, "shift_precision": precision}
    A, g0, F = _effects_data(stats, within, rows["K"], level, backend, means, row_sums=shifts)
    mu_u, Sigma_u = prior
    if effect_shift is not None:
        mu_u = mu_u + effect_shift
    # the rows' density above is at the effects' value 0; shift it to their prior mean mu_u
    Am = xp.einsum("jkl,jl->jk", A, mu_u)
    loglik = loglik + xp.sum(mu_u * g0, axis=1) - 0.5 * xp.sum(mu_u * Am, axis=1)
    g = g0 - Am
    scale = xp.mean(xp.diagonal(Sigma_u, axis1=-2, axis2=-1), axis=-1)[..., None, None]
    L = backend.cholesky(Sigma_u + JITTER * scale * np.eye(e))  # one factor unless there are level-2 outcomes
    M = np.eye(e) + xp.swapaxes(L, -1, -2) @ A @ L
    h = xp.einsum("...ab,...a->...b", L, g)  # L' g
    if xp is np:
        chol_M = np.linalg.cholesky(M)
        v = np.linalg.solve(chol_M, h[..., None])[..., 0]
        half_logdet = np.sum(np.log(np.diagonal(chol_M, axis1=1, axis2=2)), axis=1)
    else:  # elementwise over clusters: 2.5x faster than batched LAPACK calls under JAX for small e
        chol_M, (half_logdet, v) = None, small_cholesky_solve(M, h, e, xp)
    loglik = loglik - half_logdet + 0.5 * xp.sum(v**2, axis=1)
    terms = {"loglik": total(loglik), "mu_u": mu_u, "L": L, "chol_M": chol_M, "h": h}
    if shifts:
        # the score g moves by -F s (F = sum_i Z_i' K_o), so v = C^-1 L' g moves by -H s, H = C^-1 L' F
        LtF = xp.einsum("ab,jap->jpb", L, F) if L.ndim == 2 else xp.einsum("jab,jap->jpb", L, F)
        if xp is np:
            Ht = np.swapaxes(np.linalg.solve(chol_M, np.swapaxes(LtF, 1, 2)), 1, 2)  # (J, p, e)
        else:
            Ht = small_cholesky_solve(M[:, None], LtF, e, xp)[1]
        terms["shift_score"] = (score - xp.einsum("jep,je->jp", F, mu_u) - xp.einsum("jpe,je->jp", Ht, v))
        terms["shift_precision"] = precision - xp.einsum("jpe,jqe->jpq", Ht, Ht)
    if effect_shift is not None:
        LtA = xp.einsum("ab,jaf->jfb", L, A) if L.ndim == 2 else xp.einsum("jab,jaf->jfb", L, A)
        if xp is np:
            Qt = np.swapaxes(np.linalg.solve(chol_M, np.swapaxes(LtA, 1, 2)), 1, 2)  # (J, e, e): Q_j'
        else:
            Qt = small_cholesky_solve(M[:, None], LtA, e, xp)[1]
        terms["mean_score"] = g - xp.einsum("jfe,je->jf", Qt, v)
        terms["mean_precision"] = A - xp.einsum("jfe,jge->jfg", Qt, Qt)
        if shifts:
            terms["shift_mean_cross"] = xp.swapaxes(F, 1, 2) - xp.einsum("jpr,jfr->jpf", Ht, Qt)
    return terms


def _effects_prior(stats: dict, between: LevelMoments, level: LevelLayout, w, backend):
    """The random effects' mean (units, e) and covariance ((e, e), or (units,
    e, e) with level-2 outcomes) given each unit's observed level-2 outcomes,
    and log p(observed level-2 outcomes) per unit."""
    xp = backend.xp
    node_mean, node_cov = between.node_moments(w)
    effects, z_nodes = level.random_effect_nodes, level.outcome_nodes
    mu_u, Sigma_u = node_mean[:, effects], node_cov[effects][:, effects]
    if not len(z_nodes):
        return (mu_u, Sigma_u), 0.0
    Kz, logdet_z = masked_inverse(node_cov[z_nodes][:, z_nodes], stats["z_observed"], backend)
    dz = stats["z_observed"] * (stats["z"] - node_mean[:, z_nodes])
    quad_z = xp.einsum("ja,jab,jb->j", dz, Kz, dz)
    z_loglik = -0.5 * (xp.sum(stats["z_observed"], axis=1) * LOG_2PI + logdet_z + quad_z)
    gain = node_cov[effects][:, z_nodes] @ Kz  # (J, e, p_z)
    return (mu_u + xp.einsum("jaz,jz->ja", gain, dz), Sigma_u - gain @ node_cov[z_nodes][:, effects]), z_loglik


def _effects_data(stats: dict, within: LevelMoments, K, level: LevelLayout, backend, means=None,
                  row_sums: bool = False):
    """What each unit's rows say about its random effects u_j, at u_j = 0:
    A_j = sum_i Z_i' K_o Z_i and g_j = sum_i Z_i' K_o (y_i - mu - Pi x_i), with
    Z_i = D diag(x~_i[columns]), from the per-(unit, pattern) cross-products.

    Effects that multiply the same entry c of x~ (every between part: c = 0)
    form a block, and each block of A and g is one matrix product over
    (pattern, outcome): elementwise products over (unit, pattern, outcome,
    effect) arrays made the gradient 1.8x slower (Demo.twolevel with MAR holes).

    ``means`` (units, p) replaces the within mean per unit; with ``row_sums``
    also F_j = sum_i Z_i' K_o (units, e, p), how the score moves when the row
    means move (three-level models with missing values)."""
    xp = backend.xp
    G, p = K.shape[0], K.shape[1]
    units = stats["n"].shape[0]
    D = level.effect_design(within.total, backend)  # (p, e)
    KD = K @ D  # (G, p, e)
    DKD = xp.einsum("pk,gpl->gkl", D, KD)
    x_eff, y_eff = stats["x_effects"], stats["y_effects"]  # (J, G, q+1, C), (J, G, p, C)
    blocks = _column_blocks(level.random_effect_columns)
    mean = within.mean[None, None, :] if means is None else means[:, None, :]  # one for all units, or each its own
    A_rows, g_parts, F_parts = [], [], []
    for c, (_, members) in enumerate(blocks):
        if row_sums:  # sums of x~[c-th column] per pattern, times K_o D
            F_parts.append(xp.einsum("jg,gpm->jmp", x_eff[:, :, 0, c], KD[:, :, members]))
        residual = (y_eff[..., c] - mean * x_eff[:, :, 0, c][..., None]
                    - x_eff[:, :, 1:, c] @ within.Pi.T)  # (J, G, p): sums of x~[c-th column] (y - mu - Pi x)
        g_parts.append(residual.reshape((units, G * p)) @ KD[:, :, members].reshape((G * p, len(members))))
        A_rows.append(xp.concatenate([
            (x_eff[:, :, other, c] @ DKD[:, members][:, :, others].reshape((G, len(members) * len(others))))
            .reshape((units, len(members), len(others))) for other, others in blocks], axis=2))
    order = np.argsort(np.concatenate([members for _, members in blocks]))  # back to the layout's order
    A = xp.concatenate(A_rows, axis=1)[:, order][:, :, order]
    F = xp.concatenate(F_parts, axis=1)[:, order] if row_sums else None
    return A, xp.concatenate(g_parts, axis=1)[:, order], F


def _column_blocks(columns: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """The distinct entries of x~ the random effects multiply (sorted, as the
    statistics store them), each with the effects that multiply it."""
    return [(int(c), np.flatnonzero(columns == c)) for c in np.unique(columns)]


def _row_pieces(stats: dict, within: LevelMoments, c, backend) -> dict:
    """The rows' log-density given each unit's level-1 mean ``c`` (units, p),
    but for the quadratic form in y - Pi x (``partial``, per unit), and the
    sums over a unit's rows the integration needs: N = sum K_o, Ke = sum K_o (y - Pi x)
    and Nc = N c."""
    xp = backend.xp
    patterns, n = stats["patterns"], stats["n"]  # (G, p), (J, G)
    G, p = patterns.shape
    units = n.shape[0]
    K, logdet = masked_inverse(within.Sigma, patterns, backend)  # (G, p, p), (G,)
    e = stats["sum_y"] - stats["sum_x"] @ within.Pi.T  # (J, G, p): sums of y - Pi x
    N = (n @ K.reshape((G, p * p))).reshape((units, p, p))
    Ke = e.reshape((units, G * p)) @ K.reshape((G * p, p))
    Nc = xp.einsum("jpq,jq->jp", N, c)
    # sum over rows of (y - c - Pi x)' K_o (y - c - Pi x), less its part in y - Pi x alone
    partial = (-0.5 * (n @ (patterns.sum(axis=1) * LOG_2PI + logdet))
               - 0.5 * (xp.sum(c * Nc, axis=1) - 2.0 * xp.sum(c * Ke, axis=1)))
    return {"K": K, "N": N, "Ke": Ke, "Nc": Nc, "partial": partial}


def observed_rows_logp(stats: dict, within: LevelMoments, cluster_means, backend):
    """sum over rows of log N(y_i,o; m_j,o + Pi_o x_i, Sigma_W,oo): the rows'
    observed values given their cluster's level-1 means ``cluster_means``
    (clusters, p), cluster effects included (the latent engine)."""
    rows = _row_pieces(stats, within, cluster_means, backend)
    return backend.xp.sum(rows["partial"]) - 0.5 * _pooled_quadratic(stats, rows["K"], within.Pi, backend.xp)


def rows_with_own_means_logp(stats: dict, Sigma, row_means, backend, cluster_index: np.ndarray | None = None):
    """sum over rows of log N(y_i,o; m_i,o, Sigma_oo) for each row's own mean
    ``row_means`` (rows, p): the latent engine with random slopes, where rows
    of a cluster differ in their regression weights. ``Sigma`` is one matrix,
    or one per cluster (clusters, p, p; a random slope on a modelled variable),
    then indexed by ``cluster_index``. O(rows p^2) per gradient, as the latent
    engine is O(rows) anyway."""
    return backend.xp.sum(each_rows_own_means_logp(stats, Sigma, row_means, backend, cluster_index))


def each_rows_own_means_logp(stats: dict, Sigma, row_means, backend, cluster_index: np.ndarray | None = None):
    """The terms of :func:`rows_with_own_means_logp`, one per row (rows,): 0
    for a row with no observed value."""
    xp = backend.xp
    patterns, row_pattern = stats["patterns"], stats["row_pattern"]
    if cluster_index is None:
        K, logdet = masked_inverse(Sigma, patterns, backend)  # (G, p, p), (G,)
        K_rows, logdet_rows = K[row_pattern], logdet[row_pattern]
    else:  # one inverse per (cluster, pattern): (J, G, p, p)
        K, logdet = masked_inverse(Sigma[:, None], patterns, backend)
        K_rows, logdet_rows = K[cluster_index, row_pattern], logdet[cluster_index, row_pattern]
    d = patterns[row_pattern] * (stats["y"] - row_means)  # missing entries set to 0
    quad = xp.sum(d * xp.einsum("ipq,iq->ip", K_rows, d), axis=1)
    return -0.5 * (np.sum(patterns[row_pattern], axis=1) * LOG_2PI + logdet_rows + quad)


def _pooled_quadratic(stats: dict, K, Pi, xp):
    """sum over all rows of (y - Pi x)' K_o (y - Pi x), from the cross-products per pattern."""
    yx_pi = stats["yx"] @ Pi.T
    T = stats["yy"] - yx_pi - xp.swapaxes(yx_pi, -1, -2) + Pi @ stats["xx"] @ Pi.T
    return xp.sum(K * T)


def _row_quadratic(stats: dict, K, Pi, xp, units: int):
    """(y - Pi x)' K_o (y - Pi x) summed per unit, from the rows (for per-unit log-likelihoods)."""
    d = stats["y"] - stats["x"] @ Pi.T
    per_row = xp.einsum("ip,ipq,iq->i", d, K[stats["row_pattern"]], d)
    if xp is np:
        return np.bincount(stats["groups"], weights=per_row, minlength=units)
    import jax

    return jax.ops.segment_sum(per_row, stats["groups"], num_segments=units)  # traced: no bincount


def small_cholesky_solve(M, h, r: int, xp):
    """For a stack of small positive definite matrices M (J, r, r) and vectors
    h (J, r): half the log-determinant of each M and v = C^-1 h, where M = C C',
    written out entry by entry so that the work is elementwise over J."""
    C = [[None] * r for _ in range(r)]
    for i in range(r):
        for j in range(i + 1):
            rest = M[..., i, j] - sum((C[i][k] * C[j][k] for k in range(j)), 0.0)
            C[i][j] = xp.sqrt(rest) if i == j else rest / C[j][j]
    v = []
    for i in range(r):
        v.append((h[..., i] - sum((C[i][k] * v[k] for k in range(i)), 0.0)) / C[i][i])
    return sum(xp.log(C[i][i]) for i in range(r)), xp.stack(v, axis=-1)


def _moments(spec, theta, backend=NUMPY_BACKEND) -> tuple[LevelMoments, LevelMoments | None]:
    within = level_moments(theta, spec.within, backend)
    between = level_moments(theta, spec.between, backend) if spec.layout.multilevel else None
    return within, between


def missing_logp(spec, theta, backend, stats: dict | None = None):
    """log p(observed data | theta), cluster effects integrated out: the
    collapsed engine's likelihood when values are missing. In a single-level
    model the rows are grouped by pattern alone."""
    if stats is None:
        stats = missing_statistics(spec)
    within, between = _moments(spec, theta, backend)
    return cluster_terms(stats, within, between, _upper_level(spec), _level2_covariates(spec, stats),
                         backend)["loglik"]


def missing_statistics(spec, data=None, per_row: bool = False) -> dict:
    """What :func:`missing_logp` reads of ``data`` (default the model's; a
    replicate with other values works too): pattern statistics by cluster; in a
    single-level model by pattern (or by row, ``per_row``)."""
    data = spec.data if data is None else data
    if spec.layout.multilevel:
        return missing_pattern_statistics(data, effect_columns=spec.layout.levels[1].random_effect_columns)
    if per_row:
        return missing_pattern_statistics(data, np.arange(data.n_rows))
    return missing_pattern_statistics(data, np.zeros(data.n_rows, dtype=int))


def _upper_level(spec) -> LevelLayout | None:
    return spec.layout.levels[1] if spec.layout.multilevel else None


def _level2_covariates(spec, stats: dict) -> np.ndarray:
    if spec.layout.multilevel:
        return spec.data.between_covariates
    return np.zeros((stats["n"].shape[0], 0))


def missing_unit_log_likelihood(spec, theta_draws: np.ndarray) -> np.ndarray:
    """log p(data of a unit | parameters), (chains, draws, units): per cluster,
    or per row in a single-level model (for LOO)."""
    stats = missing_statistics(spec, per_row=True)
    w = _level2_covariates(spec, stats)
    chains, draws, _ = theta_draws.shape
    out = np.empty((chains, draws, stats["n"].shape[0]))
    for c in range(chains):
        for d in range(draws):
            within, between = _moments(spec, theta_draws[c, d])
            out[c, d] = cluster_terms(stats, within, between, _upper_level(spec), w, per_unit=True)["loglik"]
    return out


def draw_missing_cluster_effects(spec, theta_draws: np.ndarray, seed: int | None,
                                 row_shifts: np.ndarray | None = None,
                                 effect_shifts: np.ndarray | None = None) -> np.ndarray:
    """Every cluster's between effects drawn from their exact conditional given
    the cluster's observed values, once per posterior draw: (chains, draws,
    clusters, cluster variables). First the random effects u_j (the split
    variables' between parts and the random slopes) given everything observed
    (Gaussian with precision Sigma_u^-1 + A_j), then the other cluster effects
    given u_j and the observed level-2 outcomes. ``row_shifts`` (chains,
    draws, clusters, p) moves each cluster's row means (a three-level model:
    its level-3 unit's parts in that draw); ``effect_shifts`` (chains, draws,
    clusters, e) moves the random effects' prior mean (its unit's slope
    parts), and the cluster's own parts are returned, without them."""
    rng = np.random.default_rng(seed)
    stats = missing_statistics(spec)
    clusters = spec.layout.levels[1]
    z_nodes = clusters.outcome_nodes
    r = len(clusters.random_effect_nodes)
    w = spec.data.between_covariates
    effect_nodes = clusters.effect_nodes
    given = np.concatenate([clusters.random_effect_nodes, z_nodes])
    given_observed = np.concatenate([np.ones((len(w), r)), stats["z_observed"]], axis=1)
    # the second step depends on a cluster only through which level-2 outcomes it observed: one
    # gain and one root per such pattern (per cluster, pinv and eigh were two thirds of this function)
    observed_patterns, pattern_of = np.unique(given_observed, axis=0, return_inverse=True)
    pattern_of = pattern_of.reshape(-1)
    chains, draws, _ = theta_draws.shape
    out = np.empty((chains, draws, spec.data.n_clusters, len(effect_nodes)))
    for c in range(chains):
        for d in range(draws):
            within, between = _moments(spec, theta_draws[c, d])
            means = None if row_shifts is None else within.mean[None, :] + row_shifts[c, d]
            shift = None if effect_shifts is None else effect_shifts[c, d]
            terms = cluster_terms(stats, within, between, clusters, w, per_unit=True, with_loglik=False,
                                  row_means=means, effect_shift=shift)
            u = _draw_random_effects(rng, terms, r, len(w))
            if shift is not None:
                u = u - shift  # the cluster's own parts
            node_mean, node_cov = between.node_moments(w)  # (J, nodes), (nodes, nodes)
            values = np.concatenate([u, stats["z"]], axis=1) if len(z_nodes) else u
            residual = given_observed * (values - node_mean[:, given])
            inverse = observed_patterns[:, :, None] * np.linalg.pinv(
                observed_patterns[:, :, None] * observed_patterns[:, None, :] * node_cov[np.ix_(given, given)])
            gain = node_cov[np.ix_(effect_nodes, given)] @ inverse  # (patterns, effects, given)
            mean = node_mean[:, effect_nodes] + np.einsum("jeg,jg->je", gain[pattern_of], residual)
            cond_cov = node_cov[np.ix_(effect_nodes, effect_nodes)] - gain @ node_cov[np.ix_(given, effect_nodes)]
            root = psd_root(cond_cov)[pattern_of]
            out[c, d] = mean + np.einsum("jef,jf->je", root, rng.standard_normal(mean.shape))
    return out


def _draw_random_effects(rng: np.random.Generator, terms: dict, r: int, clusters: int) -> np.ndarray:
    """u_j ~ N(mu_u + L M^-1 h, L M^-1 L') with M = C C': L C'^-1 (C^-1 h + e)."""
    if r == 0:
        return np.zeros((clusters, 0))
    chol_M = terms["chol_M"]
    v = np.linalg.solve(chol_M, terms["h"][..., None])[..., 0] + rng.standard_normal((clusters, r))
    L = np.broadcast_to(terms["L"], (clusters, r, r))  # one factor for all clusters without level-2 outcomes
    return terms["mu_u"] + np.einsum("jab,jb->ja", L, np.linalg.solve(np.swapaxes(chol_M, 1, 2), v[..., None])[..., 0])
