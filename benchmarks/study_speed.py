"""Speed of Monte Carlo studies (bm.simulation_study): replications per minute
with 1 and with 2 local Dask workers, and where the time of one replication
goes (the first fit in a worker compiles the sampler; later fits of the design
reuse it, bayes_msem.reused_sampler).

    python benchmarks/study_speed.py [--replications N]   # two markdown tables (default 48)
    python benchmarks/study_speed.py --split-only          # the second table only

The model is a two-level regression with a covariate at each level (30
clusters of 10 rows), fitted with 2 chains x 500 draws after 500 warm-up.
"""

from __future__ import annotations

import os
import platform
import sys
import time
import warnings

POPULATION = "level: 1\n  y ~ x\nlevel: 2\n  y ~ w"
VALUES = {"y~x|within": 0.3, "y~w|between": 0.4}
DESIGN = {"clusters": [30], "cluster_size": [10]}
FIT = {"draws": 500, "tune": 500, "chains": 2}


def _throughput(replications: int) -> list[str]:
    import bayes_msem as bm

    rows = []
    rates = {}
    for workers in (1, 2):
        start = time.perf_counter()
        study = bm.simulation_study(POPULATION, VALUES, DESIGN, replications, fit_kwargs=FIT, workers=workers,
                                    random_seed=1, progressbar=False)
        seconds = time.perf_counter() - start
        rates[workers] = replications / seconds * 60
        per_fit = study.replications.groupby("replication").seconds.first().mean()
        rows.append(f"| {workers} | {replications} | {seconds:.1f} | {rates[workers]:.2f} | {per_fit:.1f} | "
                    f"{rates[workers] / (workers * rates[1]):.0%} |")
    return rows


def _time_split() -> str:
    """Fits in this process, after one that pays for the imports and JAX's
    start: with ``reuse_compiled`` the first fit of the design (compiles) and
    the next ones (reuse), and for comparison a fit that compiles as a
    single fit does."""
    import bayes_msem as bm

    def fit(seed: int, reuse: bool) -> float:
        data = bm.simulate_data(POPULATION, VALUES, n_clusters=30, cluster_size=10, seed=seed)
        model = bm.Model(POPULATION, data, cluster="cluster")
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(random_seed=1, progressbar=False, reuse_compiled=reuse, **{**FIT, "draws": 10, "tune": 10}
                      if seed == 0 else FIT)
        return time.perf_counter() - start

    fit(0, False)  # imports, JAX's start
    single = fit(1, False)
    first = fit(2, True)
    reused = sum(fit(seed, True) for seed in (3, 4, 5)) / 3
    return f"| {single:.1f} | {first:.1f} | {reused:.1f} |"


if __name__ == "__main__":
    os.environ.setdefault("BAYES_MSEM_CACHE_DIR", "off")  # every compilation counted, none read from disk
    split = "| single fit, compiles, s | first fit with reuse_compiled, s | later fits, s |\n| ---: | ---: | ---: |"
    if "--split-only" in sys.argv:
        print(split)
        print(_time_split())
        sys.exit()
    replications = int(sys.argv[sys.argv.index("--replications") + 1]) if "--replications" in sys.argv else 48
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{POPULATION!r}, 30 clusters x 10 rows, 2 chains x 500 draws + 500 warm-up\n")
    print("| workers | replications | wall s | replications / min | s per fit | parallel efficiency |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(_throughput(replications)))
    print()
    print(split)
    print(_time_split())
