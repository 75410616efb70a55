"""Does a predicted follow-up grow where the real nodule grew? Metrics, table and figure of the readout.

Every row is a set of follow-up diameters (mm, namd.evaluation.readout) for the test pairs, one
column per sampling seed; its predicted change is that minus the readout on the real baseline,
and the true change is the readout on the real follow-up minus the same baseline readout, so the
readout's own bias cancels in both. Per seed: the mean predicted change of malignant and of
benign pairs, Spearman of predicted vs true change, MAE of the predicted follow-up diameter
against the real follow-up's, AUROC of the predicted change as a malignancy score, and the
calibration ratio (mean predicted change over all pairs / true mean change). The table reports
their mean and SD (ddof = 1) over the K seeds, like Table 1, and the same metrics once more on
each pair's predicted change averaged over the K samples ("mean over K"), which is what a
calibrated stochastic generator should get right. A crop read as no nodule at its centre has
diameter 0 and is counted (``n_no_nodule``), never dropped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from namd.evaluation.figures import LABEL_COLOURS, LABEL_NAMES, save_figure
from namd.evaluation.table import latex_escape
from namd.io import atomic_output

METRICS = ("change_malignant_mm", "change_benign_mm", "spearman", "mae_followup_mm", "auroc", "calibration")
HEADERS = {
    "change_malignant_mm": r"$\Delta d$ malig. (mm)",
    "change_benign_mm": r"$\Delta d$ benign (mm)",
    "spearman": r"Spearman $\rho$ $\uparrow$",
    "mae_followup_mm": r"MAE $d_{1}$ (mm) $\downarrow$",
    "auroc": r"AUROC $\uparrow$",
    "calibration": r"$\overline{\Delta d} / \overline{\Delta d}_{\text{true}}$",
}
MEAN_OVER_K = ("spearman", "auroc", "calibration")


def change_metrics(predicted_change: np.ndarray, true_change: np.ndarray, predicted_followup: np.ndarray,
                   true_followup: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The metrics of one set of predicted changes (one per pair); NaN where undefined (a constant score)."""
    labels = np.asarray(labels, dtype=int)
    constant = np.ptp(predicted_change) == 0
    true_mean = float(np.mean(true_change))
    return {
        "change_malignant_mm": float(np.mean(predicted_change[labels == 1])) if (labels == 1).any() else math.nan,
        "change_benign_mm": float(np.mean(predicted_change[labels == 0])) if (labels == 0).any() else math.nan,
        "spearman": (math.nan if constant or np.ptp(true_change) == 0
                     else float(spearmanr(predicted_change, true_change)[0])),
        "mae_followup_mm": float(np.mean(np.abs(predicted_followup - true_followup))),
        "auroc": float(roc_auc_score(labels, predicted_change)) if len(set(labels)) == 2 else math.nan,
        "calibration": float(np.mean(predicted_change)) / true_mean if true_mean != 0 else math.nan,
    }


def row_metrics(name: str, followup: np.ndarray, seeds: Sequence[int], baseline: np.ndarray,
                real_followup: np.ndarray, labels: np.ndarray) -> tuple[pd.DataFrame, dict]:
    """(per-seed metrics, summary row) of one row's follow-up diameters shaped (N pairs, K seeds)."""
    followup = np.asarray(followup, dtype=float)
    n = len(baseline)
    if followup.ndim != 2 or followup.shape != (n, len(seeds)):
        raise ValueError(f"row {name!r}: diameters have shape {followup.shape}, expected ({n}, {len(seeds)})")
    true_change = real_followup - baseline
    per_seed = pd.DataFrame([
        {"row": name, "seed": int(seed), **change_metrics(followup[:, k] - baseline, true_change, followup[:, k],
                                                            real_followup, labels)}
        for k, seed in enumerate(seeds)
    ])
    mean_k = change_metrics(followup.mean(axis=1) - baseline, true_change, followup.mean(axis=1), real_followup, labels)
    summary = {"row": name, "n_pairs": n, "n_malignant": int(np.sum(labels)), "n_seeds": len(seeds),
               "n_no_nodule": int((followup == 0).sum()), "n_crops": int(followup.size)}
    for metric in METRICS:
        summary[f"{metric}_mean"] = float(per_seed[metric].mean())
        summary[f"{metric}_std"] = float(per_seed[metric].std(ddof=1)) if len(seeds) > 1 else math.nan
        summary[f"{metric}_mean_over_k"] = mean_k[metric]
    summary["true_change_malignant_mm"] = float(true_change[labels == 1].mean()) if (labels == 1).any() else math.nan
    summary["true_change_benign_mm"] = float(true_change[labels == 0].mean()) if (labels == 0).any() else math.nan
    summary["true_change_mm"] = float(true_change.mean())
    return per_seed, summary


def _cell(mean: float, std: float, decimals: int = 2) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.{decimals}f}" + ("" if math.isnan(std) else f" $\\pm$ {std:.{decimals}f}")


def to_latex(table: pd.DataFrame, path, titles: Mapping[str, str], *, readout_note: str) -> str:
    """Booktabs table: per-seed metrics as mean $\\pm$ SD over K, then the mean-over-K metrics."""
    n_cols = len(METRICS) + len(MEAN_OVER_K)
    first = table.iloc[0]
    lines = [
        "\\begin{table}[t]", "\\centering",
        "\\caption{Predicted nodule growth on the test pairs, measured by the progression readout on each "
        "predicted follow-up. $\\Delta d$: long-axis diameter change against the real baseline; mean $\\pm$ SD "
        "over the K sampling seeds, then the same metrics on each pair's change averaged over K.}",
        "\\label{tab:progression}",
        "\\begin{tabular}{l" + "c" * n_cols + "}", "\\toprule",
        f" & \\multicolumn{{{len(METRICS)}}}{{c}}{{Per sample (mean $\\pm$ SD over K)}} & "
        f"\\multicolumn{{{len(MEAN_OVER_K)}}}{{c}}{{Mean over K}} \\\\",
        f"\\cmidrule(lr){{2-{len(METRICS) + 1}}} \\cmidrule(lr){{{len(METRICS) + 2}-{n_cols + 1}}}",
        "Row & " + " & ".join([*(HEADERS[m] for m in METRICS), *(HEADERS[m] for m in MEAN_OVER_K)]) + " \\\\",
        "\\midrule",
    ]
    for row in table.to_dict("records"):
        cells = [_cell(row[f"{m}_mean"], row[f"{m}_std"]) for m in METRICS]
        cells += [_cell(row[f"{m}_mean_over_k"], math.nan) for m in MEAN_OVER_K]
        lines.append(" & ".join([titles.get(row["row"], latex_escape(row["row"])), *cells]) + " \\\\")
    missing = table.loc[table["n_no_nodule"] > 0, ["row", "n_no_nodule", "n_crops"]]
    no_nodule = "; ".join(f"{titles.get(r.row, latex_escape(r.row))}: {r.n_no_nodule} of {r.n_crops}"
                          for r in missing.itertuples()) or "none"
    notes = [
        f"{int(first['n_pairs'])} test pairs ({int(first['n_malignant'])} malignant). True change (real follow-up "
        f"minus real baseline, same readout): malignant {first['true_change_malignant_mm']:.2f} mm, benign "
        f"{first['true_change_benign_mm']:.2f} mm, all {first['true_change_mm']:.2f} mm.",
        f"Readout: {latex_escape(readout_note)}",
        f"Crops read as no nodule at the centre (diameter 0): {no_nodule}.",
    ]
    lines += ["\\bottomrule", "\\end{tabular}", "\\par\\smallskip", "{\\footnotesize",
              *(f"{note}\\par" for note in notes), "}", "\\end{table}"]
    text = "\n".join(lines) + "\n"
    with atomic_output(path) as handle:
        handle.write(text.encode("utf-8"))
    return text


def figure(points: pd.DataFrame, order: Sequence[str], titles: Mapping[str, str], out_png, out_pdf) -> None:
    """Predicted vs true diameter change, one panel per row (mean over K per pair), identity line."""
    n_cols = min(4, len(order))
    n_rows = math.ceil(len(order) / n_cols)
    limits = np.nanpercentile(np.r_[points["true_change_mm"], points["predicted_change_mm"]], [1, 99])
    pad = 0.08 * (limits[1] - limits[0] + 1e-9)
    low, high = limits[0] - pad, limits[1] + pad
    with sns.axes_style("whitegrid"), sns.plotting_context("paper"):
        fig = Figure(figsize=(3.0 * n_cols, 2.9 * n_rows), layout="constrained")
        axes = fig.subplots(n_rows, n_cols, squeeze=False, sharex=True, sharey=True)
        for ax, name in zip(axes.flat, order):
            part = points[points["row"] == name]
            ax.plot([low, high], [low, high], color="0.55", lw=0.9, ls="--", zorder=1)
            ax.axhline(0, color="0.8", lw=0.6, zorder=0)
            for label in (0, 1):
                sel = part[part["label"] == label]
                ax.errorbar(sel["true_change_mm"], sel["predicted_change_mm"], yerr=sel["predicted_change_sd_mm"],
                            fmt="o", ms=3.5, lw=0.6, alpha=0.8, color=LABEL_COLOURS[label], label=LABEL_NAMES[label],
                            elinewidth=0.5, capsize=0, zorder=2)
            varies = part["predicted_change_mm"].nunique() > 1
            rho = spearmanr(part["predicted_change_mm"], part["true_change_mm"])[0] if varies else math.nan
            ax.set_title(titles.get(name, name), fontsize=9)
            ax.text(0.04, 0.95, "ρ = -" if math.isnan(rho) else f"ρ = {rho:.2f}", transform=ax.transAxes,
                    va="top", fontsize=8)
            ax.set_xlim(low, high), ax.set_ylim(low, high)
        for ax in axes.flat[len(order):]:
            ax.set_visible(False)
        for ax in axes[-1]:
            ax.set_xlabel("true Δd (mm)")
        for ax in axes[:, 0]:
            ax.set_ylabel("predicted Δd (mm)")
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=2, frameon=False)
        fig.suptitle("Predicted vs true long-axis diameter change (test pairs; mean ± SD over K samples)", fontsize=10)
        save_figure(fig, out_png, out_pdf)


def figure_points(name: str, followup: np.ndarray, baseline: np.ndarray, real_followup: np.ndarray,
                  labels: np.ndarray, pair_ids) -> pd.DataFrame:
    """One point per pair for the figure: true change, predicted change mean and SD over K."""
    change = np.asarray(followup, dtype=float) - baseline[:, None]
    return pd.DataFrame({"row": name, "pair_id": np.asarray(pair_ids, dtype=str), "label": labels,
                         "true_change_mm": real_followup - baseline, "predicted_change_mm": change.mean(axis=1),
                         "predicted_change_sd_mm": change.std(axis=1)})


def write_csv(frame: pd.DataFrame, path: str | Path) -> None:
    with atomic_output(path) as handle:
        frame.to_csv(handle, index=False)
