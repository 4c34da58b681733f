"""Ordinal variables in the latent engine: the probit likelihood of the rows.

An ordinal variable u is observed as the category k of its latent response u*
(``t_k <= u* < t_{k+1}``, with t_0 = -inf and t_K = +inf); u* is part of the
level's normal model like any continuous variable. Given the cluster effects,
a row's continuous values C and latent responses U* are jointly normal, so

    p(row) = p(C) * P(U* in its cell | C),

and where the ordinal variables are conditionally independent given C the
second factor is a product of differences of normal CDFs: exact, no sampling
of u*. Where a within factor links ordinal variables (the usual CFA of
questionnaire items) they are independent only given the factor, so the
factors (``row_factors``) are integrated out of each row's probability by
Gauss-Hermite quadrature (as Mplus's numerical integration): 32 nodes for one
factor, 12^2 for two, 6^3 for three. Variables that stay correlated given C
and the factors (a residual covariance or a regression between two ordinal
variables) are refused.

Cost per gradient: O(rows * p^2) for the conditional moments plus one normal
CDF pair per ordinal value in a middle category and one CDF per value in the
bottom or top category (``CategoryCells``), times the quadrature nodes where
factors are integrated. Sampling the factor scores per row instead (one
coordinate per row and factor) took 494 s for 2 x 1000 iterations on a
two-level CFA of 6 items, 200 clusters of 15, with 90-190 effective draws.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from bayes_msem.errors import ModelSpecificationError
from bayes_msem.matrices import NUMPY_BACKEND, LevelStructure
from bayes_msem.spec import ModelSpec

__all__ = ["OrdinalLayout", "between_ordinal_layout", "repeat_rows", "ordinal_layout", "ordinal_level_logp",
           "ordinal_row_log_likelihood", "ordinal_rows_logp", "CategoryCells", "category_cells", "top_categories",
           "threshold_matrix",
           "ordinal_unsupported", "quadrature", "row_means_of"]

BEYOND = 1e8  # the open ends of the outer categories: finite, so gradients stay finite


@dataclass(frozen=True)
class OrdinalLayout:
    """Where the ordinal variables sit among the lowest level's observed ones,
    their coded values, their thresholds, and the factors sampled per row."""

    ordinal: np.ndarray  # positions among the level's observed variables
    continuous: np.ndarray
    codes: np.ndarray  # (rows, ordinal) category 0..K-1, -1 where missing
    threshold_free: np.ndarray  # (ordinal, max K - 1): 1-based free index, 0 where fixed or padding
    threshold_fixed: np.ndarray  # fixed values; +BEYOND in the padding of variables with fewer categories
    row_factors: np.ndarray  # positions among the level's nodes of the factors sampled per row
    # rows grouped by which continuous variables they have: (row indices, observed continuous positions) per
    # pattern; one pattern of every row (``slice(None)``) where no continuous value is missing
    patterns: tuple

    @cached_property
    def cells_by_pattern(self) -> tuple:
        """The ``CategoryCells`` of each pattern's rows: built once per layout,
        not at every evaluation (LOO evaluates the rows once per draw)."""
        top = top_categories(self)
        return tuple(category_cells(self.codes[rows], top) for rows, _ in self.patterns)


def threshold_matrix(theta, layout: OrdinalLayout, xp=np):
    """Cut points per ordinal variable, (ordinal, max K + 1): -BEYOND, the
    thresholds, +BEYOND (and +BEYOND padding)."""
    extended = xp.concatenate([xp.zeros(1), theta])  # position 0: fixed entries
    values = layout.threshold_fixed + extended[layout.threshold_free]
    n = layout.threshold_free.shape[0]
    return xp.concatenate([-BEYOND * xp.ones((n, 1)), values, BEYOND * xp.ones((n, 1))], axis=1)


def _normal_cdf_difference(lower, upper, erfc, xp):
    """Phi(upper) - Phi(lower), accurate in both tails: an interval above 0 is
    mirrored below it, where the normal CDF keeps its relative precision.
    Two erfc calls per interval (the cost of the ordinal likelihood). An
    interval narrower than ``NARROW_WIDTH`` is its width times the density at
    its midpoint (relative error below 1e-12): the difference of two erfc
    values would be rounding noise there (see :func:`_narrow`)."""
    mirror = lower > 0
    low = xp.where(mirror, -upper, lower)
    high = xp.where(mirror, -lower, upper)
    scale = -1.0 / np.sqrt(2.0)
    narrow, midpoint = _narrow(lower, upper, xp)
    return xp.where(narrow, (upper - lower) * _normal_density(midpoint, xp),
                    0.5 * (erfc(high * scale) - erfc(low * scale)))


def _normal_density(x, xp):
    """The standard normal density at ``x``."""
    return xp.exp(-0.5 * x**2) / np.sqrt(2 * np.pi)


# A middle category whose thresholds nearly meet (a category almost empty in the data) lets warm-up's first
# long steps reach gaps of 1e-17 and below, where Phi(upper) - Phi(lower) is rounding noise and, compiled
# by XLA, the Newton terms' density difference over the floored probability overflowed: the log density
# was NaN there. Below this standardized width the category's probability and derivatives are their
# narrow-interval limits.
NARROW_WIDTH = 1e-6


def _narrow(lower, upper, xp):
    """Where the interval (lower, upper) is narrower than ``NARROW_WIDTH``, and its midpoint."""
    return (upper - lower) < NARROW_WIDTH, 0.5 * (lower + upper)


@dataclass(frozen=True)
class CategoryCells:
    """The observed cells (row, variable) of ordinal data, grouped by which
    bounds of their category are finite: the bottom category's probability
    Phi(t_1 - mean) and the top one's 1 - Phi(t_K-1 - mean) cost one erfc
    each, a middle category's two. With four categories about half of all
    cells sit in an end category, with binary variables all of them. Cells
    are numbered row by row, ``row * n_variables + variable``."""

    n_rows: int
    n_variables: int
    # the non-empty groups: (kind, cell numbers, their variables, their codes), kind "bottom", "top" or "middle"
    groups: tuple
    order: np.ndarray  # each cell's position among the groups' cells one after another; missing cells: one past them


def category_cells(codes: np.ndarray, top_codes: np.ndarray) -> CategoryCells:
    """:class:`CategoryCells` of ``codes`` (rows, variables; -1 where
    missing), each variable's top category in ``top_codes``."""
    n_rows, n_variables = codes.shape
    flat = codes.ravel()
    variable = np.tile(np.arange(n_variables), n_rows)
    top = top_codes[variable]
    kinds = {"bottom": flat == 0, "top": (flat == top) & (flat > 0), "middle": (flat > 0) & (flat < top)}
    groups = tuple((kind, cells, variable[cells], flat[cells])
                   for kind, cells in ((kind, np.flatnonzero(where)) for kind, where in kinds.items()) if len(cells))
    listed = np.concatenate([cells for _, cells, _, _ in groups]) if groups else np.array([], dtype=int)
    order = np.full(flat.size, len(listed))
    order[listed] = np.arange(len(listed))
    return CategoryCells(n_rows, n_variables, groups, order)


def top_categories(layout: OrdinalLayout) -> np.ndarray:
    """Each ordinal variable's top category code: its number of thresholds
    (padding, fixed at +BEYOND, is not one)."""
    return ((layout.threshold_free > 0) | (layout.threshold_fixed < BEYOND)).sum(axis=1)


def _by_cell(array, xp):
    """(rows, ..., variables) -> (rows * variables, the product of the middle axes), cells numbered row by row."""
    axes = (0, array.ndim - 1) + tuple(range(1, array.ndim - 1))
    flat = xp.transpose(array, axes)
    return flat.reshape((-1, 1) if array.ndim == 2 else (-1, array.shape[1]))


def _standardized_bounds(cells: CategoryCells, linear_at, sd, cuts):
    """Per group: the cells' standardized category bounds (lower, upper),
    None where the bound is infinite. ``linear_at(cell numbers)`` gives those
    cells' latent means, (cells, n)."""
    out = []
    for kind, index, variable, code in cells.groups:
        mean, scale = linear_at(index), sd[variable][:, None]
        lower = None if kind == "bottom" else (cuts[variable, code][:, None] - mean) / scale
        upper = None if kind == "top" else (cuts[variable, code + 1][:, None] - mean) / scale
        out.append((lower, upper))
    return out


def _category_probability(lower, upper, erfc, xp):
    """Phi(upper) - Phi(lower) with None for an infinite bound: one erfc for an end category."""
    scale = -1.0 / np.sqrt(2.0)
    if lower is None:
        return 0.5 * erfc(upper * scale)
    if upper is None:
        return 0.5 * erfc(-lower * scale)
    return _normal_cdf_difference(lower, upper, erfc, xp)


def _in_cell_order(cells: CategoryCells, pieces: list, xp):
    """The groups' per-cell values (each (cells of the group, n)) back in
    cell order, 0 for missing cells: (rows, variables, n)."""
    stacked = xp.concatenate(pieces + [xp.zeros((1, pieces[0].shape[1]))], axis=0)
    return stacked[cells.order].reshape((cells.n_rows, cells.n_variables, -1))


def ordinal_rows_logp(cells: CategoryCells, cond_mean, cond_sd, cuts, erfc, xp=np):
    """log P(category | normal latent response with mean ``cond_mean`` and SD
    ``cond_sd``) summed over the ordinal variables, per row: ``cond_mean``
    (rows, ..., ordinal), e.g. (rows, nodes, ordinal) at quadrature nodes, at
    most one axis between rows and ordinal; ``cond_sd`` (ordinal,). Missing
    values count 0. Returns an array of shape ``cond_mean.shape[:-1]``."""
    if not cells.groups:
        return xp.zeros(cond_mean.shape[:-1])
    flat = _by_cell(cond_mean, xp)
    return _summed_log_probability(cells, lambda index: flat[index], cond_sd, cuts, erfc, xp).reshape(
        cond_mean.shape[:-1])


def _summed_log_probability(cells: CategoryCells, linear_at, sd, cuts, erfc, xp):
    """Sum over the variables of log P(category), (rows, n); ``linear_at`` as
    in :func:`_standardized_bounds`."""
    bounds = _standardized_bounds(cells, linear_at, sd, cuts)
    logs = [xp.log(xp.maximum(_category_probability(lower, upper, erfc, xp), 1e-300)) for lower, upper in bounds]
    return _in_cell_order(cells, logs, xp).sum(axis=1)


def condition_on_continuous(row_means, cov, values, continuous, targets, backend=NUMPY_BACKEND):
    """Given each row's continuous values (positions ``continuous`` of the
    joint normal with means ``row_means`` (rows, k) and covariance ``cov``):
    their residuals (rows, c) and covariance, and the ``targets``' conditional
    means (rows, t) and covariance (t, t)."""
    C, T = continuous, targets
    if len(C) == 0:
        return None, None, row_means[:, T], cov[np.ix_(T, T)]
    residual = values[:, C] - row_means[:, C]
    S_cc = cov[np.ix_(C, C)]
    weights = backend.solve(S_cc, cov[np.ix_(C, T)]).T  # (t, c): Sigma_TC Sigma_CC^-1
    return residual, S_cc, row_means[:, T] + residual @ weights.T, cov[np.ix_(T, T)] - weights @ cov[np.ix_(C, T)]


def _generic_moments(spec: ModelSpec, structure: LevelStructure):
    """(I - A)^-1 and S at generic parameter values: every free loading and
    regression non-zero, every allowed covariance 0.1 of the geometric mean of
    its variances. A (conditional) covariance that is zero here is zero
    structurally."""
    theta = np.array(spec.starts, dtype=float)
    kinds = np.array(spec.kinds)
    theta[np.isin(kinds, ["loading", "regression"])] += 0.37
    theta[kinds == "covariance"] = 0.0
    A = structure.A.fill(theta)
    A = A + 0.29 * (A == 0) * (structure.A.pattern.sum(0).reshape(A.shape) > 0)
    S = structure.S.fill(theta)
    d = np.sqrt(np.clip(np.diag(S), 1e-6, None))
    allowed = (structure.S.pattern.sum(0).reshape(S.shape) > 0) | (structure.S.fixed != 0)
    S = np.where(allowed & ~np.eye(len(S), dtype=bool), 0.1 * np.outer(d, d), S)
    return np.linalg.inv(np.eye(len(A)) - A), S


def _correlated_pairs(cov: np.ndarray, U, given) -> list[tuple[int, int]]:
    """Pairs of ``U`` whose covariance given the positions ``given`` is not zero."""
    if len(given):
        cov = cov - cov[:, given] @ np.linalg.solve(cov[np.ix_(given, given)], cov[given, :])
    block = cov[np.ix_(U, U)]
    return [(U[i], U[j]) for i in range(len(U)) for j in range(i) if abs(block[i, j]) > 1e-10]


def _threshold_arrays(spec: ModelSpec, names) -> tuple[np.ndarray, np.ndarray]:
    """The free index (1-based, 0 where fixed or padding) and fixed value
    (+BEYOND in the padding) of each threshold of ``names``, (variables, max K - 1)."""
    thresholds = spec.table.thresholds()
    width = max(len(thresholds[name]) for name in names) if names else 0
    free = np.zeros((len(names), width), dtype=int)
    fixed = np.full((len(names), width), BEYOND)
    for k, name in enumerate(names):
        for j, (index, value) in enumerate(thresholds[name]):
            free[k, j], fixed[k, j] = index, (0.0 if index else value)
    return free, fixed


def _coded(values: np.ndarray) -> np.ndarray:
    """Category codes as integers, -1 where missing."""
    return np.where(np.isnan(values), -1, np.nan_to_num(values)).astype(int)


def ordinal_layout(spec: ModelSpec) -> OrdinalLayout:
    """Positions, codes, thresholds, and which factors must be sampled per row
    (those without which the lowest level's ordinal variables are not
    conditionally independent)."""
    structure = spec.within
    observed = list(structure.observed)
    U = np.array([observed.index(n) for n in spec.table.within_ordinal], dtype=int)
    C = np.array([i for i in range(len(observed)) if i not in U], dtype=int)
    free, fixed = _threshold_arrays(spec, spec.table.within_ordinal)
    total, S = _generic_moments(spec, structure)
    cov = total @ S @ total.T
    latent = np.arange(structure.n_observed, len(structure.nodes))
    factors = np.array([], dtype=int)
    pairs = _correlated_pairs(cov, U, C)
    if pairs and len(latent):
        factors = latent
        if len(factors) > max(QUADRATURE_NODES):
            raise ModelSpecificationError(
                f"{len(factors)} within factors link the ordinal variables; their integration is supported for up "
                f"to {max(QUADRATURE_NODES)} factors")
        pairs = _correlated_pairs(cov, U, np.concatenate([C, latent]))
    _refuse_correlated(pairs, observed)
    return OrdinalLayout(ordinal=U, continuous=C, codes=_coded(spec.data.within_outcomes[:, U]), threshold_free=free,
                         threshold_fixed=fixed, row_factors=factors,
                         patterns=_continuous_patterns(spec.data.within_outcomes[:, C], C))


def between_ordinal_layout(spec: ModelSpec) -> OrdinalLayout | None:
    """The level-2-only ordinal variables among the level-2 outcomes (rows
    are clusters; positions among ``layout.levels[1].outcomes``), or None
    where there are none. Given the cluster effects and the continuous level-2
    outcomes they must be independent of each other; where clusters miss
    outcomes, given the continuous outcomes each cluster has (the outcomes
    then enter in reduced form, ``patterns`` group the clusters)."""
    names = spec.table.between_ordinal
    if not names:
        return None
    clusters = spec.layout.levels[1]
    outcomes = list(clusters.outcomes)
    values = spec.data.between_outcomes
    U = np.array([outcomes.index(n) for n in names], dtype=int)
    C = np.array([i for i in range(len(outcomes)) if i not in U], dtype=int)
    total, S = _generic_moments(spec, clusters.structure)
    z_idx = clusters.outcome_nodes
    patterns = _continuous_patterns(values[:, C], C)
    if np.isnan(values).any():  # reduced form: z = (I - A_zz)^-1 (drive + e), so cov(z | effects) = T S_zz T'
        reduced = np.linalg.inv(np.linalg.inv(total)[np.ix_(z_idx, z_idx)])
        cov = reduced @ S[np.ix_(z_idx, z_idx)] @ reduced.T
        for _, observed in patterns:
            _refuse_correlated(_correlated_pairs(cov, U, observed), outcomes)
    else:
        _refuse_correlated(_correlated_pairs(S[np.ix_(z_idx, z_idx)], U, C), outcomes)
    free, fixed = _threshold_arrays(spec, names)
    return OrdinalLayout(ordinal=U, continuous=C, codes=_coded(values[:, U]), threshold_free=free,
                         threshold_fixed=fixed, row_factors=np.array([], dtype=int), patterns=patterns)


def repeat_rows(layout: OrdinalLayout, values: np.ndarray, copies: int) -> tuple[OrdinalLayout, np.ndarray]:
    """``layout`` and ``values`` for ``copies`` stacked copies of the rows (the
    importance points of per-cluster LOO): codes and patterns repeated."""
    if copies == 1:
        return layout, values
    stacked = np.tile(values, (copies, 1))
    C = layout.continuous
    return replace(layout, codes=np.tile(layout.codes, (copies, 1)),
                   patterns=_continuous_patterns(stacked[:, C], C)), stacked


def _refuse_correlated(pairs: list[tuple[int, int]], names: list[str]) -> None:
    if pairs:
        a, b = pairs[0]
        raise ModelSpecificationError(
            f"the ordinal variables {names[a]} and {names[b]} stay correlated given the continuous variables "
            "and the factors (a residual covariance or a regression between ordinal variables), which needs their "
            "joint normal probability: not supported yet. Let a factor carry their association instead.")


def _continuous_patterns(continuous_values: np.ndarray, C: np.ndarray) -> tuple:
    """Rows grouped by the continuous variables they have (missing values of
    continuous variables: each group is conditioned on what it has)."""
    seen = ~np.isnan(continuous_values)
    if seen.all():
        return ((slice(None), C),)
    keys, group = np.unique(seen, axis=0, return_inverse=True)
    group = np.asarray(group).ravel()
    return tuple((np.flatnonzero(group == g), C[key]) for g, key in enumerate(keys))


def ordinal_unsupported(spec: ModelSpec) -> str | None:
    """Why the latent engine cannot fit this model with ordinal variables, or None."""
    if not spec.table.ordinal:
        return None
    if spec.within.slopes_on_nodes:
        return "a random slope on a modelled variable together with ordinal variables is not supported yet"
    try:
        ordinal_layout(spec)
        between_ordinal_layout(spec)
    except ModelSpecificationError as err:
        return str(err)
    return None


# Gauss-Hermite nodes per dimension by the number of factors integrated out, and
# the Newton steps that find where each row's integrand sits (adaptive quadrature)
QUADRATURE_NODES = {1: 9, 2: 7, 3: 5}
NEWTON_STEPS = 3


def quadrature(n_factors: int, nodes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nodes (Q, factors) and log weights (Q,) of a product Gauss-Hermite rule
    for the standard normal in ``n_factors`` dimensions."""
    points, weights = np.polynomial.hermite_e.hermegauss(nodes or QUADRATURE_NODES[n_factors])
    weights = weights / np.sqrt(2 * np.pi)
    grids = np.meshgrid(*[points] * n_factors, indexing="ij")
    log_weights = sum(np.meshgrid(*[np.log(weights)] * n_factors, indexing="ij"))
    return np.stack([g.ravel() for g in grids], axis=1), log_weights.ravel()


def _cholesky_rows(matrix, m: int, xp):
    """Lower Cholesky factor of (rows, m, m) matrices for small m, entry by
    entry (a list of lists of (rows,) arrays): the same code on every backend."""
    L = [[None] * m for _ in range(m)]
    for j in range(m):
        diagonal = matrix[:, j, j] - sum(L[j][k] ** 2 for k in range(j))
        L[j][j] = xp.sqrt(diagonal)
        for i in range(j + 1, m):
            L[i][j] = (matrix[:, i, j] - sum(L[i][k] * L[j][k] for k in range(j))) / L[j][j]
    return L


def _solve_lower_rows(L, b, m: int, extra_axes: int = 0):
    """Solve L y = b per row (b: list of m (rows, ...) arrays, ``extra_axes`` after rows)."""
    at = (slice(None),) + (None,) * extra_axes
    y = []
    for i in range(m):
        y.append((b[i] - sum(L[i][k][at] * y[k] for k in range(i))) / L[i][i][at])
    return y


def _solve_upper_rows(L, b, m: int, extra_axes: int = 0):
    """Solve L' y = b per row (b: list of m (rows, ...) arrays, ``extra_axes`` after rows)."""
    at = (slice(None),) + (None,) * extra_axes
    y = [None] * m
    for i in reversed(range(m)):
        y[i] = (b[i] - sum(L[k][i][at] * y[k] for k in range(i + 1, m))) / L[i][i][at]
    return y


class _Items:
    """The ordinal items of every row as functions of the standardized factors
    xi: latent responses mean + H xi with SD sd, cut at the row's category bounds."""

    def __init__(self, cells: CategoryCells, cuts, mean, H, sd, erfc, xp):
        self.cells, self.cuts, self.mean, self.H, self.sd, self.erfc, self.xp = cells, cuts, mean, H, sd, erfc, xp

    def frozen(self, stop_gradient) -> _Items:
        """The same items with every input held constant for differentiation."""
        out = object.__new__(_Items)
        out.__dict__.update(self.__dict__)
        for name in ("cuts", "mean", "H", "sd"):
            setattr(out, name, stop_gradient(getattr(self, name)))
        return out

    def log_probability_at_nodes(self, center, spread: list, points: np.ndarray):
        """Sum over items of log P(category | xi) at xi = center + W p for
        each node p of ``points`` (Q, m), per row: (rows, Q). ``spread``: the
        columns of each row's W, m arrays (rows, m). Each cell's latent mean
        is then a + b . p, so only (cells, m) values are gathered per group,
        not (cells, Q)."""
        xp, cells = self.xp, self.cells
        if not cells.groups:
            return xp.zeros((cells.n_rows, points.shape[0]))
        at_center = (self.mean + center @ self.H.T).reshape((-1,))  # (cells,)
        slopes = [(column @ self.H.T).reshape((-1,)) for column in spread]  # per node coordinate, (cells,)

        def linear_at(index):
            return at_center[index][:, None] + sum(b[index][:, None] * points[None, :, j] for j, b in enumerate(slopes))

        return _summed_log_probability(cells, linear_at, self.sd, self.cuts, self.erfc, xp)

    def newton_terms(self, xi):
        """Gradient (rows, m) and Hessian (rows, m, m) of the summed log probability in xi."""
        xp = self.xp
        firsts, seconds = [], []
        flat = _by_cell(self.mean + xi @ self.H.T, xp)  # (cells, 1)
        for lower, upper in _standardized_bounds(self.cells, lambda index: flat[index], self.sd, self.cuts):
            probability = xp.maximum(_category_probability(lower, upper, self.erfc, xp), 1e-300)
            # the normal density at each bound, times the bound (0 at an infinite one)
            density = [0.0 if b is None else _normal_density(b, xp) for b in (lower, upper)]
            weighted = [0.0 if b is None else b * d for b, d in zip((lower, upper), density)]
            first = (density[0] - density[1]) / probability
            second = (weighted[0] - weighted[1]) / probability - first**2
            if lower is not None and upper is not None:  # as the width goes to 0: the midpoint and -1
                narrow, midpoint = _narrow(lower, upper, xp)
                first, second = xp.where(narrow, midpoint, first), xp.where(narrow, -1.0, second)
            firsts.append(first)
            seconds.append(second)
        if not firsts:  # every value missing
            return xp.zeros((self.cells.n_rows, self.H.shape[1])), xp.zeros((self.cells.n_rows,) + (self.H.shape[1],) * 2)
        first, second = (_in_cell_order(self.cells, pieces, xp)[:, :, 0] for pieces in (firsts, seconds))
        gradient = (first / self.sd) @ self.H
        hessian = ((second / self.sd**2)[:, :, None, None] * (self.H[:, :, None] * self.H[:, None, :])[None]).sum(1)
        return gradient, hessian


def _adaptive_quadrature(items: _Items, n_rows: int, m: int, backend):
    """log of E[P(categories | xi)] over xi ~ N(0, I), per row: Gauss-Hermite
    nodes centred at the mode of each row's integrand (Newton steps from 0) and
    scaled by its curvature, so that few nodes suffice however sharply the
    items pin the factors down (many items, high loadings).

    The nodes are held constant for differentiation: the integral does not
    depend on where the nodes sit, only its error does, so the gradient
    differs from the exact one by the quadrature error while the Newton steps
    cost no backward pass (NUTS stays exact for the quadrature's value: its
    gradient is still a function of the position alone)."""
    xp = backend.xp
    frozen = items.frozen(backend.stop_gradient)
    center = xp.zeros((n_rows, m))
    eye = np.eye(m)
    for _ in range(NEWTON_STEPS + 1):
        gradient, hessian = frozen.newton_terms(center)
        precision = eye[None] - hessian  # minus the Hessian of the log integrand
        root = _cholesky_rows(precision, m, xp)
        if _ == NEWTON_STEPS:
            break
        step_in = [gradient[:, k] - center[:, k] for k in range(m)]
        step = _solve_upper_rows(root, _solve_lower_rows(root, step_in, m), m)
        center = center + xp.stack(step, axis=1)
    points, log_weights = quadrature(m)
    # xi = center + R^-T x, R R' = precision (``spread``: the columns of R^-T per row); the Jacobian is 1 / prod diag(R)
    spread = [xp.stack(_solve_upper_rows(root, [xp.zeros(n_rows) + eye[k, j] for k in range(m)], m), axis=1)
              for j in range(m)]
    xi = center[:, None, :] + sum(column[:, None, :] * points[None, :, j, None] for j, column in enumerate(spread))
    log_jacobian = -sum(xp.log(root[k][k]) for k in range(m))
    terms = (items.log_probability_at_nodes(center, spread, points) - 0.5 * (xi**2).sum(-1)
             + 0.5 * (points**2).sum(-1)[None] + log_weights[None] + log_jacobian[:, None])
    top = xp.max(terms, axis=1)
    return top + xp.log(xp.sum(xp.exp(terms - top[:, None]), axis=1))


def ordinal_level_logp(theta, moments, row_means, layout: OrdinalLayout, values, backend=NUMPY_BACKEND,
                       erfc=None, per_row: bool = False):
    """log p(rows | their means ``row_means`` (rows, p), the level's moments):
    the continuous values' normal density times the categories' probability
    given them, with the row factors (``layout.row_factors``) integrated out by
    Gauss-Hermite quadrature. Rows missing continuous values are conditioned
    on the ones they have (``layout.patterns``). Summed, or per row (in the
    order of ``values``' rows) with ``per_row``."""
    xp = backend.xp
    U, F = layout.ordinal, layout.row_factors
    p, m = len(U) + len(layout.continuous), len(F)
    cov, means = moments.Sigma, row_means
    if m:  # append the standardized factors z, F = E F + L z: cov(observed, z) = V_oF L^-T
        nodes_cov = moments.total @ moments.S @ moments.total.T
        loading = backend.solve_lower(backend.cholesky(nodes_cov[np.ix_(F, F)]), nodes_cov[F, :p]).T
        cov = backend.concatenate([backend.concatenate([cov, loading], axis=1),
                                   backend.concatenate([loading.T, backend.eye(m)], axis=1)], axis=0)
        means = backend.concatenate([row_means, backend.zeros((row_means.shape[0], m))], axis=1)
    cuts = threshold_matrix(theta, layout, xp)
    pieces = [_pattern_logp(means[rows], cov, values[rows], cells, C, U, np.arange(p, p + m), cuts, backend, erfc,
                            per_row)
              for (rows, C), cells in zip(layout.patterns, layout.cells_by_pattern)]
    if not per_row:
        return sum(pieces[1:], pieces[0])
    if len(pieces) == 1:
        return pieces[0]
    order = np.argsort(np.concatenate([rows for rows, _ in layout.patterns]))
    return xp.concatenate(pieces)[order]


def _pattern_logp(means, cov, values, cells: CategoryCells, C, U, Z, cuts, backend, erfc, per_row: bool):
    """:func:`ordinal_level_logp` of rows that share which continuous
    variables (positions ``C``) they have."""
    from bayes_msem.engines.latent import mvn_logp_from_scatter

    xp = backend.xp
    residual, S_cc, target_mean, target_cov = condition_on_continuous(means, cov, values, C, np.concatenate([U, Z]),
                                                                     backend)
    o, m = len(U), len(Z)
    if m:  # U* | C, z = mean + H xi at z = E[z | C] + L_z xi
        root = backend.cholesky(target_cov[o:, o:])
        H = backend.solve_lower(root, target_cov[o:, :o]).T  # (o, m)
        sd = xp.sqrt(xp.diagonal(target_cov[:o, :o]) - xp.sum(H * H, axis=1))
        items = _Items(cells, cuts, target_mean[:, :o], H, sd, erfc, xp)
        rows = _adaptive_quadrature(items, cells.n_rows, m, backend)
    else:
        rows = ordinal_rows_logp(cells, target_mean, xp.sqrt(xp.diagonal(target_cov)), cuts, erfc, xp)
    if residual is None:
        return rows if per_row else rows.sum()
    if per_row:
        return rows + normal_rows_logp(residual, S_cc, backend)
    return rows.sum() + mvn_logp_from_scatter(residual.T @ residual, float(cells.n_rows), S_cc, backend)


def normal_rows_logp(residual, cov, backend=NUMPY_BACKEND):
    """log N(r_i; 0, ``cov``) of each row r_i of ``residual`` (rows, k), (rows,)."""
    xp = backend.xp
    chol = backend.cholesky(cov)
    scaled = backend.solve_lower(chol, residual.T)
    log_det = 2.0 * xp.sum(xp.log(xp.diagonal(chol)))
    return -0.5 * (xp.sum(scaled * scaled, axis=0) + log_det + cov.shape[0] * np.log(2 * np.pi))


def row_means_of(moments, cluster_means, data, index=None):
    """Each row's mean of the lowest level's observed variables: its cluster's
    means plus the covariates' part (with the cluster's slopes where they vary).
    ``index`` (rows,) groups the rows otherwise than by cluster (a
    cross-classified model's cells)."""
    at, x = (data.cluster_index if index is None else index), data.within_covariates
    Pi = moments.Pi
    shift = (Pi[at] @ x[:, :, None])[:, :, 0] if Pi.ndim == 3 else x @ Pi.T
    return cluster_means[at] + shift


def ordinal_within_logp(spec: ModelSpec, theta, moments, cluster_means):
    """The lowest level's log-likelihood in a model with ordinal variables,
    inside the latent engine's PyMC model (see :func:`ordinal_level_logp`)."""
    import pytensor.tensor as pt

    from bayes_msem.engines.latent import PYTENSOR_BACKEND

    return ordinal_level_logp(theta, moments, row_means_of(moments, cluster_means, spec.data), ordinal_layout(spec),
                              spec.data.within_outcomes, PYTENSOR_BACKEND, pt.erfc)


def ordinal_row_log_likelihood(spec: ModelSpec, theta_draws: np.ndarray) -> np.ndarray:
    """log p(row | parameters) per draw of a single-level model with ordinal
    variables, (chains, draws, rows): the units of LOO (NumPy, the same
    :func:`ordinal_level_logp` the sampler uses)."""
    from scipy.special import erfc

    from bayes_msem.matrices import level_moments

    layout = ordinal_layout(spec)
    data = spec.data
    flat = theta_draws.reshape(-1, theta_draws.shape[-1])
    out = np.empty((len(flat), data.n_rows))
    for k, theta in enumerate(flat):
        moments = level_moments(theta, spec.within)
        row_means = row_means_of(moments, moments.mean[None, :], data)
        out[k] = ordinal_level_logp(theta, moments, row_means, layout, data.within_outcomes, erfc=erfc, per_row=True)
    return out.reshape(theta_draws.shape[:-1] + (data.n_rows,))
