"""The 1-1-1 random-slope mediation of shared/reference/README.md, at any size.

Per cluster j: x ~ N(0, 1) within-only; m = u_m0 + (0.4 + u_a) x + e_m;
y = u_y0 + (0.5 + u_b) m + (0.2 + u_c) x + e_y; e ~ N(0, 1); random-effect SDs
(u_m0, u_a, u_y0, u_b, u_c) = (0.5, 0.3, 0.5, 0.3, 0.2), corr(u_a, u_b) = 0.4.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SDS = np.array([0.5, 0.3, 0.5, 0.3, 0.2])


def simulate_mediation_111(clusters: int, size: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    corr = np.eye(5)
    corr[1, 3] = corr[3, 1] = 0.4
    effects = rng.multivariate_normal(np.zeros(5), corr * np.outer(SDS, SDS), size=clusters)
    g = np.repeat(np.arange(clusters), size)
    u = effects[g]
    x = rng.normal(size=len(g))
    m = u[:, 0] + (0.4 + u[:, 1]) * x + rng.normal(size=len(g))
    y = u[:, 2] + (0.5 + u[:, 3]) * m + (0.2 + u[:, 4]) * x + rng.normal(size=len(g))
    return pd.DataFrame({"cluster": g + 1, "x": x, "m": m, "y": y})
