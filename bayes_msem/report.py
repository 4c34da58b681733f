"""Text output: the lavaan-like summary printed by ``print(result)`` and the
command line. Header (data, engine, sampler, priors, diagnostics), then one
section per level, parameters grouped as lavaan groups them."""

from __future__ import annotations

import pandas as pd

__all__ = ["summary_text", "parameter_lines", "formatted_numbers", "level_title"]

_SECTIONS = [("=~", "Latent variables"), ("~", "Regressions"), ("~~cov", "Covariances"),
             ("~1", "Intercepts"), ("|", "Thresholds"), ("~~var", "Variances")]


def _section_key(row) -> str:
    if row.op == "~~":
        return "~~var" if row.lhs == row.rhs else "~~cov"
    return row.op


COLUMNS = ("Estimate", "Post.SD", "2.5%", "97.5%", "R-hat", "ESS")


def parameter_lines(rows: pd.DataFrame):
    """The rows of one level as lavaan lists them: yields ``(title, None, None)``
    for a section (Latent variables, Regressions, ...), ``(None, header, None)``
    for a group (``fw =~``) and ``(None, name, row)`` for a parameter (its
    right-hand side, or left-hand side in Intercepts and Variances, with its
    label). The text summary and the report's table both read it."""
    for key, title in _SECTIONS:
        part = rows[rows.apply(_section_key, axis=1) == key]
        if part.empty:
            continue
        yield title, None, None
        previous = None
        for _, row in part.iterrows():
            if key in ("=~", "~", "~~cov"):
                if row.lhs != previous:
                    yield None, f"{row.lhs} {row.op}", None
                    previous = row.lhs
                name = row.rhs
            elif key == "|":  # lavaan's u1|t1
                name = f"{row.lhs}|{row.rhs}"
            else:
                name = row.lhs
            yield None, f"{name} ({row.label})" if row.label else name, row


def formatted_numbers(row) -> list[str]:
    """The six numbers of a parameter as printed: a fixed one shows its value and "(fixed)"."""
    if not row.free:
        return [f"{row['mean']:.3f}", "(fixed)", "", "", "", ""]
    ess = "" if pd.isna(row.ess_bulk) else f"{row.ess_bulk:.0f}"
    r_hat = "" if pd.isna(row.r_hat) else f"{row.r_hat:.3f}"
    return [f"{row['mean']:.3f}", f"{row['sd']:.3f}", f"{row['q2.5']:.3f}", f"{row['q97.5']:.3f}", r_hat, ess]


def _format_row(row, name: str) -> str:
    numbers = formatted_numbers(row)
    if not row.free:
        return f"    {name:<18}{numbers[0]:>9}   (fixed)"
    widths = (9, 9, 9, 9, 8, 7)
    return f"    {name:<18}" + "".join(f"{n:>{w}}" for n, w in zip(numbers, widths))


def _block(rows: pd.DataFrame) -> list[str]:
    lines = []
    for title, name, row in parameter_lines(rows):
        if title is not None:
            lines.append(f"  {title}:")
            lines.append(f"    {'':<18}" + "".join(f"{c:>{w}}" for c, w in zip(COLUMNS, (9, 9, 9, 9, 8, 7))))
        elif row is None:
            lines.append(f"  {name}")
        else:
            lines.append(_format_row(row, name))
    return lines


def _prior_line(result, shown: int = 4) -> str:
    """Which priors differ from the defaults: those set in the model and changed
    default settings (``priors=``)."""
    table = result.prior_table
    user = table[table.source == "user"]
    parts = [f"{r.lhs}{r.op}{r.rhs}{f' ({r.level})' if r.level else ''} {r.prior}" for r in user.head(shown).itertuples()]
    if len(user) > shown:
        parts.append(f"{len(user) - shown} more set in the model")
    changed = result.info.get("default_priors_changed") or {}
    if changed:
        parts.append("defaults changed: " + ", ".join(f"{k}={v:g}" for k, v in changed.items()))
    return "; ".join(parts) if parts else "defaults"


def level_title(level: str, names: tuple[str, ...] = ()) -> str:
    """A level's heading, as lavaan prints it: ``Level 2 [between]``; in a
    three-level model named by its cluster column (``names``, lowest first),
    ``Level 3 [school]``."""
    if level in names:
        return f"Level {names.index(level) + 1} [{level}]"
    return {"within": "Level 1 [within]", "between": "Level 2 [between]", "level 3": "Level 3"}.get(level, level or "Parameters")


def _missing_lines(missing: dict | None) -> list[str]:
    """The header's account of missing values, handled by full information."""
    if not missing:
        return []
    counts = ", ".join(f"{name} {k}" for name, k in missing["counts"].items())
    lines = [f"  Missing values (full information, MAR; no row dropped): {counts}",
             f"    {missing['incomplete_rows']} incomplete rows, {missing['patterns']} missing-data patterns"]
    if missing["empty_rows"]:
        lines[-1] += f"; {missing['empty_rows']} rows with no observed outcome add only their cluster's level-2 values"
    never = missing.get("clusters_without") or {}  # results saved before session 10 lack it
    if never:
        listing = ", ".join(f"{name} in {k}" for name, k in never.items())
        lines.append(f"    Never observed in a cluster: {listing} cluster(s); there the cluster's part rests on its "
                     "other values and the model")
    return lines


def summary_text(result) -> str:
    """The lavaan-like text summary of a :class:`~bayes_msem.results.FitResult`."""
    info = result.info
    summary = result.summary()
    diagnostics = result.diagnostics()
    lines = [
        f"bayes-msem {info.get('version', '')}: {info['model_type']}, engine {info['engine']}, "
        f"sampler {info['sampler']} (NUTS)",
        f"  Engine {info['engine']}: {info.get('engine_reason', '')}",
        f"  Observations {info['n_rows']}" + (f" ({info['n_dropped']} dropped: {info.get('dropped_reason') or 'listwise'})"
                                              if info.get("n_dropped") else ""),
    ] + _missing_lines(info.get("missing")) + ([f"    {info['modelled_covariates'].capitalize()}"]
                                               if info.get("modelled_covariates") else [])
    if info.get("cluster"):
        sizes = info["cluster_sizes"]
        lines.append(f"  Clusters {len(sizes)} ({info['cluster']}), sizes {min(sizes)} to {max(sizes)}")
        for upper in info.get("upper_levels", []):
            if upper.get("crossed"):
                lines.append(f"  Crossed with {upper['units']} units ({upper['column']}), each meeting "
                             f"{upper['fewest']} to {upper['most']} clusters: cross-classified")
            else:
                lines.append(f"  Level-3 units {upper['units']} ({upper['column']}), holding {upper['fewest']} to "
                             f"{upper['most']} clusters each")
    lines += [
        f"  Chains {info['chains']} x {info['draws']} draws after {info['tune']} warm-up; seed {info['random_seed']}",
        f"  Priors: {_prior_line(result)} (result.priors() lists them)",
        f"  Diagnostics: {diagnostics['divergences']} divergences, max R-hat {diagnostics['max_r_hat']:.3f}, "
        f"min ESS bulk {diagnostics['min_ess_bulk']:.0f}, tail {diagnostics['min_ess_tail']:.0f}",
    ]
    if "predictive_check" in result.idata.groups():
        lines.append(f"  {result.ppp()}")
    lines += [f"  WARNING: {m}" for m in result.diagnostic_messages()]
    table = result.parameter_table()
    roles = table.variable_roles()
    if roles:
        lines += ["", "Variables:"] + [f"  {name:<12}{role}" for name, role in roles]
    model_rows = summary[summary.op != ":="]
    for level in dict.fromkeys(model_rows.level):
        lines.append("")
        lines.append(f"{level_title(level, table.level_names)}:")
        lines += _block(model_rows[model_rows.level == level])
        random = table.rows[table.rows["random"].notna() & (table.rows.level.map(table.level_name) == level)]
        if len(random):
            above = "level 2" if table.n_levels == 2 else "the levels above"
            lines.append(f"  Random slopes (their means and variances are at {above}):")
            lines += [f"    {r.random} | {r.lhs} ~ {r.rhs}" for r in random.itertuples()]
    defined = summary[summary.op == ":="]
    if len(defined):
        lines += ["", "Defined parameters:"]
        for _, row in defined.iterrows():
            text = f"{row.lhs} := {row.rhs}"
            if len(text) > 18:  # the whole definition on its own line, the numbers under its name
                lines.append(f"  {text}")
                text = row.lhs
            lines.append(_format_row(row, text[:18]))
    return "\n".join(lines)
