"""Plots: path diagrams per level, forest plots of effects, caterpillar plots
of cluster-specific estimates. Matplotlib only (no system graphviz needed), so
the report builds on any machine the library installs on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["path_diagram", "forest_plot", "caterpillar_plot", "ppp_plot"]


def _layers(edges: list[tuple[str, str]]) -> dict[str, int]:
    """Column of each variable: the length of the longest path reaching it."""
    nodes = list(dict.fromkeys([n for e in edges for n in e]))
    depth = {n: 0 for n in nodes}
    for _ in range(len(nodes)):  # longest path by relaxation; cycles stop after n rounds
        changed = False
        for source, target in edges:
            if depth[target] < depth[source] + 1:
                depth[target] = depth[source] + 1
                changed = True
        if not changed:
            break
    return depth


def path_diagram(summary: pd.DataFrame, level: str, latent: set[str], slopes: dict[str, str] | None = None, ax=None):
    """Draw the regressions and loadings of one level, left to right, with the
    posterior median and 95% interval on every arrow. ``summary`` is
    :meth:`FitResult.summary`; ``latent`` the latent variables (drawn as ellipses);
    ``slopes`` maps (outcome, predictor) text ``"y~x"`` to a random slope's name."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse, FancyArrowPatch, Rectangle

    from bayes_msem.partable import _source_name

    rows = summary[(summary.level == level) & summary.op.isin(["=~", "~"])]
    # a centered copy (m.raw, m.cwc) is drawn as its variable, so that x -> m -> y shows as a chain
    edges = [((r.lhs, r.rhs) if r.op == "=~" else (_source_name(r.rhs), r.lhs)) for r in rows.itertuples()]
    labels = [f"{r['median']:.2f} [{r['q2.5']:.2f}, {r['q97.5']:.2f}]" if r.free else f"{r['mean']:.2f} (fixed)"
              for _, r in rows.iterrows()]
    for key, slope in (slopes or {}).items():
        outcome, predictor = key.split("~")
        edges.append((_source_name(predictor), outcome))
        mean = summary[(summary.lhs == slope) & (summary.op == "~1")]
        text = f"{slope}: random" if mean.empty else (
            f"{slope}: {mean['median'].iloc[0]:.2f} [{mean['q2.5'].iloc[0]:.2f}, {mean['q97.5'].iloc[0]:.2f}], random")
        labels.append(text)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4.5))
    ax.set_axis_off()
    ax.set_title(f"Path diagram: {level or 'model'}")
    if not edges:
        ax.text(0.5, 0.5, "no regressions or loadings at this level", ha="center", va="center")
        return ax
    depth = _layers(edges)
    columns: dict[int, list[str]] = {}
    for name, d in depth.items():
        columns.setdefault(d, []).append(name)
    position = {}
    for d, names in columns.items():
        for k, name in enumerate(names):
            position[name] = (d * 3.0, -(k - (len(names) - 1) / 2) * 1.4)
    width, height = 1.4, 0.6
    for name, (x, y) in position.items():
        shape = (Ellipse((x, y), width, height, fill=False) if name in latent
                 else Rectangle((x - width / 2, y - height / 2), width, height, fill=False))
        ax.add_patch(shape)
        ax.text(x, y, name, ha="center", va="center", fontsize=9)
    for (source, target), label in zip(edges, labels):
        (x0, y0), (x1, y1) = position[source], position[target]
        skip = depth[target] - depth[source] > 1  # arrows that jump a column arc over it
        rad = -0.3 if skip else 0.0
        ax.add_patch(FancyArrowPatch((x0 + width / 2, y0), (x1 - width / 2, y1), arrowstyle="-|>",
                                     connectionstyle=f"arc3,rad={rad}", mutation_scale=12,
                                     color="tab:blue" if "random" not in label else "tab:orange"))
        lift = 0.12 + (0.3 * abs(x1 - x0) / 2 if skip else 0.0)
        ax.text((x0 + x1) / 2, (y0 + y1) / 2 + lift, label, ha="center", va="bottom", fontsize=7)
    xs = [p[0] for p in position.values()]
    ys = [p[1] for p in position.values()]
    ax.set_xlim(min(xs) - 1.2, max(xs) + 1.2)
    ax.set_ylim(min(ys) - 1.0, max(ys) + 1.0 + 0.15 * (max(xs) - min(xs)))
    ax.set_aspect("equal")
    return ax


def forest_plot(effects: pd.DataFrame, ax=None):
    """Posterior medians and 95% intervals of the rows of :meth:`FitResult.effects`."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.4 * len(effects) + 1.2))
    names = [f"{e} ({lv})" if lv else e for e, lv in zip(effects.effect, effects.level)]
    y = np.arange(len(effects))[::-1]
    ax.errorbar(effects["median"], y, xerr=[effects["median"] - effects["q2.5"], effects["q97.5"] - effects["median"]],
                fmt="o", color="tab:blue", ecolor="tab:gray", capsize=3)
    ax.axvline(0.0, color="black", linewidth=0.6)
    ax.set_yticks(y, names)
    ax.set_xlabel("posterior median and 95% interval")
    ax.set_title("Effects")
    return ax


def caterpillar_plot(frame: pd.DataFrame, variable: str, ax=None):
    """Each cluster's posterior mean and 95% interval of ``variable`` (rows of
    :meth:`FitResult.cluster_effects`), sorted."""
    import matplotlib.pyplot as plt

    frame = frame[frame.variable == variable].sort_values("mean").reset_index(drop=True)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(frame.index, frame["mean"], yerr=[frame["mean"] - frame["q2.5"], frame["q97.5"] - frame["mean"]],
                fmt="o", markersize=2, elinewidth=0.6, color="tab:blue", ecolor="tab:gray")
    ax.axhline(float(frame["mean"].mean()), color="tab:red", linewidth=0.8)
    ax.set_xlabel("cluster (sorted by posterior mean)")
    ax.set_ylabel(variable)
    ax.set_title(f"{variable}: cluster-specific posterior means and 95% intervals")
    return ax


def ppp_plot(check, ax=None):
    """Replicated against observed chi-square, one point per checked draw (the
    Mplus PPP scatter): the PPP is the share of points above the diagonal."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.5))
    observed, replicated = check.chi2_observed, check.chi2_replicated
    above = replicated >= observed
    ax.scatter(observed[above], replicated[above], s=6, color="tab:blue", label="replicated >= observed")
    ax.scatter(observed[~above], replicated[~above], s=6, color="tab:red", label="replicated < observed")
    low, high = min(observed.min(), replicated.min()), max(observed.max(), replicated.max())
    ax.plot([low, high], [low, high], color="black", linewidth=0.8)
    ax.set_xlabel("observed chi-square T(y, theta)")
    ax.set_ylabel("replicated chi-square T(y_rep, theta)")
    ax.set_title(f"PPP = {check.ppp:.3f}")
    ax.legend(fontsize=8, loc="upper left")
    return ax
