"""The figures `namd predict` writes for one nodule's prediction (namd.pipeline.NAMDPrediction).

The maps (mean follow-up, variance, each sample) as enlarged PNGs, and summary.png: baseline,
mean, variance, the probability spread over the K samples, some samples and the report on one
page. Built on `matplotlib.figure.Figure` (the Agg canvas, no pyplot, no global style), like the
workflow's figures in namd.evaluation.figures; only numpy and matplotlib are imported, so the
command does not load the analysis stack (seaborn, scikit-learn) for them.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.image import imsave
from matplotlib.ticker import MaxNLocator

#: the PNG maps are enlarged (nearest neighbour) to at least this many pixels a side, to be viewable
PNG_MIN_SIDE = 256
#: samples shown in summary.png
SUMMARY_SAMPLES = 6


def save_map_png(path: Path, image, *, cmap: str, vmin: float, vmax: float) -> None:
    """A 2-D map as a PNG, each pixel a square block so that the longer side reaches PNG_MIN_SIDE."""
    scale = math.ceil(PNG_MIN_SIDE / max(image.shape))
    imsave(path, np.kron(image, np.ones((scale, scale))), cmap=cmap, vmin=vmin, vmax=vmax)


def summary_figure(path: Path, baseline, prediction, variance_hu2, summary: dict) -> None:
    """One page: baseline, mean follow-up, variance map, probability spread, some samples, the report.

    baseline: the (S, S) baseline crop in [-1, 1]; prediction: the NAMDPrediction of that one
    baseline; variance_hu2: its (S, S) variance map in HU²; summary: what `namd predict` writes
    to prediction.json (crop, nodule, report, seed, sampling settings, model, version).
    """
    probabilities = prediction.probabilities[0]
    samples = prediction.samples[0]
    low, high = summary["crop"]["hu_window"]
    size = summary["crop"]["size_px"]
    field_mm = [size * s for s in summary["crop"]["pixel_spacing_mm"]]
    grey = dict(cmap="gray", vmin=-1, vmax=1, interpolation="nearest")

    fig = Figure(figsize=(12, 9), layout="constrained")
    top, middle, bottom = fig.subfigures(3, 1, height_ratios=[3.3, 1.9, 1.1])  # each lays itself out
    nodule = summary["nodule"]
    fig.suptitle(f"NAMD: predicted one-year follow-up of the nodule at row {nodule['row']}, col {nodule['col']}, "
                 f"slice {nodule['slice']}", fontsize=14, fontweight="bold")

    axes = top.subplots(1, 4, gridspec_kw={"width_ratios": [1, 1, 1.15, 0.9]})
    for ax, title, image in zip(axes, ("Baseline crop", f"Mean of {len(samples)} predicted follow-ups"),
                                (baseline, prediction.mean[0, 0])):
        ax.imshow(image, **grey)
        ax.set_title(title)
    im = axes[2].imshow(variance_hu2, cmap="magma", vmin=0, interpolation="nearest")
    axes[2].set_title("Pixel-wise variance")
    top.colorbar(im, ax=axes[2], label="HU²", ticks=MaxNLocator(5))
    for ax in axes[:3]:
        ax.set_xticks([])
        ax.set_yticks([])

    ax = axes[3]
    mean, std = float(probabilities.mean()), float(probabilities.std())
    if len(probabilities) > 1 and std > 0:
        parts = ax.violinplot(probabilities, positions=[0], widths=0.8, showextrema=False)
        for body in parts["bodies"]:
            body.set_alpha(0.3)
    jitter = np.random.default_rng(0).uniform(-0.12, 0.12, len(probabilities))
    ax.scatter(jitter, probabilities, s=14, color="black", alpha=0.6, label="one sample", zorder=3)
    ax.errorbar([0.55], [mean], yerr=[std], fmt="o", color="crimson", capsize=6, label="mean ± SD", zorder=4)
    ax.set_xlim(-0.7, 0.9)
    ax.set_ylim(0, 1)
    ax.set_xticks([])
    ax.set_ylabel("malignancy probability")
    ax.set_title(f"Malignancy {mean:.3f} ± {std:.3f}")
    ax.legend(loc="upper left", fontsize=8, frameon=False)

    shown = min(SUMMARY_SAMPLES, len(samples))
    for k, ax in enumerate(np.atleast_1d(middle.subplots(1, SUMMARY_SAMPLES))):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= shown:
            ax.set_axis_off()
            continue
        ax.imshow(samples[k, 0], **grey)
        ax.set_title(f"sample {k}: p = {probabilities[k]:.3f}", fontsize=9)

    details = (f"Crop {size} px = {field_mm[0]:.1f} x {field_mm[1]:.1f} mm, HU window [{low:g}, {high:g}]"
               + (" (padded with air at the image border)" if summary["crop"]["border_padded"] else "")
               + f"; {summary['num_samples']} samples, {summary['num_inference_steps']} DDIM steps, "
               f"seed {summary['seed']}; series {summary['series_instance_uid']}; model {summary['model']}")
    text = ("Report: " + textwrap.fill(summary["report"], 125) + "\n\n" + textwrap.fill(details, 140)
            + f"\nnamd {summary['namd_version']}. Research software, not a medical device: "
            "not for clinical decisions.")
    bottom.text(0.02, 0.95, text, va="top", ha="left", fontsize=9)
    fig.savefig(path, dpi=110)
