"""Model: argument checks and the parameter table users see (no sampling)."""

import numpy as np
import pytest
from conftest import SMALL_TWO_LEVEL, simulate_small_two_level

import bayes_msem as bm


def test_partable_has_level_names():
    model = bm.Model(SMALL_TWO_LEVEL, simulate_small_two_level(), cluster="school")
    table = model.partable()
    assert set(table.level) == {"within", "between", ""}
    assert {"lhs", "op", "rhs", "free", "ustart", "label", "prior"} <= set(table.columns)


def test_user_prior_appears_in_prior_table():
    model = bm.Model('y ~ prior("normal(0, 0.5)")*x', simulate_small_two_level())
    priors = model.priors()
    row = priors[(priors.op == "~") & (priors.rhs == "x")].iloc[0]
    assert row.prior == "normal(0, 0.5)" and row.source == "user"


def test_default_priors_can_be_changed():
    model = bm.Model("y ~ x", simulate_small_two_level(), priors={"slope_sd": 1.0})
    wide = bm.Model("y ~ x", simulate_small_two_level())
    assert model.priors().prior[0] != wide.priors().prior[0]


def test_bad_options():
    data = simulate_small_two_level()
    with pytest.raises(ValueError, match="engine="):
        bm.Model("y ~ x", data, engine="fast")
    with pytest.raises(ValueError, match="sampler="):
        bm.Model("y ~ x", data).fit(sampler="stan")
    for seed in (-1, 1.5, "a", True):  # refused at once, not after compiling
        with pytest.raises(ValueError, match="random_seed must be a non-negative whole number"):
            bm.Model("y ~ x", data).fit(random_seed=seed)


def test_syntax_error_surfaces_from_model():
    with pytest.raises(bm.ModelSyntaxError, match="line 2, column 6"):
        bm.Model("y ~ x\ny ~~ = x", simulate_small_two_level())


def test_example_helpers():
    assert "level: 1" in bm.example_model("mplus_ex9_6")
    assert len(bm.example_data("demo_twolevel")) == 2500
    with pytest.raises(ValueError, match="unknown example"):
        bm.example_data("nope")


def test_model_repr_says_what_it_holds():
    model = bm.Model(bm.example_model("demo_twolevel"), bm.example_data("demo_twolevel"), cluster="cluster")
    assert repr(model) == ("<bayes_msem.Model: two-level, 20 free parameters, 2500 rows, 200 clusters of 'cluster', "
                           "engine 'collapsed'>")
    three = bm.Model(bm.example_model("three_level_sim"), bm.example_data("three_level_sim"),
                     cluster=["class", "school"])
    assert repr(three) == ("<bayes_msem.Model: three-level, 7 free parameters, 2880 rows, 240 clusters of 'class' in "
                           "60 units of 'school', engine 'collapsed'>")
    assert list(three.partable().level.unique()) == ["within", "class", "school"]
    assert list(three.priors().level.unique()) == ["within", "class", "school"]
    with pytest.raises(ValueError, match="engine='latent' does not apply here: the latent engine takes two levels"):
        bm.Model(bm.example_model("three_level_sim"), bm.example_data("three_level_sim"), cluster=["class", "school"],
                 engine="latent")


def test_covariates_with_missing_values_are_brought_into_the_model():
    import numpy as np

    data = bm.example_data("demo_twolevel")
    data.loc[data.index[::10], "x1"] = np.nan
    data.loc[data.cluster.isin([3, 7]), "w1"] = np.nan
    with pytest.warns(UserWarning, match=r"brought into the model: x1 \(250 rows\), w1"):
        model = bm.Model(bm.example_model("demo_twolevel"), data, cluster="cluster")
    table = model.partable().set_index(["lhs", "op", "rhs", "level"])
    assert table.loc[("x1", "~~", "x1", "within"), "free"] > 0  # its variance estimated
    assert table.loc[("x1", "~", "x2", "within"), "free"] > 0  # given the complete covariates
    assert table.loc[("w1", "~", "w2", "between"), "free"] > 0
    assert not table.loc[("x2", "~~", "x3", "within"), "free"] > 0  # the others stay fixed.x
    assert model.spec.data.n_rows == 2500 and model.spec.data.has_missing


def test_a_centered_covariate_with_missing_values_is_refused():
    import numpy as np

    data = simulate_small_two_level()
    data.loc[[0, 3], "x"] = np.nan
    with pytest.raises(bm.DataError, match="covariate 'x' has 2 missing value\\(s\\): it is a predictor as 'x\\."):
        bm.Model("level: 1\n y ~ x\nlevel: 2\n y ~~ y", data, cluster="school", centering={"x": "cluster-mean"})
    data = simulate_small_two_level()
    data.loc[[0, 3], "m"] = np.nan  # a random slope on a modelled variable's raw values: not a covariate to bring in
    with pytest.raises(bm.DataError, match="covariate 'm' has 2 missing value\\(s\\): it is a predictor as 'm.raw'"):
        bm.Model("level: 1\n m ~ x\n b | y ~ m\nlevel: 2\n m ~~ y + b", data, cluster="school",
                 centering={"m": "none"})


def test_ordered_declares_probit_variables_with_thresholds_in_the_table():
    """lavaan's argument for ordinal variables: the column is coded 0..K-1, the
    table gets K-1 thresholds, and the model goes to the latent engine."""
    data = simulate_small_two_level()
    data["u"] = np.digitize(data["y"], [-0.5, 0.5]) + 1  # categories 1, 2, 3
    model = bm.Model("level: 1\n u ~ x\nlevel: 2\n u ~~ u", data, cluster="school", ordered=["u"])
    table = model.partable()
    assert table[table.op == "|"].rhs.tolist() == ["t1", "t2"]
    assert model.engine == "latent" and "probit" in model.engine_reason
    assert sorted(np.unique(model.spec.data.within_outcomes[:, 0])) == [0.0, 1.0, 2.0]
