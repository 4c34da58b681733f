"""Speed of the engines on the shipped data sets.

Each configuration runs in a fresh subprocess (so compilation is included and
peak memory is the process's own), with default settings: 4 chains x 1000
draws after 1000 warm-up. Prints a markdown table and, with --write, puts it
into benchmarks/README.md.

    python benchmarks/run_benchmarks.py --write
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

CONFIGS = [("demo_twolevel", "cluster", "collapsed", "numpyro"), ("demo_twolevel", "cluster", "latent", "numpyro"),
           ("demo_twolevel", "cluster", "collapsed", "nutpie"), ("demo_twolevel", "cluster", "collapsed", "pymc"),
           ("mplus_ex9_6", "clus", "collapsed", "numpyro"), ("mplus_ex9_6", "clus", "latent", "numpyro")]

CHILD = r"""
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
start = time.perf_counter()
import bayes_msem as bm
name, cluster, engine, sampler = sys.argv[1:5]
model = bm.Model(bm.example_model(name), bm.example_data(name), cluster=cluster, engine=engine)
fit_start = time.perf_counter()
result = model.fit(random_seed=1, progressbar=False, sampler=sampler)
sampling = time.perf_counter() - fit_start
summary = result.summary()
wall = time.perf_counter() - start
estimated = summary[summary.free]
print(json.dumps({"wall_s": wall, "min_ess_bulk": float(estimated.ess_bulk.min()),
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "sampling_s": sampling,
                  "divergences": result.diagnostics()["divergences"]}))
"""


def run(config) -> dict:
    output = subprocess.run([sys.executable, "-c", CHILD, *config], capture_output=True, text=True, check=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="write the table into benchmarks/README.md")
    args = parser.parse_args()
    lines = [f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"Python {platform.python_version()}; 4 chains x 1000 draws + 1000 warm-up; wall time from "
             "`import bayes_msem` to the summary table, compilation included; fit = Model.fit alone.",
             "", "| data | engine | sampler | wall s | fit s | min ESS bulk | min ESS / s | peak MiB | divergences |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for config in CONFIGS:
        r = run(config)
        lines.append(f"| {config[0]} | {config[2]} | {config[3]} | {r['wall_s']:.1f} | {r['sampling_s']:.1f} | "
                     f"{r['min_ess_bulk']:.0f} | {r['min_ess_bulk'] / r['wall_s']:.1f} | {r['peak_mib']:.0f} | "
                     f"{r['divergences']} |")
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    print(table)
    if args.write:
        readme = Path(__file__).with_name("README.md")
        readme.write_text("# Benchmarks\n\nRun by hand: `python benchmarks/run_benchmarks.py --write`.\n\n" + table + "\n")


if __name__ == "__main__":
    main()
