"""Wall time of the whole default workflow from a clean results/, and per rule.

    python benchmarks/workflow.py [--cores 2] [--keep DIR] [-- extra snakemake arguments]

Copies the working tree's tracked and untracked-but-not-ignored files (no results/, no
resources/phantom/) into a fresh folder, runs Snakemake there with this Python's snakemake,
then prints the per-rule table from the run's `benchmark:` files (rule_times.py), the total
wall time and the heaviest job's peak memory. Your own results/ are never touched.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rule_times import rule_times

ROOT = Path(__file__).resolve().parents[1]


def copy_tree(dest: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted but not yet committed
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            os.symlink(os.readlink(source), target)
        else:
            shutil.copy2(source, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", default="all")
    parser.add_argument("--keep", help="run in this (new) folder and keep it, instead of a temporary one")
    parser.add_argument("snakemake_args", nargs="*", help="after --: passed to snakemake (targets, --configfile ...)")
    args = parser.parse_args()
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="namd-bench-"))
    if args.keep and workdir.exists() and any(workdir.iterdir()):
        raise SystemExit(f"--keep {workdir}: folder exists and is not empty")
    copy_tree(workdir)
    snakemake = Path(sys.executable).with_name("snakemake")
    command = [str(snakemake), "--cores", str(args.cores), *args.snakemake_args]
    print(f"# {' '.join(command)} in {workdir}\n# {platform.node()}: {os.cpu_count()} cores, "
          f"{platform.processor() or platform.machine()}, Python {platform.python_version()}", flush=True)
    start = time.perf_counter()
    with open(workdir / "snakemake.log", "w") as log:
        done = subprocess.run(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"snakemake failed (rc {done.returncode}); see {workdir / 'snakemake.log'}")
    table = rule_times(workdir / "benchmarks" / "out")
    print(table.to_markdown(index=False, floatfmt=".1f"))
    print(f"\nwhole workflow: {wall / 60:.1f} min wall ({wall:.0f} s) on {args.cores} cores; {len(table)} jobs with a "
          f"benchmark file add up to {table.cpu_s.sum() / 60:.1f} CPU-min; heaviest job "
          f"{table.loc[table.max_rss_mb.idxmax(), 'job']} at {table.max_rss_mb.max():.0f} MB RSS")
    if not args.keep:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
