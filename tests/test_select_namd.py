"""tools/select_namd.py: variants parse and apply as stated, the growth metrics mean what they say."""

import sys

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT
from sklearn.metrics import roc_auc_score

from namd.evaluation.calibrated import RelativeChanges

sys.path.insert(0, str(ROOT / "tools"))
import select_namd as sn  # noqa: E402


def test_variant_values_are_yaml_and_dotted_keys_reach_nested_params():
    name, overrides = sn.parse_variant("eps:scheduler.prediction_type=epsilon,lr=3e-3,ddim_steps=50")
    assert name == "eps" and overrides == {"scheduler.prediction_type": "epsilon", "lr": 3e-3, "ddim_steps": 50}
    params = {"lr": 1e-3, "scheduler": {"prediction_type": "v_prediction"}, "ddim_steps": 25}
    changed = sn.apply(params, overrides)
    assert changed == {"lr": 3e-3, "scheduler": {"prediction_type": "epsilon"}, "ddim_steps": 50}
    assert params["scheduler"]["prediction_type"] == "v_prediction"  # the base is not modified


def test_unknown_param_and_malformed_item_are_refused():
    with pytest.raises(KeyError, match="no param 'lrr'"):
        sn.apply({"lr": 1e-3}, {"lrr": 1})
    with pytest.raises(ValueError, match="not KEY=VALUE"):
        sn.parse_variant("bad:lr")


def test_growth_metrics_of_a_faithful_and_of_a_size_regressing_predictor():
    rng = np.random.default_rng(0)
    baseline = rng.uniform(4, 20, 60)
    labels = (rng.random(60) < 0.4).astype(int)
    true_change = np.where(labels == 1, 5.0, 0.0) + rng.normal(0, 0.5, 60)
    faithful = (baseline + true_change)[:, None].repeat(3, axis=1)
    good = sn.growth_metrics(labels, true_change, faithful, baseline)
    assert good["spearman"] > 0.95 and good["growth_auroc"] > 0.95 and good["calibration"] == pytest.approx(1.0)
    assert good["slope_on_baseline"] == pytest.approx(1.0, abs=0.2)
    # every follow-up pulled halfway to the mean size: growth is lost, big (here: any) nodules shrink
    mean_size = np.full_like(baseline, baseline.mean())
    regressed = (0.5 * baseline + 0.5 * mean_size)[:, None].repeat(3, axis=1)
    bad = sn.growth_metrics(labels, true_change, regressed, baseline)
    assert bad["slope_on_baseline"] == pytest.approx(0.5) and abs(bad["calibration"]) < 0.1
    assert bad["no_nodule"] == 0


def test_the_record_swap_replaces_only_the_validation_reports():
    pairs = pd.DataFrame({"pair_id": ["a", "b", "c"], "split": ["train", "val", "val"],
                          "report": ["own a", "own b", "own c"]})
    swapped = sn.with_report(pairs, sn.HIGH_RISK)
    assert swapped["report"].tolist()[0] == "own a" and pairs["report"].tolist() == ["own a", "own b", "own c"]
    high, low = swapped["report"].iloc[1], sn.with_report(pairs, sn.LOW_RISK)["report"].iloc[1]
    assert high == swapped["report"].iloc[2] and high != low
    assert "74 years old female" in high and "25 mm" in high and "4 mm" in low


def test_the_training_cut_keeps_whole_subjects_and_every_validation_pair():
    pairs = pd.DataFrame({"pid": [1, 1, 2, 3, 3, 4, 5, 6], "split": ["train"] * 6 + ["val"] * 2})
    cut = sn.with_training_subjects(pairs, 0.5, seed=23)
    train = cut[cut["split"] == "train"]
    assert train["pid"].nunique() == 2 and (cut["split"] == "val").sum() == 2
    for pid in train["pid"].unique():  # a kept subject keeps all its pairs
        assert (train["pid"] == pid).sum() == (pairs["pid"] == pid).sum()
    assert cut.equals(sn.with_training_subjects(pairs, 0.5, seed=23))
    with pytest.raises(ValueError, match="train-fraction"):
        sn.with_training_subjects(pairs, 0.0, seed=23)


def test_the_baseline_references_rank_by_size_and_by_brock_and_skip_records_without_brock_fields():
    record = {"pid": 1, "study_yr_base": 0, "age": 60, "gender": "Male", "diagemph": "No",
              **{f: "No" for f in ("famfather", "fammother", "fambrother", "famsister", "famchild")},
              "SCT_PRE_ATT": "Soft", "SCT_EPI_LOC": "Left Lower Lobe", "SCT_MARGINS": "Smooth"}
    val = pd.DataFrame([{**record, "pid": i, "SCT_LONG_DIA": d} for i, d in enumerate([5.0, 9.0, 14.0, 20.0])])
    val.loc[0, "gender"] = np.nan  # a missing code: left out
    counts = pd.Series(1, index=pd.MultiIndex.from_tuples([(i, 0) for i in range(4)], names=["pid", "study_yr"]))
    baseline = val["SCT_LONG_DIA"].to_numpy()
    labels = np.array([0, 0, 1, 1])
    true_change = np.array([0.0, 0.5, 3.0, 5.0])
    table = sn.baseline_references(val, labels, true_change, baseline, counts).set_index("reference")
    assert (table["pairs"] == 3).all()
    assert table.loc["baseline diameter", "spearman"] == pytest.approx(1.0)
    assert table.loc["Brock probability x baseline diameter", "growth_auroc"] == pytest.approx(1.0)


def test_the_chosen_variant_is_the_first_within_a_tie_of_the_best_growth_auroc():
    frame = pd.DataFrame({"variant": ["current", "a", "b"], "spearman": [0.9, 0.1, 0.2],
                          "growth_auroc": [0.60, 0.64, 0.70]})
    assert sn.mark_chosen(frame)["chosen"].tolist() == [False, False, True]  # the Spearman does not choose
    assert sn.mark_chosen(frame.assign(growth_auroc=[0.62, 0.64, 0.63]))["chosen"].tolist() == [True, False, False]


def test_the_oracle_report_states_each_pairs_own_outcome_in_every_split():
    pairs = pd.DataFrame({"pair_id": ["a", "b", "c"], "split": ["train", "val", "val"], "label": [1, 0, 1],
                          "report": ["own a.", "own b.", "own c."]})
    told = sn.with_outcome(pairs)
    assert told["report"].tolist() == ["own a. The nodule is malignant.", "own b. The nodule is benign.",
                                       "own c. The nodule is malignant."]
    assert pairs["report"].tolist() == ["own a.", "own b.", "own c."]


def test_the_brock_report_adds_the_records_risk_in_bands_and_skips_a_missing_field():
    assert sn.brock_sentence(0.123) == " The Brock model gives a 12 percent risk of malignancy (intermediate)."
    assert sn.brock_sentence(0.05).endswith("(low).") and sn.brock_sentence(0.9).endswith("(high).")
    pairs = pd.DataFrame({"pair_id": ["a", "b"], "split": ["train", "val"], "report": ["own a.", "own b."]})
    risks = iter([0.5, sn.MissingField(["age"])])

    def fake_brock(record, count):
        risk = next(risks)
        if isinstance(risk, Exception):
            raise risk
        return risk

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sn, "brock_record", fake_brock)
        mp.setattr(sn, "nodule_count", lambda counts, record: 1)
        told = sn.with_brock(pairs, pd.Series(dtype=int))
    assert told["report"].tolist() == ["own a. The Brock model gives a 50 percent risk of malignancy (intermediate).",
                                       "own b."]


def test_the_noisy_oracle_states_the_opposite_outcome_for_the_seeded_share():
    pairs = pd.DataFrame({"pair_id": [str(i) for i in range(4000)], "split": "train", "label": [0, 1] * 2000,
                          "report": "own."})
    told = sn.with_outcome(pairs, flip=0.25, seed=3)
    stated = told["report"].str.endswith("malignant.").astype(int)
    assert (stated != pairs["label"]).mean() == pytest.approx(0.25, abs=0.02)
    assert told["report"].equals(sn.with_outcome(pairs, flip=0.25, seed=3)["report"])


def test_the_calibrated_sampler_reaches_the_risk_ranking_only_as_k_grows():
    rng = np.random.default_rng(1)
    n = 400
    risk = rng.beta(0.6, 2.5, n)
    labels = (rng.random(n) < risk).astype(int)
    baseline = rng.uniform(4, 20, n)
    train_baseline = rng.uniform(4, 20, 300)
    train_labels = (rng.random(300) < 0.3).astype(int)  # malignant nodules grow by half, benign ones stay
    changes = RelativeChanges.of(train_baseline, train_baseline * np.where(train_labels == 1, 1.5, 1.0),
                                    train_labels)
    true_change = baseline * np.where(labels == 1, 0.5, 0.0)
    expected = roc_auc_score(labels, risk * baseline)
    one, many = (sn.calibrated_sampler(labels, true_change, baseline, risk, changes, k, band_risk=risk, draws=40)
                 for k in (1, 200))
    assert one["growth_auroc"] < many["growth_auroc"] - 0.05
    assert many["growth_auroc"] == pytest.approx(expected, abs=0.02)
    assert many["calibration"] == pytest.approx(risk.mean() / labels.mean(), rel=0.1)
    # the grown shares are the risk band's mean risk: the mixture a calibrated generator draws
    assert many["grown_share_high_risk"] == pytest.approx(risk[risk >= sn.RISK_BAND].mean(), abs=0.02)
    assert many["grown_share_low_risk"] == pytest.approx(risk[risk < sn.RISK_BAND].mean(), abs=0.02)
    assert one["growth_auroc_sd"] > 0 and np.isnan(one["spread_mm"])


def test_a_deterministic_predictor_has_no_spread_and_the_grown_share_counts_a_quarter_up():
    baseline = np.array([8.0, 8.0, 12.0])
    predicted = np.array([[8.0, 8.0], [10.1, 10.1], [12.0, 15.1]])  # +0, +26%, one of two samples +26%
    metrics = sn.growth_metrics(np.array([0, 1, 1]), np.array([0.0, 2.0, 3.0]), predicted, baseline,
                                risk=np.array([0.05, 0.5, 0.2]))
    assert metrics["grown_share"] == pytest.approx(3 / 6)
    assert metrics["grown_share_low_risk"] == 0 and metrics["grown_share_high_risk"] == pytest.approx(3 / 4)
    assert metrics["spread_mm"] == pytest.approx(np.mean([0, 0, np.std([0, 3.1], ddof=1)]))


def test_the_stated_risk_is_the_share_malignant_of_training_pairs_stating_the_same_outcome():
    pairs = pd.DataFrame({"pair_id": ["1_N1", "2_N1", "3_N1"], "split": ["train", "train", "val"], "label": [1, 0, 1],
                          "report": [f"x The nodule is {w}." for w in ("malignant", "benign", "malignant")]})
    assert sn.stated_risk(pairs, ["3_N1", "2_N1"]).tolist() == [1.0, 0.0]  # shares of the training pairs only
