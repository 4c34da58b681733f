"""The model spec: covariance blocks (full, partial patterns, given
covariances) and the covariance constraints that are refused with a message."""

import numpy as np
import pandas as pd
import pytest

from bayes_msem.errors import ModelSpecificationError, ModelSyntaxError
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
