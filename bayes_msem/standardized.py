"""Derived quantities per posterior draw: the standardized solution (lavaan's
``std.all``) and R-squared of each endogenous variable, per level.

Both come from the level's model-implied covariance of all its variables,
including the exogenous covariates at their sample covariance (as lavaan
does under ``fixed.x``):

    Cov(v) = T (A_x S_x A_x' + S) T',   T = (I - A)^-1,   Cov(v, x) = T A_x S_x.

Loadings and regressions are scaled by sd(predictor) / sd(outcome), variances
by the total variance, residual covariances become residual correlations,
intercepts are divided by the standard deviation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayes_msem.matrices import LevelStructure, level_moments

__all__ = ["standardized_draws", "r_squared_draws", "slope_dependent"]


def slope_dependent(structure: LevelStructure) -> set[str]:
    """Nodes of a level whose variance depends on random slopes: the outcomes
    of random regressions and everything they affect. Their total variance
    differs between clusters and includes the slope variance, so the one-level
    formulas here do not give their standardized values or R-squared
    (that needs a multilevel decomposition such as Rights & Sterba 2019)."""
    if not structure.slopes:
        return set()
    affected = (np.abs(structure.slope_A).sum(axis=(0, 2)) + np.abs(structure.slope_A_x).sum(axis=(0, 2))) > 0
    paths = structure.A.possibly_nonzero()
    for _ in structure.nodes:  # whatever a slope-dependent node affects depends on the slopes too
        affected = affected | (paths[:, affected].any(axis=1))
    return {name for name, hit in zip(structure.nodes, affected) if hit}


def _covariate_covariance(rows: pd.DataFrame, structure: LevelStructure) -> np.ndarray:
    names = structure.covariates
    cov = np.zeros((len(names), len(names)))
    exo = rows[rows.exo & (rows.op == "~~") & (rows.level == structure.level)]
    for row in exo.itertuples():
        i, j = names.index(row.lhs), names.index(row.rhs)
        cov[i, j] = cov[j, i] = row.ustart
    return cov


def _level_variances(theta: np.ndarray, structure: LevelStructure, cov_x: np.ndarray):
    """Total variances of nodes and covariates, residual variances of nodes, and the moments."""
    moments = level_moments(theta, structure)
    driven = moments.A_x @ cov_x @ moments.A_x.T + moments.S
    total = np.diag(moments.total @ driven @ moments.total.T)
    return total, np.diag(moments.S), moments


def _scales(structure: LevelStructure, total: np.ndarray, cov_x: np.ndarray) -> dict[str, float]:
    sds = dict(zip(structure.nodes, np.sqrt(np.clip(total, 0, None))))
    sds.update(zip(structure.covariates, np.sqrt(np.diag(cov_x))))
    return sds


def _standardize_row(row, value: float, sds: dict, residual: dict) -> float:
    if row.op == "=~":
        return value * sds[row.lhs] / sds[row.rhs]
    if row.op == "~":
        return value * sds[row.rhs] / sds[row.lhs]
    if row.op in ("~1", "|"):  # a threshold in SDs of the latent response, as lavaan's std.all
        return value / sds[row.lhs] if sds[row.lhs] > 0 else np.nan
    if row.lhs == row.rhs:
        return value / sds[row.lhs] ** 2 if sds[row.lhs] > 0 else np.nan
    if row.exo:
        return value / (sds[row.lhs] * sds[row.rhs])
    scale = np.sqrt(residual[row.lhs] * residual[row.rhs])
    return value / scale if scale > 0 else np.nan


def standardized_draws(rows: pd.DataFrame, structures: list[LevelStructure], theta: np.ndarray,
                       values: np.ndarray) -> np.ndarray:
    """Standardized value of every non-defined table row for each draw.

    ``theta`` is (draws, n_free) and ``values`` (draws, rows) the table values
    per draw; returns (draws, rows), NaN for ``:=`` rows.
    """
    out = np.full(values.shape, np.nan)
    for structure in structures:
        cov_x = _covariate_covariance(rows, structure)
        unknown = slope_dependent(structure)  # left NaN: see slope_dependent
        level_rows = [(i, row) for i, row in enumerate(rows.itertuples())
                      if row.level == structure.level and row.op != ":=" and not {row.lhs, row.rhs} & unknown]
        for d in range(theta.shape[0]):
            total, residual_var, _ = _level_variances(theta[d], structure, cov_x)
            sds = _scales(structure, total, cov_x)
            residual = dict(zip(structure.nodes, residual_var))
            for i, row in level_rows:
                out[d, i] = _standardize_row(row, values[d, i], sds, residual)
    return out


def r_squared_draws(structures: list[LevelStructure], rows: pd.DataFrame, theta: np.ndarray) -> dict:
    """R-squared of every endogenous node (one with a regression or loading on
    it) per level: ``{(level, name): draws}``; NaN for a node whose variance
    depends on random slopes (see :func:`slope_dependent`)."""
    result = {}
    for structure in structures:
        cov_x = _covariate_covariance(rows, structure)
        explained = structure.A.possibly_nonzero().any(axis=1) | structure.A_x.possibly_nonzero().any(axis=1)
        draws = np.empty((theta.shape[0], len(structure.nodes)))
        for d in range(theta.shape[0]):
            total, residual_var, _ = _level_variances(theta[d], structure, cov_x)
            draws[d] = 1.0 - residual_var / total
        unknown = slope_dependent(structure)
        for k, name in enumerate(structure.nodes):
            if name in unknown:
                draws[:, k] = np.nan
            if explained[k] or name in unknown:
                result[(structure.level, name)] = draws[:, k]
    return result


def icc_draws(structures: list[LevelStructure], rows: pd.DataFrame, theta: np.ndarray, names,
              crossed: bool = False) -> np.ndarray:
    """Model-based intraclass correlation of each variable in ``names`` (split
    over levels) per draw: at each level above the rows, the share of the
    variable's total variance (covariates' variance included, random slopes'
    contribution not) that lies at that level and above, the correlation of
    two rows in the same unit of that level (two-level: between / (within +
    between); three-level: of pupils in one school, and in one class).
    In a cross-classified model (``crossed``) each classification's share
    alone: the correlation of two rows that share its unit but not the other's.
    Returns (draws, levels above the rows, names); a variable without a part at
    a level has variance 0 there."""
    cov = {s.level: _covariate_covariance(rows, s) for s in structures}
    out = np.empty((theta.shape[0], len(structures) - 1, len(names)))
    for d in range(theta.shape[0]):
        parts = np.array([[dict(zip(s.nodes, _level_variances(theta[d], s, cov[s.level])[0])).get(n, 0.0)
                           for n in names] for s in structures])  # (levels, names)
        if crossed:
            out[d] = parts[1:] / parts.sum(axis=0)
            continue
        above = np.cumsum(parts[::-1], axis=0)[::-1]  # variance at each level and the levels above it
        out[d] = above[1:] / above[0]
    return out
