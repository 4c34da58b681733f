"""The *latent* engine: cluster effects as explicit random variables.

Per cluster j, the between level's innovations are sampled non-centered,
``zeta_j = L u_j`` with ``u_j ~ N(0, I)`` and ``L`` a square root of the
between residual covariance (zero variances allowed), and the between
variables follow as ``e_j = (I - A_B)^-1 (alpha_B + A_x w_j + zeta_j)``: latent
cluster means of the split variables and between factor scores.

Given the cluster effects, level-1 rows are multivariate normal with mean
``e_j`` (for split variables) plus the within model's mean and covariance
Sigma_W, with within factors integrated out. That likelihood is evaluated
from cross-products computed once (:func:`bayes_msem.data.within_cross_products`),
so a gradient costs O(clusters * p^2), not O(rows * p^2).

Between-only observed outcomes ``z_j`` enter through their residual
``z_j - E[z_j | rest]``, which is normal with the residual covariance of z;
where the between model is non-recursive the Jacobian terms keep it exact.
A single-level model is the special case of one pseudo-cluster without
between effects.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pymc as pm
import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op
from pytensor.link.jax.dispatch import jax_funcify

from bayes_msem.data import cluster_cross_products
from bayes_msem.engines.parameters import free_parameter_vector, parameter_names
from bayes_msem.errors import ModelSpecificationError
from bayes_msem.matrices import LevelStructure, level_moments
from bayes_msem.spec import ModelSpec

__all__ = ["PYTENSOR_BACKEND", "build_latent_model", "cluster_effect_names", "cluster_scatter",
           "mvn_logp_from_scatter", "pooled_scatter"]


class StopGradient(Op):
    """The identity with a zero gradient, kept as ``jax.lax.stop_gradient`` in
    JAX graphs. PyTensor's own ``zero_grad`` is a view that graph rewriting
    removes before JAX sees it, so JAX's gradient (numpyro, nutpie's JAX path)
    would differentiate through what it holds: the adaptive quadrature's
    Newton steps, which doubled the cost of a gradient."""

    __props__ = ()

    def make_node(self, x):
        x = pt.as_tensor_variable(x)
        return Apply(self, [x], [x.type()])

    def perform(self, node, inputs, outputs):
        outputs[0][0] = np.asarray(inputs[0]).copy()

    def grad(self, inputs, output_gradients):
        return [pt.zeros_like(inputs[0])]

    def infer_shape(self, fgraph, node, shapes):
        return shapes


@jax_funcify.register(StopGradient)
def _jax_stop_gradient(op, **kwargs):
    import jax

    return jax.lax.stop_gradient


stop_gradient = StopGradient()

PYTENSOR_BACKEND = SimpleNamespace(inv=pt.linalg.inv, eye=pt.eye, cholesky=pt.linalg.cholesky, solve=pt.linalg.solve,
                                   concatenate=pt.concatenate, zeros=pt.zeros, log=pt.log, sqrt=pt.sqrt,
                                   solve_lower=lambda a, b: pt.linalg.solve_triangular(a, b, lower=True), xp=pt,
                                   asarray=pt.as_tensor_variable, stop_gradient=stop_gradient)


def mvn_logp_from_scatter(sum_squares, n, Sigma, backend=PYTENSOR_BACKEND):
    """log density of n independent N(0, Sigma) vectors whose cross-product is
    ``sum_squares`` (shared by both engines and the predictive checks, which
    pass the NumPy backend). Batched over leading axes, with ``n`` then one
    count per batch entry."""
    xp = backend.xp
    chol = backend.cholesky(Sigma)
    p = Sigma.shape[-1]
    eye = xp.eye(p) if Sigma.ndim == 2 else xp.broadcast_to(xp.eye(p), Sigma.shape)
    inv_chol = backend.solve_lower(chol, eye)
    quad = xp.sum((inv_chol @ sum_squares) * inv_chol)
    logdet = 2.0 * xp.sum(xp.log(xp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    return -0.5 * (xp.sum(n) * p * np.log(2 * np.pi) + xp.sum(n * logdet) + quad)


def pooled_scatter(stats: dict, cluster_means, Pi):
    """Scatter R'R of the level-1 residuals R = Y - Z M - X Pi' (M the clusters x p
    cluster means), expanded into the precomputed Y'Y, Y'X, X'X, Z'Y, Z'X and
    cluster sizes."""
    M = cluster_means
    yz_m = stats["sum_y"].T @ M  # Y'Z M
    xz_m = stats["sum_x"].T @ M  # X'Z M
    yx_pi = stats["yx"] @ Pi.T  # Y'X Pi'
    return (stats["yy"] - yz_m - yz_m.T + M.T @ (stats["n"][:, None] * M)
            - yx_pi - yx_pi.T + Pi @ stats["xx"] @ Pi.T + (xz_m.T @ Pi.T) + (xz_m.T @ Pi.T).T)


def within_logp(stats: dict, cluster_means, Pi, Sigma) -> pt.TensorVariable:
    """Level-1 log-likelihood from cross-products (see :func:`pooled_scatter`)."""
    return mvn_logp_from_scatter(pooled_scatter(stats, cluster_means, Pi), float(stats["n"].sum()), Sigma)


def cluster_scatter(cross, stats: dict, M, Pi):
    """Per-cluster scatter of the residuals Y_j - 1 m_j' - X_j Pi_j' (clusters, p, p),
    from per-cluster cross-products ``cross`` (see :func:`bayes_msem.data.cluster_cross_products`):
    the within likelihood when slopes differ between clusters."""
    Pi_t = Pi.swapaxes(-1, -2)
    yx_pi = cross["yx"] @ Pi_t  # Y_j'X_j Pi_j'
    pi_x = (Pi * stats["sum_x"][:, None, :]).sum(axis=-1)  # Pi_j X_j'1
    m_y = M[:, :, None] * stats["sum_y"][:, None, :]  # m_j 1'Y_j
    m_px = M[:, :, None] * pi_x[:, None, :]
    return (cross["yy"] - m_y - m_y.swapaxes(1, 2) + stats["n"][:, None, None] * M[:, :, None] * M[:, None, :]
            - yx_pi - yx_pi.swapaxes(1, 2) + Pi @ cross["xx"] @ Pi_t + m_px + m_px.swapaxes(1, 2))


def cluster_effect_names(spec: ModelSpec) -> list[str]:
    """Names of the per-cluster variables: split variables' between parts and
    between factors (the layout's ``levels[1].effects``)."""
    return list(spec.layout.levels[1].effects)


def outcome_coupling(spec: ModelSpec, level: int = 1) -> str | None:
    """Why this engine cannot take the model, or None: a residual covariance
    between a level-2 observed outcome and a cluster effect would couple the
    outcome's residual with the sampled innovations (``level`` 2: of the second
    classification of a cross-classified model)."""
    if not spec.layout.multilevel:
        return None
    clusters = spec.layout.levels[level]
    coupling = clusters.structure.S.possibly_nonzero()
    if len(clusters.outcome_nodes) and coupling[np.ix_(clusters.effect_nodes, clusters.outcome_nodes)].any():
        return ("a residual covariance between a level-2 observed outcome and a latent between variable needs "
                "the collapsed engine")
    return None


def innovation_nodes(spec: ModelSpec, level: int = 1) -> np.ndarray:
    """The cluster-effect nodes with a random innovation: the columns of the
    standardized innovations ``u`` the engine samples per cluster (per unit
    of ``spec.layout.levels[level]``). Nodes whose variance is fixed at zero
    have none (they would make the Cholesky factor singular, and sqrt(0) has
    no gradient)."""
    clusters = spec.layout.levels[level]
    return np.intersect1d(clusters.effect_nodes, clusters.innovations)


def effects_from_innovations(spec: ModelSpec, moments, innovations, backend=PYTENSOR_BACKEND, level: int = 1):
    """The cluster effects (..., clusters, effects) given the standardized
    innovations ``innovations`` (..., clusters, r) and the between level's
    moments (the units of ``spec.layout.levels[level]``, level 1 the
    clusters). One function for the sampler (PyTensor) and for per-cluster
    LOO (NumPy, JAX)."""
    clusters = spec.layout.levels[level]
    n_idx = clusters.effect_nodes
    random = innovation_nodes(spec, level)
    root = backend.cholesky(moments.S[np.ix_(random, random)])
    placement = np.zeros((len(random), len(n_idx)))
    placement[np.arange(len(random)), [list(n_idx).index(i) for i in random]] = 1.0
    zeta = (innovations @ root.T) @ placement
    total_nn = backend.inv(backend.eye(len(n_idx)) - moments.A[np.ix_(n_idx, n_idx)])
    return (fixed_drive(spec, moments, backend, level) + zeta) @ total_nn.T


def between_outcomes_logp(spec: ModelSpec, theta, moments, effects, backend=PYTENSOR_BACKEND, erfc=None,
                          per_cluster: bool = False, level: int = 1):
    """log p(level-2 outcomes | cluster effects): summed, or per cluster
    (..., clusters) with ``per_cluster``; ``effects`` (..., clusters, effects).
    ``level`` 2: the outcomes of the second classification of a
    cross-classified model given its units' effects (continuous, complete).

    A continuous outcome z enters through its residual z - E[z | effects, other
    outcomes], normal with the residual covariance (with the Jacobian of a
    non-recursive between model); a level-2 ordinal outcome by the probit
    probability of its category given the effects and the continuous
    outcomes (:func:`bayes_msem.engines.ordinal.ordinal_level_logp` with
    clusters as rows). ``erfc`` is the backend's complementary error function
    (needed with ordinal outcomes)."""
    from bayes_msem.engines.ordinal import between_ordinal_layout, normal_rows_logp

    clusters = spec.layout.levels[level]
    n_idx, z_idx = clusters.effect_nodes, clusters.outcome_nodes
    A, A_x = moments.A, moments.A_x
    ordinal = between_ordinal_layout(spec) if level == 1 else None
    values, covariates = _level_values(spec, level)
    w = backend.asarray(covariates)
    drive = moments.alpha[z_idx] + effects @ A[np.ix_(z_idx, n_idx)].T + w @ A_x[z_idx].T  # all but the other outcomes
    if np.isnan(values).any():
        return _incomplete_outcomes_logp(spec, theta, moments, drive, backend, per_cluster, ordinal, erfc)
    # ordinal outcomes predict nothing (partable refuses it): their zero columns of A leave their codes unused
    z = backend.asarray(values)
    mean = drive + z @ A[np.ix_(z_idx, z_idx)].T
    S_zz = moments.S[np.ix_(z_idx, z_idx)]
    jacobian = outcome_log_jacobian(spec, moments, backend.xp, level)
    if ordinal is None and not per_cluster:
        residual = z - mean
        n = float(len(values))
        return mvn_logp_from_scatter(residual.T @ residual, n, S_zz, backend) + n * jacobian
    if ordinal is None:
        logp = normal_rows_logp((z - mean).reshape((-1, len(z_idx))), S_zz, backend).reshape(mean.shape[:-1])
    else:
        logp = _ordinal_outcomes_logp(theta, S_zz, mean, ordinal, values, backend, erfc, per_cluster)
    if not per_cluster:
        return logp + float(len(values)) * jacobian
    return logp + jacobian


def _level_values(spec: ModelSpec, level: int) -> tuple[np.ndarray, np.ndarray]:
    """The outcomes and covariates of the units of ``spec.layout.levels[level]``
    (level 1: the clusters; 2: the units of the level above or of the second
    classification), one row per unit."""
    if level == 1:
        return spec.data.between_outcomes, spec.data.between_covariates
    upper = spec.data.upper_levels[level - 2]
    return upper.outcomes, upper.covariates


def _ordinal_outcomes_logp(theta, cov, mean, ordinal, values, backend, erfc, per_cluster: bool):
    """The level-2 outcomes' density with ordinal ones among them
    (:func:`bayes_msem.engines.ordinal.ordinal_level_logp`, clusters as rows)
    given their means (..., clusters, outcomes) and covariance: summed, or
    (..., clusters) with ``per_cluster``."""
    from bayes_msem.engines.ordinal import ordinal_level_logp, repeat_rows

    # leading axes beyond (clusters, outcomes): the importance points of per-cluster LOO (concrete shapes there)
    copies = int(np.prod(mean.shape[:-2])) if mean.ndim > 2 else 1
    ordinal, values = repeat_rows(ordinal, values, copies)
    logp = ordinal_level_logp(theta, SimpleNamespace(Sigma=cov), mean.reshape((-1, mean.shape[-1])), ordinal,
                              values, backend, erfc, per_row=per_cluster)
    return logp.reshape(mean.shape[:-1]) if per_cluster else logp


def _incomplete_outcomes_logp(spec: ModelSpec, theta, moments, drive, backend, per_cluster: bool, ordinal=None,
                              erfc=None):
    """:func:`between_outcomes_logp` where some clusters miss some level-2
    outcomes: each cluster's observed outcomes by their density given its
    effects, from the reduced form z = (I - A_zz)^-1 (``drive`` + e_j),
    ``drive`` = alpha_z + A_zn b_j + A_zx w_j (no Jacobian needed). Continuous
    outcomes only: normal, clusters grouped by the outcomes they observe; a
    cluster that observes none adds 0. With ``ordinal`` ones: their probit
    probability given the continuous outcomes the cluster has (a missing
    category counts 0)."""
    from bayes_msem.engines.ordinal import normal_rows_logp

    xp = backend.xp
    z_idx = spec.layout.levels[1].outcome_nodes
    values = spec.data.between_outcomes
    total = backend.inv(backend.eye(len(z_idx)) - moments.A[np.ix_(z_idx, z_idx)])
    mean = drive @ total.T  # (..., clusters, outcomes)
    cov = total @ moments.S[np.ix_(z_idx, z_idx)] @ total.T
    if ordinal is not None:
        return _ordinal_outcomes_logp(theta, cov, mean, ordinal, values, backend, erfc, per_cluster)
    lead = tuple(mean.shape[:-2]) if mean.ndim > 2 else ()  # per-cluster LOO's importance points (concrete shapes)
    seen = ~np.isnan(values)
    parts, order = [], []
    for pattern in np.unique(seen, axis=0):
        rows = np.flatnonzero((seen == pattern).all(axis=1))
        order.append(rows)
        o = np.flatnonzero(pattern)
        if not len(o):
            parts.append(xp.zeros(lead + (len(rows),)))
            continue
        residual = values[np.ix_(rows, o)] - xp.take(xp.take(mean, rows, axis=-2), o, axis=-1)
        logp = normal_rows_logp(residual.reshape((-1, len(o))), cov[np.ix_(o, o)], backend)
        parts.append(logp.reshape(lead + (len(rows),)))
    per_row = backend.concatenate(parts, axis=-1)
    if not per_cluster:
        return xp.sum(per_row)
    return xp.take(per_row, np.argsort(np.concatenate(order)), axis=-1)


def fixed_drive(spec: ModelSpec, moments, backend=PYTENSOR_BACKEND, level: int = 1):
    """What drives the cluster effects besides their innovations (clusters,
    effects): intercepts, level-2 covariates and level-2 outcomes that predict
    them; for ``level`` 2 the units of the second classification of a
    cross-classified model, their covariates and outcomes."""
    clusters = spec.layout.levels[level]
    n_idx, z_idx = clusters.effect_nodes, clusters.outcome_nodes
    outcomes, covariates = _level_values(spec, level)
    w = backend.asarray(covariates)
    drive = moments.alpha[n_idx][None, :] + w @ moments.A_x[n_idx].T
    if len(z_idx):
        # a missing level-2 outcome predicts no effect (LatentEngine.supports): its 0 meets a 0 in A
        values = np.nan_to_num(outcomes)
        drive = drive + backend.asarray(values) @ moments.A[np.ix_(n_idx, z_idx)].T
    return drive


def outcomes_predicting_effects(spec: ModelSpec, level: int = 1) -> list[str]:
    """The level-2 outcomes that predict a cluster effect (a coefficient in A
    from the outcome to an effect, free or fixed at a non-zero value; ``level``
    2: the second classification's)."""
    clusters = spec.layout.levels[level]
    predicting = clusters.structure.A.possibly_nonzero()[np.ix_(clusters.effect_nodes, clusters.outcome_nodes)].any(axis=0)
    return [name for name, p in zip(clusters.outcomes, predicting) if p]


def outcome_log_jacobian(spec: ModelSpec, moments, xp, level: int = 1):
    """log |det(I - A)| - log |det(I - A_nn)| of the between level (``level``
    of the layout): per cluster, what turns the level-2 outcomes' residual
    density into their density where the between model is non-recursive (0
    where it is recursive)."""
    n_idx = spec.layout.levels[level].effect_nodes
    A = moments.A
    return (xp.log(xp.abs(xp.linalg.det(xp.eye(A.shape[0]) - A)))
            - xp.log(xp.abs(xp.linalg.det(xp.eye(len(n_idx)) - A[np.ix_(n_idx, n_idx)]))))


def _between_effects(spec: ModelSpec, theta):
    """Sample the cluster effects; add the likelihood of between-only outcomes.

    Returns the J x (sampled between nodes) matrix of cluster effects.
    """
    clusters = spec.layout.levels[1]
    between: LevelStructure = clusters.structure
    data = spec.data
    moments = level_moments(theta, between, PYTENSOR_BACKEND)
    random = innovation_nodes(spec)
    pm.modelcontext(None).add_coord("innovation", [between.nodes[i] for i in random])
    u = pm.Normal("cluster_innovations", 0.0, 1.0, dims=("cluster", "innovation"),
                  shape=(data.n_clusters, len(random)))
    effects = effects_from_innovations(spec, moments, u)
    if len(clusters.outcome_nodes):
        pm.Potential("between_outcomes_loglik", between_outcomes_logp(spec, theta, moments, effects, erfc=pt.erfc))
    return effects, list(clusters.effects)


def within_given_effects(spec: ModelSpec, theta, effects, backend=PYTENSOR_BACKEND):
    """The within level's moments and each cluster's means of the observed
    variables (clusters, p), given the cluster effects (clusters, effects):
    random slopes make the moments differ between clusters, split variables'
    between parts shift the means."""
    within = spec.within
    clusters = spec.layout.levels[1]
    names = list(clusters.effects)
    if within.slopes:
        moments = level_moments(theta, within, backend, effects[:, [names.index(s) for s in within.slopes]])
    else:
        moments = level_moments(theta, within, backend)
    split = [names.index(n) for n in clusters.split]
    return moments, moments.mean + effects[:, split] @ clusters.placement.place.T


def build_latent_model(spec: ModelSpec) -> pm.Model:
    """Build the PyMC model of the latent engine.

    The model holds a deterministic ``parameters`` (every free parameter on the
    table's scale, dim ``parameter``) and, for two-level models,
    ``cluster_effects`` (dims ``cluster``, ``cluster_variable``).
    """
    unsupported = outcome_coupling(spec)
    if unsupported:
        raise ModelSpecificationError(f"the latent engine does not apply: {unsupported}")
    data = spec.data
    coords = {"parameter": parameter_names(spec), "cluster": [str(c) for c in data.cluster_labels]}
    within = spec.within
    with pm.Model(coords=coords) as model:
        theta = free_parameter_vector(spec)
        pm.Deterministic("parameters", theta, dims="parameter")
        moments = level_moments(theta, within, PYTENSOR_BACKEND)
        cluster_means = pt.zeros((data.n_clusters, within.n_observed)) + moments.mean[..., None, :]
        if spec.between is not None:
            effects, effect_names = _between_effects(spec, theta)
            model.add_coord("cluster_variable", effect_names)
            pm.Deterministic("cluster_effects", effects, dims=("cluster", "cluster_variable"))
            moments, cluster_means = within_given_effects(spec, theta, effects)
        stats = {k: pt.as_tensor_variable(v) for k, v in data.stats.items()}
        stats["n"] = data.stats["n"]
        if spec.table.within_ordinal:  # categories by their probit probabilities
            from bayes_msem.engines.ordinal import ordinal_within_logp

            logp = ordinal_within_logp(spec, theta, moments, cluster_means)
        elif data.has_missing:  # each row's observed values
            from bayes_msem.data import missing_pattern_statistics
            from bayes_msem.engines.missing import observed_rows_logp, rows_with_own_means_logp

            missing_stats = missing_pattern_statistics(data)
            if within.slopes:  # a mean per row; a covariance per cluster where a slope sits on a modelled variable
                from bayes_msem.engines.ordinal import row_means_of

                logp = rows_with_own_means_logp(missing_stats, moments.Sigma, row_means_of(moments, cluster_means, data),
                                                PYTENSOR_BACKEND, data.cluster_index if within.slopes_on_nodes else None)
            else:
                logp = observed_rows_logp(missing_stats, moments, cluster_means, PYTENSOR_BACKEND)
        elif within.slopes:
            cross = {k: pt.as_tensor_variable(v) for k, v in cluster_cross_products(data).items()}
            scatter = cluster_scatter(cross, stats, cluster_means, moments.Pi)
            if within.slopes_on_nodes:  # a covariance per cluster
                logp = mvn_logp_from_scatter(scatter, data.stats["n"], moments.Sigma)
            else:
                logp = mvn_logp_from_scatter(scatter.sum(0), float(data.stats["n"].sum()), moments.Sigma)
        else:
            logp = within_logp(stats, cluster_means, moments.Pi, moments.Sigma)
        pm.Potential("within_loglik", logp)
    return model
