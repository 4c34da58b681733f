"""Standardized solution and R-squared against lavaan (slow: uses a full fit)."""

import numpy as np
import pandas as pd
import pytest
from conftest import DATA

pytestmark = pytest.mark.slow


def test_standardized_solution_matches_lavaan(political_democracy_fit):
    # lavaan 0.6-14 standardizedSolution(sem(model, PoliticalDemocracy, meanstructure = TRUE))
    # (tests/data/make_lavaan_references.R)
    reference = pd.read_csv(DATA / "political_democracy_sem_lavaan_std.csv")
    reference["rhs"] = reference["rhs"].fillna("")
    merged = reference.merge(political_democracy_fit.standardized(), on=["lhs", "op", "rhs"])
    slopes_and_variances = merged[merged.op != "~1"]
    assert len(slopes_and_variances) == 29
    difference = (slopes_and_variances["median"] - slopes_and_variances["est.std"]).abs()
    assert difference.max() < 0.05, slopes_and_variances.assign(difference=difference)
    # Standardized intercepts (mean / sd, up to 7 here) come out 2-3.5% smaller than
    # lavaan's (up to 0.11 absolute): with N = 75 the posterior of each variance sits above
    # the ML estimate, which divides by N. Checked loosely, enough to catch a wrong scaling.
    intercepts = merged[(merged.op == "~1") & (merged["est.std"] != 0)]
    assert ((intercepts["median"] - intercepts["est.std"]).abs() / intercepts["est.std"]).max() < 0.06


def test_r_squared_is_one_minus_standardized_residual_variance(political_democracy_fit):
    r2 = political_democracy_fit.r_squared().set_index("variable")
    std = political_democracy_fit.standardized()
    residual = std[(std.op == "~~") & (std.lhs == std.rhs)].set_index("lhs")
    for name in ("y1", "dem60", "dem65"):
        assert r2.loc[name, "mean"] == pytest.approx(1 - residual.loc[name, "mean"], abs=1e-9)
    assert np.all((r2["mean"] > 0) & (r2["mean"] < 1))
    assert "ind60" not in r2.index  # exogenous: no R-squared


@pytest.mark.parametrize("syntax, expected", [
    ("level: 1\n  s | y ~ x\n  z ~ y\n  u ~ x\nlevel: 2\n  y ~~ s", {"y", "z"}),
    ("level: 1\n  y ~ x\nlevel: 2\n  y ~~ y", set()),
])
def test_variables_whose_variance_depends_on_random_slopes(syntax, expected):
    from bayes_msem.matrices import level_structures
    from bayes_msem.partable import build_partable
    from bayes_msem.standardized import slope_dependent

    within = level_structures(build_partable(syntax))[0]
    assert slope_dependent(within) == expected


def test_three_level_iccs_are_the_shares_of_variance_at_each_level_and_above():
    """y = b1 x + b2 z + b3 w + parts at three levels: the ICC of a level is the
    variance at that level and above (covariates' included) over the total."""
    import bayes_msem as bm
    from bayes_msem.engines.parameters import parameter_names
    from bayes_msem.spec import build_spec
    from bayes_msem.standardized import icc_draws

    spec = build_spec(bm.example_model("three_level_sim"), bm.example_data("three_level_sim"),
                      cluster=["class", "school"])
    names = ["y~x|within", "y~~y|within", "y~z|class", "y~~y|class", "y~w|school", "y~~y|school", "y~1|school"]
    assert parameter_names(spec) == names
    theta = np.array([[0.5, 1.0, 0.3, 0.5, 0.6, 0.25, 0.9]])
    rows = spec.table.rows
    variance = {level: rows[(rows.op == "~~") & rows.exo & (rows.level == level)].ustart.iloc[0] for level in (1, 2, 3)}
    parts = [0.5**2 * variance[1] + 1.0, 0.3**2 * variance[2] + 0.5, 0.6**2 * variance[3] + 0.25]
    iccs = icc_draws(list(spec.structures), rows, theta, ["y"])[0, :, 0]
    assert iccs == pytest.approx([(parts[1] + parts[2]) / sum(parts), parts[2] / sum(parts)], rel=1e-12)
