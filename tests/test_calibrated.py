"""namd.evaluation.calibrated: the calibrated generator draws what it says, from where it says."""

import numpy as np
import pandas as pd
import pytest

from namd.evaluation.calibrated import RelativeChanges, calibrated_followups, recalibrated, truth_risks


def test_the_relative_changes_are_drawn_from_the_samples_own_size_bin_and_outcome():
    baseline = np.array([5.0, 5.0, 6.0, 6.0, 20.0, 20.0, 22.0, 22.0, 0.0])
    follow = np.array([5.0, 7.5, 6.0, 9.0, 18.0, 30.0, 19.8, 33.0, 4.0])  # small benign +0, large benign -10%
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 1, 1])  # the last is read as no nodule: left out
    changes = RelativeChanges.of(baseline, follow, labels, bins=2)
    assert changes.edges.tolist() == [13.0]
    assert changes.benign[0].tolist() == [0.0, 0.0] and changes.benign[1].tolist() == pytest.approx([-0.1, -0.1])
    assert changes.malignant[1].tolist() == pytest.approx([0.5, 0.5])
    drawn = changes.draw(np.random.default_rng(0), np.array([4.0, 30.0]), np.array([[False, True], [False, True]]))
    assert np.allclose(drawn, [[0.0, 0.5], [-0.1, 0.5]])


def test_bins_merge_where_one_would_lack_an_outcome_and_no_malignant_pair_is_an_error():
    baseline, labels = np.array([5.0, 6.0, 20.0, 22.0]), np.array([0, 0, 0, 1])
    merged = RelativeChanges.of(baseline, np.array([5.0, 6.0, 20.0, 30.0]), labels, bins=2)
    assert merged.edges.size == 0 and merged.malignant[0].tolist() == pytest.approx([30 / 22 - 1])
    with pytest.raises(ValueError, match="0 malignant and 4 benign pair"):
        RelativeChanges.of(baseline, baseline, np.zeros(4), bins=2)


def test_the_samples_are_malignant_with_the_risk_and_grow_as_their_outcome_did():
    changes = RelativeChanges.of(np.array([5.0, 5.0, 20.0, 20.0]), np.array([5.0, 7.5, 20.0, 30.0]),
                                 np.array([0, 1, 0, 1]), bins=1)
    followups = calibrated_followups(np.random.default_rng(3), np.array([8.0, 8.0]), np.array([0.0, 0.3]), changes,
                                     k=4000)
    assert set(np.unique(followups)) <= {8.0, 12.0}
    assert (followups[0] == 8.0).all() and (followups[1] == 12.0).mean() == pytest.approx(0.3, abs=0.03)


def test_the_recalibrated_risk_keeps_the_ranking_and_takes_the_training_pairs_base_rate():
    rng = np.random.default_rng(2)
    train_risk, risk = rng.beta(0.6, 3.0, 300), rng.beta(0.6, 3.0, 50)
    train_labels = (rng.random(300) < 1.6 * train_risk).astype(int)  # the pairs keep more malignant nodules
    shifted = recalibrated(risk, train_risk, train_labels)
    assert (np.argsort(shifted) == np.argsort(risk)).all() and (shifted > risk).all()
    assert recalibrated(train_risk, train_risk, train_labels).mean() == pytest.approx(train_labels.mean())


def test_truth_risks_name_the_pair_they_cannot_find(tmp_path):
    pairs = pd.DataFrame({"pair_id": ["1_N1", "2_N1", "3_N1"], "pid": [1, 2, 3], "nodule_id": ["N1"] * 3})
    truth = tmp_path / "phantom_truth.csv"
    pd.DataFrame({"pid": [1, 2, 1], "nodule_id": ["N1", "N1", "N1"], "brock_risk": [0.3, 0.02, 0.3]}).to_csv(
        truth, index=False)  # one row a screen: a nodule seen twice
    assert truth_risks(pairs.iloc[:2], truth).tolist() == [0.3, 0.02]
    with pytest.raises(ValueError, match=r"phantom_truth.csv: no brock_risk for 1 pair\(s\), first pid 3 nodule N1"):
        truth_risks(pairs, truth)
