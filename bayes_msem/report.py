"""Text output: the lavaan-like summary printed by ``print(result)`` and the
command line. Header (data, engine, sampler, priors, diagnostics), then one
section per level, parameters grouped as lavaan groups them."""

from __future__ import annotations

import pandas as pd

__all__ = ["summary_text"]

_SECTIONS = [("=~", "Latent variables"), ("~", "Regressions"), ("~~cov", "Covariances"),
             ("~1", "Intercepts"), ("~~var", "Variances")]


def _section_key(row) -> str:
    if row.op == "~~":
        return "~~var" if row.lhs == row.rhs else "~~cov"
    return row.op


def _format_row(row, name: str) -> str:
    if not row.free:
        return f"    {name:<18}{row['mean']:>9.3f}   (fixed)"
    return (f"    {name:<18}{row['mean']:>9.3f}{row['sd']:>9.3f}{row['q2.5']:>9.3f}{row['q97.5']:>9.3f}"
            f"{row.r_hat:>8.3f}{row.ess_bulk:>7.0f}")


def _block(rows: pd.DataFrame) -> list[str]:
    lines = []
    for key, title in _SECTIONS:
        part = rows[rows.apply(_section_key, axis=1) == key]
        if part.empty:
            continue
        lines.append(f"  {title}:")
        lines.append(f"    {'':<18}{'Estimate':>9}{'Post.SD':>9}{'2.5%':>9}{'97.5%':>9}{'R-hat':>8}{'ESS':>7}")
        previous = None
        for _, row in part.iterrows():
            if key in ("=~", "~", "~~cov"):
                if row.lhs != previous:
                    lines.append(f"  {row.lhs} {row.op}")
                    previous = row.lhs
                name = row.rhs
            else:
                name = row.lhs
            if row.label:
                name = f"{name} ({row.label})"
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


def summary_text(result) -> str:
    """The lavaan-like text summary of a :class:`~bayes_msem.results.FitResult`."""
    info = result.info
    summary = result.summary()
    diagnostics = result.diagnostics()
    lines = [
        f"bayes-msem {info.get('version', '')}: {info['model_type']}, engine {info['engine']}, "
        f"sampler {info['sampler']} (NUTS)",
        f"  Engine {info['engine']}: {info.get('engine_reason', '')}",
        f"  Observations {info['n_rows']}" + (f" ({info['n_dropped']} dropped: listwise)" if info.get("n_dropped") else ""),
    ]
    if info.get("cluster"):
        sizes = info["cluster_sizes"]
        lines.append(f"  Clusters {len(sizes)} ({info['cluster']}), sizes {min(sizes)} to {max(sizes)}")
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
        lines.append(f"Level {'1 [within]' if level == 'within' else '2 [between]'}:" if level else "Parameters:")
        lines += _block(model_rows[model_rows.level == level])
        if level == "within" and table.slopes:
            lines.append("  Random slopes (their means and variances are at level 2):")
            random = table.rows[table.rows["random"].notna()]
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
