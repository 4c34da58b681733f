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
from bayes_msem.simulate import categorize_outcomes, draw_outcomes

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


def _item_groups(spec) -> list[tuple[str, int, list[str], np.ndarray, np.ndarray]]:
    """The ordinal items per level: (level name, which outcomes hold them (0
    the level-1 ones, 1 the level-2 ones), names, columns among them, observed
    codes): the lowest level's over rows, the level-2-only ones over clusters."""
    data, table = spec.data, spec.table
    groups = []
    if table.within_ordinal:
        names = list(table.within_ordinal)
        columns = np.array([spec.within.observed.index(n) for n in names])
        groups.append((spec.layout.rows.name, 0, names, columns, data.within_outcomes[:, columns]))
    if table.between_ordinal:
        names = list(table.between_ordinal)
        columns = np.array([spec.layout.levels[1].outcomes.index(n) for n in names])
        groups.append((spec.layout.levels[1].name, 1, names, columns, data.between_outcomes[:, columns]))
    return groups


def ordinal_predictive_check(spec, theta_draws: np.ndarray, *, n_draws: int = 500,
                             seed: int | None = None) -> PredictiveCheck:
    """PPP of the category-count discrepancy and per-cell checks (see the
    module docstring), from ``n_draws`` posterior draws picked at random.
    Level-2-only ordinal variables are counted over clusters, in a table of
    their own level. Missing values stay missing in the replicates (same holes)."""
    rng = np.random.default_rng(seed)
    theta = theta_draws.reshape(-1, theta_draws.shape[-1])
    picked = np.sort(rng.choice(len(theta), size=min(n_draws, len(theta)), replace=False))
    data, counts = spec.data, dict(spec.table.ordered)
    groups = _item_groups(spec)

    def all_cells(outcomes):  # outcomes: (level-1 values, level-2 values) of a whole data set
        return np.concatenate([_cells(np.where(np.isnan(codes), -1, outcomes[source][:, columns]),
                                      [counts[n] for n in names]) for _, source, names, columns, codes in groups])

    observed = all_cells((data.within_outcomes, data.between_outcomes))
    replicated = np.empty((len(picked), len(observed)))
    for r, s in enumerate(picked):
        Y, Z, _ = draw_outcomes(rng, theta[s], spec.layout, data.within_covariates, data.between_covariates,
                             data.cluster_index)
        replicated[r] = all_cells(categorize_outcomes(Y, Z, spec.table, spec.layout, theta[s]))
    expected = np.maximum(replicated.mean(axis=0), 1e-9)
    t_observed = ((observed - expected) ** 2 / expected).sum() * np.ones(len(picked))
    t_replicated = ((replicated - expected[None, :]) ** 2 / expected[None, :]).sum(axis=1)
    totals = np.concatenate([_cell_totals(codes, np.isnan(codes), [counts[n] for n in names])
                             for _, _, names, _, codes in groups])
    table = pd.concat([pd.DataFrame(_cell_names(names, [counts[n] for n in names])).assign(level=level)
                       for level, _, names, _, _ in groups], ignore_index=True)
    table = table[["level", "lhs", "op", "rhs"]]
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
