import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from namd.evaluation.metrics import EvaluationInputError
from namd.evaluation.significance import (
    bootstrap_auroc_ci,
    compare_rows,
    delong_test,
    fast_delong,
    holm_adjust,
)

# aSAH (Turck et al. 2010, Intensive Care Med 36:107-115): 113 patients after aneurysmal
# subarachnoid haemorrhage, as shipped in the R package pROC (data/aSAH.RData, read with the
# `rdata` package). outcome: G = Good, P = Poor (the positive class); wfns: WFNS grade 1-5.
ASAH_OUTCOME = (
    "GGGGPPGPGGPGPPGGPGPPPGPGGGGGGGGGPGGPPGPPGGGGGGGGGPPGGGPGGGPGPGGPPPGPPGPPPPGGGPPGPGGGGGGPGGGGGGGGGGGGPPPPPPGGGPGGG"
)
ASAH_WFNS = (
    "11113254125255125225211112121134214541425511241125521251222151125214524414121421232421451154221113125225552445111"
)
ASAH_S100B = [
    0.13, 0.14, 0.1, 0.04, 0.13, 0.1, 0.47, 0.16, 0.18, 0.1, 0.12, 0.1, 0.44, 0.71, 0.04, 0.08,
    0.49, 0.04, 0.07, 0.33, 0.09, 0.09, 0.07, 0.11, 0.07, 0.17, 0.07, 0.11, 0.13, 0.19, 0.05, 0.16,
    0.41, 0.14, 0.34, 0.35, 0.48, 0.09, 0.96, 0.25, 0.5, 0.46, 0.16, 0.07, 0.43, 0.45, 0.11, 0.08,
    0.09, 0.86, 0.52, 0.08, 0.06, 0.13, 2.07, 0.1, 0.14, 0.15, 0.07, 0.06, 0.77, 0.05, 0.09, 0.3,
    0.03, 0.09, 0.04, 0.23, 0.7, 0.09, 0.27, 0.71, 0.08, 0.26, 0.08, 0.16, 0.09, 0.13, 0.1, 0.08,
    0.11, 0.33, 0.11, 0.28, 0.07, 0.1, 0.32, 0.22, 0.07, 0.05, 0.24, 0.38, 0.1, 0.15, 0.08, 0.14,
    0.1, 0.07, 0.04, 0.19, 0.56, 0.14, 0.58, 0.32, 0.82, 0.74, 0.15, 0.47, 0.17, 0.44, 0.15, 0.5,
    0.48,
]  # fmt: skip
ASAH_NDKA = [
    3.01, 8.54, 8.09, 10.42, 17.4, 12.75, 6, 13.2, 15.54, 6.01, 15.96, 17.86, 5.18, 8.9, 13.41,
    20.75, 11.6, 16.11, 32.37, 54.82, 32.41, 49.94, 40.34, 9.47, 6.29, 12.53, 6.54, 6.3, 80.3, 12.8,
    9.8, 9.81, 9.85, 18.21, 5.03, 14.04, 21.93, 8.02, 7.42, 8.38, 6.59, 9.63, 13.12, 7.96, 14.34,
    41.43, 7.63, 7.06, 12.59, 13.56, 3.87, 9.44, 7.66, 12.98, 419.19, 27.19, 22.27, 9.95, 21.22,
    11.73, 10.4, 58.83, 6.39, 11.09, 12.22, 13.67, 17.21, 22.63, 12.9, 9.7, 21.57, 8.23, 72.57,
    15.54, 10.51, 10.6, 14.57, 5.19, 9.63, 4.61, 21.48, 17.3, 12.71, 9.44, 11.07, 19.46, 10.83,
    5.37, 11.97, 7.75, 9.83, 10.55, 28.49, 8.53, 12.57, 12.9, 46.83, 11.68, 12.67, 9.01, 9.57,
    34.06, 11.72, 14.26, 47.61, 11.67, 24.58, 10.33, 13.87, 15.89, 22.43, 6.79, 13.45,
]  # fmt: skip


@pytest.fixture
def asah():
    labels = np.array([c == "P" for c in ASAH_OUTCOME], dtype=int)
    wfns = np.array([int(c) for c in ASAH_WFNS], dtype=float)
    assert len(labels) == len(wfns) == len(ASAH_S100B) == len(ASAH_NDKA) == 113
    return labels, {"wfns": wfns, "s100b": np.array(ASAH_S100B), "ndka": np.array(ASAH_NDKA)}


def slow_delong(labels, scores_a, scores_b):
    """DeLong et al. (1988) straight from the definition: O(m n) kernel psi, structural components."""
    aucs, components = [], []
    for scores in (scores_a, scores_b):
        x, y = scores[labels == 1], scores[labels == 0]
        psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
        aucs.append(psi.mean())
        components.append((psi.mean(axis=1), psi.mean(axis=0)))
    m, n = len(components[0][0]), len(components[0][1])
    s10 = np.cov(np.vstack([components[0][0], components[1][0]]))
    s01 = np.cov(np.vstack([components[0][1], components[1][1]]))
    covariances = s10 / m + s01 / n
    variance = covariances[0, 0] + covariances[1, 1] - 2 * covariances[0, 1]
    z = (aucs[0] - aucs[1]) / np.sqrt(variance)
    return np.array(aucs), covariances, z


def test_matches_pROC_roc_test_on_aSAH(asah):
    """Expected values from pROC's tests/testthat/test-roc.test.R and test-auc.R (roc.test default = DeLong)."""
    labels, scores = asah
    cases = [
        ("wfns", "s100b", 2.20898359144091, 0.0271757822291882),
        ("wfns", "ndka", 2.79777591868904, 0.00514557970691098),
        ("ndka", "s100b", -1.39077002573558, 0.164295175223054),
    ]
    for a, b, z, p in cases:
        result = delong_test(labels, scores[a], scores[b])
        assert result.z == pytest.approx(z, rel=1e-10)
        assert result.p_value == pytest.approx(p, rel=1e-10)
    aucs, _ = fast_delong(labels, np.vstack([scores["wfns"], scores["s100b"], scores["ndka"]]))
    np.testing.assert_allclose(aucs, [0.823678861788618, 0.731368563685637, 0.611957994579946], rtol=1e-12)


def test_fast_equals_slow_definition_and_sklearn(asah):
    labels, scores = asah
    fast_aucs, fast_cov = fast_delong(labels, np.vstack([scores["s100b"], scores["ndka"]]))
    slow_aucs, slow_cov, slow_z = slow_delong(labels, scores["s100b"], scores["ndka"])
    np.testing.assert_allclose(fast_aucs, slow_aucs, rtol=1e-12)
    np.testing.assert_allclose(fast_cov, slow_cov, rtol=1e-10)
    assert delong_test(labels, scores["s100b"], scores["ndka"]).z == pytest.approx(slow_z, rel=1e-10)
    for name in ("s100b", "ndka", "wfns"):
        assert fast_delong(labels, scores[name])[0][0] == pytest.approx(roc_auc_score(labels, scores[name]))


def test_fast_equals_slow_on_random_scores_with_ties():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 200)
    a = np.round(labels * 0.4 + rng.normal(size=200), 1)
    b = np.round(labels * 0.2 + rng.normal(size=200), 1)
    aucs, cov = fast_delong(labels, np.vstack([a, b]))
    slow_aucs, slow_cov, slow_z = slow_delong(labels, a, b)
    np.testing.assert_allclose(aucs, slow_aucs, rtol=1e-12)
    np.testing.assert_allclose(cov, slow_cov, rtol=1e-10)
    result = delong_test(labels, a, b)
    assert result.z == pytest.approx(slow_z)
    assert result.p_value == pytest.approx(2 * norm.sf(abs(slow_z)))


def test_identical_curves_give_z0_p1(asah):
    labels, scores = asah
    result = delong_test(labels, scores["wfns"], scores["wfns"])
    assert (result.z, result.p_value) == (0.0, 1.0)


def test_delong_refuses_single_class_and_nan():
    with pytest.raises(EvaluationInputError, match="both classes"):
        delong_test(np.zeros(5, dtype=int), np.arange(5.0), np.arange(5.0))
    with pytest.raises(EvaluationInputError, match="NaN"):
        delong_test(np.array([0, 1, 0, 1]), np.array([0.1, np.nan, 0.2, 0.3]), np.arange(4.0))


@pytest.mark.parametrize("length_b", [3, 5])
def test_delong_names_score_vectors_of_different_lengths(length_b):
    labels = np.array([0, 1, 0, 1])
    with pytest.raises(EvaluationInputError) as error:
        delong_test(labels, np.arange(4.0), np.arange(float(length_b)))
    assert str(error.value) == (f"delong_test: scores_a has shape (4,) and scores_b ({length_b},); DeLong's test "
                                "compares two rows on the same test pairs, one score per pair each (4 labels)")


def test_bootstrap_ci_brackets_auc_reproducibly(asah):
    labels, scores = asah
    low, high = bootstrap_auroc_ci(labels, scores["s100b"], n_boot=2000, seed=23)
    assert low < roc_auc_score(labels, scores["s100b"]) < high
    # DeLong's normal-approximation 95% CI in pROC is 0.6301-0.8326; the bootstrap should be close.
    assert low == pytest.approx(0.630, abs=0.02) and high == pytest.approx(0.833, abs=0.02)
    assert (low, high) == bootstrap_auroc_ci(labels, scores["s100b"], n_boot=2000, seed=23)
    assert (low, high) != bootstrap_auroc_ci(labels, scores["s100b"], n_boot=2000, seed=24)


def test_holm_adjust():
    np.testing.assert_allclose(holm_adjust(np.array([0.01, 0.04, 0.03])), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm_adjust(np.array([0.5, 0.9])), [1.0, 1.0])


def rows_from_asah(labels, scores):
    """Each marker plays a Table-1 row; NAMD gets two 'seeds' whose mean is wfns."""
    pair_ids = [f"pair{i:03d}" for i in range(len(labels))]

    def table(values_by_seed):
        return pd.concat(
            pd.DataFrame({"pair_id": pair_ids, "seed": seed, "label": labels, "prob": values})
            for seed, values in values_by_seed.items()
        )

    wfns = scores["wfns"] / 6
    return {
        "NAMD": table({0: wfns - 0.05, 1: wfns + 0.05}),
        "SD1.5": table({0: scores["s100b"] / 3}),
        "Flux": table({0: scores["ndka"] / 420}),
    }


def test_compare_rows_against_reference(asah):
    labels, scores = asah
    result = compare_rows(rows_from_asah(labels, scores), reference="NAMD", n_boot=200).set_index("row")
    assert result.loc["NAMD", "auroc"] == pytest.approx(0.823678861788618)
    assert np.isnan(result.loc["NAMD", "delong_z"]) and not result.loc["NAMD", "significant"]
    assert result.loc["SD1.5", "delong_z"] == pytest.approx(-2.20898359144091)
    assert result.loc["Flux", "p_value"] == pytest.approx(0.00514557970691098)
    assert result.loc["SD1.5", "p_adjusted"] == pytest.approx(0.0271757822291882)  # Holm: second step, x1
    assert result.loc["Flux", "p_adjusted"] == pytest.approx(2 * 0.00514557970691098)
    assert result.loc["SD1.5", "significant"] and result.loc["Flux", "significant"]
    assert (result["ci_low"] < result["auroc"]).all() and (result["auroc"] < result["ci_high"]).all()
    assert result.loc["NAMD", "n_seeds"] == 2


def test_compare_rows_holm_can_remove_significance(asah):
    """Three comparisons: SD1.5's raw p = 0.027 becomes 2 x 0.027 > 0.05 after Holm."""
    labels, scores = asah
    rows = rows_from_asah(labels, scores)
    rows["Copy"] = rows["NAMD"].copy()
    raw = compare_rows(rows, n_boot=50, correction="none").set_index("row")
    holm = compare_rows(rows, n_boot=50, correction="holm").set_index("row")
    assert raw.loc["SD1.5", "significant"] and raw.loc["SD1.5", "p_adjusted"] == raw.loc["SD1.5", "p_value"]
    assert holm.loc["SD1.5", "p_adjusted"] > 0.05 and not holm.loc["SD1.5", "significant"]
    assert holm.loc["Copy", "p_value"] == 1.0


def test_compare_rows_refuses_mismatched_pairs_and_labels(asah):
    labels, scores = asah
    rows = rows_from_asah(labels, scores)
    rows["Flux"] = rows["Flux"][rows["Flux"]["pair_id"] != "pair007"]
    with pytest.raises(EvaluationInputError, match=r"'Flux'.*pair007"):
        compare_rows(rows, n_boot=10)
    rows = rows_from_asah(labels, scores)
    rows["Flux"].loc[rows["Flux"]["pair_id"] == "pair003", "label"] = 1 - labels[3]
    with pytest.raises(EvaluationInputError, match=r"'Flux'.*pair003"):
        compare_rows(rows, n_boot=10)
    with pytest.raises(EvaluationInputError, match="reference row 'Ours'"):
        compare_rows(rows_from_asah(labels, scores), reference="Ours")
