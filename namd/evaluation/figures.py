"""The paper's analysis figures: Figure 2 (latent t-SNE), Figure 3 (prediction variance), Figure 5
(running variance over K samples).

Each function writes a PNG and a PDF and returns the numbers it drew, so the workflow can keep
them as tables. Figures are built on `matplotlib.figure.Figure` (the Agg canvas, no pyplot and
no global style change); seaborn styles are applied inside a context.

Variance over the K samples is the population variance (ddof = 0, numpy's default) everywhere:
the paper does not say which it uses, and its Figure 5 curves "initially rise, then plateau",
which is what the ddof = 0 running variance does in expectation (sigma^2 (k - 1) / k), while the
ddof = 1 estimate would be flat in expectation. Figure 3's Var(p) is then the last point of
Figure 5's curve for the same pair.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import MatplotlibDeprecationWarning
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr
from sklearn.manifold import TSNE
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.neighbors import KNeighborsRegressor

from namd.data.splits import seeded_subset
from namd.io import atomic_output

LABEL_NAMES = {0: "benign (L = 0)", 1: "malignant (L = 1)"}
LABEL_COLOURS = {0: "#4C72B0", 1: "#C44E52"}
CATEGORIES = ("confidently correct", "unsure", "confidently incorrect")
#: Figure 3: a pair is "unsure" when its Var(p) is in the top quarter of all pairs' Var(p)
UNSURE_VARIANCE_QUANTILE = 0.75
#: Figure 2: neighbours and folds of the kNN regression of diameter from the t-SNE map
KNN_NEIGHBOURS, KNN_FOLDS = 5, 5


def save_figure(fig: Figure, out_png: str | Path, out_pdf: str | Path, dpi: int = 200) -> None:
    """Write both files atomically (a killed job leaves no half-written figure); reproducible PDF bytes."""
    for path, fmt, metadata in ((out_png, "png", None), (out_pdf, "pdf", {"CreationDate": None})):
        with atomic_output(path) as handle:
            fig.savefig(handle, format=fmt, dpi=dpi, metadata=metadata)


# -- input checks --------------------------------------------------------------------------------
def _matrix(values, name: str, caller: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim < 2:
        raise ValueError(f"{caller}: {name} must be (N, D) (or (N, ...), flattened), got shape {values.shape}")
    values = values.reshape(len(values), -1)
    if not np.isfinite(values).all():
        raise ValueError(f"{caller}: {name} holds NaN or infinite values")
    return values


def _probs(probs, caller: str) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"{caller}: probs must be (N pairs, K >= 2 samples), got shape {probs.shape}")
    if not (np.isfinite(probs).all() and (probs >= 0).all() and (probs <= 1).all()):
        raise ValueError(f"{caller}: probs must be probabilities in [0, 1]")
    return probs


def _pair_ids(pair_ids, n: int, caller: str) -> np.ndarray:
    pair_ids = np.asarray(pair_ids).astype(str)
    if pair_ids.shape != (n,):
        raise ValueError(f"{caller}: pair_ids must have one id per pair ({n}), got shape {pair_ids.shape}")
    duplicated = pd.Series(pair_ids)[pd.Series(pair_ids).duplicated()].unique()
    if len(duplicated):
        raise ValueError(f"{caller}: duplicated pair_ids {list(duplicated[:5])}")
    return pair_ids


# -- Figure 2 ------------------------------------------------------------------------------------
def diameter_order(latents: np.ndarray, diameters: np.ndarray) -> float:
    """Spearman correlation between pairwise latent distance and pairwise diameter difference.

    1 when nodules of similar size always lie closer together than nodules of different size;
    about 0 when position says nothing about size.
    """
    return float(spearmanr(pdist(latents), pdist(diameters[:, None])).statistic)


def knn_r2(embedding: np.ndarray, diameters: np.ndarray, seed: int) -> float:
    """Cross-validated R^2 of a 5-nearest-neighbour regression of diameter from the map (5 folds)."""
    folds = KFold(KNN_FOLDS, shuffle=True, random_state=seed)
    predicted = cross_val_predict(KNeighborsRegressor(KNN_NEIGHBOURS), embedding, diameters, cv=folds)
    return float(r2_score(diameters, predicted))


def figure2_latent_tsne(
    latents_aligned,
    latents_unaligned,
    diameters,
    out_png: str | Path,
    out_pdf: str | Path,
    seed: int = 23,
) -> dict:
    """Figure 2: t-SNE of the latents of the aligned (NAMD) and unaligned VAE, coloured by diameter.

    Latents are (N, D) or (N, C, h, w) (flattened); the diameter is that of the nodule in the
    encoded crop, in mm. Both maps use the same t-SNE settings (perplexity min(30, (N - 1) / 3),
    PCA initialisation, `seed`). How ordered each space is by diameter is measured three ways:
    `spearman_latent` (in the original latent space, the claim's substance), `spearman_tsne`
    (the same on the 2-D map) and `knn_r2` (diameter predicted from the map's neighbours).
    """
    caller = "figure2_latent_tsne"
    spaces = {"aligned": _matrix(latents_aligned, "latents_aligned", caller),
              "unaligned": _matrix(latents_unaligned, "latents_unaligned", caller)}
    diameters = np.asarray(diameters, dtype=np.float64)
    n = len(diameters)
    if diameters.shape != (n,) or not np.isfinite(diameters).all():
        raise ValueError(f"{caller}: diameters must be (N,) finite values in mm, got shape {diameters.shape}")
    for name, latents in spaces.items():
        if len(latents) != n:
            raise ValueError(f"{caller}: latents_{name} has {len(latents)} rows but there are {n} diameters")
    if n < 3:
        raise ValueError(f"{caller}: needs at least 3 nodules for a t-SNE map, got {n}")

    perplexity = min(30.0, (n - 1) / 3)
    result: dict = {"n": n, "perplexity": perplexity, "seed": seed}
    maps = {}
    for name, latents in spaces.items():
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
        maps[name] = tsne.fit_transform(latents)
        result[name] = {
            "spearman_latent": diameter_order(latents, diameters),
            "spearman_tsne": diameter_order(maps[name], diameters),
            # a cross-validated kNN score needs two nodules per fold; NaN (shown as such) below that
            "knn_r2": knn_r2(maps[name], diameters, seed) if n >= 2 * KNN_FOLDS else float("nan"),
        }

    norm = Normalize(vmin=float(diameters.min()), vmax=float(diameters.max()))
    titles = {"aligned": r"NAMD (with $\mathcal{L}_{\mathrm{align}}$)",
              "unaligned": r"without $\mathcal{L}_{\mathrm{align}}$"}
    order = np.argsort(diameters)  # large nodules drawn last, on top
    with sns.axes_style("white"), sns.plotting_context("notebook"):
        fig = Figure(figsize=(12, 5.6), layout="constrained")
        axes = fig.subplots(1, 2)
        for ax, name in zip(axes, spaces):
            xy, scores = maps[name][order], result[name]
            ax.scatter(xy[:, 0], xy[:, 1], c=diameters[order], cmap="viridis", norm=norm, s=22,
                       edgecolors="white", linewidths=0.3)
            ax.set_title(
                f"{titles[name]}\nρ latent = {scores['spearman_latent']:.2f} · ρ map = {scores['spearman_tsne']:.2f}"
                f" · kNN R² = {scores['knn_r2']:.2f}",
                fontsize=12,
            )
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel("t-SNE 1")
            ax.set_ylabel("t-SNE 2")
            sns.despine(ax=ax, left=True, bottom=True)
        fig.colorbar(ScalarMappable(norm=norm, cmap="viridis"), ax=list(axes), label="Nodule diameter (mm)",
                     shrink=0.85)
        fig.suptitle(f"t-SNE of the VAE latent space (N = {n} nodules, perplexity {perplexity:.0f})", fontsize=14)
        fig.supxlabel(
            "ρ: Spearman correlation of pairwise distance with pairwise diameter difference, in the original latent "
            f"space and on the 2-D map.\nkNN R²: {KNN_FOLDS}-fold cross-validated {KNN_NEIGHBOURS}-nearest-neighbour "
            "regression of diameter from the map.",
            fontsize=9, color="0.3",
        )
        save_figure(fig, out_png, out_pdf)
    return result


# -- Figure 3 ------------------------------------------------------------------------------------
def prediction_table(probs, labels, pair_ids) -> pd.DataFrame:
    """Per pair: mean_p, var_p (ddof = 0 over the K samples), error |L - mean_p| and its category.

    Category rules: "unsure" when var_p is in the top quarter of all pairs' var_p (above its 75th
    percentile); otherwise "confidently correct" when error < 0.5 (mean_p on the label's side of
    0.5) and "confidently incorrect" when error >= 0.5.
    """
    caller = "figure3_variance"
    probs = _probs(probs, caller)
    labels = np.asarray(labels)
    if labels.shape != (len(probs),) or not np.isin(labels, (0, 1)).all():
        raise ValueError(f"{caller}: labels must be ({len(probs)},) values 0 or 1, got shape {labels.shape}")
    table = pd.DataFrame({
        "pair_id": _pair_ids(pair_ids, len(probs), caller),
        "label": labels.astype(int),
        "mean_p": probs.mean(axis=1),
        "var_p": probs.var(axis=1),
    })
    table["error"] = (table["label"] - table["mean_p"]).abs()
    threshold = table["var_p"].quantile(UNSURE_VARIANCE_QUANTILE)
    table["category"] = np.where(
        table["var_p"] > threshold, "unsure",
        np.where(table["error"] < 0.5, "confidently correct", "confidently incorrect")
    )
    table.attrs["unsure_variance_threshold"] = float(threshold)
    return table


def pick_examples(table: pd.DataFrame) -> pd.DataFrame:
    """One pair per (label, category), the clearest of its kind.

    confidently correct: lowest error (then lowest variance); confidently incorrect: highest
    error (then lowest variance); unsure: highest variance among those with a medium error
    (0.25 to 0.75), else the one with the error closest to that band.
    A (label, category) with no pair is left out.
    """
    keys = {
        "confidently correct": (table["error"], table["var_p"]),
        "confidently incorrect": (-table["error"], table["var_p"]),
        "unsure": (((table["error"] - 0.5).abs() - 0.25).clip(lower=0), -table["var_p"]),
    }
    rows = []
    for label in (0, 1):
        for category in CATEGORIES:
            first, second = keys[category]
            chosen = table.assign(_a=first, _b=second)
            chosen = chosen[(chosen["label"] == label) & (chosen["category"] == category)]
            if len(chosen):
                rows.append(chosen.sort_values(["_a", "_b", "pair_id"]).index[0])
    return table.loc[rows]


def _images(values, shape: tuple, name: str) -> np.ndarray:
    values = np.asarray(values)  # not copied to float64: only the example cases are computed on
    if values.shape != shape:
        raise ValueError(f"figure3_variance: {name} must have shape {shape}, got {values.shape}")
    return values


def figure3_variance(
    probs,
    labels,
    generated,
    real_followup,
    real_baseline,
    pair_ids: Sequence[str],
    out_png: str | Path,
    out_pdf: str | Path,
) -> pd.DataFrame:
    """Figure 3: prediction error vs predictive variance, Var(p) by label, and example cases.

    probs (N, K): the classifier's probability for each of K generated follow-ups per pair;
    generated (N, K, 1, S, S), real_followup and real_baseline (N, 1, S, S) in [-1, 1].
    Returns `prediction_table` with a bool column `example` marking the pairs shown.
    The variance and mean-error maps share one colour scale per column, so rows compare.
    """
    table = prediction_table(probs, labels, pair_ids)
    n, k = len(table), np.asarray(probs).shape[1]
    real_followup = _images(real_followup, (n, *np.shape(real_followup)[1:]), "real_followup")
    if real_followup.ndim != 4 or real_followup.shape[1] != 1:
        raise ValueError(f"figure3_variance: real_followup must be (N, 1, S, S), got {real_followup.shape}")
    real_baseline = _images(real_baseline, real_followup.shape, "real_baseline")
    generated = _images(generated, (n, k, *real_followup.shape[1:]), "generated")
    examples = pick_examples(table)
    table["example"] = table.index.isin(examples.index)
    threshold = table.attrs["unsure_variance_threshold"]

    samples = {i: generated[i, :, 0].astype(np.float64) for i in examples.index}
    var_maps = {i: samples[i].var(axis=0) for i in examples.index}
    err_maps = {i: np.abs(samples[i] - real_followup[i, 0]).mean(axis=0) for i in examples.index}
    var_norm = Normalize(0, max([m.max() for m in var_maps.values()] + [1e-12]))
    err_norm = Normalize(0, max([m.max() for m in err_maps.values()] + [1e-12]))

    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
        fig = Figure(figsize=(18, 10), layout="constrained")
        left, right = fig.subfigures(1, 2, width_ratios=[1, 1.45], wspace=0.03)
        scatter_ax, box_ax = left.subplots(2, 1, height_ratios=[1.5, 1])
        names = table["label"].map(LABEL_NAMES)
        palette = {LABEL_NAMES[c]: LABEL_COLOURS[c] for c in (0, 1)}
        sns.scatterplot(x=table["var_p"], y=table["error"], hue=names, hue_order=list(palette), palette=palette,
                        s=28, alpha=0.75, edgecolor="white", linewidth=0.3, ax=scatter_ax)
        scatter_ax.axvline(threshold, color="0.4", ls="--", lw=1)
        scatter_ax.axhline(0.5, color="0.4", ls=":", lw=1)
        for row, (i, case) in enumerate(examples.iterrows(), start=1):
            scatter_ax.scatter(case["var_p"], case["error"], s=160, facecolors="none", edgecolors="black",
                               linewidths=1.3)
            scatter_ax.annotate(str(row), (case["var_p"], case["error"]), xytext=(6, 5), textcoords="offset points",
                                fontsize=10, fontweight="bold")
        scatter_ax.set_xlabel(r"Predictive variance Var($p$) over the K = %d samples" % k)
        scatter_ax.set_ylabel(r"Prediction error $|L - \bar{p}|$")
        scatter_ax.set_ylim(-0.02, 1.02)
        scatter_ax.set_title("Prediction error vs predictive variance\n"
                             "(dashed: Var(p) 75th percentile, 'unsure' to its right; dotted: error 0.5)")
        scatter_ax.legend(title="True label", loc="upper right", frameon=True)

        with warnings.catch_warnings():
            # seaborn 0.13.2 still passes matplotlib 3.11's deprecated `vert` to Axes.bxp
            warnings.filterwarnings("ignore", message="vert: bool", category=MatplotlibDeprecationWarning)
            sns.boxplot(x=names, y=table["var_p"], order=list(palette), hue=names, hue_order=list(palette),
                        palette=palette, width=0.5, showfliers=False, boxprops={"alpha": 0.35}, legend=False,
                        ax=box_ax)
        sns.stripplot(x=names, y=table["var_p"], order=list(palette), hue=names, hue_order=list(palette),
                      palette=palette, size=3.5, alpha=0.7, jitter=0.2, legend=False, ax=box_ax)
        box_ax.set_xlabel("")
        box_ax.set_ylabel("Var($p$)")
        counts = table["label"].value_counts()
        box_ax.set_xticks([0, 1], [f"{LABEL_NAMES[c]}\nn = {counts.get(c, 0)}" for c in (0, 1)])
        box_ax.set_title("Predictive variance by true label")

        columns = ["Baseline", "Real follow-up", "Generated\n(sample 1)", f"Pixel variance\n(K = {k})",
                   f"Mean abs. error vs real\n(K = {k})"]
        # a thin last row holds the colour bars, so every image row keeps the same cells
        cells = right.add_gridspec(len(examples) + 1, len(columns), height_ratios=[1] * len(examples) + [0.07])
        grid = np.array([[right.add_subplot(cells[r, c]) for c in range(len(columns))] for r in range(len(examples))])
        right.suptitle("Example cases (numbers as in the scatter plot)", fontsize=12)
        for row, (i, case) in enumerate(examples.iterrows()):
            panels = [(real_baseline[i, 0], "gray", Normalize(-1, 1)), (real_followup[i, 0], "gray", Normalize(-1, 1)),
                      (generated[i, 0, 0], "gray", Normalize(-1, 1)), (var_maps[i], "magma", var_norm),
                      (err_maps[i], "cividis", err_norm)]
            for col, (image, cmap, norm) in enumerate(panels):
                ax = grid[row, col]
                ax.imshow(image, cmap=cmap, norm=norm, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                if row == 0:
                    ax.set_title(columns[col], fontsize=10)
            grid[row, 0].set_ylabel(
                f"({row + 1}) {LABEL_NAMES[case['label']]}\n{case['category']}\n"
                rf"$\bar{{p}}$ = {case['mean_p']:.2f}, Var = {case['var_p']:.1e}",
                fontsize=9, rotation=0, ha="right", va="center", labelpad=8,
            )
        for col, norm, cmap, label in ((3, var_norm, "magma", "variance"),
                                       (4, err_norm, "cividis", "|generated − real|")):
            right.colorbar(ScalarMappable(norm, cmap), cax=right.add_subplot(cells[-1, col]), orientation="horizontal",
                           label=label)
        fig.suptitle(f"Prediction variance across K = {k} generated follow-ups (N = {n} pairs)", fontsize=14)
        save_figure(fig, out_png, out_pdf)
    return table


# -- Figure 5 ------------------------------------------------------------------------------------
def running_variance(probs) -> np.ndarray:
    """(N, K - 1): variance (ddof = 0) of each pair's first k probabilities, for k = 2..K."""
    probs = _probs(probs, "running_variance")
    return np.stack([probs[:, :k].var(axis=1) for k in range(2, probs.shape[1] + 1)], axis=1)


def figure5_running_variance(
    probs,
    pair_ids: Sequence[str],
    out_png: str | Path,
    out_pdf: str | Path,
    n_pairs: int = 50,
    seed: int = 23,
    mark_k: int | None = 20,
) -> pd.DataFrame:
    """Figure 5 (Appendix D): running variance of p over k = 2..K for `n_pairs` random pairs.

    Pairs are drawn without replacement with numpy's default_rng(seed) (all when fewer). One thin
    line per pair, the median over the drawn pairs in bold; left the running variance on a log
    scale (pairs differ by orders of magnitude), right each curve divided by its value at k = K,
    which shows where the curves settle. `mark_k` draws the K of Table 1 when it is below K.
    Returns the curves in long form: pair_id, k, running_var.
    """
    caller = "figure5_running_variance"
    probs = _probs(probs, caller)
    pair_ids = _pair_ids(pair_ids, len(probs), caller)
    if n_pairs < 1:
        raise ValueError(f"{caller}: n_pairs must be at least 1, got {n_pairs}")
    chosen = seeded_subset(len(probs), n_pairs, seed)
    curves = running_variance(probs[chosen])
    ks = np.arange(2, probs.shape[1] + 1)
    table = pd.DataFrame({"pair_id": np.repeat(pair_ids[chosen], len(ks)), "k": np.tile(ks, len(chosen)),
                          "running_var": curves.ravel()})

    final = curves[:, -1]
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook"):
        fig = Figure(figsize=(13, 5), layout="constrained")
        raw_ax, rel_ax = fig.subplots(1, 2)
        colours = sns.color_palette("crest", len(chosen))
        relative = curves[final > 0] / final[final > 0, None]
        panels = ((raw_ax, curves, colours), (rel_ax, relative, [c for c, f in zip(colours, final) if f > 0]))
        for ax, values, palette in panels:
            for curve, colour in zip(values, palette):
                ax.plot(ks, curve, color=colour, lw=0.9, alpha=0.55)
            if len(values):
                ax.plot(ks, np.median(values, axis=0), color="black", lw=2.8, label=f"median over {len(values)} pairs")
            if mark_k is not None and 2 <= mark_k < ks[-1]:
                ax.axvline(mark_k, color="0.35", ls="--", lw=1.2, label=f"K = {mark_k} (Table 1)")
            ax.set_xlim(2, ks[-1])
            ax.set_xlabel("Number of generated samples k")
            ax.legend(loc="lower right", frameon=True)
        positive = curves[curves > 0]
        if positive.size:
            # log scale: the pairs' variances span orders of magnitude; symlog keeps exact zeros on the axis
            if positive.size == curves.size:
                raw_ax.set_yscale("log")
            else:
                raw_ax.set_yscale("symlog", linthresh=float(positive.min()))
        raw_ax.set_ylabel("Running variance of p (ddof = 0)")
        raw_ax.set_title("Running variance")
        rel_ax.axhline(1.0, color="0.5", lw=0.8)
        rel_ax.set_ylabel(f"Running variance / variance at k = {ks[-1]}")
        rel_ax.set_title("Relative to each pair's final value" + (f" ({len(relative)} pairs with Var > 0)"
                                                                   if len(relative) < len(curves) else ""))
        fig.suptitle(f"Running variance of the classifier's probability over k generated follow-ups "
                     f"({len(chosen)} randomly drawn pairs, one line each)", fontsize=13)
        save_figure(fig, out_png, out_pdf)
    return table


# -- Sample gallery ------------------------------------------------------------------------------
def _pick_gallery_pairs(labels, pair_ids, n_per_label: int, seed: int) -> list[int]:
    """Indices of up to n_per_label malignant then benign pairs (labels: an int array), drawn reproducibly."""
    rng, chosen = np.random.default_rng(seed), []
    for label in (1, 0):
        candidates = np.flatnonzero(labels == label)
        chosen += sorted(rng.choice(candidates, size=min(n_per_label, len(candidates)), replace=False).tolist(),
                         key=lambda i: pair_ids[i])
    return chosen


def sample_gallery(
    real_baseline, real_followup, labels, pair_ids: Sequence[str], generated: dict[str, np.ndarray],
    out_png: str | Path, out_pdf: str | Path, *, n_per_label: int = 3, seed: int = 0,
) -> list[str]:
    """Baseline, real follow-up and every method's first sample for a few test pairs of each label.

    generated maps a row title to (N, K, 1, S, S) images aligned with pair_ids; all panels share the
    [-1, 1] grey scale of the crops. Returns the pair ids shown, top to bottom.
    """
    n, labels = len(pair_ids), np.asarray(labels).astype(int)
    real_baseline = _images(real_baseline, (n, *np.shape(real_baseline)[1:]), "real_baseline")
    real_followup = _images(real_followup, real_baseline.shape, "real_followup")
    for title, images in generated.items():
        if np.shape(images)[0] != n or np.shape(images)[2:] != real_baseline.shape[1:]:
            raise ValueError(f"sample_gallery: {title} images have shape {np.shape(images)}, "
                             f"expected ({n}, K, {', '.join(map(str, real_baseline.shape[1:]))})")
    rows = _pick_gallery_pairs(labels, list(pair_ids), n_per_label, seed)
    columns = [("Baseline", real_baseline[:, 0]), ("Real follow-up", real_followup[:, 0])]
    columns += [(title, np.asarray(images)[:, 0, 0]) for title, images in generated.items()]
    fig = Figure(figsize=(1.25 * len(columns) + 1.6, 1.3 * len(rows) + 0.8), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(rows), len(columns)))
    for r, i in enumerate(rows):
        for c, (title, images) in enumerate(columns):
            ax = axes[r, c]
            ax.imshow(images[i], cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title.replace(" (", "\n("), fontsize=8)
        axes[r, 0].set_ylabel(f"{pair_ids[i]}\n{LABEL_NAMES[labels[i]].split(' ')[0]}", fontsize=7,
                              color=LABEL_COLOURS[labels[i]], rotation=0, ha="right", va="center")
    fig.suptitle("Test pairs: real baseline and follow-up beside each method's first generated follow-up "
                 "(seed 0; lung window)", fontsize=10)
    save_figure(fig, out_png, out_pdf, dpi=150)
    return [str(pair_ids[i]) for i in rows]
