"""NLST's CDAS tables: reading them safely, and their codes in the paper's vocabulary.

Reading (`read_nlst_table`, `clean_nlst_table`), so that a real copy and the phantom read alike:
- column names are lower-cased: upper-case deliveries read the same;
- SAS missing values ('.', .M, .N, .S, .E, .W) and blanks become NA, and so do the field codes
  NLST uses for "missing"/"unable to determine" (`FIELD_MISSING_CODES`: sct_pre_att 9,
  sct_margins 9, sct_slice_num 999, sctabnc 9 = unable). The code seen is kept in a companion
  column `<column>_missing_code` so that an exclusion can say "sct_margins=9 (unable to
  determine)" (`describe_missing`);
- a value NLST's dictionary does not allow marks its row invalid instead of stopping the run:
  a code outside `NLST_CODES` is `invalid_code`; a number outside `VALUE_RANGES` (age 999, a
  999 mm diameter, cancyr 999), a fraction in a whole-number field or text in a numeric field is
  `invalid_value`. The value becomes NA (missing code "invalid") and the row carries
  `invalid_rule` and `invalid_reason`, e.g. "nlst_prsn.csv line 4, pid 300: gender=3 is not a
  code of NLST's dictionary (1 male, 2 female)" (file line: header = line 1; a frame not read
  from a file says "row i", 0-based). The cohort excludes such rows (`namd.data.cohort`);
- a missing required column, a key that is missing or not a number, a duplicated key and a line
  with the wrong number of fields still raise a ValueError naming the file, the column and the
  lines: without them no row can be named at all.

Vocabulary: `NLST_CODES` holds NLST's meaning of every coded field, `PAPER_VOCABULARY` the words
of the paper's Table 2 for the coded EHR features; both directions go through
`to_paper_vocabulary` / `to_nlst_codes`. Decisions:
- sct_pre_att 4 (fluid/water), 6 (fat), 7 (other) are no nodule attenuation of Table 2 (Soft,
  Ground Glass, Part Solid) and sct_epi_loc 8 (other) is no lobe: such nodules are excluded by
  the cohort (rule outside_table2), never folded into a nearby class.
- "Soft" is NLST's "soft tissue" (solid); "Part Solid" is NLST's "mixed".

Numeric encodings (one place, `ATTENUATION_SOLIDITY` and `MARGIN_SUSPICION` serve both):
- `ehr_numeric`: the 13 features as 13 columns: attenuation as solid fraction (Ground Glass 0,
  Part Solid 0.5, Soft 1), lobe as NLST code 1-6 (nominal: `one_hot_location=True` gives six
  indicator columns instead), diameters in mm, margin as suspicion (Smooth 0, Poorly Defined
  0.5, Spiculated 1), age in years, Yes/Male 1, No/Female 0. Unscaled: models standardise.
- `nodule_features`: f^(n) of the alignment loss (Eq. 2), T = 10: z-scored log diameters (long,
  perpendicular; statistics of the training split from `nodule_feature_stats`), margin suspicion
  and solidity in [0, 1], and the lobe one-hot times 1/sqrt(2) so that two different lobes are
  at distance 1, like one step of the ordinal scales.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

YES_NO_FIELDS = ("diagemph", "famfather", "fammother", "fambrother", "famsister", "famchild")
CANCER_LOCATION_FIELDS = ("locrup", "locrmid", "locrlow", "loclup", "loclin", "locllow")

SAS_MISSING_CODES = {
    ".": "missing",
    ".M": "missing",
    ".N": "not applicable",
    ".S": "unable to determine",
    ".E": "special missing .E (screen dates)",
    ".W": "special missing .W (screen dates)",
    "": "blank",
}
FIELD_MISSING_CODES = {
    "sct_pre_att": {9: "unable to determine"},
    "sct_margins": {9: "unable to determine"},
    "sct_slice_num": {999: "missing"},
    "sct_ab_preexist": {9: "unable to determine"},
    "sct_ab_gwth": {9: "unable to determine"},
    "sct_ab_attn": {9: "unable to determine"},
    "sct_ab_invg": {9: "unable to determine"},
}
MISSING_CODE_SUFFIX = "_missing_code"
INVALID_CODE = "invalid"  # the missing code of a value that `clean_nlst_table` refused
INVALID_RULE, INVALID_REASON = "invalid_rule", "invalid_reason"
INVALID_RULES = ("invalid_code", "invalid_value")

_NO_YES = {0: "no", 1: "yes"}
_SCTABNC_NO_YES = {1: "no", 2: "yes"}
NLST_CODES: dict[str, dict[int, str]] = {
    "gender": {1: "male", 2: "female"},
    **{field: _NO_YES for field in YES_NO_FIELDS + CANCER_LOCATION_FIELDS},
    "cigsmok": {0: "former", 1: "current"},
    "can_scr": {0: "no cancer", 1: "positive screen", 2: "negative screen", 3: "missed screen",
                4: "post screening"},
    "conflc": {0: "no report", 1: "confirmed lung cancer", 2: "confirmed not lung cancer",
               3: "records unavailable", 4: "pending"},
    "sct_ab_desc": {51: "non-calcified nodule or mass >= 4 mm", 52: "micronodule < 4 mm",
                    53: "benign (calcified) nodule",
                    **{code: "other finding, not a nodule" for code in range(54, 66)}},
    "sct_pre_att": {1: "soft tissue", 2: "ground glass", 3: "mixed (part solid)", 4: "fluid/water",
                    6: "fat", 7: "other"},
    "sct_epi_loc": {1: "right upper lobe", 2: "right middle lobe", 3: "right lower lobe",
                    4: "left upper lobe", 5: "lingula", 6: "left lower lobe", 8: "other"},
    "sct_margins": {1: "spiculated (stellate)", 2: "smooth", 3: "poorly defined"},
    "sct_found_after_comp": _NO_YES,
    **{field: _SCTABNC_NO_YES for field in ("sct_ab_preexist", "sct_ab_gwth", "sct_ab_attn", "sct_ab_invg")},
}
_YES_NO = {0: "No", 1: "Yes"}
PAPER_VOCABULARY: dict[str, dict[int, str]] = {
    "sct_pre_att": {1: "Soft", 2: "Ground Glass", 3: "Part Solid"},
    "sct_epi_loc": {1: "Right Upper Lobe", 2: "Right Middle Lobe", 3: "Right Lower Lobe",
                    4: "Left Upper Lobe", 5: "Lingula", 6: "Left Lower Lobe"},
    "sct_margins": {1: "Spiculated", 2: "Smooth", 3: "Poorly Defined"},
    "gender": {1: "Male", 2: "Female"},
    **{field: _YES_NO for field in YES_NO_FIELDS},
}
# Table 2 order; nodule attributes keep NLST's upper-case names there, patient fields lower-case.
EHR_FEATURES = ("SCT_PRE_ATT", "SCT_EPI_LOC", "SCT_LONG_DIA", "SCT_PERP_DIA", "SCT_MARGINS", "age",
                "diagemph", "gender", "famfather", "fammother", "fambrother", "famsister", "famchild")
ATTENUATION_SOLIDITY = {"Ground Glass": 0.0, "Part Solid": 0.5, "Soft": 1.0}
MARGIN_SUSPICION = {"Smooth": 0.0, "Poorly Defined": 0.5, "Spiculated": 1.0}
LOBES = tuple(PAPER_VOCABULARY["sct_epi_loc"].values())

NLST_FILES = {"prsn": "nlst_prsn.csv", "sctabn": "nlst_sctabn.csv", "sctabnc": "nlst_sctabnc.csv",
              "locations": "nodule_locations.csv"}
_REQUIRED = {
    "prsn": ("pid", "age", "gender", *YES_NO_FIELDS, "can_scr", "conflc", "cancyr"),
    "sctabn": ("pid", "study_yr", "sct_ab_num", "sct_ab_desc", "sct_pre_att", "sct_epi_loc",
               "sct_long_dia", "sct_perp_dia", "sct_margins"),
    "sctabnc": ("pid", "study_yr", "sct_ab_num", "sct_ab_preexist"),
    "locations": ("pid", "study_yr", "sct_ab_num", "nodule_id", "series_instance_uid", "row", "col",
                  "slice_index"),
}
_KEYS = {
    "prsn": ("pid",),
    "sctabn": ("pid", "study_yr", "sct_ab_num"),
    "sctabnc": ("pid", "study_yr", "sct_ab_num"),
    "locations": ("pid", "study_yr", "sct_ab_num"),
}
_STRING_FIELDS = {"nodule_id", "series_instance_uid"}
_FLOAT_FIELDS = {"pkyr", "sct_long_dia", "sct_perp_dia"}
#: plausible values (inclusive; None: open), from NLST's data dictionary where it gives them
VALUE_RANGES: dict[str, tuple[float | None, float | None, str]] = {
    "age": (55, 74, "age at randomisation, NLST's eligibility"),
    "study_yr": (0, 2, "the screens T0-T2"),
    "cancyr": (0, 7, "study year of diagnosis, T0-T7"),
    # not in the dictionary: a nodule or mass from 1 mm to 10 cm (code 51 starts at 4 mm, a
    # perpendicular diameter can be smaller); beyond that a typing error, not a lung nodule
    "sct_long_dia": (1, 100, "mm, a plausible nodule or mass"),
    "sct_perp_dia": (1, 100, "mm, a plausible nodule or mass"),
    **{field: (0, None, "a count, never negative") for field in ("pkyr", "sct_slice_num")},
    **{field: (0, None, "a 0-based voxel index") for field in ("row", "col", "slice_index")},
}
_KNOWN_FIELDS = (set().union(*_REQUIRED.values()) | set(NLST_CODES) | _FLOAT_FIELDS
                 | {"candx_days", "scr_days0", "scr_days1", "scr_days2", "sct_slice_num", "visible_days"})


def _rows(index: pd.Index, lines: pd.Series | None, limit: int = 5) -> str:
    """'line(s) 4, 7' (file lines) or 'row(s) 2, 5' (0-based rows of a frame not read from a file)."""
    shown = ", ".join(str(i) for i in (index if lines is None else lines[index])[:limit])
    more = f" and {len(index) - limit} more" if len(index) > limit else ""
    return ("row(s) " if lines is None else "line(s) ") + shown + more


def _shown(values: pd.Series) -> pd.Series:
    """Values as the file wrote them (numbers without a trailing .0)."""
    if pd.api.types.is_numeric_dtype(values):
        return values.astype("Float64").map(lambda v: f"{v:g}", na_action="ignore").astype("string")
    return values.astype("string").str.strip()


def _clean_column(series: pd.Series, column: str, sas_missing_codes: Mapping[str, str],
                  previous_codes: pd.Series | None) -> tuple[pd.Series, pd.Series, pd.Series]:
    """The column's values with every missing code as NA, the code seen (or NA) per row, and where
    the text is neither a number nor a missing code."""
    codes_seen = pd.Series(pd.NA, index=series.index, dtype="string")
    if previous_codes is not None:
        codes_seen = previous_codes.astype("string")
    not_numbers = pd.Series(False, index=series.index)
    if pd.api.types.is_numeric_dtype(series):
        values = series.astype("Float64")
        codes_seen = codes_seen.mask(values.isna() & codes_seen.isna(), "blank")
    else:
        text = series.astype("string").str.strip().fillna("")
        is_code = text.isin(list(sas_missing_codes))
        codes_seen = codes_seen.mask(is_code & codes_seen.isna(), text.replace("", "blank"))
        text = text.mask(is_code)
        if column in _STRING_FIELDS:
            return text, codes_seen, not_numbers
        values = pd.to_numeric(text, errors="coerce").astype("Float64")
        not_numbers = (text.notna() & values.isna()).astype(bool)
        if not_numbers.any() and column not in _KNOWN_FIELDS:
            return text, codes_seen, not_numbers & False  # a column this project does not use: keep it as text
    for code in FIELD_MISSING_CODES.get(column, {}):
        hit = values.eq(code).fillna(False)
        codes_seen = codes_seen.mask(hit, str(code))
        values = values.mask(hit)
    return values, codes_seen, not_numbers


def _code_listing(column: str) -> str:
    codes = NLST_CODES[column]
    if len(codes) > 8:
        return ", ".join(str(code) for code in codes)
    return ", ".join(f"{code} {meaning}" for code, meaning in codes.items())


def _range_text(low: float | None, high: float | None) -> str:
    if high is None:
        return f">= {low:g}"
    return f"<= {high:g}" if low is None else f"{low:g}-{high:g}"


def _is_integer_field(column: str) -> bool:
    return column in _KNOWN_FIELDS and column not in _FLOAT_FIELDS


def _invalid_values(values: pd.Series, shown: pd.Series, column: str) -> tuple[pd.Series, pd.Series]:
    """The rule and description of each value NLST's dictionary does not allow (NA where allowed)."""
    rule = pd.Series(pd.NA, index=values.index, dtype="string")
    why = pd.Series(pd.NA, index=values.index, dtype="string")
    present = values.notna().astype(bool)

    def flag(mask: pd.Series, name: str, text: str) -> None:
        hit = present & mask.fillna(False).astype(bool) & rule.isna()
        rule[hit] = name
        why[hit] = f"{column}=" + shown[hit] + text

    if column in NLST_CODES:
        flag(~values.isin(list(NLST_CODES[column])), "invalid_code",
             f" is not a code of NLST's dictionary ({_code_listing(column)})")
    if column in VALUE_RANGES:
        low, high, meaning = VALUE_RANGES[column]
        outside = pd.Series(False, index=values.index)
        if low is not None:
            outside |= (values < low).fillna(False)
        if high is not None:
            outside |= (values > high).fillna(False)
        flag(outside, "invalid_value", f" is outside {_range_text(low, high)} ({meaning})")
    if _is_integer_field(column):
        flag(values != values.round(), "invalid_value", " is not a whole number")
    return rule, why


def _invalid_columns(table: pd.DataFrame, found: list[tuple[pd.Series, pd.Series]], previous: pd.DataFrame | None,
                     source: str, lines: pd.Series | None) -> tuple[pd.Series, pd.Series]:
    """invalid_rule (the first column's) and invalid_reason (all of them) per row, naming file, line and pid."""
    rule = pd.Series(pd.NA, index=table.index, dtype="string")
    reasons = pd.Series(pd.NA, index=table.index, dtype="string")
    for column_rule, column_why in found:
        rule = rule.fillna(column_rule)
        reasons = reasons.mask(reasons.notna() & column_why.notna(), reasons + "; " + column_why).fillna(column_why)
    where = (f"{source} line " + lines.astype("string")) if lines is not None else \
        (f"{source} row " + pd.Series(table.index, index=table.index).astype("string"))
    reasons = where + ", pid " + table["pid"].astype("string") + ": " + reasons
    if previous is not None:  # a table cleaned before keeps what it was told then
        kept = previous[INVALID_RULE].notna()
        rule, reasons = rule.mask(kept, previous[INVALID_RULE]), reasons.mask(kept, previous[INVALID_REASON])
    return rule.astype("string"), reasons.astype("string")


def clean_nlst_table(frame: pd.DataFrame, kind: str, *, source: str | None = None,
                     lines: Sequence[int] | None = None,
                     sas_missing_codes: Mapping[str, str] = SAS_MISSING_CODES) -> pd.DataFrame:
    """The checked, typed table with missing codes as NA and invalid rows marked (module docstring);
    idempotent, so cleaned frames pass again. lines: the file line of each row, for messages."""
    if kind not in _REQUIRED:
        raise ValueError(f"unknown NLST table kind {kind!r}; expected one of {sorted(_REQUIRED)}")
    source = source or f"nlst {kind} table"
    lower = [str(c).strip().lower() for c in frame.columns]
    twice = sorted({c for c in lower if lower.count(c) > 1})
    if twice:
        raise ValueError(f"{source}: column(s) {twice} appear more than once (names compared lower-cased)")
    frame = frame.set_axis(lower, axis=1).reset_index(drop=True)
    line_of = None if lines is None else pd.Series(list(lines), index=frame.index, dtype="Int64")
    absent = [c for c in _REQUIRED[kind] if c not in frame.columns]
    if absent:
        raise ValueError(f"{source}: missing required column(s) {absent} of an NLST {kind} table "
                         f"(has {list(frame.columns)})")
    keys = list(_KEYS[kind]) + (["nodule_id"] if kind == "locations" else [])
    cleaned: dict[str, pd.Series] = {}
    found: list[tuple[pd.Series, pd.Series]] = []
    for column in frame.columns:
        if column.endswith(MISSING_CODE_SUFFIX) or column in (INVALID_RULE, INVALID_REASON):
            continue
        companion = column + MISSING_CODE_SUFFIX
        values, codes_seen, not_numbers = _clean_column(frame[column], column, sas_missing_codes,
                                                        frame[companion] if companion in frame.columns else None)
        shown = _shown(frame[column])
        if not_numbers.any() and column in keys:
            raise ValueError(f"{source}: key column {column!r} has values that are neither numbers nor missing "
                             f"codes {sorted(sas_missing_codes)} at {_rows(frame.index[not_numbers], line_of)} "
                             f"(e.g. {shown[not_numbers].iloc[0]!r})")
        if column not in _STRING_FIELDS and pd.api.types.is_numeric_dtype(values):
            rule, why = _invalid_values(values, shown, column)
            text = pd.Series(" is neither a number nor a missing code", index=values.index, dtype="string")
            rule, why = rule.mask(not_numbers, "invalid_value"), why.mask(not_numbers, f"{column}=" + shown + text)
            flagged = rule.notna()
            if column in keys:
                fractional = flagged & (values != values.round()).fillna(False).astype(bool)
                if fractional.any():
                    raise ValueError(f"{source}: key column {column!r} must hold whole numbers; "
                                     f"{shown[fractional].iloc[0]} at {_rows(frame.index[fractional], line_of)}")
            elif flagged.any():
                values, codes_seen = values.mask(flagged), codes_seen.mask(flagged, INVALID_CODE)
            values = values.astype("Int64" if _is_integer_field(column) else "float64")
            found.append((rule, why))
        cleaned[column] = values
        if codes_seen.notna().any():
            cleaned[companion] = codes_seen
    table = pd.DataFrame(cleaned)
    missing_key = table[keys].isna().any(axis=1)
    if missing_key.any():
        raise ValueError(f"{source}: key column(s) {keys} missing at {_rows(table.index[missing_key], line_of)}")
    unique_sets = [list(_KEYS[kind])] + ([["pid", "study_yr", "nodule_id"]] if kind == "locations" else [])
    for unique in unique_sets:
        repeated = table.duplicated(unique, keep=False)
        if repeated.any():
            raise ValueError(f"{source}: {unique} must identify one row, but {_rows(table.index[repeated], line_of)} "
                             "share their values")
    previous = frame[[INVALID_RULE, INVALID_REASON]] if INVALID_RULE in frame.columns else None
    table[INVALID_RULE], table[INVALID_REASON] = _invalid_columns(table, found, previous, source, line_of)
    return table


def _read_csv(path: Path, kind: str) -> tuple[pd.DataFrame, list[int]]:
    """The CSV as text, and the file line each row starts on (header = line 1; blank lines skipped)."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise ValueError(f"{path}: empty file, expected an NLST {kind} table")
        rows, lines, line = [], [], reader.line_num
        for record in reader:
            start, line = line + 1, reader.line_num
            if not record:
                continue
            if len(record) != len(header):
                raise ValueError(f"{path} line {start}: {len(record)} fields, but the header has {len(header)}")
            rows.append(record)
            lines.append(start)
    return pd.DataFrame(rows, columns=header, dtype=str), lines


def read_nlst_table(path: str | Path, kind: str, *,
                    sas_missing_codes: Mapping[str, str] = SAS_MISSING_CODES) -> pd.DataFrame:
    """One NLST CSV (kind: prsn, sctabn, sctabnc or locations), checked and typed."""
    path = Path(path)
    raw, lines = _read_csv(path, kind)
    return clean_nlst_table(raw, kind, source=str(path), lines=lines, sas_missing_codes=sas_missing_codes)


def read_nlst_folder(folder: str | Path, *,
                     sas_missing_codes: Mapping[str, str] = SAS_MISSING_CODES) -> dict[str, pd.DataFrame]:
    """The four cohort tables of a folder in NLST layout, keyed like `select_cohort`'s arguments."""
    folder = Path(folder)
    return {kind: read_nlst_table(folder / name, kind, sas_missing_codes=sas_missing_codes)
            for kind, name in NLST_FILES.items()}


def describe_missing(table: pd.DataFrame, column: str) -> pd.Series:
    """Per row, the missing code seen, e.g. 'sct_margins=9 (unable to determine)'; NA where present."""
    missing = table[column].isna()
    companion = column + MISSING_CODE_SUFFIX
    codes = (table.loc[missing, companion] if companion in table.columns
             else pd.Series(pd.NA, index=missing.index[missing])).astype("string").fillna("blank")
    labels = {**SAS_MISSING_CODES, "blank": "missing", INVALID_CODE: "invalid value",
              **{str(code): label for code, label in FIELD_MISSING_CODES.get(column, {}).items()}}
    text = column + "=" + codes + " (" + codes.map(lambda c: labels.get(c, "missing")).astype("string") + ")"
    return text.reindex(table.index)


def to_paper_vocabulary(column: str, codes: pd.Series) -> pd.Series:
    """NLST codes of a coded EHR field as Table 2's words; NA stays NA, other codes raise."""
    vocabulary = PAPER_VOCABULARY[column.lower()]
    outside = codes.dropna()[~codes.dropna().isin(list(vocabulary))]
    if len(outside):
        raise ValueError(f"{column}: code {outside.iloc[0]} has no word in the paper's Table 2 "
                         f"(vocabulary {vocabulary})")
    return codes.map(vocabulary, na_action="ignore").astype("string")


def to_nlst_codes(column: str, words: pd.Series) -> pd.Series:
    """Table 2's words of a coded EHR field back to NLST codes; NA stays NA, other words raise."""
    codes = {word: code for code, word in PAPER_VOCABULARY[column.lower()].items()}
    unknown = words.dropna()[~words.dropna().isin(list(codes))]
    if len(unknown):
        raise ValueError(f"{column}: {unknown.iloc[0]!r} is not a word of Table 2 ({sorted(codes)})")
    return words.map(codes, na_action="ignore").astype("Int64")


def _encode(pairs: pd.DataFrame, column: str, scale: Mapping[str, float]) -> np.ndarray:
    unknown = pairs[column].dropna()[~pairs[column].dropna().isin(list(scale))]
    if len(unknown):
        raise ValueError(f"{column}: {unknown.iloc[0]!r} is not one of {sorted(scale)}")
    return pairs[column].map(scale).to_numpy(dtype=float)


def _require_complete(values: np.ndarray, names: list[str], pairs: pd.DataFrame) -> None:
    holes = np.isnan(values)
    if holes.any():
        row, col = np.argwhere(holes)[0]
        where = pairs["pair_id"].iloc[row] if "pair_id" in pairs.columns else f"row {row}"
        raise ValueError(f"feature {names[col]!r} is missing for {where} ({int(holes.sum())} missing values "
                         "in all); select_cohort's required_fields keeps such pairs out")


def ehr_numeric(pairs: pd.DataFrame, *, one_hot_location: bool = False) -> tuple[np.ndarray, list[str]]:
    """The 13 EHR features as numbers (encoding in the module docstring), float32 (N, 13) or (N, 18)."""
    binary = {"Yes": 1.0, "No": 0.0}
    columns: dict[str, np.ndarray] = {}
    for feature in EHR_FEATURES:
        if feature == "SCT_PRE_ATT":
            columns[feature] = _encode(pairs, feature, ATTENUATION_SOLIDITY)
        elif feature == "SCT_MARGINS":
            columns[feature] = _encode(pairs, feature, MARGIN_SUSPICION)
        elif feature == "SCT_EPI_LOC" and one_hot_location:
            codes = _encode(pairs, feature, {lobe: i for i, lobe in enumerate(LOBES)})
            for i, lobe in enumerate(LOBES):
                columns[f"SCT_EPI_LOC={lobe}"] = np.where(np.isnan(codes), np.nan, codes == i)
        elif feature == "SCT_EPI_LOC":
            columns[feature] = _encode(pairs, feature, {w: c for c, w in PAPER_VOCABULARY["sct_epi_loc"].items()})
        elif feature == "gender":
            columns[feature] = _encode(pairs, feature, {"Male": 1.0, "Female": 0.0})
        elif feature in YES_NO_FIELDS:
            columns[feature] = _encode(pairs, feature, binary)
        else:
            columns[feature] = pd.to_numeric(pairs[feature]).to_numpy(dtype=float)
    names = list(columns)
    values = np.column_stack([columns[n] for n in names]) if len(pairs) else np.zeros((0, len(names)))
    _require_complete(values, names, pairs)
    return values.astype(np.float32), names


def nodule_feature_stats(train_pairs: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of the log diameters (training split only), for `nodule_features`.

    A diameter that does not vary gets scale 1: it carries no distance, and the z-score stays finite.
    """
    stats = {}
    for column in ("SCT_LONG_DIA", "SCT_PERP_DIA"):
        logs = np.log(pd.to_numeric(train_pairs[column]).dropna().to_numpy(dtype=float))
        if len(logs) == 0:
            raise ValueError(f"nodule_feature_stats: no {column} values to compute statistics from")
        std = float(logs.std())
        stats[column] = (float(logs.mean()), std if std > 0 else 1.0)
    return stats


NODULE_FEATURE_NAMES = ("log_long_dia_z", "log_perp_dia_z", "margin_suspicion", "attenuation_solidity",
                        *(f"lobe={lobe}" for lobe in LOBES))


def nodule_features(pairs: pd.DataFrame, stats: Mapping[str, tuple[float, float]]) -> np.ndarray:
    """f^(n) of Eq. 2, float32 (N, 10) in the order of NODULE_FEATURE_NAMES (module docstring)."""
    diameters = []
    for column in ("SCT_LONG_DIA", "SCT_PERP_DIA"):
        mm = pd.to_numeric(pairs[column]).to_numpy(dtype=float)
        if (mm <= 0).any():
            raise ValueError(f"nodule_features: {column} must be positive (mm) to take its logarithm")
        mean, std = stats[column]
        diameters.append((np.log(mm) - mean) / std)
    lobe = _encode(pairs, "SCT_EPI_LOC", {lobe: i for i, lobe in enumerate(LOBES)})
    one_hot = np.where(np.isnan(lobe)[:, None], np.nan, lobe[:, None] == np.arange(len(LOBES))) / math.sqrt(2)
    values = np.column_stack([*diameters, _encode(pairs, "SCT_MARGINS", MARGIN_SUSPICION),
                              _encode(pairs, "SCT_PRE_ATT", ATTENUATION_SOLIDITY), one_hot])
    _require_complete(values, list(NODULE_FEATURE_NAMES), pairs)
    return values.astype(np.float32)


def _number(value) -> str:
    return f"{float(value):g}"


def _known(value) -> bool:
    return value is not None and not pd.isna(value)


def _word(value) -> str | None:
    """The value as text, None when unknown (pd.NA does not compare safely)."""
    return str(value) if _known(value) else None


_RELATIVES = {"famfather": "father", "fammother": "mother", "fambrother": "brother",
              "famsister": "sister", "famchild": "child"}


def _family_clause(row: Mapping, name_relatives: bool) -> str | None:
    answers = {field: _word(row.get(field)) for field in _RELATIVES}
    affected = [_RELATIVES[f] for f, answer in answers.items() if answer == "Yes"]
    if affected:
        if not name_relatives:
            return "family history of cancer"
        listed = affected[0] if len(affected) == 1 else ", ".join(affected[:-1]) + " and " + affected[-1]
        return f"family history of cancer (the {listed})"
    if all(answer == "No" for answer in answers.values()):
        return "no family history of cancer"
    return None  # some relatives unknown and none affected: nothing certain to say


def report_text(row: Mapping, *, name_relatives: bool = False) -> str:
    """The radiology-report sentence of Figure 4 from one pairs row (Table 2 vocabulary).

    Unknown values drop their clause instead of printing 'nan'. Emphysema and family history
    are stated both ways ("no prior diagnosis of emphysema"); family history is "of cancer"
    as in Figure 4, and names the relatives only with name_relatives=True (Figure 4 does not).
    A family history is negative only when all five relatives are "No".
    """
    row = dict(row)
    age, gender = row.get("age"), row.get("gender")
    person = " ".join(
        part for part in (f"{_number(age)} years old" if _known(age) else "",
                          str(gender).lower() if _known(gender) else "patient")
        if part)
    history = []
    emphysema = _word(row.get("diagemph"))
    if emphysema in ("Yes", "No"):
        history.append(("" if emphysema == "Yes" else "no ") + "prior diagnosis of emphysema")
    family = _family_clause(row, name_relatives)
    if family:
        history.append(family)
    patient = ("Lung cancer screening with low dose computed tomography performed for this "
               + person + (" with " + " and ".join(history) if history else "") + ".")
    attenuation, margin = row.get("SCT_PRE_ATT"), row.get("SCT_MARGINS")
    size, lobe = row.get("SCT_LONG_DIA"), row.get("SCT_EPI_LOC")
    nodule = "A " + (f"{str(attenuation).lower()} " if _known(attenuation) else "") + "nodule"
    if _known(margin):
        nodule += f", with {str(margin).lower()} margin,"
    if _known(size):
        nodule += f" {_number(size)} mm in size"
    nodule += " is present" + (f" in the {str(lobe).lower()}" if _known(lobe) else "") + "."
    return patient + " " + nodule
