"""The curvature start of warm-up (bayes_msem.mass_matrix): the few coloured
Hessian-vector products give exactly the Hessian's diagonal, for the models the
latent engine builds from data as users bring them (shuffled rows, text ids,
unequal clusters, holes; cross-classified units; ordinal items); the engine
asks for the start only where it was measured to pay; and the sampler starts
from it (PyMC's numpyro path and the reused program)."""

import warnings

import numpy as np
import pytest
from engines.test_crossed import CROSSED_BOTH_SLOPE, crossed_data
from engines.test_ordinal_level_two import REGRESSION, user_data
from hypothesis import given, settings
from hypothesis import strategies as st

import bayes_msem as bm
import bayes_msem.engines as engines
from bayes_msem.engines import get_engine
from bayes_msem.mass_matrix import curvature_inverse_mass, diagonal_probes, hessian_diagonal, hessian_vector_product

RANDOM_INTERCEPT = "level: 1\n  y ~ x\nlevel: 2\n  y ~ w"
ITEMS = ["u1", "u2", "u3"]
ORDINAL_CFA = "level: 1\n  fw =~ u1 + u2 + u3\nlevel: 2\n  fb =~ u1 + u2 + u3"
CFA_VALUES = {"fw=~u2|within": 0.8, "fw=~u3|within": 0.7, "fb=~u2|between": 0.9, "fb=~u3|between": 0.9,
              "fb~~fb|between": 0.4, **{f"{u}|t{k}": t for u in ITEMS for k, t in ((1, -0.8), (2, 0.5))}}


def ordinal_cfa_data(seed: int, clusters: int, size: int):
    data = bm.simulate_data(ORDINAL_CFA, CFA_VALUES, n_clusters=clusters, cluster_size=size, seed=seed, ordered=ITEMS)
    data["cluster"] = "class " + (data["cluster"] * 7 % 101).astype(str)
    return data.sample(frac=1, random_state=seed)


def sampler_model(kind: str, seed: int):
    """A latent-engine PyMC model on small data as users bring them, and the model's start."""
    from bayes_msem.sampling import jittered_starts

    if kind == "random intercept":
        data = bm.simulate_data(RANDOM_INTERCEPT, {}, n_clusters=6, cluster_size=4, seed=seed)
        model = bm.Model(RANDOM_INTERCEPT, data, cluster="cluster", engine="latent")
    elif kind == "crossed":
        model = bm.Model(CROSSED_BOTH_SLOPE, crossed_data(seed, 5, 4, 20, holes=0.2), cluster=["primary", "secondary"])
    elif kind == "ordinal at level 2":
        model = bm.Model(REGRESSION, user_data(seed, n_clusters=7, holes=0.3), cluster="cluster", ordered=["z"],
                         engine="latent")
    else:
        model = bm.Model(ORDINAL_CFA, ordinal_cfa_data(seed, clusters=30, size=5), cluster="cluster", ordered=ITEMS)
    assert model.engine == "latent"
    pymc_model = get_engine(model.engine).build(model.spec, "numpyro")
    return pymc_model, jittered_starts(pymc_model, 1, seed)[0]


def test_probes_set_one_column_of_an_innovation_block_or_one_coordinate():
    probes, reader = diagonal_probes([("a", (2,)), ("cluster_innovations", (3, 2)), ("b", ())])
    assert probes.shape == (2 + 2 + 1, 2 + 6 + 1)
    np.testing.assert_array_equal(probes.sum(axis=0), 1)  # each coordinate read from one probe
    np.testing.assert_array_equal(reader, [0, 1, 2, 3, 2, 3, 2, 3, 4])
    np.testing.assert_array_equal(probes[2], [0, 0, 1, 0, 1, 0, 1, 0, 0])  # the first column, every unit


def one_hot_diagonal(product, size: int) -> np.ndarray:
    """The Hessian's diagonal from one product per coordinate."""
    return np.array([float(product(np.eye(size)[i])[i]) for i in range(size)])


@settings(max_examples=2, deadline=None)
@given(kind=st.sampled_from(["crossed", "ordinal at level 2"]), seed=st.integers(0, 10**4))
def test_coloured_products_give_the_hessians_diagonal(kind, seed):
    """At a random point (innovations drawn, as the start draws them), with one compiled product."""
    from pymc.sampling.jax import get_jaxified_logp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pymc_model, _ = sampler_model(kind, seed)
    rng = np.random.default_rng(seed)
    values = [rng.normal(scale=0.5, size=np.shape(v)) for v in pymc_model.initial_point().values()]
    blocks = [(var.name, np.shape(v)) for var, v in zip(pymc_model.value_vars, values)]
    assert any(name.endswith("_innovations") for name, _ in blocks)
    product = hessian_vector_product(get_jaxified_logp(pymc_model, negative_logp=False), values)
    coloured = hessian_diagonal(product, blocks)
    np.testing.assert_allclose(coloured, one_hot_diagonal(product, coloured.size), rtol=1e-9, atol=1e-12)


def test_the_start_of_an_ordinal_cfa_is_one_over_its_curvature_at_most_one(monkeypatch):
    """The coloured diagonal it is taken from is the diagonal here too; the
    thresholds, far better determined than the identity says, get a small
    inverse mass."""
    import bayes_msem.mass_matrix as mass_matrix

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pymc_model, start = sampler_model("ordinal CFA", seed=3)
    seen = []

    def diagonal(product, blocks):
        seen.append((product, blocks, hessian_diagonal(product, blocks)))
        return seen[-1][2]

    monkeypatch.setattr(mass_matrix, "hessian_diagonal", diagonal)
    inverse = curvature_inverse_mass(pymc_model, start, random_seed=3)
    (product, blocks, coloured), = seen
    np.testing.assert_allclose(coloured, one_hot_diagonal(product, coloured.size), rtol=1e-9, atol=1e-12)
    assert (coloured > 0).mean() > 0.9  # the potential's curvature (not the log density's), positive but in places
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(inverse, np.where(coloured > 0, np.minimum(1 / coloured, 1.0), 1.0))
    thresholds = np.concatenate([np.full(int(np.prod(shape)), name.startswith("thresholds")) for name, shape in blocks])
    assert inverse[thresholds].max() < 0.3, inverse[thresholds]
    assert [name for name, _ in blocks] == [var.name for var in pymc_model.value_vars]


def test_the_latent_engine_asks_for_it_for_large_ordinal_factor_models_only():
    latent = engines.LatentEngine()
    large = bm.Model(ORDINAL_CFA, ordinal_cfa_data(1, clusters=50, size=10), cluster="cluster", ordered=ITEMS)
    assert latent.curvature_start(large.spec)
    small = bm.Model(ORDINAL_CFA, ordinal_cfa_data(1, clusters=20, size=10), cluster="cluster", ordered=ITEMS)
    assert not latent.curvature_start(small.spec)  # 200 rows: the compilation would not pay
    no_factor = bm.Model(REGRESSION, user_data(1, n_clusters=200, max_size=9), cluster="cluster", ordered=["z"],
                         engine="latent")
    assert no_factor.spec.data.n_rows >= engines.CURVATURE_START_ROWS
    assert not latent.curvature_start(no_factor.spec)
    assert not engines.CollapsedEngine().curvature_start(large.spec)


@pytest.mark.parametrize("reuse", [False, True])
def test_the_sampler_starts_warm_up_from_it(monkeypatch, reuse):
    """run_nuts hands the curvature to numpyro, through PyMC or the reused program, and samples."""
    import pymc.sampling.jax as pymc_jax

    import bayes_msem.mass_matrix
    import bayes_msem.reused_sampler
    from bayes_msem.sampling import run_nuts

    taken, given_to_numpyro = [], []

    def curvature(model, start, random_seed):  # stands in for the curvature: its own compilation is tested above
        size = sum(np.size(value) for value in model.initial_point().values())
        taken.append(np.random.default_rng(random_seed).uniform(0.2, 1.0, size=size))
        return taken[-1]

    def spy(original):
        def sample(*args, **kwargs):
            given_to_numpyro.append(kwargs["nuts_kwargs"].get("inverse_mass_matrix"))
            return original(*args, **kwargs)
        return sample

    monkeypatch.setattr(bayes_msem.mass_matrix, "curvature_inverse_mass", curvature)
    monkeypatch.setattr(pymc_jax, "_sample_numpyro_nuts", spy(pymc_jax._sample_numpyro_nuts))
    monkeypatch.setattr(bayes_msem.reused_sampler, "lifted_numpyro_nuts",
                        spy(bayes_msem.reused_sampler.lifted_numpyro_nuts))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pymc_model, _ = sampler_model("random intercept", seed=2)
        idata = run_nuts(pymc_model, draws=20, tune=20, chains=1, random_seed=2, sampler="numpyro",
                         target_accept=0.8, progressbar=False, var_names=["parameters"], reuse_compiled=reuse,
                         curvature_start=True)
    assert len(taken) == 1 and len(given_to_numpyro) == 1
    np.testing.assert_array_equal(given_to_numpyro[0], taken[0])
    assert np.isfinite(idata.posterior["parameters"].values).all()
