"""Three-level models in the collapsed engine: the density with the level-2 and
level-3 effects integrated out equals the multivariate normal of each level-3
unit's rows stacked, written from the model's definition (every row the sum
of its parts at each level); on data as users bring them (rows shuffled, text
ids out of order, unequal classes and schools)."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from bayes_msem.engines.collapsed import collapsed_logp
from bayes_msem.matrices import NUMPY_BACKEND, jax_backend, level_moments
from bayes_msem.spec import build_spec

# y1, y2 have a part at every level, y3 at levels 1 and 3 only; a factor at levels 1 and 3,
# covariates at every level, a level-2 covariance.
THREE_LEVEL = """level: 1
  fw =~ y1 + y2 + y3
  y1 ~ x
level: 2
  y1 ~ z
  y1 ~~ y2
level: 3
  fb =~ y1 + y2 + y3
  fb ~ w
"""


def three_level_data(seed: int, schools: int, max_classes: int, max_pupils: int) -> pd.DataFrame:
    """Pupils in classes in schools, unequal sizes, with text ids whose order differs
    from the order of the rows, rows shuffled."""
    rng = np.random.default_rng(seed)
    frames = []
    for s in range(schools):
        w = rng.normal()
        for c in range(rng.integers(1, max_classes + 1) if s else max_classes):  # school 0 has several classes
            n = int(rng.integers(1, max_pupils + 1)) if (s, c) != (0, 0) else max_pupils
            z, u = rng.normal(), rng.normal(size=3) * 0.5
            y = rng.normal(size=(n, 3)) + u + 0.4 * w
            frames.append(pd.DataFrame({"school": f"s{(7 * s) % 11}-{s}", "class": f"k{c}/{s}", "w": w, "z": z,
                                        "x": rng.normal(size=n), "y1": y[:, 0], "y2": y[:, 1], "y3": y[:, 2]}))
    data = pd.concat(frames, ignore_index=True)
    return data.iloc[rng.permutation(len(data))]


def random_theta(spec, seed: int) -> np.ndarray:
    """Starting values moved at random; variances kept positive, covariances small."""
    rng = np.random.default_rng(seed)
    theta = np.array(spec.starts) + rng.normal(scale=0.3, size=len(spec.starts))
    kinds = np.array(spec.kinds)
    theta[kinds == "variance"] = np.abs(theta[kinds == "variance"]) + 0.2
    theta[kinds == "covariance"] *= 0.1
    return theta


def stacked_logp(spec, theta, data: pd.DataFrame) -> float:
    """Sum over schools of the normal density of the school's rows stacked,
    built from the definition: y_i = m + Pi x_i + e_i + (part of its class) +
    (part of its school), each part's moments from its level's matrices, by name."""
    names = spec.within.observed
    moments = [level_moments(theta, level.structure) for level in spec.layout.levels]
    structures = [level.structure for level in spec.layout.levels]

    def loading(level):  # rows' variables x that level's observed parts (1 where the part is the same variable)
        return np.array([[float(a == b) for b in structures[level].observed] for a in names])

    total = 0.0
    for _, school in data.groupby("school"):
        n = len(school)
        same_class = (school["class"].to_numpy()[:, None] == school["class"].to_numpy()[None]).astype(float)
        mean = []
        for _, row in school.iterrows():
            m = moments[0].mean + moments[0].Pi @ row[list(structures[0].covariates)].to_numpy(float)
            for level in (1, 2):
                covariates = row[list(structures[level].covariates)].to_numpy(float)
                m = m + loading(level) @ (moments[level].mean + moments[level].Pi @ covariates)
            mean.append(m)
        cov = (np.kron(np.eye(n), moments[0].Sigma)
               + np.kron(same_class, loading(1) @ moments[1].Sigma @ loading(1).T)
               + np.kron(np.ones((n, n)), loading(2) @ moments[2].Sigma @ loading(2).T))
        total += stats.multivariate_normal(np.concatenate(mean), cov).logpdf(school[list(names)].to_numpy().ravel())
    return total


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10**6), schools=st.integers(2, 6), max_classes=st.integers(2, 4),
       max_pupils=st.integers(2, 5))
def test_three_level_density_equals_the_stacked_normal(seed, schools, max_classes, max_pupils):
    data = three_level_data(seed, schools, max_classes, max_pupils)
    with pytest.warns(UserWarning, match="units in 'school'|clusters in 'class'"):
        spec = build_spec(THREE_LEVEL, data, cluster=["class", "school"])
    theta = random_theta(spec, seed)
    assert collapsed_logp(spec, theta, NUMPY_BACKEND) == pytest.approx(stacked_logp(spec, theta, data), rel=1e-9)


def test_three_level_density_is_the_same_in_jax_and_pytensor():
    import pytensor
    import pytensor.tensor as pt

    from bayes_msem.engines.latent import PYTENSOR_BACKEND

    data = three_level_data(3, schools=12, max_classes=3, max_pupils=4)
    spec = build_spec(THREE_LEVEL, data, cluster=["class", "school"])
    theta = random_theta(spec, 4)
    expected = collapsed_logp(spec, theta, NUMPY_BACKEND)
    assert float(collapsed_logp(spec, theta, jax_backend())) == pytest.approx(expected, rel=1e-10)
    values = pt.dvector("theta")
    function = pytensor.function([values], collapsed_logp(spec, values, PYTENSOR_BACKEND))
    assert float(function(theta)) == pytest.approx(expected, rel=1e-10)
