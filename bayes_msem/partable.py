"""Stage 2: parsed rows -> parameter table, with lavaan's defaults.

The table has one row per parameter, as lavaan's ``parTable()``: the rows the
user wrote plus what lavaan adds by default (marker loadings fixed to 1,
residual and latent variances, covariances among exogenous latent variables and
among pure outcomes, intercepts, and the fixed moments of exogenous covariates).
Every later stage reads this table; nothing re-parses text.

Variable roles (lavaan's conventions) are worked out here from the model text
alone: in a two-level model a variable named in both blocks is split into a
latent within part and a latent between part; named in one block only it lives
at that level only. An observed variable that is only ever a predictor at its
level (and not named at the other level) is an exogenous covariate: the model
conditions on it, as lavaan's ``fixed.x = TRUE``.

Example
-------
>>> table = build_partable(parse_model("f =~ y1 + y2 + y3"))
>>> row = table.rows.loc[0]
>>> row.lhs, row.op, row.rhs, int(row.free), float(row.ustart)
('f', '=~', 'y1', 0, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import combinations

import numpy as np
import pandas as pd

from bayes_msem.errors import ModelSyntaxError
from bayes_msem.priors import parse_prior
from bayes_msem.syntax import LEVEL_NAMES, ParsedModel, SyntaxRow, parse_model

__all__ = ["LevelRoles", "ParameterTable", "build_partable", "parameter_kind", "level_name"]

COLUMNS = ["id", "lhs", "op", "rhs", "level", "user", "free", "ustart", "start", "label", "exo", "prior",
           "random", "kind", "line", "column", "text"]

CENTERING = ("latent", "cluster-mean", "none")
# Data columns made from a level-1 predictor by its centering: name suffix -> how.
DERIVED_SUFFIXES = {".cwc": "deviation from the cluster mean", ".cm": "observed cluster mean", ".raw": "raw value"}


def level_name(level: int, names: Sequence[str] = ()) -> str:
    """The name of level ``level`` (1 the rows): ``names[level - 1]`` where
    given (a three-level model's ``within`` and cluster columns), else
    ``within``, ``between``, ``level 3``; empty for a single-level model (0)."""
    if names and 0 < level <= len(names):
        return names[level - 1]
    return LEVEL_NAMES.get(level, "")


def parameter_key(lhs: str, op: str, rhs: str, level: str = "") -> str:
    """The name a parameter goes by in values, posteriors and studies:
    ``fb=~y2|between``, ``y~x`` in a single-level model (``level`` as a name).
    A threshold is ``u|t1`` at any level: it cuts the whole latent response."""
    return f"{lhs}{op}{rhs}" + (f"|{level}" if level and op != "|" else "")


def parameter_kind(op: str, lhs: str, rhs: str) -> str:
    """Type of a parameter: loading, regression, intercept, variance, covariance, threshold or defined."""
    if op == "~~":
        return "variance" if lhs == rhs else "covariance"
    return {"=~": "loading", "~": "regression", "~1": "intercept", "|": "threshold", ":=": "defined"}[op]


@dataclass(frozen=True)
class LevelRoles:
    """Which variables a level holds.

    ``observed`` are the observed variables modelled at this level (for a
    variable split over levels, its latent part at this level); ``latent`` the
    latent variables; ``covariates`` the exogenous observed variables the model
    conditions on.
    """

    level: int
    observed: tuple[str, ...]
    latent: tuple[str, ...]
    covariates: tuple[str, ...]

    @property
    def nodes(self) -> tuple[str, ...]:
        """Modelled variables, observed first: the rows of the level's matrices."""
        return self.observed + self.latent


@dataclass(frozen=True)
class ParameterTable:
    """The parameter table and the variable roles it implies.

    ``rows`` is a DataFrame with lavaan's columns; ``free`` is 0 for fixed rows
    and otherwise the 1-based index into the vector of free parameters (rows
    sharing a label share an index: that is how equality constraints work).
    """

    rows: pd.DataFrame
    levels: tuple[LevelRoles, ...]
    both_level: tuple[str, ...]
    source_lines: tuple[str, ...] = ()
    centering: tuple[tuple[str, str], ...] = ()  # (variable, centering) the user chose
    slopes: tuple[str, ...] = ()  # random slopes: level-2 latent variables
    ordered: tuple[tuple[str, int], ...] = ()  # ordinal variables and their numbers of categories
    level_names: tuple[str, ...] = ()  # a three-level model's level names (ParsedModel.level_names)

    def level_name(self, level: int) -> str:
        """The name results give level ``level`` (:func:`level_name`)."""
        return level_name(level, self.level_names)

    @property
    def ordinal(self) -> tuple[str, ...]:
        """The ordinal (probit) variables, in the order of ``ordered``."""
        return tuple(name for name, _ in self.ordered)

    @property
    def between_ordinal(self) -> tuple[str, ...]:
        """The ordinal variables modelled at level 2 only (a school-level
        outcome, indicators of a between factor): their probit terms enter per
        cluster, their latent responses' variance fixed at 1 at level 2."""
        between_only = set(self.between_outcomes)
        return tuple(name for name in self.ordinal if name in between_only)

    @property
    def within_ordinal(self) -> tuple[str, ...]:
        """The ordinal variables of the lowest level (split over levels where also
        named at level 2): their probit terms enter per row."""
        return tuple(name for name in self.ordinal if name not in self.between_ordinal)

    @property
    def derived(self) -> dict[str, tuple[str, str]]:
        """Data columns made by centering: name -> (source column, suffix)."""
        out = {}
        for name in self.observed_variables:
            for suffix in DERIVED_SUFFIXES:
                if name.endswith(suffix) and name[: -len(suffix)] in dict(self.centering):
                    out[name] = (name[: -len(suffix)], suffix)
        return out

    def data_columns(self) -> tuple[str, ...]:
        """The columns of the user's data the model reads."""
        derived = self.derived
        return tuple(_unique(derived[n][0] if n in derived else n for n in self.observed_variables))

    @property
    def two_level(self) -> bool:
        return len(self.levels) == 2

    @property
    def n_levels(self) -> int:
        """1 for a single-level model, else the number of level blocks."""
        return len(self.levels)

    def split_at(self, level: int) -> tuple[str, ...]:
        """The observed variables with a part at ``level`` and at a level below:
        at that level, their part is a random intercept of the units below."""
        below = {n for roles in self.levels if 0 < roles.level < level for n in roles.observed}
        return tuple(n for n in self.level_roles(level).observed if n in below)

    @property
    def n_free(self) -> int:
        return int(self.rows["free"].max()) if len(self.rows) else 0

    def level_roles(self, level: int) -> LevelRoles:
        return next(roles for roles in self.levels if roles.level == level)

    @property
    def between_outcomes(self) -> tuple[str, ...]:
        """Observed variables modelled at level 2 only (level-2 outcomes, not covariates)."""
        if self.n_levels < 2:
            return ()
        return tuple(n for n in self.level_roles(2).observed if n not in self.both_level)

    @property
    def observed_variables(self) -> tuple[str, ...]:
        """Every data column the model uses, in order of appearance."""
        names: list[str] = []
        for roles in self.levels:
            for name in roles.observed + roles.covariates:
                if name not in names:
                    names.append(name)
        return tuple(names)

    def variable_roles(self) -> list[tuple[str, str]]:
        """(variable, role and centering) for the summary header."""
        if self.n_levels > 2:
            return self._roles_by_level()
        if not self.two_level:
            return []
        within, between = self.level_roles(1), self.level_roles(2)
        derived, centering = self.derived, dict(self.centering)
        out = []
        for name in self.data_columns():
            if name in self.both_level:
                how = centering.get(name, "latent")
                role = "split into latent within and between parts"
                if name in self.ordinal:
                    role = "ordinal, its latent response split into within and between parts"
                if how != "latent":
                    role = f"level-1 outcome with a random intercept; as a predictor: centering {how}"
                elif any(r.op == "~" and r.rhs == name and r.level == 1 for r in self.rows.itertuples()):
                    role += " (latent centering)"
            elif name in within.observed:
                role = "level-1 only" + (", ordinal" if name in self.ordinal else "")
            elif name in within.covariates:
                role = "level-1 predictor, " + ("raw values (centering none)" if name in centering else "raw values")
            elif name in between.covariates:
                role = "level-2 predictor"
            elif name in between.observed:
                role = "level-2 outcome" + (", ordinal" if name in self.ordinal else "")
            else:
                uses = [f"{d} ({DERIVED_SUFFIXES[suffix]})" for d, (source, suffix) in derived.items() if source == name]
                role = f"centering {centering.get(name)}: " + ", ".join(uses)
            out.append((name, role))
        return out + self._slope_roles()

    def _slope_roles(self) -> list[tuple[str, str]]:
        """(slope, what it is) for the summary header: the levels where it has a part."""
        out = []
        for slope in self.slopes:
            row = self.rows[self.rows["random"] == slope].iloc[0]
            at = [roles.level for roles in self.levels if slope in roles.latent]
            where = f"a level-{at[0]} latent variable" if len(at) == 1 else \
                "latent parts at levels " + ", ".join(map(str, at))
            out.append((slope, f"random slope of {row.lhs} on {row.rhs} ({where})"))
        return out

    def _roles_by_level(self) -> list[tuple[str, str]]:
        """Variable roles in a model with more than two levels: the levels a
        variable has a part at, or the level it is a predictor of."""
        out = []
        for name in self.data_columns():
            at = [roles.level for roles in self.levels if name in roles.observed]
            if len(at) > 1:
                out.append((name, "split into latent parts at levels " + ", ".join(map(str, at))))
            elif at:
                out.append((name, f"level-{at[0]} outcome"))
            else:
                level = next(roles.level for roles in self.levels if name in roles.covariates)
                out.append((name, f"level-{level} predictor" + (", raw values" if level == 1 else "")))
        return out + self._slope_roles()

    def thresholds(self) -> dict[str, list[tuple[int, float]]]:
        """Each ordinal variable's thresholds in order t1, t2, ...: (free index,
        1-based, or 0 where fixed; the fixed value, NaN where free)."""
        rows = self.rows
        out = {}
        for name in self.ordinal:
            mine = rows[(rows.op == "|") & (rows.lhs == name)]
            mine = mine.assign(order=[int(t[1:]) for t in mine.rhs]).sort_values("order")
            out[name] = [(int(r.free), float(r.ustart)) for r in mine.itertuples()]
        return out

    def ordered_threshold_vectors(self) -> dict[str, list[int]]:
        """The ordinal variables whose thresholds are all free and their own
        (none fixed, none shared with an earlier variable by a label), with
        their free indices: each is sampled as one increasing vector."""
        out, seen = {}, set()
        for name, thresholds in self.thresholds().items():
            free = [f for f, _ in thresholds]
            if 0 not in free and len(set(free)) == len(free) and not seen & set(free):
                out[name] = free
            seen |= set(free)
        return out

    def free_rows(self) -> pd.DataFrame:
        """One row per free parameter (the first row of each label group)."""
        free = self.rows[self.rows["free"] > 0]
        return free.drop_duplicates("free").sort_values("free")


def _row_error(row: SyntaxRow, message: str, hint: str | None = None) -> ModelSyntaxError:
    return ModelSyntaxError(message, line=row.line, column=row.column, text=row.text, hint=hint)


def _level_roles(rows: list[SyntaxRow], level: int, other_level_observed: set[str],
                 slopes: tuple[str, ...] = ()) -> LevelRoles:
    latent = _unique([r.lhs for r in rows if r.op == "=~"] + list(slopes))
    names = _unique(name for r in rows if r.op not in (":=", "|") for name in (r.lhs, r.rhs) if name)
    observed_all = [n for n in names if n not in latent]
    predictors_only = {
        n for n in observed_all
        if all((r.op == "~" and r.rhs == n) or n not in (r.lhs, r.rhs) for r in rows if r.op not in (":=", "|"))
    }
    covariates = tuple(n for n in observed_all if n in predictors_only and n not in other_level_observed)
    observed = tuple(n for n in observed_all if n not in covariates)
    return LevelRoles(level, observed, tuple(latent), covariates)


def _unique(names) -> list[str]:
    seen: list[str] = []
    for name in names:
        if name not in seen:
            seen.append(name)
    return seen


def _check_rows(rows: list[SyntaxRow]) -> None:
    seen: dict[tuple, SyntaxRow] = {}
    for row in rows:
        if row.op == ":=":
            continue
        if row.lhs == row.rhs and row.op in ("=~", "~"):
            raise _row_error(row, f"{row.lhs} {row.op} {row.rhs}: a variable cannot point to itself")
        rhs_pair = tuple(sorted((row.lhs, row.rhs))) if row.op == "~~" else (row.lhs, row.rhs)
        key = (row.level, row.op) + rhs_pair
        if key in seen:
            first = seen[key]
            raise _row_error(row, f"`{row.lhs} {row.op} {row.rhs or '1'}` is already specified on line {first.line}",
                             "each parameter can be written once; remove one of them")
        seen[key] = row
        if row.prior is not None:
            try:
                spec = parse_prior(row.prior)
            except ValueError as err:
                raise _row_error(row, str(err)) from err
            kind = parameter_kind(row.op, row.lhs, row.rhs)
            if kind == "covariance" and spec.family != "lkj":
                raise _row_error(row, "covariances are sampled as correlations; their prior is lkj(eta)",
                                 'write prior("lkj(2)")*y2')
            if kind != "covariance" and spec.family == "lkj":
                raise _row_error(row, "lkj() is a prior for covariances only")
            if kind == "variance" and spec.support != "positive":
                raise _row_error(row, f"a variance needs a prior on positive values, not {spec.family}()",
                                 'e.g. prior("gamma(2, 1)") on the standard deviation, or prior("inverse_gamma(1, 1)[var]")')
            if kind == "threshold" and spec.family != "normal":
                raise _row_error(row, "thresholds are sampled as an ordered vector with normal priors",
                                 'write prior("normal(0, 2)")*t1')
            if spec.scale and kind != "variance":
                raise _row_error(row, "[sd] and [var] apply to variance priors only")


def _default_rows(level_rows: list[SyntaxRow], roles: LevelRoles, higher: set[str],
                  both_level: set[str], slopes: tuple[str, ...] = (), ordered: dict[str, int] | None = None) -> list[dict]:
    """What lavaan adds to the user's rows at one level. The intercept of a
    variable split over levels (``higher``: the observed variables of the
    levels above) is fixed at 0 below its highest level, where its mean sits. An ordinal variable's
    latent response has its intercept fixed at 0 at every level (the
    thresholds place it) and, at its lowest level, its residual variance fixed
    at 1 (the theta parameterization; brms's ``cumulative("probit")``) and its
    thresholds."""
    ordered = ordered or {}
    lowest = roles.level in (0, 1)
    own_level = {n: k for n, k in ordered.items() if n in roles.observed and (lowest or n not in both_level)}
    existing = {(r.op,) + ((tuple(sorted((r.lhs, r.rhs)))) if r.op == "~~" else (r.lhs, r.rhs)) for r in level_rows}
    added: list[dict] = []

    def add(lhs: str, op: str, rhs: str, *, ustart: float = np.nan, exo: bool = False) -> None:
        key = (op,) + (tuple(sorted((lhs, rhs))) if op == "~~" else (lhs, rhs))
        if key not in existing:
            existing.add(key)
            added.append(dict(lhs=lhs, op=op, rhs=rhs, level=roles.level, user=False, ustart=ustart, exo=exo))

    for name in roles.nodes:
        add(name, "~~", name, ustart=1.0 if name in own_level else np.nan)
    # Random slopes follow Mplus: mean and variance free, covariances only where written.
    exogenous_latent = [f for f in roles.latent
                        if f not in slopes and not any(r.op == "~" and r.lhs == f for r in level_rows)]
    for a, b in combinations(exogenous_latent, 2):
        add(a, "~~", b)
    indicators = {r.rhs for r in level_rows if r.op == "=~"}
    # a predictor's centered copy (m.raw) still makes m a predictor: no residual covariance with its outcome
    predictors = {_source_name(r.rhs) for r in level_rows if r.op == "~"}
    pure_outcomes = _unique(r.lhs for r in level_rows if r.op == "~" and r.lhs not in slopes
                            and r.lhs not in predictors and r.lhs not in indicators)
    for a, b in combinations(pure_outcomes, 2):
        add(a, "~~", b)
    for i, a in enumerate(roles.covariates):
        for b in roles.covariates[i:]:
            add(a, "~~", b, exo=True)
    # lavaan's order: intercepts of observed variables, of covariates, of latent variables
    for name in roles.observed:
        fixed_zero = name in higher or name in ordered
        add(name, "~1", "", ustart=0.0 if fixed_zero else np.nan)
    for name in roles.covariates:
        add(name, "~1", "", exo=True)
    for name in roles.latent:
        # a slope's mean is the average slope, at the highest level where it has a part
        add(name, "~1", "", ustart=np.nan if name in slopes and name not in higher else 0.0)
    for name, n_categories in own_level.items():
        for k in range(1, n_categories):
            add(name, "|", f"t{k}")
    return added


def _source_name(name: str) -> str:
    for suffix in DERIVED_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _user_row_dict(row: SyntaxRow, is_marker: bool) -> dict:
    ustart = row.fixed if row.fixed is not None else (1.0 if is_marker else np.nan)
    if row.random is not None:
        ustart = 0.0  # the whole coefficient is the level-2 slope variable
    return dict(lhs=row.lhs, op=row.op, rhs=row.rhs, level=row.level, user=True, ustart=ustart, exo=False,
                start=row.start if row.start is not None else np.nan, label=row.label, prior=row.prior,
                random=row.random, line=row.line, column=row.column, text=row.text)


def _assign_free_indices(table: pd.DataFrame, rows_by_label: dict[str, SyntaxRow]) -> pd.Series:
    free = np.zeros(len(table), dtype=int)
    label_index: dict[str, tuple[int, str]] = {}
    next_index = 1
    for i, row in enumerate(table.itertuples()):
        if row.op == ":=" or row.exo or not np.isnan(row.ustart):
            continue
        label = row.label if isinstance(row.label, str) else None
        if label is not None and label in label_index:
            index, kind = label_index[label]
            if kind != row.kind:
                source = rows_by_label[label]
                raise _row_error(source, f"label {label!r} makes a {kind} and a {row.kind} equal, which is not "
                                 "supported", "equality constraints work among parameters of one type")
            free[i] = index
            continue
        free[i] = next_index
        if label is not None:
            label_index[label] = (next_index, row.kind)
        next_index += 1
    return pd.Series(free, index=table.index)


def _check_labels_and_priors(table: pd.DataFrame, labels: dict[str, SyntaxRow], roles) -> None:
    """A label that is also a variable's name reads as that variable in ``:=``
    definitions, and a prior on a fixed parameter would be ignored: refuse both,
    naming the line."""
    variables = {name for level in roles for name in level.observed + level.covariates + level.latent}
    for label, row in labels.items():
        if label in variables:
            raise _row_error(row, f"the label {label!r} is also the name of a variable",
                             f"give the parameter a label of its own, as in {label}_b*{row.rhs or row.lhs}")
    for row in table[table.prior.notna() & (table.free == 0)].itertuples():
        what = "a marker loading, fixed at 1" if row.op == "=~" else "fixed"
        raise ModelSyntaxError(f"prior() on {row.lhs} {row.op} {row.rhs}, which is {what}: the prior would be ignored",
                               line=row.line, column=row.column, text=row.text,
                               hint=f"free it with NA*{row.rhs} (and fix another loading or the factor variance), "
                                    "or remove the prior")


def _random_slopes(rows: list[SyntaxRow], n_levels: int) -> tuple[str, ...]:
    """Names of the random slopes, checked: within-level regressions, one row each,
    not also the name of a variable at level 1. In a three-level model a slope
    named in the level-3 block also varies over level-3 units (its part there
    is a random effect of the school that adds to every class's slope), as in
    Mplus's THREELEVEL; so does a slope written in the level-2 block (a
    class covariate's effect that varies over schools)."""
    slopes: dict[str, SyntaxRow] = {}
    for row in rows:
        if row.random is None:
            continue
        if n_levels < 2 or row.level > 2 or (row.level == 2 and n_levels < 3):
            raise _row_error(row, f"random slope {row.random!r} must be in the level: 1 (within) block of a "
                             "multilevel model, or the level: 2 block of a three-level one",
                             "a random slope varies over the units of the level above its own; write a block for "
                             "that level")
        if row.random in slopes:
            raise _row_error(row, f"random slope {row.random!r} is already used on line {slopes[row.random].line}",
                             "give every random slope its own name")
        own_level = {n for r in rows if r.level == row.level and r.op != ":=" for n in (r.lhs, r.rhs)}
        if row.random in own_level:
            raise _row_error(row, f"{row.random!r} names a random slope and a variable of its level",
                             "give the slope a name of its own, as in s_x | y ~ x")
        slopes[row.random] = row
    for row in rows:
        if row.level >= 2 and row.op == "=~" and row.rhs in slopes:
            raise _row_error(row, f"random slope {row.rhs!r} as an indicator is not supported",
                             "regress the slope on a between factor instead (s ~ fb)")
        if row.level >= 3 and row.op == "~" and row.rhs in slopes:
            raise _row_error(row, f"random slope {row.rhs!r} as a predictor at level {row.level} is not supported",
                             f"leave {row.rhs!r} on the right of ~ out of the level-{row.level} block")
    return tuple(slopes)


def _slopes_at(rows: list[SyntaxRow], slopes: tuple[str, ...], level: int) -> tuple[str, ...]:
    """The random slopes with a part at ``level``: those written in the block
    just below (they vary over this level's units) and those of lower blocks
    that this block names."""
    written = {r.random: r.level for r in rows if r.random is not None}
    named = {n for r in rows if r.level == level and r.op not in (":=", "|") for n in (r.lhs, r.rhs)}
    return tuple(s for s in slopes if written[s] == level - 1 or (written[s] < level - 1 and s in named))


def _apply_centering(rows: list[SyntaxRow], centering: dict[str, str] | None,
                     two_level: bool) -> list[SyntaxRow]:
    """Rewrite level-1 predictors by their centering.

    ``latent`` (lavaan's and Mplus's default) keeps the variable whole: named
    at both levels it is split into latent within and between parts.
    ``cluster-mean`` makes the predictor ``x.cwc`` (deviation from the
    observed cluster mean) at level 1 and ``x.cm`` (the observed mean) at
    level 2. ``none`` makes it ``x.raw`` at level 1 where x is also modelled
    there (or keeps the name ``x`` for a predictor-only covariate).
    """
    if not centering:
        return rows
    if not two_level:
        raise ModelSyntaxError("centering= applies to two-level models only (with level: 1 and level: 2 blocks)",
                               line=1, column=1, text=rows[0].text if rows else "")
    out = list(rows)
    for name, how in centering.items():
        if how not in CENTERING:
            raise ValueError(f"centering of {name!r} is {how!r}; use one of {CENTERING}")
        level1 = [r for r in out if r.level == 1 and r.op != ":="]
        as_predictor = [r for r in level1 if r.op == "~" and r.rhs == name]
        if not as_predictor:
            raise ValueError(f"centering names {name!r}, which is not a level-1 predictor (the right side of a "
                             "~ in the level: 1 block)")
        elsewhere_1 = any(name in (r.lhs, r.rhs) and not (r.op == "~" and r.rhs == name) for r in level1)
        level2 = [r for r in out if r.level == 2 and r.op != ":="]
        named_2 = [r for r in level2 if name in (r.lhs, r.rhs)]
        if how == "latent":
            if not named_2:  # split it: give the between part its variance
                first = as_predictor[0]
                out.append(SyntaxRow(name, "~~", name, 2, line=first.line, column=first.column, text=first.text))
            continue
        if how == "none":
            if named_2 and not elsewhere_1:
                raise _row_error(named_2[0], f"with centering 'none', {name!r} enters level 1 with its raw values "
                                 "and has no between part of its own", f"remove {name} from the level: 2 block, or use "
                                 "centering 'latent' or 'cluster-mean'")
            new = f"{name}.raw" if elsewhere_1 else name
            out = [replace(r, rhs=new) if r in as_predictor else r for r in out]
            continue
        # cluster-mean: observed deviation within, observed mean between
        predictors_2 = [r for r in named_2 if r.op == "~" and r.rhs == name]
        if len(predictors_2) != len(named_2) and not elsewhere_1:
            raise _row_error(next(r for r in named_2 if r not in predictors_2),
                             f"with centering 'cluster-mean', {name!r} at level 2 is its observed cluster mean, "
                             "which can only be a predictor there")
        out = [replace(r, rhs=f"{name}.cwc") if r in as_predictor
               else replace(r, rhs=f"{name}.cm") if r in predictors_2 else r for r in out]
    for row in out:
        if row.op == "~~" and row.level == 1:
            for a, b in ((row.lhs, row.rhs), (row.rhs, row.lhs)):
                if any(r.level == 1 and r.op == "~" and r.lhs == a and _source_name(r.rhs) == b and r.rhs != b
                       for r in out):
                    raise _row_error(row, f"{a} is regressed on the observed {b}, so a residual covariance "
                                     f"{row.lhs} ~~ {row.rhs} is not identified", "remove it")
    return out


def with_covariates_modelled(parsed: ParsedModel, table: ParameterTable, names: set[str]) -> ParsedModel:
    """The model with the covariates ``names`` brought into it, as Mplus does for
    a covariate with missing values that the model mentions (lavaan's
    ``missing = "ml.x"``): each becomes a modelled variable of its level,
    regressed on the covariates of that level that stay covariates, with a free
    residual variance, and correlated with the others brought in. Its
    distribution is then estimated, so full information handles its missing
    values. A level-1 covariate stays within-only (no between part), as it was."""
    added = []
    for roles in table.levels:
        brought = [n for n in roles.covariates if n in names]
        kept = [n for n in roles.covariates if n not in names]
        for i, name in enumerate(brought):
            rows = [(name, "~~", name)] + [(name, "~", other) for other in kept]
            rows += [(name, "~~", other) for other in brought[i + 1:]]
            added += [SyntaxRow(lhs, op, rhs, roles.level, text=f"{lhs} {op} {rhs}  (added: missing values)")
                      for lhs, op, rhs in rows]
    return replace(parsed, rows=tuple(parsed.rows) + tuple(added))


def model_table(syntax: str, centering: dict[str, str] | None = None, modelled_covariates=(),
                ordered: dict[str, int] | None = None, cluster: str | Sequence[str] | None = None) -> ParameterTable:
    """The parameter table of a fitted model: ``syntax`` with the covariates in
    ``modelled_covariates`` brought into the model (:func:`with_covariates_modelled`).
    :class:`~bayes_msem.model.Model` and a result's ``parameter_table()`` both build it
    here, so the variable roles always match the fitted rows. ``cluster``:
    see :func:`~bayes_msem.syntax.parse_model`."""
    table = build_partable(syntax, centering=centering, ordered=ordered, cluster=cluster)
    if not modelled_covariates:
        return table
    return build_partable(with_covariates_modelled(parse_model(syntax, cluster), table, set(modelled_covariates)),
                          centering=centering, ordered=ordered)


def _threshold_rows(rows: list[SyntaxRow], ordered: dict[str, int], lowest: int) -> list[SyntaxRow]:
    """The user's threshold rows, checked against ``ordered`` and moved to the
    lowest level (thresholds cut the whole latent response, whichever block
    they were written in; :func:`build_partable` moves those of level-2-only
    variables up once the levels' roles are known)."""
    out = []
    for row in rows:
        if row.op != "|":
            out.append(row)
            continue
        if row.lhs not in ordered:
            raise _row_error(row, f"{row.lhs} has thresholds but is not declared ordinal",
                             f"add it to ordered=, as in ordered=[{row.lhs!r}]")
        k = int(row.rhs[1:])
        if k >= ordered[row.lhs]:
            raise _row_error(row, f"{row.lhs} has {ordered[row.lhs]} categories in the data, so "
                             f"{ordered[row.lhs] - 1} threshold(s); {row.rhs} is one too many",
                             f"write {row.lhs} | " + " + ".join(f"t{i}" for i in range(1, ordered[row.lhs])))
        out.append(replace(row, level=lowest))
    return out


def _check_ordered(ordered: dict[str, int], roles: list[LevelRoles], rows: list[SyntaxRow]) -> None:
    """Ordinal variables must be modelled (an outcome or an indicator), not
    covariates, and the residual variance at their lowest level is fixed. A
    level-2-only ordinal variable may not predict other variables (its latent
    response would enter as a predictor, which its categories cannot stand for)."""
    modelled = {n for level in roles for n in level.observed}
    covariates = {n for level in roles for n in level.covariates}
    for name in ordered:
        if name in covariates and name not in modelled:
            raise ModelSyntaxError(f"{name!r} is declared ordinal but is only a predictor (a covariate the model "
                                   "conditions on); covariates enter with their values as they are",
                                   line=1, column=1, text="", hint=f"remove {name!r} from ordered=")
        if name not in modelled:
            raise ValueError(f"ordered= names {name!r}, which is not a variable of the model")
    for row in rows:
        if row.lhs not in ordered or row.op != "~~" or row.rhs != row.lhs or row.fixed is not None:
            continue
        if row.level == _own_level(row.lhs, roles):
            raise _row_error(row, f"the residual variance of the ordinal {row.lhs} is fixed at 1 (its scale); "
                             "with free thresholds it is not identified", f"remove the line or fix it: {row.lhs} ~~ "
                             f"1*{row.lhs}")
    for row in rows:
        if row.op == "~" and row.rhs in ordered and _own_level(row.rhs, roles) == 2:
            raise _row_error(row, f"the level-2 ordinal {row.rhs} predicts {row.lhs}: a level-2 ordinal variable can "
                             "be an outcome or an indicator, not a predictor, here",
                             f"let a between factor measured by {row.rhs} predict {row.lhs}, or model {row.rhs} as "
                             "continuous")


def _own_level(name: str, roles: list[LevelRoles]) -> int:
    """The lowest level at which ``name`` is modelled: where its latent
    response's residual variance is fixed and its thresholds sit."""
    return next(level.level for level in roles if name in level.observed)


def build_partable(parsed: ParsedModel | str, centering: dict[str, str] | None = None,
                   ordered: dict[str, int] | None = None, cluster: str | Sequence[str] | None = None) -> ParameterTable:
    """Build the parameter table (with lavaan's defaults) from parsed model text.

    Parameters
    ----------
    parsed
        The output of :func:`bayes_msem.syntax.parse_model`, or model text.
    centering
        Per level-1 predictor: ``"latent"`` (default), ``"cluster-mean"`` or ``"none"``
        (see :func:`_apply_centering`).
    ordered
        Ordinal (probit) variables and their numbers of categories: their
        thresholds are added, and their latent responses' scale and location fixed.
    cluster
        The cluster column(s), level 2 first, where ``parsed`` is text
        (see :func:`~bayes_msem.syntax.parse_model`).

    Examples
    --------
    >>> t = build_partable("level: 1\\n fw =~ y1 + y2\\nlevel: 2\\n fb =~ y1 + y2")
    >>> t.both_level
    ('y1', 'y2')
    """
    if isinstance(parsed, str):
        parsed = parse_model(parsed, cluster)
    ordered = dict(ordered or {})
    levels = parsed.levels
    user_rows = _threshold_rows(_apply_centering(list(parsed.rows), centering, len(levels) == 2), ordered, levels[0])
    _check_rows(user_rows)
    slopes = _random_slopes(user_rows, len(levels))
    model_rows = [r for r in user_rows if r.op != ":="]
    structural_rows = [r for r in model_rows if r.op != "|"]
    observed_by_level = {}
    for level in levels:
        rows = [r for r in structural_rows if r.level == level]
        latent = {r.lhs for r in rows if r.op == "=~"}
        observed_by_level[level] = {n for r in rows for n in (r.lhs, r.rhs) if n and n not in latent}
    roles = []
    for level in levels:
        other = set().union(*(observed_by_level[o] for o in levels if o != level))
        roles.append(_level_roles([r for r in structural_rows if r.level == level], level, other,
                                  _slopes_at(structural_rows, slopes, level)))
    _check_ordered(ordered, roles, model_rows)
    # thresholds cut the latent response at its own level: level 2 for a level-2-only ordinal variable
    model_rows = [replace(r, level=_own_level(r.lhs, roles)) if r.op == "|" else r for r in model_rows]
    both_level = tuple(n for n in roles[0].observed if len(levels) > 1 and n in roles[1].observed)

    records = []
    for level, level_roles in zip(levels, roles):
        level_rows = [r for r in model_rows if r.level == level]
        markers = {}
        for r in level_rows:
            if r.op == "=~" and r.lhs not in markers:
                markers[r.lhs] = r
        for r in level_rows:
            is_marker = markers.get(r.lhs) is r and r.fixed is None and not r.free
            records.append(_user_row_dict(r, is_marker))
        # a slope with a part above this level has its mean there, like a split variable
        higher = {n for above in roles if above.level > level for n in above.observed + above.latent}
        records.extend(_default_rows(level_rows, level_roles, higher, set(both_level),
                                     _slopes_at(structural_rows, slopes, level), ordered))
    for r in user_rows:
        if r.op == ":=":
            records.append(dict(lhs=r.lhs, op=":=", rhs=r.rhs, level=0, user=True, ustart=np.nan, exo=False,
                                label=r.lhs, line=r.line, column=r.column, text=r.text))
    table = pd.DataFrame.from_records(records)
    for column, default in (("label", None), ("prior", None), ("random", None), ("start", np.nan), ("line", 0), ("column", 0),
                            ("text", "")):
        if column not in table:
            table[column] = default
    table["label"] = table["label"].astype(object).where(table["label"].notna(), None)
    table["prior"] = table["prior"].astype(object).where(table["prior"].notna(), None)
    table["random"] = table["random"].astype(object).where(table["random"].notna(), None)
    table["start"] = table["start"].astype(float)
    table["line"] = table["line"].fillna(0).astype(int)
    table["column"] = table["column"].fillna(0).astype(int)
    table["text"] = table["text"].fillna("")
    table["kind"] = [parameter_kind(o, lhs, rhs) for o, lhs, rhs in zip(table.op, table.lhs, table.rhs)]
    table["id"] = np.arange(1, len(table) + 1)
    labels = {r.label: r for r in user_rows if r.label}
    table["free"] = _assign_free_indices(table, labels)
    _check_labels_and_priors(table, labels, roles)
    return ParameterTable(rows=table[COLUMNS], levels=tuple(roles), both_level=both_level,
                          source_lines=parsed.source_lines, centering=tuple((centering or {}).items()),
                          slopes=slopes, ordered=tuple(ordered.items()), level_names=parsed.level_names)

