"""Is a row's AUROC different from NAMD's on the same test pairs?

DeLong's test for correlated ROC curves (DeLong et al. 1988), computed with the fast midrank
algorithm of Sun & Xu (2014, IEEE Signal Processing Letters 21(11)), plus a stratified bootstrap
confidence interval. Stochastic rows are compared on their seed-mean probability per pair (the
p-bar of Sec. 4.3), so every row contributes one score per pair.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata

from namd.evaluation.metrics import EvaluationInputError, format_ids, validate_probs

CORRECTIONS = ("holm", "none")


@dataclass(frozen=True)
class DeLongResult:
    auc_a: float
    auc_b: float
    variance_a: float
    variance_b: float
    covariance: float
    z: float
    p_value: float


def _check_labels_scores(labels: np.ndarray, scores: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    if labels.ndim != 1 or scores.shape[1] != labels.shape[0]:
        raise EvaluationInputError(
            f"{where}: labels of shape {labels.shape} do not match scores of shape {scores.shape}"
        )
    if not np.isin(labels, (0, 1)).all():
        raise EvaluationInputError(f"{where}: labels must be 0/1")
    if not np.isfinite(scores).all():
        raise EvaluationInputError(f"{where}: scores contain NaN or infinite values")
    if labels.sum() == 0 or labels.sum() == labels.size:
        raise EvaluationInputError(f"{where}: both classes are needed, got only label {int(labels[0])}")
    return labels.astype(bool), scores


def fast_delong(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of k score vectors on the same cases and their DeLong covariance matrix (k x k).

    Sun & Xu: the structural components come from midranks within positives, within negatives
    and over all cases, so the cost is O(k n log n) instead of DeLong's O(k m n).
    """
    positive, scores = _check_labels_scores(labels, scores, "fast_delong")
    x = scores[:, positive]
    y = scores[:, ~positive]
    m, n = x.shape[1], y.shape[1]
    rank_x = rankdata(x, axis=1)
    rank_y = rankdata(y, axis=1)
    rank_all = rankdata(np.concatenate([x, y], axis=1), axis=1)
    aucs = (rank_all[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    v_positive = (rank_all[:, :m] - rank_x) / n
    v_negative = 1.0 - (rank_all[:, m:] - rank_y) / m
    covariance = np.atleast_2d(np.cov(v_positive)) / m + np.atleast_2d(np.cov(v_negative)) / n
    return aucs, covariance


def delong_test(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> DeLongResult:
    """Two-sided DeLong test of AUC(a) = AUC(b); z > 0 when a has the larger AUC.

    Identical curves have zero variance of the difference: reported as z = 0, p = 1 like pROC.
    """
    if np.ndim(scores_a) != 1 or np.shape(scores_a) != np.shape(scores_b):
        raise EvaluationInputError(
            f"delong_test: scores_a has shape {np.shape(scores_a)} and scores_b {np.shape(scores_b)}; DeLong's test "
            f"compares two rows on the same test pairs, one score per pair each ({np.size(labels)} labels)")
    aucs, cov = fast_delong(labels, np.vstack([scores_a, scores_b]))
    difference = aucs[0] - aucs[1]
    variance = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    if variance <= 1e-15:
        z = 0.0 if abs(difference) <= 1e-15 else float(np.copysign(np.inf, difference))
    else:
        z = float(difference / np.sqrt(variance))
    return DeLongResult(
        auc_a=float(aucs[0]),
        auc_b=float(aucs[1]),
        variance_a=float(cov[0, 0]),
        variance_b=float(cov[1, 1]),
        covariance=float(cov[0, 1]),
        z=z,
        p_value=float(2 * norm.sf(abs(z))),
    )


def bootstrap_auroc_ci(
    labels: np.ndarray, probs: np.ndarray, n_boot: int = 2000, seed: int = 23, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile (1 - alpha) confidence interval of the AUROC by stratified bootstrap over pairs.

    Malignant and benign pairs are resampled separately (pROC's default, boot.stratified), so every
    replicate has both classes and the class balance of the test set. Resampling is per pair, not
    per patient: in the NAMD test set (450 pairs from 450 subjects) the two coincide.
    """
    if n_boot < 1 or not 0 < alpha < 1:
        raise EvaluationInputError(f"bootstrap_auroc_ci: need n_boot >= 1 and 0 < alpha < 1, got {n_boot}, {alpha}")
    positive, scores = _check_labels_scores(labels, probs, "bootstrap_auroc_ci")
    x, y = scores[0, positive], scores[0, ~positive]
    m, n = x.size, y.size
    rng = np.random.default_rng(seed)
    resampled = np.concatenate(
        [x[rng.integers(0, m, size=(n_boot, m))], y[rng.integers(0, n, size=(n_boot, n))]], axis=1
    )
    ranks = rankdata(resampled, axis=1)
    aucs = (ranks[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    low, high = np.quantile(aucs, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def holm_adjust(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values: family-wise error control for the comparisons against NAMD."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p)
    steps = (p.size - np.arange(p.size)) * p[order]
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(np.maximum.accumulate(steps), 1.0)
    return adjusted


def seed_mean_probs(probs_df: pd.DataFrame, row_name: str) -> pd.DataFrame:
    """Mean probability over seeds per pair (one score per pair); indexed by pair_id."""
    df = validate_probs(probs_df, row_name)
    return df.groupby("pair_id").agg(label=("label", "first"), prob=("prob", "mean"))


def compare_rows(
    probs_by_row: Mapping[str, pd.DataFrame],
    reference: str = "NAMD",
    *,
    alpha: float = 0.05,
    correction: str = "holm",
    n_boot: int = 2000,
    seed: int = 23,
    partial_rows: Collection[str] = (),
) -> pd.DataFrame:
    """AUROC of each row's seed-mean probability, bootstrap CI, and DeLong z/p against the reference.

    All rows must score the same pairs with the same labels (DeLong pairs the cases), except the
    rows named in partial_rows (a clinical score that a missing record field keeps from some
    pairs): they may score a subset of the reference's pairs and are compared on it. With
    correction="holm" the p-values of the comparisons against the reference are Holm-adjusted as
    one family; `significant` is p_adjusted < alpha. The reference row gets NaN z/p.
    """
    if correction not in CORRECTIONS:
        raise EvaluationInputError(f"compare_rows: correction must be one of {CORRECTIONS}, got {correction!r}")
    if reference not in probs_by_row:
        raise EvaluationInputError(
            f"compare_rows: reference row {reference!r} not among rows {sorted(probs_by_row)}"
        )
    means = {name: seed_mean_probs(df, name) for name, df in probs_by_row.items()}
    ref = means[reference]
    pair_ids = ref.index.sort_values()
    for name, table in means.items():
        only_here, only_ref = set(table.index) - set(ref.index), set(ref.index) - set(table.index)
        if only_here or (only_ref and name not in partial_rows):
            raise EvaluationInputError(
                f"compare_rows: row {name!r} and reference {reference!r} score different pairs; "
                f"only in {name!r}: {format_ids(only_here) or '-'}; "
                f"only in {reference!r}: {format_ids(only_ref) or '-'}"
            )
        common = table.index.sort_values()
        clash = table.loc[common, "label"].to_numpy() != ref.loc[common, "label"].to_numpy()
        if clash.any():
            raise EvaluationInputError(
                f"compare_rows: row {name!r} labels pair(s) {format_ids(common[clash])} differently from {reference!r}"
            )
    lines = []
    for name, df in probs_by_row.items():
        common = pair_ids[pair_ids.isin(means[name].index)]
        labels = ref.loc[common, "label"].to_numpy()
        ref_scores = ref.loc[common, "prob"].to_numpy()
        scores = means[name].loc[common, "prob"].to_numpy()
        low, high = bootstrap_auroc_ci(labels, scores, n_boot=n_boot, seed=seed, alpha=alpha)
        if name == reference:
            auroc, z, p = fast_delong(labels, scores)[0][0], np.nan, np.nan
        else:
            test = delong_test(labels, scores, ref_scores)
            auroc, z, p = test.auc_a, test.z, test.p_value
        lines.append(
            {
                "row": name,
                "n_pairs": len(common),
                "n_seeds": int(pd.Series(df["seed"]).nunique()),
                "auroc": float(auroc),
                "ci_low": low,
                "ci_high": high,
                "delong_z": z,
                "p_value": p,
            }
        )
    result = pd.DataFrame(lines)
    compared = result["row"] != reference
    result["p_adjusted"] = np.nan
    result.loc[compared, "p_adjusted"] = (
        holm_adjust(result.loc[compared, "p_value"].to_numpy())
        if correction == "holm"
        else result.loc[compared, "p_value"]
    )
    result["significant"] = compared & (result["p_adjusted"] < alpha)
    result["reference"] = reference
    result["correction"] = correction
    return result
