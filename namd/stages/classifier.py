"""Stage: the evaluation classifier (Section 4.1.2): its seed members, their ensemble, its scores and its spread.

Each member trains on the trainval files only (train split to learn, validation BCE to pick the
epoch); the ensemble of members 0..M-1 (mean probability) is the one frozen instrument behind
every Table 1 row. The test split is read here only to score: `classify_real`,
`classify_generated` and `evaluator_seeds`, which measures how far the real rows move when the
evaluator is retrained with other seeds, select nothing.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from namd.data.dataset import Cohort, CohortDataError
from namd.evaluation.classifier import (
    ClassifierEnsemble,
    MalignancyClassifier,
    build_classifier,
    load_classifier,
    member_seed,
    real_pairs_dataset,
    write_ensemble_index,
)
from namd.evaluation.metrics import diagnosis_metrics, format_ids
from namd.generate import load_generated
from namd.io import atomic_output, write_json
from namd.training import TrainSettings, file_fingerprint, fit, write_history, write_model_card

LOG = logging.getLogger(__name__)

#: written by train_classifier_member beside the weights: which member, which seed, how it was selected
MEMBER_FILE = "member.json"
#: the real-image rows the seed study scores, with the words the footnote uses
REAL_ROW_WORDS = {"real_baseline": "real baseline", "real_followup": "real follow-up"}


def train_classifier_member(pairs_csv, crops_npz, out_dir, state_dir, params: dict, *, index: int, seed: int,
                            device="cpu") -> dict:
    """Member `index` of the evaluator, trained with seed `member_seed(seed, index)` on trainval crops."""
    cohort = Cohort.load(pairs_csv, crops_npz)
    test_rows = cohort.indices("test")
    if len(test_rows):
        raise CohortDataError(f"{pairs_csv}: holds {len(test_rows)} test-split pair(s) (e.g. "
                              f"{format_ids(cohort.pairs['pair_id'].iloc[test_rows])}); the classifier trains on "
                              "the trainval files only")

    def split(name):
        rows = cohort.indices(name)
        return real_pairs_dataset(cohort.baseline[rows], cohort.followup[rows], cohort.labels[rows])

    seed = member_seed(seed, index)
    torch.manual_seed(seed)
    model = build_classifier(image_size=cohort.image_size, patch_size=params["patch_size"],
                             embed_dim=params["embed_dim"], depth=params["depth"], num_heads=params["num_heads"],
                             pretrained=params.get("pretrained"), pretrained_file=params.get("pretrained_file"),
                             drop_rate=params["drop_rate"])
    module = MalignancyClassifier(model, lr=params["lr"], weight_decay=params["weight_decay"],
                                  warmup_fraction=params["warmup_fraction"], augment=params["augment"])
    fingerprint = file_fingerprint(pairs_csv, crops_npz)
    settings = TrainSettings(epochs=params["epochs"], batch_size=params["batch_size"], seed=seed,
                             max_grad_norm=1.0, identity={"params": params, "data": fingerprint})
    result = fit(module, split("train"), split("val"), settings, state_dir, device=device)
    out_dir = Path(out_dir)
    module.save_pretrained(out_dir)
    write_history(result, out_dir / "history.csv")
    write_model_card(out_dir, name=f"evaluation classifier, member {index}", config=params, result=result,
                     data_fingerprint=fingerprint, seed=seed,
                     description="timm ViT, benign/malignant, trained on real baseline and follow-up crops of the "
                                 "training split; one seed member of the frozen evaluator behind every Table 1 row.")
    summary = {"index": int(index), "seed": seed, "best_epoch": result.best_epoch,
               "best_val_loss": result.best_val_loss, "seconds": result.seconds}
    (out_dir / MEMBER_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def member_seeds(member_dirs: Sequence[str | Path]) -> list[int]:
    """The seeds of members 0..len-1, read from their member.json; a folder out of order is named."""
    seeds = []
    for position, folder in enumerate(member_dirs):
        path = Path(folder) / MEMBER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file; {folder} is not a classifier member folder")
        entry = json.loads(path.read_text())
        if entry.get("index") != position:
            raise ValueError(f"{path}: index is {entry.get('index')!r} but the folder is member {position} of the list")
        seeds.append(int(entry["seed"]))
    return seeds


def assemble_classifier(member_dirs: Sequence[str | Path], out_dir) -> ClassifierEnsemble:
    """results/models/classifier: a copy of each member folder plus ensemble.json, self-contained for `namd predict`."""
    seeds = member_seeds(member_dirs)
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        names = [f"member_{i}" for i in range(len(member_dirs))]
        for name, folder in zip(names, member_dirs):
            shutil.copytree(folder, tmp / name)
        write_ensemble_index(tmp, names, seeds)
        ClassifierEnsemble.from_pretrained(tmp)  # a member that does not load fails here, not in a later rule
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    LOG.info("evaluation classifier: ensemble of %d members (seeds %s) in %s", len(seeds), seeds, out_dir)
    return ClassifierEnsemble.from_pretrained(out_dir)


def _write_csv(frame: pd.DataFrame, path) -> None:
    with atomic_output(path) as handle:
        frame.to_csv(handle, index=False)


def _probability_table(pair_ids, labels, seeds, probs: np.ndarray) -> pd.DataFrame:
    """Long table (pair_id, seed, label, prob) from probs shaped (N, K)."""
    n, k = probs.shape
    return pd.DataFrame({
        "pair_id": np.repeat(np.asarray(pair_ids, dtype=str), k),
        "seed": np.tile(np.asarray(seeds), n),
        "label": np.repeat(np.asarray(labels, dtype=int), k),
        "prob": probs.reshape(-1),
    })


def real_test_crops(pairs_csv, crops_npz) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(pair_ids, labels, {"real_baseline": crops, "real_followup": crops}) of the test pairs."""
    cohort = Cohort.load(pairs_csv, crops_npz)
    rows = cohort.indices("test")
    if not len(rows):
        raise CohortDataError(f"{pairs_csv}: no pair with a crop in {crops_npz} has split == 'test'")
    images = {"real_baseline": cohort.baseline[rows].numpy(), "real_followup": cohort.followup[rows].numpy()}
    return cohort.pairs["pair_id"].to_numpy()[rows], cohort.labels.numpy()[rows].astype(int), images


def classify_real(classifier_dir, pairs_csv, crops_npz, out_baseline, out_followup, *, device="cpu") -> None:
    """The real-image rows of Table 1: the evaluator on the real baseline and real follow-up test crops."""
    ids, labels, images = real_test_crops(pairs_csv, crops_npz)
    classifier = load_classifier(classifier_dir, device=device)
    for row, out in (("real_baseline", out_baseline), ("real_followup", out_followup)):
        probs = classifier.predict_proba(images[row])
        _write_csv(_probability_table(ids, labels, [0], probs[:, None]), out)


def classify_generated(classifier_dir, generated_npz, pairs_csv, out_csv, *, device="cpu", pair_ids=None) -> None:
    """The evaluator's probability for every generated follow-up, per test pair (every one, or
    `pair_ids`) and sampling seed."""
    pairs = pd.read_csv(pairs_csv, dtype={"pair_id": str})
    test = pairs[pairs["split"] == "test"]
    generated = load_generated(generated_npz, expected_pair_ids=test["pair_id"] if pair_ids is None else pair_ids)
    classifier = load_classifier(classifier_dir, device=device)
    n, k = generated["images"].shape[:2]
    probs = classifier.predict_proba(generated["images"].reshape(n * k, *generated["images"].shape[2:]))
    labels = test.set_index("pair_id").loc[generated["pair_id"], "label"].to_numpy()
    _write_csv(_probability_table(generated["pair_id"], labels, generated["seeds"], probs.reshape(n, k)), out_csv)


def _seed_range(seeds: Sequence[int]) -> str:
    seeds = list(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(str(s) for s in seeds)


def seed_study(member_probs: dict[str, np.ndarray], labels: np.ndarray, seeds: Sequence[int],
               ensemble_size: int) -> tuple[pd.DataFrame, dict]:
    """Per-member and per-ensemble test AUROC/AUPRC of each real row, and their spread over seeds.

    `member_probs[row]` is (N, n_members); ensemble e is members e*M .. (e+1)*M - 1, so ensemble 0
    is the workflow's evaluator and the others are disjoint re-draws of it. SDs are ddof=1
    (NaN with a single value).
    """
    n_members = len(seeds)
    if ensemble_size < 1 or n_members % ensemble_size:
        raise ValueError(f"seed_study: {n_members} members do not make whole ensembles of {ensemble_size}")
    ensembles = [list(range(e * ensemble_size, (e + 1) * ensemble_size)) for e in range(n_members // ensemble_size)]
    lines = []
    for row, probs in member_probs.items():
        if probs.shape != (len(labels), n_members):
            raise ValueError(f"seed_study: {row} probabilities have shape {probs.shape}, "
                             f"expected ({len(labels)}, {n_members})")
        scored = [("member", i, [i], probs[:, i]) for i in range(n_members)]
        scored += [("ensemble", e, members, probs[:, members].mean(axis=1)) for e, members in enumerate(ensembles)]
        for kind, index, members, p in scored:
            metrics = diagnosis_metrics(_probability_table(np.arange(len(labels)), labels, [0], p[:, None]), row)
            in_workflow = (kind == "member" and index < ensemble_size) or (kind == "ensemble" and index == 0)
            lines.append({"row": row, "kind": kind, "index": index, "in_workflow": in_workflow,
                          "seeds": " ".join(str(seeds[m]) for m in members),
                          **metrics.iloc[0][["auroc", "auprc", "n_pairs", "n_positive"]].to_dict()})
    table = pd.DataFrame(lines)

    def sd(values: pd.Series) -> float:
        return float(values.std(ddof=1)) if len(values) > 1 else float("nan")

    summary = {"ensemble_size": ensemble_size, "n_members": n_members, "n_ensembles": len(ensembles),
               "workflow_seeds": [int(s) for s in seeds[:ensemble_size]], "rows": {}}
    for row, part in table.groupby("row", sort=False):
        single, whole = part[part["kind"] == "member"], part[part["kind"] == "ensemble"]
        summary["rows"][row] = {
            metric: {"member_mean": float(single[metric].mean()), "member_sd": sd(single[metric]),
                     "ensemble_mean": float(whole[metric].mean()), "ensemble_sd": sd(whole[metric]),
                     "workflow": float(whole.loc[whole["index"] == 0, metric].iloc[0])}
            for metric in ("auroc", "auprc")
        }

    def spread(row: str) -> str:
        auroc = summary["rows"][row]["auroc"]
        ensemble = (f"{auroc['ensemble_sd']:.3f} for the ensemble ({len(ensembles)} disjoint ensembles)"
                    if len(ensembles) > 1 else "ensemble SD not measured (one ensemble)")
        return f"{REAL_ROW_WORDS.get(row, row)} {auroc['member_sd']:.3f} per single ViT ({n_members} seeds), {ensemble}"

    summary["footnote"] = (
        f"Evaluator: mean probability of an ensemble of {ensemble_size} timm ViTs (seeds "
        f"{_seed_range(seeds[:ensemble_size])}); its seed SD on the real rows (test AUROC): "
        + "; ".join(spread(row) for row in member_probs) + "."
    )
    return table, summary


def evaluator_seeds(member_dirs: Sequence[str | Path], ensemble_size: int, pairs_csv, crops_npz, out_csv, out_json, *,
                    device="cpu") -> dict:
    """results/eval/evaluator_seeds.{csv,json}: the instrument's own spread on the real test rows."""
    seeds = member_seeds(member_dirs)
    ids, labels, images = real_test_crops(pairs_csv, crops_npz)
    probs = {row: np.empty((len(ids), len(member_dirs))) for row in images}
    for i, folder in enumerate(member_dirs):
        member = MalignancyClassifier.from_pretrained(folder, device=device)
        for row, crops in images.items():
            probs[row][:, i] = member.predict_proba(crops)
    table, summary = seed_study(probs, labels, seeds, ensemble_size)
    _write_csv(table, out_csv)
    write_json(summary, out_json)
    LOG.info("%s", summary["footnote"])
    return summary
