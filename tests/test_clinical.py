import logging
import math

import numpy as np
import pandas as pd
import pytest

from namd.evaluation.clinical import (
    CLINICAL_ROWS,
    MissingField,
    brock_record,
    clinical_scores,
    lung_rads_record,
    lung_rads_score,
    mean_diameter,
    nodule_counts,
    size_category,
    write_clinical_scores,
)
from namd.evaluation.metrics import EvaluationInputError
from namd.evaluation.significance import compare_rows

SOLID, GROUND_GLASS, PART_SOLID = 1, 2, 3


def record(**changes):
    """A pairs.csv row in the cohort's vocabulary: a 62-year-old man, 4 mm smooth solid right-lower-lobe nodule."""
    base = {
        "pair_id": "100001_N1_T0T1", "pid": 100001, "study_yr_base": 0, "split": "test", "label": 0,
        "age": 62, "gender": "Male", "diagemph": "No",
        "famfather": "No", "fammother": "No", "fambrother": "No", "famsister": "No", "famchild": "No",
        "SCT_PRE_ATT": "Soft", "SCT_EPI_LOC": "Right Lower Lobe", "SCT_MARGINS": "Smooth",
        "SCT_LONG_DIA": 4.0, "SCT_PERP_DIA": 4.0, "SCT_LONG_DIA_follow": 4.0, "SCT_PERP_DIA_follow": 4.0,
    }
    return {**base, **changes}


def test_brock_matches_hand_computed_probabilities():
    # Every term at its reference value: only the published intercept is left.
    assert brock_record(record(), nodule_count=4) == pytest.approx(1 / (1 + math.exp(6.7892)), rel=1e-9)
    # 70-year-old woman, father with lung cancer, emphysema, 10 mm spiculated part-solid LUL nodule, the
    # only one on the scan: -6.7892 + 0.0287*8 + 0.6011 + 0.2961 + 0.2953 - 5.3854*(1 - 1.58113883)
    # + 0.377 + 0.6581 - 0.0824*(1 - 4) + 0.7729 = -0.18223
    sick = record(age=70, gender="Female", famfather="Yes", diagemph="Yes", SCT_PRE_ATT="Part Solid",
                  SCT_LONG_DIA=10.0, SCT_EPI_LOC="Left Upper Lobe", SCT_MARGINS="Spiculated")
    assert brock_record(sick, nodule_count=1) == pytest.approx(1 / (1 + math.exp(0.18223)), abs=1e-5)


def test_brock_family_history_needs_all_five_answers_only_when_none_says_yes():
    unknown_sister = record(famsister=np.nan)
    with pytest.raises(MissingField) as missing:
        brock_record(unknown_sister, nodule_count=1)
    assert missing.value.fields == ("famsister",)
    assert (brock_record(record(famsister=np.nan, famchild="Yes"), nodule_count=1)
            > brock_record(record(), nodule_count=1))


@pytest.mark.parametrize(
    "attenuation, mean_mm, growth_mm, category",
    [
        (SOLID, 5.9, None, "2"), (SOLID, 6.0, None, "3"), (SOLID, 7.9, None, "3"), (SOLID, 8.0, None, "4A"),
        (SOLID, 14.9, None, "4A"), (SOLID, 15.0, None, "4B"),
        (SOLID, 5.0, 2.0, "4A"), (SOLID, 8.0, 2.0, "4B"), (SOLID, 7.0, 1.5, "3"),  # growth must exceed 1.5 mm
        (GROUND_GLASS, 29.9, None, "2"), (GROUND_GLASS, 30.0, None, "3"), (GROUND_GLASS, 20.0, 5.0, "2"),
        # part-solid: solid part = 0.5 x mean diameter
        (PART_SOLID, 5.9, None, "2"), (PART_SOLID, 6.0, None, "3"), (PART_SOLID, 11.9, None, "3"),
        (PART_SOLID, 12.0, None, "4A"), (PART_SOLID, 16.0, None, "4B"),
        (PART_SOLID, 7.9, 2.0, "4A"), (PART_SOLID, 8.0, 2.0, "4B"),
    ],
)
def test_lung_rads_size_and_growth_branches(attenuation, mean_mm, growth_mm, category):
    assert size_category(attenuation, mean_mm, growth_mm) == category


def test_lung_rads_record_mean_diameter_4x_and_follow_up():
    assert mean_diameter(7, 4) == 5.5
    assert lung_rads_record(record(SCT_LONG_DIA=7.0, SCT_PERP_DIA=6.0)) == "3"
    assert lung_rads_record(record(SCT_LONG_DIA=7.0, SCT_PERP_DIA=6.0, SCT_MARGINS="Spiculated")) == "4X"
    assert lung_rads_record(record(SCT_MARGINS="Spiculated")) == "2"  # 4X raises only categories 3 and 4
    assert lung_rads_record(record(SCT_MARGINS=np.nan)) == "2"  # margins not needed below category 3
    with pytest.raises(MissingField, match="SCT_MARGINS"):
        lung_rads_record(record(SCT_LONG_DIA=9.0, SCT_PERP_DIA=9.0, SCT_MARGINS=np.nan))
    small = dict(SCT_LONG_DIA=6.0, SCT_PERP_DIA=4.0)  # 5.0 mm: category 2 at baseline
    assert lung_rads_record(record(**small, SCT_LONG_DIA_follow=8.0, SCT_PERP_DIA_follow=6.0), follow_up=True) == "4A"
    assert lung_rads_record(record(**small, SCT_LONG_DIA_follow=6.0, SCT_PERP_DIA_follow=5.0), follow_up=True) == "2"
    assert lung_rads_record(record(**small, SCT_LONG_DIA_follow=10.0, SCT_PERP_DIA_follow=8.0), follow_up=True) == "4B"
    assert [lung_rads_score(c) for c in ("2", "3", "4A", "4B", "4X")] == [0.0, 0.25, 0.5, 0.75, 1.0]


def _pairs():
    return pd.DataFrame([
        record(pair_id="A", pid=1, label=1, SCT_LONG_DIA=12.0, SCT_PERP_DIA=10.0, SCT_LONG_DIA_follow=15.0,
               SCT_PERP_DIA_follow=13.0),
        record(pair_id="B", pid=2, label=0, SCT_PERP_DIA_follow=np.nan),
        record(pair_id="C", pid=3, label=0, split="train"),
    ])


def test_a_pair_lacking_a_field_is_named_and_left_out_of_that_row_only(caplog):
    counts = pd.Series({(1, 0): 2, (2, 0): 1, (3, 0): 1})
    with caplog.at_level(logging.WARNING):
        tables = clinical_scores(_pairs(), counts)
    assert set(tables) == set(CLINICAL_ROWS)
    assert list(tables["brock"]["pair_id"]) == ["A", "B"]  # test split only
    assert list(tables["lungrads_baseline"]["pair_id"]) == ["A", "B"]
    assert list(tables["lungrads_followup"]["pair_id"]) == ["A"]
    assert "lungrads_followup: pair B left out, its record lacks SCT_PERP_DIA_follow" in caplog.text
    assert list(tables["brock"].columns) == ["pair_id", "seed", "label", "prob"]
    assert tables["lungrads_followup"]["prob"].tolist() == [0.75]  # 11 -> 14 mm solid, growing: 4B


def test_nodule_count_comes_from_sctabn_and_must_cover_every_test_pair(tmp_path):
    sctabn = pd.DataFrame({
        "pid": [1, 1, 1, 2], "study_yr": [0, 0, 0, 0], "sct_ab_num": [1, 2, 3, 1], "sct_ab_desc": [51, 51, 52, 51],
        "sct_pre_att": [1, 1, ".N", 1], "sct_epi_loc": [1, 3, ".N", 2], "sct_long_dia": [12, 5, ".N", 4],
        "sct_perp_dia": [10, 5, ".N", 4], "sct_margins": [2, 2, ".N", 2],
    })
    sctabn.to_csv(tmp_path / "nlst_sctabn.csv", index=False)
    pairs = _pairs()
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    outputs = {row: tmp_path / f"{row}.csv" for row in CLINICAL_ROWS}
    tables = write_clinical_scores(tmp_path / "pairs.csv", tmp_path / "nlst_sctabn.csv", outputs)
    assert pd.read_csv(outputs["brock"], dtype={"pair_id": str}).equals(tables["brock"])
    counts = nodule_counts(pd.read_csv(tmp_path / "nlst_sctabn.csv"))
    assert counts.to_dict() == {(1, 0): 2, (2, 0): 1}  # the micronodule (52) is not a nodule of the count
    with pytest.raises(ValueError, match="pair A: sctabn lists no code-51 nodule for pid 1"):
        clinical_scores(pairs, counts.drop((1, 0)))


def _probs(ids, labels, scores, seeds=(0,)):
    return pd.DataFrame([{"pair_id": p, "seed": s, "label": y, "prob": v + 0.01 * s}
                         for p, y, v in zip(ids, labels, scores) for s in seeds])


def test_delong_compares_a_partial_row_on_the_pairs_it_scores():
    rng = np.random.default_rng(0)
    ids = [f"p{i}" for i in range(40)]
    labels = np.array([1] * 12 + [0] * 28)
    reference = _probs(ids, labels, rng.random(40) * 0.5 + 0.3 * labels)
    partial = _probs(ids[:30], labels[:30], rng.random(30))
    result = compare_rows({"NAMD": reference, "Lung-RADS": partial}, partial_rows=["Lung-RADS"], n_boot=20)
    assert result.set_index("row").loc["Lung-RADS", "n_pairs"] == 30
    with pytest.raises(EvaluationInputError, match="score different pairs"):
        compare_rows({"NAMD": reference, "SD1.5": partial}, partial_rows=["Lung-RADS"], n_boot=20)


def _table(tmp_path, source):
    from namd.stages.evaluate import build_table

    rng = np.random.default_rng(1)
    ids = [f"p{i}" for i in range(24)]
    labels = np.array([1] * 8 + [0] * 16)
    pd.DataFrame({"pair_id": ids, "split": "test", "label": labels}).to_csv(tmp_path / "pairs.csv", index=False)
    scores = {
        "real_baseline": _probs(ids, labels, rng.random(24)),
        "namd": _probs(ids, labels, rng.random(24) * 0.5 + 0.3 * labels, seeds=(0, 1)),
        "brock": _probs(ids, labels, rng.random(24) * 0.6 + 0.4 * labels),
        "lungrads_followup": _probs(ids[:20], labels[:20], rng.integers(0, 5, 20) / 4),
    }
    probs = {}
    for name, frame in scores.items():
        probs[name] = tmp_path / f"{name}.csv"
        frame.to_csv(probs[name], index=False)
    table = build_table(probs, {}, {"namd": ("NAMD", True)}, tmp_path / "pairs.csv", seeds=[0, 1], reference="namd",
                        significance_params={"alpha": 0.05, "correction": "holm", "n_boot": 20},
                        out_tex=tmp_path / "t.tex", out_csv=tmp_path / "t.csv", out_significance=tmp_path / "s.csv",
                        out_per_seed=tmp_path / "d.csv", seed=0, cohort_source=source, extra_notes=["Evaluator."])
    return table, (tmp_path / "t.tex").read_text(), pd.read_csv(tmp_path / "s.csv").set_index("row")


def test_table_has_the_clinical_rows_and_their_footnotes(tmp_path):
    table, tex, significance = _table(tmp_path, "phantom")
    clinical = table[table["method"].isin(["Brock (PanCan) model", "Lung-RADS v2022 (real follow-up)"])]
    assert len(clinical) == 2 and set(clinical["group"]) == {"Real Image Baselines"}
    assert clinical["auroc_std"].isna().all() and clinical["lpips_mean"].isna().all()
    assert significance.loc["Lung-RADS v2022 (real follow-up)", "n_pairs"] == 20
    assert significance.loc["Brock (PanCan) model", "n_pairs"] == 24
    assert "Brock (PanCan) model & - & - &" in tex
    assert "its row is the ceiling of any baseline-only predictor" in tex
    assert "Lung-RADS v2022 (real follow-up): 20 of 24" in tex and "Brock (PanCan) model: 24 of 24" in tex
    assert "solid-part size" in tex and "Evaluator.\\par" in tex
    _, nlst_tex, _ = _table(tmp_path, "nlst")
    assert "ceiling" not in nlst_tex


def test_a_clinical_row_may_not_score_pairs_outside_the_test_split(tmp_path):
    from namd.stages.evaluate import build_table

    pd.DataFrame({"pair_id": ["a", "b"], "split": "test", "label": [0, 1]}).to_csv(tmp_path / "pairs.csv", index=False)
    _probs(["a", "b", "zz"], [0, 1, 0], [0.1, 0.9, 0.5]).to_csv(tmp_path / "brock.csv", index=False)
    with pytest.raises(EvaluationInputError, match="unexpected pair_id.*zz"):
        build_table({"brock": tmp_path / "brock.csv"}, {}, {}, tmp_path / "pairs.csv", seeds=[0], reference="namd",
                    significance_params={"alpha": 0.05, "correction": "holm", "n_boot": 5}, out_tex=tmp_path / "t",
                    out_csv=tmp_path / "c", out_significance=tmp_path / "s", out_per_seed=tmp_path / "d", seed=0)
