import hashlib

import numpy as np
import pandas as pd
import pydicom
import pytest

from namd.data.phantom import (
    CANCER_LOCATION_COLUMNS,
    GROUND_GLASS,
    LOCATION_COLUMNS,
    PRSN_COLUMNS,
    SCTABN_COLUMNS,
    SCTABNC_COLUMNS,
    SPICULATED,
    brock_linear_predictor,
    calibrated_intercept,
    draw_cohort,
    write_phantom_cohort,
)

TINY = dict(
    n_participants=6,
    seed=7,
    matrix=80,
    pixel_spacing_mm=3.2,
    n_slices=8,
    slice_thickness_mm=3.0,
    missing_fraction=0.3,
    extra_series_fraction=0.5,
    progress=False,
)


def _read(folder, name):
    return pd.read_csv(folder / name, dtype=str, keep_default_na=False)


def _series(folder, uid):
    """HU volume of one series, sorted by position like any reader must."""
    datasets = [pydicom.dcmread(p) for p in (folder / "dicom").rglob(f"{uid}/*.dcm")]
    datasets.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    hu = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in datasets])
    return hu, [int(ds.InstanceNumber) for ds in datasets]


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phantom")
    summary = write_phantom_cohort(folder, **TINY)
    return folder, summary


def test_brock_risk_rises_with_size_and_spiculation():
    common = dict(
        age=[62, 62],
        female=[0, 0],
        family_history=[0, 0],
        emphysema=[0, 0],
        attenuation=[1, 1],
        upper_lobe=[0, 0],
        nodule_count=[1, 1],
    )
    by_size = brock_linear_predictor(diameter_mm=[5.0, 20.0], spiculated=[0, 0], **common)
    by_margin = brock_linear_predictor(diameter_mm=[8.0, 8.0], spiculated=[0, 1], **common)
    assert by_size[1] > by_size[0] and by_margin[1] > by_margin[0]
    # The published model gives a 4 mm solid nodule of a 62-year-old man no size term.
    at_reference = brock_linear_predictor(
        diameter_mm=[4.0], spiculated=[0], **{k: v[:1] for k, v in common.items()}
    )
    assert at_reference[0] == pytest.approx(-0.0824 * (1 - 4))
    with pytest.raises(ValueError, match="diameter_mm"):
        brock_linear_predictor(diameter_mm=[0.0], spiculated=[0], **{k: v[:1] for k, v in common.items()})


def test_intercept_calibration_hits_target_and_rejects_bad_target():
    lp = np.random.default_rng(0).normal(0, 1.5, 500)
    b = calibrated_intercept(lp, 0.15)
    assert (1 / (1 + np.exp(-(lp + b)))).mean() == pytest.approx(0.15, abs=1e-6)
    with pytest.raises(ValueError, match="target_malignant_fraction"):
        calibrated_intercept(lp, 1.5)


def test_malignant_fraction_and_growth_follow_the_biology():
    participants = draw_cohort(400, seed=11)
    nodules = [n for p in participants for n in p.nodules]
    assert len(nodules) > 500
    assert 0.12 <= np.mean([n.malignant for n in nodules]) <= 0.20
    assert np.mean([n.brock_risk for n in nodules if n.malignant]) > np.mean(
        [n.brock_risk for n in nodules if not n.malignant]
    )
    followed = [n for n in nodules if {0, 1} <= set(n.screens)]
    growth = {
        m: [n.screens[1].long_dia_mm / n.screens[0].long_dia_mm for n in followed if n.malignant == m]
        for m in (True, False)
    }
    assert np.mean(growth[True]) > 1.25 > 1.05 > np.mean(growth[False])
    became_spiculated = [
        n.screens[1].margins == SPICULATED and n.screens[0].margins != SPICULATED
        for n in followed
        if n.malignant
    ]
    assert np.mean(became_spiculated) > 0.2
    resolved_ggo = [
        n
        for p in participants
        if 1 in p.scr_days
        for n in p.nodules
        if n.attenuation == GROUND_GLASS and not n.malignant and 0 in n.screens and 1 not in n.screens
    ]
    assert resolved_ggo, "some benign ground-glass nodules should resolve by the next screen"


def test_cancer_outcome_points_at_the_malignant_nodule():
    for participant in draw_cohort(300, seed=5):
        malignant = [n for n in participant.nodules if n.malignant]
        if malignant:
            assert participant.conflc == 1 and participant.can_scr == 1
            first = min(n.first_screen for n in malignant)
            assert participant.cancyr in (first, first + 1)
            assert participant.candx_days > participant.scr_days[participant.cancyr]
            assert {n.lobe for n in malignant} == participant.cancer_lobes
            assert max(participant.scr_days) == participant.cancyr


def test_tables_have_nlst_columns_and_codes(tiny_cohort):
    folder, summary = tiny_cohort
    prsn, sctabn = _read(folder, "nlst_prsn.csv"), _read(folder, "nlst_sctabn.csv")
    sctabnc, locations = _read(folder, "nlst_sctabnc.csv"), _read(folder, "nodule_locations.csv")
    assert list(prsn.columns) == PRSN_COLUMNS and list(sctabn.columns) == SCTABN_COLUMNS
    assert list(sctabnc.columns) == SCTABNC_COLUMNS and list(locations.columns) == LOCATION_COLUMNS
    assert len(prsn) == summary["participants"] == 6
    assert prsn["age"].astype(int).between(55, 74).all() and set(prsn["gender"]) <= {"1", "2"}
    assert set(prsn["conflc"]) <= set("01234") and set(prsn["diagemph"]) <= {"0", "1", ".M"}
    for column in CANCER_LOCATION_COLUMNS.values():
        assert set(prsn[column]) <= {"0", "1", ".N"}
    assert ".M" in set(
        prsn[["diagemph", "famfather", "fammother", "fambrother", "famsister", "famchild"]].values.ravel()
    )

    nodules = sctabn[sctabn["sct_ab_desc"] == "51"]
    others = sctabn[sctabn["sct_ab_desc"] != "51"]
    assert set(sctabn["sct_ab_desc"].astype(int)) <= set(range(51, 66))
    assert (others[["sct_pre_att", "sct_epi_loc", "sct_long_dia", "sct_margins"]] == ".N").all().all()
    assert set(nodules["sct_pre_att"]) <= {"1", "2", "3", "9"} and set(nodules["sct_margins"]) <= {
        "1",
        "2",
        "3",
        "9",
    }
    assert set(nodules["sct_epi_loc"]) <= {"1", "2", "3", "4", "5", "6", ".M"}
    both = nodules[(nodules["sct_long_dia"] != ".S") & (nodules["sct_perp_dia"] != ".S")]
    assert (both["sct_perp_dia"].astype(int) <= both["sct_long_dia"].astype(int)).all()
    recorded = nodules.loc[nodules["sct_long_dia"] != ".S", "sct_long_dia"].astype(int)
    assert (recorded >= 4).all(), "code 51 is an opacity of at least 4 mm"
    assert {"9", ".S", "999"} & set(nodules.values.ravel())

    keys = ["pid", "study_yr", "sct_ab_num"]
    assert not sctabn.duplicated(keys).any()
    assert set(map(tuple, sctabnc[keys].values)) <= set(map(tuple, sctabn[keys].values))
    assert (sctabnc["study_yr"].astype(int) >= 1).all()
    assert set(map(tuple, locations[keys].values)) == set(map(tuple, nodules[keys].values))


def test_locations_point_at_nodules_in_the_dicom(tiny_cohort):
    folder, _ = tiny_cohort
    truth = _read(folder, "phantom_truth.csv")
    sctabn = _read(folder, "nlst_sctabn.csv").set_index(["pid", "study_yr", "sct_ab_num"])
    assert (truth["long_dia_mm"].astype(float) >= truth["perp_dia_mm"].astype(float)).all()
    checked = 0
    for _, row in truth.iterrows():
        hu, instance_numbers = _series(folder, row["series_instance_uid"])
        z, r, c = int(row["slice_index"]), int(row["row"]), int(row["col"])
        slice_num = sctabn.loc[(row["pid"], row["study_yr"], row["sct_ab_num"]), "sct_slice_num"]
        if slice_num != "999":
            assert int(slice_num) == instance_numbers[z]
        if float(row["long_dia_mm"]) >= 8.0:
            centre = hu[z, r - 1 : r + 2, c - 1 : c + 2].mean()
            if row["attenuation"] == "2":
                assert -800 < centre < -150
            else:
                assert centre > -450
            checked += 1
    assert checked >= 2


def test_same_seed_is_byte_identical_whatever_the_workers(tiny_cohort, tmp_path):
    folder, summary = tiny_cohort
    again = write_phantom_cohort(tmp_path, **{**TINY, "progress": False}, workers=2)
    assert again == summary

    def digest(root):
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    assert digest(folder) == digest(tmp_path)


def test_other_seed_differs_and_existing_output_is_refused(tiny_cohort, tmp_path):
    folder, _ = tiny_cohort
    write_phantom_cohort(tmp_path, **{**TINY, "seed": 8})
    assert (tmp_path / "nlst_prsn.csv").read_bytes() != (folder / "nlst_prsn.csv").read_bytes()
    with pytest.raises(FileExistsError, match="dicom"):
        write_phantom_cohort(tmp_path, **TINY)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="nodule_count_probabilities"):
        draw_cohort(5, nodule_count_probabilities=(0.5, 0.6))
    with pytest.raises(ValueError, match="missing_fraction"):
        write_phantom_cohort("/nonexistent-unused", missing_fraction=2.0)
    with pytest.raises(TypeError):
        draw_cohort(5, no_such_option=1)
