"""1-1-1 mediation with random slopes against brms (slow: full MCMC runs).

Reference: shared/reference/mediation_111_brms_*.csv, brms 2.18 (Stan) on
mediation_111_random_slopes.csv (150 clusters of 15) with
`bf(m ~ x + (1 + x |p| cluster)) + bf(y ~ x + m + (1 + x + m |p| cluster)) +
set_rescor(FALSE)`, default priors, 4 chains x 2000 draws. The fit also runs on a
copy with rows shuffled and cluster ids relabelled (issue 12). brms uses the raw m
as predictor of y, so the comparable model has centering={"m": "none"}, every
random-effect covariance free, and the average indirect effect
E[a_j b_j] = a*b + cov(a_j, b_j) (brms: `indirect_total`).

Tolerances (issue 3): posterior medians within 0.25 brms posterior SD for the
fixed effects and the indirect effect, 0.5 SD for the variances and cov(a_j, b_j);
95% intervals contain the generating values; per-cluster indirect effects
correlate >= 0.98 with brms's per-cluster posterior means.
"""

import numpy as np
import pandas as pd
import pytest
from conftest import DATA, reference_fit, shuffled

import bayes_msem as bm

pytestmark = pytest.mark.slow

# (our row, brms quantity, tolerance in brms SDs, generating value)
QUANTITIES = [
    (("a", "~1", ""), "b_m_x", 0.25, 0.4),
    (("b", "~1", ""), "b_y_m", 0.25, 0.5),
    (("cp", "~1", ""), "b_y_x", 0.25, 0.2),
    (("a", "~~", "a"), "var_a", 0.5, 0.09),
    (("b", "~~", "b"), "var_b", 0.5, 0.09),
    (("cp", "~~", "cp"), "var_c", 0.5, 0.04),
    (("m", "~~", "m"), "var_m_int", 0.5, 0.25),
    (("y", "~~", "y"), "var_y_int", 0.5, 0.25),
    (("a", "~~", "b"), "cov_a_b", 0.5, 0.036),
    (("indirect", ":=", ""), "indirect_total", 0.25, 0.236),
]


def brms_reference() -> pd.DataFrame:
    summary = pd.read_csv(DATA / "mediation_111_brms_summary.csv").set_index("variable")
    derived = pd.read_csv(DATA / "mediation_111_brms_indirect.csv").set_index("quantity")
    return pd.concat([summary, derived])


def test_random_slope_mediation_matches_brms(data_order):
    mediation_fit = reference_fit("mediation", data_order)
    summary = mediation_fit.summary()
    summary = summary[(summary.level == "between") | (summary.op == ":=")]
    summary = summary.assign(rhs=summary.rhs.where(summary.op != ":=", "")).set_index(["lhs", "op", "rhs"])
    reference = brms_reference()
    rows = []
    for key, name, tolerance, truth in QUANTITIES:
        ours, ref = summary.loc[key], reference.loc[name]
        rows.append(dict(quantity=name, ours=ours["median"], brms=ref["median"], brms_sd=ref["sd"],
                         distance=abs(ours["median"] - ref["median"]) / ref["sd"], tolerance=tolerance,
                         covers=ours["q2.5"] <= truth <= ours["q97.5"]))
    table = pd.DataFrame(rows)
    assert (table.distance <= table.tolerance).all(), table
    assert table.covers.all(), table
    diagnostics = mediation_fit.diagnostics()
    assert diagnostics["divergences"] == 0 and diagnostics["max_r_hat"] <= 1.01


def test_effects_find_the_average_indirect_effect(mediation_fit):
    effects = mediation_fit.effects()
    found = effects[(effects.type == "indirect") & (effects.effect == "x -> m -> y")].iloc[0]
    defined = effects[effects.effect == "indirect"].iloc[0]
    # the path found from the model is the user's a*b + cov(a_j, b_j), draw by draw
    assert found["mean"] == pytest.approx(defined["mean"], rel=1e-9)
    reference = brms_reference().loc["indirect_total"]
    assert abs(found["median"] - reference["median"]) <= 0.25 * reference["sd"]
    assert found["p_direction"] == 1.0


def test_cluster_specific_indirect_effects_match_brms(data_order):
    mediation_fit = reference_fit("mediation", data_order)
    ours = mediation_fit.cluster_effects()
    ours = ours[ours.variable == "x -> m -> y"].set_index("cluster")
    reference = pd.read_csv(DATA / "mediation_111_brms_cluster_indirect.csv")
    reference["cluster"] = reference["cluster"].astype(str)
    if data_order == "shuffled":  # brms's clusters under the copy's labels
        mapping = shuffled(bm.example_data("mediation_111_random_slopes"), "cluster")[1]
        reference["cluster"] = reference["cluster"].map(mapping)
    merged = reference.join(ours, on="cluster", rsuffix="_ours")
    assert len(merged) == 150 and merged["mean_ours"].notna().all()
    assert np.corrcoef(merged["mean"], merged["mean_ours"])[0, 1] >= 0.98
    slopes = mediation_fit.cluster_effects().pivot(index="cluster", columns="variable", values="mean")
    assert np.corrcoef(slopes.loc[reference["cluster"], "a"], reference["a_mean"])[0, 1] >= 0.98
    assert set(ours["size"]) == {15}


def test_engines_agree_on_the_mediation_data(mediation_fit, mediation_latent_fit):
    """Issue 4: posterior means within 0.1 posterior SD (or 3.5 Monte Carlo SEs
    where the latent engine's ESS is low)."""
    collapsed, latent = (fit.summary().query("free").set_index(["lhs", "op", "rhs", "level"])
                         for fit in (mediation_fit, mediation_latent_fit))
    difference = (collapsed["mean"] - latent["mean"]).abs()
    mcse = np.sqrt(collapsed["sd"] ** 2 / collapsed["ess_bulk"] + latent["sd"] ** 2 / latent["ess_bulk"])
    assert ((difference <= 0.1 * collapsed["sd"]) | (difference <= 3.5 * mcse)).all(), difference / collapsed["sd"]
