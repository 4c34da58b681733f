"""The model spec: covariance blocks (full, partial patterns, given
covariances) and the covariance constraints that are refused with a message."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayes_msem.engines.parameters import parameter_names
from bayes_msem.errors import ModelSpecificationError, ModelSyntaxError
from bayes_msem.simulate import simulate_data
from bayes_msem.spec import build_spec


def _data(n: int = 100) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame(rng.normal(size=(n, 4)), columns=["y1", "y2", "y3", "y4"])


def test_full_and_partial_covariance_blocks():
    spec = build_spec("y1 ~~ y2 + y3\ny2 ~~ y3\ny3 ~~ y4", _data())
    (block,) = spec.covariance_blocks  # one connected group of four
    assert block.pattern == ((1, 0), (2, 0), (2, 1), (3, 2))  # y4 covaries with y3 only
    full = build_spec("y1 ~~ y2 + y3\ny2 ~~ y3", _data()).covariance_blocks[0]
    assert full.pattern is None  # every pair covaries: an LKJ matrix
    priors = build_spec("y1 ~~ y2 + y3\ny2 ~~ y3\ny3 ~~ y4", _data()).prior_table().set_index(["lhs", "rhs"])
    assert priors.loc[("y3", "y4"), "prior"].startswith("lkj(1), partial pattern")


def test_given_covariances_make_a_constrained_block():
    spec = build_spec("y1 ~~ c*y2 + 0.3*y3\ny3 ~~ c*y4\ny2 ~~ y4", _data())
    (block,) = spec.covariance_blocks
    assert block.constrained and block.fixed_values == {(0, 2): 0.3}
    assert block.followers == {(2, 3): block.free_index[(0, 1)]}  # y3 ~~ y4 equals the earlier y1 ~~ y2
    assert block.owners() == [(1, 0), (3, 1)]


@pytest.mark.parametrize("syntax, error, words", [
    ("y1 ~~ c*y2\ny3 ~~ c*y1\ny1 ~ c*y4", ModelSyntaxError, "makes a covariance and a regression equal"),
    ('y1 ~~ prior("lkj(0.5)")*y2 + prior("lkj(0.5)")*y3', ModelSpecificationError, "eta >= 1"),
    ('y1 ~~ prior("lkj(2)")*y2 + 0.2*y3', ModelSpecificationError, "remove the lkj"),
])
def test_unsupported_covariance_constraints_are_refused(syntax, error, words):
    with pytest.raises(error, match=words):
        build_spec(syntax, _data())


REVERSED_CFA = "level: 1\n  fw =~ y1 + y2 + y3 + y4\nlevel: 2\n  fb =~ y1 + y2 + y3 + y4"


@settings(max_examples=12, deadline=None, derandomize=True)
@given(signs=st.lists(st.sampled_from([-1.0, 1.0]), min_size=6, max_size=6), seed=st.integers(0, 10_000))
def test_loadings_start_with_the_sign_the_data_give_them(signs, seed):
    """A reverse-keyed item (a negative loading), at either level, starts
    negative. All loadings used to start positive, which left NUTS in a wrong
    mode with good R-hat (the marker unrelated to the factor); see
    test_model.py::test_reverse_keyed_items_are_recovered_at_both_levels."""
    names = [f"f{level}=~y{k}|{name}" for level, name in (("w", "within"), ("b", "between")) for k in (2, 3, 4)]
    values = {name: 1.5 * sign for name, sign in zip(names, signs)}
    data = simulate_data(REVERSED_CFA, values, n_clusters=200, cluster_size=10, seed=seed)
    spec = build_spec(REVERSED_CFA, data, cluster="cluster")
    starts = dict(zip(parameter_names(spec), spec.starts))
    assert {name: np.sign(starts[name]) for name in names} == {name: np.sign(v) for name, v in values.items()}


def test_a_fixed_negative_marker_flips_the_other_loadings_start():
    data = simulate_data("f =~ y1 + y2 + y3", {"f=~y2": 1.0, "f=~y3": -1.0}, seed=3, cluster_size=300)
    spec = build_spec("f =~ -1*y1 + y2 + y3", data)
    assert dict(zip(parameter_names(spec), np.sign(spec.starts)))["f=~y2"] == -1.0
    assert dict(zip(parameter_names(spec), np.sign(spec.starts)))["f=~y3"] == 1.0
