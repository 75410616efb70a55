"""Start-up cost of every rule's script: the seconds a job spends importing before it does any work.

    python benchmarks/startup.py [--repeats 5] [scripts/evaluate_generated.py ...]

Each Snakemake job is a fresh Python process, so what its script imports is paid once per job (81
jobs in the default run). For each script this imports what the script imports at its top level
(parsed with `ast`, plus `snakemake.script`, which Snakemake's preamble loads) in a new
interpreter, `--repeats` times, and prints the fastest and the median wall time; the fastest is
the least disturbed by other load on the machine.
"""

from __future__ import annotations

import argparse
import ast
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def top_level_imports(script: Path) -> list[str]:
    """Modules a script imports at its top level, in order."""
    modules = []
    for node in ast.parse(script.read_text()).body:
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.append(node.module)
    return modules


def import_seconds(modules: list[str], repeats: int) -> list[float]:
    code = "import snakemake.script\n" + "".join(f"import {m}\n" for m in modules)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scripts", nargs="*", type=Path, help="rule scripts (default: every scripts/*.py)")
    parser.add_argument("--repeats", type=int, default=5, help="interpreters started per script")
    args = parser.parse_args(argv)
    scripts = args.scripts or sorted(SCRIPTS.glob("*.py"))
    baseline = min(import_seconds([], args.repeats))
    rows = []
    for script in scripts:
        times = import_seconds(top_level_imports(script), args.repeats)
        rows.append({"script": script.name, "fastest_s": min(times), "median_s": statistics.median(times)})
    table = pd.DataFrame(rows).sort_values("fastest_s", ascending=False)
    print(f"an interpreter with snakemake.script alone: {baseline:.2f} s")
    print(table.to_markdown(index=False, floatfmt=".2f"))
    print(f"mean over scripts: fastest {table['fastest_s'].mean():.2f} s, median {table['median_s'].mean():.2f} s")


if __name__ == "__main__":
    main()
