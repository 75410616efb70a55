"""Clinical reference rows of Table 1: what a radiologist's scoring systems make of the same test pairs.

Three rows, each one score per test pair in the probability-table format of the image rows
(pair_id, seed 0, label, prob), so Table 1 and the DeLong test treat them like any real-image row:

* ``brock``: the Brock (PanCan) full model with spiculation (`namd.data.brock`) on the baseline
  record, with the published intercept (-6.7892). The phantom re-fits the intercept to its
  prevalence; AUROC and AUPRC depend only on the order of the scores, which an intercept does
  not change. Inputs: age, female sex, family history (any first-degree relative of the five
  NLST fields; "no" only when all five say no), emphysema, SCT_LONG_DIA (the largest diameter),
  type (SCT_PRE_ATT), upper lobe (RUL/LUL; the lingula is not), spiculation (SCT_MARGINS), and
  the nodule count: the number of code-51 nodules NLST's sctabn lists for the participant at the
  baseline screen (`nodule_counts`), because pairs.csv holds only the nodules that made a pair.
  On the phantom this is the generating model, applied to the reader's caliper-rounded record
  rather than the true sizes: the ceiling of any predictor that sees only the baseline record.
* ``lungrads_baseline``: the Lung-RADS v2022 category of the baseline record (ACR; Christensen
  et al., CHEST 2024;165:738; the v1.1 size thresholds). Size is the mean diameter
  (SCT_LONG_DIA + SCT_PERP_DIA) / 2 to one decimal. Solid: 2 < 6 mm <= 3 < 8 mm <= 4A < 15 mm
  <= 4B. Non-solid: 2 below 30 mm, else 3. Part-solid: 2 below 6 mm total, else by the solid
  part: 3 < 6 mm <= 4A < 8 mm <= 4B. 4X: a category 3 or 4 nodule with spiculated margins.
* ``lungrads_followup``: the same nodule re-categorised with the real follow-up's size
  (SCT_LONG_DIA_follow / SCT_PERP_DIA_follow). Growth is a mean diameter up by more than 1.5 mm
  (NLST's screens are 12 months apart): a growing solid nodule is 4A below 8 mm and 4B from
  8 mm, a growing part-solid one 4A with a solid part below 4 mm and 4B from 4 mm; a non-solid
  nodule stays in its size category whether it grows or not (v2022). A nodule that does not grow
  is categorised by its new size with the baseline thresholds; v2022's stepped down-grading of a
  stable category 3 / 4A nodule at its short-interval follow-up is not applied. Type and margins
  are the baseline record's: pairs.csv carries no follow-up attenuation or margins.

Assumption shared by both Lung-RADS rows: NLST records no solid-component size, so a part-solid
nodule's solid part is taken as ``PART_SOLID_SOLID_FRACTION`` (0.5) of its mean diameter, the
same midpoint `namd.data.nlst` uses for Part Solid's solidity. Perifissural / juxtapleural and
airway rules need findings NLST does not record and are not applied.

The Lung-RADS score is ordinal, 2 < 3 < 4A < 4B < 4X mapped to 0, 0.25, 0.5, 0.75, 1 (a rank,
not a probability; the categories' published risks tie 4B with 4X). A pair whose record lacks a
field a score needs is named with the field in the log and left out of that row only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from namd.data.brock import GROUND_GLASS, PART_SOLID, SOLID, UPPER_LOBES, brock_probability
from namd.data.nlst import PAPER_VOCABULARY, YES_NO_FIELDS, read_nlst_table, to_nlst_codes
from namd.evaluation.metrics import PROBS_COLUMNS
from namd.io import atomic_output
from namd.rows import CLINICAL_ROWS

LOG = logging.getLogger(__name__)

LUNG_RADS_CATEGORIES = ("2", "3", "4A", "4B", "4X")
PART_SOLID_SOLID_FRACTION = 0.5
GROWTH_MM = 1.5
NODULE_CODE = 51
FAMILY_FIELDS = tuple(f for f in YES_NO_FIELDS if f.startswith("fam"))  # first-degree relatives with lung cancer
BROCK_FIELDS = ("age", "gender", "diagemph", "SCT_LONG_DIA", "SCT_PRE_ATT", "SCT_EPI_LOC", "SCT_MARGINS")
SIZE_FIELDS = ("SCT_PRE_ATT", "SCT_LONG_DIA", "SCT_PERP_DIA")
FOLLOW_UP_SIZE_FIELDS = ("SCT_LONG_DIA_follow", "SCT_PERP_DIA_follow")

#: Table 1 footnotes (plain text; the table escapes them)
BROCK_NOTE = ("Brock: PanCan full model with spiculation (McWilliams et al., NEJM 2013) on the baseline record, "
              "published intercept; nodule count from the baseline screen's sctabn")
BROCK_PHANTOM_NOTE = ("On the phantom, Brock is the generating model of malignancy: its row is the ceiling of any "
                      "baseline-only predictor")
LUNG_RADS_NOTE = ("Lung-RADS v2022 from the record: mean diameter (long + perpendicular) / 2; NLST gives no "
                  f"solid-part size, so a part-solid nodule's solid part is taken as {PART_SOLID_SOLID_FRACTION:g} x "
                  "its mean diameter in both Lung-RADS rows; 4X = category 3/4 with spiculated margins; "
                  "ordinal score in the order 2, 3, 4A, 4B, 4X; the follow-up row re-categorises by the real "
                  f"follow-up's size, growth = mean diameter up by more than {GROWTH_MM:g} mm")


def table_notes(coverage: Mapping[str, tuple[str, int, int]], *, phantom: bool) -> list[str]:
    """Plain-text footnotes for the clinical rows present; coverage: row -> (title, pairs scored, test pairs)."""
    notes = []
    if "brock" in coverage:
        notes.append(BROCK_NOTE + (". " + BROCK_PHANTOM_NOTE if phantom else "") + ".")
    if {"lungrads_baseline", "lungrads_followup"} & set(coverage):
        notes.append(LUNG_RADS_NOTE + ".")
    if coverage:
        notes.append("Pairs scored: " + "; ".join(f"{title}: {n} of {total}" for title, n, total in coverage.values())
                     + " (a pair whose record lacks a field the score needs is left out of that row and named in "
                     "the clinical_scores log).")
    return notes


class MissingField(ValueError):
    """A record lacks fields a clinical score needs; `fields` names them."""

    def __init__(self, fields) -> None:
        self.fields = tuple(fields)
        super().__init__(", ".join(self.fields))


def _require(record: Mapping, fields) -> None:
    absent = [f for f in fields if pd.isna(record.get(f))]
    if absent:
        raise MissingField(absent)


def nodule_counts(sctabn: pd.DataFrame) -> pd.Series:
    """Brock's nodule count: code-51 nodules per (pid, study_yr) of a cleaned sctabn table."""
    nodules = sctabn[sctabn["sct_ab_desc"] == NODULE_CODE]
    return nodules.groupby(["pid", "study_yr"]).size().rename("nodule_count")


def _family_history(record: Mapping) -> bool:
    answers = [record.get(f) for f in FAMILY_FIELDS]
    if "Yes" in answers:
        return True
    _require(record, FAMILY_FIELDS)
    return False


def _attenuation(record: Mapping) -> int:
    return int(to_nlst_codes("sct_pre_att", pd.Series([record["SCT_PRE_ATT"]])).iloc[0])


def brock_record(record: Mapping, nodule_count: int) -> float:
    """Brock probability of one pairs.csv record (published intercept)."""
    _require(record, BROCK_FIELDS)
    family = _family_history(record)
    lobes = {word: code for code, word in PAPER_VOCABULARY["sct_epi_loc"].items()}
    if record["SCT_EPI_LOC"] not in lobes:
        raise ValueError(f"SCT_EPI_LOC: {record['SCT_EPI_LOC']!r} is not one of {sorted(lobes)}")
    return float(brock_probability(
        age=float(record["age"]), female=record["gender"] == "Female", family_history=family,
        emphysema=record["diagemph"] == "Yes", diameter_mm=float(record["SCT_LONG_DIA"]),
        attenuation=_attenuation(record), upper_lobe=lobes[record["SCT_EPI_LOC"]] in UPPER_LOBES,
        nodule_count=nodule_count, spiculated=record["SCT_MARGINS"] == "Spiculated",
    ))


def mean_diameter(long_mm: float, perp_mm: float) -> float:
    """Lung-RADS size: the mean of the long and perpendicular axes, to one decimal."""
    return round((float(long_mm) + float(perp_mm)) / 2.0, 1)


def size_category(attenuation: int, mean_mm: float, growth_mm: float | None = None) -> str:
    """Lung-RADS v2022 category from type, mean diameter and (at a follow-up) its change, before 4X."""
    grew = growth_mm is not None and growth_mm > GROWTH_MM
    if attenuation == GROUND_GLASS:
        return "2" if mean_mm < 30 else "3"
    if attenuation == PART_SOLID:
        solid_mm = PART_SOLID_SOLID_FRACTION * mean_mm
        if grew:
            return "4A" if solid_mm < 4 else "4B"
        if mean_mm < 6:
            return "2"
        return "3" if solid_mm < 6 else "4A" if solid_mm < 8 else "4B"
    if attenuation != SOLID:
        raise ValueError(f"size_category: attenuation code {attenuation} is not solid, ground glass or part solid")
    if grew:
        return "4A" if mean_mm < 8 else "4B"
    return "2" if mean_mm < 6 else "3" if mean_mm < 8 else "4A" if mean_mm < 15 else "4B"


def lung_rads_record(record: Mapping, *, follow_up: bool = False) -> str:
    """Lung-RADS v2022 category of one pairs.csv record, at its baseline or at the real follow-up.

    Margins are needed only where they can raise the category (3 and 4 to 4X).
    """
    _require(record, SIZE_FIELDS + (FOLLOW_UP_SIZE_FIELDS if follow_up else ()))
    baseline_mm = mean_diameter(record["SCT_LONG_DIA"], record["SCT_PERP_DIA"])
    if follow_up:
        new_mm = mean_diameter(record["SCT_LONG_DIA_follow"], record["SCT_PERP_DIA_follow"])
        category = size_category(_attenuation(record), new_mm, growth_mm=new_mm - baseline_mm)
    else:
        category = size_category(_attenuation(record), baseline_mm)
    if category == "2":
        return category
    _require(record, ("SCT_MARGINS",))
    return "4X" if record["SCT_MARGINS"] == "Spiculated" else category


def lung_rads_score(category: str) -> float:
    """Ordinal score in [0, 1]: 2 < 3 < 4A < 4B < 4X."""
    return LUNG_RADS_CATEGORIES.index(category) / (len(LUNG_RADS_CATEGORIES) - 1)


def clinical_scores(pairs: pd.DataFrame, counts: pd.Series) -> dict[str, pd.DataFrame]:
    """Per clinical row, the probability table of the test pairs whose record has what it needs.

    counts is `nodule_counts` of the cohort's sctabn; a test pair whose baseline screen it lacks
    means the two files are not of one cohort, and raises.
    """
    needed = {"pair_id", "pid", "study_yr_base", "split", "label", *BROCK_FIELDS, *FAMILY_FIELDS, *SIZE_FIELDS,
              *FOLLOW_UP_SIZE_FIELDS}
    absent = sorted(needed - set(pairs.columns))
    if absent:
        raise ValueError(f"clinical_scores: the pairs table lacks column(s) {absent}")
    test = pairs[pairs["split"] == "test"]
    scorers = {
        "brock": lambda r: brock_record(r, nodule_count(counts, r)),
        "lungrads_baseline": lambda r: lung_rads_score(lung_rads_record(r)),
        "lungrads_followup": lambda r: lung_rads_score(lung_rads_record(r, follow_up=True)),
    }
    tables = {}
    for row, score in scorers.items():
        lines = []
        for record in test.to_dict("records"):
            try:
                lines.append((str(record["pair_id"]), 0, int(record["label"]), score(record)))
            except MissingField as missing:
                LOG.warning("%s: pair %s left out, its record lacks %s", row, record["pair_id"], missing)
            except ValueError as error:
                raise ValueError(f"{row}: pair {record['pair_id']}: {error}") from error
        tables[row] = pd.DataFrame(lines, columns=list(PROBS_COLUMNS))
        LOG.info("%s: %d of %d test pairs scored", row, len(lines), len(test))
    return tables


def nodule_count(counts: pd.Series, record: Mapping) -> int:
    """Brock's nodule count of one pairs.csv record's baseline screen, from `nodule_counts`."""
    key = (int(record["pid"]), int(record["study_yr_base"]))
    if key not in counts.index:
        raise ValueError(f"pair {record['pair_id']}: sctabn lists no code-{NODULE_CODE} nodule for pid {key[0]} "
                         f"at study_yr {key[1]}; pairs.csv and sctabn are not of the same cohort")
    return int(counts.loc[key])


def write_clinical_scores(pairs_csv, sctabn_csv, outputs: Mapping[str, str | Path]) -> dict[str, pd.DataFrame]:
    """The three clinical rows' probability tables, each written whole or not at all."""
    unknown = sorted(set(outputs) - set(CLINICAL_ROWS))
    if unknown:
        raise ValueError(f"write_clinical_scores: unknown row(s) {unknown}; clinical rows are {list(CLINICAL_ROWS)}")
    pairs = pd.read_csv(pairs_csv, dtype={"pair_id": str})
    tables = clinical_scores(pairs, nodule_counts(read_nlst_table(sctabn_csv, "sctabn")))
    for row, path in outputs.items():
        with atomic_output(path) as handle:
            tables[row].to_csv(handle, index=False)
    return tables
