"""A contact sheet of baseline vs follow-up crops per label: the first look at whether the data is sane.

Built on a bare :class:`matplotlib.figure.Figure` (no pyplot), so it renders with Agg whatever
backend the caller's session uses and leaves no global figure state behind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from namd.data.crops import DEFAULT_WINDOW, load_crops
from namd.io import atomic_output

LABEL_NAMES = {0: "Benign", 1: "Malignant"}
ROW_NAMES = ("Baseline", "Follow-up")


def _diameter_text(value) -> str:
    return "diameter n/a" if pd.isna(value) else f"{float(value):.0f} mm"


def plot_contact_sheet(
    crops_npz: str | Path,
    pairs_csv: str | Path,
    out_png: str | Path,
    out_pdf: str | Path | None = None,
    n_per_label: int = 8,
    seed: int = 0,
    window=DEFAULT_WINDOW,
) -> None:
    """For each label, ``n_per_label`` random pairs as columns: baseline above, follow-up below.

    Columns are ordered by diameter (``SCT_LONG_DIA``) so growth is easy to scan; ``window`` only
    labels the grey scale and should be the one the crops were made with.
    """
    if n_per_label < 1:
        raise ValueError(f"n_per_label must be at least 1, got {n_per_label}")
    arrays = load_crops(crops_npz)
    pairs = pd.read_csv(pairs_csv, dtype={"pair_id": str})
    missing_columns = [c for c in ("pair_id", "label", "SCT_LONG_DIA") if c not in pairs.columns]
    if missing_columns:
        raise ValueError(f"{pairs_csv}: lacks columns {missing_columns}")
    row_of = {pair_id: i for i, pair_id in enumerate(arrays["pair_id"])}
    not_cropped = sorted(set(pairs["pair_id"]) - set(row_of))
    if not_cropped:
        raise ValueError(f"{pairs_csv}: pairs {not_cropped[:10]} have no crops in {crops_npz}")
    unknown_labels = sorted(set(pairs["label"].dropna()) - set(LABEL_NAMES))
    if unknown_labels or pairs["label"].isna().any():
        raise ValueError(f"{pairs_csv}: label must be 0 or 1, found {unknown_labels or 'blanks'}")

    rng = np.random.default_rng(seed)
    shown = {}
    for label in LABEL_NAMES:
        candidates = pairs[pairs["label"] == label]
        picked = rng.choice(len(candidates), size=min(n_per_label, len(candidates)), replace=False)
        shown[label] = (candidates.iloc[np.sort(picked)].sort_values("SCT_LONG_DIA", kind="stable"), len(candidates))
    n_cols = max(1, *(len(table) for table, _ in shown.values()))
    colours = dict(zip(LABEL_NAMES, sns.color_palette("colorblind", 4)[::3]))

    with sns.axes_style("white"), sns.plotting_context("paper"):
        fig = Figure(figsize=(1.25 * n_cols + 0.8, 6.4), layout="constrained")
        fig.suptitle("Nodule-centred crops: baseline vs one-year follow-up", fontsize=12, fontweight="bold")
        fig.supxlabel(
            f"Grey scale: {window[0]:.0f} to {window[1]:.0f} HU. Columns ordered by longest diameter; "
            "'padded' crops reached the image edge and were filled with air.",
            fontsize=7,
            color="0.35",
        )
        for subfig, (label, (table, total)) in zip(fig.subfigures(len(LABEL_NAMES), 1, hspace=0.04), shown.items()):
            subfig.suptitle(
                f"{LABEL_NAMES[label]}: {len(table)} of {total} pairs",
                fontsize=11,
                fontweight="bold",
                color=colours[label],
                x=0.02,
                ha="left",
            )
            axes = subfig.subplots(len(ROW_NAMES), n_cols, squeeze=False)
            for ax in axes.flat:
                ax.set_xticks([])
                ax.set_yticks([])
            for ax, name in zip(axes[:, 0], ROW_NAMES):
                ax.set_ylabel(name, fontsize=9, fontweight="bold")
            if table.empty:
                axes[0, 0].text(0.5, 0.5, "no pairs", ha="center", va="center", transform=axes[0, 0].transAxes)
            for column, pair in enumerate(table.itertuples(index=False)):
                i = row_of[pair.pair_id]
                for ax, images in zip(axes[:, column], (arrays["baseline"], arrays["followup"])):
                    ax.imshow(images[i, 0], cmap="gray", vmin=-1.0, vmax=1.0, interpolation="nearest")
                padded = " · padded" if arrays["border_padded"][i] else ""
                axes[0, column].set_title(f"{pair.pair_id}\n{_diameter_text(pair.SCT_LONG_DIA)}{padded}", fontsize=6.5)
            for ax in axes[:, len(table) :].flat:
                ax.set_axis_off()
        for path, fmt in ((out_png, "png"), (out_pdf, "pdf")):
            if path is not None:
                with atomic_output(path) as handle:
                    fig.savefig(handle, format=fmt, dpi=200)
