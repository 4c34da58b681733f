"""Plots: path diagrams per level, forest plots of effects, caterpillar plots
of cluster-specific estimates. Matplotlib only (no system graphviz needed), so
the report builds on any machine the library installs on; the diagrams' layout
is :mod:`bayes_msem.diagram`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["path_diagram", "forest_plot", "caterpillar_plot", "ppp_plot"]


COLORS = {"loading": "tab:blue", "regression": "tab:blue", "slope": "tab:orange", "covariance": "tab:gray"}


def path_diagram(summary: pd.DataFrame, level: str, latent: set[str], slopes: dict[str, str] | None = None, ax=None,
                 covariates: set[str] = frozenset()):
    """Draw one level's path diagram (:func:`bayes_msem.diagram.diagram_layout`):
    loadings and regressions with their posterior median and 95% interval,
    random slopes in orange, covariances as grey curved double arrows and
    variances under the boxes. ``summary`` is :meth:`FitResult.summary`;
    ``latent`` the latent variables (ellipses); ``slopes`` maps ``"y~x"`` to a
    random slope's name; ``covariates`` the exogenous observed variables (their
    fixed variances and covariances are not drawn). Returns the axes, or None when the level has nothing to draw.
    Artists carry ids (``covariance``, ``label`` ...) that survive into SVG."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse, FancyArrowPatch, Rectangle

    from bayes_msem.diagram import FONT_SIZE, diagram_layout

    diagram = diagram_layout(summary, level, latent, slopes, covariates)
    if diagram is None:
        return None
    if ax is None:
        _, ax = plt.subplots(figsize=(diagram.width, diagram.height + 0.4))
    ax.set_axis_off()
    ax.set_xlim(0, diagram.width)
    ax.set_ylim(0, diagram.height)
    ax.set_aspect("equal")
    titles = {"within": "Level 1 (within)", "between": "Level 2 (between)"}
    ax.set_title(titles.get(level, level or "Model"), fontsize=FONT_SIZE + 2, loc="left")
    prefix = f"{level or 'model'}-"  # ids stay unique with several diagrams in one page
    shapes = {}
    for name, node in diagram.nodes.items():
        box = node.box
        shape = (Ellipse((box.x, box.y), box.width, box.height, fill=False, linewidth=1.2) if node.latent else
                 Rectangle((box.x - box.width / 2, box.y - box.height / 2), box.width, box.height, fill=False,
                           linewidth=1.2))
        shape.set_gid(f"{prefix}node-{name}")
        ax.add_patch(shape)
        shapes[name] = shape
        ax.text(box.x, box.y, name, ha="center", va="center", fontsize=FONT_SIZE + 1, gid=f"{prefix}name-{name}")
        if node.variance:
            ax.text(box.x, box.y - box.height / 2 - 0.08, node.variance, ha="center", va="top", fontsize=FONT_SIZE,
                    color="dimgray", gid=f"{prefix}variance-{name}")
    for k, edge in enumerate(diagram.edges):
        clip = not edge.from_sides
        arrow = FancyArrowPatch(edge.start, edge.end, patchA=shapes[edge.source] if clip else None,
                                patchB=shapes[edge.target] if clip else None, connectionstyle=f"arc3,rad={edge.rad}",
                                arrowstyle="<|-|>" if edge.kind == "covariance" else "-|>", mutation_scale=12,
                                color=COLORS[edge.kind], linewidth=1.0 if edge.kind == "covariance" else 1.3,
                                shrinkA=2, shrinkB=2)
        arrow.set_gid(f"{prefix}{edge.kind}-{k}")
        ax.add_patch(arrow)
        ax.text(edge.label.x, edge.label.y, edge.text, ha="center", va="center", fontsize=FONT_SIZE,
                color="black", gid=f"{prefix}label-{k}",
                bbox=dict(boxstyle="square,pad=0.15", facecolor="white", edgecolor="none", alpha=0.9))
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
    ax.set_title(f"{variable}: each cluster's mean and 95% interval", fontsize=10)
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
