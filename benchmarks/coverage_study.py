"""Coverage of 95% intervals over replications (docs/validation.md), run by hand:

    python benchmarks/coverage_study.py --only cfa --reps 200 --store /tmp/coverage_store

(the ordinal studies ran with ``--workers 2`` on 2 cores: ``--only ordinal_cfa_80 --workers 2``).

(Not /tmp/coverage when a script of yours lives in /tmp: Python would import that
folder as the ``coverage`` package.)

Each study simulates data from known values, fits the same model with the
default priors (2 chains x 500 draws after 500 warm-up) on a local Dask
cluster, and prints per parameter the coverage, bias and the share of
converged replications, then the coverage per parameter class. With
``--store`` an interrupted run resumes.
"""

from __future__ import annotations

import argparse

STUDIES = {
    # two-level CFA: four indicators, a factor at each level, small between residual variances
    "cfa": ("level: 1\n  fw =~ y1 + y2 + y3 + y4\nlevel: 2\n  fb =~ y1 + y2 + y3 + y4",
            {"fw=~y2|within": 0.8, "fw=~y3|within": 0.7, "fw=~y4|within": 0.6,
             "fb=~y2|between": 0.9, "fb=~y3|between": 0.8, "fb=~y4|between": 0.7,
             "fb~~fb|between": 0.5, "y1~~y1|between": 0.1, "y2~~y2|between": 0.1, "y3~~y3|between": 0.1,
             "y4~~y4|between": 0.1, "y1~1|between": 0.5},
            {"clusters": [50], "cluster_size": [10]}),
    # cross-level interaction: a random slope of x explained by the level-2 covariate w
    "cross_level": ("level: 1\n  s | y ~ x\nlevel: 2\n  y ~ w\n  s ~ w\n  y ~~ s",
                    {"s~1|between": 0.4, "s~w|between": 0.2, "s~~s|between": 0.1, "y~w|between": 0.3,
                     "y~~y|between": 0.3, "y~~s|between": 0.05},
                    {"clusters": [50], "cluster_size": [10]}),
    # 1-1-1 mediation with random slopes a, b, cp and their covariance cab: average indirect a_mean*b_mean + cab
    "mediation": (None,  # the shipped example model, read in main()
                  {"a~1|between": 0.3, "b~1|between": 0.3, "cp~1|between": 0.1, "a~~a|between": 0.04,
                   "b~~b|between": 0.04, "cp~~cp|between": 0.02, "a~~b|between": 0.02, "m~~m|between": 0.3,
                   "y~~y|between": 0.3},
                  {"clusters": [50], "cluster_size": [10]}),
    # missing values (issue 16): a two-level SEM with 30% of y1-y3 missing at random given x (MAR), fitted
    # by full information (the default)
    "sem_mar": ("level: 1\n  fw =~ y1 + y2 + y3\n  fw ~ x\nlevel: 2\n  fb =~ y1 + y2 + y3",
                {"fw=~y2|within": 0.8, "fw=~y3|within": 0.7, "fw~x|within": 0.5, "fb=~y2|between": 0.9,
                 "fb=~y3|between": 0.8, "fb~~fb|between": 0.5, "y1~~y1|between": 0.1, "y2~~y2|between": 0.1,
                 "y3~~y3|between": 0.1, "y1~1|between": 0.5},
                {"clusters": [50], "cluster_size": [10], "missing_rate": [0.3], "missing_mechanism": ["MAR"]}),
    # ordinal indicators (issue 15): four 3-category items, a factor per level, on the latent-response scale
    # (level-1 residual variances fixed at 1), items declared ordered; 40 clusters of 8
    "ordinal_cfa": ("level: 1\n  fw =~ u1 + u2 + u3 + u4\nlevel: 2\n  fb =~ u1 + u2 + u3 + u4",
                    {**{f"fw=~u{i}|within": 0.8 for i in (2, 3, 4)}, **{f"fb=~u{i}|between": 0.9 for i in (2, 3, 4)},
                     "fw~~fw|within": 1.0, "fb~~fb|between": 0.5,
                     **{f"u{i}~~u{i}|between": 0.2 for i in (1, 2, 3, 4)},
                     **{f"u{i}|t1": -0.6 for i in (1, 2, 3, 4)}, **{f"u{i}|t2": 0.6 for i in (1, 2, 3, 4)}},
                    {"clusters": [40], "cluster_size": [8]}),
}
# the same ordinal CFA at 80 clusters of 8: does its coverage move toward 0.95 with more information?
STUDIES["ordinal_cfa_80"] = (*STUDIES["ordinal_cfa"][:2], {"clusters": [80], "cluster_size": [8]})
MODEL_KWARGS = {name: {"ordered": ["u1", "u2", "u3", "u4"]} for name in ("ordinal_cfa", "ordinal_cfa_80")}

KIND = {"=~": "loading", "~": "regression", "~1": "intercept"}


def parameter_class(name: str) -> str:
    """loading, regression, intercept, variance or covariance, from a posterior name."""
    if "|t" in name:
        return "threshold"
    core = name.split("|")[0]
    for op in ("=~", "~~", "~1", "~"):
        if op in core:
            if op == "~~":
                lhs, rhs = core.split("~~")
                return "variance" if lhs == rhs else "covariance"
            return KIND[op]
    return "defined"


def main() -> None:
    import bayes_msem as bm

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=list(STUDIES), action="append")
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--store", default=None, help="folder: one subfolder per study, resumable")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--draws", type=int, default=500, help="draws and warm-up per chain (2 chains)")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    for name in args.only or list(STUDIES):
        population, values, design = STUDIES[name]
        population = population or bm.example_model("mediation_111_random_slopes")
        store = f"{args.store}/{name}" if args.store else None
        study = bm.simulation_study(population, values, design, args.reps, store=store, resume=True,
                                    fit_kwargs={"draws": args.draws, "tune": args.draws, "chains": 2},
                                    model_kwargs=MODEL_KWARGS.get(name), workers=args.workers,
                                    random_seed=args.seed)
        summary = study.summary.assign(kind=lambda s: s.parameter.map(parameter_class))
        print(f"\n### {name}: {study!r}\n")
        print("| parameter | true | mean estimate | bias | RMSE | mean posterior SD | SD of estimates | "
              "coverage | power | converged |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for row in summary.itertuples():
            print(f"| {row.parameter} | {row.true:.3g} | {row.mean:.3f} | {row.bias:+.3f} | {row.rmse:.3f} | "
                  f"{row.mean_posterior_sd:.3f} | {row.sd_estimates:.3f} | {row.coverage:.3f} | {row.power:.2f} | "
                  f"{row.converged:.2f} |")
        by_kind = summary.groupby("kind").agg(parameters=("parameter", "size"), coverage=("coverage", "mean"),
                                              lowest=("coverage", "min"), highest=("coverage", "max"))
        print("\n| class | parameters | mean coverage | lowest | highest |\n| --- | ---: | ---: | ---: | ---: |")
        for kind, row in by_kind.iterrows():
            print(f"| {kind} | {row.parameters} | {row.coverage:.3f} | {row.lowest:.3f} | {row.highest:.3f} |")
        print(f"\nseconds per fit: {summary.seconds_per_fit.mean():.1f}; failed replications: "
              f"{int(summary.failed.max())}")


if __name__ == "__main__":
    main()
