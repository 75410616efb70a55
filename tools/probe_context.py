"""What does the LLM context C carry of the record? Linear probes on the training and validation reports.

    .venv/bin/python tools/probe_context.py --pairs RESULTS/data/trainval/pairs.csv [--config CONFIG ...]

Encodes every training and validation report with NAMD's context encoder at its initial soft
prompts (the config's `ldm` settings and seed), then fits on the training pairs and scores on the
validation pairs: a logistic regression of the label on C, ridge regressions of the baseline
long diameter and of the diameter change (follow-up - baseline, from pairs.csv) on the
standardised C. Beside them: the validation AUROC of the baseline diameter alone, and how alike
the contexts of two reports are (mean pairwise cosine, raw and standardised). Why: to tell a
context that holds nothing (the U-Net has nothing to read) from one that holds the record in
small variations of a nearly constant vector (the U-Net could read it, if it has a reason to).
Reads no test pair.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats
from sklearn.linear_model import LogisticRegressionCV, RidgeCV
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from namd.config import load_config
from namd.models.text_encoder import SoftPromptContextEncoder

ROOT = Path(__file__).resolve().parents[1]


def encode(encoder: SoftPromptContextEncoder, reports: list[str], batch_size: int = 64) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([encoder(reports[i:i + batch_size]).flatten(1).numpy()
                               for i in range(0, len(reports), batch_size)])


def mean_pairwise_cosine(x: np.ndarray) -> float:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return float((x @ x.T)[np.triu_indices(len(x), 1)].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=Path, required=True, help="a run's data/trainval/pairs.csv")
    parser.add_argument("--config", nargs="+", type=Path, default=[ROOT / "config.yaml"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(*args.config)
    ldm = config["ldm"]
    pairs = pd.read_csv(args.pairs, dtype={"pair_id": str})
    if "test" in set(pairs["split"]):
        raise ValueError(f"{args.pairs}: holds test pairs; give the trainval pairs.csv (this probe reads no test pair)")
    encoder = SoftPromptContextEncoder.from_pretrained(
        ldm["llm"], n_sets=ldm["n_sets"], n_prompt_tokens=ldm["n_prompt_tokens"], max_length=ldm["max_length"],
        init_seed=int(config["seed"]),
    ).eval()
    context = encode(encoder, pairs["report"].tolist())
    train = pairs["split"].eq("train").to_numpy()
    val = pairs["split"].eq("val").to_numpy()
    labels = pairs["label"].to_numpy(dtype=int)
    diameter = pairs["SCT_LONG_DIA"].astype(float)
    change = (pairs["SCT_LONG_DIA_follow"].astype(float) - diameter).fillna(0.0).to_numpy()
    diameter = diameter.fillna(diameter[train].median()).to_numpy()  # NLST missing codes: the training median

    standardised = StandardScaler().fit(context[train]).transform(context)
    logistic = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=8, max_iter=3000)).fit(context[train],
                                                                                               labels[train])
    rows = {
        "reports (train / val)": f"{train.sum()} / {val.sum()}",
        "mean pairwise cosine of C, raw (val, first 200)": mean_pairwise_cosine(context[val][:200]),
        "mean pairwise cosine of C, standardised": mean_pairwise_cosine(standardised[val][:200]),
        "label from C: val AUROC (logistic)": roc_auc_score(labels[val], logistic.predict_proba(context[val])[:, 1]),
        "label from the baseline diameter alone: val AUROC": roc_auc_score(labels[val], diameter[val]),
    }
    for name, target in (("baseline diameter", diameter), ("diameter change", change)):
        ridge = RidgeCV(alphas=np.logspace(-2, 4, 13)).fit(standardised[train], target[train])
        rows[f"{name} from C: val Spearman (ridge)"] = stats.spearmanr(ridge.predict(standardised[val]),
                                                                       target[val]).statistic
    width = max(map(len, rows))
    for name, value in rows.items():
        print(f"{name:<{width}}  {value if isinstance(value, str) else f'{value:.3f}'}")


if __name__ == "__main__":
    main()
