"""Indirect, total and contextual effects, found from the model itself.

Every directed path of regressions (``~``, not loadings) from a predictor to
an outcome at a level is an effect; paths through at least one mediator are
indirect effects (Preacher, Zyphur & Zhang 2010: within-level paths give the
within indirect effect of a 1-1-1 design, between-level paths the between
indirect effect of 1-1-1, 2-1-1 and 2-2-1 designs). Per posterior draw, the
effect along a path is the product of its coefficients. Where coefficients
are random slopes, the *average* effect is the expectation of that product
over clusters: with Gaussian slopes, Isserlis' theorem gives
E[a_j b_j] = E[a] E[b] + cov(a_j, b_j) (Bauer, Preacher & Gil 2006), and
the same rule extends to longer paths. Per cluster the effect is the product
of that cluster's coefficients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayes_msem.matrices import LevelStructure, level_moments, parameter_values
from bayes_msem.partable import ParameterTable, _source_name

__all__ = ["Edge", "regression_edges", "paths", "path_draws", "cluster_path_draws", "effects_table"]

MAX_PATH_LENGTH = 6


@dataclass(frozen=True)
class Edge:
    """A regression ``target ~ source`` at a level: its table row, or the random slope it carries."""

    source: str
    target: str
    row: int  # index into the parameter table's rows
    slope: str | None


def regression_edges(table: ParameterTable, level: int) -> list[Edge]:
    rows = table.rows
    chosen = rows[(rows.level == level) & (rows.op == "~")]
    # a centered copy (m.raw, m.cwc) is the same variable on a path: x -> m -> y
    return [Edge(_source_name(r.rhs), r.lhs, i, r.random) for i, r in zip(chosen.index, chosen.itertuples())]


def paths(edges: list[Edge]) -> list[tuple[Edge, ...]]:
    """Every directed path of two or more regressions (no variable visited twice)."""
    by_source: dict[str, list[Edge]] = {}
    for edge in edges:
        by_source.setdefault(edge.source, []).append(edge)
    found: list[tuple[Edge, ...]] = []

    def extend(path: tuple[Edge, ...], visited: set[str]) -> None:
        if len(path) >= 2:
            found.append(path)
        if len(path) >= MAX_PATH_LENGTH:
            return
        for edge in by_source.get(path[-1].target, []):
            if edge.target not in visited:
                extend(path + (edge,), visited | {edge.target})

    for edge in edges:
        extend((edge,), {edge.source, edge.target})
    return found


def _gaussian_product_mean(means: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """E[prod_k X_k] for jointly Gaussian X with ``means`` (draws, k) and ``cov``
    (draws, k, k), by Isserlis' recursion on the first factor."""
    k = means.shape[1]
    if k == 0:
        return np.ones(means.shape[0])
    if k == 1:
        return means[:, 0]
    rest = list(range(1, k))
    total = means[:, 0] * _gaussian_product_mean(means[:, rest], cov[:, rest][:, :, rest])
    for j in rest:
        others = [i for i in rest if i != j]
        total = total + cov[:, 0, j] * _gaussian_product_mean(means[:, others], cov[:, others][:, :, others])
    return total


def slope_moments(levels: list[tuple[LevelStructure, np.ndarray, np.ndarray]], theta: np.ndarray,
                  slopes: tuple[str, ...]):
    """Mean and covariance over clusters of the random slopes, per draw: the
    sum of their parts at every level above the rows where they have one
    (``levels``: each such level's structure and its covariates' sample mean
    and covariance, over which the parts are averaged)."""
    means = np.zeros((len(theta), len(slopes)))
    covs = np.zeros((len(theta), len(slopes), len(slopes)))
    for structure, w_mean, w_cov in levels:
        at = [k for k, s in enumerate(slopes) if s in structure.nodes]
        if not at:
            continue
        index = [structure.nodes.index(slopes[k]) for k in at]
        for d, values in enumerate(theta):
            m = level_moments(values, structure)
            effect_w = m.total @ m.A_x
            implied = m.total @ m.S @ m.total.T + effect_w @ w_cov @ effect_w.T
            means[d, at] += (m.total @ (m.alpha + m.A_x @ w_mean))[index]
            covs[d][np.ix_(at, at)] += implied[np.ix_(index, index)]
    return means, covs


def path_draws(path: tuple[Edge, ...], values: np.ndarray, slope_mean: dict, slope_cov) -> np.ndarray:
    """Average effect along ``path`` per draw. ``values`` (draws, rows) are the
    parameter-table values; ``slope_mean[name]`` the slopes' means per draw and
    ``slope_cov(a, b)`` their covariance per draw."""
    factors = list(path)
    means = np.stack([slope_mean[e.slope] if e.slope else values[:, e.row] for e in factors], axis=1)
    cov = np.zeros(means.shape + (len(factors),))
    for i, a in enumerate(factors):
        for j, b in enumerate(factors):
            if a.slope and b.slope:
                cov[:, i, j] = slope_cov(a.slope, b.slope)
    return _gaussian_product_mean(means, cov)


def cluster_path_draws(path: tuple[Edge, ...], values: np.ndarray, cluster_slopes: dict) -> np.ndarray:
    """Effect along ``path`` in each cluster: (draws, clusters). ``cluster_slopes[name]``
    holds each cluster's slope per draw."""
    product = None
    for edge in path:
        factor = cluster_slopes[edge.slope] if edge.slope else values[:, edge.row][:, None]
        product = factor if product is None else product * factor
    return product


def describe(draws: np.ndarray) -> dict:
    """Posterior mean, sd, median, 95% interval and probability of direction."""
    q = np.quantile(draws, [0.025, 0.5, 0.975])
    positive = float(np.mean(draws > 0))
    return {"mean": float(draws.mean()), "sd": float(draws.std(ddof=1)), "median": q[1], "q2.5": q[0],
            "q97.5": q[2], "p_direction": max(positive, 1.0 - positive)}


def path_name(path: tuple[Edge, ...]) -> str:
    return " -> ".join([path[0].source] + [e.target for e in path])


def effects_table(table: ParameterTable, structures: list[LevelStructure], theta: np.ndarray,
                  covariate_moments: dict[int, tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """Indirect effects (one row per path), total indirect and total effects
    (per predictor and outcome with an indirect path) and contextual effects
    (between minus within, for a predictor of the same outcome at both levels).
    ``covariate_moments[level]``: the sample mean and covariance of each upper
    level's covariates (a random slope's mean and variance average over them)."""
    values = parameter_values(table.rows, theta)
    slopes = table.slopes
    slope_mean, slope_cov = {}, None
    if slopes:
        upper = [(s, *covariate_moments[s.level]) for s in structures if s.level >= 2]
        means, covs = slope_moments(upper, theta, slopes)
        slope_mean = {s: means[:, k] for k, s in enumerate(slopes)}
        slope_cov = lambda a, b: covs[:, slopes.index(a), slopes.index(b)]  # noqa: E731
    records = []
    for structure in structures:
        edges = regression_edges(table, structure.level)
        level = table.level_name(structure.level)
        found = paths(edges)
        by_pair: dict[tuple[str, str], list] = {}
        for path in found:
            draws = path_draws(path, values, slope_mean, slope_cov)
            by_pair.setdefault((path[0].source, path[-1].target), []).append(draws)
            records.append(dict(effect=path_name(path), level=level, type="indirect", source=path[0].source,
                                target=path[-1].target, **describe(draws)))
        for (source, target), pieces in by_pair.items():
            indirect = np.sum(pieces, axis=0)
            if len(pieces) > 1:
                records.append(dict(effect=f"{source} -> ... -> {target}", level=level, type="total indirect",
                                    source=source, target=target, **describe(indirect)))
            direct = [e for e in edges if e.source == source and e.target == target]
            total = indirect + sum(path_draws((e,), values, slope_mean, slope_cov) for e in direct)
            records.append(dict(effect=f"{source} => {target}", level=level, type="total", source=source,
                                target=target, **describe(total)))
    records.extend(_contextual(table, values))
    return pd.DataFrame.from_records(records, columns=["effect", "level", "type", "source", "target", "mean", "sd",
                                                       "median", "q2.5", "q97.5", "p_direction"])


def _contextual(table: ParameterTable, values: np.ndarray) -> list[dict]:
    """Contextual effects: for a predictor of the same outcome at two levels,
    the coefficient at a level above minus the one at the nearest level below
    that has it ("between - within" in a two-level model; "class - within"
    and "school - class" in a three-level one). With latent decomposition
    these are the effects of the units' composition beyond the level below:
    y = g1 x + g2 xbar_class + g3 xbar_school gives b1 = g1, b2 = g1 + g2,
    b3 = g1 + g2 + g3, so g2 = b2 - b1 and g3 = b3 - b2. Only outcomes with a
    part at both levels count; a random slope enters by its mean."""
    by_level = {level: {(e.source, e.target): e for e in regression_edges(table, level)}
                for level in range(1, table.n_levels + 1)}
    records = []
    for level in range(2, table.n_levels + 1):
        split = set(table.split_at(level))
        for key, edge in by_level[level].items():
            lower = next((k for k in range(level - 1, 0, -1) if key in by_level[k]), None)
            if lower is None or edge.target not in split:
                continue
            draws = values[:, edge.row] - _coefficient_draws(table, values, by_level[lower][key])
            names = f"{table.level_name(level)} - {table.level_name(lower)}"
            records.append(dict(effect=f"{key[0]} -> {key[1]} ({names})", level="", type="contextual",
                                source=key[0], target=key[1], **describe(draws)))
    return records


def _coefficient_draws(table: ParameterTable, values: np.ndarray, edge: Edge) -> np.ndarray:
    """A regression's draws; for a random slope, its mean's (the slope's ``~1``
    row, at the highest level that has one)."""
    if not edge.slope:
        return values[:, edge.row]
    rows = table.rows
    means = rows[(rows.op == "~1") & (rows.lhs == edge.slope) & (rows.level > 1)]
    return values[:, means.level.idxmax()]
