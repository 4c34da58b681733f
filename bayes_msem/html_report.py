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
DIAGRAM_KEY = ("<p>Numbers on arrows: posterior median [95% interval]; grey curved double arrows: covariances "
               "(median); under a box: its (residual) variance; orange: random slopes, with the mean slope. "
               "Ellipses are latent variables. The covariates' own variances and covariances (fixed at their sample values) "
               "are not drawn.</p>")
MAX_CATERPILLARS = 6

_STYLE = """body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}
pre{background:#f6f6f6;padding:1em;font-size:12px;white-space:pre-wrap;overflow-wrap:anywhere}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
table.parameters td,table.parameters th{border:none;border-bottom:1px solid #eee}
table.parameters td.name,table.parameters tr.group td,table.parameters tr.section th,
table.parameters tr.level th{text-align:left}
table.parameters tr.level th{font-size:14px;padding-top:1em}table.parameters tr.section th{padding-top:.6em}
table.parameters td.name{padding-left:2em}table.parameters tr.fixed td{color:#777;font-style:italic}
img,svg{max-width:100%;height:auto}.warning{color:#a00}"""


def _figure_html(fig, alt: str) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _svg_html(fig, alt: str) -> str:
    """The figure as inline SVG with its text kept as text: sharp at any zoom,
    searchable, and its sizes checkable in a browser."""
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    with plt.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]
    return svg.replace("<svg ", f'<svg role="img" aria-label="{html.escape(alt)}" ', 1)


def _section(title: str, body: str) -> str:
    return f"<h2>{html.escape(title)}</h2>\n{body}\n"


# a callable: pandas passes floats in object columns (a table mixing numbers and text) to it directly
THREE_DECIMALS = "{:.3f}".format

MISSING_KEY = ("<p>Handled under MAR by full information: every observed value is used and no row is dropped "
               "(counts in the summary above). Covariance coverage: the share of rows where both variables are "
               "observed; the diagonal is each variable's share observed.</p>")


def report_html(result) -> str:
    """The report of a :class:`~bayes_msem.results.FitResult` as an HTML string."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from bayes_msem.plots import caterpillar_plot, forest_plot, path_diagram

    summary = result.summary()
    table = result.parameter_table()
    latent = {name for roles in table.levels for name in roles.latent}
    covariates = {name for roles in table.levels for name in roles.covariates}
    slopes = {f"{r.lhs}~{r.rhs}": r.random for r in table.rows[table.rows["random"].notna()].itertuples()}
    parts = [f"<h1>bayes-msem report</h1>\n<pre>{html.escape(str(result))}</pre>"]
    messages = result.diagnostic_messages()
    parts.append(_section("Diagnostics", "".join(f'<p class="warning">{html.escape(m)}</p>' for m in messages)
                          or "<p>No divergences, R-hat at most 1.01, enough effective draws.</p>"))
    diagrams = []
    for level in dict.fromkeys(summary[summary.op != ":="].level):
        ax = path_diagram(summary, level, latent, slopes if level == "within" else None, covariates=covariates)
        if ax is not None:
            diagrams.append(f'<div class="path-diagram">{_svg_html(ax.figure, f"path diagram {level}")}</div>')
    parts.append(_section("Path diagrams", DIAGRAM_KEY + "\n".join(diagrams)))
    if result.info.get("missing"):
        parts.append(_section("Missing values", MISSING_KEY + result.coverage().to_html(float_format=THREE_DECIMALS)))
    effects = result.effects()
    if len(effects):
        fig, ax = plt.subplots(figsize=(7, 0.4 * len(effects) + 1.5))
        forest_plot(effects, ax)
        parts.append(_section("Effects", effects.to_html(index=False, float_format=THREE_DECIMALS) + _figure_html(fig, "forest")))
    parts.append(_section("Parameters", _parameter_table_html(summary, table.level_names)))
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


def _parameter_table_html(summary, level_names: tuple[str, ...] = ()) -> str:
    """The parameters as lavaan prints them: per level, sections (Latent
    variables, Regressions, ...), fixed values marked, ESS as integers."""
    from bayes_msem.report import COLUMNS, formatted_numbers, level_title, parameter_lines

    header = "<tr><th></th>" + "".join(f"<th>{c}</th>" for c in COLUMNS) + "</tr>"
    rows = []
    model_rows = summary[summary.op != ":="]
    for level in dict.fromkeys(model_rows.level):
        rows.append(f'<tr class="level"><th colspan="7">{html.escape(level_title(level, level_names))}</th></tr>')
        for title, name, row in parameter_lines(model_rows[model_rows.level == level]):
            if title is not None:
                rows.append(f'<tr class="section"><th colspan="7">{html.escape(title)}</th></tr>' + header)
            elif row is None:
                rows.append(f'<tr class="group"><td colspan="7">{html.escape(name)}</td></tr>')
            else:
                rows.append(_parameter_row_html(name, formatted_numbers(row), row.free))
    defined = summary[summary.op == ":="]
    if len(defined):
        rows.append('<tr class="level"><th colspan="7">Defined parameters</th></tr>' + header)
        rows += [_parameter_row_html(f"{r.lhs} := {r.rhs}", formatted_numbers(r), True) for _, r in defined.iterrows()]
    return f'<table class="parameters">{"".join(rows)}</table>'


def _parameter_row_html(name: str, numbers: list[str], free: bool) -> str:
    cells = "".join(f"<td>{html.escape(n)}</td>" for n in numbers)
    return f'<tr class="{"free" if free else "fixed"}"><td class="name">{html.escape(name)}</td>{cells}</tr>'


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
        rows = -(-len(names) // 4)  # ArviZ's grid: four plots to a row
        axes = az.plot_rank(result.idata, var_names=names, kind="bars", show=False, figsize=(11, 2.6 * rows))
    axes = np.ravel(axes)
    for ax in axes:  # ArviZ puts a parameter's level on a second title line, into the plot above
        ax.set_title(ax.get_title().replace("\n", " "), fontsize=10)
        ax.set_xlabel(ax.get_xlabel(), fontsize=8)
    fig = axes[0].figure
    fig.tight_layout()
    return ("<p>Worst R-hat first; flat, overlapping histograms mean the chains agree.</p>"
            + _figure_html(fig, "rank plots"))


def _loo_unit(result) -> tuple[str, str]:
    """What LOO left out, as the report names it: the log-likelihood's unit
    (row, cluster, or a level-3 unit, named by its column), and in a
    cross-classified model what the row is given."""
    unit = result.idata.log_likelihood["loglik"].dims[-1]  # chosen in Model._pointwise_log_likelihood
    upper = result.info.get("upper_levels") or []
    if any(level.get("crossed") for level in upper):
        return unit, " (each row given its units' effects in both classifications)"
    return (str(upper[-1]["column"]) if unit == "unit" else unit), ""


def _fit_html(result) -> str:
    parts = []
    try:
        with warnings.catch_warnings():  # the report counts the high Pareto k itself, just below
            warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto")
            loo = result.loo()
        unit, given = _loo_unit(result)
        bad = int((loo.pareto_k > 0.7).sum())
        parts.append(f"<p>Leave-one-{unit}-out PSIS-LOO{given}: elpd {loo.elpd_loo:.1f} (SE {loo.se:.1f}), "
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
                 + covariances.to_html(index=False, float_format=THREE_DECIMALS))
    return "".join(parts)


def _sensitivity_html(result) -> str:
    from bayes_msem.prior_checks import SENSITIVITY_THRESHOLD

    try:
        table = result.prior_sensitivity()
    except ValueError as err:
        return f"<p>{html.escape(str(err))}</p>"
    flagged = table[table.diagnosis != "-"]
    threshold = f"{SENSITIVITY_THRESHOLD:g}"
    intro = ("<p>Power-scaling (Kallioinen et al. 2023): how far each posterior moves when the prior (column "
             "<i>prior</i>) or the likelihood (column <i>likelihood</i>) is made slightly stronger or weaker. A "
             f"parameter is flagged when its prior sensitivity is {threshold} or more: as prior-data conflict when "
             "its likelihood sensitivity is too, else as a strong prior with a weak likelihood. Likelihood "
             "sensitivity alone is what data should do and is not flagged.</p>")
    names = [f"{r.parameter} ({r.level})" if r.level else r.parameter for r in flagged.itertuples()]
    verdict = (f'<p class="warning">{len(flagged)} parameter(s) flagged: {html.escape(", ".join(names))}. '
               "Check their priors (result.priors()) and refit with others to see how much they matter.</p>"
               if len(flagged) else f"<p>No parameter's prior sensitivity reaches {threshold}.</p>")
    return intro + verdict + table.to_html(index=False, float_format=THREE_DECIMALS)


def write_report(result, path) -> Path:
    """Write :func:`report_html` to ``path``."""
    path = Path(path)
    path.write_text(report_html(result), encoding="utf-8")
    return path

