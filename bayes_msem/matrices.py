"""Stage 4: the parameter vector fills the level-wise matrices, and one function
gives the model-implied moments.

Each level is written in RAM form (McArdle & McDonald): with ``v`` the
modelled variables (observed parts first, then latent variables) and ``x`` the
exogenous covariates,

    v = alpha + A v + A_x x + zeta,   Cov(zeta) = S,

so ``v = (I - A)^-1 (alpha + A_x x + zeta)``. Loadings, regressions among
modelled variables, regressions on covariates, intercepts and (co)variances are
entries of ``A``, ``A_x``, ``alpha`` and ``S``.

Every matrix is ``fixed + theta @ pattern``: the fixed entries plus a constant
0/1 pattern per free parameter. The same code therefore works on a NumPy
vector and on a PyTensor vector inside the PyMC model; only the matrix inverse
comes from the ``backend`` passed in.

Example
-------
>>> import numpy as np
>>> from bayes_msem.partable import build_partable
>>> spec = level_structures(build_partable("f =~ y1 + y2"))[0]
>>> spec.nodes
('y1', 'y2', 'f')
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from bayes_msem.partable import ParameterTable

__all__ = ["LevelStructure", "level_structures", "level_moments", "NUMPY_BACKEND", "jax_backend",
           "parameter_values", "psd_root"]

NUMPY_BACKEND = SimpleNamespace(inv=np.linalg.inv, eye=np.eye, cholesky=np.linalg.cholesky, solve=np.linalg.solve,
                                concatenate=np.concatenate, zeros=np.zeros, log=np.log, sqrt=np.sqrt,
                                solve_lower=np.linalg.solve, xp=np, asarray=np.asarray, stop_gradient=lambda a: a)


def jax_backend() -> SimpleNamespace:
    """The same array functions from JAX (float64), imported only when asked for."""
    import jax
    import jax.numpy as jnp
    import jax.scipy.linalg as jsl

    jax.config.update("jax_enable_x64", True)
    return SimpleNamespace(inv=jnp.linalg.inv, eye=jnp.eye, cholesky=jnp.linalg.cholesky, solve=jnp.linalg.solve,
                           concatenate=jnp.concatenate, zeros=jnp.zeros, log=jnp.log, sqrt=jnp.sqrt,
                           solve_lower=lambda a, b: jsl.solve_triangular(a, b, lower=True), xp=jnp,
                           asarray=jnp.asarray, stop_gradient=jax.lax.stop_gradient)


@dataclass(frozen=True)
class MatrixTemplate:
    """``fixed + theta @ pattern`` with ``pattern`` of shape (n_free, rows*cols)."""

    fixed: np.ndarray
    pattern: np.ndarray

    def fill(self, theta):
        return self.fixed + (theta @ self.pattern).reshape(self.fixed.shape)

    def possibly_nonzero(self) -> np.ndarray:
        """Which entries the model lets differ from 0: free, or fixed at a non-zero value."""
        return (np.abs(self.fixed) + np.abs(self.pattern).sum(0).reshape(self.fixed.shape)) > 0


@dataclass(frozen=True)
class LevelStructure:
    """Matrix layout of one level: which variable is which row, and templates."""

    level: int
    nodes: tuple[str, ...]
    n_observed: int
    covariates: tuple[str, ...]
    A: MatrixTemplate
    A_x: MatrixTemplate
    alpha: MatrixTemplate
    S: MatrixTemplate
    # random slopes: slope k adds its cluster's value times slope_A[k] to A (and slope_A_x[k] to A_x)
    slopes: tuple[str, ...] = ()
    slope_A: np.ndarray | None = None
    slope_A_x: np.ndarray | None = None

    @property
    def slopes_on_nodes(self) -> bool:
        """True if a random slope sits in A (on a modelled variable), so that
        (I - A)^-1 and the within covariance differ between clusters."""
        return self.slope_A is not None and bool(self.slope_A.any())

    @property
    def observed(self) -> tuple[str, ...]:
        return self.nodes[: self.n_observed]

    def fixed_zero_variance(self) -> np.ndarray:
        """True for nodes whose variance is fixed at zero (no random innovation)."""
        return (np.diag(self.S.fixed) == 0) & (np.diag(self.S.pattern.sum(0).reshape(self.S.fixed.shape)) == 0)


def _template(shape: tuple[int, ...], n_free: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(shape), np.zeros((n_free,) + shape)


def _put(fixed: np.ndarray, pattern: np.ndarray, index: tuple, free: int, value: float) -> None:
    """Mark a matrix entry as free parameter ``free`` (1-based) or set its fixed value."""
    if free:
        pattern[(free - 1,) + index] = 1.0
    else:
        fixed[index] = value


def level_structures(table: ParameterTable) -> list[LevelStructure]:
    """Build the matrix layout of each level from the parameter table."""
    structures = []
    n_free = table.n_free
    rows = table.rows
    for roles in table.levels:
        nodes, covariates = roles.nodes, roles.covariates
        node_at = {name: i for i, name in enumerate(nodes)}
        cov_at = {name: i for i, name in enumerate(covariates)}
        n, q = len(nodes), len(covariates)
        a_fix, a_pat = _template((n, n), n_free)
        ax_fix, ax_pat = _template((n, q), n_free)
        al_fix, al_pat = _template((n,), n_free)
        s_fix, s_pat = _template((n, n), n_free)
        level_rows = rows[(rows["level"] == roles.level) & ~rows["exo"] & (rows["op"] != ":=")]
        slopes = tuple(r for r in level_rows["random"] if r is not None)
        slope_a, slope_ax = np.zeros((len(slopes), n, n)), np.zeros((len(slopes), n, q))
        for row in level_rows.itertuples():
            free, value = int(row.free), float(row.ustart)
            if row.random is not None:
                k = slopes.index(row.random)
                if row.rhs in cov_at:
                    slope_ax[k, node_at[row.lhs], cov_at[row.rhs]] = 1.0
                else:
                    slope_a[k, node_at[row.lhs], node_at[row.rhs]] = 1.0
            elif row.op == "=~":
                _put(a_fix, a_pat, (node_at[row.rhs], node_at[row.lhs]), free, value)
            elif row.op == "~" and row.rhs in cov_at:
                _put(ax_fix, ax_pat, (node_at[row.lhs], cov_at[row.rhs]), free, value)
            elif row.op == "~":
                _put(a_fix, a_pat, (node_at[row.lhs], node_at[row.rhs]), free, value)
            elif row.op == "~1":
                _put(al_fix, al_pat, (node_at[row.lhs],), free, value)
            elif row.op == "~~":
                i, j = node_at[row.lhs], node_at[row.rhs]
                _put(s_fix, s_pat, (i, j), free, value)
                if i != j:
                    _put(s_fix, s_pat, (j, i), free, value)
        flat = lambda pat: pat.reshape(n_free, -1)  # noqa: E731
        structures.append(LevelStructure(
            level=roles.level, nodes=nodes, n_observed=len(roles.observed), covariates=covariates,
            A=MatrixTemplate(a_fix, flat(a_pat)), A_x=MatrixTemplate(ax_fix, flat(ax_pat)),
            alpha=MatrixTemplate(al_fix, flat(al_pat)), S=MatrixTemplate(s_fix, flat(s_pat)),
            slopes=slopes, slope_A=slope_a if slopes else None, slope_A_x=slope_ax if slopes else None,
        ))
    return structures


@dataclass
class LevelMoments:
    """Model-implied quantities of one level, for given parameter values.

    ``mean`` and ``Pi`` give the conditional mean of the observed variables,
    ``mean + Pi @ x``; ``Sigma`` their covariance; ``total`` is (I - A)^-1.
    """

    mean: object
    Pi: object
    Sigma: object
    total: object
    A: object
    A_x: object
    alpha: object
    S: object

    def node_moments(self, w):
        """Mean of every node (observed and latent) per unit given the covariates
        ``w`` (units, q), and the nodes' covariance: what drawing cluster effects
        conditions on (NumPy)."""
        return (self.alpha[None, :] + w @ self.A_x.T) @ self.total.T, self.total @ self.S @ self.total.T


def level_moments(theta, structure: LevelStructure, backend=NUMPY_BACKEND, slope_values=None) -> LevelMoments:
    """Model-implied moments of one level: the one place they are computed.

    ``slope_values`` (clusters, slopes) gives each cluster's random slopes;
    then ``A``, ``A_x``, ``Pi`` and ``mean`` get a leading cluster axis, and so
    do ``total`` and ``Sigma`` where a slope sits on a modelled variable.
    """
    A = structure.A.fill(theta)
    A_x = structure.A_x.fill(theta)
    alpha = structure.alpha.fill(theta)
    S = structure.S.fill(theta)
    if slope_values is not None and structure.slopes:
        k = len(structure.slopes)
        if structure.slopes_on_nodes:
            A = A[None] + (slope_values @ structure.slope_A.reshape(k, -1)).reshape((-1,) + structure.A.fixed.shape)
        if structure.slope_A_x.any():
            A_x = A_x[None] + (slope_values @ structure.slope_A_x.reshape(k, -1)).reshape(
                (-1,) + structure.A_x.fixed.shape)
    total = backend.inv(backend.eye(len(structure.nodes)) - A)
    p = structure.n_observed
    mean = (total @ alpha)[..., :p]
    Pi = (total @ A_x)[..., :p, :]
    Sigma = (total @ S @ total.swapaxes(-1, -2))[..., :p, :p]
    return LevelMoments(mean=mean, Pi=Pi, Sigma=Sigma, total=total, A=A, A_x=A_x, alpha=alpha, S=S)


def parameter_values(rows, theta: np.ndarray) -> np.ndarray:
    """Values of every row of a parameter table's ``rows`` given free-parameter
    draws ``theta`` (..., n_free): fixed rows repeat their fixed value.
    Returns (..., rows)."""
    theta = np.asarray(theta, dtype=float)
    free = rows["free"].to_numpy()
    fixed = rows["ustart"].to_numpy(dtype=float)
    out = np.broadcast_to(fixed, theta.shape[:-1] + (len(free),)).copy()
    out[..., free > 0] = theta[..., free[free > 0] - 1]
    return out


def psd_root(cov: np.ndarray) -> np.ndarray:
    """A square root R (R R' = cov) of covariance matrices (..., k, k) that may be
    singular (zero variances): for drawing normal vectors.

    The Cholesky factor of the variables with non-zero variance (zeros
    elsewhere): the same on every machine, so a seed gives the same data
    wherever it runs. Eigenvectors are not: their signs, and their directions
    where eigenvalues are equal, depend on the LAPACK build, which changed
    simulated data between machines. An eigen-decomposition remains the
    fallback for a block that is singular itself (perfect correlations)."""
    cov = (cov + np.swapaxes(cov, -1, -2)) / 2
    if cov.ndim > 2:
        if (np.diagonal(cov, axis1=-2, axis2=-1) > 0).all():
            try:
                return np.linalg.cholesky(cov)
            except np.linalg.LinAlgError:
                pass
        k = cov.shape[-1]
        return np.stack([psd_root(c) for c in cov.reshape(-1, k, k)]).reshape(cov.shape)
    variances = np.diag(cov)
    keep = variances > 1e-12 * max(1.0, float(np.abs(variances).max(initial=0.0)))
    root = np.zeros_like(cov)
    try:
        root[np.ix_(keep, keep)] = np.linalg.cholesky(cov[np.ix_(keep, keep)])
    except np.linalg.LinAlgError:
        values, vectors = np.linalg.eigh(cov)
        return vectors * np.sqrt(np.clip(values, 0.0, None))[None, :]
    return root
