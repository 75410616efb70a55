import numpy as np
import pandas as pd
import pytest

from namd.data.nlst import (EHR_FEATURES, NODULE_FEATURE_NAMES, clean_nlst_table, describe_missing, ehr_numeric,
                            nodule_feature_stats, nodule_features, read_nlst_table, report_text,
                            to_nlst_codes, to_paper_vocabulary)

SCTABN = """pid,study_yr,sct_ab_num,sct_ab_desc,sct_pre_att,sct_epi_loc,sct_long_dia,sct_perp_dia,sct_margins,sct_slice_num
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
    (SCTABN.replace("100,0,1,51,3,3", "100,0,1,51,5,3"), r"'sct_pre_att' has code 5.* row\(s\) 0"),
    (SCTABN.replace(",27,20,", ",big,20,"), r"'sct_long_dia' has values that are neither numbers"),
    (SCTABN.replace(",27,20,", ",-27,20,"), r"'sct_long_dia' is negative"),
    (SCTABN.replace("100,0,2,52", "100,0,1,52"), r"\['pid', 'study_yr', 'sct_ab_num'\] must identify one row"),
    (SCTABN.replace("200,0,1", ".M,0,1"), r"key column\(s\).* missing at row\(s\) 2"),
])
def test_bad_input_names_the_file_and_field(tmp_path, text, message):
    path = _write(tmp_path / "nlst_sctabn.csv", text)
    with pytest.raises(ValueError, match=message) as error:
        read_nlst_table(path, "sctabn")
    assert str(path) in str(error.value)


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
