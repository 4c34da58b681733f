"""Missing values under MAR against lavaan ``missing = "ml"`` (issue 16).

tests/data/mar_outcome.csv is a two-level CFA (100 clusters of 10) simulated by

    simulate_data("level: 1\\n fw =~ y1 + y2 + y3\\nlevel: 2\\n fb =~ y1 + y2 + y3",
                  {"fw=~y2|within": 0.8, "fw=~y3|within": 0.7, "fb=~y2|between": 0.9, "fb=~y3|between": 0.8,
                   "fb~~fb|between": 0.5, "y1~~y1|between": 0.1, "y2~~y2|between": 0.1, "y3~~y3|between": 0.1},
                  n_clusters=100, cluster_size=10, seed=20261129)

with y2 and y3 each set missing with probability logistic(2 y1 - 1) (rng seed 1): missing
at random given y1, an observed outcome, so the complete rows are the low-y1 ones (51%
of rows). lavaan 0.6-14 fits it with ``missing = "ml"`` (logL -3798.721) and on the complete
rows (tests/data/make_lavaan_references.R). The posterior comparison with both lavaan fits
runs in test_reference_fits.py (``mar_outcome``, ``demo_mar``).
"""

import numpy as np
import pandas as pd
import pytest
from conftest import DATA, MAR_OUTCOME_CFA, reference_fit

from bayes_msem.engines.missing import missing_logp
from bayes_msem.engines.parameters import parameter_names
from bayes_msem.matrices import NUMPY_BACKEND
from bayes_msem.partable import parameter_key
from bayes_msem.spec import build_spec


def lavaan_estimates(file: str) -> pd.DataFrame:
    reference = pd.read_csv(DATA / file)
    reference["rhs"] = reference["rhs"].fillna("")
    reference["name"] = [parameter_key(r.lhs, r.op, r.rhs, {1: "within", 2: "between"}[r.level])
                         for r in reference.itertuples()]
    return reference.set_index("name")


def test_the_likelihood_at_lavaans_estimates_is_lavaans_log_likelihood():
    """An independent check of the whole observed-data likelihood: at lavaan's
    ML estimates it equals the logL lavaan reports."""
    spec = build_spec(MAR_OUTCOME_CFA, pd.read_csv(DATA / "mar_outcome.csv"), cluster="cluster")
    theta = lavaan_theta(spec, lavaan_estimates("mar_outcome_lavaan_ml.csv"))
    assert float(missing_logp(spec, theta, NUMPY_BACKEND)) == pytest.approx(-3798.721, abs=1e-3)


def lavaan_theta(spec, estimates: pd.DataFrame) -> np.ndarray:
    """lavaan's estimates in the order of the model's free parameters."""
    return np.array([estimates["est"][name] for name in parameter_names(spec)])


@pytest.mark.slow
def test_listwise_deletion_is_off_where_the_default_is_not():
    """On the complete rows lavaan's estimates are several ML standard errors
    away (the data set is a real test); the default fit is within the reference
    tolerances of lavaan missing = "ml" (test_reference_fits.py) and as far from
    the listwise estimates as lavaan's own."""
    ml, listwise = lavaan_estimates("mar_outcome_lavaan_ml.csv"), lavaan_estimates("mar_outcome_lavaan_listwise.csv")
    free = ml[ml.se > 0]
    off = (listwise.loc[free.index, "est"] - free.est).abs() / free.se
    assert off["y1~1|between"] > 10 and off["fw~~fw|within"] > 4 and (off > 3).sum() >= 5
    summary = reference_fit("mar_outcome").summary().query("free")
    summary.index = [parameter_key(r.lhs, r.op, r.rhs, r.level) for r in summary.itertuples()]
    ours = (summary.loc[free.index, "median"] - free.est).abs() / free.se
    assert ours["y1~1|between"] < 0.35 and ours["fw~~fw|within"] < 0.6
