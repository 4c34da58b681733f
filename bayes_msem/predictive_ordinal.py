"""Posterior predictive checks for models with ordinal variables: what Mplus
reports for categorical outcomes, the category proportions of each item and
the pairwise tables of each pair of ordinal items.

For each checked draw theta_s a data set is replicated from the model (cluster
effects drawn anew, covariates as observed, latent responses cut at the
thresholds). The statistic is Pearson's discrepancy of the univariate and
bivariate category counts from their expected counts E (the mean over all
replicates):

    T(Y) = sum over cells (n_cell(Y) - E_cell)^2 / E_cell,

and the PPP is the share of draws with T(Y_rep_s) >= T(Y). The Gaussian
likelihood-ratio chi-square of :mod:`bayes_msem.predictive` does not apply:
there is no normal saturated model for categories. Each cell's observed share
is listed with its predictive interval (``covariances`` table, ``op``
``"share"`` for a category, ``"pair"`` for a cell of a pairwise table).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayes_msem.predictive import PredictiveCheck
from bayes_msem.simulate import categorize, draw_outcomes

__all__ = ["ordinal_predictive_check"]


def _cells(codes: np.ndarray, n_categories: list[int]) -> np.ndarray:
    """Counts of every category of every item, then of every cell of every
    pairwise table (rows where both are observed), as one vector."""
    counts = [np.bincount(codes[:, k][codes[:, k] >= 0].astype(int), minlength=n)
              for k, n in enumerate(n_categories)]
    for a in range(len(n_categories)):
        for b in range(a):
            both = (codes[:, a] >= 0) & (codes[:, b] >= 0)
            cell = codes[both, a].astype(int) * n_categories[b] + codes[both, b].astype(int)
            counts.append(np.bincount(cell, minlength=n_categories[a] * n_categories[b]))
    return np.concatenate(counts).astype(float)


def _cell_names(names: list[str], n_categories: list[int]) -> list[dict]:
    rows = [{"lhs": name, "op": "share", "rhs": str(c)} for name, n in zip(names, n_categories) for c in range(n)]
    for a in range(len(names)):
        for b in range(a):
            rows += [{"lhs": names[a], "op": "pair", "rhs": f"{names[b]} {ca},{cb}"}
                     for ca in range(n_categories[a]) for cb in range(n_categories[b])]
    return rows


def ordinal_predictive_check(spec, theta_draws: np.ndarray, *, n_draws: int = 500,
                             seed: int | None = None) -> PredictiveCheck:
    """PPP of the category-count discrepancy and per-cell checks (see the
    module docstring), from ``n_draws`` posterior draws picked at random.
    Missing values stay missing in the replicates (same holes)."""
    rng = np.random.default_rng(seed)
    theta = theta_draws.reshape(-1, theta_draws.shape[-1])
    picked = np.sort(rng.choice(len(theta), size=min(n_draws, len(theta)), replace=False))
    data, structure = spec.data, spec.within
    names = list(spec.table.ordinal)
    columns = [structure.observed.index(n) for n in names]
    n_categories = [dict(spec.table.ordered)[n] for n in names]
    codes = data.within_outcomes[:, columns]
    holes = np.isnan(codes)
    observed = _cells(np.where(holes, -1, codes), n_categories)
    replicated = np.empty((len(picked), len(observed)))
    for r, s in enumerate(picked):
        Y, _ = draw_outcomes(rng, theta[s], spec.layout, data.within_covariates, data.between_covariates,
                             data.cluster_index)
        rep = categorize(Y, spec.table, theta[s], structure.observed)[:, columns]
        replicated[r] = _cells(np.where(holes, -1, rep), n_categories)
    expected = np.maximum(replicated.mean(axis=0), 1e-9)
    t_observed = ((observed - expected) ** 2 / expected).sum() * np.ones(len(picked))
    t_replicated = ((replicated - expected[None, :]) ** 2 / expected[None, :]).sum(axis=1)
    totals = _cell_totals(codes, holes, n_categories)
    table = pd.DataFrame(_cell_names(names, n_categories))
    table.insert(0, "level", spec.layout.rows.name)
    table["observed"] = observed / totals
    shares = replicated / totals[None, :]
    table["predicted"] = np.median(shares, axis=0)
    table["lower"], table["upper"] = np.quantile(shares, [0.025, 0.975], axis=0)
    table["p"] = np.mean(replicated >= observed[None, :], axis=0)
    return PredictiveCheck(ppp=float(np.mean(t_replicated >= t_observed)), chi2_observed=t_observed,
                           chi2_replicated=t_replicated, df=-1, covariances=table,
                           statistic="Pearson discrepancy of category counts (items and pairs)")


def _cell_totals(codes: np.ndarray, holes: np.ndarray, n_categories: list[int]) -> np.ndarray:
    """Rows behind each cell: an item's observed values, a pair's jointly observed ones."""
    seen = ~holes
    totals = [np.full(n, seen[:, k].sum()) for k, n in enumerate(n_categories)]
    for a in range(len(n_categories)):
        for b in range(a):
            totals.append(np.full(n_categories[a] * n_categories[b], (seen[:, a] & seen[:, b]).sum()))
    return np.maximum(np.concatenate(totals).astype(float), 1.0)
