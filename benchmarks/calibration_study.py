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


def _ordinal_cfa() -> str:
    within = " + ".join(['u1'] + [f'prior("normal(0.8, 0.3)")*u{i}' for i in (2, 3, 4)])
    between = " + ".join(['u1'] + [f'prior("normal(0.9, 0.3)")*u{i}' for i in (2, 3, 4)])
    residuals = "\n".join(f'  u{i} ~~ prior("gamma(4, 9)")*u{i}' for i in (1, 2, 3, 4))
    thresholds = "\n".join(f'u{i} | prior("normal(0, 1)")*t1 + prior("normal(0, 1)")*t2' for i in (1, 2, 3, 4))
    return (f'level: 1\n  fw =~ {within}\n  fw ~~ prior("gamma(10, 10)")*fw\n'
            f'level: 2\n  fb =~ {between}\n  fb ~~ prior("gamma(8, 11.3)")*fb\n{residuals}\n{thresholds}')


ORDINAL_CFA = _ordinal_cfa()  # SD priors: means 1, 0.71 and 0.44 (the coverage study's variances 1, 0.5, 0.2)

DESIGNS = {
    # the coverage study's two-level CFA (benchmarks/coverage_study.py), its values now drawn from the priors
    "cfa": ("level: 1\n  fw =~ y1 + y2 + y3 + y4\nlevel: 2\n  fb =~ y1 + y2 + y3 + y4",
            {"clusters": 50, "cluster_size": 10}),
    # a two-level regression with a level-2 covariate
    "regression": ("level: 1\n  y ~ x\nlevel: 2\n  y ~ w", {"clusters": 50, "cluster_size": 10}),
    # the ordinal coverage study's two-level CFA (four 3-category items, 40 clusters of 8), with priors centred
    # near its population so that the simulated data look like its data; the thresholds share one prior, as
    # the ordered vector's prior is then the sorted draws'
    "ordinal_cfa": (ORDINAL_CFA, {"clusters": 40, "cluster_size": 8}),
}
ORDERED = {"ordinal_cfa": ["u1", "u2", "u3", "u4"]}


def main() -> None:
    import bayes_msem as bm

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=list(DESIGNS), action="append")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--store", default=None, help="folder: one subfolder per design, resumable")
    parser.add_argument("--figures", default="docs/images", help="where the rank histograms go")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    for name in args.only or list(DESIGNS):
        syntax, design = DESIGNS[name]
        store = f"{args.store}/{name}" if args.store else None
        result = bm.calibration_check(syntax, design, n=args.n, store=store, resume=True, random_seed=args.seed,
                                      fit_kwargs={"draws": 500, "tune": 500, "chains": 2},
                                      ordered=ORDERED.get(name), workers=args.workers)
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
