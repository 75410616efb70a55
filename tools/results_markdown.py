"""A finished run's Table 1 and progression table as Markdown, the way README quotes them.

    .venv/bin/python tools/results_markdown.py [RESULTS]     # default: results

Reads RESULTS/table1.csv, RESULTS/eval/significance.csv and RESULTS/progression.csv (the files the
`table1` and `progression` rules write) and prints two Markdown tables: per row, DFD-ViT, FD-ViT,
AUROC and AUPRC (mean ± SD over K), the AUROC of the seed-mean probability with its 95% bootstrap
interval and the Holm-adjusted DeLong p against the reference; then the predicted diameter change
by label, Spearman, MAE, growth AUROC and calibration (mean ± SD over K), the growth AUROC of each
pair's mean change over K (issue 13's target) and the crops read as no nodule. So every figure
README shows comes from a command.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd


def mean_sd(mean, sd, digits: int = 3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    text = f"{mean:.{digits}f}"
    return text if sd is None or (isinstance(sd, float) and math.isnan(sd)) else f"{text} ± {sd:.{digits}f}"


def p_value(p) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "-"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def table1_markdown(results: Path) -> str:
    table = pd.read_csv(results / "table1.csv")
    significance = pd.read_csv(results / "eval" / "significance.csv").set_index("row")
    lines = ["| row | DFD-ViT ↓ | FD-ViT ↓ | AUROC ↑ | AUPRC ↑ | AUROC of seed-mean prob. [95% CI] | Holm p vs "
             f"{significance['reference'].iloc[0]} |", "|---|---|---|---|---|---|---|"]
    for _, row in table.iterrows():
        if row["method"] in significance.index:
            s = significance.loc[row["method"]]
            pooled, p = f"{s['auroc']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]", p_value(s["p_adjusted"])
        else:
            pooled, p = "-", "-"
        cells = [mean_sd(row[f"{m}_mean"], row[f"{m}_std"]) for m in ("lpips", "fid", "auroc", "auprc")]
        lines.append(f"| {row['method']} | " + " | ".join(cells) + f" | {pooled} | {p} |")
    return "\n".join(lines)


def progression_markdown(results: Path) -> str:
    table = pd.read_csv(results / "progression.csv")
    lines = ["| row | Δd malignant (mm) | Δd benign (mm) | Spearman ρ | MAE d₁ (mm) | growth AUROC "
             "| growth AUROC of mean Δd over K | mean Δd / true | read as no nodule |",
             "|---|---|---|---|---|---|---|---|---|"]
    for _, row in table.iterrows():
        cells = [mean_sd(row[f"{m}_mean"], row[f"{m}_std"], 2) for m in
                 ("change_malignant_mm", "change_benign_mm", "spearman", "mae_followup_mm", "auroc")]
        cells.append(mean_sd(row["auroc_mean_over_k"], None))  # issue 13's target: the pair's mean over K
        cells.append(mean_sd(row["calibration_mean"], row["calibration_std"], 2))
        lines.append(f"| {row['title']} | " + " | ".join(cells) +
                     f" | {int(row['n_no_nodule'])} of {int(row['n_crops'])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, nargs="?", default=Path("results"))
    args = parser.parse_args()
    print(table1_markdown(args.results))
    print()
    print(progression_markdown(args.results))


if __name__ == "__main__":
    main()
