"""Defined parameters: ordering, cycles, safe evaluation, checks against the table."""

import numpy as np
import pytest

from bayes_msem.defined import check_definitions, evaluate_definitions, order_definitions
from bayes_msem.errors import ModelSyntaxError
from bayes_msem.partable import build_partable


def test_dependency_order_and_evaluation():
    definitions = [("total", "ab + c"), ("ab", "a*b")]
    assert [name for name, _ in order_definitions(definitions)] == ["ab", "total"]
    values = {"a": np.array([1.0, 2.0]), "b": np.array([3.0, 4.0]), "c": np.array([0.5, 0.5])}
    result = evaluate_definitions(definitions, values)
    np.testing.assert_allclose(result["total"], [3.5, 8.5])


def test_functions_and_powers():
    result = evaluate_definitions([("v", "sqrt(a^2) + exp(0) - -1")], {"a": np.array([-2.0])})
    np.testing.assert_allclose(result["v"], [4.0])


def test_cycle_rejected():
    with pytest.raises(ValueError, match="circular"):
        order_definitions([("p", "q + 1"), ("q", "p * 2")])


@pytest.mark.parametrize("text, words", [
    ("y ~ a*x\nab := a*b", "unknown label(s) b"),
    ("y ~ a*x\na := 2*a", "already a parameter label"),
    ("y ~ a*x\np := q\nq := p", "circular"),
    ("y ~ a*x\np := a\np := 2*a", "defined twice"),
])
def test_definition_errors(text, words):
    with pytest.raises(ModelSyntaxError, match=words.replace("(", r"\(").replace(")", r"\)")):
        check_definitions(build_partable(text).rows)
