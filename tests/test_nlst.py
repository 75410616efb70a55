import numpy as np
import pandas as pd
import pytest

from namd.data.cohort import select_cohort, write_cohort
from namd.data.nlst import (EHR_FEATURES, NLST_FILES, NODULE_FEATURE_NAMES, clean_nlst_table, describe_missing,
                            ehr_numeric, nodule_feature_stats, nodule_features, read_nlst_table, report_text,
                            to_nlst_codes, to_paper_vocabulary)

SCTABN = """pid,study_yr,sct_ab_num,sct_ab_desc,sct_pre_att,sct_epi_loc,sct_long_dia,sct_perp_dia,sct_margins,\
sct_slice_num
100,0,1,51,3,3,27,20,1,50
100,0,2,52,.N,.N,.N,.N,.N,999
200,0,1,51,9,5,.S,,9,41
"""
FIGURE4 = ("Lung cancer screening with low dose computed tomography performed for this 68 years old male "
           "with prior diagnosis of emphysema and family history of cancer. A part solid nodule, with "
           "spiculated margin, 27 mm in size is present in the right lower lobe.")


def _write(path, text):
    path.write_text(text)
    return path


def _upper_header(text):
    header, rest = text.split("\n", 1)
    return header.upper() + "\n" + rest


def _pair(**changes):
    row = {"pair_id": "100_A_T0T1", "SCT_PRE_ATT": "Part Solid", "SCT_EPI_LOC": "Right Lower Lobe",
           "SCT_LONG_DIA": 27.0, "SCT_PERP_DIA": 20.0, "SCT_MARGINS": "Spiculated", "age": 68,
           "diagemph": "Yes", "gender": "Male", "famfather": "Yes", "fammother": "No", "fambrother": "No",
           "famsister": "No", "famchild": "No"}
    row.update(changes)
    return row


def test_upper_and_lower_case_headers_read_alike_and_map_to_table2(tmp_path):
    lower = read_nlst_table(_write(tmp_path / "lower.csv", SCTABN), "sctabn")
    upper = read_nlst_table(_write(tmp_path / "upper.csv", _upper_header(SCTABN)), "sctabn")
    pd.testing.assert_frame_equal(lower, upper)
    assert str(lower["pid"].dtype) == "Int64" and lower["sct_long_dia"].dtype == float
    assert to_paper_vocabulary("SCT_PRE_ATT", lower["sct_pre_att"]).tolist()[0] == "Part Solid"
    assert to_paper_vocabulary("sct_epi_loc", lower["sct_epi_loc"]).tolist() == ["Right Lower Lobe", pd.NA, "Lingula"]
    assert to_paper_vocabulary("sct_margins", lower["sct_margins"]).tolist()[0] == "Spiculated"


def test_missing_codes_become_na_and_are_named(tmp_path):
    table = read_nlst_table(_write(tmp_path / "nlst_sctabn.csv", SCTABN), "sctabn")
    assert table.loc[2, ["sct_pre_att", "sct_long_dia", "sct_perp_dia", "sct_margins"]].isna().all()
    assert pd.isna(table.loc[1, "sct_slice_num"]) and table.loc[2, "sct_slice_num"] == 41
    assert describe_missing(table, "sct_margins").tolist() == [
        pd.NA, "sct_margins=.N (not applicable)", "sct_margins=9 (unable to determine)"]
    assert describe_missing(table, "sct_long_dia")[2] == "sct_long_dia=.S (unable to determine)"
    assert describe_missing(table, "sct_perp_dia")[2] == "sct_perp_dia=blank (missing)"
    assert describe_missing(table, "sct_slice_num")[1] == "sct_slice_num=999 (missing)"


def test_cleaning_twice_keeps_the_codes(tmp_path):
    table = read_nlst_table(_write(tmp_path / "t.csv", SCTABN), "sctabn")
    pd.testing.assert_frame_equal(table, clean_nlst_table(table, "sctabn"))
    locations = read_nlst_table(_write(tmp_path / "l.csv", "pid,study_yr,sct_ab_num,nodule_id,series_instance_uid,"
                                       "row,col,slice_index\n1,0,1,A,.M,,2,3\n"), "locations")
    again = clean_nlst_table(locations, "locations")
    pd.testing.assert_frame_equal(locations, again)
    assert describe_missing(again, "series_instance_uid")[0] == "series_instance_uid=.M (missing)"
    assert describe_missing(again, "row")[0] == "row=blank (missing)"


@pytest.mark.parametrize("text, message", [
    ("pid,study_yr,sct_ab_num\n1,0,1\n", r"missing required column\(s\) \['sct_ab_desc'"),
    (SCTABN.replace("100,0,2,52", "100,0,1,52"),
     r"\['pid', 'study_yr', 'sct_ab_num'\] must identify one row, but line\(s\) 2, 3 share"),
    (SCTABN.replace("200,0,1", ".M,0,1"), r"key column\(s\).* missing at line\(s\) 4$"),
    (SCTABN.replace("200,0,1", "2OO,0,1"), r"key column 'pid' has values that are neither numbers .* line\(s\) 4 "
                                           r"\(e\.g\. '2OO'\)"),
    (SCTABN.replace("200,0,1", "200,0.5,1"), r"key column 'study_yr' must hold whole numbers; 0.5 at line\(s\) 4"),
    (SCTABN.replace(",27,20,", ",27,20,,"), r"line 2: 11 fields, but the header has 10"),
])
def test_bad_input_that_names_no_row_stops_naming_the_file_and_lines(tmp_path, text, message):
    path = _write(tmp_path / "nlst_sctabn.csv", text)
    with pytest.raises(ValueError, match=message) as error:
        read_nlst_table(path, "sctabn")
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


PRSN = """pid,age,gender,diagemph,famfather,fammother,fambrother,famsister,famchild,can_scr,conflc,cancyr
1,68,1,1,1,0,0,0,0,1,1,1

2,999,2,0,0,0,0,0,0,0,0,.N
3,60,3,0,0,0,0,0,0,1,1,999
4,61.5,1,0,0,0,0,0,0,0,0,.N
"""


def test_implausible_values_and_bad_codes_mark_their_row_naming_file_line_pid_and_value(tmp_path):
    path = _write(tmp_path / "nlst_prsn.csv", PRSN)
    table = read_nlst_table(path, "prsn")
    assert table["invalid_rule"].tolist() == [pd.NA, "invalid_value", "invalid_code", "invalid_value"]
    assert table["invalid_reason"].tolist() == [
        pd.NA,
        f"{path} line 4, pid 2: age=999 is outside 55-74 (age at randomisation, NLST's eligibility)",  # line 3 is blank
        f"{path} line 5, pid 3: gender=3 is not a code of NLST's dictionary (1 male, 2 female); "
        "cancyr=999 is outside 0-7 (study year of diagnosis, T0-T7)",
        f"{path} line 6, pid 4: age=61.5 is not a whole number",
    ]
    assert table["age"].tolist() == [68, pd.NA, 60, pd.NA] and pd.isna(table.loc[2, "gender"])
    assert describe_missing(table, "age")[1] == "age=invalid (invalid value)"
    pd.testing.assert_frame_equal(table, clean_nlst_table(table, "prsn"))  # cleaning again says the same


@pytest.mark.parametrize("change, reason", [
    ((",27,20,", ",999,20,"), "sct_long_dia=999 is outside 1-100 (mm, a plausible nodule or mass)"),
    ((",27,20,", ",-27,20,"), "sct_long_dia=-27 is outside 1-100 (mm, a plausible nodule or mass)"),
    ((",27,20,", ",big,20,"), "sct_long_dia=big is neither a number nor a missing code"),
    (("100,0,1,51,3,3", "100,0,1,51,5,3"), "sct_pre_att=5 is not a code of NLST's dictionary (1 soft tissue, "
                                           "2 ground glass, 3 mixed (part solid), 4 fluid/water, 6 fat, 7 other)"),
    (("100,0,1,51", "100,7,1,51"), "study_yr=7 is outside 0-2 (the screens T0-T2)"),
])
def test_a_bad_sctabn_value_marks_the_row_and_keeps_the_rest(tmp_path, change, reason):
    path = _write(tmp_path / "nlst_sctabn.csv", SCTABN.replace(*change))
    table = read_nlst_table(path, "sctabn")
    assert table["invalid_reason"].tolist() == [f"{path} line 2, pid 100: {reason}", pd.NA, pd.NA]
    assert table.loc[1:, "invalid_rule"].isna().all() and table.loc[2, "sct_slice_num"] == 41
    clean = clean_nlst_table(pd.read_csv(path, dtype=str, keep_default_na=False), "sctabn")
    assert clean.loc[0, "invalid_reason"] == f"nlst sctabn table row 0, pid 100: {reason}"  # no file: the row


def test_locations_keep_ids_as_text_and_reject_a_nodule_twice_per_screen(tmp_path):
    text = ("pid,study_yr,sct_ab_num,nodule_id,series_instance_uid,row,col,slice_index\n"
            "1,0,1,007,1.2.3,10,11,5\n1,0,2,008,1.2.3,.M,11,5\n")
    table = read_nlst_table(_write(tmp_path / "loc.csv", text), "locations")
    assert table["nodule_id"].tolist() == ["007", "008"] and pd.isna(table.loc[1, "row"])
    with pytest.raises(ValueError, match=r"\['pid', 'study_yr', 'nodule_id'\] must identify one row"):
        read_nlst_table(_write(tmp_path / "dup.csv", text.replace(",008,", ",007,")), "locations")


def test_vocabulary_round_trip_and_out_of_table2_codes():
    codes = pd.Series([1, 2, 3, pd.NA], dtype="Int64")
    words = to_paper_vocabulary("sct_pre_att", codes)
    assert words.tolist()[:3] == ["Soft", "Ground Glass", "Part Solid"]
    assert to_nlst_codes("SCT_PRE_ATT", words).tolist() == codes.tolist()
    with pytest.raises(ValueError, match="code 4 has no word"):
        to_paper_vocabulary("sct_pre_att", pd.Series([4], dtype="Int64"))
    with pytest.raises(ValueError, match="'Solid' is not a word"):
        to_nlst_codes("sct_pre_att", pd.Series(["Solid"]))


def test_report_text_matches_figure_4():
    assert report_text(_pair()) == FIGURE4
    assert report_text(pd.Series(_pair())) == FIGURE4


def test_report_text_negatives_female_relatives_and_unknowns():
    negative = report_text(_pair(gender="Female", diagemph="No", famfather="No", SCT_PRE_ATT="Ground Glass",
                                 SCT_MARGINS="Poorly Defined", SCT_LONG_DIA=6.5, SCT_EPI_LOC="Lingula"))
    assert negative == ("Lung cancer screening with low dose computed tomography performed for this 68 years "
                        "old female with no prior diagnosis of emphysema and no family history of cancer. A "
                        "ground glass nodule, with poorly defined margin, 6.5 mm in size is present in the lingula.")
    named = report_text(_pair(famsister="Yes"), name_relatives=True)
    assert "family history of cancer (the father and sister)." in named
    unknown = report_text(_pair(age=pd.NA, diagemph=np.nan, famfather=None, SCT_MARGINS=pd.NA, SCT_EPI_LOC=None))
    assert "nan" not in unknown.lower() and "<na>" not in unknown.lower()
    assert unknown == ("Lung cancer screening with low dose computed tomography performed for this male. "
                       "A part solid nodule 27 mm in size is present.")


def test_ehr_numeric_encodes_13_features_and_refuses_gaps():
    pairs = pd.DataFrame([_pair(), _pair(pair_id="2", SCT_PRE_ATT="Ground Glass", SCT_EPI_LOC="Lingula",
                                         gender="Female", SCT_MARGINS="Smooth", famfather="No")])
    values, names = ehr_numeric(pairs)
    assert values.shape == (2, 13) and values.dtype == np.float32 and names == list(EHR_FEATURES)
    assert values[0].tolist() == [0.5, 3, 27, 20, 1, 68, 1, 1, 1, 0, 0, 0, 0]
    assert values[1, [0, 1, 4, 7, 8]].tolist() == [0, 5, 0, 0, 0]
    one_hot, names = ehr_numeric(pairs, one_hot_location=True)
    assert one_hot.shape == (2, 18) and one_hot[1, names.index("SCT_EPI_LOC=Lingula")] == 1
    with pytest.raises(ValueError, match="'famchild' is missing for 2"):
        ehr_numeric(pairs.assign(famchild=["No", pd.NA]))


def test_nodule_features_use_training_statistics_and_unit_lobe_distance():
    train = pd.DataFrame([_pair(SCT_LONG_DIA=d, SCT_PERP_DIA=d / 2) for d in (5.0, 10.0, 20.0)])
    stats = nodule_feature_stats(train)
    features = nodule_features(train, stats)
    assert features.shape == (3, len(NODULE_FEATURE_NAMES)) == (3, 10)
    assert np.allclose(features[:, :2].mean(axis=0), 0, atol=1e-6)
    assert np.allclose(features[:, :2].std(axis=0), 1, atol=1e-5)
    lobes = nodule_features(pd.DataFrame([_pair(), _pair(SCT_EPI_LOC="Lingula")]), stats)
    assert np.linalg.norm(lobes[0] - lobes[1]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="'margin_suspicion' is missing"):
        nodule_features(pd.DataFrame([_pair(SCT_MARGINS=pd.NA)]), stats)


COHORT = {
    # pid 1 malignant, 2 benign: kept. 3 gender code 3, 4 age 999, 5 cancyr 999: the participant goes.
    # pid 2's nodule B measures 999 mm at T0; pid 6's follow-up comparison has code 7.
    "prsn": """pid,age,gender,diagemph,famfather,fammother,fambrother,famsister,famchild,can_scr,conflc,cancyr
1,68,1,1,1,0,0,0,0,1,1,1
2,60,2,0,0,0,0,0,0,0,0,.N
3,62,3,0,0,0,0,0,0,0,0,.N
4,999,1,0,0,0,0,0,0,0,0,.N
5,70,1,0,0,0,0,0,0,1,1,999
6,66,2,0,0,0,0,0,0,0,0,.N
""",
    "sctabn": "pid,study_yr,sct_ab_num,sct_ab_desc,sct_pre_att,sct_epi_loc,sct_long_dia,sct_perp_dia,sct_margins\n"
              + "".join(f"{pid},{year},1,51,1,3,10,8,2\n" for pid in range(1, 7) for year in (0, 1))
              + "2,0,2,51,1,4,999,8,2\n2,1,2,51,1,4,12,8,2\n",
    "sctabnc": "pid,study_yr,sct_ab_num,sct_ab_preexist\n" + "".join(f"{pid},1,1,{7 if pid == 6 else 2}\n"
                                                                     for pid in range(1, 7)) + "2,1,2,2\n",
    "locations": "pid,study_yr,sct_ab_num,nodule_id,series_instance_uid,row,col,slice_index\n"
                 + "".join(f"{pid},{year},1,A,1.{pid}.{year},20,20,5\n" for pid in range(1, 7) for year in (0, 1))
                 + "2,0,2,B,1.2.0,40,40,9\n2,1,2,B,1.2.1,40,40,9\n",
}


def _cohort_tables(tmp_path, **texts):
    paths = {kind: _write(tmp_path / NLST_FILES[kind], text) for kind, text in {**COHORT, **texts}.items()}
    return paths, {kind: read_nlst_table(path, kind) for kind, path in paths.items()}


def test_invalid_rows_are_excluded_with_their_reason_and_the_cohort_goes_on(tmp_path):
    paths, tables = _cohort_tables(tmp_path)
    selection = select_cohort(**tables, val_fraction=0, test_fraction=0)
    assert selection.pairs["pair_id"].tolist() == ["1_A_T0T1", "2_A_T0T1"]
    assert "999" not in " ".join(selection.pairs["report"])
    prsn, sctabn, sctabnc = (str(paths[kind]) for kind in ("prsn", "sctabn", "sctabnc"))
    gender = f"{prsn} line 4, pid 3: gender=3 is not a code of NLST's dictionary (1 male, 2 female)"
    age = f"{prsn} line 5, pid 4: age=999 is outside 55-74 (age at randomisation, NLST's eligibility)"
    cancyr = f"{prsn} line 6, pid 5: cancyr=999 is outside 0-7 (study year of diagnosis, T0-T7)"
    comparison = f"{sctabnc} line 7, pid 6: sct_ab_preexist=7 is not a code of NLST's dictionary (1 no, 2 yes)"
    rows = {(r.table, r.pid, None if pd.isna(r.pair_id) else r.pair_id, r.rule): r.reason
            for r in selection.excluded.itertuples()}
    assert rows == {
        ("sctabn", 2, None, "invalid_value"):
            f"{sctabn} line 14, pid 2: sct_long_dia=999 is outside 1-100 (mm, a plausible nodule or mass)",
        ("locations", 2, None, "no_follow_up"): "nodule_id B has no usable location at study_yr 2",
        ("sctabnc", 6, None, "invalid_code"): comparison,
        ("pairs", 3, "3_A_T0T1", "invalid_code"): gender,
        ("pairs", 4, "4_A_T0T1", "invalid_value"): age,
        ("pairs", 5, "5_A_T0T1", "invalid_value"): cancyr,
        ("pairs", 6, "6_A_T0T1", "invalid_code"): comparison,
        ("prsn", 3, None, "invalid_code"): gender,
        ("prsn", 4, None, "invalid_value"): age,
        ("prsn", 5, None, "invalid_value"): cancyr,
        ("prsn", 6, None, "no_pair"): "all 1 candidate pair(s) excluded",
    }
    written = write_cohort(selection, tmp_path / "out")
    assert pd.read_csv(written["excluded"])["reason"].str.contains(" line 4, pid 3: gender=3 ").sum() == 2


def test_the_cohort_fails_only_when_nothing_usable_is_left(tmp_path):
    header, *rows = COHORT["prsn"].splitlines()
    gender_3 = [",".join(fields[:2] + ["3"] + fields[3:]) for fields in (row.split(",") for row in rows)]
    paths, tables = _cohort_tables(tmp_path, prsn="\n".join([header, *gender_3]) + "\n")
    with pytest.raises(ValueError) as error:
        select_cohort(**tables, val_fraction=0, test_fraction=0)
    # pid 4's first invalid column is age (999), the others' gender (3)
    assert str(error.value) == (
        "split 'train' is empty: no usable pair is left; excluded rows by rule: invalid_code 11, invalid_value 3, "
        f"no_follow_up 1 (e.g. {paths['sctabnc']} line 7, pid 6: sct_ab_preexist=7 is not a code of NLST's "
        "dictionary (1 no, 2 yes))")
    assert not (tmp_path / "out").exists()
