"""Per-rule wall time, CPU time and peak memory of a workflow run, from Snakemake's benchmark files.

    python benchmarks/rule_times.py [benchmarks/out]

Prints a Markdown table sorted by wall time and the totals; reads only what `benchmark:`
directives wrote, so every number comes from a real run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd


def rule_times(folder: str | Path = "benchmarks/out") -> pd.DataFrame:
    rows = []
    for path in sorted(Path(folder).glob("*.tsv")):
        last = pd.read_csv(path, sep="\t").iloc[-1]
        rows.append({"job": path.stem, "wall_s": float(last["s"]), "cpu_s": float(last["cpu_time"]),
                     "max_rss_mb": float(last["max_rss"])})
    if not rows:
        raise SystemExit(f"no benchmark files in {folder}: run the workflow first")
    return pd.DataFrame(rows).sort_values("wall_s", ascending=False).reset_index(drop=True)


def main(argv: list[str]) -> None:
    table = rule_times(argv[0] if argv else "benchmarks/out")
    print(table.to_markdown(index=False, floatfmt=".1f"))
    print(f"\n{len(table)} jobs with a benchmark: wall {table.wall_s.sum() / 60:.1f} min, "
          f"CPU {table.cpu_s.sum() / 60:.1f} min; heaviest job {table.loc[table.max_rss_mb.idxmax(), 'job']} "
          f"at {table.max_rss_mb.max():.0f} MB RSS")


if __name__ == "__main__":
    main(sys.argv[1:])
