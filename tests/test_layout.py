"""The layout: each level's variables are where the layout says, for models
drawn at random (which variables are split, level-2 outcomes, random slopes
on which covariate and outcome, variances fixed at zero)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayes_msem.data import cluster_column, cluster_columns
from bayes_msem.errors import DataError
from bayes_msem.layout import build_layout
from bayes_msem.matrices import level_structures
from bayes_msem.partable import build_partable

OUTCOMES = ("y1", "y2", "y3")
COVARIATES = ("x1", "x2")


@st.composite
def two_level_models(draw):
    """Model text and what it says: split outcomes, slopes (name, outcome, covariate), a level-2 outcome."""
    split = draw(st.lists(st.sampled_from(OUTCOMES), unique=True, min_size=1))
    slopes = draw(st.lists(st.tuples(st.sampled_from(OUTCOMES), st.sampled_from(COVARIATES)), unique_by=lambda s: s,
                           max_size=3))
    between_outcome = draw(st.booleans())
    zero_variance = draw(st.sampled_from([None, *split]))
    within = [f"{y} ~ x1 + x2" for y in OUTCOMES if all(y != o for o, _ in slopes)]
    within += [f"s{k} | {y} ~ {x}" for k, (y, x) in enumerate(slopes)]
    sloped = {y for y, _ in slopes}
    within += [f"{y} ~ {x}" for y in sorted(sloped) for x in COVARIATES if (y, x) not in slopes]
    between = [f"{y} ~~ {'0*' if y == zero_variance else ''}{y}" for y in split] + ["z ~ w"] * between_outcome
    between += [f"s{k} ~ w" for k in range(len(slopes))]
    text = "level: 1\n  " + "\n  ".join(within) + "\nlevel: 2\n  " + "\n  ".join(between)
    return text, split, [(f"s{k}", y, x) for k, (y, x) in enumerate(slopes)], between_outcome, zero_variance


@settings(max_examples=40, deadline=None)
@given(two_level_models())
def test_every_variable_is_where_the_layout_says(model):
    text, split, slopes, between_outcome, zero_variance = model
    table = build_partable(text)
    layout = build_layout(table)
    rows, clusters = layout.levels
    below, here = rows.structure, clusters.structure
    assert [level.name for level in layout.levels] == ["within", "between"]
    assert set(clusters.split) == set(split)
    split_at, outcomes_at, place = clusters.placement
    for k, name in enumerate(clusters.split):  # a split part sits at its variable's row below
        assert here.observed[split_at[k]] == name
        assert below.observed[int(np.argmax(place[:, k]))] == name and place[:, k].sum() == 1
    assert [here.observed[i] for i in outcomes_at] == list(clusters.outcomes) == (["z"] if between_outcome else [])
    # cluster effects and level-2 outcomes split the nodes
    assert sorted(clusters.effects + clusters.outcomes) == sorted(here.nodes)
    assert [here.nodes[i] for i in clusters.effect_nodes] == list(clusters.effects)
    innovations = {here.nodes[i] for i in clusters.innovations}
    assert innovations == set(here.nodes) - ({zero_variance} if zero_variance else set())
    # the collapsed engine's random effects: split parts (times 1), then slopes (times their covariate)
    assert clusters.random_effects == clusters.split + tuple(name for name, _, _ in slopes)
    assert [here.nodes[i] for i in clusters.random_effect_nodes] == list(clusters.random_effects)
    columns = dict(zip(clusters.random_effects, clusters.random_effect_columns))
    assert all(columns[name] == 0 for name in clusters.split)
    for k, (name, outcome, covariate) in enumerate(slopes):
        assert columns[name] == 1 + below.covariates.index(covariate)
        assert below.nodes[clusters.slope_outcomes[k]] == outcome


def test_single_level_model_is_the_one_level_case():
    layout = build_layout(build_partable("f =~ y1 + y2 + y3\ny1 ~ x"))
    assert not layout.multilevel and len(layout.levels) == 1 and layout.rows.placement is None
    split_at, outcomes_at, place = layout.placement
    assert len(split_at) == len(outcomes_at) == 0 and place.shape == (3, 0)


def test_layout_is_built_from_the_table_alone():
    table = build_partable("level: 1\n  f =~ y1 + y2\nlevel: 2\n  fb =~ y1 + y2\n  z ~ fb")
    given_structures = build_layout(table, level_structures(table), cluster="school")
    assert given_structures.levels[1].units == "school"
    assert build_layout(table).levels[1].effects == given_structures.levels[1].effects == ("y1", "y2", "fb")


@pytest.mark.parametrize("cluster, expected", [("g", "g"), (["g"], "g"), (("g",), "g"), (None, None)])
def test_cluster_column_takes_one_name(cluster, expected):
    assert cluster_column(cluster) == expected


def test_cluster_columns_must_match_the_level_blocks():
    with pytest.raises(DataError, match=r"cluster=\['class', 'school'\] names 2 column\(s\).*model has 2 level blocks"):
        cluster_columns(["class", "school"], 2)
    with pytest.raises(DataError, match=r"needs cluster=.*cluster=\['class', 'school'\]"):
        cluster_columns(None, 3)
    assert cluster_columns(["class", "school"], 3) == ("class", "school")
    assert cluster_column(["class", "school"]) == "class"


def test_a_three_level_layout_places_each_part_into_the_rows():
    table = build_partable("level: 1\n y1 ~ x\n y2 ~~ y2\nlevel: 2\n y1 ~ z\nlevel: 3\n y1 ~~ y1\n y2 ~~ y2")
    layout = build_layout(table, cluster=["class", "school"])
    assert [(level.name, level.units) for level in layout.levels] == [
        ("within", None), ("between", "class"), ("level 3", "school")]
    assert layout.levels[1].split == ("y1",) and layout.levels[2].split == ("y1", "y2")
    assert layout.levels[2].placement.place.tolist() == [[1.0, 0.0], [0.0, 1.0]]  # rows' y1, y2
    intercepts = table.rows[table.rows.op == "~1"].set_index(["lhs", "level"]).ustart
    assert intercepts[("y1", 1)] == intercepts[("y1", 2)] == intercepts[("y2", 1)] == 0.0  # the mean sits at the top
    assert np.isnan(intercepts[("y1", 3)]) and np.isnan(intercepts[("y2", 3)])
