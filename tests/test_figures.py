import numpy as np
import pytest
from matplotlib.figure import Figure

from namd.evaluation.figures import (
    figure2_latent_tsne,
    figure3_variance,
    figure5_running_variance,
    prediction_table,
    running_variance,
    sample_gallery,
    save_figure,
)


def written(tmp_path, name):
    png, pdf = tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"
    return png, pdf


def assert_figure_files(png, pdf):
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert not list(png.parent.glob(".*.tmp")), "temporary files left behind"


def test_save_figure_writes_both_atomically_and_reproducibly(tmp_path):
    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    png, pdf = tmp_path / "sub" / "f.png", tmp_path / "sub" / "f.pdf"
    save_figure(fig, png, pdf)
    assert_figure_files(png, pdf)
    first = pdf.read_bytes()
    save_figure(fig, png, pdf)
    assert pdf.read_bytes() == first


def test_figure2_scores_the_diameter_ordered_latents_higher(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    diameters = rng.uniform(4, 30, n)
    t = (diameters - 4) / 26
    ordered = np.c_[np.cos(2 * t), np.sin(2 * t), rng.normal(0, 0.05, (n, 6))]
    random = rng.normal(0, 1, (n, 2, 2, 2))  # (N, C, h, w) latents are flattened
    png, pdf = written(tmp_path, "fig2")
    result = figure2_latent_tsne(ordered, random, diameters, png, pdf, seed=23)
    assert_figure_files(png, pdf)
    assert result["n"] == n and result["perplexity"] == pytest.approx(13.0)
    for key in ("spearman_latent", "spearman_tsne", "knn_r2"):
        assert result["aligned"][key] > result["unaligned"][key] + 0.3, key
    assert result["aligned"]["spearman_latent"] > 0.8
    assert abs(result["unaligned"]["spearman_latent"]) < 0.2

    with pytest.raises(ValueError, match="latents_unaligned has 39 rows"):
        figure2_latent_tsne(ordered, random[:-1], diameters, png, pdf)


def variance_case():
    """Two pairs per (label, category) then four benign fillers: zero-variance pairs are confident,
    alternating ones (the top quarter of Var(p)) unsure."""
    k, size = 6, 8
    means = {  # (label, category) -> two mean probabilities; dyadic, so constant rows have variance exactly 0
        (0, "confidently correct"): (0.0625, 0.1875), (0, "confidently incorrect"): (0.875, 0.75),
        (1, "confidently correct"): (0.96875, 0.8125), (1, "confidently incorrect"): (0.125, 0.3125),
        (0, "unsure"): (0.5, 0.4375), (1, "unsure"): (0.4375, 0.625),
    }
    probs, labels, categories = [], [], []
    for (label, category), pair in means.items():
        for j, mean in enumerate(pair):
            spread = (0.25 if j == 0 else 0.125) if category == "unsure" else 0.0
            probs.append(mean + spread * np.resize([1, -1], k))
            labels.append(label)
            categories.append(category)
    for _ in range(4):
        probs.append(np.full(k, 0.25))
        labels.append(0)
        categories.append("confidently correct")
    n = len(probs)
    rng = np.random.default_rng(1)
    generated = rng.uniform(-1, 1, (n, k, 1, size, size))
    followup = rng.uniform(-1, 1, (n, 1, size, size))
    baseline = rng.uniform(-1, 1, (n, 1, size, size))
    ids = [f"pair{i:02d}" for i in range(n)]
    return np.array(probs), np.array(labels), generated, followup, baseline, ids, categories


def test_figure3_table_categories_and_examples(tmp_path):
    probs, labels, generated, followup, baseline, ids, categories = variance_case()
    png, pdf = written(tmp_path, "fig3")
    table = figure3_variance(probs, labels, generated, followup, baseline, ids, png, pdf)
    assert_figure_files(png, pdf)
    assert list(table.columns) == ["pair_id", "label", "mean_p", "var_p", "error", "category", "example"]
    np.testing.assert_allclose(table["var_p"], np.var(probs, axis=1))
    np.testing.assert_allclose(table["error"], np.abs(labels - probs.mean(axis=1)))
    assert list(table["category"]) == categories
    # the first of each two is the clearer case: lower error, higher error, or higher variance
    assert list(table.loc[table["example"], "pair_id"]) == ids[0:12:2]

    with pytest.raises(ValueError, match=r"generated must have shape \(16, 6, 1, 8, 8\)"):
        figure3_variance(probs, labels, generated[:, :3], followup, baseline, ids, png, pdf)
    with pytest.raises(ValueError, match="duplicated pair_ids"):
        prediction_table(probs, labels, ["same"] * len(ids))


def test_figure3_leaves_out_categories_nobody_is_in(tmp_path):
    probs, labels, generated, followup, baseline, ids, _ = variance_case()
    keep = labels == 0
    table = figure3_variance(probs[keep], labels[keep], generated[keep], followup[keep], baseline[keep],
                             list(np.array(ids)[keep]), *written(tmp_path, "fig3_benign"))
    assert list(table.loc[table["example"], "category"]) == ["confidently correct", "confidently incorrect", "unsure"]


def test_figure5_running_variance_ends_at_the_variance_of_all_samples(tmp_path):
    rng = np.random.default_rng(2)
    probs = rng.uniform(0, 1, (80, 12))
    ids = [f"p{i}" for i in range(80)]
    png, pdf = written(tmp_path, "fig5")
    curves = figure5_running_variance(probs, ids, png, pdf, n_pairs=50, seed=23)
    assert_figure_files(png, pdf)
    assert curves["pair_id"].nunique() == 50 and sorted(curves["k"].unique()) == list(range(2, 13))
    last = curves[curves["k"] == 12].set_index("pair_id")["running_var"]
    index = [ids.index(p) for p in last.index]
    np.testing.assert_allclose(last.to_numpy(), np.var(probs[index], axis=1))
    at_two = curves[curves["k"] == 2].set_index("pair_id")["running_var"]
    np.testing.assert_allclose(at_two.to_numpy(), (probs[index, 0] - probs[index, 1]) ** 2 / 4)
    again = figure5_running_variance(probs, ids, png, pdf, n_pairs=50, seed=23)
    assert again.equals(curves)

    few = figure5_running_variance(probs[:7], ids[:7], png, pdf, n_pairs=50)
    assert few["pair_id"].nunique() == 7
    assert running_variance(probs).shape == (80, 11)
    with pytest.raises(ValueError, match=r"K >= 2"):
        figure5_running_variance(probs[:, :1], ids, png, pdf)


def test_sample_gallery_shows_three_of_each_label_and_refuses_misaligned_samples(tmp_path):
    rng = np.random.default_rng(0)
    n, k = 10, 2
    labels = np.array([1, 0] * 5)
    ids = [f"P{i}" for i in range(n)]
    real = rng.uniform(-1, 1, (n, 1, 8, 8))
    shown = sample_gallery(real, real, labels, ids, {"NAMD (Ours)": rng.uniform(-1, 1, (n, k, 1, 8, 8))},
                           tmp_path / "g.png", tmp_path / "g.pdf", seed=1)
    assert len(shown) == 6 and [labels[ids.index(p)] for p in shown] == [1, 1, 1, 0, 0, 0]
    assert shown == sample_gallery(real, real, labels, ids, {"x": rng.uniform(-1, 1, (n, k, 1, 8, 8))},
                                   tmp_path / "h.png", tmp_path / "h.pdf", seed=1)
    assert (tmp_path / "g.png").stat().st_size > 5_000 and (tmp_path / "g.pdf").exists()
    with pytest.raises(ValueError, match="SD1.5 images have shape"):
        sample_gallery(real, real, labels, ids, {"SD1.5": rng.uniform(-1, 1, (n - 1, k, 1, 8, 8))},
                       tmp_path / "i.png", tmp_path / "i.pdf")
