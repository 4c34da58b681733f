"""Command line: ``bayes-msem fit MODEL DATA --cluster COL``, ``bayes-msem report
results.nc``, ``bayes-msem simulate MODEL --values VALUES.csv --out FOLDER`` and
``bayes-msem example``.

Only argparse and bayes_msem's light modules load until sampling starts, so
``--help`` and input errors answer at once. Errors print one line and exit
with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from pathlib import Path

__all__ = ["main"]

_READERS = {".csv": "read_csv", ".parquet": "read_parquet", ".sav": "read_spss", ".dta": "read_stata"}


def _read_data(path: Path, na_values: list[str] | None = None):
    """Read a data file; missing-value codes (``--na-values``) become missing."""
    import pandas as pd

    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"cannot read {path.name}: use one of {', '.join(_READERS)}")
    if not path.exists():
        raise FileNotFoundError(f"data file {path} does not exist")
    if reader == "read_csv":
        frame = _read_csv(path, na_values or [])
    else:
        frame = getattr(pd, reader)(path)
        if na_values:
            codes = na_values + [float(v) for v in na_values if _is_number(v)]
            frame = frame.replace(codes, float("nan"))
    if len(frame) == 0:
        raise ValueError(f"data file {path} has a header but no rows")
    return frame


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(path: Path, na_values: list[str]):
    """A CSV file with its separator sniffed (comma, semicolon, tab or
    whitespace, as spreadsheets in many locales write them), refusing
    duplicated column names, which pandas would rename silently."""
    import csv

    import pandas as pd

    with path.open(newline="", encoding="utf-8-sig") as handle:
        head = handle.read(64_000)
    if not head.strip():
        raise ValueError(f"data file {path} is empty")
    try:
        separator = csv.Sniffer().sniff(head.splitlines()[0], delimiters=",;\t ").delimiter
    except csv.Error:
        separator = ","  # one column: nothing to sniff
    header = next(csv.reader([head.splitlines()[0]], delimiter=separator))
    names = [name.strip() for name in header]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"data file {path} has more than one column named {', '.join(map(repr, repeated))}; "
                         "rename them so that each column has its own name")
    return pd.read_csv(path, sep=separator, na_values=na_values, encoding="utf-8-sig", skipinitialspace=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bayes-msem", description="Bayesian multilevel SEM from lavaan syntax.")
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("fit", help="fit a model file to a data file and print the summary")
    fit.add_argument("model", type=Path, help="model file in lavaan syntax")
    fit.add_argument("data", type=Path, help="data file (.csv, .parquet, .sav, .dta)")
    example = commands.add_parser("example", help="fit the shipped Demo.twolevel model end to end")
    for sub in (fit, example):
        sub.add_argument("--draws", type=int, default=1000, help="posterior draws per chain (default 1000)")
        sub.add_argument("--tune", type=int, default=1000, help="warm-up iterations per chain (default 1000)")
        sub.add_argument("--chains", type=int, default=4, help="chains (default 4)")
        sub.add_argument("--seed", type=int, default=None, help="random seed: the same seed gives the same draws")
        sub.add_argument("--target-accept", type=float, default=0.8,
                         help="NUTS target acceptance rate (default 0.8; 0.95 against divergences)")
        sub.add_argument("--out", type=Path, default=None,
                         help="folder for results.nc, summary.csv and report.html")
    fit.add_argument("--cluster", default=None, help="cluster column (two-level models); for a three-level model "
                     "the columns of levels 2 and 3, comma-separated: --cluster class,school")
    fit.add_argument("--missing", default="fiml", choices=["fiml", "ml", "listwise", "error"],
                     help="missing values: fiml (default; ml is the same) uses every observed value under MAR; "
                          "listwise drops incomplete rows and reports how many; error stops")
    fit.add_argument("--na-values", default="", metavar="CODES",
                     help="comma-separated codes that mean missing in the data file, e.g. --na-values=-99,. "
                          "(write it with = when a code starts with -; empty cells and NA are missing already)")
    report = commands.add_parser("report", help="rebuild report.html from a saved results.nc")
    report.add_argument("results", type=Path, help="results.nc written by `bayes-msem fit --out`")
    report.add_argument("--out", type=Path, default=None, help="report file (default: report.html next to it)")
    fit.add_argument("--centering", action="append", default=[], metavar="VAR=HOW",
                     help="centering of a level-1 predictor: latent, cluster-mean or none (repeatable)")
    fit.add_argument("--ordered", default="", metavar="VARS",
                     help="comma-separated ordinal (or binary) variables, modelled by a probit link with thresholds, "
                          "e.g. --ordered u1,u2; --ordered all takes every modelled column with few integer values")
    _simulate_parser(commands)
    return parser


def _simulate_parser(commands) -> None:
    simulate = commands.add_parser("simulate", help="Monte Carlo study: power and coverage over numbers of clusters")
    simulate.add_argument("model", type=Path, help="population model file in lavaan syntax")
    simulate.add_argument("--values", type=Path, default=None, metavar="VALUES.csv",
                          help="true values: a CSV with columns parameter,value (parameter as in the summary's "
                               "names, e.g. y~x|within); others take simulate_data's defaults")
    simulate.add_argument("--clusters", default="30,50,100", help="numbers of clusters, comma-separated "
                          "(default 30,50,100)")
    simulate.add_argument("--cluster-size", default="10", help="rows per cluster, comma-separated (default 10)")
    simulate.add_argument("--reps", type=int, default=100, help="replications per design (default 100)")
    simulate.add_argument("--analysis", type=Path, default=None, help="model fitted to each data set "
                          "(default: the population model)")
    simulate.add_argument("--draws", type=int, default=500, help="posterior draws per chain (default 500)")
    simulate.add_argument("--tune", type=int, default=500, help="warm-up iterations per chain (default 500)")
    simulate.add_argument("--chains", type=int, default=2, help="chains (default 2)")
    simulate.add_argument("--seed", type=int, default=0, help="random seed of the study (default 0)")
    simulate.add_argument("--workers", type=int, default=None, help="local worker processes (default: one per core)")
    simulate.add_argument("--scheduler", default=None, metavar="ADDRESS",
                          help="a Dask scheduler to run on, e.g. tcp://host:8786 (default: a local cluster)")
    simulate.add_argument("--out", type=Path, required=True,
                          help="folder for summary.csv, replications.csv and report.html; each replication is kept "
                               "there as it finishes, and running the same command again finishes an interrupted "
                               "study")


def _whole_numbers(text: str, option: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{option} takes whole numbers separated by commas, not {text!r}") from None


def _study_values(path: Path | None) -> dict[str, float]:
    import pandas as pd

    if path is None:
        return {}
    if not path.exists():
        raise FileNotFoundError(f"values file {path} does not exist")
    frame = _read_csv(path, [])
    if list(frame.columns[:2]) != ["parameter", "value"]:
        raise ValueError(f"values file {path} needs the columns parameter,value; it has {', '.join(frame.columns)}")
    if not pd.api.types.is_numeric_dtype(frame["value"]):
        raise ValueError(f"values file {path}: the value column must hold numbers")
    return dict(zip(frame["parameter"].astype(str), frame["value"].astype(float)))


def _simulate(args) -> None:
    import bayes_msem as bm
    from bayes_msem.study import study_report

    if not args.model.exists():
        raise FileNotFoundError(f"model file {args.model} does not exist")
    designs = {"clusters": _whole_numbers(args.clusters, "--clusters"),
               "cluster_size": _whole_numbers(args.cluster_size, "--cluster-size")}
    client = None
    if args.scheduler:
        from dask.distributed import Client

        client = Client(args.scheduler)
    study = bm.simulation_study(args.model.read_text(), _study_values(args.values), designs, args.reps,
                                analysis=args.analysis.read_text() if args.analysis else None,
                                fit_kwargs={"draws": args.draws, "tune": args.tune, "chains": args.chains},
                                client=client, workers=args.workers, store=args.out / "replications", resume=True,
                                random_seed=args.seed)
    study.summary.to_csv(args.out / "summary.csv", index=False)
    study.replications.to_csv(args.out / "replications.csv", index=False)
    study_report(study, args.out / "report.html")
    print(study.summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\nwrote {args.out / 'summary.csv'}, {args.out / 'replications.csv'} and {args.out / 'report.html'}")


def _ordered(text: str):
    """``--ordered u1,u2`` as ``ordered=["u1", "u2"]``; ``all`` as ``ordered=True``."""
    if text.strip().lower() == "all":
        return True
    return [name.strip() for name in text.split(",") if name.strip()] or None


def _centering(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, how = pair.partition("=")
        if not sep or not name or not how:
            raise ValueError(f"--centering takes VAR=HOW (e.g. m=none), not {pair!r}")
        out[name.strip()] = how.strip()
    return out


def _run(args) -> None:
    import bayes_msem as bm

    if args.command == "simulate":
        _simulate(args)
        return
    if args.command == "report":
        if not args.results.exists():
            raise FileNotFoundError(f"results file {args.results} does not exist")
        target = args.out or args.results.with_name("report.html")
        bm.load_result(args.results).report(target)
        print(f"wrote {target}")
        return
    if args.command == "example":
        syntax, data, cluster = bm.example_model(), bm.example_data(), "cluster"
    else:
        if not args.model.exists():
            raise FileNotFoundError(f"model file {args.model} does not exist")
        na_values = [code.strip() for code in args.na_values.split(",") if code.strip()]
        syntax, data, cluster = args.model.read_text(), _read_data(args.data, na_values), args.cluster
        if cluster and "," in cluster:
            cluster = [column.strip() for column in cluster.split(",")]
    options = {"missing": args.missing, "centering": _centering(args.centering),
               "ordered": _ordered(args.ordered)} if args.command == "fit" else {}
    with warnings.catch_warnings(record=True) as caught:  # the filters stay: library notices remain silenced
        model = bm.Model(syntax, data, cluster=cluster, **options)
        result = model.fit(draws=args.draws, tune=args.tune, chains=args.chains, random_seed=args.seed,
                           target_accept=args.target_accept)
        warned = result.diagnostic_messages()  # what fit() warned, in Python's words
        result.info["interface"] = "cli"  # the summary gives the same advice in the command's words
        if model.spec.table.ordinal or not model.spec.within.slopes:  # random slopes: no saturated model, no PPP
            print("Checking the model: posterior predictive p-value (PPP)...", file=sys.stderr)
            result.try_ppp()  # shown in the summary's header
    print(result)
    _print_warnings(caught, shown_in_summary=warned)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        result.save(args.out / "results.nc")
        result.summary().to_csv(args.out / "summary.csv", index=False)
        print("Writing the report: LOO, path diagrams, plots...", file=sys.stderr)
        result.report(args.out / "report.html")
        print(f"\nwrote {args.out / 'results.nc'}, {args.out / 'summary.csv'} and {args.out / 'report.html'}")


def _print_warnings(caught, shown_in_summary: list[str]) -> None:
    """Warnings in the command's own words, once each: the diagnostics are in the
    summary's header already; the rest (data checks, listwise deletion) follow it."""
    seen = set(shown_in_summary)
    for warning in caught:
        text = str(warning.message)
        if issubclass(warning.category, UserWarning) and text not in seen:
            seen.add(text)
            print(f"bayes-msem: warning: {in_cli_words(text)}", file=sys.stderr)


# The library's messages name Python arguments; the command's user types options.
_CLI_WORDS = [
    (re.compile(r"cluster='<column>'"), "--cluster COLUMN"),
    (re.compile(r"cluster=\['([^']*)', '([^']*)'\]"), r"--cluster \1,\2"),
    (re.compile(r"cluster=('[^']*')"), r"--cluster \1"),
    (re.compile(r"drop cluster="), "drop --cluster"),
    (re.compile(r"missing='(\w+)'"), r"--missing \1"),
    (re.compile(r"centering="), "--centering"),
    (re.compile(r"ordered=\[([^\]]*)\]"), lambda m: "--ordered " + m.group(1).replace("'", "").replace(" ", "")),
    (re.compile(r"out of ordered="), "out of --ordered"),
]


def in_cli_words(message: str) -> str:
    """A library message with Python arguments (``cluster='school'``,
    ``missing='listwise'``) written as the command's options."""
    for pattern, replacement in _CLI_WORDS:
        message = pattern.sub(replacement, message)
    return message


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bayes-msem`` command."""
    args = _parser().parse_args(argv)
    try:
        _run(args)
    except (ValueError, OSError, ImportError) as err:  # ModelSyntaxError and DataError are ValueErrors
        message = in_cli_words(str(err)).splitlines()
        print(f"bayes-msem: error: {message[0]}", file=sys.stderr)
        for line in message[1:]:
            print(f"  {line}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
