"""report.html: one self-contained file (images embedded as base64 PNG) that a
researcher can open, archive or send: the text summary, a path diagram per
level with posterior medians and 95% intervals on the arrows, the effects
table and forest plot, rank plots, caterpillar plots of cluster-specific
estimates, and the diagnostics with their advice.
"""

from __future__ import annotations

import base64
import html
import io
import warnings
from pathlib import Path

import numpy as np

__all__ = ["write_report", "report_html"]

MAX_RANK_PLOTS = 12
MAX_CATERPILLARS = 6

_STYLE = """body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}
pre{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:12px}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
img{max-width:100%}.warning{color:#a00}"""


def _figure_html(fig, alt: str) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _section(title: str, body: str) -> str:
    return f"<h2>{html.escape(title)}</h2>\n{body}\n"


def report_html(result) -> str:
    """The report of a :class:`~bayes_msem.results.FitResult` as an HTML string."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from bayes_msem.plots import caterpillar_plot, forest_plot, path_diagram

    summary = result.summary()
    table = result.parameter_table()
    latent = {name for roles in table.levels for name in roles.latent}
    slopes = {f"{r.lhs}~{r.rhs}": r.random for r in table.rows[table.rows["random"].notna()].itertuples()}
    parts = [f"<h1>bayes-msem report</h1>\n<pre>{html.escape(str(result))}</pre>"]
    messages = result.diagnostic_messages()
    parts.append(_section("Diagnostics", "".join(f'<p class="warning">{html.escape(m)}</p>' for m in messages)
                          or "<p>No divergences, R-hat at most 1.01, enough effective draws.</p>"))
    diagrams = []
    for level in dict.fromkeys(summary.level):
        fig, ax = plt.subplots(figsize=(9, 5))
        path_diagram(summary, level, latent, slopes if level == "within" else None, ax)
        diagrams.append(f'<div class="path-diagram">{_figure_html(fig, f"path diagram {level}")}</div>')
    parts.append(_section("Path diagrams", "\n".join(diagrams)))
    effects = result.effects()
    if len(effects):
        fig, ax = plt.subplots(figsize=(7, 0.4 * len(effects) + 1.5))
        forest_plot(effects, ax)
        parts.append(_section("Effects", effects.to_html(index=False, float_format="%.3f") + _figure_html(fig, "forest")))
    parts.append(_section("Parameters", summary.to_html(index=False, float_format="%.3f")))
    parts.append(_section("Rank plots", _rank_plots(result, summary)))
    if "cluster_effects" in result.idata.posterior:
        frame = result.cluster_effects()
        images = []
        for variable in list(dict.fromkeys(frame.variable))[:MAX_CATERPILLARS]:
            fig, ax = plt.subplots(figsize=(6, 3.5))
            caterpillar_plot(frame, variable, ax)
            images.append(_figure_html(fig, f"caterpillar {variable}"))
        parts.append(_section("Cluster-specific estimates", "\n".join(images)))
    parts.append(_section("Model fit", _fit_html(result)))
    parts.append(_section("Prior sensitivity", _sensitivity_html(result)))
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>bayes-msem report</title>"
            f"<style>{_STYLE}</style></head><body>\n{''.join(parts)}</body></html>\n")


def _rank_plots(result, summary) -> str:
    """Rank plots (Vehtari et al. 2021) of the parameters with the worst R-hat."""

    from bayes_msem.results import _import_arviz

    az = _import_arviz()
    free = summary[summary.free & (summary.op != ":=")].sort_values("r_hat", ascending=False)
    names = list(dict.fromkeys(f"{r.lhs}{r.op}{r.rhs}" for r in free.itertuples()))[:MAX_RANK_PLOTS]
    names = [n for n in names if n in result.idata.posterior]
    if not names:
        return "<p>No free parameters.</p>"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        axes = az.plot_rank(result.idata, var_names=names, kind="bars", show=False)
    fig = np.ravel(axes)[0].figure if hasattr(axes, "__len__") else axes.figure
    return ("<p>Worst R-hat first; flat, overlapping histograms mean the chains agree.</p>"
            + _figure_html(fig, "rank plots"))


def _fit_html(result) -> str:
    parts = []
    try:
        with warnings.catch_warnings():  # the report counts the high Pareto k itself, just below
            warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto")
            loo = result.loo()
        unit = "cluster" if result.info.get("cluster") else "row"
        bad = int((loo.pareto_k > 0.7).sum())
        parts.append(f"<p>Leave-one-{unit}-out PSIS-LOO: elpd {loo.elpd_loo:.1f} (SE {loo.se:.1f}), "
                     f"p_loo {loo.p_loo:.1f}; {bad} {unit}(s) with Pareto k above 0.7.</p>")
    except ValueError as err:
        parts.append(f"<p>LOO: {html.escape(str(err))}</p>")
    try:
        check = result.ppp()
    except ValueError as err:
        parts.append(f"<p>Posterior predictive p-value: {html.escape(str(err))}</p>")
        return "".join(parts)
    import matplotlib.pyplot as plt

    from bayes_msem.plots import ppp_plot

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ppp_plot(check, ax)
    covariances = check.covariances
    flagged = covariances[(covariances.p < 0.025) | (covariances.p > 0.975)]
    parts.append(f"<p>{html.escape(str(check))}. Values near 0.5 mean the model reproduces the data as well as "
                 "its own replicates; below 0.05 is a sign of misfit.</p>" + _figure_html(fig, "ppp")
                 + "<h3>Posterior predictive checks of the covariances</h3>"
                 + (f'<p class="warning">{len(flagged)} observed covariance(s) outside the 95% predictive '
                    "interval (p below 0.025 or above 0.975).</p>" if len(flagged) else
                    "<p>Every observed covariance lies inside its 95% predictive interval.</p>")
                 + covariances.to_html(index=False, float_format="%.3f"))
    return "".join(parts)


def _sensitivity_html(result) -> str:
    try:
        table = result.prior_sensitivity()
    except ValueError as err:
        return f"<p>{html.escape(str(err))}</p>"
    flagged = table[table.diagnosis != "-"]
    intro = ("<p>Power-scaling (Kallioinen et al. 2023): how far each posterior moves when the prior or the "
             "likelihood is made slightly stronger or weaker; above 0.05 counts as sensitive.</p>")
    verdict = (f'<p class="warning">{len(flagged)} parameter(s) flagged: {html.escape(", ".join(flagged.parameter))}. '
               "Check their priors (result.priors()) and refit with others to see how much they matter.</p>"
               if len(flagged) else "<p>No parameter is sensitive to its prior.</p>")
    return intro + verdict + table.to_html(index=False, float_format="%.3f")


def write_report(result, path) -> Path:
    """Write :func:`report_html` to ``path``."""
    path = Path(path)
    path.write_text(report_html(result), encoding="utf-8")
    return path

