"""Model spec: the parameter table completed with the data (fixed covariate
moments, a resolved prior for every free parameter), the checked data and the
matrix layout. This is what an engine builds from.

Example
-------
>>> import pandas as pd
>>> spec = build_spec("y ~ x", pd.DataFrame({"y": [1.0, 2.0, 4.0], "x": [0.0, 1.0, 3.0]}))
>>> [str(p) for p in spec.priors][:1]  # the slope: normal(0, 5 sd(y) / sd(x)), and sd(y) = sd(x) here
['normal(0, 5)']
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy.stats import norm

from bayes_msem.data import ClusterData, cluster_column, cluster_columns, covariate_moments, prepare_data
from bayes_msem.errors import ModelSpecificationError
from bayes_msem.layout import ModelLayout, build_layout
from bayes_msem.matrices import LevelStructure, level_structures
from bayes_msem.partable import ParameterTable, build_partable
from bayes_msem.priors import DefaultPriors, PriorSpec, parse_prior

__all__ = ["ModelSpec", "build_spec", "CovarianceBlock"]


@dataclass(frozen=True)
class CovarianceBlock:
    """Variables of one level joined by free residual covariances: sampled as
    one correlation matrix (LKJ when every pair covaries, else patterned)."""

    level: int
    nodes: tuple[int, ...]  # indices into the level's nodes
    free_index: dict  # (i, j) position in the block -> 1-based free index
    eta: float
    # None: every pair covaries (an LKJ matrix); else the free pairs (i, j), i > j, of a partial pattern
    pattern: tuple[tuple[int, int], ...] | None = None
    fixed_values: dict = field(default_factory=dict)  # (i, j) -> covariance fixed at a non-zero value
    followers: dict = field(default_factory=dict)  # (i, j) -> the free index of an earlier covariance it equals

    @property
    def constrained(self) -> bool:
        """Whether some covariance of the block is given (fixed non-zero, or equal to an earlier one)."""
        return bool(self.fixed_values or self.followers)

    def owners(self) -> list[tuple[int, int]]:
        """The pairs (i, j), i > j, whose covariance is sampled here, row-major."""
        return sorted((b, a) for (a, b) in self.free_index if (a, b) not in self.followers)

    def targets(self, lookup) -> dict:
        """For :func:`~bayes_msem.priors.constrained_correlation`: each given
        pair (i, j), i > j, and a function of the block's covariances so far
        that returns its covariance. ``lookup(free)`` gives the value of a free
        parameter sampled in an earlier block."""
        owners = self.owners()
        owner_of = {self.free_index[(j, i)]: k for k, (i, j) in enumerate(owners)}
        targets = {(b, a): (lambda covariances, v=value: v) for (a, b), value in self.fixed_values.items()}
        for (a, b), free in self.followers.items():
            if free in owner_of:
                targets[(b, a)] = lambda covariances, k=owner_of[free]: covariances[k]
            else:
                targets[(b, a)] = lambda covariances, f=free: lookup(f)
        return targets


@dataclass(frozen=True)
class ModelSpec:
    """Everything an engine needs; frozen so stages cannot change each other's input."""

    table: ParameterTable
    data: ClusterData
    layout: ModelLayout  # the levels, lowest first: what every later stage reads
    priors: tuple[PriorSpec, ...]  # one per free parameter, in free-index order
    starts: tuple[float, ...]  # starting value of each free parameter, on the table's scale
    units: tuple[tuple[float, float], ...]  # (center, unit) of each free parameter in the data's units
    covariance_blocks: tuple[CovarianceBlock, ...]
    cluster: str | None
    default_priors: DefaultPriors

    @property
    def kinds(self) -> list[str]:
        return self.table.free_rows()["kind"].tolist()

    @property
    def structures(self) -> tuple[LevelStructure, ...]:
        return self.layout.structures()

    def structure(self, level: int) -> LevelStructure:
        """The matrices of the level numbered ``level`` in the parameter table."""
        return next(s for s in self.structures if s.level == level)

    @property
    def within(self) -> LevelStructure:
        """The lowest level's matrices (``layout.rows.structure``)."""
        return self.layout.rows.structure

    @property
    def between(self) -> LevelStructure | None:
        """Level 2's matrices, None in a single-level model."""
        return self.layout.levels[1].structure if self.layout.multilevel else None

    def prior_table(self) -> pd.DataFrame:
        """One row per free parameter with its prior and whether it is a default."""
        free = self.table.free_rows()
        return pd.DataFrame({
            "lhs": free["lhs"].to_numpy(), "op": free["op"].to_numpy(), "rhs": free["rhs"].to_numpy(),
            "level": [self.table.level_name(v) for v in free["level"]], "label": free["label"].fillna("").to_numpy(),
            "prior": self._prior_texts(),
            "source": ["user" if p is not None else "default" for p in free["prior"]],
        })

    def _prior_texts(self) -> list[str]:
        """Each free parameter's prior as text; covariances in a partial pattern
        say how their block is sampled (see the guide's "Partial covariance patterns")."""
        texts = [str(p) for p in self.priors]
        for block in self.covariance_blocks:
            if block.constrained:
                for free in block.free_index.values():
                    texts[free - 1] = "uniform partial correlations, given covariances, positive definite"
            elif block.pattern is not None:
                for free in block.free_index.values():
                    texts[free - 1] = (f"{texts[free - 1]}, partial pattern: t(2, 0, 0.707) factor entries, "
                                       "zeros exact")
        return texts


def _variable_scales(table: ParameterTable, data: ClusterData) -> dict[tuple[int, str], tuple[float, float]]:
    """(scale, mean) of every variable per level: sample SD and mean for observed
    variables, the marker indicator's SD (mean 0) for latent variables. An
    ordinal variable's latent response has scale 1 and mean 0 (its level-1
    residual variance and its intercepts are fixed there)."""
    scales: dict[tuple[int, str], tuple[float, float]] = {}
    rows = table.rows
    for roles in table.levels:
        for name in roles.observed + roles.covariates:
            ordinal = name in table.ordinal
            scales[(roles.level, name)] = (1.0, 0.0) if ordinal else (data.variable_sds[name], data.variable_means[name])
        # a slope is on the scale of y per unit of x, at every level where it has a part
        for name in (s for s in table.slopes if s in roles.latent):
            row = rows[rows["random"] == name].iloc[0]
            scales[(roles.level, name)] = (scales.get((row.level, row.lhs), (1.0, 0.0))[0]
                                           / scales.get((row.level, row.rhs), (1.0, 0.0))[0], 0.0)
        for _ in roles.latent:  # repeat so that higher-order factors find their markers' scales
            for name in roles.latent:
                if name in table.slopes:
                    continue
                indicators = rows[(rows.level == roles.level) & (rows.op == "=~") & (rows.lhs == name)]["rhs"]
                marker_scale = scales.get((roles.level, indicators.iloc[0]), (1.0, 0.0))[0]
                scales[(roles.level, name)] = (marker_scale, 0.0)
    return scales


def _row_scales(row, table: ParameterTable, scales: dict) -> tuple[str, float, float, float]:
    """A free row's kind for the default priors and the scales it is measured
    in: (kind, outcome scale, predictor scale, outcome mean). A loading ``f =~
    y`` is the slope of y on f; the mean of a random slope is a regression weight."""
    lhs_scale, lhs_mean = scales.get((row.level, row.lhs), (1.0, 0.0))
    rhs_scale = scales.get((row.level, row.rhs), (1.0, 0.0))[0]
    kind = row.kind
    if row.kind == "loading":
        lhs_scale, rhs_scale = rhs_scale, lhs_scale
    if row.kind == "intercept" and row.lhs in table.slopes:
        kind, rhs_scale = "regression", 1.0
    return kind, lhs_scale, rhs_scale, lhs_mean


def _resolve_priors(table: ParameterTable, scales: dict, defaults: DefaultPriors) -> list[PriorSpec]:
    priors = []
    for row in table.free_rows().itertuples():
        if row.prior is not None:
            spec = parse_prior(row.prior)
            if row.kind == "variance" and not spec.scale:
                spec = PriorSpec(spec.family, spec.args, "sd")
            priors.append(spec)
            continue
        priors.append(defaults.for_parameter(*_row_scales(row, table, scales)))
    return priors


def _parameter_units(table: ParameterTable, scales: dict) -> list[tuple[float, float]]:
    """(center, unit) of every free parameter in the data's units: a slope in
    sd(y) / sd(x) around 0, an intercept in sd(y) around mean(y), a variance's
    standard deviation in sd(y). NUTS moves each parameter in these units
    (:class:`~bayes_msem.engines.parameters.Standardized`), so the units of
    the data do not change what it sees."""
    units = []
    for row in table.free_rows().itertuples():
        kind, lhs_scale, rhs_scale, lhs_mean = _row_scales(row, table, scales)
        if kind in ("loading", "regression"):
            units.append((0.0, lhs_scale / rhs_scale))
        elif kind == "threshold":  # on the latent response's scale
            units.append((0.0, 1.0))
        elif kind == "intercept":
            units.append((lhs_mean, lhs_scale))
        elif kind == "variance":
            units.append((0.0, lhs_scale))
        else:  # covariances are sampled as correlations, which have no units
            units.append((0.0, 1.0))
    return units


def _threshold_starts(table: ParameterTable, data: ClusterData) -> dict[tuple[str, str], float]:
    """Each threshold's start: the normal quantile of the share of rows (of
    clusters, for a level-2 variable) at or below its category (the
    thresholds of a model without predictors)."""
    within = table.level_roles(table.levels[0].level).observed
    starts = {}
    for name, n_categories in table.ordered:
        if name in table.between_ordinal:
            codes = data.between_outcomes[:, table.between_outcomes.index(name)]
        else:
            codes = data.within_outcomes[:, within.index(name)]
        codes = codes[~np.isnan(codes)]
        shares = np.clip([np.mean(codes <= k) for k in range(n_categories - 1)], 0.01, 0.99)
        starts.update({(name, f"t{k + 1}"): float(norm.ppf(share)) for k, share in enumerate(shares)})
    return starts


def _start_values(table: ParameterTable, scales: dict, signs: dict[int, float],
                  thresholds: dict[tuple[str, str], float]) -> list[float]:
    """Starting values as lavaan's "simple" starts: loadings at the ratio of
    scales (1 for equal scales) with the sign of ``signs`` (see
    :func:`_loading_signs`), regressions and covariances at 0, intercepts at
    the sample mean, variances at half the observed variance. A ``start()``
    modifier in the syntax wins. Starting all loadings at 0 let a chain settle
    in a degenerate mode on the Holzinger-Swineford CFA."""
    starts = []
    for row in table.free_rows().itertuples():
        lhs_scale, lhs_mean = scales.get((row.level, row.lhs), (1.0, 0.0))
        rhs_scale = scales.get((row.level, row.rhs), (1.0, 0.0))[0]
        default = {"loading": signs.get(row.Index, 1.0) * rhs_scale / lhs_scale, "intercept": lhs_mean,
                   "variance": (0.1 if row.lhs in table.slopes else 0.5) * lhs_scale**2,
                   "threshold": thresholds.get((row.lhs, row.rhs), 0.0)}
        starts.append(row.start if np.isfinite(row.start) else default.get(row.kind, 0.0))
    return starts


def level_covariances(table: ParameterTable, data: ClusterData) -> dict[int, pd.DataFrame]:
    """Sample covariances of the observed variables at each level: of the
    deviations from the cluster means at level 1, of the cluster means (and
    level-2 outcomes) at level 2; of the rows in a single-level model.
    Pairwise complete: rough moments, for start values."""
    within = table.levels[0]
    rows = pd.DataFrame(data.within_outcomes, columns=list(within.observed))
    if table.n_levels < 2:
        return {0: rows.cov()}
    means = rows.groupby(data.cluster_index).mean()
    deviations = rows - means.to_numpy()[data.cluster_index]
    means[list(table.between_outcomes)] = data.between_outcomes
    return {1: deviations.cov(), 2: means.cov()}


def _loading_signs(table: ParameterTable, covariances: dict[int, pd.DataFrame]) -> dict[int, float]:
    """The sign each free loading starts with (by row index): that of its
    indicator's covariance at the factor's level with the factor's first
    indicator (the marker), times the marker's loading sign.

    All loadings used to start positive, and a reverse-keyed item (a negative
    loading) then left every chain in a mode where the marker is unrelated to
    the factor: a converged, wrong answer (found by simulation-based
    calibration of a two-level CFA, docs/validation.md). The sign of a
    covariance points NUTS to the right mode; the magnitude stays lavaan's."""
    rows = table.rows
    signs = {}
    for (level, _), loadings in rows[rows.op == "=~"].groupby(["level", "lhs"], sort=False):
        marker, *others = loadings.itertuples()
        marker_sign = np.sign(marker.ustart) if marker.free == 0 and marker.ustart != 0 else 1.0
        covariance = covariances.get(level)
        for row in others:
            if covariance is None or row.rhs not in covariance or marker.rhs not in covariance:
                continue  # an indicator that is itself a factor: keep the positive start
            value = covariance.at[row.rhs, marker.rhs]
            if np.isfinite(value) and value != 0:
                signs[row.Index] = float(marker_sign * np.sign(value))
    return signs


def _connected_groups(n_nodes: int, edges: list[tuple[int, int]]) -> list[list[int]]:
    """Nodes joined by covariance edges, as sorted lists (isolated nodes left out)."""
    parent = list(range(n_nodes))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for a, b in edges:
        parent[find(a)] = find(b)
    roots = {find(a) for edge in edges for a in edge}
    return [[i for i in range(n_nodes) if find(i) == root] for root in sorted(roots)]


def _covariance_blocks(table: ParameterTable, structures, priors) -> list[CovarianceBlock]:
    """One block per group of variables joined by free or fixed non-zero
    residual covariances, in the order the engines build them.

    A block where every pair covaries freely is a full correlation matrix with
    an LKJ prior; a partial pattern of free and zero covariances (the lavaan
    tutorial's ``y2 ~~ y4 + y6``, ``y4 ~~ y8``, ...) is a patterned matrix whose
    zeros are exact (:func:`bayes_msem.priors.patterned_correlation`); a block
    with a covariance fixed at a non-zero value or equal to an earlier one is
    built through partial correlations with those covariances given
    (:func:`bayes_msem.priors.constrained_correlation`)."""
    rows = table.rows
    blocks = []
    owned: set[int] = set()  # free indices already sampled: a later covariance with one is equal to it
    for structure in structures:
        at = {name: i for i, name in enumerate(structure.nodes)}
        cov_rows = rows[(rows.level == structure.level) & (rows.kind == "covariance") & ~rows.exo]
        free_rows = cov_rows[cov_rows.free > 0]
        fixed_rows = cov_rows[(cov_rows.free == 0) & (cov_rows.ustart != 0)]
        edges = [(at[row.lhs], at[row.rhs]) for row in pd.concat([free_rows, fixed_rows]).itertuples()]
        for members in _connected_groups(len(structure.nodes), edges):
            free_index = {pair: int(row.free) for pair, row in _block_pairs(free_rows, at, members)}
            fixed_values = {pair: float(row.ustart) for pair, row in _block_pairs(fixed_rows, at, members)}
            followers = {}
            for a, b in sorted(free_index, key=lambda pair: (pair[1], pair[0])):  # row-major: the build order
                if free_index[(a, b)] in owned:
                    followers[(a, b)] = free_index[(a, b)]
                owned.add(free_index[(a, b)])
            blocks.append(_block(structure, members, free_index, fixed_values, followers, priors))
    return blocks


def _block_pairs(frame: pd.DataFrame, at: dict, members: list[int]):
    """The covariance rows of ``frame`` inside a block, with their (i, j), i < j, positions in it."""
    for row in frame.itertuples():
        if at[row.lhs] in members:
            yield tuple(sorted((members.index(at[row.lhs]), members.index(at[row.rhs])))), row


def _block(structure, members, free_index, fixed_values, followers, priors) -> CovarianceBlock:
    n = len(members)
    names = ", ".join(structure.nodes[i] for i in members)
    etas = {priors[free - 1].args[0] for free in free_index.values()}
    if len(etas) > 1:
        raise ModelSpecificationError(f"covariances among {names} have different lkj() priors; give them one lkj(eta)")
    eta = etas.pop() if etas else 1.0
    if structure.fixed_zero_variance()[members].any():
        raise ModelSpecificationError(f"a variable among {names} has its variance fixed at 0 but a covariance")
    pattern = None
    if fixed_values or followers:
        if eta != 1:
            raise ModelSpecificationError(
                f"lkj({eta:g}) on the covariances among {names}: with a covariance fixed at a non-zero value or "
                "equal to another, the block's partial correlations are uniform; remove the lkj() prior")
    elif len(free_index) != n * (n - 1) // 2:
        pattern = tuple(sorted(((b, a) for a, b in free_index)))  # (i, j), i > j, row-major
        if eta < 1:
            raise ModelSpecificationError(f"lkj({eta:g}) on the covariances among {names}: a partial pattern of "
                                          "covariances takes lkj(eta) with eta >= 1 (eta = 1 is the default)")
    return CovarianceBlock(structure.level, tuple(members), free_index, eta, pattern, fixed_values, followers)


def build_spec(model: str | ParameterTable, data: pd.DataFrame, cluster: str | list[str] | None = None,
               missing: str = "fiml", priors: DefaultPriors | dict | None = None,
               centering: dict[str, str] | None = None) -> ModelSpec:
    """Parse (if needed), check the data, and complete the parameter table."""
    table = build_partable(model, centering=centering, cluster=cluster) if isinstance(model, str) else model
    cluster_data = prepare_data(table, data, cluster=cluster, missing=missing)
    units = cluster_columns(cluster, table.n_levels)
    cluster = cluster_column(cluster)
    moments = covariate_moments(table, cluster_data)
    rows = table.rows.copy()
    for i, row in rows[rows.exo].iterrows():
        key = (row.level, row.lhs, row.op, row.rhs)
        rows.at[i, "ustart"] = moments.get(key, moments.get((row.level, row.rhs, row.op, row.lhs), np.nan))
    table = replace(table, rows=rows)
    defaults = DefaultPriors.from_user(priors)
    scales = _variable_scales(table, cluster_data)
    resolved = _resolve_priors(table, scales, defaults)
    structures = tuple(level_structures(table))
    blocks = _covariance_blocks(table, structures, resolved)
    signs = _loading_signs(table, level_covariances(table, cluster_data))
    return ModelSpec(table=table, data=cluster_data, layout=build_layout(table, structures, units),
                     priors=tuple(resolved), starts=tuple(_start_values(table, scales, signs,
                                                          _threshold_starts(table, cluster_data))),
                     units=tuple(_parameter_units(table, scales)),
                     covariance_blocks=tuple(blocks), cluster=cluster, default_priors=defaults)
