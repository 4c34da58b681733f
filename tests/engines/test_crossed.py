"""Cross-classified models in the latent engine: given each classification's
effects, the likelihood the sampler sees equals the normal density of every
row, written from the definition (a row's mean adds the parts of its unit in
both classifications), of each row's observed values where some are missing;
on data as users bring them (rows shuffled, text ids out of order, unequal
and partly empty cells, holes)."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from bayes_msem.errors import DataError
from bayes_msem.spec import build_spec

from .test_three_level import random_theta

CROSSED = """level: within
  y1 ~ x
  y2 ~ x
level: primary
  y1 ~ z
  y1 ~~ y2
level: secondary
  y1 ~ w
"""  # y2 has a part in primary and none in secondary

# the slope of y1 on x varies over the primary units (and covaries with their y1 part)
CROSSED_SLOPE = CROSSED.replace("y1 ~ x", "s | y1 ~ x").replace("y1 ~~ y2", "y1 ~~ y2\n  y1 ~~ s")
# and over the secondary units too (its mean there, correlated with their y1 part): a cell's slope is the sum
CROSSED_BOTH_SLOPE = CROSSED_SLOPE + "  s ~ w\n  y1 ~~ s\n"


def crossed_data(seed: int, n_primary: int, n_secondary: int, rows: int, holes: float = 0.0) -> pd.DataFrame:
    """Rows in random cells of two crossing classifications, text ids,
    shuffled; with ``holes``, that share of y1's and y2's values missing
    (rows missing both among them), the first row complete."""
    rng = np.random.default_rng(seed)
    a = np.concatenate([np.arange(n_primary), rng.integers(0, n_primary, rows)])  # every unit met at least once
    b = np.concatenate([rng.permutation(np.resize(np.arange(n_secondary), n_primary)),
                        rng.integers(0, n_secondary, rows)])
    b[:n_secondary] = np.arange(n_secondary) if n_secondary <= n_primary else b[:n_secondary]
    z, w = rng.normal(size=n_primary), rng.normal(size=n_secondary)
    y = rng.normal(size=(len(a), 2)) + rng.normal(size=(n_primary, 2))[a] + rng.normal(size=(n_secondary, 1))[b]
    frame = pd.DataFrame({"primary": [f"p{(5 * i) % 13}-{i}" for i in a], "secondary": [f"s{(3 * i) % 7}-{i}" for i in b],
                          "x": rng.normal(size=len(a)), "z": z[a], "w": w[b], "y1": y[:, 0], "y2": y[:, 1]})
    missing = rng.uniform(size=(len(a), 2)) < holes
    missing[0] = False
    frame[["y1", "y2"]] = frame[["y1", "y2"]].mask(missing)
    return frame.iloc[rng.permutation(len(frame))]


def rows_logp(spec, theta, cluster_effects, unit_effects, data: pd.DataFrame) -> float:
    """Sum over rows of :func:`each_rows_logp`."""
    return float(each_rows_logp(spec, theta, cluster_effects, unit_effects, data).sum())


def each_rows_logp(spec, theta, cluster_effects, unit_effects, data: pd.DataFrame) -> pd.Series:
    """The normal density of each row's observed values given its units'
    effects, by name, indexed by the rows' labels; a random slope s
    (CROSSED_SLOPE) adds its primary unit's s times x to y1 (and its
    secondary unit's, CROSSED_BOTH_SLOPE)."""
    from bayes_msem.matrices import level_moments

    within = level_moments(theta, spec.within)
    names = list(spec.within.observed)
    levels = spec.layout.levels
    cluster_at = {str(label): k for k, label in enumerate(spec.data.cluster_labels)}
    unit_at = {str(label): k for k, label in enumerate(spec.data.upper_levels[0].labels)}
    out = pd.Series(0.0, index=data.index)
    for label, row in data.iterrows():
        mean = within.mean + within.Pi @ row[list(spec.within.covariates)].to_numpy(float)
        for level, values in ((levels[1], cluster_effects[cluster_at[row["primary"]]]),
                              (levels[2], unit_effects[unit_at[row["secondary"]]])):
            effects = dict(zip(level.effects, values))
            mean = mean + np.array([effects.get(name, 0.0) if name in level.split else 0.0 for name in names])
            if "s" in effects:
                mean[names.index("y1")] += effects["s"] * row["x"]
        values = row[names].to_numpy(float)
        seen = ~np.isnan(values)
        if seen.any():
            out[label] = stats.multivariate_normal(mean[seen], within.Sigma[np.ix_(seen, seen)]).logpdf(values[seen])
    return out


@pytest.mark.parametrize("syntax", [CROSSED, CROSSED_SLOPE, CROSSED_BOTH_SLOPE],
                         ids=["intercepts", "slope over primary", "slope over both"])
@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10**6), n_primary=st.integers(3, 6), n_secondary=st.integers(3, 5),
       rows=st.integers(5, 30), holes=st.sampled_from([0.0, 0.3]))
def test_crossed_likelihood_equals_the_rows_normal_density(seed, n_primary, n_secondary, rows, holes, syntax):
    from bayes_msem.engines.crossed import build_crossed_model

    data = crossed_data(seed, n_primary, n_secondary, rows, holes)
    with pytest.warns(UserWarning, match="cross-classified \\(primary x secondary\\)"):
        spec = build_spec(syntax, data, cluster=["primary", "secondary"])
    model = build_crossed_model(spec)
    rng = np.random.default_rng(seed)
    point = {name: value + rng.normal(scale=0.3, size=np.shape(value)) for name, value in model.initial_point().items()}
    wanted = model.replace_rvs_by_values([model[name] for name in ("parameters", "cluster_effects", "unit_effects",
                                                                   "within_loglik")])
    outputs = model.compile_fn(wanted, inputs=model.value_vars, point_fn=True, mode="FAST_COMPILE")(point)
    theta, cluster_effects, unit_effects, loglik = outputs
    assert float(loglik) == pytest.approx(rows_logp(spec, theta, cluster_effects, unit_effects, data), rel=1e-9)


@pytest.mark.parametrize("syntax", [CROSSED, CROSSED_BOTH_SLOPE], ids=["intercepts", "slope over both"])
@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10**6), holes=st.sampled_from([0.0, 0.3]))
def test_loos_rows_are_each_rows_density_given_its_units_effects(seed, holes, syntax):
    """LOO's unit in a crossed model: each row's density given its two units'
    effects, by the user's row label (rows shuffled, with holes), at effects
    drawn at random (their sum is the sampler's likelihood: the test above)."""
    from bayes_msem.checking import crossed_row_log_likelihood
    from bayes_msem.engines import get_engine

    data = crossed_data(seed, 5, 4, 25, holes)
    data.index = [f"row {i}" for i in np.random.default_rng(seed).permutation(len(data))]
    with pytest.warns(UserWarning, match="cross-classified"):
        spec = build_spec(syntax, data, cluster=["primary", "secondary"])
    rng = np.random.default_rng(seed)
    theta = random_theta(spec, seed)
    effects = rng.normal(size=(spec.data.n_clusters, len(spec.layout.levels[1].effects)))
    unit_effects = rng.normal(size=(spec.data.upper_levels[0].n_units, len(spec.layout.levels[2].effects)))
    per_row = get_engine("latent").unit_log_likelihood(spec, theta[None, None], effects[None, None],
                                                       unit_effects[None, None])[0, 0]
    expected = each_rows_logp(spec, theta, effects, unit_effects, data)
    np.testing.assert_allclose(per_row, expected[list(spec.data.row_labels)].to_numpy(), rtol=1e-9)
    assert crossed_row_log_likelihood(spec, theta[None, None], None, unit_effects[None, None]) is None


# q: an outcome of the primary units (of their y1 part and z); v: of the secondary units (of w)
CROSSED_OUTCOMES = CROSSED.replace("  y1 ~~ y2\n", "  y1 ~~ y2\n  q ~ y1 + z\n") + "  v ~ y1 + w\n"


def test_outcomes_of_either_classification_add_their_normal_density_given_the_units_effects():
    """Each unit's own outcome given its sampled effects: normal around
    intercept + coefficients x (the unit's effects, covariates), with the
    residual variance, written by name."""
    from bayes_msem.engines.crossed import build_crossed_model
    from bayes_msem.matrices import level_moments

    data = crossed_data(4, 6, 5, 40)
    rng = np.random.default_rng(4)
    data["q"] = data["primary"].map(dict(zip(data["primary"].unique(), rng.normal(size=6))))
    data["v"] = data["secondary"].map(dict(zip(data["secondary"].unique(), rng.normal(size=5))))
    with pytest.warns(UserWarning, match="cross-classified"):
        spec = build_spec(CROSSED_OUTCOMES, data, cluster=["primary", "secondary"])
    model = build_crossed_model(spec)
    point = {name: value + rng.normal(scale=0.3, size=np.shape(value)) for name, value in model.initial_point().items()}
    names = ("parameters", "cluster_effects", "unit_effects", "cluster_outcomes_loglik", "unit_outcomes_loglik")
    wanted = model.replace_rvs_by_values([model[name] for name in names])
    theta, effects, unit_effects, q_logp, v_logp = model.compile_fn(wanted, inputs=model.value_vars, point_fn=True,
                                                                    mode="FAST_COMPILE")(point)
    expected = []
    for level, values, outcome, covariate, column in ((1, effects, "q", "z", "primary"),
                                                      (2, unit_effects, "v", "w", "secondary")):
        layout = spec.layout.levels[level]
        moments = level_moments(theta, layout.structure)
        labels = spec.data.cluster_labels if level == 1 else spec.data.upper_levels[0].labels
        node = layout.nodes.index(outcome)
        total = 0.0
        for label, unit in zip(labels, values):
            rows = data[data[column] == label].iloc[0]
            by_name = dict(zip(layout.effects, unit))
            mean = (moments.alpha[node] + moments.A[node, layout.nodes.index("y1")] * by_name["y1"]
                    + moments.A_x[node, layout.structure.covariates.index(covariate)] * rows[covariate])
            total += stats.norm(mean, np.sqrt(moments.S[node, node])).logpdf(rows[outcome])
        expected.append(total)
    assert [float(q_logp), float(v_logp)] == pytest.approx(expected, rel=1e-9)


def test_crossed_designs_are_announced_and_take_the_latent_engine():
    import bayes_msem as bm

    data = crossed_data(1, 12, 10, 200)
    with pytest.warns(UserWarning, match="'primary' is not nested in 'secondary'.*make them unique instead"):
        model = bm.Model(CROSSED, data, cluster=["primary", "secondary"])
    assert model.engine == "latent" and "cross-classified" in model.engine_reason
    assert repr(model).startswith("<bayes_msem.Model: cross-classified") and "crossed with 10 units" in repr(model)
    with pytest.warns(UserWarning, match="cross-classified"), pytest.raises(ValueError, match="not block diagonal"):
        bm.Model(CROSSED, data, cluster=["primary", "secondary"], engine="collapsed")
    on_modelled = CROSSED.replace("y1 ~ x", "s | y1 ~ y2")  # y2 is modelled: its slope would enter Sigma per unit
    with pytest.warns(UserWarning, match="cross-classified"), pytest.raises(ValueError, match="random slopes of "
                                                                                          "covariates so far"):
        bm.Model(on_modelled, data, cluster=["primary", "secondary"])
    over_second = CROSSED.replace("y1 ~ z", "t | y1 ~ z")  # z's effect varying over the secondary units
    with pytest.warns(UserWarning, match="cross-classified"), pytest.raises(
            ValueError, match="random slope\\(s\\) t of a first-classification covariate varying over the second"):
        bm.Model(over_second, data, cluster=["primary", "secondary"])
    with pytest.warns(UserWarning, match="cross-classified"), pytest.raises(DataError, match="'w' is named only in"):
        bm.Model(CROSSED, data.assign(w=np.arange(len(data), dtype=float)), cluster=["primary", "secondary"])
