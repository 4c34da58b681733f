"""Simulation-based calibration of the core designs (docs/validation.md), run by hand:

    python benchmarks/calibration_study.py --only cfa --n 200 --store /tmp/sbc_store

Each replication draws the parameters from the (frozen) default priors,
simulates a data set of the design, fits the model (2 chains x 500 draws after
500 warm-up) on a local Dask cluster and ranks the truth among 99 thinned
draws. Prints the uniformity table (chi-square over ten bins, shares of ranks in
the outer 5%) and writes the rank histograms to ``--figures`` (a folder).
With ``--store`` an interrupted run resumes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DESIGNS = {
    # the coverage study's two-level CFA (benchmarks/coverage_study.py), its values now drawn from the priors
    "cfa": ("level: 1\n  fw =~ y1 + y2 + y3 + y4\nlevel: 2\n  fb =~ y1 + y2 + y3 + y4",
            {"clusters": 50, "cluster_size": 10}),
    # a two-level regression with a level-2 covariate
    "regression": ("level: 1\n  y ~ x\nlevel: 2\n  y ~ w", {"clusters": 50, "cluster_size": 10}),
}


def main() -> None:
    import bayes_msem as bm

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=list(DESIGNS), action="append")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--store", default=None, help="folder: one subfolder per design, resumable")
    parser.add_argument("--figures", default="docs/images", help="where the rank histograms go")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    for name in args.only or list(DESIGNS):
        syntax, design = DESIGNS[name]
        store = f"{args.store}/{name}" if args.store else None
        result = bm.calibration_check(syntax, design, n=args.n, store=store, resume=True, random_seed=args.seed,
                                      fit_kwargs={"draws": 500, "tune": 500, "chains": 2})
        print(f"\n### {name}: {result!r}\n")
        print("| parameter | replications | chi-square (9 df) | p-value | ranks in lowest 5% | in highest 5% |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for _, row in result.uniformity.iterrows():
            print(f"| {row.parameter} | {row.replications} | {row.chi2:.1f} | {row.p_value:.3f} | "
                  f"{row['low_5%']:.3f} | {row['high_5%']:.3f} |")
        converged = (result.ranks.groupby("replication").max_r_hat.first() <= 1.01).mean()
        print(f"\nreplications with R-hat <= 1.01: {converged:.2f}; seconds per fit: "
              f"{result.ranks.groupby('replication').seconds.first().mean():.1f}")
        Path(args.figures).mkdir(parents=True, exist_ok=True)
        result.plot().savefig(Path(args.figures) / f"sbc_{name}.png", dpi=80)


if __name__ == "__main__":
    main()
