"""The LKJ correlation parameterization: its log-Jacobian equals the
log-determinant of the Jacobian of z -> off-diagonal correlations (autodiff),
and every z gives a positive definite correlation matrix."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from bayes_msem.engines.parameters import lkj_cholesky


@pytest.mark.parametrize("n", [2, 3, 5])
def test_lkj_jacobian_matches_autodiff(n):
    z = pt.vector("z")
    L, log_jacobian, half_log_det = lkj_cholesky(z, n)
    C = L @ L.T
    off = C[np.tril_indices(n, -1)]
    values = pytensor.function([z], [C, log_jacobian, half_log_det])
    jacobian = pytensor.function([z], pytensor.gradient.jacobian(off, z))
    rng = np.random.default_rng(n)
    for _ in range(3):
        point = rng.normal(scale=1.5, size=n * (n - 1) // 2)
        corr, log_j, half = values(point)
        np.testing.assert_allclose(np.diag(corr), 1.0)
        assert np.linalg.eigvalsh(corr).min() > 0
        assert log_j == pytest.approx(np.log(abs(np.linalg.det(jacobian(point)))), rel=1e-9)
        assert 2 * half == pytest.approx(np.linalg.slogdet(corr)[1], rel=1e-9)
