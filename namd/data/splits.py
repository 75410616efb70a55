"""The cohort's files cut into a train/val part and a test part (data contract section 4a).

Training and selection rules read only the train/val files, scoring rules only the test files, so
the test split cannot inform a setting through a file a training rule opens. Each part keeps the
formats of the full files: pairs.csv rows as written, crops.npz and crops.csv aligned with them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from namd.data.crops import load_crops, save_crops
from namd.io import atomic_output

#: the part of the cohort each split belongs to
PARTS = {"trainval": ("train", "val"), "test": ("test",)}
FILES = ("pairs", "crops", "crops_table")


class SplitDataError(ValueError):
    """The full files cannot be split: an unknown split, or crops that do not match the pairs."""


def seeded_subset(n_items: int, n_chosen: int, seed: int) -> np.ndarray:
    """Sorted indices of min(n_chosen, n_items) items drawn without replacement with
    numpy's default_rng(seed): e.g. Figure 5's 50 pairs, the same in the rule that samples them
    and in the figure."""
    if n_chosen < 1:
        raise ValueError(f"seeded_subset: n_chosen must be at least 1, got {n_chosen}")
    return np.sort(np.random.default_rng(seed).choice(n_items, size=min(n_chosen, n_items), replace=False))


def seeded_test_pairs(pairs_csv, n_pairs: int, seed: int) -> list[str]:
    """The pair ids of a seeded subset of pairs.csv's test pairs, in file order."""
    test = _read_table(pairs_csv, "pairs").query("split == 'test'")
    return test["pair_id"].astype(str).to_numpy()[seeded_subset(len(test), n_pairs, seed)].tolist()


def _read_table(path, name: str) -> pd.DataFrame:
    # strings as written, so every row of a part is the full table's row, unchanged
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    required = ["pair_id", "pid", "split"] if name == "pairs" else ["pair_id"]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise SplitDataError(f"{path}: lacks the column(s) {missing}")
    repeated = table["pair_id"][table["pair_id"].duplicated()].unique().tolist()
    if repeated:
        raise SplitDataError(f"{path}: pair_id values repeat: {repeated[:10]}")
    return table


def split_parts(pairs: pd.DataFrame, crops: dict[str, np.ndarray], crops_table: pd.DataFrame,
                *, sources=("pairs.csv", "crops.npz", "crops.csv")
                ) -> dict[str, tuple[pd.DataFrame, dict[str, np.ndarray], pd.DataFrame]]:
    """(pairs, crop arrays, crops table) of each part of PARTS, in the full table's order.

    `sources` names the three inputs in error messages.
    """
    where = sources[0]
    known = {split for splits in PARTS.values() for split in splits}
    unknown = pairs.loc[~pairs["split"].isin(known), ["pair_id", "split"]]
    if len(unknown):
        pair_id, split = unknown.iloc[0]
        raise SplitDataError(f"{where}: pair {pair_id}: split={split!r} is not one of {sorted(known)} "
                             f"({len(unknown)} such row(s))")
    ids = pairs["pair_id"].tolist()
    for name, listed in ((sources[1], crops["pair_id"].tolist()), (sources[2], crops_table["pair_id"].tolist())):
        if listed != ids:
            missing, extra = sorted(set(ids) - set(listed)), sorted(set(listed) - set(ids))
            raise SplitDataError(f"{name} is not aligned with {where}: missing {missing[:10]}, extra {extra[:10]}"
                                 + ("" if missing or extra else " (same pairs, another order)"))
    parts = {}
    for part, splits in PARTS.items():
        mask = pairs["split"].isin(splits).to_numpy()
        if not mask.any():
            raise SplitDataError(f"{where}: no pair in split(s) {', '.join(splits)}: the {part} part would be empty")
        parts[part] = (pairs[mask].reset_index(drop=True), {k: v[mask] for k, v in crops.items()},
                       crops_table[mask].reset_index(drop=True))
    shared = sorted(set(parts["trainval"][0]["pid"]) & set(parts["test"][0]["pid"]))
    if shared:
        raise SplitDataError(f"{where}: pid {shared[0]} has pairs in both train/val and test "
                             f"({len(shared)} such pid(s)); the split must be patient level")
    return parts


def write_split_files(pairs_csv, crops_npz, crops_csv,
                      outputs: Mapping[str, Mapping[str, str | Path]]) -> dict[str, int]:
    """Write each part's pairs.csv, crops.npz and crops.csv (outputs[part][file]); pairs per part.

    Everything is checked and cut before the first file is written.
    """
    parts = split_parts(_read_table(pairs_csv, "pairs"), load_crops(crops_npz), _read_table(crops_csv, "crops_table"),
                        sources=(str(pairs_csv), str(crops_npz), str(crops_csv)))
    if set(outputs) != set(PARTS) or any(set(files) != set(FILES) for files in outputs.values()):
        raise ValueError(f"outputs must map each of {list(PARTS)} to the files {list(FILES)}")
    for part, (pairs, crops, table) in parts.items():
        for name, frame in (("pairs", pairs), ("crops_table", table)):
            with atomic_output(outputs[part][name]) as handle:
                frame.to_csv(handle, index=False)
        save_crops(crops, outputs[part]["crops"])
    return {part: len(pairs) for part, (pairs, _, _) in parts.items()}
