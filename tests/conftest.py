"""Shared fitted models: each slow reference fit runs once per test session."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayes_msem as bm

# Every test compiles for itself: what earlier runs left in the user's cache must not change a result.
# (tests/test_sampling.py checks the cache in a process of its own.)
os.environ.setdefault("BAYES_MSEM_CACHE_DIR", "off")

DATA = Path(__file__).parent / "data"

HOLZINGER_SWINEFORD_CFA = """visual =~ x1 + x2 + x3
textual =~ x4 + x5 + x6
speed =~ x7 + x8 + x9"""

POLITICAL_DEMOCRACY_SEM = """ind60 =~ x1 + x2 + x3
dem60 =~ y1 + y2 + y3 + y4
dem65 =~ y5 + y6 + y7 + y8
dem60 ~ ind60
dem65 ~ ind60 + dem60
y1 ~~ y5"""

# lavaan's tutorial SEM with its six residual covariances, a partial pattern (shared/reference)
POLITICAL_DEMOCRACY_TUTORIAL = (Path(__file__).parents[1] / "models" / "political_democracy_sem.lavaan").read_text()

# covariances equal over time and one fixed at a non-zero value; lavaan reference in make_lavaan_references.R
POLITICAL_DEMOCRACY_CONSTRAINED = (DATA / "political_democracy_constrained_covariances.lavaan").read_text()

# partial covariance patterns at both levels; lavaan reference in tests/data/make_lavaan_references.R
DEMO_PARTIAL_COVARIANCES = (DATA / "demo_twolevel_partial_covariances.lavaan").read_text()

POLITICAL_DEMOCRACY_PATH = """y1 ~ x1
y5 ~ y1 + x1
y6 ~ x1 + x2"""

# Full runs as the issue asks: default priors, 4 chains x 1000 draws.
FULL_RUN = dict(draws=1000, tune=1000, chains=4, random_seed=20261128, progressbar=False)
# The shuffled, relabelled copies of the reference data sets (issue 12) use fewer draws.
SHUFFLED_RUN = dict(FULL_RUN, draws=500, tune=500)


def users_copy(data: pd.DataFrame, cluster: str | None, kind: str, seed: int) -> tuple[pd.DataFrame, dict]:
    """The same data as a user might bring them: rows shuffled (the index
    shuffled with them) and the cluster ids relabelled as ``kind``. Returns the
    copy and the map from each old label (as text) to its new one (as text)."""
    rng = np.random.default_rng(seed)
    copy = data.iloc[rng.permutation(len(data))].copy()
    if cluster is None:
        return copy, {}
    old = np.sort(data[cluster].unique())
    new = {
        "int": old,
        "unsorted_int": rng.choice(10**6, size=len(old), replace=False),
        # "c10" sorts before "c2": string order differs from the numeric one
        "string": np.array([f"c{v}" for v in rng.permutation(len(old))], dtype=object),
        "categorical": np.array([f"team {v}" for v in rng.permutation(len(old))], dtype=object),
    }[kind]
    mapping = dict(zip(old, new))
    copy[cluster] = copy[cluster].map(mapping)
    if kind == "categorical":
        copy[cluster] = pd.Categorical(copy[cluster], categories=list(rng.permutation(new)))
    return copy, {str(a): str(b) for a, b in mapping.items()}


def shuffled(data: pd.DataFrame, cluster: str | None = None) -> tuple[pd.DataFrame, dict]:
    """A reference data set as users bring them: rows shuffled, cluster ids
    relabelled as strings whose order differs from the original one; with the
    map from old to new labels (as text)."""
    return users_copy(data, cluster, "string", seed=20261129)


# ---- running on two workers (pytest-xdist, ``-n 2 --dist loadgroup`` in pyproject.toml) ----------------------------
# Each test file runs whole on one worker, so its module fixtures are fitted once. The files that
# share the session's reference fits run together on one worker, first, as they are the longest group.
REFERENCE_FIXTURES = {"data_order", "demo_fit", "holzinger_swineford_fit", "political_democracy_fit", "mediation_fit",
                      "mediation_latent_fit"}
REFERENCE_GROUP = "reference fits"


def _uses_reference_fits(item) -> bool:
    module = getattr(item, "module", None)
    return (getattr(module, "reference_fit", None) is reference_fit
            or bool(REFERENCE_FIXTURES & set(getattr(item, "fixturenames", ()))))


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the marks into the node ids
def pytest_collection_modifyitems(config, items):
    """Mark each test with its xdist group (its file, or the reference fits'
    group for every file that uses one of them) and put that group first."""
    file_of = {item: item.nodeid.split("::")[0] for item in items}
    sharing = {file_of[item] for item in items if _uses_reference_fits(item)}
    group = {item: REFERENCE_GROUP if file_of[item] in sharing else file_of[item] for item in items}
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group[item]))
    items.sort(key=lambda item: group[item] != REFERENCE_GROUP)  # stable: the files' order otherwise


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Drop JAX's compiled programs after each test module
    (:func:`bayes_msem.sampling.free_compiled_programs`): the suite compiles
    thousands in one process, and three runs aborted inside XLA's compiler at
    about 75% of the way through (session 6 in CI, session 7 here), near the
    kernel's limit of 65530 memory maps per process. Fits kept for later tests
    hold draws, not programs; what is needed again is recompiled."""
    from bayes_msem.sampling import free_compiled_programs

    yield
    _peak_maps[0] = max(_peak_maps[0], _memory_maps())
    free_compiled_programs()


_peak_maps = [0]


def _memory_maps() -> int:
    try:
        with open("/proc/self/maps") as maps:
            return sum(1 for _ in maps)
    except OSError:  # not Linux
        return 0


def pytest_terminal_summary(terminalreporter):
    """How close the run came to the kernel's limit on memory maps (see _free_compiled_programs)."""
    if _peak_maps[0]:
        terminalreporter.write_line(f"peak memory maps at the end of a test module: {_peak_maps[0]} (limit 65530)")


@pytest.fixture(autouse=True)
def _keep_xla_flags():
    """A fit asks XLA for one CPU device per core through XLA_FLAGS (numpyro's
    way); no test may leave that setting behind for the tests after it or the
    command-line subprocesses they start."""
    before = os.environ.get("XLA_FLAGS")
    yield
    if before is None:
        os.environ.pop("XLA_FLAGS", None)
    else:
        os.environ["XLA_FLAGS"] = before


MAR_OUTCOME_CFA = "level: 1\n  fw =~ y1 + y2 + y3\nlevel: 2\n  fb =~ y1 + y2 + y3"


# Each reference fit, by name: (model text, data, cluster column, Model options, fit options).
def _reference_fits() -> dict:
    political_democracy = pd.read_csv(DATA / "political_democracy.csv")
    return {
        "demo": (bm.example_model("demo_twolevel"), bm.example_data("demo_twolevel"), "cluster", {}, {}),
        # a near-zero between variance (y1) is a funnel for the latent engine
        "demo_latent": (bm.example_model("demo_twolevel"), bm.example_data("demo_twolevel"), "cluster",
                        {"engine": "latent"}, {"target_accept": 0.9}),
        "ex9_6": (bm.example_model("mplus_ex9_6"), bm.example_data("mplus_ex9_6"), "clus", {}, {}),
        "holzinger_swineford": (HOLZINGER_SWINEFORD_CFA, pd.read_csv(DATA / "holzinger_swineford.csv"), None, {}, {}),
        "political_democracy_path": (POLITICAL_DEMOCRACY_PATH, political_democracy, None, {}, {}),
        "political_democracy": (POLITICAL_DEMOCRACY_SEM, political_democracy, None, {}, {}),
        "political_democracy_tutorial": (POLITICAL_DEMOCRACY_TUTORIAL, political_democracy, None, {}, {}),
        "political_democracy_constrained": (POLITICAL_DEMOCRACY_CONSTRAINED, political_democracy, None, {}, {}),
        "demo_partial_covariances": (DEMO_PARTIAL_COVARIANCES, bm.example_data("demo_twolevel"), "cluster", {}, {}),
        "mediation": (bm.example_model("mediation_111_random_slopes"), bm.example_data("mediation_111_random_slopes"),
                      "cluster", {"centering": {"m": "none"}}, {}),
        # issue 16: missing values under MAR, by full information (the default)
        "demo_mar": (bm.example_model("demo_twolevel_mar"), bm.example_data("demo_twolevel_mar"), "cluster", {}, {}),
        "demo_mar_latent": (bm.example_model("demo_twolevel_mar"), bm.example_data("demo_twolevel_mar"), "cluster",
                            {"engine": "latent"}, {"target_accept": 0.9}),
        "mar_outcome": (MAR_OUTCOME_CFA, pd.read_csv(DATA / "mar_outcome.csv"), "cluster", {}, {}),
        # issue 15: an ordinal (probit) outcome with a random intercept, against brms
        "ordinal": (bm.example_model("ordinal_twolevel"), bm.example_data("ordinal_twolevel"), "cluster",
                    {"ordered": ["y"]}, {}),
    }


@pytest.fixture(scope="session", params=["as shipped", "shuffled"])
def data_order(request) -> str:
    """Every reference fit runs twice: on the data as shipped, and on a copy
    with rows shuffled and cluster ids relabelled (fewer draws)."""
    return request.param


_fitted: dict = {}
# Copies that run as long as the original: the latent engine's funnel on Demo.twolevel (y1's between
# variance near 0) reached R-hat 1.04 (session 6) and 1.063 (session 7, ESS 70) at 500 draws.
FULL_LENGTH_COPIES = {"demo_latent"}


def reference_is_single_level(name: str) -> bool:
    """Whether reference fit ``name`` has no cluster column."""
    return _reference_fits()[name][2] is None


def reference_fit(name: str, order: str = "as shipped"):
    """Fit reference model ``name`` once per session and data order."""
    if (name, order) not in _fitted:
        syntax, data, cluster, options, fit_options = _reference_fits()[name]
        if order == "shuffled":
            data = shuffled(data, cluster)[0]
        model = bm.Model(syntax, data, cluster=cluster, **options)
        short = order != "as shipped" and name not in FULL_LENGTH_COPIES
        _fitted[(name, order)] = model.fit(**(SHUFFLED_RUN if short else FULL_RUN), **fit_options)
    return _fitted[(name, order)]


@pytest.fixture(scope="session")
def demo_fit():
    return reference_fit("demo")


@pytest.fixture(scope="session")
def holzinger_swineford_fit():
    return reference_fit("holzinger_swineford")


@pytest.fixture(scope="session")
def political_democracy_fit():
    return reference_fit("political_democracy")


@pytest.fixture(scope="session")
def mediation_fit():
    """The 1-1-1 random-slope mediation of the brms reference, collapsed engine."""
    fit = reference_fit("mediation")
    assert fit.info["engine"] == "collapsed"
    return fit


@pytest.fixture(scope="session")
def mediation_latent_fit():
    model = bm.Model(bm.example_model("mediation_111_random_slopes"), bm.example_data("mediation_111_random_slopes"),
                     cluster="cluster", centering={"m": "none"}, engine="latent")
    return model.fit(**FULL_RUN, target_accept=0.9)


def simulate_small_two_level(seed: int = 11, clusters: int = 30, size: int = 8) -> pd.DataFrame:
    """A small two-level mediation-like data set for fast tests."""
    import numpy as np

    rng = np.random.default_rng(seed)
    cluster = np.repeat(np.arange(clusters), size)
    x = rng.normal(size=clusters * size)
    m = 0.5 * x + rng.normal(scale=0.5, size=clusters)[cluster] + rng.normal(size=clusters * size)
    y = 0.4 * m + 0.2 * x + rng.normal(scale=0.5, size=clusters)[cluster] + rng.normal(size=clusters * size)
    return pd.DataFrame({"school": cluster, "x": x, "m": m, "y": y})


SMALL_TWO_LEVEL = """level: 1
  m ~ a*x
  y ~ b*m + x
level: 2
  y ~~ m
ab := a*b"""

QUICK_RUN = dict(draws=150, tune=150, chains=2, random_seed=5, progressbar=False)


@pytest.fixture(scope="session")
def small_fit():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few draws: low-ESS warnings are expected here
        return bm.Model(SMALL_TWO_LEVEL, simulate_small_two_level(), cluster="school").fit(**QUICK_RUN)
