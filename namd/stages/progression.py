"""Stage: the progression readout validated on the phantom's truth, and every row's predicted growth.

The readout (namd.evaluation.readout) is measured once per crop; the table rows are the real
follow-up (the ceiling: true change), the identity "follow-up := baseline" (no growth at all),
every generative method of the run, read from its samples file (namd.generate), and on the phantom
a calibrated generator: what a faithful stochastic generator reads at the methods' K.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from namd.data.crops import crop_rows, load_crops
from namd.evaluation.calibrated import NoOutcomeError, RelativeChanges, calibrated_followups, recalibrated, \
    truth_risks
from namd.evaluation.progression import figure, figure_points, row_metrics, to_latex, write_csv
from namd.evaluation.readout import GRID_KEYS, ReadoutSettings, crop_spacings, measure_crops, readout_grid, \
    truth_crops, validate_readout
from namd.evaluation.table import latex_escape
from namd.generate import load_generated
from namd.rows import REAL_ROWS

LOG = logging.getLogger(__name__)

IDENTITY = "identity"
CALIBRATED = "calibrated"
#: titles of the rows that are no generative method (a method's is GenerativeMethod.title)
REFERENCE_TITLES = {"real_followup": REAL_ROWS["real_followup"], IDENTITY: "Identity (follow-up := baseline)",
                    CALIBRATED: "Calibrated generator (knows the true risk)"}


def readout_validation(pairs_csv, crops_npz, crops_csv, truth_csv, *, out_csv, out_summary, out_grid,
                       params: Mapping, window) -> pd.DataFrame:
    """Per-crop readout against the truth, its MAE/bias by split x type, and the train/val selection grid."""
    settings = ReadoutSettings.from_config(params)
    table = truth_crops(pd.read_csv(pairs_csv, dtype={"pair_id": str}), load_crops(crops_npz),
                        pd.read_csv(crops_csv, dtype={"pair_id": str}), pd.read_csv(truth_csv))
    grid = readout_grid(table, settings, params["selection_grid"], window)
    best = grid.iloc[0]
    configured = {k: getattr(settings, k) for k in GRID_KEYS}
    if any(float(best[k]) != v for k, v in configured.items()):
        LOG.warning("configured readout %s is not the train/val grid's best %s (type-balanced MAE %.3f mm)",
                    configured, {k: float(best[k]) for k in GRID_KEYS}, best["type_balanced_mae_mm"])
    measured, summary = validate_readout(table, settings, window)
    write_csv(measured, out_csv)
    write_csv(summary, out_summary)
    write_csv(grid, out_grid)
    LOG.info("readout error by split x type:\n%s", summary.round(3).to_string(index=False))
    return summary


def split_readouts(pairs_csv, crops_npz, crops_csv, settings, window, split="test"):
    """(the split's pairs, their baseline pixel spacing, baseline and real follow-up diameters)."""
    pairs = pd.read_csv(pairs_csv, dtype={"pair_id": str})
    part = pairs[pairs["split"] == split]
    if part.empty:
        raise ValueError(f"{pairs_csv}: no {split} pair")
    crops = load_crops(crops_npz)
    rows = crop_rows(crops, part["pair_id"].tolist(), crops_npz)
    table = pd.read_csv(crops_csv, dtype={"pair_id": str})
    spacing = crop_spacings(table, part["pair_id"], "base", str(crops_csv))
    baseline = measure_crops(crops["baseline"][rows], spacing, settings, window)
    followup = measure_crops(crops["followup"][rows], crop_spacings(table, part["pair_id"], "follow", str(crops_csv)),
                             settings, window)
    return part, spacing, baseline, followup


def generated_diameters(generated_npz, pair_ids, spacing, settings, window) -> tuple[np.ndarray, list[int]]:
    """(N, K) readout diameters of a generated-samples file in the order of `pair_ids`, and its seeds."""
    samples = load_generated(generated_npz, expected_pair_ids=pair_ids)
    order = {p: i for i, p in enumerate(samples["pair_id"].tolist())}
    images = samples["images"][[order[p] for p in pair_ids]]
    return measure_crops(images, spacing, settings, window), samples["seeds"].tolist()


def progression(pairs_csv, crops_npz, crops_csv, generated: Mapping[str, str], methods: Sequence[str], *,
                params: Mapping, window, out_csv, out_per_seed, out_points, out_tex, out_png, out_pdf,
                titles: Mapping[str, str] | None = None, latex_titles: Mapping[str, str] | None = None,
                calibrated: Mapping[str, str] | None = None, seed: int = 0) -> pd.DataFrame:
    """Table, per-seed metrics, per-pair points and figure of every row's predicted diameter change.

    `titles` names each method's row and `latex_titles` its LaTeX title where it has one
    (GenerativeMethod.title / .latex_title); a method without a title is named by its name. With
    `calibrated` (the phantom's truth and the training pairs: keys truth, pairs, crops, crops_table) the
    table gains the calibrated generator's row (namd.evaluation.calibrated), K = the methods' largest K,
    drawn once with `seed`.
    """
    row_titles = {**REFERENCE_TITLES, **(titles or {})}
    missing = [m for m in methods if m not in generated]
    if missing:
        raise ValueError(f"progression: no generated samples file given for method(s) {missing}")
    absent = [f"{m} ({generated[m]})" for m in methods if not Path(generated[m]).is_file()]
    if absent:
        raise FileNotFoundError(f"progression: generated samples file missing for method(s) {absent}")
    settings = ReadoutSettings.from_config(params)
    test, spacing, baseline, real_followup = split_readouts(pairs_csv, crops_npz, crops_csv, settings, window)
    ids, labels = test["pair_id"].to_numpy(), test["label"].to_numpy(dtype=int)
    if (baseline == 0).any():
        LOG.warning("real baseline read as no nodule for %d test pair(s): %s", int((baseline == 0).sum()),
                    list(ids[baseline == 0][:10]))
    rows = {"real_followup": (real_followup[:, None], [0]), IDENTITY: (baseline[:, None], [0])}
    for method in methods:
        rows[method] = generated_diameters(generated[method], ids, spacing, settings, window)
        LOG.info("%s: %d of %d samples read as no nodule", method, int((rows[method][0] == 0).sum()),
                 rows[method][0].size)
    if calibrated and methods:
        k = max(len(rows[m][1]) for m in methods)
        try:
            rows[CALIBRATED] = (calibrated_row(calibrated, test, baseline, settings, window, k, seed), list(range(k)))
        except NoOutcomeError as error:  # a reference row, not a result: the table stands without it
            LOG.warning("no calibrated generator row: %s", error)
    per_seed, summaries, points = [], [], []
    for name, (diameters, seeds) in rows.items():
        seed_metrics, summary = row_metrics(name, diameters, seeds, baseline, real_followup, labels)
        per_seed.append(seed_metrics)
        summaries.append({"title": row_titles.get(name, name), **summary})
        points.append(figure_points(name, diameters, baseline, real_followup, labels, ids))
    table = pd.DataFrame(summaries)
    write_csv(table, out_csv)
    write_csv(pd.concat(per_seed, ignore_index=True), out_per_seed)
    write_csv(pd.concat(points, ignore_index=True), out_points)
    note = (f"threshold {settings.threshold_hu:g} HU, centre component, leak guard (disc {settings.disc_factor:g} R "
            f"+ {settings.disc_margin_px:g} px, opening {settings.opening_factor:g} R), long axis of the equivalent "
            "ellipse (namd/evaluation/readout.py).")
    latex = {**{n: latex_escape(t) for n, t in row_titles.items()}, **(latex_titles or {})}
    to_latex(table, out_tex, latex, readout_note=note)
    figure(pd.concat(points, ignore_index=True), list(rows), row_titles, out_png, out_pdf)
    return table


def calibrated_row(files: Mapping[str, str], test: pd.DataFrame, baseline, settings, window, k: int,
                   seed: int) -> np.ndarray:
    """(N, K) follow-up diameters of the calibrated generator on the test pairs: risk from the phantom's truth
    (shifted to the training pairs' base rate), changes from the training pairs' real follow-ups."""
    train, _, train_baseline, train_follow = split_readouts(files["pairs"], files["crops"], files["crops_table"],
                                                            settings, window, split="train")
    train_labels = train["label"].to_numpy(dtype=int)
    changes = RelativeChanges.of(train_baseline, train_follow, train_labels)  # first: it needs both outcomes
    risk = recalibrated(truth_risks(test, files["truth"]), truth_risks(train, files["truth"]), train_labels)
    return calibrated_followups(np.random.default_rng(seed), baseline, risk, changes, k)
