"""Model matrices and implied moments against hand-written formulas."""

import numpy as np
import pandas as pd

from bayes_msem.matrices import level_moments, level_structures, parameter_values
from bayes_msem.partable import build_partable


def test_factor_model_implied_covariance_is_lambda_psi_lambda_plus_theta():
    table = build_partable("f =~ y1 + y2 + y3\nf ~ x")
    structure = level_structures(table)[0]
    free = table.free_rows().reset_index(drop=True)
    values = {("f", "=~", "y2"): 0.8, ("f", "=~", "y3"): 1.2, ("f", "~", "x"): 0.5, ("y1", "~~", "y1"): 0.3,
              ("y2", "~~", "y2"): 0.4, ("y3", "~~", "y3"): 0.5, ("f", "~~", "f"): 2.0,
              ("y1", "~1", ""): 1.0, ("y2", "~1", ""): 2.0, ("y3", "~1", ""): 3.0}
    theta = np.array([values[(r.lhs, r.op, r.rhs)] for r in free.itertuples()])
    moments = level_moments(theta, structure)
    loadings = np.array([[1.0], [0.8], [1.2]])
    expected_sigma = loadings @ [[2.0]] @ loadings.T + np.diag([0.3, 0.4, 0.5])
    np.testing.assert_allclose(moments.Sigma, expected_sigma)
    np.testing.assert_allclose(moments.mean, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(moments.Pi, loadings * 0.5)


def test_path_model_total_effects():
    table = build_partable("m ~ a*x\ny ~ b*m + c*x")
    structure = level_structures(table)[0]
    free = table.free_rows().reset_index(drop=True)
    lookup = {"a": 0.4, "b": 0.5, "c": 0.2}
    theta = np.array([lookup.get(r.label, 1.0) for r in free.itertuples()])
    moments = level_moments(theta, structure)
    pi = dict(zip(structure.observed, moments.Pi[:, 0]))
    assert np.isclose(pi["y"], 0.2 + 0.4 * 0.5) and np.isclose(pi["m"], 0.4)
    # Var(y | x) = b^2 Var(m|x) + Var(y resid) + 2 b Cov(m,y resid)=0
    sigma = pd.DataFrame(moments.Sigma, index=structure.observed, columns=structure.observed)
    assert np.isclose(sigma.loc["y", "y"], 0.5**2 * 1.0 + 1.0)


def test_parameter_values_fill_fixed_rows():
    table = build_partable("f =~ y1 + a*y2 + a*y3")
    theta = np.arange(1, table.n_free + 1, dtype=float)[None, :]
    values = parameter_values(table.rows, theta)[0]
    rows = table.rows
    assert values[(rows.rhs == "y1").idxmax()] == 1.0
    assert values[(rows.rhs == "y2").idxmax()] == values[(rows.rhs == "y3").idxmax()]
