"""Simulation-based calibration (SBC; Talts et al. 2018): does the fitted
posterior have the spread it claims, for data the model itself generates?

Each replication draws the parameters from the priors, simulates a data set of
the design from them, fits the model with those same priors and records the
rank of every true value among (thinned) posterior draws. If sampler and model
are right, each parameter's ranks are uniform over 0..L; a U shape means
intervals too narrow, a hump too wide, a slope a bias.

The default priors scale with the data (:mod:`bayes_msem.priors`), so every
simulated data set would otherwise bring priors of its own. SBC needs one prior:
they are resolved once, on a data set simulated at the population's default
values (the *template*), and every fit uses them (:func:`frozen_prior_model`).

Ordinal variables (``ordered=``) need their threshold lines in the syntax
(they say how many categories there are), best with priors that keep every
category populated. A draw whose simulated data leave a category empty is
drawn again, parameters and data together: the rejection depends on the data
alone, so the posterior given the kept data, and with it the ranks' uniformity,
is unchanged (the kept pairs are draws of the joint given that event).

Replications run on the same Dask machinery as :func:`~bayes_msem.study.simulation_study`,
with seeds from ``SeedSequence(random_seed, spawn_key=(0, replication))``,
a store and ``resume``.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

__all__ = ["calibration_check", "CalibrationResult", "rank_uniformity", "frozen_prior_model", "plot_ranks"]

THIN_TO = 99  # posterior draws a truth is ranked among: ranks 0..99, ten of each per bin of ten
MAX_DRAWS = 100  # draws of parameters and data per replication before an empty category stops it


def _template_thresholds(syntax: str, ordered: tuple[str, ...]) -> dict[str, float]:
    """Thresholds for the template's data: each ordinal variable's threshold
    lines cut the standard normal into equally likely categories."""
    from scipy import stats

    from bayes_msem.syntax import parse_model

    rows = parse_model(syntax).rows
    values = {}
    for name in ordered:
        count = sum(1 for r in rows if r.op == "|" and r.lhs == name)
        if count == 0:
            raise ValueError(f"calibrating ordinal {name!r} needs its threshold lines in the syntax, which say how "
                             f"many categories it has, e.g. '{name} | prior(\"normal(0, 1)\")*t1 + "
                             f"prior(\"normal(0, 1)\")*t2' for three (priors that keep every category populated)")
        values.update({f"{name}|t{k}": float(stats.norm.ppf(k / (count + 1))) for k in range(1, count + 1)})
    return values


def _template(syntax: str, design: dict, ordered: tuple[str, ...] = ()):
    """The model on a data set simulated at the default values: whose priors every replication uses."""
    from bayes_msem.model import Model
    from bayes_msem.simulate import simulate_data
    from bayes_msem.study import _cluster_sizes
    from bayes_msem.syntax import parse_model

    data = simulate_data(syntax, _template_thresholds(syntax, ordered), n_clusters=int(design["clusters"]),
                         cluster_size=_cluster_sizes(design, 0), seed=0, ordered=list(ordered))
    cluster = "cluster" if parse_model(syntax).n_levels == 2 else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Model(syntax, data, cluster=cluster, ordered=list(ordered) or None)


def frozen_prior_model(syntax: str, data: pd.DataFrame, cluster: str | None, template):
    """``Model(syntax, data, cluster)`` with the priors of ``template`` (a
    :class:`~bayes_msem.model.Model` of the same syntax, whose ordinal
    variables it keeps) instead of priors scaled to ``data``. Only the priors
    change: the sampler's internal scaling still follows ``data``."""
    from bayes_msem.model import Model

    model = Model(syntax, data, cluster=cluster, ordered=list(template.ordered) or None)
    model.spec = replace(model.spec, priors=template.spec.priors, covariance_blocks=template.spec.covariance_blocks,
                         default_priors=template.spec.default_priors)
    return model


@dataclass(frozen=True)
class _CalibrationUnit:
    """One replication of a calibration check."""

    replication: int
    design: dict
    syntax: str
    fit_kwargs: dict
    random_seed: int
    thin_to: int
    ordered: tuple[str, ...] = ()
    design_index: int = 0  # the store's folder layout is the studies'

    def seeds(self) -> tuple[int, int, int]:
        """Seeds for the parameters, the data and the sampler."""
        sequence = np.random.SeedSequence(self.random_seed, spawn_key=(0, self.replication))
        return tuple(int(s) for s in sequence.generate_state(3, dtype=np.uint32))


def draw_replication(unit: _CalibrationUnit, template) -> tuple[list[str], np.ndarray, pd.DataFrame, int]:
    """The free parameters' names, their draw from the priors, the data
    simulated from it, and how many draws before it left a category of an
    ordinal variable empty (and were drawn again, parameters and data together)."""
    from bayes_msem.prior_checks import prior_draws
    from bayes_msem.simulate import _row_name, simulate_data
    from bayes_msem.study import _cluster_sizes

    parameter_seed, data_seed, _ = unit.seeds()
    parameter_rng = np.random.default_rng(parameter_seed)
    names = [_row_name(template.spec.table, r) for r in template.spec.table.free_rows().itertuples()]
    for attempt in range(MAX_DRAWS):
        seed = data_seed if attempt == 0 else np.random.SeedSequence([data_seed, attempt])
        truth = prior_draws(template.spec, 1, parameter_rng)[0]
        data = simulate_data(unit.syntax, dict(zip(names, truth)), n_clusters=int(unit.design["clusters"]),
                             cluster_size=_cluster_sizes(unit.design, data_seed), seed=seed,
                             ordered=list(unit.ordered))
        if all(data[name].nunique() == count for name, count in template.ordered.items()):
            return names, truth, data, attempt
    raise ValueError(f"in {MAX_DRAWS} draws from the priors every simulated data set left a category of "
                     f"{', '.join(template.ordered)} empty: give the thresholds priors closer to the latent "
                     f"responses' scale, e.g. prior(\"normal(0, 1)\")")


def run_calibration_unit(unit: _CalibrationUnit) -> pd.DataFrame:
    """Draw parameters from the priors, simulate, fit with the same priors and
    return the rank of each true value among ``unit.thin_to`` posterior draws."""
    from bayes_msem.sampling import free_compiled_programs
    from bayes_msem.study import FREE_EVERY, _pin_threads, failed_unit, finished_unit, reuses_sampler

    _pin_threads()
    fit_seed = unit.seeds()[2]
    base = {"design": 0, "replication": unit.replication}
    start = time.perf_counter()
    try:
        template = _template(unit.syntax, unit.design, unit.ordered)
        names, truth, data, redraws = draw_replication(unit, template)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # diagnostics are recorded per replication instead
            model = frozen_prior_model(unit.syntax, data, template.spec.cluster, template)
            result = model.fit(random_seed=fit_seed, progressbar=False,
                               **{"reuse_compiled": reuses_sampler(unit.design), **unit.fit_kwargs})
        draws = result.theta_draws()
        diagnostics = result.diagnostics()
    except Exception as error:  # noqa: BLE001 - a failed replication is a result of the check
        return failed_unit(base, error, start)
    finally:
        free_compiled_programs(every=FREE_EVERY)
    kept = draws[np.linspace(0, len(draws) - 1, unit.thin_to).round().astype(int)]
    frame = pd.DataFrame({"parameter": names, "true": truth, "rank": (kept < truth).sum(axis=0)})
    if unit.ordered:
        frame["redraws"] = redraws
    return finished_unit(frame, base, diagnostics, start)


def rank_uniformity(ranks: pd.DataFrame, thin_to: int = THIN_TO, bins: int = 10) -> pd.DataFrame:
    """Per parameter: replications, the chi-square statistic of the ranks'
    histogram (``bins`` equal bins of the ``thin_to + 1`` possible ranks)
    against uniform, its p-value, and the share of ranks in the outer 5% on
    each side (about 0.05 each when calibrated)."""
    from scipy import stats

    fitted = ranks[ranks.error.isna()]
    edges = np.linspace(0, thin_to + 1, bins + 1)
    rows = []
    for parameter, group in fitted.groupby("parameter", sort=False):
        counts, _ = np.histogram(group["rank"], bins=edges)
        expected = len(group) / bins
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        share = group["rank"] / thin_to
        rows.append({"parameter": parameter, "replications": len(group), "chi2": chi2,
                     "p_value": float(stats.chi2.sf(chi2, bins - 1)), "low_5%": float((share < 0.05).mean()),
                     "high_5%": float((share > 0.95).mean())})
    return pd.DataFrame(rows)


def plot_ranks(ranks: pd.DataFrame, thin_to: int = THIN_TO, bins: int = 10, columns: int = 4):
    """Rank histograms, one per parameter, with the band a uniform histogram
    stays in 99% of the time per bin: a matplotlib Figure."""
    import matplotlib.pyplot as plt
    from scipy import stats

    fitted = ranks[ranks.error.isna()]
    parameters = list(dict.fromkeys(fitted.parameter))
    rows = -(-len(parameters) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3 * columns, 2.2 * rows), squeeze=False,
                                constrained_layout=True)
    edges = np.linspace(0, thin_to + 1, bins + 1)
    for ax, parameter in zip(axes.flat, parameters):
        values = fitted[fitted.parameter == parameter]["rank"]
        low, high = stats.binom.ppf([0.005, 0.995], len(values), 1 / bins)
        ax.axhspan(low, high, color="lightgrey")
        ax.hist(values, bins=edges, color="tab:blue", edgecolor="white")
        ax.set_title(parameter, fontsize=9)
        ax.set_yticks([])
    for ax in list(axes.flat)[len(parameters):]:
        ax.set_axis_off()
    return figure


@dataclass
class CalibrationResult:
    """The ranks of every replication (one row per replication and parameter)
    and their uniformity per parameter (:func:`rank_uniformity`)."""

    ranks: pd.DataFrame
    thin_to: int = THIN_TO
    uniformity: pd.DataFrame = field(init=False)

    def __post_init__(self):
        self.uniformity = rank_uniformity(self.ranks, self.thin_to)

    def plot(self, bins: int = 10):
        """Rank histograms (:func:`plot_ranks`)."""
        return plot_ranks(self.ranks, self.thin_to, bins)

    def __repr__(self) -> str:
        done = self.ranks.replication.nunique()
        failed = int(self.ranks.error.notna().sum())
        return f"<CalibrationResult: {done} replications, {failed} failed>"


def calibration_check(syntax: str, design: dict, n: int = 200, *, fit_kwargs: dict | None = None, client=None,
                      workers: int | None = None, store: str | os.PathLike | None = None, resume: bool = False,
                      random_seed: int = 0, thin_to: int = THIN_TO, ordered: list[str] | None = None,
                      progressbar: bool = True) -> CalibrationResult:
    """Simulation-based calibration of ``syntax`` on data of ``design``
    (``{"clusters": 50, "cluster_size": 10}``, optionally ``size_spread``):
    ``n`` replications, each with parameters drawn from the priors, ranked
    among ``thin_to`` evenly thinned posterior draws. ``ordered`` names the
    ordinal variables, whose threshold lines the syntax must have (a
    replication whose data leave a category empty is drawn again; the ranks
    record how often, as ``redraws``). Returns a
    :class:`CalibrationResult`; ``.uniformity`` tests each parameter's ranks,
    ``.plot()`` draws the histograms. ``client``, ``workers``, ``store`` and
    ``resume`` work as in :func:`~bayes_msem.study.simulation_study` (call it
    under ``if __name__ == "__main__":`` in a script)."""
    from bayes_msem.study import _require_dask, design_grid, run_units, stored_units

    _require_dask()
    (design,) = design_grid([design])
    fit_kwargs = {"draws": 500, "tune": 500, "chains": 2, **(fit_kwargs or {})}
    if ordered is True:
        raise ValueError("calibration needs the ordinal variables by name (ordered=['u1', ...])")
    ordered = tuple(ordered or ())
    _template(syntax, design, ordered)  # a model or design error stops the check here, not in every replication
    units = [_CalibrationUnit(r, design, syntax, fit_kwargs, int(random_seed), int(thin_to), ordered)
             for r in range(int(n))]
    settings = {"calibration": syntax, "design": design, "fit_kwargs": fit_kwargs, "random_seed": int(random_seed),
                "thin_to": int(thin_to)}
    if ordered:  # (kept out of the settings otherwise, so stores written before still resume)
        settings["ordered"] = list(ordered)
    store_path, frames, pending = stored_units(store, settings, units, resume)
    frames += run_units(pending, run_calibration_unit, client=client, workers=workers, store=store_path,
                        progressbar=progressbar, total=len(units))
    table = pd.concat(frames, ignore_index=True).sort_values("replication", kind="stable")
    return CalibrationResult(ranks=table.reset_index(drop=True), thin_to=int(thin_to))
