"""AUROC and AUPRC of one Table-1 row, per seed, from the evaluation classifier's probabilities.

The paper (Sec. 4.1.2) scores each of the K sampling runs separately and reports the mean and
standard deviation over runs; deterministic rows have a single run (seed 0).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

PROBS_COLUMNS = ("pair_id", "seed", "label", "prob")
# The paper's image-quality metric names; anything else printed in their columns is a stand-in.
LPIPS_NAME = "LPIPS"
FID_NAME = "FID"
MAX_IDS_SHOWN = 10


class EvaluationInputError(ValueError):
    """Evaluation input that would give a wrong or undefined number; the message names the row."""


def format_ids(ids: Iterable) -> str:
    """Long id lists would drown the message; the first few and a count are enough to act on."""
    ids = sorted(ids, key=str)
    shown = ", ".join(str(i) for i in ids[:MAX_IDS_SHOWN])
    more = len(ids) - MAX_IDS_SHOWN
    return shown + (f" ... and {more} more" if more > 0 else "")


def validate_probs(probs_df: pd.DataFrame, row_name: str) -> pd.DataFrame:
    """Refuse tables whose AUROC would silently be wrong: NaN, out-of-range, duplicates, label clashes."""
    missing = [c for c in PROBS_COLUMNS if c not in probs_df.columns]
    if missing:
        raise EvaluationInputError(
            f"row {row_name!r}: probabilities table lacks column(s) {missing}; expected {list(PROBS_COLUMNS)}"
        )
    if probs_df.empty:
        raise EvaluationInputError(f"row {row_name!r}: probabilities table is empty")
    df = probs_df.loc[:, list(PROBS_COLUMNS)].copy()
    df["pair_id"] = df["pair_id"].astype(str)
    for column in ("seed", "label", "prob"):
        df[column] = pd.to_numeric(df[column], errors="coerce")
    bad_seed = df["seed"].isna() | (df["seed"] != df["seed"].round())
    if bad_seed.any():
        raise EvaluationInputError(
            f"row {row_name!r}: non-integer or missing seed for pair(s) "
            f"{format_ids(df.loc[bad_seed, 'pair_id'].unique())}"
        )
    df["seed"] = df["seed"].astype(int)
    nan_prob = df["prob"].isna() | ~np.isfinite(df["prob"])
    if nan_prob.any():
        raise EvaluationInputError(
            f"row {row_name!r}: NaN or non-finite probability for pair(s) "
            f"{format_ids(df.loc[nan_prob, 'pair_id'].unique())}"
        )
    out_of_range = (df["prob"] < 0) | (df["prob"] > 1)
    if out_of_range.any():
        raise EvaluationInputError(
            f"row {row_name!r}: probability outside [0, 1] for pair(s) "
            f"{format_ids(df.loc[out_of_range, 'pair_id'].unique())}"
        )
    bad_label = ~df["label"].isin([0, 1])
    if bad_label.any():
        raise EvaluationInputError(
            f"row {row_name!r}: label not 0/1 for pair(s) {format_ids(df.loc[bad_label, 'pair_id'].unique())}"
        )
    df["label"] = df["label"].astype(int)
    duplicated = df.duplicated(["pair_id", "seed"], keep=False)
    if duplicated.any():
        raise EvaluationInputError(
            f"row {row_name!r}: more than one probability per (pair_id, seed) for pair(s) "
            f"{format_ids(df.loc[duplicated, 'pair_id'].unique())}"
        )
    clashing = df.groupby("pair_id")["label"].nunique()
    clashing = clashing[clashing > 1]
    if len(clashing):
        raise EvaluationInputError(
            f"row {row_name!r}: pair(s) {format_ids(clashing.index)} carry different labels in different seeds"
        )
    return df


def check_complete(
    probs_df: pd.DataFrame, expected_pair_ids: Iterable, expected_seeds: Iterable[int], row_name: str
) -> None:
    """Every expected (pair, seed) scored exactly once, nothing unexpected: a partial run would bias the mean."""
    expected_pairs = {str(p) for p in expected_pair_ids}
    expected_seed_set = {int(s) for s in expected_seeds}
    present = set(zip(probs_df["pair_id"].astype(str), probs_df["seed"].astype(int)))
    problems = []
    missing_by_seed: dict[int, list[str]] = {}
    for seed in sorted(expected_seed_set):
        absent = [p for p in expected_pairs if (p, seed) not in present]
        if absent:
            missing_by_seed[seed] = absent
    if missing_by_seed:
        problems.append(
            "missing (seed: pair_ids): "
            + "; ".join(f"{seed}: {format_ids(pairs)}" for seed, pairs in missing_by_seed.items())
        )
    unexpected_pairs = {p for p, _ in present} - expected_pairs
    if unexpected_pairs:
        problems.append(f"unexpected pair_id(s): {format_ids(unexpected_pairs)}")
    unexpected_seeds = {s for _, s in present} - expected_seed_set
    if unexpected_seeds:
        problems.append(f"unexpected seed(s): {format_ids(unexpected_seeds)}")
    if problems:
        raise EvaluationInputError(
            f"row {row_name!r}: probabilities incomplete for {len(expected_pairs)} pairs x "
            f"{len(expected_seed_set)} seeds; " + " | ".join(problems)
        )


def diagnosis_metrics(probs_df: pd.DataFrame, row_name: str) -> pd.DataFrame:
    """One line per seed: AUROC, AUPRC (sklearn), number of pairs and of malignant pairs.

    All seeds of a row must score the same pairs, so the per-seed numbers are comparable.
    """
    df = validate_probs(probs_df, row_name)
    check_complete(df, df["pair_id"].unique(), df["seed"].unique(), row_name)
    if df["label"].nunique() < 2:
        only = int(df["label"].iloc[0])
        raise EvaluationInputError(
            f"row {row_name!r}: all {df['pair_id'].nunique()} pairs have label {only}; "
            "AUROC and AUPRC are undefined with one class"
        )
    # imported here: the evaluator's jobs import this module for its checks, and sklearn is a second of their start-up
    from sklearn.metrics import average_precision_score, roc_auc_score

    lines = []
    for seed, group in df.groupby("seed", sort=True):
        lines.append(
            {
                "row": row_name,
                "seed": int(seed),
                "auroc": float(roc_auc_score(group["label"], group["prob"])),
                "auprc": float(average_precision_score(group["label"], group["prob"])),
                "n_pairs": len(group),
                "n_positive": int(group["label"].sum()),
            }
        )
    return pd.DataFrame(lines)


def summarise(per_seed_df: pd.DataFrame, metrics: Sequence[str] = ("auroc", "auprc")) -> pd.DataFrame:
    """Mean and sample standard deviation (ddof=1) over seeds; std is NaN for a single seed.

    The paper does not say which standard deviation it reports; ddof=1 is the usual estimate from
    K independent runs. Works on any per-seed table (image metrics too).
    """
    if "seed" not in per_seed_df.columns:
        raise EvaluationInputError("summarise: per-seed table lacks column 'seed'")
    absent = [m for m in metrics if m not in per_seed_df.columns]
    if absent:
        raise EvaluationInputError(f"summarise: per-seed table lacks metric column(s) {absent}")
    if per_seed_df["seed"].duplicated().any():
        raise EvaluationInputError(
            f"summarise: seed(s) {format_ids(per_seed_df.loc[per_seed_df['seed'].duplicated(), 'seed'].unique())} "
            "appear more than once; summarise one row (method) at a time"
        )
    n_seeds = len(per_seed_df)
    if n_seeds == 0:
        raise EvaluationInputError("summarise: per-seed table is empty")
    lines = []
    for metric in metrics:
        values = per_seed_df[metric].to_numpy(dtype=float)
        lines.append(
            {
                "metric": metric,
                "mean": float(values.mean()),
                "std": float(values.std(ddof=1)) if n_seeds > 1 else float("nan"),
                "n_seeds": n_seeds,
            }
        )
    return pd.DataFrame(lines).set_index("metric")
