"""A new patient's record for `namd predict`: the 13 EHR features of Table 2, checked by name.

The workflow reads its records from NLST's tables (namd.data.nlst, namd.data.cohort); a user of a
trained model writes one as JSON instead. `patient_record` turns such a mapping into what
`namd.data.nlst.report_text` reads: coded fields in the paper's words (NLST's codes accepted too,
namd.data.nlst.PAPER_VOCABULARY / NLST_CODES), numbers as floats. Every refusal is a RecordError
whose message names the field (and, from `read_patient_record`, the file).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from namd.data.nlst import EHR_FEATURES, NLST_CODES, PAPER_VOCABULARY, YES_NO_FIELDS

#: ages a record may give, in years
AGE_RANGE = (0, 120)


class RecordError(ValueError):
    """A patient record that does not give the 13 EHR features of Table 2; the message names the field."""


def _coded(field: str, value, source: str) -> str:
    """A coded field given as Table 2's word (any case) or as NLST's code -> Table 2's word."""
    vocabulary = PAPER_VOCABULARY[field.lower()]
    allowed = f"one of {', '.join(repr(w) for w in vocabulary.values())} or NLST code {sorted(vocabulary)}"
    if isinstance(value, bool) and field in YES_NO_FIELDS:
        return vocabulary[int(value)]
    if isinstance(value, str):
        words = {word.lower(): word for word in vocabulary.values()}
        word = words.get(" ".join(value.split()).lower())
        if word is None:
            raise RecordError(f"{source}: field {field!r}: {value!r} is not a known value; expected {allowed}")
        return word
    if isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer():
        code = int(value)
        if code in vocabulary:
            return vocabulary[code]
        meaning = NLST_CODES.get(field.lower(), {}).get(code)
        if meaning is not None:
            raise RecordError(f"{source}: field {field!r}: NLST code {code} ({meaning}) is not a value of the "
                              f"paper's Table 2, which the model was trained on; expected {allowed}")
    raise RecordError(f"{source}: field {field!r}: {value!r} is not a known value; expected {allowed}")


def _number(field: str, value, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RecordError(f"{source}: field {field!r}: {value!r} is not a number")
    return float(value)


def patient_record(record: Mapping[str, Any], source: str = "record") -> dict[str, Any]:
    """The 13 EHR features of Table 2, checked, in the paper's vocabulary (what report_text reads).

    Keys are Table 2's names in any case (SCT_PRE_ATT or sct_pre_att ...). Coded fields take the
    paper's words (case-insensitive) or NLST's codes, Yes/No fields also true/false. All 13 are
    required: the workflow trains only on complete records. Age is in years (0-120), diameters
    in mm (positive, perpendicular at most the longest).
    """
    if not isinstance(record, Mapping):
        raise RecordError(f"{source}: a patient record must be a JSON object with the fields {list(EHR_FEATURES)}")
    canonical = {name.lower(): name for name in EHR_FEATURES}
    fields: dict[str, Any] = {}
    for key, value in record.items():
        name = canonical.get(str(key).lower())
        if name is None:
            raise RecordError(f"{source}: unknown field {key!r}; the record holds the 13 EHR features of "
                              f"Table 2: {list(EHR_FEATURES)}")
        if name in fields:
            raise RecordError(f"{source}: field {name!r} is given twice (names are compared ignoring case)")
        fields[name] = value
    missing = [name for name in EHR_FEATURES if fields.get(name) is None]
    if missing:
        raise RecordError(f"{source}: missing required field(s) {missing}; all 13 EHR features of Table 2 are "
                          "needed (the model was trained on complete records)")
    out: dict[str, Any] = {}
    for name in EHR_FEATURES:
        if name.lower() in PAPER_VOCABULARY:
            out[name] = _coded(name, fields[name], source)
        else:
            out[name] = _number(name, fields[name], source)
    low, high = AGE_RANGE
    if not low <= out["age"] <= high:
        raise RecordError(f"{source}: field 'age': {out['age']:g} is outside {low}-{high} years")
    for name in ("SCT_LONG_DIA", "SCT_PERP_DIA"):
        if out[name] <= 0:
            raise RecordError(f"{source}: field {name!r}: {out[name]:g} mm must be positive")
    if out["SCT_PERP_DIA"] > out["SCT_LONG_DIA"]:
        raise RecordError(f"{source}: field 'SCT_PERP_DIA': {out['SCT_PERP_DIA']:g} mm exceeds the longest "
                          f"diameter SCT_LONG_DIA {out['SCT_LONG_DIA']:g} mm")
    return out


def read_patient_record(path: str | Path) -> dict[str, Any]:
    """patient_record of a JSON file, errors naming the file."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path}: patient record not found") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RecordError(f"{path}: not valid JSON ({err})") from err
    return patient_record(record, str(path))

