"""Results: summary layout, lavaan names in InferenceData, defined parameters,
diagnostics, save/load and reproducibility (short runs)."""

import re
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import QUICK_RUN, SMALL_TWO_LEVEL, simulate_small_two_level

import bayes_msem as bm
from bayes_msem.results import SUMMARY_COLUMNS


def test_summary_has_one_row_per_table_row(small_fit):
    summary = small_fit.summary()
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert len(summary) == len(small_fit.table)
    fixed = summary[~summary.free]
    assert (fixed["sd"] == 0).all() and fixed.r_hat.isna().all()
    assert set(summary.level) == {"within", "between", ""}  # "" for the := row


def test_posterior_reads_like_lavaan(small_fit):
    posterior = small_fit.idata.posterior
    assert "m~x" in posterior and "y~m" in posterior
    # variances free at both levels carry a level coordinate
    assert list(posterior["y~~y"].coords["level"].values) == ["within", "between"]
    assert posterior["m~x"].attrs["level"] == "within"
    assert posterior["cluster_effects"].dims == ("chain", "draw", "cluster", "cluster_variable")


def test_defined_parameter_is_computed_per_draw(small_fit):
    posterior = small_fit.idata.posterior
    np.testing.assert_allclose(posterior["ab"].values, posterior["m~x"].values * posterior["y~m"].values)
    row = small_fit.summary().query("op == ':='").iloc[0]
    assert row.lhs == "ab" and row.free


def test_priors_table_lists_every_free_parameter(small_fit):
    priors = small_fit.priors()
    assert len(priors) == small_fit.table.free.max()
    assert (priors.source == "default").all()


def test_text_summary_has_header_and_levels(small_fit):
    text = str(small_fit)
    for words in ("Engine collapsed: cluster effects", "Clusters 30 (school)", "Level 1 [within]", "Level 2 [between]",
                  "Regressions:", "Defined parameters:", "Diagnostics:"):
        assert words in text


def test_save_and_load_round_trip(small_fit, tmp_path):
    path = tmp_path / "fit.nc"
    small_fit.save(path)
    loaded = bm.load_result(path)
    pd.testing.assert_frame_equal(loaded.summary(), small_fit.summary(), check_dtype=False)
    assert loaded.info["cluster"] == "school"


def test_cluster_effects_have_sizes(small_fit):
    estimates = small_fit.cluster_effects()
    assert set(estimates.variable) == {"m", "y"}
    assert (estimates["size"] == 8).all() and len(estimates) == 60


def test_same_seed_same_draws(small_fit):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = bm.Model(SMALL_TWO_LEVEL, simulate_small_two_level(), cluster="school").fit(**QUICK_RUN)
    np.testing.assert_array_equal(again.idata.posterior["y~m"].values, small_fit.idata.posterior["y~m"].values)


def test_short_run_warns_about_low_ess():
    data = simulate_small_two_level()
    with pytest.warns(UserWarning, match="effective sample size below"):
        bm.Model("y ~ x", data).fit(draws=30, tune=30, chains=2, random_seed=1, progressbar=False)


def test_diagnostic_messages_give_advice(small_fit, monkeypatch):
    diagnostics = small_fit.diagnostics()
    assert set(diagnostics) >= {"divergences", "max_r_hat", "min_ess_bulk", "min_ess_tail"}
    failing = dict(diagnostics, divergences=3, high_r_hat=["y~m"], low_ess=["y~~y"])
    monkeypatch.setattr(small_fit, "diagnostics", lambda: failing)
    divergences, r_hat, ess = small_fit.diagnostic_messages()[:3]  # then any likely causes
    assert divergences.startswith("3 divergent transitions") and "target_accept=0.95" in divergences
    assert "y~m" in r_hat and "Run more tune and draws" in r_hat
    assert "y~~y" in ess and "Run more draws" in ess
    monkeypatch.setitem(small_fit.info, "interface", "cli")  # the command line's words
    divergences, r_hat, ess = small_fit.diagnostic_messages()[:3]
    assert "--target-accept 0.95" in divergences and "--tune and --draws" in r_hat and "--draws" in ess
    monkeypatch.setattr(small_fit, "diagnostics", lambda: dict(failing, divergences=0, high_r_hat=[], low_ess=[]))
    assert small_fit.diagnostic_messages() == []


def test_random_slope_fit_gives_effects_cluster_effects_and_plot(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    data = bm.example_data("mediation_111_random_slopes")
    data = data[data.cluster <= 40]
    model = bm.Model(bm.example_model("mediation_111_random_slopes"), data, cluster="cluster",
                     centering={"m": "none"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = model.fit(**QUICK_RUN)
    assert "random" not in set(result.summary().columns) and not (result.summary().op == "~").any()
    effects = result.effects()
    assert {"x -> m -> y", "x => y", "indirect"} <= set(effects.effect)
    clusters = result.cluster_effects()
    assert set(clusters.variable) == {"m", "y", "a", "b", "cp", "x -> m -> y"}
    assert len(clusters) == 40 * 6 and (clusters["size"] == 15).all()
    assert result.plot_cluster_effects("x -> m -> y") is not None
    text = str(result)
    assert "a | m ~ x" in text and "centering none" in text
    assert "  indirect := a_mean * b_mean + cab\n" in text  # definitions printed whole
    # issue 12: no wrong standardized values or R-squared where the slopes enter the variance
    with pytest.warns(UserWarning, match="m, y at level within are not given"):
        std = result.standardized()
    within = std[std.level == "within"]
    involved = within.lhs.isin(["m", "y"]) | within.rhs.isin(["m", "y"])
    assert within[involved]["mean"].isna().all() and within[~involved]["mean"].notna().all()  # covariates' rows
    assert std[std.level == "between"]["mean"].notna().any()
    with pytest.warns(UserWarning, match="R-squared involving m, y"):
        r2 = result.r_squared().set_index(["level", "variable"])
    assert np.isnan(r2.loc[("within", "m"), "mean"]) and np.isnan(r2.loc[("within", "y"), "mean"])
    result.save(tmp_path / "r.nc")
    again = bm.load_result(tmp_path / "r.nc")
    assert again.effects()["mean"].tolist() == pytest.approx(effects["mean"].tolist())


def test_likely_causes_name_a_funnel_collinear_predictors_and_few_clusters():
    """Where the posterior shows them: a between SD held near zero (its prior
    allows no more), two predictors that are nearly the same variable, 8 clusters."""
    rng = np.random.default_rng(3)
    cluster = np.repeat(np.arange(8), 20)
    x1 = rng.normal(size=len(cluster))
    data = pd.DataFrame({"g": cluster, "x1": x1, "x2": x1 + 0.02 * rng.normal(size=len(cluster)),
                         "y": x1 + rng.normal(size=len(cluster))})
    syntax = 'level: 1\n  y ~ x1 + x2\nlevel: 2\n  y ~~ prior("half_normal(0.01)")*y'
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = bm.Model(syntax, data, cluster="g").fit(**QUICK_RUN)
    causes = " ".join(result.likely_causes())
    assert "a variance near zero: y~~y (between)" in causes
    assert re.search(r"x1 and x2 in y ~ x1 \+ x2 \(within\) \(r = -(0\.9\d|1\.00)\)", causes), causes
    assert "only 8 clusters" in causes
    if result.diagnostic_messages():  # shown with the diagnostics they explain
        assert any(m.startswith("likely cause: ") for m in result.diagnostic_messages())
