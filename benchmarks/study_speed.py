"""Speed of Monte Carlo studies (bm.simulation_study): replications per minute
with 1 and with 2 local Dask workers, and where the time of one replication
goes (compilation and setup against sampling).

    python benchmarks/study_speed.py            # prints two markdown tables

The model is a two-level regression with a covariate at each level (30
clusters of 10 rows), fitted with 2 chains x 500 draws after 500 warm-up.
"""

from __future__ import annotations

import os
import platform
import time
import warnings

POPULATION = "level: 1\n  y ~ x\nlevel: 2\n  y ~ w"
VALUES = {"y~x|within": 0.3, "y~w|between": 0.4}
DESIGN = {"clusters": [30], "cluster_size": [10]}
FIT = {"draws": 500, "tune": 500, "chains": 2}
REPLICATIONS = 12


def _throughput() -> list[str]:
    import bayes_msem as bm

    rows = []
    rates = {}
    for workers in (1, 2):
        start = time.perf_counter()
        study = bm.simulation_study(POPULATION, VALUES, DESIGN, REPLICATIONS, fit_kwargs=FIT, workers=workers,
                                    random_seed=1, progressbar=False)
        seconds = time.perf_counter() - start
        rates[workers] = REPLICATIONS / seconds * 60
        per_fit = study.replications.groupby("replication").seconds.first().mean()
        rows.append(f"| {workers} | {REPLICATIONS} | {seconds:.1f} | {rates[workers]:.2f} | {per_fit:.1f} | "
                    f"{rates[workers] / (workers * rates[1]):.0%} |")
    return rows


def _time_split() -> str:
    """One replication in this process (after a first fit that pays for the
    imports): a fit with 10 draws and 10 warm-up iterations is almost all
    compilation and setup; the full fit adds sampling."""
    import bayes_msem as bm

    data = bm.simulate_data(POPULATION, VALUES, n_clusters=30, cluster_size=10, seed=1)
    timings = {}
    short = {"draws": 10, "tune": 10, "chains": 2}
    # the first fit in a process also pays for imports and JAX's start: not part of a replication
    for label, options in (("warm-up", short), ("short", short), ("full", FIT)):
        model = bm.Model(POPULATION, data, cluster="cluster")
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(random_seed=1, progressbar=False, **options)
        timings[label] = time.perf_counter() - start
    setup = timings["short"]
    return (f"| {timings['full']:.1f} | {setup:.1f} ({setup / timings['full']:.0%}) | "
            f"{timings['full'] - setup:.1f} ({1 - setup / timings['full']:.0%}) |")


if __name__ == "__main__":
    import sys

    if "--split-only" in sys.argv:
        print(_time_split())
        sys.exit()
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{POPULATION!r}, 30 clusters x 10 rows, 2 chains x 500 draws + 500 warm-up\n")
    print("| workers | replications | wall s | replications / min | s per fit | parallel efficiency |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(_throughput()))
    print("\n| one fit, s | compilation and setup, s | sampling, s |")
    print("| ---: | ---: | ---: |")
    print(_time_split())
