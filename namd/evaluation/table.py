"""Table 1 of the paper: image quality and diagnosis per method, as booktabs LaTeX and a CSV twin.

Bold marks the best and underline the second-best value of each column among the generated rows
(the paper does not rank the real-image rows), lower being better for LPIPS/FID. Values are
compared as printed (rounded to `decimals`), so rows that read the same share a rank: all tied
best rows are bold and the next distinct value is underlined.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from namd.evaluation.metrics import FID_NAME, LPIPS_NAME, EvaluationInputError, summarise
from namd.io import atomic_output

if TYPE_CHECKING:  # image_metrics pulls in torch; the table itself does not need it
    from namd.evaluation.image_metrics import ImageMetricResult

GROUPS = ("Real Image Baselines", "Deterministic Methods", "Stochastic Methods", "NAMD", "Ablation")
UNRANKED_GROUPS = ("Real Image Baselines",)
# The paper heads the first three groups with an italic line; NAMD and its ablation follow a rule only.
HEADED_GROUPS = ("Real Image Baselines", "Deterministic Methods", "Stochastic Methods")
METRIC_KEYS = ("lpips", "fid", "auroc", "auprc")
LOWER_IS_BETTER = {"lpips": True, "fid": True, "auroc": False, "auprc": False}
PAPER_METRIC_NAMES = {"lpips": LPIPS_NAME, "fid": FID_NAME, "auroc": "AUROC", "auprc": "AUPRC"}
BEST, SECOND = "best", "second"
NOT_APPLICABLE = "-"
_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


@dataclass(frozen=True)
class RowResult:
    """One Table-1 line. std None for deterministic rows; metric means None where not applicable.

    lpips_name / fid_name are the metrics actually computed (e.g. a labelled stand-in);
    latex_name may carry LaTeX markup (e.g. the ablation's $\\mathcal{L}_{align}$), else `name` is escaped.
    """

    name: str
    group: str
    auroc_mean: float
    auprc_mean: float
    auroc_std: float | None = None
    auprc_std: float | None = None
    lpips_mean: float | None = None
    lpips_std: float | None = None
    fid_mean: float | None = None
    fid_std: float | None = None
    lpips_name: str = LPIPS_NAME
    fid_name: str = FID_NAME
    n_seeds: int = 1
    latex_name: str | None = None


def row_result(
    name: str,
    group: str,
    diagnosis_per_seed: pd.DataFrame,
    image_results: Mapping[str, ImageMetricResult] | None = None,
    latex_name: str | None = None,
) -> RowResult:
    """RowResult from metrics.diagnosis_metrics and image_metrics.image_quality outputs of one method.

    image_results is image_quality's dict ("lpips", "fid"); stds are dropped for a single seed so
    deterministic rows print one value.
    """
    summary = summarise(diagnosis_per_seed)
    n_seeds = int(summary.loc["auroc", "n_seeds"])
    values: dict[str, float | str | None] = {}
    for key in ("auroc", "auprc"):
        values[f"{key}_mean"] = float(summary.loc[key, "mean"])
        values[f"{key}_std"] = float(summary.loc[key, "std"]) if n_seeds > 1 else None
    for key, result in (image_results or {}).items():
        if key not in ("lpips", "fid"):
            raise EvaluationInputError(f"row {name!r}: unknown image metric key {key!r} (lpips, fid)")
        if len(result.per_seed) != n_seeds:
            raise EvaluationInputError(
                f"row {name!r}: {result.name} has {len(result.per_seed)} seeds but the diagnosis metrics have {n_seeds}"
            )
        values[f"{key}_mean"] = result.mean
        values[f"{key}_std"] = result.std if n_seeds > 1 else None
        values[f"{key}_name"] = result.name
    return RowResult(name=name, group=group, n_seeds=n_seeds, latex_name=latex_name, **values)


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)


def _present(value: float | None) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _check_row(row: RowResult) -> None:
    if row.group not in GROUPS:
        raise EvaluationInputError(f"Table 1 row {row.name!r}: group {row.group!r} is not one of {GROUPS}")
    if row.n_seeds < 1:
        raise EvaluationInputError(f"Table 1 row {row.name!r}: n_seeds must be >= 1, got {row.n_seeds}")
    for key in METRIC_KEYS:
        mean, std = getattr(row, f"{key}_mean"), getattr(row, f"{key}_std")
        if _present(mean) and not math.isfinite(mean):
            raise EvaluationInputError(f"Table 1 row {row.name!r}: {key}_mean is {mean}")
        if _present(std) and not _present(mean):
            raise EvaluationInputError(f"Table 1 row {row.name!r}: {key}_std given without {key}_mean")
        if _present(std) and row.n_seeds < 2:
            raise EvaluationInputError(
                f"Table 1 row {row.name!r}: {key}_std given but n_seeds = {row.n_seeds}; a std needs K >= 2 seeds"
            )
    for key in ("auroc", "auprc"):
        if not _present(getattr(row, f"{key}_mean")):
            raise EvaluationInputError(f"Table 1 row {row.name!r}: {key}_mean is required")


def rank_marks(values: pd.Series, lower_is_better: bool, eligible: pd.Series, decimals: int) -> pd.Series:
    """'best' / 'second' / '' per row, on the values as printed; ties share a rank."""
    shown = values.where(eligible).astype(float).round(decimals)
    distinct = sorted(shown.dropna().unique(), reverse=not lower_is_better)
    marks = pd.Series("", index=values.index, dtype=object)
    for mark, value in zip((BEST, SECOND), distinct):
        marks[shown == value] = mark
    return marks


def build_table1(rows: Sequence[RowResult], decimals: int = 3) -> pd.DataFrame:
    """Rows in the paper's group order with per-column metric names, means, stds and rank marks."""
    if not rows:
        raise EvaluationInputError("build_table1: no rows")
    names = [r.name for r in rows]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise EvaluationInputError(f"build_table1: duplicate method name(s) {duplicates}")
    for row in rows:
        _check_row(row)
    ordered = sorted(rows, key=lambda r: GROUPS.index(r.group))
    records = []
    for row in ordered:
        record = {
            "group": row.group,
            "method": row.name,
            "latex_method": row.latex_name or latex_escape(row.name),
            "n_seeds": row.n_seeds,
        }
        for key in METRIC_KEYS:
            mean = getattr(row, f"{key}_mean")
            name = getattr(row, f"{key}_name", PAPER_METRIC_NAMES[key])
            record[f"{key}_metric"] = name if _present(mean) else None
            record[f"{key}_mean"] = float(mean) if _present(mean) else math.nan
            std = getattr(row, f"{key}_std")
            record[f"{key}_std"] = float(std) if _present(std) else math.nan
        records.append(record)
    table = pd.DataFrame(records)
    eligible = ~table["group"].isin(UNRANKED_GROUPS)
    for key in METRIC_KEYS:
        used = table[f"{key}_metric"].dropna()
        if used.nunique() > 1:
            by_name = used.groupby(used).groups
            raise EvaluationInputError(
                f"build_table1: column {key} mixes metrics "
                + "; ".join(f"{name}: {list(table.loc[idx, 'method'])}" for name, idx in by_name.items())
                + " - values of different metrics cannot share a column or a ranking"
            )
        table[f"{key}_mark"] = rank_marks(table[f"{key}_mean"], LOWER_IS_BETTER[key], eligible, decimals)
    return table


def column_metric_names(table: pd.DataFrame) -> dict[str, str]:
    """Name printed over each column: the metric actually computed, the paper's name if none was."""
    names = {}
    for key in METRIC_KEYS:
        used = table[f"{key}_metric"].dropna().unique()
        names[key] = str(used[0]) if len(used) else PAPER_METRIC_NAMES[key]
    return names


def stand_in_names(table: pd.DataFrame) -> list[str]:
    names = column_metric_names(table)
    return [names[key] for key in METRIC_KEYS if names[key] != PAPER_METRIC_NAMES[key]]


def _cell(mean: float, std: float, mark: str, decimals: int) -> str:
    if math.isnan(mean):
        return NOT_APPLICABLE
    text = f"{mean:.{decimals}f}" + ("" if math.isnan(std) else f" $\\pm$ {std:.{decimals}f}")
    if mark == BEST:
        return f"\\textbf{{{text}}}"
    if mark == SECOND:
        return f"\\underline{{{text}}}"
    return text


def _format_p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def significance_note(significance: pd.DataFrame, alpha: float = 0.05) -> str:
    """One sentence from significance.compare_rows: which AUROCs differ from the reference."""
    compared = significance[significance["row"] != significance["reference"].iloc[0]]
    reference = significance["reference"].iloc[0]
    correction = significance["correction"].iloc[0]
    adjusted = "Holm-adjusted " if correction == "holm" else ""

    def listing(frame: pd.DataFrame) -> str:
        return ", ".join(f"{latex_escape(r.row)} ({_format_p(r.p_adjusted)})" for r in frame.itertuples()) or "none"

    n_all = int(significance["n_pairs"].max())
    partial = compared[compared["n_pairs"] < n_all]
    subsets = (
        " Rows scoring fewer pairs are compared with "
        f"{latex_escape(reference)} on the pairs they score: "
        + ", ".join(f"{latex_escape(r.row)} ({r.n_pairs} of {n_all})" for r in partial.itertuples())
        + "."
        if len(partial)
        else ""
    )
    return (
        f"AUROC vs {latex_escape(reference)}, two-sided DeLong test on seed-mean probabilities "
        f"({adjusted}p, $\\alpha$ = {alpha}): significant: {listing(compared[compared['significant']])}; "
        f"not significant: {listing(compared[~compared['significant']])}.{subsets}"
    )


def footnotes(
    table: pd.DataFrame,
    metric_notes: Mapping[str, str] | None = None,
    significance: pd.DataFrame | None = None,
    alpha: float = 0.05,
    extra_notes: Sequence[str] = (),
) -> list[str]:
    """K, what each stand-in metric is (a note is required for each), the significance sentence, then
    extra_notes: LaTeX-ready lines from the caller (escape plain text with `latex_escape`)."""
    notes = []
    stochastic = table[table["n_seeds"] > 1]
    if len(stochastic):
        ks = sorted(stochastic["n_seeds"].unique())
        k_text = f"K = {ks[0]}" if len(ks) == 1 else "K = " + ", ".join(
            f"{k} ({', '.join(latex_escape(m) for m in stochastic.loc[stochastic['n_seeds'] == k, 'method'])})"
            for k in ks
        )
        notes.append(f"Mean $\\pm$ std (ddof = 1) over {k_text} sampling seeds; single values: one deterministic run.")
    metric_notes = dict(metric_notes or {})
    for name in stand_in_names(table):
        if name not in metric_notes:
            raise EvaluationInputError(
                f"footnotes: metric {name!r} is a stand-in for the paper's metric and needs a note saying what it is"
            )
        notes.append(f"$^{{\\dagger}}${latex_escape(name)}: {latex_escape(metric_notes[name])}.")
    if significance is not None and len(significance):
        unknown = sorted(set(significance["row"]) - set(table["method"]))
        if unknown:
            raise EvaluationInputError(
                f"footnotes: significance rows {unknown} are not methods of the table {list(table['method'])}"
            )
        notes.append(significance_note(significance, alpha))
    return notes + list(extra_notes)


def to_latex(
    table: pd.DataFrame,
    path: str | Path,
    *,
    metric_notes: Mapping[str, str] | None = None,
    significance: pd.DataFrame | None = None,
    alpha: float = 0.05,
    decimals: int = 3,
    label: str = "tab:table1",
    extra_notes: Sequence[str] = (),
) -> str:
    """Write the booktabs table (needs \\usepackage{booktabs}) and return its text."""
    names = column_metric_names(table)
    stand_ins = set(stand_in_names(table))

    def header(key: str) -> str:
        arrow = "$\\downarrow$" if LOWER_IS_BETTER[key] else "$\\uparrow$"
        dagger = "$^{\\dagger}$" if names[key] in stand_ins else ""
        return f"{latex_escape(names[key])}{dagger} {arrow}"

    ks = sorted(table.loc[table["n_seeds"] > 1, "n_seeds"].unique())
    k_caption = f" across K = {ks[0]} samples" if len(ks) == 1 else ""
    lines = [
        "\\begin{table}[t]",
        "\\centering",
        "\\caption{Comparison of methods and results from ablation study in terms of image quality metrics and "
        "diagnosis performance (AUROC and AUPRC). For stochastic methods, mean and standard deviation are "
        f"calculated{k_caption}. \\textbf{{Bold}} indicates best; \\underline{{underline}} indicates second best "
        "(real-image rows not ranked; equal printed values share a rank).}",
        f"\\label{{{label}}}",
        "\\begin{tabular}{lcccc}",
        "\\toprule",
        " & \\multicolumn{2}{c}{Image Quality Metrics} & \\multicolumn{2}{c}{Diagnosis Performance} \\\\",
        "\\cmidrule(lr){2-3} \\cmidrule(lr){4-5}",
        "Method & " + " & ".join(header(key) for key in METRIC_KEYS) + " \\\\",
    ]
    for group in GROUPS:
        members = table[table["group"] == group]
        if members.empty:
            continue
        lines.append("\\midrule")
        if group in HEADED_GROUPS:
            lines.append(f"\\multicolumn{{5}}{{l}}{{\\textit{{{group}}}}} \\\\")
        for row in members.to_dict("records"):
            method = f"\\textbf{{{row['latex_method']}}}" if group == "NAMD" else row["latex_method"]
            cells = [_cell(row[f"{k}_mean"], row[f"{k}_std"], row[f"{k}_mark"], decimals) for k in METRIC_KEYS]
            lines.append(" & ".join([method, *cells]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    notes = footnotes(table, metric_notes, significance, alpha, extra_notes)
    if notes:
        lines += ["\\par\\smallskip", "{\\footnotesize", *(f"{note}\\par" for note in notes), "}"]
    lines.append("\\end{table}")
    text = "\n".join(lines) + "\n"
    with atomic_output(path) as handle:
        handle.write(text.encode("utf-8"))
    return text


def to_csv(table: pd.DataFrame, path: str | Path) -> None:
    """Same numbers at full precision, with the rank marks and metric names as columns."""
    with atomic_output(path) as handle:
        table.drop(columns=["latex_method"]).to_csv(handle, index=False)
