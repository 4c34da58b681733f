"""Simulate data from a model with known parameter values, through the same
:func:`~bayes_msem.matrices.level_moments` the engines use. For recovery tests
and simulation studies.

Example
-------
>>> data = simulate_data("level: 1\\n y ~ x\\nlevel: 2\\n y ~~ y", {"y~x|within": 0.5},
...                      n_clusters=5, cluster_size=4, seed=1)
>>> data.shape
(20, 3)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayes_msem.layout import LevelLayout, ModelLayout, build_layout
from bayes_msem.matrices import level_moments, psd_root
from bayes_msem.partable import build_partable, parameter_key
from bayes_msem.syntax import cluster_names, parse_model

__all__ = ["simulate_data", "draw_outcomes", "true_values", "impose_missing", "DEFAULT_VALUES", "categorize",
           "categorize_outcomes", "simulation_table"]

# values of free parameters the caller does not give
DEFAULT_VALUES = {"loading": 1.0, "regression": 0.0, "intercept": 0.0, "variance": 1.0, "covariance": 0.0}


def _free_values(table, values: dict[str, float]) -> np.ndarray:
    free = table.free_rows()
    names = [_row_name(table, r) for r in free.itertuples()]
    unknown = set(values) - set(names)
    if unknown:
        raise ValueError(f"no free parameter named {sorted(unknown)}; names look like {names[:3]}")
    missing = [name for name, kind in zip(names, free.kind) if kind not in DEFAULT_VALUES and name not in values]
    if missing:
        raise ValueError(f"give the value of {', '.join(missing)} (thresholds have no default)")
    return np.array([values.get(name, DEFAULT_VALUES.get(kind)) for name, kind in zip(names, free.kind)])


def _row_name(table, row) -> str:
    return parameter_key(row.lhs, row.op, row.rhs, table.level_name(row.level))


def simulation_table(syntax: str, values: dict[str, float], ordered=None, cluster=None):
    """The parameter table to simulate from. An ordinal variable has as many
    categories as it has thresholds, given in ``values`` (``"u|t1"``,
    ``"u|t2"``, ...) or as threshold lines in ``syntax``. ``cluster``: the
    cluster column(s), which name a three-level model's levels."""
    ordered = [ordered] if isinstance(ordered, str) else list(ordered or [])
    counts = {}
    for name in ordered:
        given = [k for k in values if k.startswith(f"{name}|t")]
        written = [r for r in parse_model(syntax).rows if r.op == "|" and r.lhs == name]
        n = len(given) or len(written)
        if n == 0:
            raise ValueError(f"ordinal {name!r} needs its thresholds: give them in values as "
                             f"{{'{name}|t1': -0.5, '{name}|t2': 0.5}} (as many as categories minus one)")
        counts[name] = n + 1
    return build_partable(syntax, ordered=counts, cluster=cluster)


def categorize(latent: np.ndarray, table, theta: np.ndarray, observed: tuple[str, ...]) -> np.ndarray:
    """Cut the latent responses of the ordinal variables among the columns
    ``observed`` of ``latent`` (rows, p) at their thresholds: categories
    0..K-1; the continuous columns pass through unchanged."""
    from bayes_msem.matrices import parameter_values

    rows = table.rows
    row_values = parameter_values(rows, theta)
    out = latent.copy()
    for name in (n for n in table.ordinal if n in observed):
        mine = rows[(rows.op == "|") & (rows.lhs == name)]
        cuts = np.sort(row_values[mine.index.to_numpy()])
        k = observed.index(name)
        out[:, k] = (latent[:, k, None] > cuts[None, :]).sum(axis=1)
    return out


def categorize_outcomes(y: np.ndarray, z: np.ndarray, table, layout: ModelLayout, theta: np.ndarray):
    """:func:`categorize` the level-1 outcomes ``y`` (rows, p) and the level-2
    outcomes ``z`` (clusters, p_z) that :func:`draw_outcomes` drew."""
    y = categorize(y, table, theta, layout.rows.structure.observed)
    if layout.multilevel:
        z = categorize(z, table, theta, layout.levels[1].outcomes)
    return y, z


def true_values(syntax: str, values: dict[str, float], ordered=None, cluster=None) -> dict[str, float]:
    """The value of every parameter of the model that :func:`simulate_data`
    simulates from (free ones from ``values`` or :data:`DEFAULT_VALUES`, fixed
    ones at their fixed value) and of its ``:=`` definitions, keyed by the
    posterior's names (``"fb=~y2|between"``, ``"indirect"``). Exogenous covariates
    are standard normal: their rows are left out, as their values come from the data."""
    from bayes_msem.defined import evaluate_definitions
    from bayes_msem.matrices import parameter_values

    table = simulation_table(syntax, values, ordered, cluster)
    rows = table.rows
    row_values = parameter_values(rows, _free_values(table, values))
    modelled = rows[(rows.op != ":=") & ~rows.exo & rows.random.isna()]  # a random slope's rows: its own variable
    truth = {_row_name(table, row): float(row_values[i]) for i, row in modelled.iterrows()}
    defined = rows[rows.op == ":="]
    labels = {row.label: row_values[i] for i, row in modelled.iterrows() if isinstance(row.label, str) and row.label}
    truth.update({name: float(v) for name, v in
                  evaluate_definitions(list(zip(defined.lhs, defined.rhs)), labels).items()})
    return truth


def _draw(rng, mean: np.ndarray, cov: np.ndarray, size: int) -> np.ndarray:
    """Normal draws that allow singular covariances (zero variances)."""
    return mean + rng.standard_normal((size, len(cov))) @ psd_root(cov).T


def simulate_data(syntax: str, values: dict[str, float], *, n_clusters: int = 1, cluster_size=100,
                  seed: int | None = None, cluster: str | list[str] = "cluster", missing: dict | None = None,
                  ordered=None, n_units: int | None = None, crossed: bool = False) -> pd.DataFrame:
    """Simulate a data set from ``syntax`` with free parameters set by ``values``.

    A model with three level blocks takes ``cluster=["class", "school"]`` and
    ``n_units`` level-3 units: the ``n_clusters`` clusters are spread evenly
    over them (nested), or with ``crossed=True`` every row meets a unit drawn
    at random (a cross-classified design); level-3 covariates are constant
    within units.

    ``cluster_size`` is one size for every cluster or a sequence of
    ``n_clusters`` sizes (unequal clusters). ``missing`` imposes missing
    values afterwards: the keyword arguments of :func:`impose_missing`, e.g.
    ``{"rate": 0.2, "mechanism": "MAR"}``; by default the level-1 outcomes go missing.

    ``values`` is keyed by the names the posterior uses (``"fb=~y2|between"``,
    ``"y~x"`` in single-level models); others take :data:`DEFAULT_VALUES`.
    Exogenous covariates are standard normal (level-2 ones constant within
    clusters). A single-level model ignores ``n_clusters`` and has no cluster column.

    ``ordered`` names ordinal variables: their latent responses (residual
    variance 1 at their lowest level: level 1, or level 2 for a level-2-only
    variable) are cut at the thresholds given in ``values`` (``"u|t1"``, ...),
    giving categories 0..K-1.
    """
    rng = np.random.default_rng(seed)
    columns_of_units = cluster_names(cluster)
    table = simulation_table(syntax, values, ordered, cluster)
    theta = _free_values(table, values)
    layout = build_layout(table, cluster=list(columns_of_units))
    within = layout.rows.structure
    between = layout.levels[1].structure if layout.multilevel else None
    n_clusters = n_clusters if layout.multilevel else 1
    cluster_index = np.repeat(np.arange(n_clusters), cluster_size)
    w = rng.standard_normal((n_clusters, len(between.covariates) if between else 0))
    x = rng.standard_normal((len(cluster_index), len(within.covariates)))
    upper = _upper_units(rng, layout, columns_of_units, n_units, crossed, cluster_index) if len(layout.levels) > 2 else None
    y, z, unit_outcomes = draw_outcomes(rng, theta, layout, x, w, cluster_index, upper)
    y, z = categorize_outcomes(y, z, table, layout, theta)
    columns: dict[str, np.ndarray] = {}
    if upper is not None:
        unit_rows, v = upper
        columns[columns_of_units[1]] = unit_rows + 1
        columns.update({name: v[unit_rows, k] for k, name in enumerate(layout.levels[2].structure.covariates)})
        columns.update({name: unit_outcomes[unit_rows, k] for k, name in enumerate(layout.levels[2].outcomes)})
    if between:
        columns.update({name: w[cluster_index, k] for k, name in enumerate(between.covariates)})
        columns.update({name: z[cluster_index, k] for k, name in enumerate(layout.levels[1].outcomes)})
    columns.update({name: y[:, k] for k, name in enumerate(within.observed)})
    columns.update({name: x[:, k] for k, name in enumerate(within.covariates)})
    frame = pd.DataFrame(columns)
    if layout.multilevel:
        frame.insert(0, columns_of_units[0], cluster_index + 1)
    if missing:
        defaults = {"variables": list(within.observed),
                    "depends_on": within.covariates[0] if within.covariates else None}
        frame = impose_missing(frame, **{**defaults, **missing}, seed=int(rng.integers(2**32)))
    return frame


MISSING_MECHANISMS = ("MCAR", "MAR")


def impose_missing(data: pd.DataFrame, variables: list[str], rate: float, mechanism: str = "MCAR",
                   depends_on: str | None = None, strength: float = 1.5, seed: int | None = None) -> pd.DataFrame:
    """A copy of ``data`` with values of ``variables`` set missing, each with
    probability ``rate`` on average.

    ``"MCAR"``: independently of everything. ``"MAR"``: with probability
    logistic(a + strength * z), z the standardized ``depends_on`` (a column
    that stays complete: a covariate, or an outcome not among ``variables``),
    a chosen so that the average probability is ``rate``. Missingness then
    depends on observed values only, which full information handles and
    listwise deletion does not. (In :func:`simulate_data` ``depends_on``
    defaults to the first level-1 covariate.)

    >>> import pandas as pd
    >>> data = pd.DataFrame({"y": range(1000), "x": range(1000)}).astype(float)
    >>> holes = impose_missing(data, ["y"], 0.3, "MAR", depends_on="x", seed=1)
    >>> print(round(holes.y.isna().mean(), 1), bool(holes.y[holes.x > 500].isna().mean() > 0.4))
    0.3 True
    """
    if mechanism not in MISSING_MECHANISMS:
        raise ValueError(f"mechanism={mechanism!r}: use one of {MISSING_MECHANISMS}")
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"rate={rate} must be in [0, 1)")
    rng = np.random.default_rng(seed)
    out = data.copy()
    if mechanism == "MCAR":
        for name in variables:
            out.loc[rng.uniform(size=len(out)) < rate, name] = np.nan
        return out
    if depends_on is None or depends_on in variables or depends_on not in data:
        raise ValueError("mechanism='MAR' needs depends_on=<a column that stays complete>, not among the variables "
                         f"made missing ({', '.join(variables)})")
    driver = data[depends_on].to_numpy(dtype=float)
    z = strength * (driver - driver.mean()) / driver.std()
    offset = _logit_offset(z, rate)
    for name in variables:
        out.loc[rng.uniform(size=len(out)) < 1.0 / (1.0 + np.exp(-(offset + z))), name] = np.nan
    return out


def _logit_offset(z: np.ndarray, rate: float) -> float:
    """a such that the mean of logistic(a + z) is ``rate`` (bisection)."""
    low, high = -50.0, 50.0
    for _ in range(100):
        middle = 0.5 * (low + high)
        if np.mean(1.0 / (1.0 + np.exp(-(middle + z)))) < rate:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def _upper_units(rng, layout: ModelLayout, columns: tuple[str, ...], n_units: int | None, crossed: bool,
                 cluster_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's level-3 unit and the units' covariates (standard normal), for
    :func:`simulate_data`: clusters spread evenly over the units, or units drawn
    per row where ``crossed``."""
    if len(columns) != 2 or not n_units or n_units < 2:
        raise ValueError("a three-level model simulates with cluster=['<level 2 column>', '<level 3 column>'] and "
                         "n_units=<number of level-3 units> (2 or more)")
    n_clusters = int(cluster_index.max()) + 1
    if crossed:
        unit_rows = rng.integers(0, n_units, size=len(cluster_index))
    else:
        if n_clusters < n_units:
            raise ValueError(f"n_clusters={n_clusters} cannot fill n_units={n_units} units: give at least one "
                             "cluster per unit")
        unit_rows = (np.arange(n_clusters) * n_units // n_clusters)[cluster_index]
    return unit_rows, rng.standard_normal((n_units, len(layout.levels[2].structure.covariates)))


def _cluster_slope_parts(top: LevelLayout, unit_nodes: np.ndarray, clusters: LevelLayout,
                         unit_of_cluster: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Each cluster's share of its level-3 unit's slope parts: what they add to
    the cluster's slopes of the rows (clusters, row slopes), and the cluster's
    own slopes on its covariates (clusters, level-2 slopes; None without them):
    the unit's part of a slope is the same for every cluster in it."""
    parts = unit_nodes[:, top.placement.split_at][unit_of_cluster]
    row_slopes = (parts @ top.lift.T)[:, len(clusters.split):]  # the random effects after the split parts
    own = [int(np.flatnonzero(top.lifted_slopes == k)[0]) for k in range(len(clusters.structure.slopes))]
    return row_slopes, (parts[:, own] if own else None)


def _unit_of_cluster(unit_rows: np.ndarray, cluster_index: np.ndarray, n_clusters: int) -> np.ndarray | None:
    """Each cluster's level-3 unit, or None where some cluster's rows lie in
    more than one unit (a cross-classified design)."""
    unit_of_cluster = np.zeros(n_clusters, dtype=int)
    unit_of_cluster[cluster_index] = unit_rows
    return unit_of_cluster if np.all(unit_of_cluster[cluster_index] == unit_rows) else None


def _crossed_slope_move(theta: np.ndarray, layout: ModelLayout, row_nodes: np.ndarray, x: np.ndarray) -> np.ndarray:
    """What the second classification's parts of the rows' slopes add to each
    row of a cross-classified design (rows, p): part x covariate on the node the
    slope sits on, through the rows' (I - A)^-1 (``row_nodes``: each row's
    unit's nodes)."""
    top, clusters = layout.levels[2], layout.levels[1]
    if (top.lifted_slopes >= 0).any():
        raise ValueError("a slope of a first-classification covariate over the second classification is not "
                         "simulated in a crossed design")
    total = level_moments(theta, layout.rows.structure).total
    p = layout.rows.structure.n_observed
    move = np.zeros((len(x), p))
    for k, name in enumerate(layout.rows.structure.slopes):
        if name in top.slope_parts:
            part = row_nodes[:, top.nodes.index(name)] * x[:, clusters.slope_covariates[k]]
            move += part[:, None] * total[:p, clusters.slope_outcomes[k]][None]
    return move


def draw_outcomes(rng: np.random.Generator, theta: np.ndarray, layout: ModelLayout, x: np.ndarray, w: np.ndarray,
                  cluster_index: np.ndarray, upper: tuple[np.ndarray, np.ndarray] | None = None,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Level-1 outcomes (rows, p), level-2 outcomes (clusters, p_z) and
    level-3 outcomes (level-3 units, p_v; no columns without a level 3) of
    the model at free parameters ``theta``, given the covariates ``x`` (rows)
    and ``w`` (clusters).
    Each cluster's between variables, random slopes included, are drawn first;
    the rows follow from the within level's moments at the cluster's slopes.
    In a model of three levels ``upper`` gives each row's level-3 unit and the
    units' covariates; each unit's parts are added to its rows.
    Used by :func:`simulate_data`, the posterior predictive checks and prior
    predictive sampling."""
    within = layout.rows.structure
    between = layout.levels[1].structure if layout.multilevel else None
    b_b, z_b, place = layout.placement
    n_clusters = w.shape[0]
    top_part, top_slopes, cluster_slopes, unit_outcomes, top_outcome_part = 0.0, 0.0, None, np.zeros((0, 0)), 0.0
    if upper is not None:  # each level-3 unit's parts, added to its rows (and a slope's to its clusters' slopes)
        unit_rows, v = upper
        top = layout.levels[2]
        moments = level_moments(theta, top.structure)
        nodes = (moments.alpha[None, :] + v @ moments.A_x.T
                 + _draw(rng, np.zeros(len(top.nodes)), moments.S, len(v))) @ moments.total.T
        top_part = (nodes[:, top.placement.split_at] @ top.placement.place.T)[unit_rows]
        unit_outcomes = nodes[:, top.placement.outcomes_at]
        unit_of_cluster = _unit_of_cluster(unit_rows, cluster_index, n_clusters)
        if top.outcome_place.any():  # a level-2 outcome's part at level 3: the same for every cluster in the unit
            if unit_of_cluster is None:
                raise ValueError("a level-2 outcome with a part at level 3 needs clusters nested in level-3 units")
            top_outcome_part = (nodes[:, top.placement.split_at] @ top.outcome_place.T)[unit_of_cluster]
        if top.slope_parts and unit_of_cluster is not None:
            top_slopes, cluster_slopes = _cluster_slope_parts(top, nodes, layout.levels[1], unit_of_cluster)
        elif top.slope_parts:  # crossed: a row's slope adds its unit's part, row by row
            top_part = top_part + _crossed_slope_move(theta, layout, nodes[unit_rows], x)
    cluster_part = np.zeros((n_clusters, place.shape[0]))
    z = np.zeros((n_clusters, len(z_b)))
    slope_values = None
    if between is not None:
        moments = level_moments(theta, between, slope_values=cluster_slopes)  # A_x per cluster with such slopes
        zeta = _draw(rng, np.zeros(len(between.nodes)), moments.S, n_clusters)
        covariate_part = w @ moments.A_x.T if cluster_slopes is None else np.einsum("jnq,jq->jn", moments.A_x, w)
        nodes = (moments.alpha[None, :] + covariate_part + zeta) @ moments.total.T
        observed = nodes[:, : between.n_observed]
        cluster_part, z = observed[:, b_b] @ place.T, observed[:, z_b] + top_outcome_part
        if within.slopes:
            slope_values = nodes[:, [between.nodes.index(s) for s in within.slopes]] + top_slopes
    moments = level_moments(theta, within, slope_values=slope_values)
    if slope_values is None:
        rows = _draw(rng, moments.mean[None, :] + x @ moments.Pi.T, moments.Sigma, len(cluster_index))
        return rows + cluster_part[cluster_index] + top_part, z, unit_outcomes
    # each cluster has its own regression weights (and, for slopes on modelled variables, covariance)
    cluster_mean = np.broadcast_to(moments.mean, (n_clusters, moments.mean.shape[-1]))
    cluster_Pi = np.broadcast_to(moments.Pi, (n_clusters,) + moments.Pi.shape[-2:])
    mean = cluster_mean[cluster_index] + np.einsum("ipq,iq->ip", cluster_Pi[cluster_index], x)
    root = psd_root(moments.Sigma)  # one per cluster where a slope sits on a modelled variable
    root = root[cluster_index] if root.ndim == 3 else root[None]
    noise = np.einsum("ipk,ik->ip", root, rng.standard_normal((len(cluster_index), root.shape[-1])))
    return mean + noise + cluster_part[cluster_index] + top_part, z, unit_outcomes
