"""The two-level ordinal CFA of the benchmarks (issue 15): six four-category
items, one factor per level, simulated with thresholds -1, 0, 1, within
loadings 0.8, between loadings 0.9, var(fw) = 1, var(fb) = 0.4 and item
between variances 0.1 (latent-response scale: level-1 residual variance 1)."""

import bayes_msem as bm

ITEMS = [f"u{i}" for i in range(1, 7)]
ORDINAL_CFA = "level: 1\n  fw =~ " + " + ".join(ITEMS) + "\nlevel: 2\n  fb =~ " + " + ".join(ITEMS)


def true_values() -> dict[str, float]:
    values = {"fw~~fw|within": 1.0, "fb~~fb|between": 0.4}
    for item in ITEMS:
        values.update({f"{item}|t1": -1.0, f"{item}|t2": 0.0, f"{item}|t3": 1.0, f"{item}~~{item}|between": 0.1})
    for item in ITEMS[1:]:
        values.update({f"fw=~{item}|within": 0.8, f"fb=~{item}|between": 0.9})
    return values


def simulate_ordinal_cfa(clusters: int, size: int, seed: int = 3):
    """Categories 0..3 of the six items, ``clusters`` clusters of ``size`` rows."""
    return bm.simulate_data(ORDINAL_CFA, true_values(), n_clusters=clusters, cluster_size=size, seed=seed,
                            ordered=ITEMS)
