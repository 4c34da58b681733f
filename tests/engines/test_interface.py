"""The engines behind one interface: which models each supports and why,
what ``engine="auto"`` picks, and how each asks numpyro to run the chains."""

import pytest

import bayes_msem as bm
from bayes_msem.engines import ENGINES, choose_engine, get_engine

from .test_latent import TWO_LEVEL, simulate_two_level

SLOPE_ON_FACTOR = "level: 1\n  fw =~ y1 + y2 + y3\n  s | y4 ~ fw\nlevel: 2\n  y4 ~~ y4\n  s ~~ s"
SLOPE_ON_COVARIATE = "level: 1\n  s | y4 ~ x\nlevel: 2\n  y4 ~ w\n  s ~ w"
# a level-2 outcome whose residual covaries with a between factor: only the collapsed engine takes it
OUTCOME_COVARYING_WITH_FACTOR = "level: 1\n  fw =~ y1 + y2 + y3\nlevel: 2\n  fb =~ y1 + y2 + y3\n  z ~ w\n  z ~~ fb"


def test_the_latent_engine_leaves_many_rows_to_xla_threads_not_to_parallel_chains():
    from bayes_msem.engines import PARALLEL_LATENT_ROWS

    data = simulate_two_level(clusters=PARALLEL_LATENT_ROWS // 6 + 1)
    assert get_engine("latent").chain_method(bm.Model(SLOPE_ON_FACTOR, data, cluster="g").spec) == "sequential"


def spec_of(text, cluster="g"):
    data = simulate_two_level()
    return bm.Model(text, data, cluster=cluster).spec if cluster else bm.Model(text, data.drop(columns="g")).spec


@pytest.mark.parametrize("text, cluster, chosen, method", [
    (TWO_LEVEL, "g", "collapsed", "parallel"),
    (SLOPE_ON_COVARIATE, "g", "collapsed", "parallel"),
    (SLOPE_ON_FACTOR, "g", "latent", "parallel"),
    ("y1 ~ x", None, "latent", "parallel"),
])
def test_auto_chooses_the_exact_engine_and_its_chain_method(text, cluster, chosen, method):
    spec = spec_of(text, cluster)
    engine, why = choose_engine("auto", spec)
    assert engine == chosen
    assert why == ENGINES["collapsed"].supports(spec)[1]  # auto says why the collapsed engine does or does not apply
    assert get_engine(engine).chain_method(spec) == method
    assert ("cluster_effects" in get_engine(engine).sampled_variables(spec)) == (engine == "latent" and cluster is not None)


def test_an_engine_that_does_not_apply_is_refused_naming_the_other():
    with pytest.raises(ValueError, match=r"engine='collapsed' does not apply here: a random slope on a modelled.*"
                                         r"Use engine='latent'"):
        bm.Model(SLOPE_ON_FACTOR, simulate_two_level(), cluster="g", engine="collapsed")
    with pytest.raises(ValueError, match=r"engine='latent' does not apply here: a residual covariance between a "
                                         r"level-2 observed outcome.*Use engine='collapsed'"):
        bm.Model(OUTCOME_COVARYING_WITH_FACTOR, simulate_two_level(), cluster="g", engine="latent")
    assert bm.Model(OUTCOME_COVARYING_WITH_FACTOR, simulate_two_level(), cluster="g").engine == "collapsed"


def test_every_engine_says_why_it_supports_a_model():
    spec = spec_of(TWO_LEVEL)
    for name, engine in ENGINES.items():
        supported, why = engine.supports(spec)
        assert engine.name == name and supported and why
