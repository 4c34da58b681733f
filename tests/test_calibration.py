"""Simulation-based calibration: frozen priors, ranks, their uniformity test, and the Dask run with resume."""

import numpy as np
import pandas as pd
import pytest

import bayes_msem as bm
from bayes_msem.calibration import (
    _CalibrationUnit,
    _template,
    calibration_check,
    draw_replication,
    frozen_prior_model,
    rank_uniformity,
    run_calibration_unit,
)
from bayes_msem.prior_checks import prior_draws

TWO_LEVEL = "level: 1\n  y ~ x\nlevel: 2\n  y ~ w"
DESIGN = {"clusters": 20, "cluster_size": 5, "size_spread": 0.0}
TINY_FIT = {"draws": 40, "tune": 40, "chains": 2}


def test_every_replication_is_fitted_with_the_templates_priors():
    """The default priors scale with the data; SBC needs one prior for all data sets."""
    template = _template(TWO_LEVEL, DESIGN)
    data = bm.simulate_data(TWO_LEVEL, {"y~~y|within": 400.0}, n_clusters=20, cluster_size=5, seed=3)
    own = bm.Model(TWO_LEVEL, data, cluster="cluster")
    frozen = frozen_prior_model(TWO_LEVEL, data, "cluster", template)
    assert own.spec.priors != template.spec.priors  # the data's scale moved the defaults
    assert frozen.spec.priors == template.spec.priors
    assert frozen.spec.units == own.spec.units  # the sampler's scaling still follows the data


def test_a_replication_ranks_the_prior_draw_among_the_posterior_draws():
    unit = _CalibrationUnit(2, DESIGN, TWO_LEVEL, TINY_FIT, random_seed=5, thin_to=19)
    frame = run_calibration_unit(unit)
    assert frame.error.isna().all(), frame.error.iloc[0]
    parameter_seed = unit.seeds()[0]
    truth = prior_draws(_template(TWO_LEVEL, DESIGN).spec, 1, np.random.default_rng(parameter_seed))[0]
    np.testing.assert_allclose(frame["true"], truth)  # the truth is the prior draw of this unit's seed
    assert list(frame.parameter) == ["y~x|within", "y~~y|within", "y~w|between", "y~~y|between", "y~1|between"]
    assert frame["rank"].between(0, 19).all()


ORDINAL = 'u ~ x\nu | t1 + t2 + t3'  # the default normal(0, 5) thresholds often leave a category empty


def test_an_ordinal_replication_is_drawn_again_until_every_category_is_in_its_data():
    """Rejecting on the data alone keeps SBC exact; the kept truth is the prior stream's next draw."""
    design = {"clusters": 1, "cluster_size": 30, "size_spread": 0.0}
    template = _template(ORDINAL, design, ("u",))
    assert template.ordered == {"u": 4}
    redraws = []
    for replication in range(6):
        unit = _CalibrationUnit(replication, design, ORDINAL, {}, random_seed=5, thin_to=19, ordered=("u",))
        names, truth, data, count = draw_replication(unit, template)
        assert set(data.u) == {0, 1, 2, 3}
        stream = np.random.default_rng(unit.seeds()[0])
        kept = [prior_draws(template.spec, 1, stream)[0] for _ in range(count + 1)][-1]
        np.testing.assert_allclose(truth, kept)  # one draw at a time from the parameters' own stream
        redraws.append(count)
    assert names == ["u~x", "u|t1", "u|t2", "u|t3"]
    assert max(redraws) > 0 and min(redraws) == 0  # the check has rejected something, and not everything


def test_an_ordinal_calibration_names_what_it_needs():
    with pytest.raises(ValueError, match="needs its threshold lines"):
        _template("u ~ x", {"clusters": 1, "cluster_size": 30, "size_spread": 0.0}, ("u",))
    with pytest.raises(ValueError, match="by name"):
        calibration_check(ORDINAL, {"clusters": 1, "cluster_size": 30}, n=1, ordered=True)


def test_an_ordinal_replication_is_fitted_as_ordinal_and_ranks_its_thresholds():
    syntax = 'u ~ x\nu | prior("normal(0, 1)")*t1 + prior("normal(0, 1)")*t2'
    unit = _CalibrationUnit(2, {"clusters": 1, "cluster_size": 60, "size_spread": 0.0}, syntax, TINY_FIT,
                            random_seed=5, thin_to=19, ordered=("u",))
    frame = run_calibration_unit(unit)
    assert frame.error.isna().all(), frame.error.iloc[0]
    assert list(frame.parameter) == ["u~x", "u|t1", "u|t2"]  # no residual variance: it is 1 on the latent scale
    assert frame["rank"].between(0, 19).all() and (frame.redraws >= 0).all()


def test_uniformity_accepts_uniform_ranks_and_flags_piled_up_ones():
    rng = np.random.default_rng(1)
    uniform = pd.DataFrame({"parameter": "a", "rank": rng.integers(0, 100, 500), "error": None})
    narrow = pd.DataFrame({"parameter": "b", "rank": np.r_[np.zeros(100), np.full(100, 99)], "error": None})
    table = rank_uniformity(pd.concat([uniform, narrow]), thin_to=99).set_index("parameter")
    assert table.loc["a", "p_value"] > 0.01 and table.loc["b", "p_value"] < 1e-10
    assert table.loc["b", "low_5%"] == 0.5 and table.loc["b", "high_5%"] == 0.5
    assert table.loc["a", "replications"] == 500


@pytest.mark.slow
def test_calibration_check_runs_on_dask_and_resumes_without_refitting(tmp_path, monkeypatch):
    from dask.distributed import Client

    import bayes_msem.calibration as calibration
    from bayes_msem.sampling import _host_devices

    _host_devices()  # JAX starts as a fit starts it, not with a worker's single device
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as client:
        first = calibration_check("y ~ x", {"clusters": 1, "cluster_size": 60}, n=3, fit_kwargs=TINY_FIT,
                                  client=client, store=tmp_path, random_seed=4, thin_to=19, progressbar=False)
        calls = []
        monkeypatch.setattr(calibration, "run_calibration_unit", lambda unit: calls.append(unit))
        again = calibration_check("y ~ x", {"clusters": 1, "cluster_size": 60}, n=3, fit_kwargs=TINY_FIT,
                                  client=client, store=tmp_path, resume=True, random_seed=4, thin_to=19,
                                  progressbar=False)
    assert calls == []  # every replication came from the store
    assert first.ranks.replication.nunique() == 3 and first.ranks.error.isna().all()
    pd.testing.assert_frame_equal(first.ranks, again.ranks)
    assert set(first.uniformity.parameter) == {"y~x", "y~~y", "y~1"}
    with pytest.raises(FileExistsError):
        calibration_check("y ~ x", {"clusters": 1, "cluster_size": 60}, n=3, store=tmp_path, progressbar=False)
