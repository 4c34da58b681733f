"""Monte Carlo studies: the design grid, the summary statistics against hand
computation, seeds that depend only on the unit, and (slow) studies of the
random-slope mediation and of Demo.twolevel's SEM whose intervals cover the
truth plausibly often, that give the same numbers on one worker and on two,
resume from their store without re-running or losing a replication, and
survive a worker killed mid-study."""

import os
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest

from bayes_msem.study import _Unit, design_grid, simulation_study, smallest_design, summarize_study

POPULATION = "level: 1\n  y ~ x\nlevel: 2\n  y ~ w"
VALUES = {"y~x|within": 0.3, "y~w|between": 0.4}
FIT = {"draws": 150, "tune": 150, "chains": 2}
DESIGN = {"clusters": [15], "cluster_size": [4]}
# the studies the issue asks for: the 1-1-1 random-slope mediation (with its average indirect effect) and
# Demo.twolevel's SEM, small, on two local workers
MEDIATION_VALUES = {"a~1|between": 0.3, "b~1|between": 0.3, "cp~1|between": 0.1, "a~~a|between": 0.04,
                    "b~~b|between": 0.04, "cp~~cp|between": 0.02, "a~~b|between": 0.02}
DEMO_VALUES = {"fw~x1|within": 0.5, "fw~x2|within": 0.4, "fb~w1|between": 0.3}
SMALL_DESIGN = {"clusters": [25], "cluster_size": [6]}


def assert_coverage_plausible(study, replications: int) -> None:
    """Over every parameter and replication, the 95% intervals hold the truth
    about as often as they should: at least 80% of them (a wrong truth, e.g.
    a value keyed to the wrong parameter, or a broken fit, gives far less)."""
    rows = study.replications.dropna(subset=["parameter"])
    assert rows.error.isna().all() and rows.replication.nunique() == replications
    covered = (rows["q2.5"] <= rows["true"]) & (rows["true"] <= rows["q97.5"])
    assert covered.mean() >= 0.8, rows.loc[~covered, ["replication", "parameter", "true", "q2.5", "q97.5"]]


def test_design_grid_crosses_the_settings_and_checks_them():
    grid = design_grid({"clusters": [30, 50], "cluster_size": [5, 10], "y~x|within": [0.2]})
    assert [(d["clusters"], d["cluster_size"]) for d in grid] == [(30, 5), (30, 10), (50, 5), (50, 10)]
    assert all(d["y~x|within"] == 0.2 and d["size_spread"] == 0 for d in grid)
    with pytest.raises(ValueError, match="clusters=2.5"):
        design_grid({"clusters": [2.5]})
    with pytest.raises(ValueError, match="size_spread"):
        design_grid({"clusters": [30], "size_spread": [1.5]})
    (missing,) = design_grid({"clusters": [30], "missing_rate": [0.2]})
    assert missing["missing_mechanism"] == "MCAR"


def test_a_replication_with_missing_values_fits_them_by_full_information():
    from bayes_msem.simulate import simulate_data
    from bayes_msem.study import _missing, run_unit

    (design,) = design_grid({"clusters": [15], "cluster_size": [6], "missing_rate": [0.3],
                             "missing_mechanism": ["MAR"]})
    data = simulate_data(POPULATION, VALUES, n_clusters=15, cluster_size=6, seed=1, missing=_missing(design))
    assert 0.15 < data.y.isna().mean() < 0.45 and data.x.notna().all()
    rows = run_unit(_Unit(0, 0, design, POPULATION, POPULATION, VALUES, FIT, 3))
    assert rows.error.isna().all() and "y~x|within" in set(rows.parameter)


def test_only_designs_of_one_shape_reuse_their_sampler():
    from bayes_msem.study import reuses_sampler

    equal, spread, holes = design_grid([{"clusters": 30}, {"clusters": 30, "size_spread": 0.3},
                                        {"clusters": 30, "missing_rate": 0.2}])
    assert reuses_sampler(equal) and not reuses_sampler(spread) and not reuses_sampler(holes)


def test_seeds_depend_on_the_unit_only():
    def unit(design, replication, seed=7):
        return _Unit(design, replication, {}, "", "", {}, {}, seed)

    seeds = {unit(d, r).seeds() for d in range(3) for r in range(50)}
    assert len(seeds) == 150  # no two units share seeds
    assert unit(2, 9).seeds() == unit(2, 9).seeds() != unit(2, 9, seed=8).seeds()


def _replications() -> pd.DataFrame:
    """Four replications of two designs by hand: estimates, intervals and diagnostics."""
    rows = []
    for design, means in ((0, [0.1, 0.5, 0.2, 0.7]), (1, [0.2, 0.4, 0.45, 0.35])):
        for r, mean in enumerate(means):
            rows.append({"design": design, "replication": r, "parameter": "y~x|within", "true": 0.4, "mean": mean,
                         "sd": 0.1 * (design + 1), "median": mean, "q2.5": mean - 0.25, "q97.5": mean + 0.25,
                         "r_hat": 1.0, "ess_bulk": 300.0, "divergences": int(r == 0), "max_r_hat": 1.0,
                         "seconds": 2.0, "error": None})
    rows.append({"design": 1, "replication": 4, "parameter": None, "error": "ValueError: ...", "seconds": 1.0})
    return pd.DataFrame(rows)


def test_summary_statistics_equal_hand_computation():
    designs = [{"clusters": 20, "cluster_size": 5, "size_spread": 0.0}, {"clusters": 40, "cluster_size": 5,
                                                                         "size_spread": 0.0}]
    summary = summarize_study(_replications(), designs).set_index("design")
    first = summary.loc[0]
    means = np.array([0.1, 0.5, 0.2, 0.7])
    assert first["bias"] == pytest.approx(means.mean() - 0.4)
    assert first["rmse"] == pytest.approx(np.sqrt(np.mean((means - 0.4) ** 2)))
    assert first["sd_estimates"] == pytest.approx(means.std(ddof=1))
    # intervals mean +- 0.25: [-0.15, 0.35], [0.25, 0.75], [-0.05, 0.45], [0.45, 0.95]
    assert first["coverage"] == pytest.approx(0.5)  # the second and third hold 0.4
    assert first["power"] == pytest.approx(0.5)  # the second and fourth exclude 0
    assert first["converged"] == pytest.approx(0.75)  # replication 0 diverged
    assert summary.loc[1, "failed"] == 1 and summary.loc[1, "replications"] == 4
    assert summary.loc[1, "power"] == pytest.approx(0.75)  # all but [-0.05, 0.45] exclude 0
    assert summary.loc[0, "clusters"] == 20 and summary.loc[1, "clusters"] == 40
    plan = smallest_design(summary.reset_index(), "y~x|within", power=0.7)
    assert plan["smallest_clusters"].tolist() == [40]
    assert np.isnan(smallest_design(summary.reset_index(), "y~x|within", power=0.9)["smallest_clusters"].iloc[0])


@pytest.mark.slow
def test_study_is_the_same_on_one_or_two_workers_and_resumes(tmp_path):
    """The random-slope mediation: two workers, then one worker into a store
    that is resumed; the same numbers, the average indirect effect included."""
    import bayes_msem as bm

    population = bm.example_model("mediation_111_random_slopes")
    reference = simulation_study(population, MEDIATION_VALUES, SMALL_DESIGN, 2, fit_kwargs=FIT, workers=2,
                                 random_seed=3, progressbar=False)
    assert_coverage_plausible(reference, 2)
    assert "indirect" in set(reference.summary.parameter)
    assert reference.summary.set_index("parameter").loc["indirect", "true"] == pytest.approx(0.3 * 0.3 + 0.02)

    store = tmp_path / "study"
    simulation_study(population, MEDIATION_VALUES, SMALL_DESIGN, 1, fit_kwargs=FIT, workers=1, random_seed=3,
                     store=store, progressbar=False)
    files = sorted(store.rglob("*.parquet"))
    written = {f: f.stat().st_mtime_ns for f in files}
    assert len(files) == 1
    with pytest.raises(FileExistsError, match="resume=True"):
        simulation_study(population, MEDIATION_VALUES, SMALL_DESIGN, 2, fit_kwargs=FIT, workers=1, random_seed=3,
                         store=store)
    with pytest.raises(ValueError, match="other settings"):
        simulation_study(population, MEDIATION_VALUES, SMALL_DESIGN, 2, fit_kwargs=FIT, workers=1, random_seed=4,
                         store=store, resume=True)
    resumed = simulation_study(population, MEDIATION_VALUES, SMALL_DESIGN, 2, fit_kwargs=FIT, workers=1,
                               random_seed=3, store=store, resume=True, progressbar=False)
    assert {f: f.stat().st_mtime_ns for f in files} == written  # nothing re-run
    assert len(sorted(store.rglob("*.parquet"))) == 2
    columns = ["design", "replication", "parameter", "true", "mean", "sd", "q2.5", "q97.5"]
    pd.testing.assert_frame_equal(resumed.replications[columns], reference.replications[columns])
    # the truth comes from the population's values and its defaults
    truth = reference.summary.set_index("parameter")["true"]
    assert truth["a~1|between"] == 0.3 and truth["cp~~cp|between"] == 0.02 and truth["m~~m|within"] == 1.0


@pytest.mark.slow
def test_a_worker_killed_mid_study_costs_only_its_replication(tmp_path):
    """Demo.twolevel's SEM: one worker, then two with one of them killed after the
    first replication is stored; the same numbers."""
    from dask.distributed import Client, LocalCluster

    import bayes_msem as bm

    population = bm.example_model("demo_twolevel")
    reference = simulation_study(population, DEMO_VALUES, SMALL_DESIGN, 3, fit_kwargs=FIT, workers=1, random_seed=5,
                                 progressbar=False)
    assert_coverage_plausible(reference, 3)
    store = tmp_path / "study"
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster) as client:
        def kill_one_worker_after_the_first_replication():
            while not list(store.rglob("*.parquet")):
                time.sleep(0.2)
            victim = sorted(client.scheduler_info()["workers"])[0]
            pid = client.run(os.getpid, workers=[victim])[victim]
            killed.append(pid)
            os.kill(pid, signal.SIGKILL)  # the worker process dies mid-study; its nanny starts another

        killed: list = []
        killer = threading.Thread(target=kill_one_worker_after_the_first_replication, daemon=True)
        killer.start()
        result = simulation_study(population, DEMO_VALUES, SMALL_DESIGN, 3, fit_kwargs=FIT, client=client,
                                  random_seed=5, store=store, progressbar=False)
        killer.join(timeout=5)
        assert len(killed) == 1 and killed[0] not in client.run(os.getpid).values()  # it died mid-study
    columns = ["design", "replication", "parameter", "mean", "sd"]
    pd.testing.assert_frame_equal(result.replications[columns], reference.replications[columns])
    assert len(list(store.rglob("*.parquet"))) == 3


def test_a_replication_of_an_ordinal_model_passes_the_model_options():
    """model_kwargs reach Model (here ordered=), and the population's ordinal
    variable is simulated as categories with its thresholds as the truth."""
    from bayes_msem.study import _Unit, design_grid, run_unit

    population = "level: 1\n u ~ x\nlevel: 2\n u ~~ u"
    values = {"u|t1": -0.5, "u|t2": 0.6, "u~x|within": 0.5, "u~~u|between": 0.3}
    design = design_grid({"clusters": [20], "cluster_size": [8]})[0]
    unit = _Unit(0, 0, design, population, population, values, {"draws": 100, "tune": 100, "chains": 1}, 7,
                 {"ordered": ["u"]})
    rows = run_unit(unit).set_index("parameter")
    assert rows["error"].isna().all()
    assert rows.loc["u|t1", "true"] == -0.5 and rows.loc["u~x|within", "true"] == 0.5
    assert rows.loc["u|t1", "mean"] < rows.loc["u|t2", "mean"]
