"""Stage: the evaluation of Section 4.1.2 — image metrics, Table 1 and the figures.

Every row is scored by the one frozen evaluator (namd.stages.classifier: an ensemble of ViT seeds
trained on real trainval crops, chosen on validation) or, for the clinical reference rows, by a
learning-free score of the record. Probabilities are saved per pair and seed, so every number in
the table can be recomputed from them.
"""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from namd.data.dataset import Cohort
from namd.evaluation.classifier import load_classifier
from namd.evaluation.image_metrics import image_quality
from namd.evaluation.metrics import check_complete, diagnosis_metrics
from namd.evaluation.significance import compare_rows
from namd.evaluation.clinical import table_notes
from namd.evaluation.table import build_table1, latex_escape, row_result, to_csv, to_latex
from namd.generate import load_generated
from namd.rows import CLINICAL_ROWS, REFERENCE_ROWS

LOG = logging.getLogger(__name__)


def image_metrics(method: str, classifier_dir, generated_npz, pairs_csv, crops_npz, out_csv, params: dict, *,
                  device="cpu") -> None:
    """LPIPS and FID of generated vs real follow-ups, or labelled stand-ins when weights are absent."""
    cohort = Cohort.load(pairs_csv, crops_npz)
    rows = cohort.indices("test")
    generated = load_generated(generated_npz, expected_pair_ids=cohort.pairs["pair_id"].to_numpy()[rows])
    classifier = load_classifier(classifier_dir, device=device)  # an ensemble's features are member 0's
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


def build_table(probs: Mapping[str, str], image: Mapping[str, str], methods: Mapping[str, tuple[str, bool]],
                pairs_csv, *, seeds, reference: str, significance_params: dict, out_tex, out_csv, out_significance,
                out_per_seed, seed: int, cohort_source: str = "nlst", extra_notes: Sequence[str] = (),
                titles: Mapping[str, str] | None = None, latex_titles: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Table 1 from the saved probabilities and image metrics; bold/underline computed, never typed.

    `methods` maps each generative row to (Table 1 group, stochastic?), `titles` to its title and
    `latex_titles` to its LaTeX title where it has one (GenerativeMethod.title / .latex_title; a
    row without a title is named by its name); the other rows, the real images' and the clinical
    scores', are titled in namd.rows.REFERENCE_ROWS. A clinical row (CLINICAL_ROWS) may cover a
    subset of the test pairs (a record lacking a field its score needs); its footnote says how
    many, and DeLong compares it with the reference on the pairs it scores. extra_notes:
    LaTeX-ready footnote lines.
    """
    titles, latex_titles = titles or {}, latex_titles or {}
    pairs = pd.read_csv(pairs_csv, dtype={"pair_id": str})
    test_ids = pairs.loc[pairs["split"] == "test", "pair_id"]
    frames, rows, notes = {}, [], {}
    per_seed, coverage = [], {}
    for name, path in probs.items():
        frame = pd.read_csv(path, dtype={"pair_id": str})
        stochastic = name not in REFERENCE_ROWS and methods[name][1]
        expected_seeds = list(seeds) if stochastic else [0]
        expected_ids = test_ids[test_ids.isin(frame["pair_id"])] if name in CLINICAL_ROWS else test_ids
        check_complete(frame, expected_ids, expected_seeds, name)
        diagnosis = diagnosis_metrics(frame, name)
        per_seed.append(diagnosis)
        images = _image_results(image[name]) if name in image else None
        for result in (images or {}).values():
            if result.stand_in:
                notes[result.name] = result.description
        title = REFERENCE_ROWS.get(name) or titles.get(name, name)
        group = "Real Image Baselines" if name in REFERENCE_ROWS else methods[name][0]
        rows.append(row_result(title, group, diagnosis, images, latex_name=latex_titles.get(name)))
        frames[title] = frame
        if name in CLINICAL_ROWS:
            coverage[name] = (title, len(expected_ids), len(test_ids))
    table = build_table1(rows)
    significance = compare_rows(frames, reference=titles.get(reference, reference), alpha=significance_params["alpha"],
                                correction=significance_params["correction"], n_boot=significance_params["n_boot"],
                                seed=seed, partial_rows=[title for title, _, _ in coverage.values()])
    clinical = [latex_escape(note) for note in table_notes(coverage, phantom=cohort_source == "phantom")]
    to_latex(table, out_tex, metric_notes=notes, significance=significance, alpha=significance_params["alpha"],
             extra_notes=clinical + list(extra_notes))
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
