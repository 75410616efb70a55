"""Does a generator's growth AUROC differ between the validation and the test split by more than chance?

    .venv/bin/python tools/select_namd.py --results RESULTS --config ... --k 10 --work WORK --variant "current:"
    .venv/bin/python tools/split_gap.py --results RESULTS --config config.yaml [OVERLAY ...] \\
        --val-generated WORK/current/val.npz [--row namd] [--out docs/namd_split_gap.csv]

A diagnostic that chooses nothing (docs/progression.md entry 14). It reads the validation samples
select_namd.py made of a run's own model (WORK/current/val.npz) with the progression readout, and the
same model's test readout from the run's results/eval/progression_points.csv, and prints, per split,
the growth AUROC of each pair's mean predicted change over K with a bootstrap 95% interval, the same
on subsets that make the splits alike (first follow-up pairs only; one pair per subject, as the test
split has) and within thirds of the recorded baseline diameter (pairs compared only with pairs of a
similar size: what the generator reads beyond size), and the bootstrap interval of the difference.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from namd.config import load_config
from namd.evaluation.readout import ReadoutSettings
from namd.stages.progression import generated_diameters, split_readouts

ROOT = Path(__file__).resolve().parents[1]
PAIR_COLUMNS = ["pair_id", "pid", "study_yr_base", "SCT_LONG_DIA"]


def growth_auroc(frame: pd.DataFrame) -> float:
    """AUROC of the mean predicted change for the pairs' labels (nan when one class is absent)."""
    if frame["label"].nunique() < 2:
        return float("nan")
    return float(roc_auc_score(frame["label"], frame["predicted_change_mm"]))


def stratified_auroc(frame: pd.DataFrame, strata: pd.Series) -> float:
    """AUROC over malignant-benign pairs of the same stratum only, i.e. the per-stratum AUROCs
    weighted by their number of such pairs: what the score ranks beyond the stratum."""
    total = weight = 0.0
    for _, group in frame.groupby(strata.to_numpy()):
        if group["label"].nunique() == 2:
            n = group["label"].sum() * (1 - group["label"]).sum()
            total += growth_auroc(group) * n
            weight += n
    return total / weight if weight else float("nan")


def size_thirds(frame: pd.DataFrame) -> pd.Series:
    """Thirds of equal count of the recorded baseline diameter (ties broken by order)."""
    return pd.qcut(frame["SCT_LONG_DIA"].rank(method="first"), 3, labels=False)


def bootstrap(frame: pd.DataFrame, n: int, rng: np.random.Generator) -> np.ndarray:
    """Growth AUROCs of n resamples of the pairs (with replacement)."""
    labels, scores = frame["label"].to_numpy(), frame["predicted_change_mm"].to_numpy()
    out = []
    for _ in range(n):
        i = rng.integers(0, len(labels), len(labels))
        out.append(roc_auc_score(labels[i], scores[i]) if labels[i].min() != labels[i].max() else np.nan)
    return np.asarray(out)


def one_per_subject(frame: pd.DataFrame, draws: int, rng: np.random.Generator) -> np.ndarray:
    """Growth AUROCs of `draws` subsets with one random pair per subject."""
    return np.asarray([growth_auroc(frame.groupby("pid").sample(1, random_state=int(rng.integers(2**31))))
                       for _ in range(draws)])


def split_rows(name: str, frame: pd.DataFrame, rng: np.random.Generator, n_boot: int) -> list[dict]:
    """The split's growth AUROC (with its bootstrap interval) and on the subsets that make splits alike."""

    def row(subset: str, part: pd.DataFrame, auroc: float, **extra) -> dict:
        return {"split": name, "subset": subset, "pairs": len(part), "malignant": int(part["label"].sum()),
                "growth_auroc": auroc, **extra}

    low, high = np.nanpercentile(bootstrap(frame, n_boot, rng), [2.5, 97.5])
    first = frame[frame["study_yr_base"] == 0]
    rows = [
        row("all", frame, growth_auroc(frame), ci_low=low, ci_high=high),
        row("first follow-up (T0 -> T1) only", first, growth_auroc(first)),
        row("within thirds of recorded diameter", frame, stratified_auroc(frame, size_thirds(frame))),
        row("recorded diameter alone (no generator)", frame,
            float(roc_auc_score(frame["label"], frame["SCT_LONG_DIA"]))),
    ]
    if frame["pid"].duplicated().any():
        draws = one_per_subject(frame, 200, rng)
        one = frame.drop_duplicates("pid")
        rows.append(row("one pair per subject (mean of 200 draws)", one, float(np.mean(draws)),
                        draws_sd=float(np.std(draws))))
    return rows


def validation_points(results: Path, config: dict, generated: Path) -> pd.DataFrame:
    """Per validation pair: label, true change and the mean predicted change over K of `generated`."""
    trainval = results / "data" / "trainval"
    settings = ReadoutSettings.from_config(config["evaluation"]["progression"])
    window = tuple(config["crop"]["hu_window"])
    val, spacing, baseline_d, follow_d = split_readouts(trainval / "pairs.csv", trainval / "crops.npz",
                                                        trainval / "crops.csv", settings, window, split="val")
    diameters, _ = generated_diameters(generated, val["pair_id"].tolist(), spacing, settings, window)
    return val[PAIR_COLUMNS + ["label"]].assign(true_change_mm=follow_d - baseline_d,
                                                predicted_change_mm=diameters.mean(axis=1) - baseline_d)


def test_points(results: Path, row: str) -> pd.DataFrame:
    points = pd.read_csv(results / "eval" / "progression_points.csv", dtype={"pair_id": str})
    if row not in set(points["row"]):
        sys.exit(f"{results / 'eval' / 'progression_points.csv'}: no row {row!r} (rows: {sorted(set(points['row']))})")
    pairs = pd.read_csv(results / "data" / "test" / "pairs.csv", dtype={"pair_id": str})[PAIR_COLUMNS]
    return points[points["row"] == row].merge(pairs, on="pair_id", validate="one_to_one")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--config", nargs="+", type=Path, default=[ROOT / "config.yaml"])
    parser.add_argument("--val-generated", type=Path, required=True, help="select_namd.py's WORK/current/val.npz")
    parser.add_argument("--row", default="namd", help="the test row of progression_points.csv")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    config = load_config(*args.config)
    rng = np.random.default_rng(args.seed)
    val, test = validation_points(args.results, config, args.val_generated), test_points(args.results, args.row)
    table = pd.DataFrame(split_rows("val", val, rng, args.bootstrap) + split_rows("test", test, rng, args.bootstrap))
    print(table.to_markdown(index=False, floatfmt=".3f"))
    gap = bootstrap(val, args.bootstrap, rng) - bootstrap(test, args.bootstrap, rng)
    low, high = np.nanpercentile(gap, [2.5, 97.5])
    print(f"val - test: {growth_auroc(val) - growth_auroc(test):+.3f} (bootstrap 95% interval {low:+.3f} to "
          f"{high:+.3f}; share of resamples <= 0: {np.nanmean(gap <= 0):.3f})")
    for name, frame in (("val", val), ("test", test)):
        by = frame.groupby("label")[["predicted_change_mm", "true_change_mm"]].mean()
        print(f"{name}: mean change malignant / benign, predicted {by.loc[1, 'predicted_change_mm']:+.2f} / "
              f"{by.loc[0, 'predicted_change_mm']:+.2f} mm, true {by.loc[1, 'true_change_mm']:+.2f} / "
              f"{by.loc[0, 'true_change_mm']:+.2f} mm")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
