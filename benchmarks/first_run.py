"""First and repeated runs of Demo.twolevel, from the shell, as a new user meets them.

    python benchmarks/first_run.py

Each command runs in a fresh process: "cold" with an empty compilation cache,
a terminal emulated by ``script`` (util-linux) where one is needed,
"warm" the same command again, "off" with the cache off
(``BAYES_MSEM_CACHE_DIR=off``). Prints a Markdown table of wall times
(seconds, from process start to exit). Takes about 3 minutes on 2 cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPORT_TO_SUMMARY = """import bayes_msem as bm
model = bm.Model(bm.example_model("demo_twolevel"), bm.example_data("demo_twolevel"), cluster="cluster")
print(model.fit(draws=1000, tune=1000, chains=4, random_seed=2026, progressbar=False))
"""
COMMANDS = {
    "`python examples/fit_demo.py` in a terminal (4 chains x 1000 draws, progress bars)": [
        "script", "-qec", f"{sys.executable} examples/fit_demo.py", "/dev/null"],
    "`python examples/fit_demo.py` with output to a file (progress lines, no bars)": [sys.executable,
                                                                                     "examples/fit_demo.py"],
    "the same fit without progress lines, import to summary": [sys.executable, "-c", IMPORT_TO_SUMMARY],
}


def wall_time(command: list[str], cache: str) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=dict(os.environ, BAYES_MSEM_CACHE_DIR=cache),
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return time.perf_counter() - start


def main() -> None:
    print(f"Machine: {os.uname().machine}, {os.cpu_count()} cores, Python {sys.version.split()[0]}\n")
    print("| command | cold | warm | off |\n| --- | ---: | ---: | ---: |")
    for name, command in COMMANDS.items():
        with tempfile.TemporaryDirectory() as cache:
            cold, warm = wall_time(command, cache), wall_time(command, cache)
        off = wall_time(command, "off")
        print(f"| {name} | {cold:.1f} s | {warm:.1f} s | {off:.1f} s |", flush=True)


if __name__ == "__main__":
    main()
