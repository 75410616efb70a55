"""Cohort selection: pairs of the same nodule one screen apart, labels, patient-level splits.

The same code serves the phantom and a real NLST copy (tables read by `namd.data.nlst`).

Pairing. A nodule observation is an sctabn row with sct_ab_desc 51 that has a usable row in
nodule_locations. A candidate pair is an observation at screen T (T in baseline_years; default
every screen) and the observation with the same (pid, nodule_id) at screen T + 1. Both T0->T1 and
T1->T2 pairs are used by default: each is a baseline with its one-year follow-up (Sec. 3.1), and
the paper's 1,571 pairs from 1,226 subjects need more than one pair per subject. T0->T2 is never
a pair. A follow-up needs only its location; the EHR features come from the baseline screen.
The link is cross-checked with sctabnc at the follow-up screen: sct_ab_preexist 1 (new
abnormality) contradicts it; 2 confirms it (`link_confirmed`); 9, blank or no sctabnc row leave
it unverified (kept unless require_link_confirmation).

Label. Malignant (1): conflc 1 (confirmed lung cancer) and study_yr_base <= cancyr <=
study_yr_follow + follow_up_years and, when the participant table has cancer-location columns
with a 1 for this participant, the nodule's lobe is one of them: Right Upper -> locrup, Right
Middle -> locrmid, Right Lower -> locrlow, Left Lower -> locllow, Left Upper and Lingula ->
loclup or loclin (the lingula is part of the left upper lobe). No location column, or none set
to 1, labels at patient level (`label_basis` says which). Benign (0): conflc 0 (no report) or 2
(confirmed not lung cancer), or conflc missing with can_scr 0 (no cancer).

Exclusions, in this order; each is dropped at the first rule it fails and `excluded` lists the
table, keys, rule and reason. An sctabn row and its location row share keys and are listed once,
under the table whose content failed; rows of a dropped candidate pair are listed as that pair.

| table | rule | when |
|---|---|---|
| sctabn, locations | invalid_code, invalid_value | a value NLST's dictionary refuses (file, line, pid, value) |
| sctabnc | invalid_code, invalid_value | the same; a pair whose follow-up comparison it is fails with it too |
| sctabn | non_nodule | sct_ab_desc 52 micronodule, 53 calcified, 54-65 other finding |
| sctabn | no_location | nodule without a row in nodule_locations |
| locations | no_sctabn_row | location keys (pid, study_yr, sct_ab_num) absent from sctabn |
| locations | location_missing | series_instance_uid, row, col or slice_index missing (code named) |
| locations | no_follow_up | nodule_id not annotated at study_yr + 1 (nor a follow-up itself) |
| locations | not_baseline_year | study_yr not in baseline_years and not a follow-up |
| pairs | not_in_prsn | pid absent from the participant table |
| pairs | invalid_code, invalid_value | the participant's record, or the follow-up sctabnc row, is invalid |
| pairs | contradicted_link | sctabnc at the follow-up: sct_ab_preexist 1 (not on the prior screen) |
| pairs | unconfirmed_link | only with require_link_confirmation: no sct_ab_preexist 2 |
| pairs | missing_field | a required_fields value missing at baseline (code named) |
| pairs | outside_table2 | sct_pre_att 4 fluid/water, 6 fat, 7 other; sct_epi_loc 8 other |
| pairs | label_unavailable | conflc 3 records unavailable, 4 pending; conflc missing, can_scr not 0 |
| pairs | cancer_year_missing | conflc 1 without cancyr |
| pairs | cancer_before_baseline | cancyr < study_yr_base: diagnosed before the baseline screen |
| pairs | cancer_outside_window | cancyr > study_yr_follow + follow_up_years |
| pairs | cancer_other_lobe | cancer recorded only in other lobes (cancer_other_lobe="exclude") |
| pairs | nodule_size | baseline sct_long_dia outside nodule_size_mm [low, high] mm (inclusive), or missing |
| pairs | test_pair_limit | test subject's pairs beyond max_test_pairs_per_subject (after the split) |
| prsn | invalid_code, invalid_value | participant with an invalid record (listed so, not as no_pair) |
| prsn | no_pair | participant with no kept pair |

A bad value excludes its row, never the run: selection fails only when no pair is left.

The paper's cohort (Sec. 4.1.1): indeterminate nodules, one test pair per test subject.
nodule_size keeps a pair whose baseline long-axis diameter as recorded (sct_long_dia) lies in
nodule_size_mm, default [4, 30]: NLST's positive-screen threshold up to a mass (> 30 mm). It is
the last pair check, so what it drops is otherwise valid and its labels can be counted.
test_pair_limit runs after the split, which it does not change: a test subject keeps
max_test_pairs_per_subject pairs (default 1), those with the smallest blake2b hash of (split seed,
pair_id). That order sees no label, record or image, and is the same on every machine: the kept
pair is a uniform draw among the subject's pairs. T0->T1 first would make the test split nearly all
first screens while training sees both; malignant or largest first would enrich it. Train and val
subjects keep all their pairs. cohort_counts.csv gives each of the two rules an "excluded: <rule>"
row (pairs, subjects, malignant, benign it dropped).

Split: patients, not pairs, are shuffled with `seed`, separately for patients with and without a
malignant pair, and cut by val_fraction / test_fraction (largest remainders; every split with a
positive fraction gets one patient of each class when a class has enough patients).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from namd.data.nlst import (CANCER_LOCATION_FIELDS, EHR_FEATURES, INVALID_REASON, INVALID_RULE, INVALID_RULES,
                            MISSING_CODE_SUFFIX, NLST_CODES, PAPER_VOCABULARY, YES_NO_FIELDS, clean_nlst_table,
                            describe_missing, report_text, to_paper_vocabulary)

SPLITS = ("train", "val", "test")
PAIR_COLUMNS = ("pair_id", "pid", "nodule_id", "study_yr_base", "study_yr_follow", "sct_ab_num_base",
                "sct_ab_num_follow", "series_uid_base", "series_uid_follow", "row_base", "col_base",
                "slice_base", "row_follow", "col_follow", "slice_follow", "split", "label",
                *EHR_FEATURES, "report")
EXTRA_PAIR_COLUMNS = ("SCT_LONG_DIA_follow", "SCT_PERP_DIA_follow", "interval_growth", "link_confirmed",
                      "label_basis", "cancyr")
EXCLUDED_COLUMNS = ("table", "pid", "study_yr", "sct_ab_num", "nodule_id", "pair_id", "rule", "reason")
COUNT_COLUMNS = ("split", "pairs", "subjects", "malignant", "benign")
COUNTED_RULES = ("nodule_size", "test_pair_limit")  # the paper-cohort rules with an "excluded: <rule>" count row
# NLST lobe code -> cancer-location columns that count as the same lobe.
LOBE_CANCER_COLUMNS = {1: ("locrup",), 2: ("locrmid",), 3: ("locrlow",), 4: ("loclup", "loclin"),
                       5: ("loclup", "loclin"), 6: ("locllow",)}
_KEYS = ["pid", "study_yr", "sct_ab_num"]
_LOCATION_FIELDS = ("series_instance_uid", "row", "col", "slice_index")
_NODULE_FIELDS = ("sct_pre_att", "sct_epi_loc", "sct_long_dia", "sct_perp_dia", "sct_margins")
_PARTICIPANT_FIELDS = ("age", "gender", *YES_NO_FIELDS, "can_scr", "conflc", "cancyr", *CANCER_LOCATION_FIELDS)


@dataclass(frozen=True)
class CohortSelection:
    """pairs.csv, cohort_counts.csv and excluded.csv of the data contracts, as DataFrames."""

    pairs: pd.DataFrame
    counts: pd.DataFrame
    excluded: pd.DataFrame


class _Exclusions:
    """Collects excluded rows in one frame shape, whatever table they come from."""

    def __init__(self) -> None:
        self.parts: list[pd.DataFrame] = []

    def add(self, table: str, rows: pd.DataFrame, rule: str, reason: pd.Series | str) -> None:
        if rows.empty:
            return
        part = pd.DataFrame({column: rows[column] if column in rows.columns else pd.NA
                             for column in EXCLUDED_COLUMNS[1:6]}, index=rows.index)
        part.insert(0, "table", table)
        part["rule"] = rule
        part["reason"] = reason
        self.parts.append(part)

    def frame(self) -> pd.DataFrame:
        if not self.parts:
            return pd.DataFrame(columns=list(EXCLUDED_COLUMNS))
        frame = pd.concat(self.parts, ignore_index=True)
        for column in ("pid", "study_yr", "sct_ab_num"):
            frame[column] = frame[column].astype("Int64")
        return frame[list(EXCLUDED_COLUMNS)]


def _flag(mask: pd.Series) -> pd.Series:
    """A plain bool mask: NA (unknown) counts as False."""
    return mask.fillna(False).astype(bool)


def _columns(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The named columns that exist, each with its missing-code companion, so merges cannot collide."""
    wanted = [c for column in columns for c in (column, column + MISSING_CODE_SUFFIX) if c in frame.columns]
    return frame[list(dict.fromkeys(wanted))]


def _pair_ids(pairs: pd.DataFrame) -> pd.Series:
    return (pairs["pid"].astype("string") + "_" + pairs["nodule_id"] + "_T"
            + pairs["study_yr_base"].astype("string") + "T" + pairs["study_yr_follow"].astype("string"))


def _add_invalid(out: _Exclusions, table: str, rows: pd.DataFrame) -> None:
    """List the rows `clean_nlst_table` marked invalid, each under its rule and reason."""
    invalid = rows[rows[INVALID_RULE].notna()]
    for rule, group in invalid.groupby(INVALID_RULE, sort=False):
        out.add(table, group, rule, group[INVALID_REASON])


def _without_invalid_records(sctabn: pd.DataFrame, locations: pd.DataFrame,
                             out: _Exclusions) -> tuple[pd.DataFrame, pd.DataFrame]:
    """sctabn and location rows without an invalid value: an invalid one is listed under its table, and
    the other table's row with the same keys goes with it unlisted (the content that failed is named once)."""
    _add_invalid(out, "sctabn", sctabn)
    _add_invalid(out, "locations", locations)
    bad = pd.MultiIndex.from_frame(pd.concat([t.loc[t[INVALID_RULE].notna(), _KEYS] for t in (sctabn, locations)]))
    return tuple(t[~pd.MultiIndex.from_frame(t[_KEYS]).isin(bad)] for t in (sctabn, locations))


def _invalid_columns(table: pd.DataFrame, name: str) -> pd.DataFrame:
    """The table's invalid_rule and invalid_reason, renamed after the table so that merges keep them apart."""
    return table[[INVALID_RULE, INVALID_REASON]].rename(columns=lambda c: f"{name}_{c}")


def _no_pair_left(out: _Exclusions) -> ValueError:
    excluded = out.frame()
    by_rule = excluded["rule"].value_counts()
    example = excluded.loc[excluded["rule"] == by_rule.index[0], "reason"].iloc[0] if len(by_rule) else "none"
    listing = ", ".join(f"{rule} {count}" for rule, count in by_rule.items())
    return ValueError(f"split 'train' is empty: no usable pair is left; excluded rows by rule: {listing or 'none'} "
                      f"(e.g. {example})")


def _observations(sctabn: pd.DataFrame, locations: pd.DataFrame, out: _Exclusions) -> pd.DataFrame:
    """Nodules (sct_ab_desc 51) with a usable location: the things pairs are made of."""
    desc = sctabn["sct_ab_desc"]
    not_nodule = ~desc.isin([51])
    out.add("sctabn", sctabn[not_nodule], "non_nodule",
            "sct_ab_desc=" + desc[not_nodule].astype("string") + " ("
            + desc[not_nodule].map(NLST_CODES["sct_ab_desc"]).astype("string") + "), not a nodule >= 4 mm")
    locations = _columns(locations, [*_KEYS, "nodule_id", *_LOCATION_FIELDS])
    located = locations.merge(sctabn[_KEYS], on=_KEYS, how="left", indicator=True)
    out.add("locations", located[located["_merge"].eq("left_only")], "no_sctabn_row",
            "no sctabn row with these (pid, study_yr, sct_ab_num)")
    nodules = _columns(sctabn[~not_nodule], [*_KEYS, *_NODULE_FIELDS])
    with_location = nodules.merge(locations, on=_KEYS, how="left", indicator=True)
    no_location = with_location["_merge"].eq("left_only")
    out.add("sctabn", with_location[no_location], "no_location", "no row in nodule_locations")
    observed = with_location[~no_location].drop(columns="_merge")
    reason = pd.Series(pd.NA, index=observed.index, dtype="string")
    for field in _LOCATION_FIELDS:
        reason = reason.fillna(describe_missing(observed, field))
    out.add("locations", observed[reason.notna()], "location_missing", reason.dropna())
    return observed[reason.isna()].reset_index(drop=True)


def _candidate_pairs(observed: pd.DataFrame, baseline_years: Sequence[int] | None,
                     out: _Exclusions) -> pd.DataFrame:
    """Each observation joined to the same nodule's observation one screen later."""
    base = observed if baseline_years is None else observed[observed["study_yr"].isin(list(baseline_years))]
    follow = observed[["pid", "nodule_id", "study_yr", "sct_ab_num", *_LOCATION_FIELDS, "sct_long_dia",
                       "sct_perp_dia"]].rename(columns=lambda c: c if c in ("pid", "nodule_id") else f"{c}_follow")
    follow = follow.assign(study_yr_base=follow["study_yr_follow"] - 1)
    pairs = base.merge(follow, left_on=["pid", "nodule_id", "study_yr"],
                       right_on=["pid", "nodule_id", "study_yr_base"]).drop(columns="study_yr_base")
    used = pd.concat([pairs[_KEYS], pairs[["pid", "study_yr_follow", "sct_ab_num_follow"]].set_axis(_KEYS, axis=1)])
    unused = observed.merge(used.drop_duplicates(), on=_KEYS, how="left", indicator=True)
    unused = unused[unused["_merge"].eq("left_only")]
    is_base_year = (pd.Series(True, index=unused.index) if baseline_years is None
                    else unused["study_yr"].isin(list(baseline_years)))
    out.add("locations", unused[is_base_year], "no_follow_up",
            "nodule_id " + unused["nodule_id"] + " has no usable location at study_yr "
            + (unused["study_yr"] + 1).astype("string"))
    out.add("locations", unused[~is_base_year], "not_baseline_year",
            "study_yr " + unused["study_yr"].astype("string")
            + f" is not in baseline_years {tuple(baseline_years or ())} and the nodule is no follow-up")
    return pairs.rename(columns={"study_yr": "study_yr_base", "sct_ab_num": "sct_ab_num_base"})


Check = tuple[str, pd.Series, "pd.Series | str"]


def _first_failures(pairs: pd.DataFrame, checks: list[Check]) -> tuple[pd.Series, pd.Series]:
    """The first failing rule and its reason per pair (NA where every check passes)."""
    rule = pd.Series(pd.NA, index=pairs.index, dtype="string")
    reason = pd.Series(pd.NA, index=pairs.index, dtype="string")
    for name, failed, text in checks:
        hit = _flag(failed) & rule.isna()
        rule[hit] = name
        reason[hit] = text[hit] if isinstance(text, pd.Series) else text
    return rule, reason


def _label(pairs: pd.DataFrame, follow_up_years: int,
           cancer_other_lobe: str) -> tuple[pd.Series, pd.Series, list[Check]]:
    """Label, label_basis and the label exclusion checks of each candidate pair."""
    conflc, cancyr = pairs["conflc"], pairs["cancyr"]
    confirmed = _flag(conflc.isin([1]))
    window_end = pairs["study_yr_follow"] + follow_up_years
    in_window = confirmed & _flag(cancyr >= pairs["study_yr_base"]) & _flag(cancyr <= window_end)
    location_columns = [c for c in CANCER_LOCATION_FIELDS if c in pairs.columns]
    located = _flag(pairs[location_columns].eq(1).any(axis=1)) if location_columns \
        else pd.Series(False, index=pairs.index)
    same_lobe = pd.Series(False, index=pairs.index)
    for code, columns in LOBE_CANCER_COLUMNS.items():
        present = [c for c in columns if c in location_columns]
        if present:
            same_lobe |= _flag(pairs["sct_epi_loc"].isin([code])) & _flag(pairs[present].eq(1).any(axis=1))
    other_lobe = in_window & located & ~same_lobe
    benign_code = _flag(conflc.isin([0, 2])) | (conflc.isna() & _flag(pairs["can_scr"].isin([0])))
    conflc_text = "conflc=" + conflc.astype("string") + " (" + conflc.map(NLST_CODES["conflc"]).astype("string") + ")"
    label = (in_window & (same_lobe | ~located)).astype(int)
    basis = pd.Series(np.select(
        [in_window & same_lobe, in_window & ~located, other_lobe, _flag(conflc.isin([0, 2]))],
        ["lung cancer in this lobe", "lung cancer, no lobe recorded", "lung cancer in another lobe only",
         conflc_text.fillna("").to_numpy(dtype=object)], default="can_scr=0 (no cancer)"), index=pairs.index)
    diagnosed = "lung cancer diagnosed in study year " + cancyr.astype("string")
    checks: list[Check] = [
        ("label_unavailable", conflc.isin([3, 4]), conflc_text),
        ("label_unavailable", ~confirmed & ~benign_code,
         describe_missing(pairs, "conflc").fillna("") + " and can_scr is not 0 (no cancer)"),
        ("cancer_year_missing", confirmed & cancyr.isna(),
         "conflc=1 (confirmed lung cancer) but " + describe_missing(pairs, "cancyr").fillna("")),
        ("cancer_before_baseline", confirmed & _flag(cancyr < pairs["study_yr_base"]),
         diagnosed + ", before the baseline screen (study_yr " + pairs["study_yr_base"].astype("string") + ")"),
        ("cancer_outside_window", confirmed & _flag(cancyr > window_end),
         diagnosed + f", after the label window (follow-up screen + {follow_up_years} year(s) = study year "
         + window_end.astype("string") + ")"),
    ]
    if cancer_other_lobe == "exclude":
        checks.append(("cancer_other_lobe", other_lobe,
                       "lung cancer recorded only outside this nodule's lobe ("
                       + pairs["sct_epi_loc"].map(PAPER_VOCABULARY["sct_epi_loc"]).astype("string") + ")"))
    return label, basis, checks


def _allocate(n: int, fractions: Sequence[float]) -> list[int]:
    """Split n patients by fractions: largest remainders, then one per positive split if possible."""
    targets = [n * f for f in fractions]
    counts = [int(t) for t in targets]
    by_remainder = sorted(range(len(fractions)), key=lambda i: (-(targets[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    positive = [i for i, f in enumerate(fractions) if f > 0]
    if n >= len(positive):
        for i in positive:
            if counts[i] == 0:
                counts[max(range(len(counts)), key=lambda j: counts[j])] -= 1
                counts[i] = 1
    return counts


def split_patients(pairs: pd.DataFrame, *, val_fraction: float = 0.15, test_fraction: float = 0.30,
                   seed: int = 23) -> pd.Series:
    """Split name per pid (index), stratified by whether the patient has a malignant pair."""
    _check_fractions(val_fraction, test_fraction)
    fractions = (1.0 - val_fraction - test_fraction, val_fraction, test_fraction)
    malignant = pairs.groupby("pid")["label"].max().sort_index()
    rng = np.random.default_rng(seed)
    assignment = {}
    for has_malignant in (True, False):
        pids = malignant.index[(malignant == 1) == has_malignant].tolist()
        shuffled = [pids[i] for i in rng.permutation(len(pids))]
        start = 0
        for split, count in zip(SPLITS, _allocate(len(pids), fractions)):
            assignment.update(dict.fromkeys(shuffled[start:start + count], split))
            start += count
    return pd.Series(assignment, name="split").rename_axis("pid").sort_index()


def check_splits(pairs: pd.DataFrame, *, splits: Sequence[str] = SPLITS, require_both_classes: bool = True) -> None:
    """Raise ValueError naming the split that is empty, has one class only, or shares a patient."""
    shared = pairs.groupby("pid")["split"].nunique()
    if (shared > 1).any():
        raise ValueError(f"patient-level split broken: pid(s) {shared.index[shared > 1].tolist()[:5]} "
                         "are in more than one split")
    for split in splits:
        labels = set(pairs.loc[pairs["split"] == split, "label"].astype(int))
        if not labels:
            raise ValueError(f"split {split!r} is empty: no pairs (cohort of {len(pairs)} pairs, "
                             f"{pairs['pid'].nunique()} patients); use more participants or other fractions")
        if require_both_classes and labels != {0, 1}:
            only = "malignant (label 1)" if labels == {1} else "benign (label 0)"
            raise ValueError(f"split {split!r} has only {only} pairs: AUROC/AUPRC are undefined there; "
                             "use more participants or other fractions")


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) "
                         "and leave a positive training fraction")


def _size_check(pairs: pd.DataFrame, size_mm: Sequence[float]) -> Check:
    """nodule_size: the baseline long diameter as recorded, inside [low, high] mm."""
    low, high = size_mm
    bounds = f"[{low:g}, {high:g}]"
    diameter = pd.to_numeric(pairs["sct_long_dia"]).astype("Float64")
    reason = ("baseline long diameter " + diameter.map(lambda v: f"{v:g}", na_action="ignore").astype("string")
              + f" mm outside {bounds}").fillna(
        "baseline " + describe_missing(pairs, "sct_long_dia") + f", so the size range {bounds} cannot be checked")
    return "nodule_size", diameter.isna() | (diameter < low) | (diameter > high), reason


def _draw_key(pair_ids: pd.Series, seed: int) -> pd.Series:
    """A seeded hash per pair_id: an order blind to label, record and image, the same on every machine."""
    return pair_ids.map(lambda pair_id: hashlib.blake2b(f"{seed}:{pair_id}".encode(), digest_size=8).hexdigest())


def _limit_test_pairs(pairs: pd.DataFrame, limit: int, seed: int,
                      out: _Exclusions) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep `limit` pairs per test subject, smallest `_draw_key` first; (kept, dropped)."""
    ids = _pair_ids(pairs)
    rank = pairs.assign(key=_draw_key(ids, seed)).sort_values(["pid", "key"]).groupby("pid").cumcount()
    dropped = (pairs["split"] == "test") & (rank.reindex(pairs.index) >= limit)
    kept_ids = pairs.loc[dropped, "pid"].map(ids[~dropped].groupby(pairs["pid"]).agg(", ".join))
    plural = "" if limit == 1 else "s"
    out.add("pairs", pairs[dropped].assign(pair_id=ids[dropped]).rename(
        columns={"study_yr_base": "study_yr", "sct_ab_num_base": "sct_ab_num"}), "test_pair_limit",
            f"test subject already gives {limit} pair{plural}, " + kept_ids.astype("string")
            + f" (max_test_pairs_per_subject = {limit})")
    return pairs[~dropped], pairs[dropped]


def _counts(pairs: pd.DataFrame, dropped: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per split and in total, then the pairs each of COUNTED_RULES dropped."""
    rows = []
    for split, part in [*((s, pairs[pairs["split"] == s]) for s in SPLITS), ("total", pairs),
                        *((f"excluded: {rule}", dropped[rule]) for rule in COUNTED_RULES)]:
        rows.append({"split": split, "pairs": len(part), "subjects": part["pid"].nunique(),
                     "malignant": int((part["label"] == 1).sum()), "benign": int((part["label"] == 0).sum())})
    return pd.DataFrame(rows, columns=list(COUNT_COLUMNS))


def _pairs_frame(pairs: pd.DataFrame, name_relatives: bool) -> pd.DataFrame:
    """The contract columns of pairs.csv, then the extras."""
    out = pd.DataFrame({
        "pair_id": _pair_ids(pairs),
        "pid": pairs["pid"], "nodule_id": pairs["nodule_id"],
        "study_yr_base": pairs["study_yr_base"], "study_yr_follow": pairs["study_yr_follow"],
        "sct_ab_num_base": pairs["sct_ab_num_base"], "sct_ab_num_follow": pairs["sct_ab_num_follow"],
        "series_uid_base": pairs["series_instance_uid"], "series_uid_follow": pairs["series_instance_uid_follow"],
        "row_base": pairs["row"], "col_base": pairs["col"], "slice_base": pairs["slice_index"],
        "row_follow": pairs["row_follow"], "col_follow": pairs["col_follow"],
        "slice_follow": pairs["slice_index_follow"],
        "split": pairs["split"], "label": pairs["label"].astype(int),
    })
    for feature in EHR_FEATURES:
        column = feature.lower()
        out[feature] = to_paper_vocabulary(column, pairs[column]) if column in PAPER_VOCABULARY else pairs[column]
    out["report"] = [report_text(row, name_relatives=name_relatives)
                     for row in out[list(EHR_FEATURES)].to_dict("records")]
    out["SCT_LONG_DIA_follow"] = pairs["sct_long_dia_follow"]
    out["SCT_PERP_DIA_follow"] = pairs["sct_perp_dia_follow"]
    growth = pairs["sct_ab_gwth"] if "sct_ab_gwth" in pairs.columns else pd.Series(pd.NA, index=pairs.index)
    out["interval_growth"] = growth.map({1: "No", 2: "Yes"}, na_action="ignore").astype("string")
    out["link_confirmed"] = pairs["sct_ab_preexist"].isin([2])
    out["label_basis"] = pairs["label_basis"]
    out["cancyr"] = pairs["cancyr"]
    return out[list(PAIR_COLUMNS + EXTRA_PAIR_COLUMNS)].sort_values(
        ["pid", "nodule_id", "study_yr_base"]).reset_index(drop=True)


def select_cohort(prsn: pd.DataFrame, sctabn: pd.DataFrame, sctabnc: pd.DataFrame, locations: pd.DataFrame, *,
                  val_fraction: float = 0.15, test_fraction: float = 0.30, seed: int = 23,
                  follow_up_years: int = 1, baseline_years: Sequence[int] | None = None,
                  required_fields: Sequence[str] = EHR_FEATURES, require_link_confirmation: bool = False,
                  cancer_other_lobe: str = "exclude", nodule_size_mm: Sequence[float] | None = (4, 30),
                  max_test_pairs_per_subject: int | None = 1,
                  require_both_classes: bool = True, name_relatives: bool = False) -> CohortSelection:
    """Pairs, counts and exclusions of the cohort (rules in the module docstring).

    Tables as read by `namd.data.nlst.read_nlst_table` (raw frames are cleaned the same way).
    """
    _check_fractions(val_fraction, test_fraction)
    if follow_up_years < 0:
        raise ValueError(f"follow_up_years={follow_up_years} must be >= 0")
    unknown = [f for f in required_fields if f not in EHR_FEATURES]
    if unknown:
        raise ValueError(f"required_fields {unknown} are not EHR features of Table 2 {list(EHR_FEATURES)}")
    if cancer_other_lobe not in ("exclude", "benign"):
        raise ValueError(f"cancer_other_lobe={cancer_other_lobe!r} must be 'exclude' or 'benign'")
    if max_test_pairs_per_subject is not None and max_test_pairs_per_subject < 1:
        raise ValueError(f"max_test_pairs_per_subject={max_test_pairs_per_subject} must be >= 1 or None")
    if nodule_size_mm is not None and not (len(nodule_size_mm) == 2 and 0 <= nodule_size_mm[0] <= nodule_size_mm[1]):
        raise ValueError(f"nodule_size_mm={nodule_size_mm} must be [low, high] with 0 <= low <= high, or None")
    prsn, sctabn, sctabnc, locations = (clean_nlst_table(frame, kind) for frame, kind in
                                        ((prsn, "prsn"), (sctabn, "sctabn"), (sctabnc, "sctabnc"),
                                         (locations, "locations")))
    out = _Exclusions()
    sctabn, locations = _without_invalid_records(sctabn, locations, out)
    _add_invalid(out, "sctabnc", sctabnc)
    pairs = _candidate_pairs(_observations(sctabn, locations, out), baseline_years, out)
    comparison = pd.concat([_columns(sctabnc, [*_KEYS, "sct_ab_preexist", "sct_ab_gwth"]),
                            _invalid_columns(sctabnc, "sctabnc")], axis=1).rename(
        columns={"study_yr": "study_yr_follow", "sct_ab_num": "sct_ab_num_follow"})
    pairs = pairs.merge(comparison, on=["pid", "study_yr_follow", "sct_ab_num_follow"], how="left")
    participants = pd.concat([_columns(prsn, ["pid", *_PARTICIPANT_FIELDS]), _invalid_columns(prsn, "prsn")], axis=1)
    pairs = pairs.merge(participants, on="pid", how="left", indicator=True)
    preexist = pairs["sct_ab_preexist"]
    checks: list[Check] = [
        ("not_in_prsn", pairs["_merge"].eq("left_only"), "pid not in the participant table"),
        *((rule, pairs[f"{table}_{INVALID_RULE}"].eq(rule), pairs[f"{table}_{INVALID_REASON}"])
          for table in ("prsn", "sctabnc") for rule in INVALID_RULES),
        ("contradicted_link", preexist.isin([1]),
         "sctabnc at the follow-up screen says sct_ab_preexist=1 (not present on the prior screen)"),
        ("unconfirmed_link", pd.Series(require_link_confirmation, index=pairs.index) & ~_flag(preexist.isin([2])),
         "no sctabnc sct_ab_preexist=2 confirms the link (require_link_confirmation)"),
        *(("missing_field", pairs[f.lower()].isna(), "baseline " + describe_missing(pairs, f.lower()))
          for f in required_fields),
    ]
    for column in ("sct_pre_att", "sct_epi_loc"):
        codes = pairs[column]
        checks.append(("outside_table2", codes.notna() & ~_flag(codes.isin(list(PAPER_VOCABULARY[column]))),
                       column + "=" + codes.astype("string") + " ("
                       + codes.map(NLST_CODES[column]).astype("string") + ") has no word in Table 2"))
    pairs["label"], pairs["label_basis"], label_checks = _label(pairs, follow_up_years, cancer_other_lobe)
    size_checks = [] if nodule_size_mm is None else [_size_check(pairs, nodule_size_mm)]
    pairs["rule"], pairs["reason"] = _first_failures(pairs, checks + label_checks + size_checks)
    failed = pairs[pairs["rule"].notna()].assign(pair_id=_pair_ids).rename(
        columns={"study_yr_base": "study_yr", "sct_ab_num_base": "sct_ab_num"})
    for name, group in failed.groupby("rule", sort=False):
        out.add("pairs", group, name, group["reason"])
    kept = pairs[pairs["rule"].isna()].copy()
    # participants without a pair; final here, since test_pair_limit leaves every subject a pair
    candidates = pairs.groupby("pid").size()
    lost = prsn[~prsn["pid"].isin(kept["pid"])]
    _add_invalid(out, "prsn", lost)
    lost = lost[lost[INVALID_RULE].isna()]
    out.add("prsn", lost, "no_pair", ("all " + lost["pid"].map(candidates).astype("Int64").astype("string")
                                      + " candidate pair(s) excluded").fillna(
        "no nodule annotated at two consecutive screens"))
    if kept.empty:
        raise _no_pair_left(out)
    kept["split"] = kept["pid"].map(split_patients(kept, val_fraction=val_fraction, test_fraction=test_fraction,
                                                   seed=seed))
    dropped = {rule: pairs[_flag(pairs["rule"].eq(rule))] for rule in COUNTED_RULES}
    if max_test_pairs_per_subject is not None:
        kept, dropped["test_pair_limit"] = _limit_test_pairs(kept, max_test_pairs_per_subject, seed, out)
    result = _pairs_frame(kept, name_relatives)
    positive = [s for s, f in zip(SPLITS, (1.0, val_fraction, test_fraction)) if f > 0]
    check_splits(result, splits=positive, require_both_classes=require_both_classes)
    return CohortSelection(pairs=result, counts=_counts(result, dropped), excluded=out.frame())


def write_cohort(selection: CohortSelection, out_dir: str | Path) -> dict[str, Path]:
    """Write pairs.csv, cohort_counts.csv and excluded.csv; each appears whole or not at all."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = {"pairs": (selection.pairs, out_dir / "pairs.csv"),
               "counts": (selection.counts, out_dir / "cohort_counts.csv"),
               "excluded": (selection.excluded, out_dir / "excluded.csv")}
    written = []
    try:
        for frame, path in targets.values():
            temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            written.append((temporary, path))
            frame.to_csv(temporary, index=False)
        for temporary, path in written:
            os.replace(temporary, path)
    finally:
        for temporary, _ in written:
            temporary.unlink(missing_ok=True)
    return {name: path for name, (_, path) in targets.items()}
