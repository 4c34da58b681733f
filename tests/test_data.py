"""Data checks: every problem gets a message that names the variable and the fix."""

import numpy as np
import pandas as pd
import pytest

from bayes_msem.data import covariate_moments, prepare_data
from bayes_msem.errors import DataError
from bayes_msem.partable import build_partable

TWO_LEVEL = "level: 1\n  y ~ x\nlevel: 2\n  y ~ w"


def clustered(n_clusters=4, size=3, seed=0):
    rng = np.random.default_rng(seed)
    cluster = np.repeat(np.arange(n_clusters), size)
    w = rng.normal(size=n_clusters)[cluster]
    x = rng.normal(size=len(cluster))
    return pd.DataFrame({"id": cluster, "x": x, "w": w, "y": x + w + rng.normal(size=len(cluster))})


def prepare(model, data, **kwargs):
    return prepare_data(build_partable(model), data, **kwargs)


def test_arrays_and_cross_products():
    data = clustered()
    prepared = prepare(TWO_LEVEL, data, cluster="id")
    assert prepared.n_clusters == 4 and prepared.n_rows == 12
    assert prepared.between_covariates.shape == (4, 1)
    np.testing.assert_allclose(prepared.stats["sum_y"][:, 0], data.groupby("id").y.sum().to_numpy())
    np.testing.assert_allclose(prepared.stats["yx"], data[["y"]].to_numpy().T @ data[["x"]].to_numpy())


def test_covariate_moments_are_lavaan_fixed_x_values():
    data = clustered()
    table = build_partable(TWO_LEVEL)
    moments = covariate_moments(table, prepare_data(table, data, cluster="id"))
    assert moments[(1, "x", "~~", "x")] == pytest.approx(data.x.var(ddof=0))
    assert moments[(2, "w", "~1", "")] == pytest.approx(data.groupby("id").w.first().mean())


@pytest.mark.parametrize("change, kwargs, words", [
    (lambda d: d.drop(columns="x"), {}, "variable 'x' is in the model but not in the data"),
    (lambda d: d.rename(columns={"x": "xx"}), {}, "Did you mean 'xx'"),
    (lambda d: d.assign(x=d.x.astype(str)), {}, "'x' is not numeric"),
    (lambda d: d.assign(x=d.x.astype(object).where(d.index != 4, "n/a")), {}, "e.g. 'n/a' in row 4"),
    (lambda d: d.assign(y=d.y.where(d.index != 5, np.inf)), {}, "'y' has 1 infinite value(s), e.g. in row 5"),
    (lambda d: d.assign(id=np.arange(len(d))), {}, "every cluster of 'id' has one row"),
    (lambda d: d.assign(x=pd.Categorical(np.where(d.x > 0, "a", "b"))), {}, "dummy variables"),
    (lambda d: d, {"cluster": None}, "needs cluster='<column>'"),
    (lambda d: d, {"cluster": "school"}, "cluster column 'school' is not in the data"),
    (lambda d: d.assign(id=1), {}, "has only 1 cluster"),
    (lambda d: d.assign(w=np.arange(len(d), dtype=float)), {}, "'w' is named only in the between (level 2) block but varies"),
    (lambda d: d.assign(x=3.0), {}, "'x' has zero variance"),
    (lambda d: d.assign(y=np.where(np.arange(len(d)) < 2, np.nan, d.y)), {"missing": "error"},
     "2 of 12 rows have missing values (y: 2)"),
    (lambda d: d.assign(y=np.where(np.arange(len(d)) < 2, np.nan, d.y)), {"missing": "error"}, "missing='listwise'"),
    (lambda d: d.assign(x=np.where(np.arange(len(d)) < 2, np.nan, d.x)), {},
     "covariate 'x' has 2 missing value(s): a covariate's missing values need it brought into the model (bm.Model "
     "does so by itself). Pass missing='listwise'"),
    (lambda d: d.assign(y=np.nan), {}, "variable 'y' is missing on every row"),
])
def test_data_errors(change, kwargs, words):
    options = {"cluster": "id", **kwargs}
    with pytest.raises(DataError) as info:
        prepare(TWO_LEVEL, change(clustered()), **options)
    assert words in str(info.value)


def test_latent_name_that_is_also_a_column():
    data = clustered().assign(f=1.0, y2=0.0, y3=0.0)
    with pytest.raises(DataError, match="'f' is a latent variable in the model but also a column"):
        prepare("f =~ y + y2 + y3", data)


def test_both_level_variable_without_within_variation():
    data = clustered()
    with pytest.raises(DataError, match="'w' is named at both levels but is constant within every cluster"):
        prepare("level: 1\n y ~ w\nlevel: 2\n y ~~ w", data, cluster="id")


def test_cluster_given_for_single_level_model():
    with pytest.raises(DataError, match="has no level blocks"):
        prepare("y ~ x", clustered(), cluster="id")


def test_listwise_drops_and_reports():
    data = clustered()
    data.loc[[0, 5], "y"] = np.nan
    with pytest.warns(UserWarning, match="dropped 2 of 12 rows"):
        prepared = prepare(TWO_LEVEL, data, cluster="id", missing="listwise")
    assert prepared.n_rows == 10 and prepared.n_dropped == 2


def test_unknown_missing_option():
    with pytest.raises(ValueError, match="listwise"):
        prepare(TWO_LEVEL, clustered(), cluster="id", missing="pairwise")


def test_missing_outcomes_are_kept_by_default():
    data = clustered()
    data.loc[[0, 5], "y"] = np.nan
    for option in ("fiml", "ml"):  # "ml" as lavaan users type it
        prepared = prepare(TWO_LEVEL, data, cluster="id", missing=option)
        assert prepared.n_rows == 12 and prepared.n_dropped == 0 and prepared.has_missing
        assert np.isnan(prepared.within_outcomes).sum() == 2


def test_the_summary_counts_what_is_missing_and_where():
    from bayes_msem.data import describe_missing
    from bayes_msem.report import _missing_lines

    data = clustered().assign(v=lambda d: d.y + 1.0)
    data.loc[data.id == 2, "y"] = np.nan  # y never observed in cluster 2, v there
    data.loc[[0, 1], "v"] = np.nan
    prepared = prepare("level: 1\n y ~ x\n v ~ x\nlevel: 2\n y ~~ v", data, cluster="id")
    missing = describe_missing(prepared, ["y", "v"], [])
    assert missing["counts"] == {"y": 3, "v": 2} and missing["incomplete_rows"] == 5
    assert missing["clusters_without"] == {"y": 1} and missing["patterns"] == 3
    assert missing["coverage"]["y"]["v"] == pytest.approx(7 / 12)
    assert "Never observed in a cluster: y in 1 cluster(s)" in "\n".join(_missing_lines(missing))


def test_rows_without_a_cluster_id_are_dropped_and_counted():
    data = clustered()
    data["id"] = data["id"].astype(object)
    data.loc[3, "id"] = None
    with pytest.warns(UserWarning, match="dropped 1 of 12 rows without a cluster id"):
        prepared = prepare(TWO_LEVEL, data, cluster="id")
    assert prepared.n_rows == 11 and prepared.n_dropped == 1 and prepared.dropped_reason == "no 'id'"


def test_a_level_2_outcome_given_on_some_rows_of_a_cluster_holds_for_the_cluster():
    data = clustered().assign(z=lambda d: d.id.map({0: 1.0, 1: 0.5, 2: -1.0, 3: 2.0}).astype(float))
    data.loc[data.index[data.id == data.id.iloc[0]][0], "z"] = np.nan  # the cluster's first row lacks it
    prepared = prepare("level: 1\n y ~ x\nlevel: 2\n z ~ w\n y ~ z", data, cluster="id")
    assert not np.isnan(prepared.between_outcomes).any()


def test_data_must_be_a_dataframe():
    with pytest.raises(TypeError, match="pandas DataFrame"):
        prepare("y ~ x", {"y": [1, 2], "x": [1, 2]})


def test_centered_columns_are_cluster_deviations_and_means():
    data = pd.DataFrame({"g": [1, 1, 2, 2, 2], "x": [1.0, 3.0, 0.0, 3.0, 6.0], "y": [1.0, 2.0, 2.0, 5.0, 1.0]})
    table = build_partable("level: 1\n y ~ x\nlevel: 2\n y ~ x", centering={"x": "cluster-mean"})
    prepared = prepare_data(table, data, cluster="g")
    assert table.level_roles(1).covariates == ("x.cwc",)
    np.testing.assert_allclose(prepared.within_covariates[:, 0], [-1.0, 1.0, -3.0, 0.0, 3.0])
    np.testing.assert_allclose(prepared.between_covariates[:, 0], [2.0, 3.0])


@pytest.mark.parametrize("column, values, warned", [
    ("y", [0, 1], True),           # a 0/1 outcome
    ("y", [1, 2, 3], True),        # a 3-point item
    ("y", [1, 2, 3, 4, 5], False),  # five categories: a normal model does well
    ("x", [0, 1], False),           # a dummy covariate is fine
])
def test_few_valued_integer_outcomes_are_warned_about(column, values, warned):
    import warnings

    data = clustered(n_clusters=6, size=5)
    data[column] = np.resize(values, len(data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepare(TWO_LEVEL, data, cluster="id")
    messages = [str(w.message) for w in caught if "modelled as a continuous" in str(w.message)]
    assert bool(messages) == warned
    if warned:
        assert messages[0].startswith(f"{column!r} takes only {len(values)} integer values")


def test_few_clusters_are_warned_about():
    with pytest.warns(UserWarning, match="only 4 clusters in 'id'"):
        prepare(TWO_LEVEL, clustered(n_clusters=4, size=5), cluster="id")


def test_random_slope_of_a_level2_variable_is_refused_naming_the_line():
    data = clustered(n_clusters=12, size=4)
    with pytest.raises(DataError, match=r"line 2: the random slope 's' of 'w' \(s \| y ~ w\)"):
        prepare("level: 1\n  s | y ~ w\nlevel: 2\n  y ~~ s", data, cluster="id")


def test_messages_show_no_numpy_reprs():
    with pytest.raises(DataError) as info:
        prepare(TWO_LEVEL, clustered().assign(x=np.float64(3.0)), cluster="id")
    assert "np." not in str(info.value) and "every value is 3)" in str(info.value)


THREE_LEVEL = "level: 1\n y ~ x\nlevel: 2\n y ~ z\nlevel: 3\n y ~ w"


def three_level_frame(seed: int = 0) -> pd.DataFrame:
    """4 schools x 3 classes x 4 pupils, text ids, rows shuffled."""
    rng = np.random.default_rng(seed)
    school = np.repeat([f"s{k}" for k in (3, 1, 2, 0)], 12)
    classes = np.repeat([f"c{k}" for k in rng.permutation(12)], 4)
    frame = pd.DataFrame({"school": school, "class": classes, "x": rng.normal(size=48),
                          "z": np.repeat(rng.normal(size=12), 4), "w": np.repeat(rng.normal(size=4), 12),
                          "y": rng.normal(size=48)})
    return frame.iloc[rng.permutation(48)]


def test_three_level_data_pair_every_class_with_its_school():
    frame = three_level_frame()
    with pytest.warns(UserWarning, match="only 4 units in 'school'"):
        data = prepare_data(build_partable(THREE_LEVEL), frame, cluster=["class", "school"])
    upper = data.upper_levels[0]
    school_of = dict(zip(frame["class"], frame["school"]))
    assert [str(upper.labels[upper.parent_index[k]]) for k in range(data.n_clusters)] == [
        school_of[label] for label in data.cluster_labels]
    w_of = dict(zip(frame["school"], frame["w"]))
    assert upper.covariates[:, 0].tolist() == [w_of[label] for label in upper.labels]


@pytest.mark.parametrize("change, words", [
    (lambda f: f.assign(w=np.arange(len(f), dtype=float)), "'w' is named only in the level: 3 block but varies"),
    (lambda f: f.assign(school=f["class"]), "every unit of 'school' holds one unit of 'class'"),
    (lambda f: f.assign(school=f["school"].where(f.index != f.index[0])), "no unit id"),
])
def test_three_level_data_errors_say_what_to_do(change, words):
    with pytest.raises(DataError, match=words):
        prepare_data(build_partable(THREE_LEVEL), change(three_level_frame()), cluster=["class", "school"])



def test_class_ids_that_cross_schools_make_a_cross_classified_model_with_a_warning():
    """Class ids that restart in every school read as crossing: the warning says
    so and how to make them unique; each row keeps its own school, and a
    missing value stays missing (full information)."""
    frame = three_level_frame()
    frame = frame.assign(**{"class": frame["class"].str[:2]})  # c1, c10 and c11 become one class across schools
    frame["z"] = frame.groupby("class")["z"].transform("first")  # the level-2 covariate constant in each new class
    with pytest.warns(UserWarning, match="'class' is not nested in 'school'.*cross-classified.*make them unique"):
        data = prepare_data(build_partable(THREE_LEVEL), frame, cluster=["class", "school"])
    upper = data.upper_levels[0]
    assert data.crossed and upper.parent_index is None
    assert [str(upper.labels[k]) for k in upper.row_index] == frame["school"].astype(str).tolist()
    holes = frame.assign(y=frame["y"].where(frame.index != frame.index[0]))
    with pytest.warns(UserWarning, match="cross-classified"):  # full information: the row stays, its hole too
        data = prepare_data(build_partable(THREE_LEVEL), holes, cluster=["class", "school"])
    assert data.n_rows == len(frame) and np.isnan(data.within_outcomes).sum() == 1


def test_three_level_data_keep_missing_values_for_full_information():
    """A nested three-level model keeps every row; the holes stay NaN for the engine."""
    frame = three_level_frame()
    frame.loc[frame.index[:3], "y"] = np.nan
    data = prepare_data(build_partable(THREE_LEVEL), frame, cluster=["class", "school"])
    assert data.n_rows == len(frame) and data.n_dropped == 0 and data.has_missing
    assert np.isnan(data.within_outcomes).sum() == 3
