"""What leave-one-cluster-out costs in two-level ordinal models, and how
precise its importance sampling is (bayes_msem.engines.ordinal_clusters).

Fits the benchmarks' ordinal CFA (six four-category items, a factor per level:
seven random effects per cluster) and the brms reference regression (one
random intercept), then times ``result.loo()`` and compares each cluster's
log-likelihood at 20 draws with an estimate from 16 times the points.

    python benchmarks/ordinal_loo.py [--clusters 40] [--size 8] [--draws 500]

Prints a Markdown table for benchmarks/README.md.
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

import bayes_msem as bm  # noqa: E402
from bayes_msem.engines.latent import innovation_nodes  # noqa: E402
from bayes_msem.engines.ordinal_clusters import (  # noqa: E402
    innovations_of,
    integrated_cluster_log_likelihood,
    proposal_points,
)


def measure(label: str, model, draws: int) -> str:
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = model.fit(draws=draws, tune=draws, chains=2, random_seed=1, progressbar=False)
    fitted = time.perf_counter()
    loo = fit.loo()
    seconds = time.perf_counter() - fitted
    spec = model.spec
    used = fit.idata.log_likelihood.sizes["chain"] * fit.idata.log_likelihood.sizes["draw"]
    r = len(innovation_nodes(spec))
    # precision: 20 draws again with 16 times the points (the same proposal)
    raw_theta = fit.theta_draws().reshape(-1, len(spec.starts))
    effects = fit.idata.posterior["cluster_effects"].values
    effects = effects.reshape((-1,) + effects.shape[-2:])
    u_draws = innovations_of(spec, raw_theta, effects)
    chosen = np.linspace(0, len(raw_theta) - 1, 20).astype(int)
    usual = integrated_cluster_log_likelihood(spec, raw_theta[chosen], u_draws)
    finer = integrated_cluster_log_likelihood(spec, raw_theta[chosen], u_draws, points=16 * proposal_points(r))
    error = usual - finer
    return (f"| {label} | {spec.data.n_clusters} x {spec.data.n_rows // spec.data.n_clusters} | {r} | "
            f"{proposal_points(r)} | {used} | {seconds:.1f} | {1000 * seconds / used:.0f} | "
            f"{np.sqrt((error**2).mean()):.4f} | {error.mean():+.4f} | {float(loo.pareto_k.max()):.2f} | "
            f"{fitted - started:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clusters", type=int, default=40)
    parser.add_argument("--size", type=int, default=8)
    parser.add_argument("--draws", type=int, default=500, help="draws and warm-up per chain (2 chains)")
    args = parser.parse_args()
    from ordinal_data import ITEMS, ORDINAL_CFA, simulate_ordinal_cfa

    cfa = bm.Model(ORDINAL_CFA, simulate_ordinal_cfa(args.clusters, args.size), cluster="cluster", ordered=ITEMS)
    regression = bm.Model(bm.example_model("ordinal_twolevel"), bm.example_data("ordinal_twolevel"),
                          cluster="cluster", ordered=["y"])
    print("| model | clusters x size | random effects | points | draws used | LOO s | ms per draw | "
          "RMS error | mean error | max Pareto k | fit s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(measure("ordinal CFA, six 4-category items", cfa, args.draws), flush=True)
    print(measure("brms reference regression", regression, args.draws), flush=True)


if __name__ == "__main__":
    main()
