"""Speed of the engines on the shipped data sets.

Each configuration runs in a fresh subprocess (so compilation is included and
peak memory is the process's own), with default settings: 4 chains x 1000
draws after 1000 warm-up. Prints a markdown table and, with --write, puts it
into benchmarks/README.md.

    python benchmarks/run_benchmarks.py --write

``--draws N`` runs N draws after N warm-up instead (for models too slow for the default;
such rows are not written into the README's table, which holds the default setting).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

# (data, engine, sampler); "mediation_J_n" is the 1-1-1 random-slope mediation
# (benchmarks/mediation_data.py) with J clusters of n rows, fitted with centering m = none;
# "mediation_J_n_mar" the same with 20% of y missing completely at random (seed 1).
MEDIATION_GRID = [f"mediation_{j}_{n}" for j in (100, 500, 5000) for n in (10, 20, 50)]
CONFIGS = ([(name, "collapsed", "numpyro") for name in MEDIATION_GRID]
           + [("mediation_100_20", "latent", "numpyro"), ("mediation_500_20", "latent", "numpyro")]
           + [("mediation_100_20_mar", "collapsed", "numpyro"), ("mediation_100_20_mar", "latent", "numpyro")]
           + [("demo_twolevel", "collapsed", "numpyro"), ("demo_twolevel", "latent", "numpyro"),
              ("demo_twolevel_mar", "collapsed", "numpyro"), ("demo_twolevel_mar", "latent", "numpyro"),
              ("demo_twolevel", "collapsed", "nutpie"), ("demo_twolevel", "collapsed", "pymc"),
              ("mplus_ex9_6", "collapsed", "numpyro"), ("mplus_ex9_6", "latent", "numpyro")]
           # issue 15: the brms reference's ordinal regression, and a two-level CFA of 6 four-category
           # items, 200 clusters of 15 (simulated in ordinal_cfa_data below)
           + [("ordinal_twolevel", "latent", "numpyro"), ("ordinal_cfa_200_15", "latent", "numpyro")])

CHILD = r"""
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
start = time.perf_counter()
import bayes_msem as bm
name, engine, sampler, draws = sys.argv[1:5]
if name.startswith("mediation_"):
    sys.path.insert(0, "benchmarks")
    from mediation_data import simulate_mediation_111
    clusters, size = map(int, name.split("_")[1:3])
    data = simulate_mediation_111(clusters, size)
    if name.endswith("_mar"):
        import numpy as np
        data.loc[np.random.default_rng(1).uniform(size=len(data)) < 0.2, "y"] = np.nan
    model = bm.Model(bm.example_model("mediation_111_random_slopes"), data,
                     cluster="cluster", engine=engine, centering={"m": "none"})
elif name.startswith("ordinal_cfa_"):
    sys.path.insert(0, "benchmarks")
    from ordinal_data import ITEMS, ORDINAL_CFA, simulate_ordinal_cfa
    clusters, size = map(int, name.split("_")[2:4])
    model = bm.Model(ORDINAL_CFA, simulate_ordinal_cfa(clusters, size), cluster="cluster", engine=engine,
                     ordered=ITEMS)
else:
    cluster = {"demo_twolevel": "cluster", "demo_twolevel_mar": "cluster", "mplus_ex9_6": "clus",
               "ordinal_twolevel": "cluster"}[name]
    options = {"ordered": ["y"]} if name.startswith("ordinal") else {}
    model = bm.Model(bm.example_model(name), bm.example_data(name), cluster=cluster, engine=engine, **options)
fit_start = time.perf_counter()
result = model.fit(int(draws), tune=int(draws), random_seed=1, progressbar=False, sampler=sampler)
sampling = time.perf_counter() - fit_start
summary = result.summary()
wall = time.perf_counter() - start
estimated = summary[summary.free]
print(json.dumps({"wall_s": wall, "min_ess_bulk": float(estimated.ess_bulk.min()),
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "sampling_s": sampling,
                  "divergences": result.diagnostics()["divergences"]}))
"""


def run(config, draws: int = 1000) -> dict:
    output = subprocess.run([sys.executable, "-c", CHILD, *config, str(draws)], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).parents[1])
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="write the table into benchmarks/README.md")
    parser.add_argument("--only", default="", help="run only the configurations whose data name starts with this")
    parser.add_argument("--sampler", default="", help="run only the configurations with this sampler")
    parser.add_argument("--draws", type=int, default=1000, help="draws and warm-up per chain (4 chains)")
    args = parser.parse_args()
    lines = [f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"Python {platform.python_version()}; 4 chains x {args.draws} draws + {args.draws} warm-up; wall time from "
             "`import bayes_msem` to the summary table, compilation included; fit = Model.fit alone.",
             "", "| data | engine | sampler | wall s | fit s | min ESS bulk | min ESS / s | peak MiB | divergences |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for config in [c for c in CONFIGS if c[0].startswith(args.only) and c[2].startswith(args.sampler)]:
        r = run(config, args.draws)
        lines.append(f"| {config[0]} | {config[1]} | {config[2]} | {r['wall_s']:.1f} | {r['sampling_s']:.1f} | "
                     f"{r['min_ess_bulk']:.0f} | {r['min_ess_bulk'] / r['wall_s']:.1f} | {r['peak_mib']:.0f} | "
                     f"{r['divergences']} |")
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    print(table)
    if args.write and args.draws == 1000:
        write_rows(lines[0], lines[4:])


def write_rows(header: str, rows: list[str]) -> None:
    """Put ``rows`` into the table in README.md, replacing rows of the same
    data, engine and sampler (so a subset can be rerun)."""
    readme = Path(__file__).with_name("README.md")
    text = readme.read_text()
    start, end = text.index("<!-- table -->"), text.index("<!-- /table -->")
    old = [line for line in text[start:end].splitlines() if line.startswith("| ") and not line.startswith("| data")]
    key = lambda line: tuple(cell.strip() for cell in line.split("|")[1:4])  # noqa: E731
    merged = {key(line): line for line in old if not line.startswith("| ---")}
    merged.update({key(line): line for line in rows})
    order = [(c[0], c[1], c[2]) for c in CONFIGS]
    body = sorted(merged.values(), key=lambda line: order.index(key(line)) if key(line) in order else len(order))
    table = "\n".join([header, "", "| data | engine | sampler | wall s | fit s | min ESS bulk | min ESS / s | peak MiB "
                       "| divergences |", "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |", *body])
    readme.write_text(text[:start] + "<!-- table -->\n" + table + "\n" + text[end:])


if __name__ == "__main__":
    main()
