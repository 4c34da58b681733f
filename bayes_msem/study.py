"""Monte Carlo studies: power, sample-size planning and interval coverage.

A study simulates many data sets from a population model with known values
(:func:`~bayes_msem.simulate.simulate_data`), fits an analysis model to each and
summarizes, per design and parameter, how close the estimates come to the
truth and how often 95% intervals cover it or exclude zero (Mplus's
MONTECARLO, done the Bayesian way).

The work units are (design, replication) pairs. Each has its own seeds, from
``numpy.random.SeedSequence(random_seed, spawn_key=(design, replication))``,
so a unit's result does not depend on where or in which order it runs. Units
run on Dask: a local cluster sized to the machine by default (processes with
one thread and one JAX device each), or any ``dask.distributed.Client``. Each
finished unit is written at once to the ``store`` folder (one Parquet file), so
an interrupted study resumes with ``resume=True``; a worker that dies costs
only the unit it was running, which Dask runs again elsewhere.

Example
-------
>>> from bayes_msem.study import design_grid
>>> [d["clusters"] for d in design_grid({"clusters": [30, 50], "cluster_size": [10]})]
[30, 50]
"""

from __future__ import annotations

import itertools
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["simulation_study", "summarize_study", "smallest_design", "plot_power", "design_grid", "StudyResult",
           "study_report", "run_units", "stored_units"]

DESIGN_KEYS = ("clusters", "cluster_size", "size_spread", "missing_rate", "missing_mechanism")
# what one replication reports per parameter
ESTIMATE_COLUMNS = ["mean", "sd", "median", "q2.5", "q97.5", "r_hat", "ess_bulk"]
# a replication counts as converged below this R-hat and without divergences (the fit's own limit)
CONVERGED_R_HAT = 1.01
# each worker process: one JAX device, no extra compute threads (the workers are the parallelism)
WORKER_XLA_FLAGS = "--xla_force_host_platform_device_count=1 --xla_cpu_multi_thread_eigen=false"
# a worker frees JAX's compiled programs after every so many replications (sampling.free_compiled_programs):
# about 45 replications that each compiled their sampler exhausted a process's memory maps; with the sampler
# reused, a replication compiles one or two small programs
FREE_EVERY = 5


def design_grid(designs: dict | list[dict]) -> list[dict]:
    """Every combination of the settings in ``designs`` (a dict of lists), or
    the list of designs as given. Keys: ``clusters``, ``cluster_size``,
    ``size_spread`` (clusters of unequal size, uniform within
    ``cluster_size * (1 +- size_spread)``; 0 by default), ``missing_rate`` and
    ``missing_mechanism`` (level-1 outcomes set missing, ``"MCAR"`` or ``"MAR"``
    on the first level-1 covariate: :func:`~bayes_msem.simulate.impose_missing`;
    no missing values by default) and parameter names (``"y~x|within"``), whose
    values override the population's."""
    if isinstance(designs, dict):
        keys = list(designs)
        lists = [v if isinstance(v, list | tuple | np.ndarray) else [v] for v in designs.values()]
        grid = [dict(zip(keys, combination)) for combination in itertools.product(*lists)]
    else:
        grid = [dict(d) for d in designs]
    if not grid:
        raise ValueError("designs is empty: give, for example, {'clusters': [30, 50], 'cluster_size': [10]}")
    for design in grid:
        design.setdefault("clusters", 1)
        design.setdefault("cluster_size", 100)
        design.setdefault("size_spread", 0.0)
        for key in ("clusters", "cluster_size"):
            if int(design[key]) != design[key] or design[key] < 1:
                raise ValueError(f"{key}={design[key]!r} in design {design}: a positive whole number")
        if not 0 <= design["size_spread"] < 1:
            raise ValueError(f"size_spread={design['size_spread']!r}: between 0 (equal clusters) and 1")
        if "missing_rate" in design or "missing_mechanism" in design:
            design.setdefault("missing_rate", 0.0)
            design.setdefault("missing_mechanism", "MCAR")
    return grid


def _missing(design: dict) -> dict | None:
    """``simulate_data``'s ``missing=`` for a design, None without missing values."""
    if not design.get("missing_rate"):
        return None
    return {"rate": float(design["missing_rate"]), "mechanism": design.get("missing_mechanism", "MCAR")}


def reuses_sampler(design: dict) -> bool:
    """Whether a design's replications share one shape, so that a worker
    compiles its sampler once (``fit(reuse_compiled=True)``): equal clusters
    and no missing values. Unequal clusters (``size_spread``) or missing-data
    patterns change the shape from one replication to the next, and the
    reusable program takes longer to compile than a one-off (12.7 s against
    8.2 s, benchmarks/README.md)."""
    return not design.get("size_spread") and _missing(design) is None


@dataclass(frozen=True)
class _Unit:
    """One (design, replication) work unit, with everything a worker needs."""

    design_index: int
    replication: int
    design: dict
    population: str
    analysis: str
    values: dict
    fit_kwargs: dict
    random_seed: int
    model_kwargs: dict = field(default_factory=dict)

    def seeds(self) -> tuple[int, int, int]:
        """Seeds for the cluster sizes, the data and the sampler, from this unit's own SeedSequence."""
        sequence = np.random.SeedSequence(self.random_seed, spawn_key=(self.design_index, self.replication))
        return tuple(int(s) for s in sequence.generate_state(3, dtype=np.uint32))


def _cluster_sizes(design: dict, seed: int):
    size, spread = int(design["cluster_size"]), float(design["size_spread"])
    if spread == 0:
        return size
    rng = np.random.default_rng(seed)
    low, high = max(1, round(size * (1 - spread))), round(size * (1 + spread))
    return rng.integers(low, high + 1, size=int(design["clusters"]))


def _pin_threads() -> None:
    """One JAX device and one compute thread per worker process: the workers
    are the parallelism, and the same unit then computes the same draws in any
    worker (set before JAX starts; a no-op where it has)."""
    from jax._src import xla_bridge

    if not xla_bridge.backends_are_initialized():
        os.environ["XLA_FLAGS"] = WORKER_XLA_FLAGS
        import jax

        jax.devices()


def _check_design(population: str, analysis: str, values: dict, design: dict, model_kwargs: dict) -> None:
    """Simulate a data set of the design and set the analysis model up on it
    (no sampling), so that an unknown parameter name or a variable the
    population does not make stops the study before it starts, not in every
    replication."""
    from bayes_msem.model import Model
    from bayes_msem.partable import build_partable
    from bayes_msem.simulate import simulate_data

    values = {**values, **{k: v for k, v in design.items() if k not in DESIGN_KEYS}}
    if build_partable(population).two_level and design["clusters"] < 2:
        raise ValueError(f"a design with {design['clusters']} cluster: a two-level model needs several clusters "
                         "per data set (30 or more are preferable)")
    data = simulate_data(population, values, n_clusters=int(design["clusters"]),
                         cluster_size=_cluster_sizes(design, 0), seed=0, missing=_missing(design),
                         ordered=model_kwargs.get("ordered"))
    cluster = "cluster" if build_partable(analysis).two_level else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Model(analysis, data, cluster=cluster, **model_kwargs)


def run_unit(unit: _Unit) -> pd.DataFrame:
    """Simulate one data set, fit the analysis model and return one row per
    parameter (estimates, truth, diagnostics); a failed fit gives one row with
    the error."""
    from bayes_msem.model import Model
    from bayes_msem.partable import build_partable, parameter_key
    from bayes_msem.sampling import free_compiled_programs
    from bayes_msem.simulate import simulate_data, true_values

    _pin_threads()
    size_seed, data_seed, fit_seed = unit.seeds()
    design = unit.design
    values = {**unit.values, **{k: v for k, v in design.items() if k not in DESIGN_KEYS}}
    base = {"design": unit.design_index, "replication": unit.replication}
    start = time.perf_counter()
    try:
        ordered = unit.model_kwargs.get("ordered")
        data = simulate_data(unit.population, values, n_clusters=int(design["clusters"]),
                             cluster_size=_cluster_sizes(design, size_seed), seed=data_seed,
                             missing=_missing(design), ordered=ordered)
        cluster = "cluster" if build_partable(unit.analysis).two_level else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # diagnostics are recorded per replication instead
            fit_kwargs = {"reuse_compiled": reuses_sampler(design), **unit.fit_kwargs}
            result = Model(unit.analysis, data, cluster=cluster, **unit.model_kwargs).fit(
                random_seed=fit_seed, progressbar=False, **fit_kwargs)
        summary = result.summary()
        diagnostics = result.diagnostics()
    except Exception as error:  # noqa: BLE001 - a failed replication is a result of the study
        return failed_unit(base, error, start)
    finally:  # a worker fits replication after replication: without this XLA aborts after about 45
        free_compiled_programs(every=FREE_EVERY)
    summary = summary[summary.free]
    truth = true_values(unit.population, values, ordered=unit.model_kwargs.get("ordered"))
    names = [parameter_key(r.lhs, r.op, r.rhs, r.level) if r.op != ":=" else r.lhs for r in summary.itertuples()]
    frame = summary[ESTIMATE_COLUMNS].reset_index(drop=True)
    frame.insert(0, "parameter", names)
    frame.insert(1, "true", [truth.get(n, np.nan) for n in names])
    return finished_unit(frame, base, diagnostics, start)


def finished_unit(frame: pd.DataFrame, base: dict, diagnostics: dict, start: float) -> pd.DataFrame:
    """A unit's rows with its indices (``base``) in front and the fit's
    divergences, largest R-hat, seconds since ``start`` and no error behind."""
    for key, value in base.items():
        frame.insert(0, key, value)
    frame["divergences"] = diagnostics["divergences"]
    frame["max_r_hat"] = diagnostics["max_r_hat"]
    frame["seconds"] = time.perf_counter() - start
    frame["error"] = None
    return frame


def failed_unit(base: dict, error: Exception, start: float) -> pd.DataFrame:
    """The one row of a unit whose simulation or fit raised ``error``."""
    return pd.DataFrame([{**base, "parameter": None, "error": f"{type(error).__name__}: {error}",
                          "seconds": time.perf_counter() - start}])


@dataclass
class StudyResult:
    """The replications of a study (one row per replication and parameter) and
    their summary per design and parameter (:func:`summarize_study`)."""

    replications: pd.DataFrame
    designs: list[dict]
    summary: pd.DataFrame = field(init=False)

    def __post_init__(self):
        self.summary = summarize_study(self.replications, self.designs)

    def __repr__(self) -> str:
        done = self.replications.groupby("design").replication.nunique().sum()
        failed = int(self.replications.error.notna().sum())
        return f"<StudyResult: {len(self.designs)} designs, {done} replications, {failed} failed>"


def summarize_study(replications: pd.DataFrame, designs: list[dict]) -> pd.DataFrame:
    """Per design and parameter: truth, mean and median estimate (of the
    posterior means and medians), bias, relative bias, RMSE, SD of the
    estimates, mean posterior SD, 95% coverage, power (share of 95% intervals
    that exclude 0), the share of converged replications (R-hat <= 1.01 and no
    divergences), replications used and failed, and seconds per fit."""
    fitted = replications[replications.error.isna()]
    failed = replications[replications.error.notna()].groupby("design").size()
    rows = []
    for (design, parameter), group in fitted.groupby(["design", "parameter"], sort=False):
        true = group["true"].iloc[0]
        estimate = group["mean"]
        converged = (group["max_r_hat"] <= CONVERGED_R_HAT) & (group["divergences"] == 0)
        rows.append({
            **{k: v for k, v in designs[design].items()}, "design": design, "parameter": parameter, "true": true,
            "mean": estimate.mean(), "median": group["median"].mean(), "bias": estimate.mean() - true,
            "relative_bias": (estimate.mean() - true) / true if true else np.nan,
            "rmse": float(np.sqrt(np.mean((estimate - true) ** 2))), "sd_estimates": estimate.std(ddof=1),
            "mean_posterior_sd": group["sd"].mean(),
            "coverage": float(((group["q2.5"] <= true) & (true <= group["q97.5"])).mean()),
            "power": float(((group["q2.5"] > 0) | (group["q97.5"] < 0)).mean()),
            "converged": float(converged.mean()), "replications": len(group),
            "failed": int(failed.get(design, 0)), "seconds_per_fit": group["seconds"].mean(),
        })
    return pd.DataFrame(rows)


def smallest_design(summary: pd.DataFrame, parameter: str, power: float = 0.8, by: str = "clusters") -> pd.DataFrame:
    """For each combination of the other design settings, the smallest ``by``
    (number of clusters, by default) whose power for ``parameter`` reaches
    ``power``; NaN where no design in the grid does."""
    rows = summary[summary.parameter == parameter]
    if rows.empty:
        raise ValueError(f"no parameter {parameter!r} in the study; it has {sorted(summary.parameter.unique())[:5]}")
    others = [k for k in summary.columns if k in DESIGN_KEYS and k != by] + \
        [k for k in summary.columns if "~" in k or "=~" in k]
    out = []
    for key, group in rows.groupby(others, sort=True) if others else [((), rows)]:
        enough = group[group.power >= power].sort_values(by)
        out.append({**dict(zip(others, key if isinstance(key, tuple) else (key,))), "parameter": parameter,
                    f"smallest_{by}": enough[by].iloc[0] if len(enough) else np.nan,
                    "power": enough["power"].iloc[0] if len(enough) else group.power.max()})
    return pd.DataFrame(out)


def plot_power(summary: pd.DataFrame, parameter: str, by: str = "clusters", target: float = 0.8):
    """Power and 95% coverage of ``parameter`` over ``by`` (one line per
    cluster size): a matplotlib Figure."""
    import matplotlib.pyplot as plt

    rows = summary[summary.parameter == parameter]
    figure, (power_axis, coverage_axis) = plt.subplots(1, 2, figsize=(9, 3.5), constrained_layout=True)
    for size, group in rows.groupby("cluster_size"):
        group = group.sort_values(by)
        power_axis.plot(group[by], group["power"], marker="o", label=f"cluster size {size}")
        coverage_axis.plot(group[by], group["coverage"], marker="o", label=f"cluster size {size}")
    power_axis.axhline(target, color="grey", linestyle="--", linewidth=1)
    coverage_axis.axhline(0.95, color="grey", linestyle="--", linewidth=1)
    power_axis.set(xlabel=by, ylabel="power (95% interval excludes 0)", ylim=(0, 1.02), title=parameter)
    coverage_axis.set(xlabel=by, ylabel="95% interval coverage", ylim=(0, 1.02), title=parameter)
    power_axis.legend(fontsize=8)
    return figure


def study_report(study: StudyResult, path: str | os.PathLike) -> None:
    """A self-contained HTML page: power and coverage curves of every parameter
    and the summary table."""
    import base64
    import html
    import io

    import matplotlib.pyplot as plt

    parts = ["<!doctype html><meta charset='utf-8'><title>bayes-msem simulation study</title>",
             "<style>body{font-family:sans-serif;max-width:1000px;margin:auto}table{border-collapse:collapse;"
             "font-size:12px}td,th{padding:2px 6px;border-bottom:1px solid #ddd}</style>",
             f"<h1>Simulation study</h1><p>{html.escape(repr(study))}</p>"]
    for parameter in study.summary.parameter.unique():
        figure = plot_power(study.summary, parameter)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=90)
        plt.close(figure)
        encoded = base64.b64encode(buffer.getvalue()).decode()
        parts.append(f"<h2>{html.escape(parameter)}</h2><img alt='power and coverage of {html.escape(parameter)}' "
                     f"src='data:image/png;base64,{encoded}'>")
    parts.append("<h2>Summary</h2>" + study.summary.to_html(index=False, float_format=lambda v: f"{v:.3f}"))
    Path(path).write_text("\n".join(parts), encoding="utf-8")


def _unit_path(store: Path, unit: _Unit) -> Path:
    return store / f"design-{unit.design_index:03d}" / f"replication-{unit.replication:05d}.parquet"


def _write(frame: pd.DataFrame, path: Path) -> None:
    """Write a replication at once, atomically: a half-written file never looks finished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    frame.astype({"error": "object"}).to_parquet(partial, index=False)
    os.replace(partial, path)


def _check_store(store: Path, settings: dict, resume: bool) -> None:
    """The store holds one study: refuse to mix in replications of another."""
    saved = store / "study.json"
    if saved.exists():
        if not resume:
            raise FileExistsError(f"{store} already holds a study: pass resume=True to finish it, or another store")
        if json.loads(saved.read_text()) != settings:
            raise ValueError(f"{store} holds a study with other settings (model, values, designs, fit options or "
                             "seed); resume it with the same ones, or use another store")
        return
    store.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(settings, indent=1))


def _require_dask() -> None:
    try:
        import dask.distributed  # noqa: F401
    except ImportError as error:
        raise ImportError("simulation studies run on Dask: pip install 'dask[distributed]' "
                          "(or bayes-msem[study])") from error


def stored_units(store, settings: dict, units: list, resume: bool) -> tuple[Path | None, list, list]:
    """(store folder, frames of the units already in it, units still to run).
    The store holds one study, described by ``settings``: see ``_check_store``."""
    if store is None:
        return None, [], list(units)
    path = Path(store)
    _check_store(path, settings, resume)
    finished = [_unit_path(path, u).exists() for u in units]  # each file looked up once
    frames = [pd.read_parquet(_unit_path(path, u)) for u, done in zip(units, finished) if done]
    return path, frames, [u for u, done in zip(units, finished) if not done]


# A worker process imports JAX and the library before it answers; on a loaded
# machine (2 cores, another study running) that took longer than Dask's 30 s
# and the cluster failed to start ("Nanny failed to start", session 8).
WORKER_START_TIMEOUT = "180s"


def _local_client(workers: int):
    import dask
    from dask.distributed import Client, LocalCluster

    with dask.config.set({"distributed.comm.timeouts.connect": WORKER_START_TIMEOUT}):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               env={"OMP_NUM_THREADS": "1", "XLA_FLAGS": WORKER_XLA_FLAGS,
                                    "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": WORKER_START_TIMEOUT})
        return Client(cluster)


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="replications", unit="fit")


def run_units(units: list, runner, *, client=None, workers: int | None = None, store: Path | None = None,
              progressbar: bool = True, total: int | None = None) -> list[pd.DataFrame]:
    """Run ``runner(unit)`` for every unit on Dask and return the frames, each
    written to ``store`` (``_unit_path``) as soon as it arrives. Without a
    ``client``, a local cluster of ``workers`` processes runs them.
    ``total`` counts units already done (resumed) in the progress bar."""
    from dask.distributed import as_completed

    frames: list[pd.DataFrame] = []
    if not units:
        return frames
    own_client = client is None
    if own_client:
        client = _local_client(workers or os.cpu_count() or 1)
    total = total or len(units)
    bar = _progress(total, progressbar)
    try:
        if bar is not None:
            bar.update(total - len(units))
        futures = {client.submit(runner, unit, pure=False, retries=2): unit for unit in units}
        failures = 0
        for future in as_completed(futures):
            frame = future.result()
            unit = futures.pop(future)
            future.release()  # else a worker that dies later has its finished units computed again
            if store is not None:
                _write(frame, _unit_path(store, unit))
            frames.append(frame)
            failures += int(frame.error.notna().any())
            if bar is not None:
                bar.set_postfix(failed=failures)
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if own_client:
            cluster = client.cluster
            client.close()
            cluster.close()
    return frames


def simulation_study(population: str, values: dict[str, float], designs: dict | list[dict], replications: int, *,
                     analysis: str | None = None, fit_kwargs: dict | None = None,
                     model_kwargs: dict | None = None, client=None,
                     workers: int | None = None, store: str | os.PathLike | None = None, resume: bool = False,
                     random_seed: int = 0, progressbar: bool = True) -> StudyResult:
    """Run a Monte Carlo study and return a :class:`StudyResult` (``.summary``
    per design and parameter, ``.replications`` per fit).

    Parameters
    ----------
    population
        lavaan syntax of the model the data come from.
    values
        Its true values, keyed as :func:`~bayes_msem.simulate.simulate_data`
        keys them (``"y~x|within"``); others take its defaults.
    designs
        A grid, e.g. ``{"clusters": [30, 50, 100], "cluster_size": [5, 10]}``
        (see :func:`design_grid`), or a list of designs.
    replications
        Data sets per design.
    analysis
        The model fitted to each data set (default: ``population``), for
        misspecification studies.
    fit_kwargs
        Passed to :meth:`~bayes_msem.model.Model.fit` (draws, tune, chains, ...).
    model_kwargs
        Passed to :class:`~bayes_msem.model.Model` (``centering``, ``engine``,
        ``priors``, ``ordered``); ``ordered`` (a list of names) also makes the
        population's ordinal variables categories, cut at the thresholds given
        in ``values`` (``"u|t1"``, ...).
    client, workers
        A ``dask.distributed.Client`` to run on; without one, a local cluster
        of ``workers`` processes (default: one per core).
    store, resume
        A folder where each finished replication is written at once; with
        ``resume=True`` the replications already there are read, not re-run.
    random_seed
        Every replication's seeds derive from it and its (design, replication) index.
    progressbar
        Show replications done, failed and time left.

    Notes
    -----
    In a script, call it under ``if __name__ == "__main__":``: the local
    cluster's worker processes import the script again when they start.
    """
    _require_dask()
    analysis = analysis or population
    fit_kwargs = {"draws": 500, "tune": 500, "chains": 2, **(fit_kwargs or {})}
    model_kwargs = dict(model_kwargs or {})
    if model_kwargs.get("ordered") is True:
        raise ValueError("a study needs the ordinal variables by name (ordered=['u1', ...]): the population's "
                         "variables are simulated, so there are no columns to look at yet")
    grid = design_grid(designs)
    for design in grid:
        _check_design(population, analysis, values, design, model_kwargs)
    units = [_Unit(d, r, design, population, analysis, dict(values), fit_kwargs, int(random_seed), model_kwargs)
             for d, design in enumerate(grid) for r in range(int(replications))]
    settings = {"population": population, "analysis": analysis, "values": values, "designs": grid,
                "fit_kwargs": fit_kwargs, "random_seed": int(random_seed)}
    if model_kwargs:  # (kept out of the settings when empty, so stores written before still resume)
        settings["model_kwargs"] = model_kwargs
    store_path, frames, pending = stored_units(store, settings, units, resume)
    frames += run_units(pending, run_unit, client=client, workers=workers, store=store_path,
                        progressbar=progressbar, total=len(units))
    table = pd.concat(frames, ignore_index=True).sort_values(["design", "replication"], kind="stable")
    return StudyResult(replications=table.reset_index(drop=True), designs=grid)
