"""Three-level random intercepts (issue 13): bayes-msem's collapsed engine and
brms side by side on one simulated data set.

Pupils in classes in schools (default 100 schools x 10 classes x 20 pupils,
20,000 rows): y = 1 + 0.5 x + 0.3 z + 0.4 w + u_school + u_class + e, with x
per pupil, z per class, w per school (all N(0, 1)), var(u_school) = 0.3,
var(u_class) = 0.5, var(e) = 1. Both fit 4 chains x 1000 draws after 1000
warm-up; wall time from the data to the summary, compilation included (brms:
its Stan compilation too). brms runs where `Rscript` with brms is installed
(`apt-get install r-cran-brms`; the project never depends on it).

    python benchmarks/three_level.py            # both, where R is there
    python benchmarks/three_level.py --no-brms  # bayes-msem alone

``--random-slope`` adds a slope of x that varies over classes (variance 0.1,
covariance 0.05 with the class intercept; brms ``(1 + x | school:class) +
(1 | school)``); ``--crossed`` makes the two id columns cross instead of nest
(every pupil meets a random secondary school; brms ``(1 | class) + (1 |
school)``), fitted by the latent engine. ``--school-slope`` lets the slope of
x vary over schools too (variance 0.15, covariance 0.06 with the school
intercept; brms ``(1 + x | school) + (1 + x | school:class)``).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

MODEL = """level: 1
  y ~ x
level: 2
  y ~ z
level: 3
  y ~ w
"""

BRMS = r"""
suppressMessages(library(brms))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
start <- Sys.time()
fit <- brm(y ~ x + z + w + (1 | school/class), data = d, chains = 4, cores = 2, iter = 2000, warmup = 1000,
           seed = 1, refresh = 0)
wall <- as.numeric(difftime(Sys.time(), start, units = "secs"))
s <- posterior::summarise_draws(as_draws_df(fit), "ess_bulk")
s <- s[grepl("^(b_|sd_|sigma)", s$variable), ]
cat(sprintf('{"wall_s": %f, "min_ess_bulk": %f, "divergences": %d}\n', wall, min(s$ess_bulk),
            sum(nuts_params(fit)$Value[nuts_params(fit)$Parameter == "divergent__"])))
print(fixef(fit)); print(VarCorr(fit))
"""


SLOPE_MODEL = """level: 1
  s | y ~ x
level: 2
  y ~ z
  y ~~ s
level: 3
  y ~ w
"""

MODELS = {"nested": MODEL, "crossed": MODEL, "slope": SLOPE_MODEL,
          "school slope": SLOPE_MODEL + "  y ~~ s\n"}  # s named at level 3: it varies over schools too

BRMS_FORMULAS = {"nested": "y ~ x + z + w + (1 | school/class)",
                 "slope": "y ~ x + z + w + (1 + x | school:class) + (1 | school)",
                 "school slope": "y ~ x + z + w + (1 + x | school:class) + (1 + x | school)",
                 "crossed": "y ~ x + z + w + (1 | class) + (1 | school)"}


def simulate_three_level(schools: int = 100, classes: int = 10, pupils: int = 20, seed: int = 1,
                         design: str = "nested") -> pd.DataFrame:
    """The data described in the module docstring, class ids unique across schools."""
    rng = np.random.default_rng(seed)
    school = np.repeat(np.arange(schools), classes * pupils)
    klass = np.repeat(np.arange(schools * classes), pupils)
    if design == "crossed":
        school = rng.integers(0, schools, len(school))
    w = rng.standard_normal(schools)
    z = rng.standard_normal(schools * classes)
    x = rng.standard_normal(len(school))
    sloped = design in ("slope", "school slope")
    u_cov = [[0.5, 0.05], [0.05, 0.1]] if sloped else [[0.5, 0.0], [0.0, 0.0]]  # no slope: intercepts alone
    u = rng.multivariate_normal([0, 0], u_cov, schools * classes)
    c_cov = [[0.3, 0.06], [0.06, 0.15]] if design == "school slope" else [[0.3, 0.0], [0.0, 0.0]]
    c = rng.multivariate_normal([0, 0], c_cov, schools) if design == "school slope" else \
        np.column_stack([rng.normal(0, np.sqrt(0.3), schools), np.zeros(schools)])
    y = (1 + 0.5 * x + 0.3 * z[klass] + 0.4 * w[school] + c[school, 0] + c[school, 1] * x
         + u[klass, 0] + u[klass, 1] * x + rng.standard_normal(len(school)))
    return pd.DataFrame({"school": school, "class": klass, "x": x, "z": z[klass], "w": w[school], "y": y})


def fit_bayes_msem(data: pd.DataFrame, design: str = "nested") -> dict:
    import bayes_msem as bm

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = bm.Model(MODELS[design], data, cluster=["class", "school"])
        fit = model.fit(1000, tune=1000, random_seed=1, progressbar=False)
        summary = fit.summary()
    wall = time.perf_counter() - start
    print(summary[["lhs", "op", "rhs", "level", "median", "sd", "r_hat", "ess_bulk"]].to_string())
    return {"engine": model.engine, "wall_s": wall, "min_ess_bulk": float(summary[summary.free].ess_bulk.min()),
            "divergences": fit.diagnostics()["divergences"],
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def fit_brms(data: pd.DataFrame, design: str = "nested") -> dict | None:
    if shutil.which("Rscript") is None:
        print("Rscript not found: brms skipped")
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.csv"
        data.to_csv(path, index=False)
        script = Path(folder) / "fit.R"
        script.write_text(BRMS.replace(BRMS_FORMULAS["nested"], BRMS_FORMULAS[design]))
        output = subprocess.run(["Rscript", str(script), str(path)], capture_output=True, text=True, check=True)
    print(output.stdout)
    return json.loads(next(line for line in output.stdout.splitlines() if line.startswith("{")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--schools", type=int, default=100)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--pupils", type=int, default=20)
    parser.add_argument("--no-brms", action="store_true")
    parser.add_argument("--random-slope", action="store_true")
    parser.add_argument("--crossed", action="store_true")
    parser.add_argument("--school-slope", action="store_true")
    args = parser.parse_args()
    design = ("crossed" if args.crossed else "school slope" if args.school_slope else "slope" if args.random_slope
              else "nested")
    data = simulate_three_level(args.schools, args.classes, args.pupils, design=design)
    ours = fit_bayes_msem(data, design)
    rows = {f"bayes-msem ({ours['engine']}, numpyro)": ours}
    if not args.no_brms:
        rows[f"brms (Stan), {BRMS_FORMULAS[design]}".replace("|", "\\|")] = fit_brms(data, design)
    print(f"\n{args.schools} schools x {args.classes} classes x {args.pupils} pupils ({len(data)} rows), "
          "4 chains x 1000 draws + 1000 warm-up\n")
    print("| fit | wall s | min ESS bulk | min ESS / s | divergences |\n| --- | ---: | ---: | ---: | ---: |")
    for name, r in rows.items():
        if r is not None:
            print(f"| {name} | {r['wall_s']:.1f} | {r['min_ess_bulk']:.0f} | {r['min_ess_bulk'] / r['wall_s']:.2f} | "
                  f"{r['divergences']} |")


if __name__ == "__main__":
    main()
