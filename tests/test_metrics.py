import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from namd.evaluation.metrics import EvaluationInputError, check_complete, diagnosis_metrics, summarise


def probs_table(n_pairs=12, seeds=(0, 1, 2), seed=0):
    rng = np.random.default_rng(seed)
    labels = np.array([1, 0] * (n_pairs // 2))
    rows = []
    for s in seeds:
        probs = np.clip(0.3 * labels + rng.uniform(0, 0.7, n_pairs), 0, 1)
        rows += [
            {"pair_id": f"p{i:02d}", "seed": s, "label": int(labels[i]), "prob": float(probs[i])}
            for i in range(n_pairs)
        ]
    return pd.DataFrame(rows)


def test_per_seed_metrics_match_sklearn_on_each_seed():
    df = probs_table()
    per_seed = diagnosis_metrics(df, "SD1.5")
    assert list(per_seed["seed"]) == [0, 1, 2]
    for line in per_seed.itertuples():
        one = df[df["seed"] == line.seed]
        assert line.auroc == pytest.approx(roc_auc_score(one["label"], one["prob"]))
        assert line.auprc == pytest.approx(average_precision_score(one["label"], one["prob"]))
        assert line.n_pairs == 12 and line.n_positive == 6
    assert set(per_seed["row"]) == {"SD1.5"}


def test_perfect_and_inverted_scores():
    df = pd.DataFrame({"pair_id": ["a", "b", "c", "d"], "seed": 0, "label": [1, 1, 0, 0], "prob": [0.9, 0.8, 0.2, 0.1]})
    assert diagnosis_metrics(df, "r").loc[0, "auroc"] == 1.0
    df["prob"] = 1 - df["prob"]
    assert diagnosis_metrics(df, "r").loc[0, "auroc"] == 0.0


def test_summarise_mean_and_sample_std():
    per_seed = pd.DataFrame({"seed": [0, 1, 2], "auroc": [0.7, 0.8, 0.9], "auprc": [0.2, 0.2, 0.2]})
    summary = summarise(per_seed)
    assert summary.loc["auroc", "mean"] == pytest.approx(0.8)
    assert summary.loc["auroc", "std"] == pytest.approx(0.1)  # ddof = 1
    assert summary.loc["auprc", "std"] == pytest.approx(0.0, abs=1e-12)
    assert summary.loc["auroc", "n_seeds"] == 3


def test_summarise_single_seed_has_no_std():
    summary = summarise(pd.DataFrame({"seed": [0], "auroc": [0.75], "auprc": [0.3]}))
    assert summary.loc["auroc", "mean"] == 0.75
    assert np.isnan(summary.loc["auroc", "std"])


def test_summarise_refuses_mixed_rows():
    with pytest.raises(EvaluationInputError, match="more than once"):
        summarise(pd.DataFrame({"seed": [0, 0], "auroc": [0.7, 0.8], "auprc": [0.2, 0.3]}))


def test_nan_probability_is_refused_naming_row_and_pair():
    df = probs_table()
    df.loc[5, "prob"] = np.nan
    with pytest.raises(EvaluationInputError, match=r"'Flux'.*NaN.*p05"):
        diagnosis_metrics(df, "Flux")


def test_one_class_is_refused_naming_row():
    df = probs_table()
    df["label"] = 0
    with pytest.raises(EvaluationInputError, match=r"'McWGAN'.*one class"):
        diagnosis_metrics(df, "McWGAN")


def test_pair_missing_in_one_seed_is_named():
    df = probs_table()
    df = df[~((df["seed"] == 2) & (df["pair_id"] == "p07"))]
    with pytest.raises(EvaluationInputError, match=r"'NAMD'.*2: p07"):
        diagnosis_metrics(df, "NAMD")


def test_check_complete_names_missing_seeds_pairs_and_strays():
    df = probs_table(seeds=(0, 1))
    check_complete(df, [f"p{i:02d}" for i in range(12)], [0, 1], "NAMD")
    with pytest.raises(EvaluationInputError, match=r"2: p00, p01") as info:
        check_complete(df, [f"p{i:02d}" for i in range(12)], [0, 1, 2], "NAMD")
    assert "'NAMD'" in str(info.value)
    with pytest.raises(EvaluationInputError, match=r"unexpected pair_id\(s\): p11"):
        check_complete(df, [f"p{i:02d}" for i in range(11)], [0, 1], "NAMD")
    with pytest.raises(EvaluationInputError, match=r"missing.*p12"):
        check_complete(df, [f"p{i:02d}" for i in range(13)], [0, 1], "NAMD")


def test_duplicates_labels_and_columns_are_checked():
    df = probs_table(seeds=(0,))
    with pytest.raises(EvaluationInputError, match="more than one probability"):
        diagnosis_metrics(pd.concat([df, df.iloc[:1]]), "r")
    clash = probs_table(seeds=(0, 1))
    clash.loc[(clash["seed"] == 1) & (clash["pair_id"] == "p00"), "label"] = 0
    with pytest.raises(EvaluationInputError, match="p00.*different labels"):
        diagnosis_metrics(clash, "r")
    with pytest.raises(EvaluationInputError, match="lacks column"):
        diagnosis_metrics(df.drop(columns="seed"), "r")
    out_of_range = df.copy()
    out_of_range.loc[0, "prob"] = 1.5
    with pytest.raises(EvaluationInputError, match=r"outside \[0, 1\]"):
        diagnosis_metrics(out_of_range, "r")
