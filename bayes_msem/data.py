"""Stage 3: check the data against the model's variable roles, once, and turn
them into the arrays and per-cluster cross-products the engines need.

Every problem is reported as a :class:`~bayes_msem.errors.DataError` that says
which variable, what is wrong and how to fix it. Rows are never dropped
silently. Missing values of modelled variables are kept (``missing="fiml"``,
the default: the engines use every observed value, see
:mod:`bayes_msem.engines.missing`); ``missing="listwise"`` drops incomplete
rows and reports how many.

Example
-------
>>> import pandas as pd
>>> from bayes_msem.partable import build_partable
>>> table = build_partable("y ~ x")
>>> data = prepare_data(table, pd.DataFrame({"y": [1.0, 2.0, 4.0], "x": [0.0, 1.0, 3.0]}))
>>> data.n_rows, data.n_clusters
(3, 1)
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bayes_msem.errors import DataError
from bayes_msem.partable import DERIVED_SUFFIXES, ParameterTable

__all__ = ["ClusterData", "UnitLevel", "prepare_data", "MISSING_OPTIONS", "missing_pattern_statistics", "describe_missing",
           "covariates_with_missing"]

MISSING_OPTIONS = ("fiml", "ml", "listwise", "error")  # "ml" is lavaan's name for "fiml"


@dataclass(frozen=True)
class UnitLevel:
    """A level above the rows besides the clusters: level 3 of a three-level
    model (each cluster sits in one of its units), or the second
    classification of a cross-classified model (its units cross the
    clusters); the units' labels and covariates."""

    column: str  # the data column naming the units
    parent_index: np.ndarray | None  # (clusters,) int: the unit each level-2 cluster belongs to; None where crossed
    labels: np.ndarray  # (units,)
    covariates: np.ndarray  # (units, q)
    row_index: np.ndarray | None = None  # (rows,) int: the unit of each row
    outcomes: np.ndarray | None = None  # (units, p_v): variables observed only at this level

    @property
    def crossed(self) -> bool:
        """Whether the units cross the clusters instead of holding them."""
        return self.parent_index is None

    @property
    def n_units(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class ClusterData:
    """The data in the shape the engines use.

    Level-1 arrays have one row per observation, level-2 arrays one row per
    cluster. A single-level model has one pseudo-cluster holding every row.
    ``stats`` are the cross-products from which the within-level likelihood is
    computed without touching rows (see :mod:`bayes_msem.engines.latent`).
    """

    within_outcomes: np.ndarray  # (rows, p_w): observed nodes at level 1 (or the only level)
    within_covariates: np.ndarray  # (rows, q_w)
    cluster_index: np.ndarray  # (rows,) int in 0..clusters-1
    cluster_labels: np.ndarray  # (clusters,)
    between_outcomes: np.ndarray  # (clusters, p_z): between-only observed outcomes
    between_covariates: np.ndarray  # (clusters, q_b)
    variable_means: dict[str, float]
    variable_sds: dict[str, float]
    n_dropped: int = 0
    dropped_reason: str = ""  # why the n_dropped rows were left out
    row_labels: np.ndarray | None = None  # (rows,) the user's index label of each row, in the order of the arrays
    stats: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    upper_levels: tuple[UnitLevel, ...] = ()  # levels above the clusters, level 3 first

    @property
    def n_rows(self) -> int:
        return self.within_outcomes.shape[0]

    @property
    def n_clusters(self) -> int:
        return len(self.cluster_labels)

    @property
    def cluster_sizes(self) -> np.ndarray:
        return np.bincount(self.cluster_index, minlength=self.n_clusters)

    @property
    def crossed(self) -> bool:
        """Whether the model is cross-classified: a second classification crosses the clusters."""
        return any(upper.crossed for upper in self.upper_levels)

    @property
    def has_missing(self) -> bool:
        """Whether some modelled outcome has missing values (NaN in the arrays)."""
        return bool(np.isnan(self.within_outcomes).any() or np.isnan(self.between_outcomes).any())


def _closest(name: str, columns) -> str:
    matches = difflib.get_close_matches(name, [str(c) for c in columns], n=3)
    return f" Did you mean {', '.join(repr(m) for m in matches)}?" if matches else ""


def _check_columns(table: ParameterTable, data: pd.DataFrame, clusters: tuple[str, ...]) -> None:
    columns = set(data.columns)
    latent = {name for roles in table.levels for name in roles.latent}
    for name in sorted(latent & columns):
        raise DataError(f"{name!r} is a latent variable in the model but also a column of the data. "
                        f"Rename the latent variable (for example to {name + '_f'!r}) or the column.")
    for name in table.data_columns():
        if name not in columns:
            raise DataError(f"variable {name!r} is in the model but not in the data.{_closest(name, data.columns)}")
    for name in table.data_columns() + clusters:
        column = data[name]
        if isinstance(column, pd.DataFrame):
            raise DataError(f"the data have more than one column named {name!r}")
        if name not in clusters and (not pd.api.types.is_numeric_dtype(column) or isinstance(column.dtype, pd.CategoricalDtype)):
            values = column.dropna()
            offending = values[pd.to_numeric(values.astype(object), errors="coerce").isna()]
            shown = f", e.g. {str(offending.iloc[0])!r} in row {offending.index[0]!r}" if len(offending) else ""
            raise DataError(f"variable {name!r} is not numeric (dtype {column.dtype}{shown}). Convert it to numbers "
                            "(a missing-value code such as 'n/a' or '.' should be read as missing), or recode "
                            "categories as 0/1 dummy variables.")
        if name not in clusters:
            infinite = np.isinf(column.to_numpy(dtype=float))
            if infinite.any():
                raise DataError(f"variable {name!r} has {int(infinite.sum())} infinite value(s), e.g. in row "
                                f"{data.index[np.argmax(infinite)]!r}. Replace them by numbers or set them missing.")


def _cluster_codes(labels: pd.Series, cluster: str) -> tuple[np.ndarray, np.ndarray]:
    """Code 0..J-1 of each row's cluster and the J labels, code k for ``labels[k]``.

    Labels are sorted where they can be (numbers numerically, strings
    alphabetically, categoricals in category order), else kept in order of
    appearance. Every array with one row per cluster is in this code order,
    so nothing downstream depends on how the rows are sorted.
    """
    try:
        codes, uniques = pd.factorize(labels, sort=True)
    except TypeError:  # labels of mixed types do not sort
        codes, uniques = pd.factorize(labels, sort=False)
    uniques = np.asarray(uniques, dtype=object)
    if len(uniques) < 2:
        raise DataError(f"cluster column {cluster!r} has only {len(uniques)} cluster; a two-level model "
                        "needs many clusters (preferably 30 or more). Fit a single-level model instead.")
    names = [str(u) for u in uniques]
    if len(set(names)) < len(names):
        clash = next(n for n in names if names.count(n) > 1)
        raise DataError(f"cluster column {cluster!r} has distinct ids that read the same as text ({clash!r}, "
                        "e.g. the number 1 and the string '1'); results name clusters by their text. "
                        "Make the ids of one type.")
    return codes.astype(int), uniques


def _handle_missing(data: pd.DataFrame, table: ParameterTable, cluster: str | None,
                    missing: str) -> tuple[pd.DataFrame, int, str]:
    """Apply ``missing=``: returns the rows kept, how many were dropped and why."""
    if missing not in MISSING_OPTIONS:
        raise ValueError(f"missing={missing!r} is not an option; use one of {MISSING_OPTIONS}")
    used = list(table.data_columns()) + ([cluster] if cluster else [])
    counts = data[used].isna().sum()
    counts = counts[counts > 0]
    if counts.empty:
        return data, 0, ""
    incomplete = int(data[used].isna().any(axis=1).sum())
    listing = ", ".join(f"{name}: {int(n)}" for name, n in counts.items())
    if missing == "error":
        raise DataError(f"{incomplete} of {len(data)} rows have missing values ({listing}). "
                        "Pass missing='fiml' (the default) to use every observed value under MAR, or "
                        "missing='listwise' to drop those rows.")
    if missing == "listwise":
        warnings.warn(f"missing='listwise': dropped {incomplete} of {len(data)} rows with missing values ({listing}).",
                      UserWarning, stacklevel=5)
        return data.dropna(subset=used), incomplete, "listwise"
    _check_missing_fiml(data, table, counts)
    if cluster is None or not data[cluster].isna().any():
        return data, 0, ""
    unlabelled = int(data[cluster].isna().sum())
    warnings.warn(f"dropped {unlabelled} of {len(data)} rows without a cluster id (missing {cluster!r}): a row must "
                  "belong to a cluster.", UserWarning, stacklevel=5)
    return data[data[cluster].notna()], unlabelled, f"no {cluster!r}"


def _check_missing_fiml(data: pd.DataFrame, table: ParameterTable, counts: pd.Series) -> None:
    """Missing values that full information cannot use: a whole column, or a
    covariate (:class:`~bayes_msem.model.Model` brings covariates with missing
    values into the model first, see :func:`covariates_with_missing`; centered ones it cannot)."""
    for name, count in counts.items():
        if count == len(data):
            raise DataError(f"variable {name!r} is missing on every row; drop it from the model or check how the "
                            "file was read (missing-value codes: --na-values on the command line)")
    derived = table.derived
    for roles in table.levels:
        for covariate in roles.covariates:
            name, centered = (derived[covariate][0], True) if covariate in derived else (covariate, False)
            if name not in counts:
                continue
            how = (f"it is a predictor as {covariate!r} (a centered copy, or its raw values under a random "
                   "slope), whose missing values are not modelled yet" if centered else
                   "a covariate's missing values need it brought into the model (bm.Model does so by itself)")
            raise DataError(f"covariate {name!r} has {int(counts[name])} missing value(s): {how}. Pass "
                            f"missing='listwise' to drop those rows (the summary reports how many), or impute "
                            f"{name!r} first.")


def covariates_with_missing(table: ParameterTable, data: pd.DataFrame) -> dict[str, int]:
    """Exogenous covariates (not centered copies) with missing values in ``data``, and how many."""
    derived = table.derived
    names = [n for roles in table.levels for n in roles.covariates if n not in derived and n in data]
    counts = data[names].isna().sum()
    return {name: int(k) for name, k in counts.items() if k}


def _cluster_ranges(data: pd.DataFrame, names, cluster: str) -> pd.DataFrame:
    """Max minus min of each variable within each cluster (clusters x names)."""
    grouped = data.groupby(cluster, sort=False, observed=True)[list(names)]
    return grouped.max() - grouped.min()


def _check_between_constant(data: pd.DataFrame, names, cluster: str, level: int = 2) -> None:
    spread = _cluster_ranges(data, names, cluster)
    block = "between (level 2)" if level == 2 else f"level: {level}"
    for name in names:
        scale = max(float(data[name].abs().max()), 1.0)
        varying = spread.index[spread[name] > 1e-8 * scale]
        if len(varying):
            raise DataError(f"{name!r} is named only in the {block} block but varies within "
                            f"{len(varying)} unit(s) of {cluster!r}, e.g. {varying[0]!r}. A level-{level} variable "
                            f"must be constant within each unit of {cluster!r}: name it in a lower level's block too "
                            "(it is then split into parts by level), or aggregate it to one value per unit.")


# Below this many clusters a two-level fit gets a warning: the between level rests on a handful of values.
FEW_CLUSTERS = 10


def _check_cluster_sizes(sizes: np.ndarray, cluster: str) -> None:
    if sizes.max() == 1:
        raise DataError(f"every cluster of {cluster!r} has one row, so nothing varies within clusters. Check that "
                        f"{cluster!r} identifies clusters (not rows), or fit a single-level model.")
    if len(sizes) < FEW_CLUSTERS:
        warnings.warn(f"only {len(sizes)} clusters in {cluster!r}: between-level variances and effects rest on "
                      f"{len(sizes)} values and will lean on the priors. 30 or more clusters are preferable.",
                      UserWarning, stacklevel=5)


def _check_slopes_vary_within(table: ParameterTable, data: pd.DataFrame, cluster: str) -> None:
    """A random slope of a predictor that is constant within every cluster
    (a level-2 variable) has nothing to vary over."""
    rows = table.rows
    for row in rows[rows.random.notna() & (rows.level == 1)].itertuples():
        source = table.derived[row.rhs][0] if row.rhs in table.derived else row.rhs
        if source not in data.columns:
            continue
        if _cluster_ranges(data, [source], cluster)[source].max() == 0:
            raise DataError(f"line {row.line}: the random slope {row.random!r} of {source!r} ({row.text.strip()}) "
                            f"cannot vary over clusters: {source!r} is constant within every cluster, a level-2 "
                            "variable. Regress on it without a random slope, at the between level "
                            f"({row.lhs} ~ {source} in the level: 2 block).")


def _check_within_variation(data: pd.DataFrame, names, cluster: str) -> None:
    spread = _cluster_ranges(data, names, cluster).max()
    for name in names:
        if not spread[name] > 0:
            raise DataError(f"{name!r} is named at both levels but is constant within every cluster, so it has no "
                            "within part. Name it only in the between (level 2) block.")


# Rhemtulla, Brosseau-Liard & Savalei (2012): with five or more categories a normal model does well
FEW_VALUES = 4


def _warn_discrete_outcomes(data: pd.DataFrame, names) -> None:
    """Warn, naming the column, when a modelled outcome or indicator takes only
    a few integer values (0/1, a 3-point scale): it is modelled as normal."""
    for name in names:
        distinct = np.unique(data[name].dropna().to_numpy(dtype=float))
        few = len(distinct) <= FEW_VALUES and len(data) >= 10 * len(distinct)  # not merely a tiny data set
        if few and np.array_equal(distinct, np.round(distinct)):
            shown = ", ".join(f"{v:g}" for v in distinct)
            warnings.warn(f"{name!r} takes only {len(distinct)} integer values ({shown}) but is modelled as a "
                          f"continuous (normal) variable; declare it ordinal for a probit model (ordered=[{name!r}]), "
                          "or read its estimates as those of a linear probability or linear scale model.",
                          UserWarning, stacklevel=4)


def _add_centered_columns(table: ParameterTable, data: pd.DataFrame, cluster: str | None) -> pd.DataFrame:
    """Columns for centered predictors (``x.cwc``, ``x.cm``, ``m.raw``), computed
    after incomplete rows are dropped so that cluster means use the rows the model uses."""
    derived = table.derived
    if not derived:
        return data
    columns = {}
    for name, (source, suffix) in derived.items():
        values = data[source].astype(float)
        means = values.groupby(data[cluster], observed=True).transform("mean") if cluster else values.mean()
        columns[name] = {".raw": values, ".cm": means, ".cwc": values - means}[suffix]
    return data.assign(**columns)


def cluster_columns(cluster, n_levels: int) -> tuple[str, ...]:
    """The cluster columns from ``cluster=`` as given (a column name, or a list
    of them from level 2 upwards), checked against the model's number of levels."""
    columns = tuple(cluster) if isinstance(cluster, list | tuple) else (() if cluster is None else (cluster,))
    if n_levels > 1 and not columns:
        raise DataError(f"the model has {n_levels} level blocks, so it needs cluster= naming the column that "
                        "identifies clusters" + (" (level 2), then the one of level 3, as in "
                                                 "cluster=['class', 'school']" if n_levels > 2 else ""))
    if n_levels == 1 and columns:
        raise DataError(f"cluster={cluster!r} was given but the model has no level blocks. Write the model with "
                        "`level: 1` and `level: 2` blocks for a two-level model, or drop cluster=.")
    if len(columns) != max(n_levels - 1, 0):
        shown = ", ".join(repr(c) for c in columns)
        raise DataError(f"cluster=[{shown}] names {len(columns)} column(s), one per level above the rows, but the "
                        f"model has {n_levels} level blocks: give {n_levels - 1} column(s), from level 2 upwards "
                        "(or both classifications of a cross-classified model), or write a block per level.")
    return columns


def cluster_column(cluster) -> str | None:
    """The column naming level 2's units, from ``cluster=`` as given (a name or a list of names)."""
    if isinstance(cluster, list | tuple):
        return cluster[0] if cluster else None
    return cluster


def _crossing(data: pd.DataFrame, inner: str, outer: str) -> str | None:
    """None where every unit of ``inner`` lies within one unit of ``outer``;
    else the announcement of a cross-classified model, naming a unit that
    crosses and what to do where the ids restart in every unit of ``outer``."""
    counts = data.groupby(inner, sort=False, observed=True)[outer].nunique()
    broken = counts.index[counts > 1]
    if not len(broken):
        return None
    unit = broken[0]
    where = sorted(map(str, data.loc[data[inner] == unit, outer].unique()))[:3]
    return (f"{inner!r} is not nested in {outer!r}: {len(broken)} unit(s) of {inner!r} appear in several units of "
            f"{outer!r}, e.g. {unit!r} in {', '.join(repr(w) for w in where)}, so the model is fitted as "
            f"cross-classified ({inner} x {outer}). If {inner} ids restart in every {outer}, make them unique "
            f"instead, e.g. df[{inner!r}] = df[{outer!r}].astype(str) + '/' + df[{inner!r}].astype(str).")


def _level_three(table: ParameterTable, data: pd.DataFrame, cluster: str, column: str,
                 cluster_index: np.ndarray) -> UnitLevel:
    """Level 3 of a three-level model: the unit of ``column`` each cluster of
    ``cluster`` sits in and the units' covariates; or, where the clusters are
    not nested in those units, the second classification of a cross-classified
    model (announced in a warning)."""
    crossing = _crossing(data, cluster, column)
    codes, labels = _cluster_codes(data[column], column)
    sizes = np.bincount(np.unique(np.stack([codes, cluster_index]), axis=1)[0], minlength=len(labels))
    if len(labels) < FEW_CLUSTERS:
        warnings.warn(f"only {len(labels)} units in {column!r}: level-3 variances and effects rest on "
                      f"{len(labels)} values and will lean on the priors.", UserWarning, stacklevel=5)
    covariates = table.level_roles(3).covariates
    outcomes = tuple(n for n in table.level_roles(3).observed if n not in table.split_at(3))
    first = np.unique(codes, return_index=True)[1]
    covariate_values = data.iloc[first][list(covariates)].to_numpy(dtype=float).reshape(len(first), -1)
    if crossing:
        warnings.warn(crossing, UserWarning, stacklevel=5)
        _check_between_constant(data, covariates + outcomes, column, level=3)
        return UnitLevel(column=column, parent_index=None, labels=np.asarray(labels), covariates=covariate_values,
                         row_index=codes, outcomes=_unit_outcomes(data, outcomes, codes, len(labels), column))
    if sizes.max() == 1:
        raise DataError(f"every unit of {column!r} holds one unit of {cluster!r}, so level 2 and level 3 cannot be "
                        f"told apart. Check the columns, or fit a two-level model with cluster={column!r}.")
    _check_between_constant(data, covariates + outcomes, column, level=3)
    parent_index = np.zeros(int(cluster_index.max()) + 1, dtype=int)
    parent_index[cluster_index] = codes
    return UnitLevel(column=column, parent_index=parent_index, labels=np.asarray(labels), covariates=covariate_values,
                     row_index=codes, outcomes=_unit_outcomes(data, outcomes, codes, len(labels), column))


def _unit_outcomes(data: pd.DataFrame, outcomes: tuple[str, ...], codes: np.ndarray, n_units: int,
                   column: str) -> np.ndarray:
    """The level-3 (or second classification's) outcomes, one row per unit:
    a unit's value given on some of its rows (missing on others) holds for
    the unit; a unit with none is an error naming the variable."""
    values = data[list(outcomes)].groupby(codes).first().to_numpy(dtype=float).reshape(n_units, -1)
    if np.isnan(values).any():
        name = outcomes[int(np.flatnonzero(np.isnan(values).any(axis=0))[0])]
        raise DataError(f"{name!r}, observed only at the level of {column!r}, is missing for "
                        f"{int(np.isnan(values).sum())} unit(s) of {column!r}: level-3 outcomes must be complete "
                        "so far. Drop those units' rows, or fill the values in.")
    return values


def prepare_data(table: ParameterTable, data: pd.DataFrame, cluster: str | list[str] | None = None,
                 missing: str = "fiml") -> ClusterData:
    """Check ``data`` against the model and build the engine's arrays.

    Parameters
    ----------
    table
        The parameter table (gives the variable roles).
    data
        One row per observation; level-2 variables repeated within clusters.
    cluster
        Name of the cluster column; required for a two-level model. A
        three-level model takes a list, from level 2 upwards (``["class", "school"]``).
    missing
        ``"fiml"`` (default; ``"ml"`` too): keep missing values of modelled
        variables; ``"listwise"``: drop incomplete rows; ``"error"``: stop.

    Raises
    ------
    DataError
        With the variable, the problem and the fix.
    """
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"data must be a pandas DataFrame, not {type(data).__name__}")
    if table.two_level and cluster is None:
        raise DataError("the model has level: 1 and level: 2 blocks, so it needs cluster='<column>' naming "
                        "the column that identifies clusters")
    clusters = cluster_columns(cluster, table.n_levels)
    for column in clusters:
        if column not in data.columns:
            raise DataError(f"cluster column {column!r} is not in the data.{_closest(column, data.columns)}")
    cluster = clusters[0] if clusters else None
    _check_columns(table, data, clusters)
    if len(clusters) > 1 and data[list(clusters)].isna().any().any():
        raise DataError(f"some rows have no unit id in {', '.join(map(repr, clusters))}: in a three-level model "
                        "every row must name its units at every level. Fill in the ids or drop those rows.")
    data, n_dropped, dropped_reason = _handle_missing(data, table, cluster, missing)
    row_labels = data.index.to_numpy() if pd.api.types.is_integer_dtype(data.index) else data.index.astype(str).to_numpy()
    data = data.reset_index(drop=True)  # row positions are the only index used from here on
    if len(data) == 0:
        raise DataError("no rows left in the data")
    data = _add_centered_columns(table, data, cluster)
    for name in table.observed_variables:
        if float(np.nanmax(data[name]) - np.nanmin(data[name])) == 0.0:
            what = f" ({DERIVED_SUFFIXES[table.derived[name][1]]} of {table.derived[name][0]})" if name in table.derived else ""
            raise DataError(f"variable {name!r}{what} has zero variance (every value is {float(data[name].dropna().iloc[0]):g}); "
                            "drop it from the model")
    if cluster is None:
        cluster_index = np.zeros(len(data), dtype=int)
        cluster_labels = np.array(["all"], dtype=object)
    else:
        cluster_index, cluster_labels = _cluster_codes(data[cluster], cluster)
        _check_cluster_sizes(np.bincount(cluster_index), cluster)
        _check_slopes_vary_within(table, data, cluster)
    # nesting first: a class id repeated in several schools would otherwise read as a varying level-2 value
    upper_levels = tuple(_level_three(table, data, cluster, column, cluster_index) for column in clusters[1:])
    within = table.levels[0]
    _warn_discrete_outcomes(data, [n for n in within.observed + table.between_outcomes
                                   if n not in table.derived and n not in table.ordinal])
    between_only_observed: tuple[str, ...] = ()
    between_covariates: tuple[str, ...] = ()
    if table.n_levels > 1:
        between = table.level_roles(2)
        between_only_observed = table.between_outcomes
        between_covariates = between.covariates
        _check_between_constant(data, between_only_observed + between_covariates, cluster)
        if table.both_level:
            _check_within_variation(data, table.both_level, cluster)
    # Row k of every level-2 array belongs to cluster code k, whatever the order of the rows:
    # the first row of each cluster, in code order (np.unique sorts the codes).
    cluster_rows = data.iloc[np.unique(cluster_index, return_index=True)[1]]
    if between_only_observed:  # a level-2 outcome given on some rows of a cluster (missing on others) holds for all
        observed = data[list(between_only_observed)].groupby(cluster_index).first()
        cluster_rows = cluster_rows.assign(**{name: observed[name].to_numpy() for name in between_only_observed})
    as_array = lambda frame, names: frame[list(names)].to_numpy(dtype=float).reshape(len(frame), len(names))  # noqa: E731
    result = ClusterData(
        within_outcomes=as_array(data, within.observed),
        within_covariates=as_array(data, within.covariates),
        cluster_index=cluster_index,
        cluster_labels=np.asarray(cluster_labels),
        between_outcomes=as_array(cluster_rows, between_only_observed),
        between_covariates=as_array(cluster_rows, between_covariates),
        variable_means={n: float(data[n].mean()) for n in table.observed_variables},
        variable_sds={n: float(data[n].std()) for n in table.observed_variables},
        n_dropped=n_dropped,
        dropped_reason=dropped_reason,
        row_labels=row_labels,
        upper_levels=upper_levels,
    )
    object.__setattr__(result, "stats", within_cross_products(result))
    return result


def within_cross_products(data: ClusterData, index: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Cross-products of the level-1 data, computed once.

    With Y the outcomes, X the covariates and Z the row-to-cluster indicator,
    these are Y'Y, Y'X, X'X, Z'Y and Z'X: enough to evaluate the within-level
    normal likelihood for any cluster means and regression weights in
    O(clusters * p^2) instead of O(rows * p^2). ``index`` (rows,) groups the
    rows otherwise than by cluster (a cross-classified model's cells).
    """
    y, x = data.within_outcomes, data.within_covariates
    index = data.cluster_index if index is None else index
    clusters = int(index.max()) + 1
    sum_y = np.zeros((clusters, y.shape[1]))
    np.add.at(sum_y, index, y)
    sum_x = np.zeros((clusters, x.shape[1]))
    np.add.at(sum_x, index, x)
    return {"yy": y.T @ y, "yx": y.T @ x, "xx": x.T @ x, "sum_y": sum_y, "sum_x": sum_x,
            "n": np.bincount(index, minlength=clusters).astype(float)}


def cluster_cross_products(data: ClusterData, index: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-cluster cross-products Y_j'Y_j, Y_j'X_j, X_j'X_j (clusters, ., .): what a
    likelihood with cluster-specific slopes needs, still without touching rows.
    ``index`` (rows,) groups the rows otherwise than by cluster (a
    cross-classified model's cells)."""
    y, x = data.within_outcomes, data.within_covariates
    index = data.cluster_index if index is None else index
    clusters = int(index.max()) + 1
    out = {}
    for name, a, b in (("yy", y, y), ("yx", y, x), ("xx", x, x)):
        total = np.zeros((clusters, a.shape[1], b.shape[1]))
        np.add.at(total, index, a[:, :, None] * b[:, None, :])
        out[name] = total
    return out


def missing_pattern_statistics(data: ClusterData, groups: np.ndarray | None = None,
                               effect_columns: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """What the observed-data likelihood needs of data with missing values
    (:mod:`bayes_msem.engines.missing`), computed once.

    Rows are grouped by missing-data pattern (which level-1 outcomes are
    observed; ``patterns``, masks (G, p) of 0/1, and each row's ``row_pattern``)
    and by unit (``groups``, default the clusters). Per pattern: the
    cross-products ``yy``, ``yx``, ``xx`` of its rows (missing values count as
    0). Per unit and pattern: ``n`` (rows; units x G), the sums ``sum_y``
    (units, G, p) and ``sum_x``. Level-2 outcomes: ``z`` (missing set to 0)
    and ``z_observed`` (clusters, p_z) masks.

    With ``effect_columns`` (the entry of x~ = (1, x) each random effect
    multiplies; the layout's ``random_effect_columns``), also per unit and
    pattern the cross-products with each distinct such entry c (sorted):
    ``x_effects`` = sum x~ x~[c] (units, G, q+1, C) and ``y_effects`` = sum y
    x~[c] (units, G, p, C), which a random slope needs as its rows differ in x.
    """
    y, x = data.within_outcomes, data.within_covariates
    groups = data.cluster_index if groups is None else np.asarray(groups)
    units = int(groups.max()) + 1
    observed = ~np.isnan(y)
    y = np.where(observed, y, 0.0)
    patterns, row_pattern = np.unique(observed, axis=0, return_inverse=True)
    row_pattern = row_pattern.reshape(-1)

    def by_pattern(values: np.ndarray) -> np.ndarray:
        total = np.zeros((len(patterns),) + values.shape[1:])
        np.add.at(total, row_pattern, values)
        return total

    def by_unit(values: np.ndarray) -> np.ndarray:
        total = np.zeros((units, len(patterns)) + values.shape[1:])
        np.add.at(total, (groups, row_pattern), values)
        return total

    z_observed = ~np.isnan(data.between_outcomes)
    stats = {
        "patterns": patterns.astype(float), "row_pattern": row_pattern, "y": y, "x": x, "groups": groups,
        "yy": by_pattern(y[:, :, None] * y[:, None, :]), "yx": by_pattern(y[:, :, None] * x[:, None, :]),
        "xx": by_pattern(x[:, :, None] * x[:, None, :]),
        "n": by_unit(np.ones(len(y))), "sum_y": by_unit(y), "sum_x": by_unit(x),
        "z": np.where(z_observed, data.between_outcomes, 0.0), "z_observed": z_observed.astype(float),
    }
    if effect_columns is not None:
        x_tilde = np.concatenate([np.ones((len(x), 1)), x], axis=1)
        picked = x_tilde[:, np.unique(np.asarray(effect_columns, dtype=int))]
        stats["x_effects"] = by_unit(x_tilde[:, :, None] * picked[:, None, :])
        stats["y_effects"] = by_unit(y[:, :, None] * picked[:, None, :])
    return stats


def describe_missing(data: ClusterData, within_names, between_names) -> dict | None:
    """What the summary says about missing values (None when there are none):
    the count per variable (rows for level-1 outcomes, clusters for level-2
    ones), the incomplete rows, the missing-data patterns, the rows with no
    observed outcome (kept: they add nothing but their cluster's level-2 values),
    per level-1 outcome the clusters where it is never observed (``clusters_without``)
    and the covariance coverage of the level-1 outcomes (the share of rows
    where both of a pair are observed, lavaan's ``lavInspect(fit, "coverage")``)."""
    if not data.has_missing:
        return None
    y_missing, z_missing = np.isnan(data.within_outcomes), np.isnan(data.between_outcomes)
    counts = {name: int(k) for name, k in zip(list(within_names) + list(between_names),
                                              np.concatenate([y_missing.sum(0), z_missing.sum(0)])) if k}
    observed = (~y_missing).astype(float)
    coverage = observed.T @ observed / len(observed)  # share of rows where both are observed (lavaan's "coverage")
    seen_in_cluster = np.zeros((data.n_clusters, len(within_names)))
    np.add.at(seen_in_cluster, data.cluster_index, observed)
    unobserved = {name: int(k) for name, k in zip(within_names, (seen_in_cluster == 0).sum(0)) if k}
    return {"counts": counts, "incomplete_rows": int(y_missing.any(axis=1).sum()),
            "patterns": len(np.unique(y_missing, axis=0)), "empty_rows": int(y_missing.all(axis=1).sum()),
            "incomplete_clusters": int(z_missing.any(axis=1).sum()),
            "clusters_without": unobserved if data.n_clusters > 1 else {},
            "coverage": {a: {b: float(coverage[i, k]) for k, b in enumerate(within_names)}
                         for i, a in enumerate(within_names)}}


def covariate_moments(table: ParameterTable, data: ClusterData) -> dict[tuple[int, str, str, str], float]:
    """Sample means and (ML) covariances of exogenous covariates: the values of
    lavaan's fixed.x rows. Level-1 covariates use all rows, level-2 covariates
    one value per cluster."""
    values = {}
    for roles in table.levels:
        array = ({2: data.between_covariates} | {3 + k: unit.covariates for k, unit in enumerate(data.upper_levels)}
                 ).get(roles.level, data.within_covariates)
        if not roles.covariates:
            continue
        means = array.mean(axis=0)
        cov = np.atleast_2d(np.cov(array.T, bias=True))
        for i, a in enumerate(roles.covariates):
            values[(roles.level, a, "~1", "")] = float(means[i])
            for j, b in enumerate(roles.covariates):
                values[(roles.level, a, "~~", b)] = float(cov[i, j])
    return values


def cluster_mean_statistics(data: ClusterData) -> dict[str, np.ndarray]:
    """Statistics for integrating cluster effects out (the collapsed engine):
    cluster means of outcomes and covariates, pooled within-cluster
    cross-products of the cluster-centred data, and the clusters grouped by
    size (the between part of the likelihood depends on a cluster only through
    its size and means; lavaan groups clusters the same way)."""
    stats = data.stats
    n = stats["n"]
    mean_y = stats["sum_y"] / n[:, None]
    mean_x = stats["sum_x"] / n[:, None]
    sizes, size_index = np.unique(data.cluster_sizes, return_inverse=True)
    return {
        "mean_y": mean_y, "mean_x": mean_x,
        # centred cross-products: Y'Y - sum_j n_j ybar_j ybar_j' etc.
        "yy_within": stats["yy"] - stats["sum_y"].T @ mean_y,
        "yx_within": stats["yx"] - stats["sum_y"].T @ mean_x,
        "xx_within": stats["xx"] - stats["sum_x"].T @ mean_x,
        "sizes": sizes.astype(float), "size_index": size_index,
        "clusters_per_size": np.bincount(size_index).astype(float),
    }
