"""Ordinal columns as users bring them: whole numbers in any range, ordered
Categoricals, text; empty categories merged with a message; each problem
named with its column."""

import numpy as np
import pandas as pd
import pytest

import bayes_msem as bm
from bayes_msem.ordinal import MAX_CATEGORIES, code_ordinal

MODEL = "level: 1\n u ~ x\nlevel: 2\n u ~~ u"


def small_data(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cluster = np.repeat(np.arange(30), 5)
    latent = 0.8 * rng.standard_normal(30)[cluster] + rng.standard_normal(150)
    x = rng.standard_normal(150)
    return pd.DataFrame({"cluster": cluster, "x": x, "u": np.digitize(latent + 0.5 * x, [-0.7, 0.0, 0.8]) + 1,
                         "y": rng.standard_normal(150)})


def test_codes_follow_the_order_of_the_values_and_keep_missing_values():
    frame = pd.DataFrame({"u": [5, 2, np.nan, 9, 2]})
    with pytest.warns(UserWarning, match="no row is in category 3, 4, 6, 7, 8"):
        coded, coding = code_ordinal(frame, ["u"], ("u",))
    assert coding.categories == {"u": (2, 5, 9)}
    np.testing.assert_array_equal(coded["u"].to_numpy(), [1.0, 0.0, np.nan, 2.0, 0.0])


def test_an_ordered_categorical_keeps_its_order_and_merges_empty_categories():
    levels = ["never", "sometimes", "often", "always"]
    frame = pd.DataFrame({"u": pd.Categorical(["often", "never", "always", "often"], categories=levels,
                                              ordered=True)})
    with pytest.warns(UserWarning, match="no row is in category sometimes; empty categories are merged"):
        coded, coding = code_ordinal(frame, ["u"], ("u",))
    assert coding.categories["u"] == ("never", "often", "always")
    assert coded["u"].tolist() == [1.0, 0.0, 2.0, 1.0]


def test_a_gap_in_whole_number_codes_is_announced():
    with pytest.warns(UserWarning, match="'u': no row is in category 3"):
        code_ordinal(pd.DataFrame({"u": [1, 2, 4, 5]}), ["u"], ("u",))


@pytest.mark.parametrize("column, words", [
    ([1.0, 2.5, 3.0], "'u' has the non-integer value 2.5"),
    (["low", "high", "low"], "'u' holds text such as 'low', whose order is unknown"),
    (pd.Categorical(["a", "b"]), "'u' is an unordered categorical; declare its order"),
    ([2, 2, np.nan], "'u' has 1 observed category; it needs at least two"),
    (list(range(MAX_CATEGORIES + 1)), "'u' has 21 categories \\(more than 20\\); model it as continuous"),
])
def test_bad_ordinal_columns_are_named(column, words):
    with pytest.raises(bm.DataError, match=words):
        code_ordinal(pd.DataFrame({"u": column}), ["u"], ("u",))


def test_ordered_true_takes_the_modelled_columns_with_few_integer_values():
    data = small_data()
    data["count"] = np.arange(150)  # a covariate-like integer column the model does not model
    model = bm.Model("level: 1\n u ~ x\n y ~ x\nlevel: 2\n u ~~ u\n y ~~ y", data, cluster="cluster", ordered=True)
    assert model.ordered == {"u": 4}


@pytest.mark.parametrize("syntax, ordered, error, words", [
    (MODEL, ["x"], bm.DataError, "'x' is declared ordinal but the model does not model it"),
    (MODEL, ["nope"], bm.DataError, "ordered= names 'nope', which is not a column"),
    (MODEL + "\n y | t1", ["u"], bm.ModelSyntaxError, "y has thresholds but is not declared ordinal"),
    ("level: 1\n u ~ x\n u | t1 + t2 + t3 + t4\nlevel: 2\n u ~~ u", ["u"], bm.ModelSyntaxError,
     "u has 4 categories in the data, so 3 threshold\\(s\\); t4 is one too many"),
    ("level: 1\n u ~ x\n u ~~ u\nlevel: 2\n u ~~ u", ["u"], bm.ModelSyntaxError,
     "the residual variance of the ordinal u is fixed at 1"),
    (MODEL + '\n u | prior("gamma(2, 1)")*t1', ["u"], bm.ModelSyntaxError, "thresholds are sampled as an ordered"),
])
def test_model_errors_name_the_variable(syntax, ordered, error, words):
    with pytest.raises(error, match=words):
        bm.Model(syntax, small_data(), cluster="cluster", ordered=ordered)


def test_threshold_lines_take_labels_fixed_values_and_priors():
    model = bm.Model(MODEL + '\n u | th1*t1 + 0*t2 + prior("normal(1, 0.5)")*t3', small_data(), cluster="cluster",
                     ordered=["u"])
    table = model.partable()
    thresholds = table[table.op == "|"].set_index("rhs")
    assert thresholds.loc["t1", "label"] == "th1" and thresholds.loc["t2", "free"] == 0
    priors = model.priors().set_index("rhs")
    assert priors.loc["t3", "prior"] == "normal(1, 0.5)" and priors.loc["t1", "prior"] == "normal(0, 5)"


def test_the_latent_response_has_unit_variance_and_zero_intercepts():
    table = bm.Model(MODEL, small_data(), cluster="cluster", ordered=["u"]).partable()
    fixed = table[(table.lhs == "u") & (table.free == 0)].set_index(["op", "level"])["ustart"]
    assert fixed[("~~", "within")] == 1.0
    assert fixed[("~1", "within")] == 0.0 and fixed[("~1", "between")] == 0.0


def test_prior_predictive_data_are_categories_and_thresholds_increase():
    model = bm.Model(MODEL, small_data(), cluster="cluster", ordered=["u"])
    idata = model.sample_prior_predictive(draws=50, random_seed=1)
    replicated = idata.prior_predictive["u"].values
    assert set(np.unique(replicated)) <= {0.0, 1.0, 2.0, 3.0} and len(np.unique(replicated)) > 1
    thresholds = np.stack([idata.prior[f"u|t{k}"].values.ravel() for k in (1, 2, 3)])
    assert (np.diff(thresholds, axis=0) > 0).all()


def test_simulated_categories_follow_the_thresholds():
    values = {"u|t1": -0.5, "u|t2": 0.5}
    data = bm.simulate_data("u ~ 0*x", values, cluster_size=4000, seed=1, ordered=["u"])
    shares = data["u"].value_counts(normalize=True).sort_index().to_numpy()
    np.testing.assert_allclose(shares, [0.3085, 0.3829, 0.3085], atol=0.025)  # Phi(-0.5), Phi(0.5) - Phi(-0.5), ...
    with pytest.raises(ValueError, match="ordinal 'u' needs its thresholds"):
        bm.simulate_data("u ~ x", {}, cluster_size=10, ordered=["u"])


def test_missing_continuous_values_next_to_ordinal_ones_are_modelled_not_refused():
    """Full information under MAR: the latent engine conditions each row on the
    continuous values it has (exactness: tests/engines/test_ordinal.py)."""
    data = small_data()
    data.loc[::4, "y"] = np.nan
    data.loc[1::5, "u"] = np.nan
    model = bm.Model("level: 1\n u ~ x\n y ~ x\nlevel: 2\n u ~~ u\n y ~~ y", data, cluster="cluster", ordered=["u"])
    assert model.engine == "latent"
    assert model.spec.data.n_rows == len(data)
    assert np.isnan(model.spec.data.within_outcomes).any(axis=0).sum() == 2
