"""The user's entry point: ``Model(syntax, data, cluster=...)`` runs stages 1-4
(parse, parameter table, data checks, matrices) at once, so every error shows
before any sampling; ``.fit()`` builds the PyMC model and samples.

Example
-------
>>> import bayes_msem as bm
>>> model = bm.Model(bm.example_model("demo_twolevel"), bm.example_data("demo_twolevel"), cluster="cluster")
>>> model.partable()[["lhs", "op", "rhs", "level"]].head(2).values.tolist()
[['fw', '=~', 'y1', 'within'], ['fw', '=~', 'y2', 'within']]
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd

from bayes_msem import __version__
from bayes_msem.data import covariates_with_missing, describe_missing
from bayes_msem.defined import check_definitions
from bayes_msem.engines import choose_engine, get_engine
from bayes_msem.ordinal import code_ordinal
from bayes_msem.partable import build_partable, model_table
from bayes_msem.priors import DefaultPriors
from bayes_msem.spec import ModelSpec, build_spec
from bayes_msem.syntax import parse_model

__all__ = ["Model"]


def _covariate_note(counts: dict[str, int]) -> str:
    """The announcement that covariates with missing values were brought into the model."""
    listing = ", ".join(f"{name} ({k} rows)" for name, k in counts.items())
    return (f"covariates with missing values brought into the model: {listing}; their distribution given the "
            "complete covariates is estimated, so no row is dropped for them")


def _modelled_variables(syntax: str, centering: dict[str, str], cluster) -> tuple[str, ...]:
    """The observed variables the model text models (outcomes and indicators,
    not covariates), read before the data say how many categories the
    ordinal ones have: threshold lines left out."""
    parsed = parse_model(syntax, cluster)
    table = build_partable(replace(parsed, rows=tuple(r for r in parsed.rows if r.op != "|")), centering=centering)
    return tuple(n for roles in table.levels for n in roles.observed if n not in table.derived)


MODEL_KINDS = {1: "single-level", 2: "two-level", 3: "three-level"}


def model_kind(spec: ModelSpec) -> str:
    """``single-level``, ``two-level``, ``three-level`` or ``cross-classified``."""
    return "cross-classified" if spec.data.crossed else MODEL_KINDS[len(spec.layout.levels)]


def _unit_counts(upper, cluster_index: np.ndarray) -> dict:
    """What the results say of a level above the clusters: its units, how many
    clusters each holds or meets where crossed (fewest, most), its rows per
    unit, whether it crosses the clusters and, where it does not, each
    cluster's unit (``parents``, in the clusters' order)."""
    held = np.bincount(np.unique(np.stack([upper.row_index, cluster_index]), axis=1)[0], minlength=upper.n_units)
    rows = np.bincount(upper.row_index, minlength=upper.n_units)
    return {"column": upper.column, "units": upper.n_units, "fewest": int(held.min()), "most": int(held.max()),
            "labels": [str(label) for label in upper.labels], "sizes": rows.tolist(), "crossed": upper.crossed,
            "parents": None if upper.crossed else [str(upper.labels[i]) for i in upper.parent_index]}


def check_seed(seed) -> None:
    """Refuse a seed that NumPy and JAX would reject only after the model has compiled."""
    if seed is None:
        return
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"random_seed must be a non-negative whole number or None, not {str(seed)!r}")


class Model:
    """A Bayesian SEM with one, two or three levels.

    Parameters
    ----------
    syntax
        lavaan model text; ``level: 1`` / ``level: 2`` blocks make it two-level,
        a ``level: 3`` block three-level.
    data
        pandas DataFrame, one row per observation.
    cluster
        Column that identifies clusters (two-level models); in a three-level
        model a list from level 2 upwards, as ``["class", "school"]``.
    missing
        ``"fiml"`` (default; ``"ml"`` is the same, as lavaan names it): missing values of
        modelled variables are handled under MAR by full information, every
        observed value used and no row dropped. ``"listwise"`` drops
        incomplete rows (with a warning); ``"error"`` stops at the first.
    priors
        Default priors by parameter type: a :class:`~bayes_msem.priors.DefaultPriors`
        or a dict such as ``{"slope_sd": 2.0}``. Single parameters take
        ``prior("...")`` in the syntax.
    centering
        Per level-1 predictor: ``"latent"`` (default: latent within and between
        parts), ``"cluster-mean"`` (observed deviation within, observed cluster
        mean between) or ``"none"`` (the raw value, as ordinary multilevel
        regression; within and between effects are then conflated).
    ordered
        Ordinal (or binary) variables, modelled by a probit link (a latent
        response cut by thresholds; lavaan's ``ordered=``): a list of names,
        or True for every modelled column with few integer values. Columns
        hold whole numbers or ordered pandas Categoricals.
    engine
        ``"auto"`` (default): ``"collapsed"`` where it is exact, else ``"latent"``.
        ``"collapsed"`` integrates the cluster effects out and draws them after
        sampling; ``"latent"`` samples them as explicit random variables.
    """

    def __init__(self, syntax: str, data: pd.DataFrame, cluster: str | list[str] | None = None, *, missing: str = "fiml",
                 priors: DefaultPriors | dict | None = None, centering: dict[str, str] | None = None,
                 engine: str = "auto", ordered=None):
        self.syntax = syntax
        self.centering = dict(centering or {})
        data, self.ordinal = code_ordinal(data, ordered, _modelled_variables(syntax, self.centering, cluster))
        self.ordered = self.ordinal.n_categories  # variable -> number of categories
        table = build_partable(syntax, centering=self.centering, ordered=self.ordered, cluster=cluster)
        self.modelled_covariates = covariates_with_missing(table, data) if missing in ("fiml", "ml") else {}
        if self.modelled_covariates:
            table = model_table(syntax, self.centering, self.modelled_covariates, self.ordered, cluster)
            warnings.warn(f"{_covariate_note(self.modelled_covariates)} (see the summary's parameters).",
                          UserWarning, stacklevel=2)
        check_definitions(table.rows)
        self.spec: ModelSpec = build_spec(table, data, cluster=cluster, missing=missing, priors=priors)
        self.engine, self.engine_reason = choose_engine(engine, self.spec)

    def __repr__(self) -> str:
        data = self.spec.data
        kind = model_kind(self.spec)
        clusters = f", {data.n_clusters} clusters of {self.spec.cluster!r}" if self.spec.layout.multilevel else ""
        clusters += "".join(f" {'crossed with' if upper.crossed else 'in'} {upper.n_units} units of {upper.column!r}"
                            for upper in data.upper_levels)
        return (f"<bayes_msem.Model: {kind}, {len(self.spec.priors)} free parameters, {data.n_rows} rows{clusters}, "
                f"engine {self.engine!r}>")

    def partable(self) -> pd.DataFrame:
        """The parameter table (lavaan's columns), with level names."""
        rows = self.spec.table.rows.copy()
        rows["level"] = [self.spec.table.level_name(v) for v in rows.level]
        return rows

    def priors(self) -> pd.DataFrame:
        """The prior of every free parameter."""
        return self.spec.prior_table()

    def fit(self, draws: int = 1000, *, tune: int = 1000, chains: int = 4, random_seed: int | None = None,
            sampler: str = "auto", target_accept: float = 0.8, progressbar: bool = True,
            reuse_compiled: bool = False):
        """Sample the posterior with NUTS and return a :class:`~bayes_msem.results.FitResult`.

        The same ``random_seed`` gives the same draws. Diagnostics that fail
        (divergences, R-hat > 1.01, low ESS) are raised as warnings with advice.
        ``reuse_compiled=True`` (numpyro): the sampler is compiled with the
        data as arguments and kept, so a later fit of a model of the same
        shape on other data (a Monte Carlo replication) skips compilation;
        no progress bar while sampling.
        """
        from bayes_msem.results import FitResult, build_posterior
        from bayes_msem.sampling import choose_sampler, run_nuts

        if draws < 1 or tune < 0 or chains < 1:
            raise ValueError("draws and chains must be positive and tune non-negative")
        check_seed(random_seed)
        backend = choose_sampler(sampler)
        engine = get_engine(self.engine)
        raw = run_nuts(engine.build(self.spec, backend), draws=draws, tune=tune, chains=chains,
                       random_seed=random_seed, sampler=backend, target_accept=target_accept, progressbar=progressbar,
                       var_names=engine.sampled_variables(self.spec), chain_method=engine.chain_method(self.spec),
                       n_clusters=self.spec.data.n_clusters, reuse_compiled=reuse_compiled,
                       curvature_start=engine.curvature_start(self.spec))
        if progressbar and self.spec.layout.multilevel:
            print("Drawing each cluster's effects for every posterior draw...", file=sys.stderr)
        effects = engine.cluster_effects(self.spec, raw.posterior, random_seed)
        posterior = build_posterior(self.spec.table.rows, raw.posterior["parameters"], effects,
                                    self.spec.table.level_names)
        idata = raw.copy()
        del idata.posterior
        idata.add_groups(posterior=posterior, log_prior=self._log_prior(raw.posterior["parameters"]))
        data = self.spec.data
        info = {
            "version": __version__, "engine": self.engine, "engine_reason": self.engine_reason, "sampler": backend,
            "model_type": f"{model_kind(self.spec)} SEM",
            "upper_levels": [_unit_counts(upper, data.cluster_index) for upper in data.upper_levels],
            "n_rows": data.n_rows, "n_dropped": data.n_dropped, "dropped_reason": data.dropped_reason,
            "missing": describe_missing(data, self.spec.within.observed, self.spec.table.between_outcomes),
            "modelled_covariates": _covariate_note(self.modelled_covariates) if self.modelled_covariates else "",
            "covariates_brought_in": list(self.modelled_covariates),
            "cluster": self.spec.cluster,
            "level_names": list(self.spec.table.level_names),
            "cluster_labels": [str(c) for c in data.cluster_labels], "cluster_sizes": data.cluster_sizes.tolist(),
            "chains": chains, "draws": draws, "tune": tune, "random_seed": random_seed,
            "target_accept": target_accept, "model_text": self.syntax, "centering": self.centering,
            "default_priors_changed": self.spec.default_priors.changed(),
            # what the codes 0, 1, ... of each ordinal variable stand for (impute() writes the user's categories)
            "ordinal_categories": {name: [value.item() if hasattr(value, "item") else value for value in values]
                                   for name, values in self.ordinal.categories.items()},
        }
        parameters = raw.posterior["parameters"]
        sampled_effects = {name: raw.posterior[name].values for name in ("cluster_effects", "unit_effects")
                           if name in raw.posterior}
        result = FitResult(idata=idata, table=self.spec.table.rows, info=info, prior_table=self.priors(),
                           pointwise_source=lambda: self._pointwise_log_likelihood(parameters, sampled_effects),
                           spec=self.spec)
        result.warn_diagnostics()
        return result

    def sample_prior_predictive(self, draws: int = 500, random_seed: int | None = None):
        """Draw parameters from the priors and a data set for each (covariates as
        observed): ArviZ InferenceData with ``prior``, ``prior_predictive`` and
        ``observed_data``. Look at it before fitting to see whether the priors
        allow the data you expect (``az.plot_ppc(idata, group="prior")``)."""
        from bayes_msem.prior_checks import sample_prior_predictive

        return sample_prior_predictive(self.spec, draws, random_seed)

    def _log_prior(self, parameters):
        """log prior density per posterior draw: ArviZ's ``log_prior`` group,
        which power-scaling sensitivity needs."""
        import xarray as xr

        from bayes_msem.prior_checks import log_prior

        values = parameters.values
        total = log_prior(self.spec, values.reshape(-1, values.shape[-1])).reshape(values.shape[:2])
        return xr.Dataset({"prior": xr.DataArray(total, dims=("chain", "draw"),
                                                 coords={"chain": parameters["chain"].values,
                                                         "draw": parameters["draw"].values})})

    def _pointwise_log_likelihood(self, parameters, sampled_effects: dict):
        """Log-likelihood per draw of each cluster (cluster effects integrated out),
        each level-3 unit, or, in a single-level or cross-classified model, each
        row: the units of LOO. ``sampled_effects``: the latent engine's
        ``cluster_effects`` and ``unit_effects``, where it sampled them."""
        import xarray as xr

        engine = get_engine(self.engine)
        step = engine.loo_draw_step(self.spec, parameters.sizes["chain"] * parameters.sizes["draw"])
        if step > 1:  # every chain keeps the same draws, so PSIS's relative efficiency stays per chain
            parameters = parameters.isel(draw=slice(None, None, step))
            sampled_effects = {name: values[:, ::step] for name, values in sampled_effects.items()}
        values = engine.unit_log_likelihood(self.spec, parameters.values, sampled_effects.get("cluster_effects"),
                                            sampled_effects.get("unit_effects"))
        if values is None:
            return None  # no closed-form marginal likelihood per cluster
        coords = {"chain": parameters["chain"].values, "draw": parameters["draw"].values}
        if self.spec.data.crossed:  # a row given its units' effects: the likelihood factors over rows only
            unit, coords["row"] = "row", self.spec.data.row_labels
        elif self.spec.data.upper_levels:  # the units of the top level (schools, with classes in schools)
            unit, coords["unit"] = "unit", [str(c) for c in self.spec.data.upper_levels[-1].labels]
        elif self.spec.layout.multilevel:
            unit, coords["cluster"] = "cluster", [str(c) for c in self.spec.data.cluster_labels]
        else:  # the user's row labels, whatever the order of the rows
            unit, coords["row"] = "row", self.spec.data.row_labels
        return xr.Dataset({"loglik": xr.DataArray(values, dims=("chain", "draw", unit), coords=coords)})
