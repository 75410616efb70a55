"""README's default-run Table 1 and progression table (the commit README names) beside another run's.

    .venv/bin/python tools/results_markdown.py results > run.md
    .venv/bin/python tools/compare_default_run.py run.md

Prints per row both AUROCs and their difference, and both predicted diameter changes (malignant /
benign), then the mean and largest |difference| over the rows that depend on training (all but
Brock and Lung-RADS). How far a change of machine moves the default run: README, "Results of the
default run".
"""

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Results of the default run"
UNTRAINED = ("Brock", "Lung-RADS")


def tables(text: str) -> list[dict[str, list[str]]]:
    """The markdown tables of `text` in order, each {first cell: the row's cells}."""
    out, current = [], None
    for line in text.splitlines():
        if line.startswith("| row"):
            current = {}
            out.append(current)
        elif line.startswith("| ") and current is not None and "---" not in line:
            cells = [c.strip() for c in line.strip("|").split("|")]
            current[cells[0]] = cells
        elif not line.startswith("|"):
            current = None
    return out


def first_number(cell: str) -> float:
    return float(cell.split()[0])


def main() -> None:
    readme = README.read_text()
    section = readme[readme.index(SECTION):]
    ours_table1, ours_progression = tables(section)[:2]
    run_table1, run_progression = tables(Path(sys.argv[1]).read_text())[:2]
    commit = re.search(r"at commit ([0-9a-f]{7})", section)
    print(f"| row | AUROC, README ({commit.group(1) if commit else 'README'}) | AUROC, this run | difference "
          "| Δd malignant / benign (mm), README | this run |")
    print("|---|---:|---:|---:|---|---|")
    trained = []
    for name, cells in ours_table1.items():
        before, after = first_number(cells[3]), first_number(run_table1[name][3])
        if not name.startswith(UNTRAINED):
            trained.append(abs(after - before))
        growth = "- | -"
        if name in ours_progression:
            a, b = ours_progression[name], run_progression[name]
            growth = f"{a[1].split()[0]} / {a[2].split()[0]} | {b[1].split()[0]} / {b[2].split()[0]}"
        print(f"| {name} | {before:.3f} | {after:.3f} | {after - before:+.3f} | {growth} |")
    print(f"\nmean |difference| over the {len(trained)} rows that depend on training: "
          f"{sum(trained) / len(trained):.3f}, largest {max(trained):.3f}")


if __name__ == "__main__":
    main()
