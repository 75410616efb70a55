"""tools/split_gap.py: the size-stratified AUROC ranks only within strata; subsets are the ones named."""

import sys

import numpy as np
import pandas as pd
from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import split_gap as sg  # noqa: E402


def _pairs(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    size = rng.uniform(4, 20, n)
    label = (size + rng.normal(0, 3, n) > 12).astype(int)
    return pd.DataFrame({"pair_id": [f"p{i}" for i in range(n)], "pid": np.arange(n) // 2, "label": label,
                         "study_yr_base": np.arange(n) % 2, "SCT_LONG_DIA": size, "true_change_mm": label * 3.0})


def test_a_score_that_only_reads_size_ranks_at_chance_within_size_thirds():
    frame = _pairs()
    by_size = frame.assign(predicted_change_mm=frame["SCT_LONG_DIA"].rank())
    assert sg.growth_auroc(by_size) > 0.75
    thirds = sg.size_thirds(frame)
    flat = frame.assign(predicted_change_mm=thirds.to_numpy().astype(float))  # size's third only: constant within
    assert sg.growth_auroc(flat) > 0.6 and sg.stratified_auroc(flat, thirds) == 0.5
    knows = frame.assign(predicted_change_mm=frame["label"].astype(float))
    assert sg.stratified_auroc(knows, sg.size_thirds(frame)) == 1.0


def test_split_rows_name_their_subsets_and_count_them():
    frame = _pairs().assign(predicted_change_mm=lambda f: f["label"] + np.random.default_rng(1).normal(0, 1, len(f)))
    rows = {r["subset"]: r for r in sg.split_rows("val", frame, np.random.default_rng(0), 200)}
    assert rows["all"]["pairs"] == 60 and rows["all"]["ci_low"] < rows["all"]["growth_auroc"] < rows["all"]["ci_high"]
    assert rows["first follow-up (T0 -> T1) only"]["pairs"] == 30
    one = rows["one pair per subject (mean of 200 draws)"]
    assert one["pairs"] == 30 and 0 < one["draws_sd"] < 0.2
    single = sg.split_rows("test", frame.drop_duplicates("pid"), np.random.default_rng(0), 50)
    assert "one pair per subject (mean of 200 draws)" not in {r["subset"] for r in single}
