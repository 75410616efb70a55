import pandas as pd
import pytest

from namd.data.cohort import (COUNT_COLUMNS, PAIR_COLUMNS, check_splits, select_cohort, split_patients,
                              write_cohort)
from namd.data.nlst import EHR_FEATURES, NLST_FILES, read_nlst_folder

# pid 100: nodule A at T0, T1, T2 (confirmed cancer in year 1, right lower lobe) + a micronodule.
# pid 200: no cancer; B's T1 link contradicted by sctabnc, C has no follow-up, D pairs T1->T2 (lingula).
# pid 300: pending (conflc 4); E's baseline margin is 9 (unable to determine).
PRSN = """pid,age,gender,diagemph,famfather,fammother,fambrother,famsister,famchild,cigsmok,pkyr,can_scr,\
conflc,cancyr,candx_days,scr_days0,scr_days1,scr_days2,locrup,locrmid,locrlow,loclup,loclin,locllow
100,68,1,1,1,0,0,0,0,1,40,1,1,1,400,0,365,730,0,0,1,0,0,0
200,60,2,0,0,0,0,0,0,0,30,0,0,.N,.N,0,365,730,.N,.N,.N,.N,.N,.N
300,70,1,0,0,0,0,0,0,1,50,.M,4,.N,.N,0,365,730,.N,.N,.N,.N,.N,.N
"""
SCTABN = """pid,study_yr,sct_ab_num,sct_ab_desc,sct_pre_att,sct_epi_loc,sct_long_dia,sct_perp_dia,sct_margins,\
sct_slice_num,sct_found_after_comp
100,0,1,51,3,3,27,20,1,50,0
100,0,2,52,.N,.N,.N,.N,.N,999,0
100,1,1,51,3,3,30,22,1,52,0
100,2,1,51,3,3,34,25,1,53,0
200,0,1,51,2,1,8,6,2,40,0
200,0,2,51,1,4,6,5,2,60,0
200,1,1,51,2,1,9,7,2,41,0
200,1,2,51,1,5,5,4,3,70,0
200,2,1,51,1,5,6,4,3,71,0
300,0,1,51,1,6,10,8,9,30,0
300,1,1,51,1,6,11,8,2,31,0
300,0,2,51,2,2,7,5,2,35,0
300,1,2,51,2,2,7,5,2,36,0
"""
SCTABNC = """pid,study_yr,sct_ab_num,sct_ab_preexist,sct_ab_gwth,sct_ab_attn,sct_ab_invg,visible_days
100,1,1,2,2,1,2,365
100,2,1,2,2,1,2,730
200,1,1,1,.N,1,1,0
200,1,2,1,.N,1,1,0
200,2,1,2,1,1,1,365
300,1,1,2,1,1,1,365
300,1,2,9,1,1,1,365
"""
LOCATIONS = """pid,study_yr,sct_ab_num,nodule_id,series_instance_uid,row,col,slice_index
100,0,1,A,1.1.0,100,120,50
100,1,1,A,1.1.1,101,121,52
100,2,1,A,1.1.2,102,122,53
200,0,1,B,1.2.0,80,90,40
200,0,2,C,1.2.0,60,70,60
200,1,1,B,1.2.1,81,91,41
200,1,2,D,1.2.1,50,55,70
200,2,1,D,1.2.2,51,56,71
300,0,1,E,1.3.0,40,45,30
300,1,1,E,1.3.1,41,46,31
300,0,2,F,1.3.0,30,35,35
300,1,2,F,1.3.1,31,36,36
"""
FIGURE4 = ("Lung cancer screening with low dose computed tomography performed for this 68 years old male "
           "with prior diagnosis of emphysema and family history of cancer. A part solid nodule, with "
           "spiculated margin, 27 mm in size is present in the right lower lobe.")
TRAIN_ONLY = {"val_fraction": 0, "test_fraction": 0}


def _folder(tmp_path, upper=False, **texts):
    tables = {"prsn": PRSN, "sctabn": SCTABN, "sctabnc": SCTABNC, "locations": LOCATIONS, **texts}
    for kind, text in tables.items():
        header, rest = text.split("\n", 1)
        (tmp_path / NLST_FILES[kind]).write_text((header.upper() if upper else header) + "\n" + rest)
    return read_nlst_folder(tmp_path)


def _reasons(excluded):
    def known(value):
        return None if pd.isna(value) else value
    return {(row.table, row.pid, known(row.pair_id) or known(row.study_yr), row.rule): row.reason
            for row in excluded.itertuples()}


def test_tiny_cohort_gives_exactly_the_expected_pairs_and_exclusions(tmp_path):
    selection = select_cohort(**_folder(tmp_path), **TRAIN_ONLY)
    pairs = selection.pairs
    assert pairs["pair_id"].tolist() == ["100_A_T0T1", "100_A_T1T2", "200_D_T1T2"]
    assert pairs["label"].tolist() == [1, 1, 0]
    assert tuple(pairs.columns[:len(PAIR_COLUMNS)]) == PAIR_COLUMNS
    first = pairs.iloc[0]
    assert (first["series_uid_base"], first["series_uid_follow"], first["slice_base"], first["row_follow"]) == \
        ("1.1.0", "1.1.1", 50, 101)
    assert first["report"] == FIGURE4 and first["SCT_LONG_DIA_follow"] == 30
    assert pairs.loc[2, "SCT_EPI_LOC"] == "Lingula" and pairs.loc[2, "gender"] == "Female"
    assert pairs["link_confirmed"].tolist() == [True, True, True]
    assert _reasons(selection.excluded) == {
        ("sctabn", 100, 0, "non_nodule"): "sct_ab_desc=52 (micronodule < 4 mm), not a nodule >= 4 mm",
        ("locations", 200, 0, "no_follow_up"): "nodule_id C has no usable location at study_yr 1",
        ("pairs", 200, "200_B_T0T1", "contradicted_link"):
            "sctabnc at the follow-up screen says sct_ab_preexist=1 (not present on the prior screen)",
        ("pairs", 300, "300_E_T0T1", "missing_field"): "baseline sct_margins=9 (unable to determine)",
        ("pairs", 300, "300_F_T0T1", "label_unavailable"): "conflc=4 (pending)",
        ("prsn", 300, None, "no_pair"): "all 2 candidate pair(s) excluded",
    }
    counts = selection.counts.set_index("split")
    assert counts.loc["total"].to_dict() == {"pairs": 3, "subjects": 2, "malignant": 2, "benign": 1}
    assert counts.loc[["excluded: nodule_size", "excluded: test_pair_limit"], "pairs"].tolist() == [0, 0]


def test_upper_case_delivery_selects_the_same_cohort(tmp_path):
    (tmp_path / "lower").mkdir()
    (tmp_path / "upper").mkdir()
    lower = select_cohort(**_folder(tmp_path / "lower"), **TRAIN_ONLY)
    upper = select_cohort(**_folder(tmp_path / "upper", upper=True), **TRAIN_ONLY)
    pd.testing.assert_frame_equal(lower.pairs, upper.pairs)
    pd.testing.assert_frame_equal(lower.excluded, upper.excluded)


def _screens_of_pair(pair_id):
    """(pid, study_yr, nodule_id) of both screens of a pair id '{pid}_{nodule}_T{a}T{b}'."""
    pid, nodule, years = pair_id.split("_")
    first, second = years[1:].split("T")
    return {(int(pid), int(first), nodule), (int(pid), int(second), nodule)}


def test_every_abnormality_is_paired_or_explained(tmp_path):
    tables = _folder(tmp_path)
    selection = select_cohort(**tables, **TRAIN_ONLY)
    keys = ["pid", "study_yr", "sct_ab_num"]
    nodule_of = {tuple(k): n for *k, n in tables["locations"][keys + ["nodule_id"]].itertuples(index=False)}
    in_pairs = set().union(*map(_screens_of_pair, selection.pairs["pair_id"]),
                           *map(_screens_of_pair, selection.excluded["pair_id"].dropna()))
    listed = set(map(tuple, selection.excluded.loc[selection.excluded["pair_id"].isna(), keys]
                     .dropna().astype(int).to_numpy().tolist()))
    for key in tables["sctabn"][keys].astype(int).itertuples(index=False):
        paired = key in nodule_of and (key[0], key[1], nodule_of[key]) in in_pairs
        assert paired != (tuple(key) in listed), key  # exactly one of: in a (kept or dropped) pair, or listed
    assert set(tables["prsn"]["pid"]) - set(selection.pairs["pid"]) == set(
        selection.excluded.loc[selection.excluded["table"] == "prsn", "pid"])


def test_labels_follow_window_lobe_and_confirmation(tmp_path):
    late = PRSN.replace("100,68,1,1,1,0,0,0,0,1,40,1,1,1,", "100,68,1,1,1,0,0,0,0,1,40,1,1,3,")
    selection = select_cohort(**_folder(tmp_path, prsn=late), **TRAIN_ONLY, require_both_classes=False)
    assert selection.pairs["pair_id"].tolist() == ["100_A_T1T2", "200_D_T1T2"]
    reasons = _reasons(selection.excluded)
    assert reasons[("pairs", 100, "100_A_T0T1", "cancer_outside_window")] == (
        "lung cancer diagnosed in study year 3, after the label window "
        "(follow-up screen + 1 year(s) = study year 2)")

    other_lobe = PRSN.replace(",0,0,1,0,0,0\n", ",1,0,0,0,0,0\n")  # cancer in the right upper lobe
    tables = _folder(tmp_path, prsn=other_lobe)
    with pytest.raises(ValueError, match="split 'train' has only benign"):
        select_cohort(**tables, **TRAIN_ONLY)
    benign = select_cohort(**tables, **TRAIN_ONLY, cancer_other_lobe="benign", require_both_classes=False)
    assert benign.pairs["label"].tolist() == [0, 0, 0]
    assert benign.pairs.loc[0, "label_basis"] == "lung cancer in another lobe only"

    no_locations = PRSN.replace(",locrup,locrmid,locrlow,loclup,loclin,locllow", "").replace(
        ",0,0,1,0,0,0\n", "\n").replace(",.N,.N,.N,.N,.N,.N\n", "\n")
    patient_level = select_cohort(**_folder(tmp_path, prsn=no_locations), **TRAIN_ONLY)
    assert patient_level.pairs["label"].tolist() == [1, 1, 0]
    assert patient_level.pairs.loc[0, "label_basis"] == "lung cancer, no lobe recorded"


def test_lingula_matches_a_left_upper_lobe_cancer(tmp_path):
    cancer = PRSN.replace("200,60,2,0,0,0,0,0,0,0,30,0,0,.N,.N,0,365,730,.N,.N,.N,.N,.N,.N",
                          "200,60,2,0,0,0,0,0,0,0,30,1,1,2,700,0,365,730,0,0,0,1,0,0")
    selection = select_cohort(**_folder(tmp_path, prsn=cancer), **TRAIN_ONLY, require_both_classes=False)
    assert selection.pairs.set_index("pair_id").loc["200_D_T1T2", "label"] == 1


def test_pairing_options_baseline_years_and_link_confirmation(tmp_path):
    unverified = SCTABNC.replace("100,2,1,2,2,1,2,730\n", "")
    tables = _folder(tmp_path, sctabnc=unverified)
    loose = select_cohort(**tables, **TRAIN_ONLY)
    assert loose.pairs.set_index("pair_id")["link_confirmed"].to_dict() == {
        "100_A_T0T1": True, "100_A_T1T2": False, "200_D_T1T2": True}
    strict = select_cohort(**tables, **TRAIN_ONLY, require_link_confirmation=True)
    assert "100_A_T1T2" not in set(strict.pairs["pair_id"])
    assert _reasons(strict.excluded)[("pairs", 100, "100_A_T1T2", "unconfirmed_link")].startswith("no sctabnc")
    first_only = select_cohort(**tables, **TRAIN_ONLY, baseline_years=(0,), require_both_classes=False)
    assert first_only.pairs["pair_id"].tolist() == ["100_A_T0T1"]
    assert _reasons(first_only.excluded)[("locations", 100, 2, "not_baseline_year")].startswith("study_yr 2 is not")


def test_no_pairs_at_all_is_a_clear_error(tmp_path):
    header = LOCATIONS.split("\n", 1)[0] + "\n"
    with pytest.raises(ValueError, match="split 'train' is empty"):
        select_cohort(**_folder(tmp_path, locations=header), **TRAIN_ONLY)


def _synthetic_pairs(n_patients=40, malignant_every=4):
    return pd.DataFrame({"pid": range(1000, 1000 + n_patients),
                         "label": [int(i % malignant_every == 0) for i in range(n_patients)]})


def test_split_is_patient_level_stratified_and_seeded():
    pairs = pd.concat([_synthetic_pairs(), _synthetic_pairs()], ignore_index=True)  # two pairs per patient
    split = split_patients(pairs, val_fraction=0.15, test_fraction=0.30, seed=23)
    assert split.index.is_unique and len(split) == 40
    pairs["split"] = pairs["pid"].map(split)
    check_splits(pairs)
    assert split.value_counts().to_dict() == {"train": 23, "test": 12, "val": 5}
    assert split.equals(split_patients(pairs, val_fraction=0.15, test_fraction=0.30, seed=23))
    assert not split.equals(split_patients(pairs, val_fraction=0.15, test_fraction=0.30, seed=24))


def test_check_splits_names_the_bad_split():
    pairs = _synthetic_pairs(6, malignant_every=2).assign(split=["train", "train", "test", "test", "train", "test"])
    with pytest.raises(ValueError, match="split 'val' is empty"):
        check_splits(pairs)
    one_class = pairs.assign(split=["train", "train", "val", "test", "val", "test"])
    with pytest.raises(ValueError, match="split 'val' has only malignant"):
        check_splits(one_class)
    check_splits(one_class, require_both_classes=False)
    shared = pairs.assign(pid=[1, 2, 1, 3, 4, 5])
    with pytest.raises(ValueError, match=r"pid\(s\) \[1\] are in more than one split"):
        check_splits(shared, splits=["train", "test"])


def test_select_cohort_refuses_a_split_without_both_classes(tmp_path):
    with pytest.raises(ValueError, match="split '(val|test)'"):
        select_cohort(**_folder(tmp_path))


def _replicated(tmp_path, copies=4, **tables):
    """The tiny cohort `copies` times over, with pids shifted by 1000: enough patients for three splits."""
    texts = {}
    for kind, text in {"prsn": PRSN, "sctabn": SCTABN, "sctabnc": SCTABNC, "locations": LOCATIONS, **tables}.items():
        header, rest = text.split("\n", 1)
        lines = [line for line in rest.splitlines() if line]
        shifted = [f"{int(pid) + 1000 * k},{rest}\n" for k in range(copies)
                   for pid, rest in (line.split(",", 1) for line in lines)]
        texts[kind] = header + "\n" + "".join(shifted)
    return _folder(tmp_path, **texts)


def test_default_split_has_both_classes_everywhere(tmp_path):
    selection = select_cohort(**_replicated(tmp_path), max_test_pairs_per_subject=None)
    counts = selection.counts.set_index("split")
    assert counts.loc["total"].tolist() == [12, 8, 8, 4]
    assert (counts.loc[["train", "val", "test"], ["malignant", "benign"]] > 0).all().all()


@pytest.mark.parametrize("diameter, kept", [(3, False), (4, True), (5, True), (29, True), (30, True), (31, False)])
def test_size_filter_keeps_the_inclusive_range_of_the_recorded_baseline_diameter(tmp_path, diameter, kept):
    sctabn = SCTABN.replace("100,0,1,51,3,3,27,20,", f"100,0,1,51,3,3,{diameter},{min(diameter, 20)},")
    selection = select_cohort(**_folder(tmp_path, sctabn=sctabn), **TRAIN_ONLY, nodule_size_mm=[4, 30])
    assert ("100_A_T0T1" in set(selection.pairs["pair_id"])) == kept
    counts = selection.counts.set_index("split").loc["excluded: nodule_size"]
    assert counts[["pairs", "malignant", "benign"]].tolist() == ([0, 0, 0] if kept else [1, 1, 0])
    if not kept:
        assert _reasons(selection.excluded)[("pairs", 100, "100_A_T0T1", "nodule_size")] == \
            f"baseline long diameter {diameter} mm outside [4, 30]"
    unfiltered = select_cohort(**_folder(tmp_path, sctabn=sctabn), **TRAIN_ONLY, nodule_size_mm=None)
    assert "100_A_T0T1" in set(unfiltered.pairs["pair_id"])


def test_size_filter_reads_the_baseline_not_the_follow_up_and_names_a_missing_diameter(tmp_path):
    # A's follow-up at T2 is 34 mm, outside [4, 30], yet the T1->T2 pair's baseline (30 mm) is inside.
    pairs = select_cohort(**_folder(tmp_path), **TRAIN_ONLY, nodule_size_mm=(4.5, 30)).pairs.set_index("pair_id")
    assert pairs.index.tolist() == ["100_A_T0T1", "100_A_T1T2", "200_D_T1T2"]
    assert pairs.loc["100_A_T1T2", "SCT_LONG_DIA_follow"] == 34
    narrow = select_cohort(**_folder(tmp_path), **TRAIN_ONLY, nodule_size_mm=(5.5, 30),
                           require_both_classes=False)
    assert _reasons(narrow.excluded)[("pairs", 200, "200_D_T1T2", "nodule_size")] == \
        "baseline long diameter 5 mm outside [5.5, 30]"
    unmeasured = SCTABN.replace("100,0,1,51,3,3,27,20,", "100,0,1,51,3,3,.S,20,")
    optional = [f for f in EHR_FEATURES if f != "SCT_LONG_DIA"]
    selection = select_cohort(**_folder(tmp_path, sctabn=unmeasured), **TRAIN_ONLY, required_fields=optional)
    assert _reasons(selection.excluded)[("pairs", 100, "100_A_T0T1", "nodule_size")] == \
        "baseline sct_long_dia=.S (unable to determine), so the size range [4, 30] cannot be checked"
    with pytest.raises(ValueError, match="nodule_size_mm"):
        select_cohort(**_folder(tmp_path), **TRAIN_ONLY, nodule_size_mm=(30, 4))


# pid 100 gains a second nodule G (left upper lobe, benign unless the cancer is placed there): 3 pairs.
SCTABN_G = SCTABN + "100,0,3,51,2,4,9,7,2,20,0\n100,1,3,51,2,4,10,8,2,21,0\n"
SCTABNC_G = SCTABNC + "100,1,3,2,2,1,1,365\n"
LOCATIONS_G = LOCATIONS + "100,0,3,G,1.1.0,20,30,20\n100,1,3,G,1.1.1,21,31,21\n"


def _three_pair_subjects(tmp_path, prsn=PRSN, copies=6):
    tmp_path.mkdir(exist_ok=True)
    tables = {"prsn": prsn, "sctabn": SCTABN_G, "sctabnc": SCTABNC_G, "locations": LOCATIONS_G}
    return _replicated(tmp_path, copies, **tables)


def test_a_test_subject_keeps_one_pair_and_every_other_subject_keeps_all(tmp_path):
    tables = _three_pair_subjects(tmp_path)
    options = {"cancer_other_lobe": "benign", "require_both_classes": False}
    full = select_cohort(**tables, **options, max_test_pairs_per_subject=None).pairs
    limited = select_cohort(**tables, **options)
    pairs, excluded = limited.pairs, limited.excluded
    assert full.groupby("pid").size().max() == 3
    assert full.drop_duplicates("pid").set_index("pid")["split"].equals(
        pairs.drop_duplicates("pid").set_index("pid")["split"])  # the cap does not move the split
    test = pairs[pairs["split"] == "test"]
    assert test["pid"].is_unique and set(test["pid"]) == set(full.loc[full["split"] == "test", "pid"])
    assert (full["split"] == "test").sum() > test["pid"].nunique()
    pd.testing.assert_frame_equal(pairs[pairs["split"] != "test"].reset_index(drop=True),
                                  full[full["split"] != "test"].reset_index(drop=True))
    dropped = excluded[excluded["rule"] == "test_pair_limit"]
    assert sorted(dropped["pair_id"]) == sorted(set(full.loc[full["split"] == "test", "pair_id"])
                                                - set(test["pair_id"]))
    kept_of = test.set_index("pid")["pair_id"]
    for row in dropped.itertuples():
        assert row.reason == (f"test subject already gives 1 pair, {kept_of[row.pid]} "
                              "(max_test_pairs_per_subject = 1)")
    full_labels = full.set_index("pair_id")["label"]
    counts = limited.counts.set_index("split").loc["excluded: test_pair_limit"]
    assert counts[["pairs", "subjects", "malignant"]].tolist() == [
        len(dropped), dropped["pid"].nunique(), int(full_labels[dropped["pair_id"]].sum())]
    two = select_cohort(**tables, **options, max_test_pairs_per_subject=2).pairs
    assert two[two["split"] == "test"].groupby("pid").size().max() == 2


def test_which_test_pair_a_subject_keeps_does_not_look_at_the_label(tmp_path):
    options = {"cancer_other_lobe": "benign", "require_both_classes": False}
    cancer_in_a = select_cohort(**_three_pair_subjects(tmp_path / "a"), **options).pairs
    # the same subjects with the cancer moved to G's lobe (left upper): A's pairs turn benign, G's malignant
    in_g = PRSN.replace(",0,0,1,0,0,0\n", ",0,0,0,1,0,0\n")
    cancer_in_g = select_cohort(**_three_pair_subjects(tmp_path / "g", prsn=in_g), **options).pairs
    assert cancer_in_a[["pair_id", "split"]].equals(cancer_in_g[["pair_id", "split"]])
    test = cancer_in_a["split"] == "test"
    assert (cancer_in_a.loc[test, "label"] != cancer_in_g.loc[test, "label"]).any()


def test_write_cohort_writes_the_three_tables(tmp_path):
    selection = select_cohort(**_folder(tmp_path), **TRAIN_ONLY)
    paths = write_cohort(selection, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cohort_counts.csv", "excluded.csv", "pairs.csv"]
    pairs = pd.read_csv(paths["pairs"], dtype={"nodule_id": str})
    assert pairs["pair_id"].tolist() == selection.pairs["pair_id"].tolist()
    assert tuple(pd.read_csv(paths["counts"]).columns) == COUNT_COLUMNS
    assert len(pd.read_csv(paths["excluded"])) == len(selection.excluded)
