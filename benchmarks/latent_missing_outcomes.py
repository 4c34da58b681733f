"""Missing level-2 outcomes: the latent engine against the collapsed one (docs/validation.md).

Two continuous level-2 outcomes, each missing in about 30% of 60 clusters of 2-8 rows,
rows shuffled and labels as text out of order. Prints each engine's time and
diagnostics, then the posterior means side by side with their gap in the collapsed
engine's posterior SDs. Run by hand: ``python benchmarks/latent_missing_outcomes.py``
(about 3 minutes on 2 cores).
"""

import time
import warnings

import numpy as np
import pandas as pd

import bayes_msem as bm

MODEL = "level: 1\n y ~ x\nlevel: 2\n z1 ~ y + w\n z2 ~ z1 + y"


def simulated(seed: int = 3, clusters: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 9, clusters)
    cluster = np.repeat(np.arange(clusters), sizes)
    b, w = rng.normal(scale=0.7, size=clusters), rng.normal(size=clusters)
    z1 = 0.3 + 0.8 * b + 0.4 * w + rng.normal(scale=0.6, size=clusters)
    z2 = -0.2 + 0.5 * z1 + 0.3 * b + rng.normal(scale=0.5, size=clusters)
    z1[rng.random(clusters) < 0.3] = np.nan
    z2[rng.random(clusters) < 0.3] = np.nan
    x = rng.normal(size=len(cluster))
    y = b[cluster] + 0.5 * x + rng.normal(size=len(cluster))
    labels = np.array([f"s{k}" for k in rng.permutation(clusters)])
    data = pd.DataFrame({"g": labels[cluster], "x": x, "y": y, "w": w[cluster], "z1": z1[cluster], "z2": z2[cluster]})
    return data.sample(frac=1, random_state=1)


def main() -> None:
    warnings.simplefilter("ignore")
    data = simulated()
    means = {}
    for engine in ("collapsed", "latent"):
        start = time.perf_counter()
        result = bm.Model(MODEL, data, cluster="g", engine=engine).fit(draws=1000, tune=1000, chains=2, random_seed=1,
                                                                        progressbar=False)
        diagnostics = result.diagnostics()
        print(f"{engine}: {time.perf_counter() - start:.1f} s, max R-hat {diagnostics['max_r_hat']:.3f}, "
              f"{diagnostics['divergences']} divergences")
        means[engine] = result.summary().query("free").set_index(["lhs", "op", "rhs", "level"])[["mean", "sd"]]
    both = means["collapsed"].join(means["latent"], lsuffix="_collapsed", rsuffix="_latent")
    both["gap in sd"] = (both.mean_collapsed - both.mean_latent).abs() / both.sd_collapsed
    print(both.round(3).to_string())


if __name__ == "__main__":
    main()
