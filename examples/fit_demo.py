"""Fit the lavaan tutorial's two-level SEM to Demo.twolevel and print the summary.

    python examples/fit_demo.py            # 4 chains x 1000 draws
    python examples/fit_demo.py --quick    # a few draws, to check the installation
"""

import argparse

import bayes_msem as bm


def main(quick: bool = False) -> bm.FitResult:
    data = bm.example_data("demo_twolevel")  # 2500 pupils in 200 clusters
    model = bm.Model(bm.example_model("demo_twolevel"), data, cluster="cluster")
    print(model.spec.table.rows.query("user")[["lhs", "op", "rhs", "level"]].to_string(index=False))
    draws = dict(draws=100, tune=100, chains=2) if quick else dict(draws=1000, tune=1000, chains=4)
    result = model.fit(**draws, random_seed=2026)
    print(result)
    print("\nLatent cluster means of the first clusters:")
    print(result.cluster_effects().head(8).to_string(index=False))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few draws: checks that everything runs")
    main(quick=parser.parse_args().quick)
