import re

import pandas as pd
import pytest

from namd.evaluation.metrics import EvaluationInputError
from namd.evaluation.image_metrics import ImageMetricResult
from namd.evaluation.table import RowResult, build_table1, rank_marks, row_result, to_csv, to_latex

ALIGN_FREE = r"NAMD (w/o $\mathcal{L}_{\text{align}}$)"


def paper_rows(lpips_name="LPIPS", fid_name="FID"):
    """Numbers of the paper's Table 1 (a subset of rows), in shuffled group order."""
    stochastic = {"n_seeds": 20, "lpips_name": lpips_name, "fid_name": fid_name}
    deterministic = {"lpips_name": lpips_name, "fid_name": fid_name}
    return [
        RowResult("NAMD (Ours)", "NAMD", 0.805, 0.346, 0.018, 0.028, 0.220, 0.001, 83.060, 0.699, **stochastic),
        RowResult("Real baseline LDCT", "Real Image Baselines", 0.742, 0.263),
        RowResult("Real follow-up LDCT", "Real Image Baselines", 0.819, 0.393),
        RowResult("McWGAN", "Deterministic Methods", 0.763, 0.307, lpips_mean=0.364, fid_mean=80.443, **deterministic),
        RowResult("CorrFlowNet (ODE)", "Deterministic Methods", 0.779, 0.318, lpips_mean=0.202, fid_mean=91.695,
                  **deterministic),
        RowResult("SD1.5", "Stochastic Methods", 0.701, 0.245, 0.031, 0.032, 0.207, 0.003, 97.550, 1.140, **stochastic),
        RowResult("CorrFlowNet (SDE)", "Stochastic Methods", 0.776, 0.321, 0.004, 0.011, 0.202, 0.001, 88.560, 0.231,
                  **stochastic),
        RowResult(
            "NAMD w/o L_align", "Ablation", 0.765, 0.305, 0.017, 0.031, 0.205, 0.002, 101.301, 1.108,
            latex_name=ALIGN_FREE, **stochastic,
        ),
    ]


def marks(table, key):
    return dict(zip(table["method"], table[f"{key}_mark"]))


def test_rows_follow_the_paper_group_order():
    table = build_table1(paper_rows())
    assert list(table["group"].drop_duplicates()) == [
        "Real Image Baselines", "Deterministic Methods", "Stochastic Methods", "NAMD", "Ablation",
    ]
    assert list(table["method"])[:2] == ["Real baseline LDCT", "Real follow-up LDCT"]


def test_higher_is_better_columns_skip_real_image_rows():
    table = build_table1(paper_rows())
    auroc = marks(table, "auroc")
    # The real follow-up (0.819) is higher but, as in the paper, not ranked.
    assert auroc["NAMD (Ours)"] == "best" and auroc["CorrFlowNet (ODE)"] == "second"
    assert auroc["Real follow-up LDCT"] == ""
    assert [m for m in auroc.values()].count("best") == 1


def test_lower_is_better_columns_and_ties_share_a_rank():
    table = build_table1(paper_rows())
    lpips = marks(table, "lpips")
    # Both CorrFlowNet rows print 0.202: both bold, next distinct value (0.205) underlined.
    assert lpips["CorrFlowNet (ODE)"] == lpips["CorrFlowNet (SDE)"] == "best"
    assert lpips["NAMD w/o L_align"] == "second"
    assert lpips["SD1.5"] == ""
    fid = marks(table, "fid")
    assert fid["McWGAN"] == "best" and fid["NAMD (Ours)"] == "second"


def test_rank_marks_compares_printed_values():
    values = pd.Series([0.7004, 0.7001, 0.69, 0.5])
    eligible = pd.Series([True, True, True, False])
    assert list(rank_marks(values, False, eligible, 3)) == ["best", "best", "second", ""]
    assert list(rank_marks(values, False, eligible, 4)) == ["best", "second", "", ""]
    assert list(rank_marks(values, True, eligible, 3)) == ["second", "second", "best", ""]


def test_missing_values_print_a_dash_and_are_not_ranked(tmp_path):
    rows = paper_rows()
    rows[5] = RowResult("SD1.5", "Stochastic Methods", 0.701, 0.245, 0.031, 0.032, n_seeds=20)
    table = build_table1(rows)
    assert table.set_index("method").loc["SD1.5", "lpips_mark"] == ""
    text = to_latex(table, tmp_path / "t.tex")
    assert "SD1.5 & - & - & 0.701 $\\pm$ 0.031 & 0.245 $\\pm$ 0.032 \\\\" in text
    assert "Real baseline LDCT & - & - & 0.742 & 0.263 \\\\" in text


def test_latex_cells_marks_and_structure(tmp_path):
    path = tmp_path / "table1.tex"
    text = to_latex(build_table1(paper_rows()), path)
    assert path.read_text() == text
    assert "\\textbf{NAMD (Ours)} & 0.220 $\\pm$ 0.001 & \\underline{83.060 $\\pm$ 0.699} & " in text
    assert "McWGAN & 0.364 & \\textbf{80.443} & 0.763 & 0.307 \\\\" in text
    assert ALIGN_FREE + " & \\underline{0.205 $\\pm$ 0.002}" in text
    assert "Method & LPIPS $\\downarrow$ & FID $\\downarrow$ & AUROC $\\uparrow$ & AUPRC $\\uparrow$" in text
    assert text.count("{") == text.count("}")
    depth = 0
    for ch in text:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    for rule in ("\\toprule", "\\midrule", "\\bottomrule", "\\cmidrule(lr){2-3}"):
        assert rule in text
    assert text.index("\\toprule") < text.index("\\midrule") < text.index("\\bottomrule")
    assert text.count("\\begin{") == text.count("\\end{")
    body = text[text.index("Method &") : text.index("\\bottomrule")]
    for line in body.splitlines():
        if line.endswith("\\\\") and "multicolumn" not in line:
            assert len(re.findall(r"(?<!\\)&", line)) == 4, line
    assert "K = 20" in text


def test_stand_ins_are_named_in_header_and_explained_in_footnote(tmp_path):
    table = build_table1(paper_rows(lpips_name="DFD-ViT", fid_name="FD-ViT"))
    notes = {"DFD-ViT": "squared distance of unit ViT features", "FD-ViT": "Frechet distance of ViT features"}
    text = to_latex(table, tmp_path / "t.tex", metric_notes=notes)
    header = next(line for line in text.splitlines() if line.startswith("Method &"))
    assert "DFD-ViT$^{\\dagger}$ $\\downarrow$" in header and "FD-ViT$^{\\dagger}$ $\\downarrow$" in header
    assert "LPIPS" not in header and "FID" not in header
    assert "$^{\\dagger}$DFD-ViT: squared distance of unit ViT features." in text
    assert "$^{\\dagger}$FD-ViT: Frechet distance of ViT features." in text
    with pytest.raises(EvaluationInputError, match="'FD-ViT' is a stand-in"):
        to_latex(table, tmp_path / "t.tex", metric_notes={"DFD-ViT": "x"})


def test_real_metric_names_get_no_dagger(tmp_path):
    text = to_latex(build_table1(paper_rows()), tmp_path / "t.tex")
    assert "dagger" not in text


def test_a_column_cannot_mix_metrics():
    rows = paper_rows()
    rows[3] = RowResult("McWGAN", "Deterministic Methods", 0.763, 0.307, lpips_mean=0.3, fid_mean=80.0,
                        fid_name="FD-ViT")
    with pytest.raises(EvaluationInputError, match=r"column fid mixes metrics.*FD-ViT: \['McWGAN'\]"):
        build_table1(rows)


def test_significance_footnote(tmp_path):
    significance = pd.DataFrame(
        {
            "row": ["NAMD (Ours)", "SD1.5", "McWGAN"],
            "p_value": [float("nan"), 0.0001, 0.2],
            "p_adjusted": [float("nan"), 0.0002, 0.2],
            "significant": [False, True, False],
            "reference": "NAMD (Ours)",
            "correction": "holm",
            "n_pairs": [57, 57, 57],
        }
    )
    text = to_latex(build_table1(paper_rows()), tmp_path / "t.tex", significance=significance)
    assert "Holm-adjusted" in text
    assert "significant: SD1.5 (p < 0.001); not significant: McWGAN (p = 0.200)." in text
    assert "fewer pairs" not in text
    renamed = significance.replace({"McWGAN": "McWGAN-v2"})
    with pytest.raises(EvaluationInputError, match="McWGAN-v2"):
        to_latex(build_table1(paper_rows()), tmp_path / "t.tex", significance=renamed)


def test_a_row_scoring_fewer_pairs_is_named_with_its_count(tmp_path):
    significance = pd.DataFrame(
        {
            "row": ["NAMD (Ours)", "Real baseline LDCT", "Real follow-up LDCT"],
            "p_value": [float("nan"), 0.3, 0.01],
            "p_adjusted": [float("nan"), 0.3, 0.02],
            "significant": [False, False, True],
            "reference": "NAMD (Ours)",
            "correction": "holm",
            "n_pairs": [57, 57, 52],
        }
    )
    text = to_latex(build_table1(paper_rows()), tmp_path / "t.tex", significance=significance)
    assert "on the pairs they score: Real follow-up LDCT (52 of 57)." in text


def test_extra_footnote_lines_follow_the_significance_sentence(tmp_path):
    significance = pd.DataFrame(
        {"row": ["NAMD (Ours)"], "p_value": [float("nan")], "p_adjusted": [float("nan")], "significant": [False],
         "reference": "NAMD (Ours)", "correction": "holm", "n_pairs": [57]}
    )
    lines = to_latex(build_table1(paper_rows()), tmp_path / "t.tex", significance=significance,
                     extra_notes=["Evaluator: five seeds.", r"Brock \& Lung-RADS."]).splitlines()
    significance_line = next(i for i, line in enumerate(lines) if line.startswith("AUROC vs"))
    assert lines[significance_line + 1 : significance_line + 3] == [
        r"Evaluator: five seeds.\par", r"Brock \& Lung-RADS.\par"
    ]


def test_bad_rows_are_refused():
    with pytest.raises(EvaluationInputError, match="group 'Baselines'"):
        build_table1([RowResult("x", "Baselines", 0.5, 0.5)])
    with pytest.raises(EvaluationInputError, match="duplicate method"):
        build_table1([RowResult("x", "NAMD", 0.5, 0.5), RowResult("x", "Ablation", 0.5, 0.5)])
    with pytest.raises(EvaluationInputError, match="'x'.*n_seeds = 1"):
        build_table1([RowResult("x", "NAMD", 0.5, 0.5, auroc_std=0.1)])


def test_csv_twin_has_numbers_names_and_marks(tmp_path):
    path = tmp_path / "table1.csv"
    to_csv(build_table1(paper_rows(fid_name="FD-ViT")), path)
    csv = pd.read_csv(path).set_index("method")
    assert csv.loc["NAMD (Ours)", "auroc_mean"] == 0.805 and csv.loc["NAMD (Ours)", "auroc_std"] == 0.018
    assert csv.loc["NAMD (Ours)", "auroc_mark"] == "best"
    assert csv.loc["McWGAN", "fid_metric"] == "FD-ViT" and pd.isna(csv.loc["Real baseline LDCT", "fid_mean"])
    assert pd.isna(csv.loc["McWGAN", "auroc_std"])
    assert "latex_method" not in csv.columns


def image_result(key, name, values):
    per_seed = pd.DataFrame({"seed": range(len(values)), key: values})
    return ImageMetricResult(key=key, name=name, stand_in=name not in ("LPIPS", "FID"), description="",
                             per_seed=per_seed)


def test_row_result_from_metric_outputs():
    diagnosis = pd.DataFrame({"seed": [0, 1, 2], "auroc": [0.7, 0.8, 0.9], "auprc": [0.3, 0.3, 0.3]})
    images = {"lpips": image_result("lpips", "LPIPS", [0.2, 0.3, 0.4]), "fid": image_result("fid", "FD-ViT", [1, 2, 3])}
    row = row_result("SD1.5", "Stochastic Methods", diagnosis, images)
    assert row.n_seeds == 3 and row.auroc_mean == pytest.approx(0.8) and row.auroc_std == pytest.approx(0.1)
    assert row.lpips_mean == pytest.approx(0.3) and row.fid_std == pytest.approx(1.0) and row.fid_name == "FD-ViT"
    single = row_result("McWGAN", "Deterministic Methods", diagnosis.iloc[:1],
                        {"fid": image_result("fid", "FID", [80.0])})
    assert single.auroc_std is None and single.fid_std is None and single.fid_mean == 80.0 and single.lpips_mean is None
    with pytest.raises(EvaluationInputError, match="'SD1.5'.*1 seeds.*3"):
        row_result("SD1.5", "Stochastic Methods", diagnosis, {"fid": image_result("fid", "FID", [80.0])})
