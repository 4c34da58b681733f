"""bayes-msem: Bayesian multilevel structural equation modeling.

>>> import bayes_msem as bm
>>> model = bm.Model(bm.example_model("demo_twolevel"), bm.example_data("demo_twolevel"), cluster="cluster")
>>> result = model.fit(draws=1000, random_seed=1)   # doctest: +SKIP
>>> print(result)                                     # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from importlib import resources

__version__ = "0.1.0"

# Library noise a user cannot act on, silenced by message (nothing else):
# PyTensor's missing-BLAS notice (the sampler runs through JAX, which has its own)
# and JAX's note that numpyro's donated buffers could not be reused.
warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS installation")
warnings.filterwarnings("ignore", message="Some donated buffers were not usable")

from bayes_msem.calibration import calibration_check  # noqa: E402
from bayes_msem.checking import compare  # noqa: E402
from bayes_msem.errors import DataError, ModelSpecificationError, ModelSyntaxError  # noqa: E402
from bayes_msem.model import Model  # noqa: E402
from bayes_msem.priors import DefaultPriors  # noqa: E402
from bayes_msem.results import FitResult, load_result  # noqa: E402
from bayes_msem.simulate import simulate_data  # noqa: E402
from bayes_msem.study import plot_power, simulation_study, smallest_design  # noqa: E402

__all__ = ["Model", "FitResult", "load_result", "compare", "DefaultPriors", "ModelSyntaxError", "ModelSpecificationError",
           "DataError", "example_data", "example_model", "simulate_data", "simulation_study", "smallest_design",
           "plot_power", "calibration_check", "__version__"]

_EXAMPLES = {"demo_twolevel": ("demo_twolevel.csv", "demo_twolevel.lavaan", "cluster"),
             "mplus_ex9_6": ("mplus_ex9_6.csv", "mplus_ex9_6.lavaan", "clus"),
             "mediation_111_random_slopes": ("mediation_111_random_slopes.csv", "mediation_111_random_slopes.lavaan",
                                             "cluster"),
             "demo_twolevel_mar": ("demo_twolevel_mar.csv", "demo_twolevel_mar.lavaan", "cluster"),
             "ordinal_twolevel": ("ordinal_twolevel.csv", "ordinal_twolevel.lavaan", "cluster"),
             "three_level_sim": ("three_level_sim.csv", "three_level_sim.lavaan", ["class", "school"])}


def example_data(name: str = "demo_twolevel"):
    """A shipped data set as a DataFrame: ``demo_twolevel`` (lavaan's Demo.twolevel),
    ``mplus_ex9_6`` (Mplus User's Guide example 9.6) or ``mediation_111_random_slopes``
    (simulated 1-1-1 mediation with random a, b and c paths; fit it with
    ``centering={"m": "none"}``) or ``demo_twolevel_mar`` (Demo.twolevel with
    values of y1-y3 missing at random given x1-x3; 30% of rows incomplete) or
    ``ordinal_twolevel`` (simulated 4-category outcome y, 150 clusters of 12;
    fit it with ``ordered=["y"]``) or ``three_level_sim`` (simulated pupils in
    classes in schools, 60 x 4 x 12, a covariate at each level; fit it with
    ``cluster=["class", "school"]``)."""
    import pandas as pd

    if name not in _EXAMPLES:
        raise ValueError(f"unknown example {name!r}; choose from {sorted(_EXAMPLES)}")
    with resources.files("bayes_msem.datasets").joinpath(_EXAMPLES[name][0]).open() as handle:
        return pd.read_csv(handle)


def example_model(name: str = "demo_twolevel") -> str:
    """The model text that goes with :func:`example_data` (also in ``models/``)."""
    if name not in _EXAMPLES:
        raise ValueError(f"unknown example {name!r}; choose from {sorted(_EXAMPLES)}")
    return resources.files("bayes_msem.datasets").joinpath(_EXAMPLES[name][1]).read_text()
