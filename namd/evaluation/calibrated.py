"""A calibrated generator: the progression readout's ceiling for a faithful sampler at K samples (phantom only).

On the phantom a nodule's malignancy is drawn with a known probability, and a malignant nodule grows while a
benign one stays, so the follow-up is a draw. A generator that knew the probability and drew each of its K
samples malignant with it, growing as real follow-ups of that outcome grow, would still score its pair's mean
change over K only noisily: its growth AUROC reaches the expected change's (risk x growth) as K grows, not at
K = 4 or 10. This row says how high a faithful stochastic generator can read on the same pairs at the run's K,
so a generative row is compared with what is reachable, not with a deterministic score.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize, special

#: a calibrated generator draws each sample's change from training pairs in its pair's baseline-size bin
SIZE_BINS = 5


class NoOutcomeError(ValueError):
    """The training pairs lack malignant or benign pairs, whose changes a calibrated generator draws."""


@dataclass
class RelativeChanges:
    """The real relative diameter changes of training pairs, by outcome and by baseline-size bin (the readout's
    error depends on the size; pairs read as no nodule are left out)."""

    edges: np.ndarray  # inner edges of the baseline-diameter bins (mm)
    malignant: list[np.ndarray]
    benign: list[np.ndarray]

    @classmethod
    def of(cls, baseline_d, follow_d, labels, bins: int = SIZE_BINS) -> RelativeChanges:
        """At most `bins` bins of equal count, fewer where a bin would lack a malignant or a benign pair."""
        baseline_d, follow_d, labels = (np.asarray(a, dtype=float) for a in (baseline_d, follow_d, labels))
        read = baseline_d > 0
        baseline_d, relative, labels = baseline_d[read], follow_d[read] / baseline_d[read] - 1, labels[read]
        for n in range(bins, 0, -1):
            edges = np.quantile(baseline_d, np.linspace(0, 1, n + 1)[1:-1])
            where = np.digitize(baseline_d, edges)
            groups = [[relative[(where == b) & (labels == outcome)] for b in range(n)] for outcome in (1, 0)]
            if all(len(part) for parts in groups for part in parts):
                return cls(edges, *groups)
        raise NoOutcomeError(f"the training pairs read as a nodule hold {int((labels == 1).sum())} malignant and "
                             f"{int((labels == 0).sum())} benign pair(s): a calibrated generator needs both")

    def draw(self, rng: np.random.Generator, baseline_d, malignant: np.ndarray) -> np.ndarray:
        """(N, K) relative changes: for each sample, one of its size bin's training pairs of the sample's outcome."""
        where = np.digitize(baseline_d, self.edges)
        out = np.empty(malignant.shape)
        for b in np.unique(where):
            rows = where == b
            out[rows] = np.where(malignant[rows], rng.choice(self.malignant[b], malignant[rows].shape),
                                 rng.choice(self.benign[b], malignant[rows].shape))
        return out


def truth_risks(pairs: pd.DataFrame, truth_csv: str | Path) -> np.ndarray:
    """Each pair's true probability of malignancy: the risk the phantom drew its nodule's malignancy from."""
    truth = pd.read_csv(truth_csv, usecols=["pid", "nodule_id", "brock_risk"]).drop_duplicates(["pid", "nodule_id"])
    keys = pairs[["pid", "nodule_id"]].astype({"pid": int, "nodule_id": str})
    risk = keys.merge(truth.astype({"nodule_id": str}), how="left", on=["pid", "nodule_id"])
    missing = risk["brock_risk"].isna().to_numpy()
    if missing.any():
        first = pairs.iloc[int(np.argmax(missing))]
        raise ValueError(f"{truth_csv}: no brock_risk for {missing.sum()} pair(s), first pid {first['pid']} "
                         f"nodule {first['nodule_id']} (pair {first['pair_id']}): is it this cohort's truth file?")
    return risk["brock_risk"].to_numpy(dtype=float)


def recalibrated(risk, train_risk, train_labels) -> np.ndarray:
    """`risk` with its log-odds shifted so that its mean over the training pairs is their malignant share.

    The phantom draws malignancy for every nodule, but a pair exists only where the nodule is seen again a
    year later, which keeps more of the malignant ones: a generator learns the pairs' base rate.
    """
    target = float(np.mean(train_labels))
    shift = optimize.brentq(lambda b: special.expit(special.logit(train_risk) + b).mean() - target, -20.0, 20.0)
    return special.expit(special.logit(np.asarray(risk, dtype=float)) + shift)


def calibrated_followups(rng: np.random.Generator, baseline_d, risk, changes: RelativeChanges, k: int) -> np.ndarray:
    """(N, K) follow-up diameters of a generator whose K samples are each malignant with the pair's risk."""
    baseline_d = np.asarray(baseline_d, dtype=float)
    malignant = rng.random((len(baseline_d), k)) < np.asarray(risk, dtype=float)[:, None]
    return baseline_d[:, None] * (1 + changes.draw(rng, baseline_d, malignant))
