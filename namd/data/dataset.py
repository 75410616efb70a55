"""Torch datasets over the data stage's outputs (pairs.csv + crops.npz [+ cached latents]).

Every model reads its data through `Cohort`: one place that aligns crops and latents with the
pairs table by pair_id, standardises the record with training-split statistics only (those of the
train/val table for a test-only one), and hands out batches in the dict shape
`namd.methods.base.GenerativeMethod` documents.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from namd.data.crops import load_crops
from namd.data.nlst import ehr_numeric, nodule_feature_stats, nodule_features

SPLITS = ("train", "val", "test")


class CohortDataError(ValueError):
    """Crops, latents and pairs do not line up; the message names the file and the ids."""


def _aligned(ids_in_file: np.ndarray, wanted: pd.Series, path: str | Path) -> np.ndarray:
    """Row index into a file's arrays for each wanted pair_id, or an error naming the missing ids."""
    position = {pid: i for i, pid in enumerate(ids_in_file.tolist())}
    missing = [p for p in wanted if p not in position]
    if missing:
        raise CohortDataError(f"{path}: {len(missing)} pair(s) of pairs.csv are missing: {missing[:10]}")
    return np.asarray([position[p] for p in wanted], dtype=np.int64)


def _followup_view(pairs: pd.DataFrame) -> pd.DataFrame:
    """The record as it describes the follow-up image: follow-up diameters where measured."""
    view = pairs.copy()
    for column in ("SCT_LONG_DIA", "SCT_PERP_DIA"):
        if f"{column}_follow" in pairs:
            follow = pd.to_numeric(pairs[f"{column}_follow"], errors="coerce")
            view[column] = follow.where(follow > 0, pd.to_numeric(pairs[column]))
    return view


@dataclass(frozen=True)
class RecordStats:
    """Training-split statistics that standardise the record: EHR z-scores and log-diameter z-scores.

    A test-only pairs table has no training rows, so its cohort takes these from the train/val table.
    """

    ehr_mean: np.ndarray
    ehr_std: np.ndarray
    diameters: dict[str, tuple[float, float]]

    @classmethod
    def of_training_rows(cls, pairs: pd.DataFrame) -> "RecordStats | None":
        """Statistics of the table's training rows; None when it has none."""
        train = pairs[pairs["split"] == "train"]
        if train.empty:
            return None
        ehr, _ = ehr_numeric(train)
        std = ehr.std(0)
        return cls(ehr.mean(0), np.where(std > 0, std, 1.0), nodule_feature_stats(train))

    def ehr(self, pairs: pd.DataFrame) -> np.ndarray:
        values, _ = ehr_numeric(pairs)
        return ((values - self.ehr_mean) / self.ehr_std).astype(np.float32)


def _read_pairs(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"pair_id": str, "nodule_id": str, "pid": str})


@dataclass
class Cohort:
    """Pairs of the cohort with their images, record and labels as tensors.

    The standardised record (`ehr`, `features`, `features_followup`) is computed on first use, so a
    test-only cohort loaded without training statistics still serves its images and labels.
    """

    pairs: pd.DataFrame
    baseline: torch.Tensor
    followup: torch.Tensor
    labels: torch.Tensor
    latents: dict[str, tuple[torch.Tensor, torch.Tensor]]
    stats: RecordStats | None
    source: str

    @classmethod
    def load(cls, pairs_csv: str | Path, crops_npz: str | Path, latents: dict[str, str | Path] | None = None, *,
             stats_pairs: str | Path | None = None) -> "Cohort":
        """The pairs of `pairs_csv` that have crops; the record is standardised with the training
        rows of `stats_pairs` (the train/val pairs.csv, for a test-only table), else of `pairs_csv`."""
        pairs = _read_pairs(pairs_csv)
        crops = load_crops(crops_npz)
        pairs = pairs[pairs["pair_id"].isin(set(crops["pair_id"].tolist()))].reset_index(drop=True)
        if pairs.empty:
            raise CohortDataError(f"{crops_npz}: no pair of {pairs_csv} has a crop")
        index = _aligned(crops["pair_id"], pairs["pair_id"], crops_npz)
        stats = RecordStats.of_training_rows(pairs if stats_pairs is None else _read_pairs(stats_pairs))
        if stats is None and stats_pairs is not None:
            raise CohortDataError(f"{stats_pairs}: the training split is empty")
        cached = {}
        for name, path in (latents or {}).items():
            with np.load(path, allow_pickle=False) as data:
                rows = _aligned(data["pair_id"], pairs["pair_id"], path)
                cached[name] = (torch.from_numpy(data["baseline"][rows]), torch.from_numpy(data["followup"][rows]))
        return cls(
            pairs=pairs,
            baseline=torch.from_numpy(crops["baseline"][index]),
            followup=torch.from_numpy(crops["followup"][index]),
            labels=torch.tensor(pairs["label"].to_numpy(dtype=np.float32)),
            latents=cached,
            stats=stats,
            source=str(pairs_csv),
        )

    def _stats(self) -> RecordStats:
        if self.stats is None:
            raise CohortDataError(f"{self.source}: the training split is empty, so the record cannot be "
                                  "standardised; load a test-only table with stats_pairs=<train/val pairs.csv>")
        return self.stats

    @cached_property
    def ehr(self) -> torch.Tensor:
        return torch.from_numpy(self._stats().ehr(self.pairs))

    @cached_property
    def features(self) -> torch.Tensor:
        return torch.from_numpy(nodule_features(self.pairs, self._stats().diameters))

    @cached_property
    def features_followup(self) -> torch.Tensor:
        return torch.from_numpy(nodule_features(_followup_view(self.pairs), self._stats().diameters))

    @property
    def image_size(self) -> int:
        return int(self.baseline.shape[-1])

    def indices(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} (one of {SPLITS})")
        return np.flatnonzero((self.pairs["split"] == split).to_numpy())


class PairDataset(Dataset):
    """Baseline/follow-up pairs of one split: what the generative methods train and sample on."""

    def __init__(self, cohort: Cohort, split: str, pair_ids: Sequence[str] | None = None):
        """`pair_ids`: only these pairs of the split, in the split's order (each must be in it)."""
        self.cohort = cohort
        self.rows = cohort.indices(split)
        if pair_ids is not None:
            in_split = cohort.pairs["pair_id"].to_numpy()[self.rows]
            unknown = sorted(set(pair_ids) - set(in_split))
            if unknown:
                raise CohortDataError(f"{len(unknown)} pair(s) are not in the {split} split: {unknown[:5]}")
            self.rows = self.rows[np.isin(in_split, list(pair_ids))]
        if len(self.rows) == 0:
            raise CohortDataError(f"the {split} split has no pairs")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        r = int(self.rows[i])
        c = self.cohort
        item = {
            "baseline": c.baseline[r],
            "followup": c.followup[r],
            "label": c.labels[r],
            "ehr": c.ehr[r],
            "features": c.features[r],
            "report": c.pairs.at[r, "report"],
            "pair_id": c.pairs.at[r, "pair_id"],
        }
        for base, follow in c.latents.values():
            item["baseline_latent"], item["followup_latent"] = base[r], follow[r]
        return item


class ImageDataset(Dataset):
    """Single images of one split (baselines and follow-ups as separate samples) with the
    nodule features and label that describe each: what the VAEs, the unconditional diffusion
    stage and the evaluation classifier learn from."""

    def __init__(self, cohort: Cohort, split: str, *, latents: str | None = None):
        rows = cohort.indices(split)
        if len(rows) == 0:
            raise CohortDataError(f"the {split} split has no pairs")
        if latents is None:
            images = [cohort.baseline[rows], cohort.followup[rows]]
        else:
            if latents not in cohort.latents:
                raise CohortDataError(f"no cached latents named {latents!r} were loaded")
            images = [cohort.latents[latents][0][rows], cohort.latents[latents][1][rows]]
        self.images = torch.cat(images)
        self.features = torch.cat([cohort.features[rows], cohort.features_followup[rows]])
        self.labels = torch.cat([cohort.labels[rows], cohort.labels[rows]])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "features": self.features[i], "label": self.labels[i]}
