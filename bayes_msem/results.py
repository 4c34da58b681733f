"""Stage 7: the result of a fit.

:class:`FitResult` wraps an ArviZ InferenceData whose posterior reads like
lavaan: one variable per parameter, named ``fw=~y2``, ``fb~w1``, ``y1~~y1``;
a parameter that is free at both levels has a ``level`` dimension
(``within``, ``between``). Defined parameters (``:=``) are variables of their
own, and ``cluster_effects`` holds each cluster's latent means and between
factor scores. The parameter table, the priors and the run's facts travel in
the posterior's attributes, so :func:`load_result` rebuilds the result from
the netCDF file alone.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

from bayes_msem.defined import evaluate_definitions
from bayes_msem.matrices import parameter_values
from bayes_msem.partable import level_name

__all__ = ["FitResult", "load_result", "SUMMARY_COLUMNS", "RHAT_LIMIT", "ESS_PER_CHAIN"]

SUMMARY_COLUMNS = ["lhs", "op", "rhs", "level", "label", "free", "mean", "sd", "median", "q2.5", "q97.5",
                   "r_hat", "ess_bulk", "ess_tail"]
RHAT_LIMIT = 1.01
ESS_PER_CHAIN = 100  # Vehtari et al. (2021): at least 100 effective draws per chain
# likely causes named when a fit mixes badly (FitResult.likely_causes)
NEAR_ZERO_SD = 0.05  # a standard deviation below 5% of its variable's
COLLINEAR_CORRELATION = 0.9  # posterior correlation of two regression weights of one outcome
FEW_CLUSTERS_FOR_ADVICE = 30


def _import_arviz():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az
    return az


def _posterior_name(row) -> str:
    return row.lhs if row.op == ":=" else f"{row.lhs}{row.op}{row.rhs}"


def build_posterior(table: pd.DataFrame, theta: xr.DataArray, cluster_effects: xr.DataArray | dict | None,
                    level_names: tuple[str, ...] = ()) -> xr.Dataset:
    """Turn draws of the free-parameter vector into lavaan-named variables
    (levels named by :func:`~bayes_msem.partable.level_name`)."""
    chains, draws = theta.sizes["chain"], theta.sizes["draw"]
    values = parameter_values(table, theta.values)
    coords = {"chain": theta["chain"].values, "draw": theta["draw"].values}
    variables: dict[str, xr.DataArray] = {}
    free = table[table.free > 0]
    two_level = bool((table.level > 0).any())
    for name, group in free.groupby(free.apply(_posterior_name, axis=1), sort=False):
        if len(group) > 1:
            levels = [level_name(v, level_names) for v in group.level]
            data = np.stack([values[..., i] for i in group.index], axis=-1)
            variables[name] = xr.DataArray(data, dims=("chain", "draw", "level"), coords={**coords, "level": levels})
        else:
            row = group.iloc[0]
            variables[name] = xr.DataArray(values[..., group.index[0]], dims=("chain", "draw"), coords=coords,
                                           attrs={"level": level_name(row.level, level_names)} if two_level else {})
    defined = table[table.op == ":="]
    if len(defined):
        labelled = table[(table.op != ":=") & table.label.notna()]
        scope = {row.label: values[..., i] for i, row in labelled.iterrows()}
        for name, draws_ in evaluate_definitions(list(zip(defined.lhs, defined.rhs)), scope).items():
            variables[name] = xr.DataArray(np.broadcast_to(draws_, (chains, draws)), dims=("chain", "draw"),
                                           coords=coords)
    if isinstance(cluster_effects, dict):  # a three-level model: the effects of levels 2 and 3
        variables.update(cluster_effects)
    elif cluster_effects is not None:
        variables["cluster_effects"] = cluster_effects
    return xr.Dataset(variables)


def _unit_effect_frame(effects: xr.DataArray, unit: str, sizes: dict, path_effects=None) -> pd.DataFrame:
    """Posterior mean, sd and 95% interval of each unit's effects (dims chain,
    draw, ``unit``, ``unit``_variable), with the unit's size, in the units' order;
    ``path_effects`` adds draws computed from them (a cluster's own indirect effects)."""
    effects = effects.stack(sample=("chain", "draw")).transpose("sample", unit, f"{unit}_variable")
    names = [str(v) for v in effects[f"{unit}_variable"].values]
    draws = {name: effects.values[:, :, k] for k, name in enumerate(names)}
    if path_effects is not None:
        draws.update(path_effects(draws))
    units = [str(c) for c in effects[unit].values]
    frames = []
    for name, values in draws.items():
        q = np.quantile(values, [0.025, 0.975], axis=0)
        frames.append(pd.DataFrame({unit: units, "variable": name, "mean": values.mean(0),
                                    "sd": values.std(0, ddof=1), "q2.5": q[0], "q97.5": q[1],
                                    "size": [sizes[c] for c in units]}))
    frame = pd.concat(frames, ignore_index=True)
    order = {c: i for i, c in enumerate(units)}
    return frame.sort_values(unit, key=lambda c: c.map(order), kind="stable").reset_index(drop=True)


@dataclass
class FitResult:
    """Posterior of a fitted model, with lavaan-like summaries and diagnostics.

    Attributes
    ----------
    idata
        ArviZ InferenceData (``posterior``, ``sample_stats``).
    table
        The parameter table the model was built from.
    info
        Facts about the run: rows, clusters, engine, sampler, chains, draws, seed.
    """

    idata: arviz.InferenceData  # noqa: F821 - a string under postponed annotations; arviz loads on demand
    table: pd.DataFrame
    info: dict
    prior_table: pd.DataFrame = field(repr=False)
    # computes the pointwise log-likelihood on first use (LOO, save): it costs a pass over all draws
    pointwise_source: object = field(default=None, repr=False)
    # the ModelSpec (with the data) of a fit made in this session; None for a loaded result
    spec: object = field(default=None, repr=False)

    def add_log_likelihood(self) -> bool:
        """Put the log-likelihood per draw of each cluster (or row) into
        ``idata.log_likelihood`` if it is not there yet; False if it cannot be computed."""
        if "log_likelihood" in self.idata.groups():
            return True
        pointwise = self.pointwise_source() if self.pointwise_source is not None else None
        if pointwise is None:
            return False
        self.idata.add_groups(log_likelihood=pointwise)
        return True

    # -- tables -------------------------------------------------------
    def summary(self) -> pd.DataFrame:
        """One row per parameter-table row: posterior mean, sd, median, 95% interval,
        R-hat and bulk/tail ESS. Fixed rows show their value with ``free=False``."""
        az = _import_arviz()
        records = []
        for row in self.table.itertuples():
            if getattr(row, "random", None):  # the coefficient is the level-2 slope variable (its own rows)
                continue
            record = dict(lhs=row.lhs, op=row.op, rhs=row.rhs if row.op != "~1" else "",
                          level=self.level_name(row.level), label=row.label or "",
                          free=bool(row.free > 0 or row.op == ":="))
            if record["free"]:
                draws = self.parameter_draws(row)
                quantiles = np.quantile(draws, [0.025, 0.5, 0.975])
                constant = np.ptp(draws) == 0
                record.update(mean=draws.mean(), sd=draws.std(ddof=1), median=quantiles[1],
                              **{"q2.5": quantiles[0], "q97.5": quantiles[2]},
                              r_hat=np.nan if constant else float(az.rhat(draws)),
                              ess_bulk=np.nan if constant else float(az.ess(draws, method="bulk")),
                              ess_tail=np.nan if constant else float(az.ess(draws, method="tail")))
            else:
                value = float(row.ustart)
                record.update(mean=value, sd=0.0, median=value, **{"q2.5": value, "q97.5": value},
                              r_hat=np.nan, ess_bulk=np.nan, ess_tail=np.nan)
            records.append(record)
        return pd.DataFrame.from_records(records, columns=SUMMARY_COLUMNS)

    def parameter_draws(self, row) -> np.ndarray:
        """(chains, draws) array of the parameter in a parameter-table ``row``
        (a row of :attr:`table`, or any object with lhs, op, rhs and level)."""
        variable = self.idata.posterior[_posterior_name(row)]
        if "level" in variable.dims:
            variable = variable.sel(level=self.level_name(row.level))
        return np.asarray(variable.values, dtype=float)

    def theta_draws(self) -> np.ndarray:
        """Free-parameter vector per draw, chains stacked: (chains * draws, n_free)."""
        free = self.table[self.table.free > 0].drop_duplicates("free").sort_values("free")
        return np.stack([self.parameter_draws(row).reshape(-1) for row in free.itertuples()], axis=1)

    def _level_structures(self):
        from bayes_msem.matrices import level_structures

        return level_structures(self.parameter_table())

    @property
    def cluster_columns(self) -> tuple[str, ...]:
        """The cluster columns of the levels above the rows, level 2 first (none in a single-level model)."""
        columns = [self.info.get("cluster")] + [upper["column"] for upper in self.info.get("upper_levels", [])]
        return tuple(str(c) for c in columns if c is not None)

    def level_name(self, level: int) -> str:
        """How the results name level ``level`` (1 the rows): ``within``,
        ``between``; in a three-level model ``within`` and the cluster columns."""
        return level_name(level, tuple(self.info.get("level_names") or ()))

    def parameter_table(self):
        """The :class:`~bayes_msem.partable.ParameterTable` (rows and variable roles) of the fitted model."""
        from dataclasses import replace

        from bayes_msem.partable import model_table

        table = model_table(self.info["model_text"], self.info.get("centering") or None,
                            self.info.get("covariates_brought_in") or (), cluster=self.cluster_columns)
        return replace(table, rows=self.table)

    def standardized(self) -> pd.DataFrame:
        """Standardized solution (lavaan's ``std.all``) per level: posterior mean,
        sd, median and 95% interval of each standardized parameter. In a
        random-slope model, within-level rows that involve a variable whose
        variance depends on the slopes are NaN, with a warning."""
        from bayes_msem.standardized import standardized_draws

        self._warn_slope_dependent("standardized values")
        theta = self.theta_draws()
        std = standardized_draws(self.table, self._level_structures(), theta, parameter_values(self.table, theta))
        rows = self.table[self.table.op != ":="]
        frame = rows[["lhs", "op", "rhs"]].copy()
        frame["level"] = [self.level_name(v) for v in rows.level]
        return frame.join(_describe(std[:, rows.index])).reset_index(drop=True)

    def r_squared(self) -> pd.DataFrame:
        """R-squared of each endogenous variable at each level (model-implied, per
        draw); NaN, with a warning, for variables whose variance depends on random slopes."""
        from bayes_msem.standardized import r_squared_draws

        self._warn_slope_dependent("R-squared")
        draws = r_squared_draws(self._level_structures(), self.table, self.theta_draws())
        frame = pd.DataFrame({"level": [self.level_name(level) for level, _ in draws],
                              "variable": [name for _, name in draws]})
        return frame.join(_describe(np.stack(list(draws.values()), axis=1)))

    def _warn_slope_dependent(self, what: str) -> None:
        import warnings

        from bayes_msem.standardized import slope_dependent

        for structure in self._level_structures():
            names = sorted(slope_dependent(structure))
            if names:
                warnings.warn(f"{what} involving {', '.join(names)} at level {self.level_name(structure.level)} are not "
                              "given (NaN): with random slopes their variance differs between clusters and includes "
                              "the slope variance, which needs a multilevel decomposition (Rights & Sterba 2019) "
                              "that is not built yet.", UserWarning, stacklevel=3)

    def icc(self) -> pd.DataFrame:
        """Model-based intraclass correlation of each variable split over the
        levels, per draw: between variance / (within + between variance). In a
        three-level model one row per variable and level above the rows (named
        by its cluster column): the share of variance at that level and above,
        the correlation of two rows in the same class, in the same school (a
        class-level variable split over classes and schools has 1 at the class
        level, its schools' share at the school level); in a cross-classified
        model each classification's own share."""
        from bayes_msem.standardized import icc_draws

        table = self.parameter_table()
        split = [name for name in table.observed_variables
                 if sum(name in roles.observed for roles in table.levels) > 1]
        if table.n_levels < 2 or not split:
            raise ValueError("ICCs need a two-level model with variables named at both levels")
        crossed = any(upper.get("crossed") for upper in self.info.get("upper_levels", []))
        draws = icc_draws(self._level_structures(), self.table, self.theta_draws(), split, crossed)
        if table.n_levels == 2:
            return pd.DataFrame({"variable": split}).join(_describe(draws[:, 0]))
        # three levels: per variable, the ICC of each level above the rows (rows in the same unit of it)
        columns = self.cluster_columns
        frames = [pd.DataFrame({"variable": split, "level": columns[k]}).join(_describe(draws[:, k]))
                  for k in range(draws.shape[1])]
        return pd.concat(frames, ignore_index=True).sort_values("variable", kind="stable").reset_index(drop=True)

    def priors(self) -> pd.DataFrame:
        """The prior of every free parameter, and whether it is a default."""
        return self.prior_table.copy()

    def effects(self) -> pd.DataFrame:
        """Indirect, total and contextual effects found from the model, and the
        user's ``:=`` definitions: posterior mean, sd, median, 95% interval and
        probability of direction (see :mod:`bayes_msem.effects`)."""
        from bayes_msem.effects import describe, effects_table
        from bayes_msem.matrices import level_structures

        table = self.parameter_table()
        moments = {level: self._covariate_moments(table, level) for level in range(2, table.n_levels + 1)}
        frame = effects_table(table, level_structures(table), self.theta_draws(), moments)
        defined = [dict(effect=name, level="", type="defined", source="", target="",
                        **describe(self.idata.posterior[name].values.ravel()))
                   for name in self.table.loc[self.table.op == ":=", "lhs"]]
        return pd.concat([frame, pd.DataFrame.from_records(defined, columns=frame.columns)], ignore_index=True)

    def _covariate_moments(self, table, level: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample mean and covariance of a level's covariates (lavaan's fixed.x values)."""
        names = table.level_roles(level).covariates
        rows = self.table[(self.table.level == level) & self.table.exo]
        value = lambda a, op, b: float(rows[(rows.op == op) & (((rows.lhs == a) & (rows.rhs == b))  # noqa: E731
                                                               | ((rows.lhs == b) & (rows.rhs == a)))].ustart.iloc[0])
        mean = np.array([value(n, "~1", "") for n in names])
        cov = np.array([[value(a, "~~", b) for b in names] for a in names])
        return mean, cov.reshape(len(names), len(names))

    def cluster_effects(self) -> pd.DataFrame:
        """Each cluster's latent means, random slopes and between factor scores,
        and its own indirect effect along every within-level path with a random
        slope (a_j * b_j): posterior mean, sd, 95% interval and cluster size
        (rows). In a three-level model also each level-3 unit's, with a
        ``level`` column naming each level's cluster column; each level lists
        its own part of a variable, and where a slope varies over level-3
        units too, ``"s (own)"`` gives each cluster's whole slope (its part
        plus its unit's)."""
        posterior = self.idata.posterior
        if "cluster_effects" not in posterior:
            raise ValueError("a single-level model has no cluster effects")
        sizes = dict(zip(self.info["cluster_labels"], self.info["cluster_sizes"]))
        frame = _unit_effect_frame(posterior["cluster_effects"], "cluster", sizes, self._cluster_path_effects)
        if "unit_effects" not in posterior:
            return frame
        upper = self.info["upper_levels"][0]
        top = _unit_effect_frame(posterior["unit_effects"], "unit", dict(zip(upper["labels"], upper["sizes"])))
        frames = [frame.assign(level=self.info["cluster"]), top.rename(columns={"unit": "cluster"}).assign(
            level=upper["column"])]
        return pd.concat(frames, ignore_index=True)[["level"] + list(frame.columns)]

    def _cluster_path_effects(self, cluster_draws: dict) -> dict[str, np.ndarray]:
        from bayes_msem.effects import cluster_path_draws, path_name, paths, regression_edges

        table = self.parameter_table()
        if not table.slopes:
            return {}
        values = parameter_values(self.table, self.theta_draws())
        found = [p for p in paths(regression_edges(table, 1)) if any(e.slope for e in p)]
        whole = self._slopes_with_unit_parts(table, cluster_draws)
        own = {**cluster_draws, **whole}
        return {**{f"{s} (own)": draws for s, draws in whole.items()},
                **{path_name(p): cluster_path_draws(p, values, own) for p in found}}

    def _slopes_with_unit_parts(self, table, cluster_draws: dict) -> dict[str, np.ndarray]:
        """Each cluster's own random slopes, (samples, clusters), where a slope
        also varies over level-3 units: its cluster part plus its unit's part
        (``cluster_effects`` keeps the parts apart, as for intercepts)."""
        posterior = self.idata.posterior
        if "unit_effects" not in posterior:
            return {}
        units = posterior["unit_effects"].stack(sample=("chain", "draw")).transpose("sample", "unit", "unit_variable")
        names = [str(v) for v in units["unit_variable"].values]
        parts = [s for s in table.slopes if s in names and s in cluster_draws]  # of the rows' slopes
        if not parts:
            return {}
        upper = self.info["upper_levels"][0]
        if upper["parents"] is None:  # crossed: a slope's whole value belongs to a cell, not to a cluster
            return {}
        position = {label: k for k, label in enumerate(str(u) for u in units["unit"].values)}
        parent = np.array([position[label] for label in upper["parents"]])
        return {s: cluster_draws[s] + units.values[:, parent, names.index(s)] for s in parts}

    def plot_cluster_effects(self, variable: str, ax=None):
        """Caterpillar plot: each cluster's posterior mean and 95% interval of
        ``variable`` (a name in ``cluster_effects().variable``), sorted."""
        from bayes_msem.plots import caterpillar_plot

        frame = self.cluster_effects()
        if variable not in set(frame.variable):
            raise ValueError(f"no cluster effect {variable!r}; choose from {sorted(set(frame.variable))}")
        return caterpillar_plot(frame, variable, ax)

    def coverage(self) -> pd.DataFrame:
        """Covariance coverage of the level-1 outcomes: the share of rows where
        both variables of a pair are observed (lavaan's ``lavInspect(fit,
        "coverage")``); the diagonal is each variable's share observed. All
        ones without missing values."""
        missing = self.info.get("missing")
        if not missing:
            names = list(self.spec.within.observed) if self.spec is not None else []
            return pd.DataFrame(1.0, index=names, columns=names)
        return pd.DataFrame(missing["coverage"]).T

    def impute(self, m: int = 20, random_seed: int | None = None) -> pd.DataFrame:
        """``m`` completed data sets, each with the missing values drawn from
        their posterior predictive distribution given one posterior draw (Mplus
        DATA IMPUTATION): one long DataFrame with ``.imp`` (1..m) and ``.row``
        (the data's index label). For analyses in other software, combined by
        Rubin's rules; see :mod:`bayes_msem.imputation`."""
        from bayes_msem.imputation import impute

        return impute(self, m, random_seed)

    def report(self, path) -> None:
        """Write a self-contained HTML report (see :mod:`bayes_msem.html_report`)."""
        from bayes_msem.html_report import write_report

        write_report(self, path)

    def loo(self):
        """Leave-one-cluster-out cross-validation by Pareto-smoothed importance
        sampling (ArviZ's ``loo``): the unit is a cluster in a two-level model, a
        level-3 unit in a three-level one, a row in a single-level one, and in a
        cross-classified model a row given its two units' sampled effects (it
        estimates the prediction of new rows of the same units). Pareto k above
        0.7 flags units that the approximation cannot handle. Two-level models
        with ordinal variables integrate each cluster's effects by importance
        sampling at each of at most 1000 draws (:mod:`bayes_msem.engines.ordinal_clusters`)."""
        from bayes_msem.checking import _unit

        self.add_log_likelihood()
        _unit(self)
        az = _import_arviz()
        return az.loo(self.idata, pointwise=True)

    def ppp(self, n_draws: int = 500, seed: int | None = None):
        """Posterior predictive p-value of the likelihood-ratio chi-square against
        the saturated model (as Mplus and blavaan), with predictive checks of the
        within and between covariances (``.covariances``): see
        :mod:`bayes_msem.predictive`. Computed once from ``n_draws`` draws, then
        kept in ``idata.predictive_check`` (and saved with the result)."""
        from bayes_msem.predictive import check_from_dataset, check_to_dataset, posterior_predictive_check

        if "predictive_check" in self.idata.groups():
            return check_from_dataset(self.idata["predictive_check"])
        if self.spec is None:
            raise ValueError("this result was saved without a predictive check and the data are not stored with it; "
                             "refit the model and call result.ppp() before saving")
        check = posterior_predictive_check(self.spec, self.theta_draws(), n_draws=n_draws,
                                           seed=self.info.get("random_seed") if seed is None else seed)
        with warnings.catch_warnings():  # ArviZ warns about group names outside its schema
            warnings.simplefilter("ignore", UserWarning)
            self.idata.add_groups(predictive_check=check_to_dataset(check))
        return check

    def prior_sensitivity(self) -> pd.DataFrame:
        """Power-scaling sensitivity of every parameter to its prior and to the
        likelihood, without refitting (Kallioinen et al. 2023; see
        :mod:`bayes_msem.prior_checks`). Values above 0.05 mean the posterior
        moves when the prior (or likelihood) is made slightly stronger or weaker;
        ``diagnosis`` names prior-data conflict and priors that dominate."""
        from bayes_msem.checking import _unit
        from bayes_msem.prior_checks import powerscale_sensitivity

        if "log_prior" not in self.idata.groups():
            raise ValueError("this result has no log prior (fitted with an older version); refit it")
        self.add_log_likelihood()
        _unit(self)
        parameters = set(self.table[self.table.free > 0].apply(_posterior_name, axis=1))
        names = [n for n in self.idata.posterior.data_vars if n in parameters]
        return powerscale_sensitivity(self.idata, names)

    def try_ppp(self):
        """:meth:`ppp` where it can be computed, else None (random slopes, or a
        loaded result saved without it)."""
        try:
            return self.ppp()
        except ValueError:
            return None

    def waic(self):
        """WAIC (ArviZ's ``waic``) with the same unit as :meth:`loo`: a whole
        cluster in a two-level model. LOO is the better estimate; WAIC is here
        for comparison with software that reports it."""
        from bayes_msem.checking import _unit

        self.add_log_likelihood()
        _unit(self)
        az = _import_arviz()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # ArviZ's p_waic > 0.4 warning; LOO's k says more
            return az.waic(self.idata, pointwise=True)

    # -- diagnostics --------------------------------------------------
    def diagnostics(self) -> dict:
        """Divergences, the worst R-hat and the smallest ESS over all free and defined parameters."""
        summary = self.summary()
        estimated = summary[summary.free]
        diverging = int(self.idata.sample_stats["diverging"].sum()) if "diverging" in self.idata.sample_stats else 0
        worst = estimated.sort_values("r_hat", ascending=False)
        return {
            "divergences": diverging,
            "max_r_hat": float(estimated.r_hat.max()) if len(estimated) else np.nan,
            "min_ess_bulk": float(estimated.ess_bulk.min()) if len(estimated) else np.nan,
            "min_ess_tail": float(estimated.ess_tail.min()) if len(estimated) else np.nan,
            "high_r_hat": [_row_name(r) for r in worst[worst.r_hat > RHAT_LIMIT].itertuples()],
            "low_ess": [_row_name(r) for r in estimated[(estimated.ess_bulk < self._ess_limit())
                                                       | (estimated.ess_tail < self._ess_limit())].itertuples()],
        }

    def _ess_limit(self) -> float:
        return ESS_PER_CHAIN * self.info.get("chains", 4)

    def diagnostic_messages(self) -> list[str]:
        """Plain-language warnings with advice; empty when all checks pass. The
        advice names the command line's options when the command line made the
        fit (``info["interface"] == "cli"``)."""
        d = self.diagnostics()
        words = _ADVICE["cli" if self.info.get("interface") == "cli" else "python"]
        messages = []
        if d["divergences"]:
            messages.append(f"{d['divergences']} divergent transitions: the posterior may be biased. Refit with "
                            f"{words['target_accept']}; if they persist, look for near-zero variances or weakly "
                            "identified parameters and consider more informative priors.")
        if d["high_r_hat"]:
            messages.append(f"R-hat above {RHAT_LIMIT} for {_some(d['high_r_hat'])}: chains disagree. "
                            f"Run more {words['tune_draws']}, and check {words['trace']}.")
        if d["low_ess"]:
            messages.append(f"effective sample size below {self._ess_limit():.0f} for "
                            f"{_some(d['low_ess'])}: intervals are imprecise. Run more {words['draws']}.")
        if messages:
            messages.extend(self.likely_causes())
        return messages

    def likely_causes(self) -> list[str]:
        """What often makes a fit mix badly, where this posterior shows it: a
        variance near zero (a funnel), regression weights the data cannot tell
        apart (collinear predictors), a between level resting on few clusters."""
        causes = []
        rows = self.table[(self.table.free > 0) & (self.table.op != ":=")]
        units = dict(zip(range(1, len(self.spec.units) + 1), self.spec.units)) if self.spec is not None else {}
        near_zero = []
        for row in rows[(rows.op == "~~") & (rows.lhs == rows.rhs)].itertuples():
            unit = units.get(int(row.free), (0.0, np.nan))[1]
            sd = np.sqrt(np.median(self.parameter_draws(row)))
            if sd < NEAR_ZERO_SD * unit:
                near_zero.append(f"{_row_name(row._replace(level=self.level_name(row.level)))} (SD {sd:.2g}, against "
                                 f"{unit:.2g} for the variable)")
        if near_zero:
            causes.append(f"a variance near zero: {_some(near_zero, 3)}. A variance at its boundary makes a funnel "
                          "that samplers cross slowly; if the model does not need it, fix it at 0 (e.g. y1 ~~ 0*y1 in "
                          "its level block).")
        collinear = []
        regressions = rows[rows.op == "~"]
        for (lhs, level), group in regressions.groupby(["lhs", "level"]):
            draws = {row.rhs: self.parameter_draws(row).reshape(-1) for row in group.itertuples()}
            names = list(draws)
            for i, a in enumerate(names):
                for b in names[i + 1:]:
                    r = np.corrcoef(draws[a], draws[b])[0, 1]
                    if abs(r) > COLLINEAR_CORRELATION:
                        collinear.append(f"{a} and {b} in {lhs} ~ {a} + {b}" + (f" ({self.level_name(level)})" if level
                                                                                 else "") + f" (r = {r:.2f})")
        if collinear:
            causes.append(f"predictors the data barely tell apart (the posterior correlation of their weights): "
                          f"{_some(collinear, 3)}. Consider combining them or a more informative prior.")
        clusters = self.info.get("cluster_sizes") or []
        if self.info.get("cluster") and 0 < len(clusters) < FEW_CLUSTERS_FOR_ADVICE:
            causes.append(f"only {len(clusters)} clusters: between-level variances rest on few values and lean on "
                          "their priors.")
        return ["likely cause: " + cause for cause in causes]

    def warn_diagnostics(self) -> None:
        for message in self.diagnostic_messages():
            warnings.warn(message, UserWarning, stacklevel=3)

    # -- output -------------------------------------------------------
    def __str__(self) -> str:
        from bayes_msem.report import summary_text

        return summary_text(self)

    def save(self, path) -> None:
        """Write the result to a netCDF file that :func:`load_result` reads back
        (with the pointwise log-likelihood and, where the model has a saturated
        model, the predictive check, so that LOO and PPP work on the loaded result)."""
        self.add_log_likelihood()
        self.try_ppp()
        idata = self.idata
        attrs = idata.posterior.attrs
        attrs["bayes_msem_table"] = self.table.to_json(orient="split")
        attrs["bayes_msem_info"] = json.dumps(self.info, default=_json_default)
        attrs["bayes_msem_priors"] = self.prior_table.to_json(orient="split")
        idata.to_netcdf(str(path))


# The same advice in the words of each interface.
_ADVICE = {
    "python": {"target_accept": "target_accept=0.95", "tune_draws": "tune and draws", "draws": "draws",
               "trace": "the trace plots (az.plot_trace(result.idata))"},
    "cli": {"target_accept": "--target-accept 0.95", "tune_draws": "--tune and --draws", "draws": "--draws",
            "trace": "the rank plots in report.html (written with --out DIR)"},
}


def _some(names: list[str], shown: int = 5) -> str:
    """The first few names, and how many more there are."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _describe(draws: np.ndarray) -> pd.DataFrame:
    """Posterior mean, sd, median and 95% interval of each column of (draws, k)."""
    q = np.quantile(draws, [0.025, 0.5, 0.975], axis=0)
    return pd.DataFrame({"mean": draws.mean(0), "sd": draws.std(0, ddof=1), "median": q[1],
                         "q2.5": q[0], "q97.5": q[2]})


def _row_name(row) -> str:
    name = row.lhs if row.op == ":=" else f"{row.lhs}{row.op}{row.rhs}"
    return f"{name} ({row.level})" if row.level else name


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__}")


def load_result(path) -> FitResult:
    """Read a result written by :meth:`FitResult.save`."""
    az = _import_arviz()
    idata = az.from_netcdf(str(path))
    attrs = idata.posterior.attrs
    from io import StringIO

    table = pd.read_json(StringIO(attrs["bayes_msem_table"]), orient="split")
    for column in ("label", "prior", "random"):
        if column in table:
            table[column] = table[column].astype(object).where(table[column].notna(), None)
    priors = pd.read_json(StringIO(attrs["bayes_msem_priors"]), orient="split")
    return FitResult(idata=idata, table=table, info=json.loads(attrs["bayes_msem_info"]), prior_table=priors)
