"""The patient record of `namd predict` (namd.data.records): words, NLST codes, and errors that name the field."""

import json

import pytest

from namd.data.records import RecordError, patient_record, read_patient_record

RECORD = {"SCT_PRE_ATT": "Part Solid", "SCT_EPI_LOC": "Right Upper Lobe", "SCT_LONG_DIA": 12, "SCT_PERP_DIA": 9,
          "SCT_MARGINS": "Spiculated", "age": 64, "gender": "Female", "diagemph": "No", "famfather": "Yes",
          "fammother": "No", "fambrother": "No", "famsister": "No", "famchild": "No"}


def test_patient_record_accepts_words_codes_and_any_case():
    record = patient_record({**{k.lower(): v for k, v in RECORD.items()}, "sct_pre_att": 3, "gender": 2,
                             "famfather": True, "SCT_MARGINS".lower(): "spiculated"})
    assert record == {**RECORD, "SCT_LONG_DIA": 12.0, "SCT_PERP_DIA": 9.0, "age": 64.0}


@pytest.mark.parametrize("change, message", [
    ({"age": None}, r"missing required field\(s\) \['age'\]"),
    ({"age": 300}, "field 'age': 300 is outside 0-120 years"),
    ({"SCT_PRE_ATT": "Calcified"}, "field 'SCT_PRE_ATT': 'Calcified' is not a known value"),
    ({"SCT_PRE_ATT": 4}, r"field 'SCT_PRE_ATT': NLST code 4 \(fluid/water\) is not a value of the paper's Table 2"),
    ({"SCT_PERP_DIA": 15}, "'SCT_PERP_DIA': 15 mm exceeds the longest"),
    ({"SCT_LONG_DIA": "12 mm"}, "field 'SCT_LONG_DIA': '12 mm' is not a number"),
    ({"gender": True}, "field 'gender': True is not a known value"),
    ({"smoker": "Yes"}, "unknown field 'smoker'"),
])
def test_patient_record_names_the_bad_field(change, message):
    record = {**RECORD, **change}
    if change.get("age", 0) is None:
        del record["age"]
    with pytest.raises(RecordError, match=message):
        patient_record(record, "patient.json")


def test_read_patient_record_names_the_file(tmp_path):
    path = tmp_path / "record.json"
    path.write_text("{not json")
    with pytest.raises(RecordError, match="record.json: not valid JSON"):
        read_patient_record(path)
    path.write_text(json.dumps(RECORD))
    assert read_patient_record(path)["SCT_EPI_LOC"] == "Right Upper Lobe"
