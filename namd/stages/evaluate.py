"""Stage: the evaluation of Section 4.1.2 — one frozen classifier, every Table 1 row, the figures.

The classifier is trained once on real training-split crops and chosen on the validation split;
every row of Table 1 is that same classifier applied to the row's test images. Probabilities are
saved per pair and seed, so every number in the table can be recomputed from them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import torch

from namd.data.dataset import Cohort
from namd.evaluation.classifier import MalignancyClassifier, build_classifier, real_pairs_dataset
from namd.evaluation.image_metrics import image_quality
from namd.evaluation.metrics import check_complete, diagnosis_metrics
from namd.evaluation.significance import compare_rows
from namd.evaluation.table import build_table1, row_result, to_csv, to_latex
from namd.generate import load_generated
from namd.training import TrainSettings, file_fingerprint, fit, write_history, write_model_card

LOG = logging.getLogger(__name__)

REAL_ROWS = {"real_baseline": "Real baseline LDCT", "real_followup": "Real follow-up LDCT"}
#: Table 1's names of the generative rows
TITLES = {
    "mcwgan": "McWGAN",
    "corrflownet_ode": "CorrFlowNet (ODE)",
    "sd15": "SD1.5",
    "flux": "Flux (Rectified Flow)",
    "ddlcxr": "DDL-CXR",
    "imageflownet_sde": "ImageFlowNet (SDE)",
    "corrflownet_sde": "CorrFlowNet (SDE)",
    "namd": "NAMD (Ours)",
    "namd_unaligned": "NAMD (w/o L_align)",
}
LATEX_TITLES = {"namd_unaligned": r"NAMD (w/o $\mathcal{L}_{\text{align}}$)"}


def train_classifier(pairs_csv, crops_npz, out_dir, state_dir, params: dict, *, seed: int, device="cpu") -> dict:
    cohort = Cohort.load(pairs_csv, crops_npz)

    def split(name):
        rows = cohort.indices(name)
        return real_pairs_dataset(cohort.baseline[rows], cohort.followup[rows], cohort.labels[rows])

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
    write_model_card(out_dir, name="evaluation classifier", config=params, result=result,
                     data_fingerprint=fingerprint, seed=seed,
                     description="timm ViT, benign/malignant, trained on real baseline and follow-up crops of the "
                                 "training split; the one frozen classifier behind every Table 1 row.")
    return {"best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss}


def _probability_table(pair_ids, labels, seeds, probs: np.ndarray) -> pd.DataFrame:
    """Long table (pair_id, seed, label, prob) from probs shaped (N, K)."""
    n, k = probs.shape
    return pd.DataFrame({
        "pair_id": np.repeat(np.asarray(pair_ids, dtype=str), k),
        "seed": np.tile(np.asarray(seeds), n),
        "label": np.repeat(np.asarray(labels, dtype=int), k),
        "prob": probs.reshape(-1),
    })


def classify_real(classifier_dir, pairs_csv, crops_npz, out_baseline, out_followup, *, device="cpu") -> None:
    cohort = Cohort.load(pairs_csv, crops_npz)
    classifier = MalignancyClassifier.from_pretrained(classifier_dir, device=device)
    rows = cohort.indices("test")
    ids, labels = cohort.pairs["pair_id"].to_numpy()[rows], cohort.labels.numpy()[rows]
    for images, out in ((cohort.baseline, out_baseline), (cohort.followup, out_followup)):
        probs = classifier.predict_proba(images[rows])
        _probability_table(ids, labels, [0], probs[:, None]).to_csv(out, index=False)


def classify_generated(classifier_dir, generated_npz, pairs_csv, out_csv, *, device="cpu") -> None:
    pairs = pd.read_csv(pairs_csv, dtype={"pair_id": str})
    test = pairs[pairs["split"] == "test"]
    generated = load_generated(generated_npz, expected_pair_ids=test["pair_id"])
    classifier = MalignancyClassifier.from_pretrained(classifier_dir, device=device)
    n, k = generated["images"].shape[:2]
    probs = classifier.predict_proba(generated["images"].reshape(n * k, *generated["images"].shape[2:]))
    labels = test.set_index("pair_id").loc[generated["pair_id"], "label"].to_numpy()
    _probability_table(generated["pair_id"], labels, generated["seeds"], probs.reshape(n, k)).to_csv(out_csv, index=False)


def image_metrics(method: str, classifier_dir, generated_npz, pairs_csv, crops_npz, out_csv, params: dict, *,
                  device="cpu") -> None:
    """LPIPS and FID of generated vs real follow-ups, or labelled stand-ins when weights are absent."""
    cohort = Cohort.load(pairs_csv, crops_npz)
    rows = cohort.indices("test")
    generated = load_generated(generated_npz, expected_pair_ids=cohort.pairs["pair_id"].to_numpy()[rows])
    classifier = MalignancyClassifier.from_pretrained(classifier_dir, device=device)
    results = image_quality(
        method, generated["images"], generated["pair_id"], generated["seeds"].tolist(),
        cohort.followup[rows].numpy(), cohort.pairs["pair_id"].to_numpy()[rows],
        feature_extractor=classifier.embed, extractor_name="ViT", allow_stand_in=params["allow_stand_in"],
        fid_dims=params["fid_dims"], device=device, batch_size=params["batch_size"],
    )
    frames = []
    for key, result in results.items():
        frame = result.per_seed.rename(columns={key: "value"}).assign(
            key=key, name=result.name, stand_in=result.stand_in, description=result.description)
        frames.append(frame)
    pd.concat(frames, ignore_index=True).to_csv(out_csv, index=False)


def _image_results(path) -> dict:
    from namd.evaluation.image_metrics import ImageMetricResult

    frame = pd.read_csv(path)
    return {
        key: ImageMetricResult(key=key, name=str(part["name"].iloc[0]), stand_in=bool(part["stand_in"].iloc[0]),
                               description=str(part["description"].iloc[0]),
                               per_seed=part[["seed", "value"]].rename(columns={"value": key}).reset_index(drop=True))
        for key, part in frame.groupby("key")
    }


def build_table(probs: Mapping[str, str], image: Mapping[str, str], methods: Mapping[str, tuple[str, bool]], pairs_csv, *,
                seeds, reference: str, significance_params: dict, out_tex, out_csv, out_significance,
                out_per_seed, seed: int) -> pd.DataFrame:
    """Table 1 from the saved probabilities and image metrics; bold/underline computed, never typed.

    `methods` maps each generative row to (Table 1 group, stochastic?); the real-image rows are
    named in REAL_ROWS.
    """
    pairs = pd.read_csv(pairs_csv, dtype={"pair_id": str})
    test_ids = pairs.loc[pairs["split"] == "test", "pair_id"]
    frames, rows, notes = {}, [], {}
    per_seed = []
    for name, path in probs.items():
        frame = pd.read_csv(path, dtype={"pair_id": str})
        stochastic = name not in REAL_ROWS and methods[name][1]
        expected_seeds = list(seeds) if stochastic else [0]
        check_complete(frame, test_ids, expected_seeds, name)
        diagnosis = diagnosis_metrics(frame, name)
        per_seed.append(diagnosis)
        images = _image_results(image[name]) if name in image else None
        for result in (images or {}).values():
            if result.stand_in:
                notes[result.name] = result.description
        title = REAL_ROWS.get(name) or TITLES.get(name, name)
        group = "Real Image Baselines" if name in REAL_ROWS else methods[name][0]
        rows.append(row_result(title, group, diagnosis, images, latex_name=LATEX_TITLES.get(name)))
        frames[title] = frame
    table = build_table1(rows)
    significance = compare_rows(frames, reference=TITLES.get(reference, reference), alpha=significance_params["alpha"],
                                correction=significance_params["correction"], n_boot=significance_params["n_boot"],
                                seed=seed)
    to_latex(table, out_tex, metric_notes=notes, significance=significance, alpha=significance_params["alpha"])
    to_csv(table, out_csv)
    significance.to_csv(out_significance, index=False)
    pd.concat(per_seed, ignore_index=True).to_csv(out_per_seed, index=False)
    return table


def latents_of_test_pairs(latents_npz, pairs_csv) -> tuple[np.ndarray, np.ndarray]:
    """Baseline latents of the test pairs and their longest diameters (Figure 2)."""
    pairs = pd.read_csv(pairs_csv, dtype={"pair_id": str})
    test = pairs[pairs["split"] == "test"]
    with np.load(latents_npz) as data:
        index = {p: i for i, p in enumerate(data["pair_id"].tolist())}
        latents = data["baseline"][[index[p] for p in test["pair_id"]]]
    return latents, pd.to_numeric(test["SCT_LONG_DIA"]).to_numpy(dtype=float)


def probability_matrix(probs_csv) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pair_ids, labels, probs (N, K)) from a long probability table, pairs in file order."""
    frame = pd.read_csv(probs_csv, dtype={"pair_id": str})
    wide = frame.pivot(index="pair_id", columns="seed", values="prob")
    order = frame["pair_id"].drop_duplicates().to_numpy()
    labels = frame.drop_duplicates("pair_id").set_index("pair_id").loc[order, "label"].to_numpy()
    return order, labels, wide.loc[order].to_numpy()


def write_json(obj, path) -> None:
    """Strict JSON: a score that could not be computed (NaN) is written as null."""

    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (float, np.floating)):
            return None if np.isnan(value) else float(value)
        return value

    Path(path).write_text(json.dumps(clean(obj), indent=2, sort_keys=True, allow_nan=False))
