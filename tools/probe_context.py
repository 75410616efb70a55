"""What does the LLM context C carry of the record? Linear probes on the training and validation reports.

    .venv/bin/python tools/probe_context.py --pairs RESULTS/data/trainval/pairs.csv [--config CONFIG ...]
        [--prompts RESULTS/models/namd/soft_prompts]

Encodes every training and validation report with NAMD's context encoder at its initial soft
prompts (the config's `ldm` settings and seed), then fits on the training pairs and scores on the
validation pairs: a logistic regression of the label on C, ridge regressions of the baseline
long diameter and of the diameter change (follow-up - baseline, from pairs.csv) on the
standardised C; the same logistic regression on the mean of the LLM states over the report tokens
(the read-out MiniLM is trained for) and, with --prompts, on C with a trained model's prompts.
Beside them: the validation AUROC of the baseline diameter alone, and how alike
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


def encode(encoder: SoftPromptContextEncoder, reports: list[str],
           batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(C, the same forward pass's LLM states averaged over the report tokens of each prompt set).

    The mean is the read-out sentence-transformers train MiniLM for; C is Eq. 7's last-token state.
    """
    captured = {}

    def keep(module, args, kwargs, output):
        captured["hidden"], captured["mask"] = output.last_hidden_state, kwargs["attention_mask"]

    handle = encoder.llm.register_forward_hook(keep, with_kwargs=True)
    contexts, means = [], []
    try:
        with torch.no_grad():
            for i in range(0, len(reports), batch_size):
                chunk = reports[i:i + batch_size]
                contexts.append(encoder(chunk).flatten(1).numpy())
                hidden, mask = captured["hidden"], captured["mask"]
                # each row: prefix, the prompts, the report tokens, the end tokens, padding
                position = torch.arange(mask.shape[1])
                first = len(encoder.prefix_ids) + encoder.n_prompt_tokens
                report = (position >= first) & (position < mask.sum(dim=1, keepdim=True) - len(encoder.end_ids))
                pooled = (hidden * report[..., None]).sum(dim=1) / report.sum(dim=1, keepdim=True)
                means.append(pooled.reshape(len(chunk), -1).float().numpy())
    finally:
        handle.remove()
    return np.concatenate(contexts), np.concatenate(means)


def label_auroc(x: np.ndarray, labels: np.ndarray, train: np.ndarray, val: np.ndarray) -> float:
    logistic = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=8, max_iter=3000)).fit(x[train], labels[train])
    return float(roc_auc_score(labels[val], logistic.predict_proba(x[val])[:, 1]))


def mean_pairwise_cosine(x: np.ndarray) -> float:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return float((x @ x.T)[np.triu_indices(len(x), 1)].mean())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=Path, required=True, help="a run's data/trainval/pairs.csv")
    parser.add_argument("--config", nargs="+", type=Path, default=[ROOT / "config.yaml"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", type=Path, default=None,
                        help="a trained model's soft_prompts folder (e.g. RESULTS/models/namd/soft_prompts): "
                             "its C is probed too")
    args = parser.parse_args(argv)
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
    context, token_mean = encode(encoder, pairs["report"].tolist())
    train = pairs["split"].eq("train").to_numpy()
    val = pairs["split"].eq("val").to_numpy()
    labels = pairs["label"].to_numpy(dtype=int)
    diameter = pairs["SCT_LONG_DIA"].astype(float)
    change = (pairs["SCT_LONG_DIA_follow"].astype(float) - diameter).fillna(0.0).to_numpy()
    diameter = diameter.fillna(diameter[train].median()).to_numpy()  # NLST missing codes: the training median

    standardised = StandardScaler().fit(context[train]).transform(context)
    rows = {
        "reports (train / val)": f"{train.sum()} / {val.sum()}",
        "mean pairwise cosine of C, raw (val, first 200)": mean_pairwise_cosine(context[val][:200]),
        "mean pairwise cosine of C, standardised": mean_pairwise_cosine(standardised[val][:200]),
        "label from C: val AUROC (logistic)": label_auroc(context, labels, train, val),
        "label from the mean over report tokens: val AUROC (logistic)": label_auroc(token_mean, labels, train, val),
        "label from the baseline diameter alone: val AUROC": roc_auc_score(labels[val], diameter[val]),
    }
    for name, target in (("baseline diameter", diameter), ("diameter change", change)):
        ridge = RidgeCV(alphas=np.logspace(-2, 4, 13)).fit(standardised[train], target[train])
        rows[f"{name} from C: val Spearman (ridge)"] = stats.spearmanr(ridge.predict(standardised[val]),
                                                                       target[val]).statistic
    if args.prompts:
        trained, _ = encode(encoder.load_soft_prompts(args.prompts), pairs["report"].tolist())
        rows["label from C, trained prompts: val AUROC (logistic)"] = label_auroc(trained, labels, train, val)
        rows["mean pairwise cosine of C, trained prompts, raw"] = mean_pairwise_cosine(trained[val][:200])
    width = max(map(len, rows))
    for name, value in rows.items():
        print(f"{name:<{width}}  {value if isinstance(value, str) else f'{value:.3f}'}")


if __name__ == "__main__":
    main()
