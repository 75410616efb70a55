"""Choose the evaluation classifier's settings on the validation split only.

    .venv/bin/python tools/select_classifier.py [--pairs PAIRS --crops CROPS] [--grid 64x2x2@1e-3 ...]
                                                [--seeds 3] [--epochs 100] [--time-crops 200 1400]

Reads trainval data only: results/data/trainval/{pairs.csv,crops.npz} when they exist, else the
full results/data/pairs.csv + crops.npz with its test rows (and their crops) dropped before any
model sees them; a test-split file (a folder named test, or a table without train/val rows) is
refused. Every grid setting (EMBEDxDEPTHxHEADS@LR) trains `--seeds` members with the workflow's
own code (`namd.stages.classifier.train_classifier_member`, member i with seed config seed + i,
epoch picked by validation BCE), then each member and their mean-probability ensemble are scored
on the validation crops (BCE and AUROC).

The choice, all on validation numbers:
- setting: the one-standard-error rule on mean member validation BCE: among the settings whose
  mean is within one SE (SD / sqrt(seeds)) of the lowest, the one with the fewest parameters
  (the cheapest to train; wall time on a shared machine is too noisy to rank by), then the lowest mean;
- epochs: the smallest multiple of 10 at least 1.25 x the latest best epoch (1-based) of the
  chosen setting's seeds, at most `--epochs`;
- ensemble size: ceil((s / 0.02)^2) with s the member validation-AUROC seed SD pooled over the
  grid's settings, so the mean of M members has an AUROC seed SD of about 0.02 (at least 1).
Writes one CSV row per setting (mean and SD over seeds, the ensemble's numbers, a `chosen` flag),
one per run beside it (*.runs.csv), and prints the config values to copy.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from sklearn.metrics import log_loss, roc_auc_score

from namd.data.crops import load_crops, save_crops
from namd.data.dataset import Cohort
from namd.evaluation.classifier import MalignancyClassifier, build_classifier, member_seed, real_pairs_dataset
from namd.runtime import make_deterministic
from namd.stages.classifier import train_classifier_member
from namd.training import TrainSettings, fit

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GRID = ["96x4x3@1e-3", "64x2x2@3e-4", "64x2x2@1e-3", "64x2x2@3e-3", "32x2x2@3e-4", "32x2x2@1e-3",
                "32x2x2@3e-3"]
TARGET_SD = 0.02
SETTING = re.compile(r"^(\d+)x(\d+)x(\d+)@([0-9.eE+-]+)$")


class SplitInputError(ValueError):
    """The selection was pointed at test-split data."""


def parse_setting(text: str) -> dict:
    match = SETTING.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"grid setting {text!r}: expected EMBEDxDEPTHxHEADS@LR, e.g. 64x2x2@1e-3")
    embed, depth, heads, lr = match.groups()
    return {"setting": text, "embed_dim": int(embed), "depth": int(depth), "num_heads": int(heads), "lr": float(lr)}


def trainval_inputs(pairs_csv: Path, crops_npz: Path, work_dir: Path) -> tuple[Path, Path]:
    """The train/val rows of `pairs_csv` and their crops, as files in `work_dir`; test data refused."""
    for path in (pairs_csv, crops_npz):
        if path.resolve().parent.name == "test":
            raise SplitInputError(f"{path}: a test-split file; the classifier is selected on trainval data only")
    pairs = pd.read_csv(pairs_csv, dtype={"pair_id": str, "nodule_id": str, "pid": str})
    if "split" not in pairs:
        raise ValueError(f"{pairs_csv}: no 'split' column")
    keep = pairs["split"].isin(["train", "val"])
    if not (pairs["split"] == "train").any() or not (pairs["split"] == "val").any():
        raise SplitInputError(f"{pairs_csv}: holds no train and val rows (splits: {sorted(pairs['split'].unique())}); "
                                  "the classifier is selected on trainval data only")
    crops = load_crops(crops_npz)
    in_crops = np.isin(crops["pair_id"], pairs.loc[keep, "pair_id"].to_numpy())
    if not in_crops.any():
        raise SplitInputError(f"{crops_npz}: holds no crop of a train/val pair of {pairs_csv}")
    print(f"trainval data: {int(keep.sum())} of {len(pairs)} pairs of {pairs_csv} "
          f"({int((~keep).sum())} test rows dropped), {int(in_crops.sum())} of {len(in_crops)} crops of {crops_npz}")
    work_dir.mkdir(parents=True, exist_ok=True)
    pairs.loc[keep].to_csv(work_dir / "pairs.csv", index=False)
    save_crops({k: v[in_crops] for k, v in crops.items()}, work_dir / "crops.npz")
    return work_dir / "pairs.csv", work_dir / "crops.npz"


def epochs_from_history(best_epochs: list[int], max_epochs: int) -> int:
    """Smallest multiple of 10 >= 1.25 x the latest best epoch (1-based), capped at max_epochs."""
    return int(min(max_epochs, 10 * math.ceil(1.25 * (max(best_epochs) + 1) / 10)))


def ensemble_size_for(seed_sd: float, target: float = TARGET_SD) -> int:
    """Members whose mean has an AUROC seed SD of about `target` when one has `seed_sd` (SD / sqrt(M))."""
    return max(1, math.ceil((seed_sd / target) ** 2))


def summarise_runs(runs: pd.DataFrame, ensembles: pd.DataFrame) -> pd.DataFrame:
    """Per setting: mean/SD over seeds of the members' validation BCE and AUROC, the ensemble's, the 1-SE choice."""
    grouped = runs.groupby("setting", sort=False)
    table = grouped.agg(embed_dim=("embed_dim", "first"), depth=("depth", "first"), num_heads=("num_heads", "first"),
                        lr=("lr", "first"), seeds=("seed", "count"), val_bce_mean=("val_bce", "mean"),
                        val_bce_sd=("val_bce", "std"), val_auroc_mean=("val_auroc", "mean"),
                        val_auroc_sd=("val_auroc", "std"), best_epoch_max=("best_epoch", "max"),
                        s_per_epoch=("s_per_epoch", "mean"), n_params=("n_params", "first"))
    table = table.join(ensembles.set_index("setting"))
    best = table["val_bce_mean"].idxmin()
    threshold = table.at[best, "val_bce_mean"] + table.at[best, "val_bce_sd"] / math.sqrt(table.at[best, "seeds"])
    table["within_1se"] = table["val_bce_mean"] <= threshold
    table["chosen"] = False
    candidates = table[table["within_1se"]].sort_values(["n_params", "val_bce_mean"])
    table.loc[candidates.index[0], "chosen"] = True
    return table.reset_index()


def pooled_seed_sd(runs: pd.DataFrame, column: str = "val_auroc") -> float:
    """Within-setting SD of `column` pooled over the grid (each setting's variance weighted by its dof)."""
    groups = runs.groupby("setting")[column]
    dof = (groups.count() - 1).clip(lower=0)
    return float(np.sqrt((groups.var(ddof=1).fillna(0) * dof).sum() / dof.sum())) if dof.sum() else float("nan")


def seconds_per_epoch(params: dict, cohort: Cohort, n_crops: int, work_dir: Path, epochs: int = 2) -> float:
    """Wall time of one training epoch on about `n_crops` crops (the training crops repeated)."""
    train = cohort.indices("train")
    rows = np.resize(train, max(1, n_crops // 2))
    val = cohort.indices("val")
    torch.manual_seed(0)
    module = MalignancyClassifier(build_classifier(image_size=cohort.image_size, patch_size=params["patch_size"],
                                                   embed_dim=params["embed_dim"], depth=params["depth"],
                                                   num_heads=params["num_heads"], drop_rate=params["drop_rate"]),
                                  lr=params["lr"])
    start = time.time()
    fit(module, real_pairs_dataset(cohort.baseline[rows], cohort.followup[rows], cohort.labels[rows]),
        real_pairs_dataset(cohort.baseline[val], cohort.followup[val], cohort.labels[val]),
        TrainSettings(epochs=epochs, batch_size=params["batch_size"], seed=0), work_dir, progress=False)
    return (time.time() - start) / epochs


def main(argv=None) -> int:
    data = ROOT / "results" / "data"
    trainval = data / "trainval"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=Path,
                        default=trainval / "pairs.csv" if (trainval / "pairs.csv").is_file() else data / "pairs.csv")
    parser.add_argument("--crops", type=Path,
                        default=trainval / "crops.npz" if (trainval / "crops.npz").is_file() else data / "crops.npz")
    parser.add_argument("--config", type=Path, default=ROOT / "config.yaml",
                        help="the settings not in the grid come from its evaluation.classifier")
    parser.add_argument("--grid", type=parse_setting, nargs="+", default=[parse_setting(g) for g in DEFAULT_GRID])
    parser.add_argument("--seeds", type=int, default=3, help="members per setting (seeds config seed + 0, 1, ...)")
    parser.add_argument("--epochs", type=int, default=100, help="epochs each run trains (the selection picks fewer)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--time-crops", type=int, nargs="*", default=[], metavar="N",
                        help="also time one epoch per grid size at about N training crops")
    parser.add_argument("--work", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "classifier_selection.csv")
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error("--seeds must be at least 2 (the choice needs a seed SD)")
    config = yaml.safe_load(args.config.read_text())
    base, seed = dict(config["evaluation"]["classifier"]), int(config["seed"])
    base.update(pretrained=None, pretrained_file=None, epochs=args.epochs)

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        pairs_csv, crops_npz = trainval_inputs(args.pairs, args.crops, work / "data")
        cohort = Cohort.load(pairs_csv, crops_npz)
        val = cohort.indices("val")
        val_images = torch.cat([cohort.baseline[val], cohort.followup[val]]).numpy()
        val_labels = np.concatenate([cohort.labels[val].numpy()] * 2).astype(int)
        runs, ensembles = [], []
        for setting in args.grid:
            params = {**base, **{k: setting[k] for k in ("embed_dim", "depth", "num_heads", "lr")}}
            probs = []
            for index in range(args.seeds):
                make_deterministic(member_seed(seed, index), args.threads)
                out = work / "runs" / setting["setting"] / f"member_{index}"
                summary = train_classifier_member(pairs_csv, crops_npz, out,
                                                  work / "state" / setting["setting"] / str(index),
                                                  params, index=index, seed=seed)
                member = MalignancyClassifier.from_pretrained(out)
                p = member.predict_proba(val_images)
                probs.append(p)
                runs.append({**setting, "member": index, "seed": summary["seed"], "best_epoch": summary["best_epoch"],
                             "val_bce": log_loss(val_labels, p, labels=[0, 1]),
                             "val_auroc": roc_auc_score(val_labels, p),
                             "s_per_epoch": summary["seconds"] / args.epochs,
                             "n_params": sum(t.numel() for t in member.parameters())})
                print(json.dumps({k: runs[-1][k] for k in ("setting", "seed", "best_epoch", "val_bce", "val_auroc",
                                                           "s_per_epoch")}), flush=True)
            mean = np.mean(probs, axis=0)
            ensembles.append({"setting": setting["setting"],
                              "ensemble_val_bce": log_loss(val_labels, mean, labels=[0, 1]),
                              "ensemble_val_auroc": roc_auc_score(val_labels, mean)})
        runs = pd.DataFrame(runs)
        table = summarise_runs(runs, pd.DataFrame(ensembles))
        for n_crops in args.time_crops:
            sizes = table.drop_duplicates(["embed_dim", "depth", "num_heads"])
            timing = {(r.embed_dim, r.depth, r.num_heads): seconds_per_epoch(
                {**base, "embed_dim": r.embed_dim, "depth": r.depth, "num_heads": r.num_heads, "lr": r.lr}, cohort,
                n_crops, work / "timing" / f"{r.setting}_{n_crops}") for r in sizes.itertuples()}
            table[f"s_per_epoch_at_{n_crops}_crops"] = [timing[(r.embed_dim, r.depth, r.num_heads)]
                                                       for r in table.itertuples()]

    chosen = table[table["chosen"]].iloc[0]
    chosen_runs = runs[runs["setting"] == chosen["setting"]]
    seed_sd = pooled_seed_sd(runs)
    choice = {"embed_dim": int(chosen["embed_dim"]), "depth": int(chosen["depth"]),
              "num_heads": int(chosen["num_heads"]), "lr": float(chosen["lr"]),
              "epochs": epochs_from_history(chosen_runs["best_epoch"].tolist(), args.epochs),
              "ensemble_size": ensemble_size_for(seed_sd)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False, float_format="%.4g")
    runs.to_csv(args.out.with_suffix(".runs.csv"), index=False, float_format="%.4g")
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table.drop(columns=["n_params"]).round(4).to_string(index=False))
    print(f"pooled member validation-AUROC seed SD {seed_sd:.4f} over {len(runs)} runs")
    print("chosen (evaluation.classifier):", json.dumps(choice))
    print(f"wrote {args.out} and {args.out.with_suffix('.runs.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
