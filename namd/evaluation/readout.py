"""The progression readout: the nodule's long-axis diameter (mm) and area (mm^2) on one crop, learning-free.

The same measurement reads real and generated crops, so a method's predicted growth is the
readout on its follow-up minus the readout on the real baseline.

Measurement (``measure_nodule``), on a crop in [-1, 1] mapped back to HU through ``crop.hu_window``:

1. threshold at ``threshold_hu``; the nodule is the connected component (scipy.ndimage.label,
   4-connected) nearest the crop centre, within ``centre_reach_px`` of the centre pixel
   (``size // 2``, where crops.py puts the annotated voxel); none there: no nodule, size 0;
2. fill its holes (a part-solid or ground-glass halo is noisy near the threshold);
3. leak guard: vessels and the chest wall touch many nodules at the threshold. The inscribed
   radius R at the centre (largest Euclidean distance in mm to the background within one pixel of
   the centre) sets the nodule's scale: the component is cut to the disc of radius
   ``disc_factor * R + disc_margin_px`` pixels around the centre, then opened with a disc of
   radius ``opening_factor * R`` (which removes attached vessels and spicules thinner than the
   nodule), keeping the piece at the centre;
4. area = pixels x row spacing x column spacing; long-axis diameter = that of the region's
   equivalent ellipse, 4 sqrt(largest eigenvalue of the covariance of the pixel centres in mm,
   plus the pixel's own variance s^2 / 12)), which is exact for a filled ellipse and, unlike a
   Feret diameter, not stretched by a stray pixel.

Generated crops have no spacing of their own: they are predictions on the baseline's pixel grid,
so they are read with the baseline's spacing (crops.csv).

Choice of the settings: ``readout_grid`` scores every combination of ``selection_grid``
(threshold_hu x disc_factor x opening_factor) on the train and validation real crops (baseline
and follow-up) against the phantom's truth (``phantom_truth.csv``: the in-plane long-axis
diameter of each nodule at each screen), by the mean over nodule types (solid, ground-glass,
part-solid) of the mean absolute error, so the faint ground-glass nodules (-620 to -420 HU
against lung near -850 HU) weigh as much as the common solid ones. The test crops are never
scored there; ``readout_validation`` reports them beside train and val as a held-out check.
Limitations, visible in the validation by type and size: the disc of step 3 shortens the long
axis of large elongated nodules, and a 4-5 mm nodule that lies on a vessel or the pleura at the
threshold is read with part of it. At pixels much finer than the phantom's 1.6 mm the opening
trims the rim of a nodule only a few pixels across (a 5 mm disc at 0.7 mm reads about 4 mm).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

import numpy as np
import pandas as pd
from scipy import ndimage

from namd.data.crops import DEFAULT_WINDOW, unit_to_hu
from namd.data.phantom import GROUND_GLASS, PART_SOLID, SOLID

TYPE_NAMES = {SOLID: "solid", GROUND_GLASS: "ground-glass", PART_SOLID: "part-solid"}
#: the rows of crops.csv that give the spacing of the baseline and of the follow-up crop
SPACING_COLUMNS = {
    "base": ("pixel_spacing_row_base", "pixel_spacing_col_base"),
    "follow": ("pixel_spacing_row_follow", "pixel_spacing_col_follow"),
}
GRID_KEYS = ("threshold_hu", "disc_factor", "opening_factor")


@dataclass(frozen=True)
class ReadoutSettings:
    """config ``evaluation.progression`` less its selection grid."""

    threshold_hu: float = -700.0
    centre_reach_px: float = 1.5
    disc_factor: float = 1.0
    disc_margin_px: float = 1.0
    opening_factor: float = 0.8

    @classmethod
    def from_config(cls, section: Mapping) -> ReadoutSettings:
        return cls(**{f.name: float(section[f.name]) for f in fields(cls)})


def _disc(radius_mm: float, spacing: tuple[float, float]) -> np.ndarray:
    """A disc of ``radius_mm`` on the pixel grid (an ellipse in pixels when the spacing is anisotropic)."""
    sr, sc = spacing
    y, x = np.mgrid[-int(radius_mm // sr) : int(radius_mm // sr) + 1, -int(radius_mm // sc) : int(radius_mm // sc) + 1]
    return (y * sr) ** 2 + (x * sc) ** 2 <= radius_mm * radius_mm


def _centre_component(mask: np.ndarray, reach_px: float) -> np.ndarray:
    """The 4-connected component of ``mask`` with a pixel nearest the centre, within ``reach_px``."""
    labels, _ = ndimage.label(mask)
    rows, cols = np.nonzero(labels)
    centre = mask.shape[0] // 2, mask.shape[1] // 2
    distance = np.hypot(rows - centre[0], cols - centre[1])
    if not len(rows) or distance.min() > reach_px:
        return np.zeros_like(mask, dtype=bool)
    nearest = distance.argmin()
    return labels == labels[rows[nearest], cols[nearest]]


def nodule_mask(hu: np.ndarray, spacing: tuple[float, float], settings: ReadoutSettings) -> np.ndarray:
    """The pixels read as the nodule on one HU crop (empty when none is at the centre)."""
    component = _centre_component(hu > settings.threshold_hu, settings.centre_reach_px)
    if not component.any():
        return component
    component = ndimage.binary_fill_holes(component)
    sr, sc = spacing
    r, c = hu.shape[0] // 2, hu.shape[1] // 2
    distance = ndimage.distance_transform_edt(component, sampling=spacing)
    inscribed = distance[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2].max()  # mm
    rows, cols = np.indices(hu.shape)
    pixel = (sr + sc) / 2.0
    guard_mm = settings.disc_factor * inscribed + settings.disc_margin_px * pixel
    component &= np.hypot((rows - r) * sr, (cols - c) * sc) <= guard_mm
    opening = settings.opening_factor * inscribed
    if opening >= pixel:
        opened = _centre_component(ndimage.binary_opening(component, structure=_disc(opening, spacing)),
                                   settings.centre_reach_px + opening / pixel)
        if opened.any():
            component = opened
    return _centre_component(component, settings.centre_reach_px)


def mask_size(mask: np.ndarray, spacing: tuple[float, float]) -> tuple[float, float]:
    """(area mm^2, long-axis diameter mm) of a pixel mask; (0, 0) when it is empty."""
    rows, cols = np.nonzero(mask)
    if not len(rows):
        return 0.0, 0.0
    sr, sc = (float(s) for s in spacing)
    points = np.stack([rows * sr, cols * sc])
    covariance = np.cov(points, bias=True) if len(rows) > 1 else np.zeros((2, 2))
    covariance += np.diag([sr * sr, sc * sc]) / 12.0
    return len(rows) * sr * sc, 4.0 * float(np.sqrt(np.linalg.eigvalsh(covariance)[-1]))


def measure_nodule(
    image: np.ndarray, spacing: tuple[float, float], settings: ReadoutSettings, window=DEFAULT_WINDOW
) -> tuple[float, float]:
    """(area mm^2, long-axis diameter mm) of the nodule at the centre of a [-1, 1] crop (S, S) or (1, S, S)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 2:
        raise ValueError(f"measure_nodule: a crop must be (S, S) or (1, S, S), got shape {image.shape}")
    return mask_size(nodule_mask(unit_to_hu(image, window), spacing, settings), spacing)


def measure_crops(images: np.ndarray, spacings: np.ndarray, settings: ReadoutSettings,
                  window=DEFAULT_WINDOW) -> np.ndarray:
    """Diameters (mm) of crops shaped (N, [K,] 1, S, S), one spacing (row, col) per pair."""
    images = np.asarray(images)
    if images.ndim not in (4, 5) or images.shape[-3] != 1:
        raise ValueError(f"measure_crops: crops must be (N, [K,] 1, S, S), got shape {images.shape}")
    spacings = np.asarray(spacings, dtype=float)
    if spacings.shape != (len(images), 2):
        raise ValueError(
            f"measure_crops: need one (row, col) spacing per crop: {spacings.shape} for {len(images)} crops"
        )
    lead = images.shape[:-3]
    flat = images.reshape(-1, *images.shape[-2:])
    per_crop = np.repeat(spacings, int(np.prod(lead[1:], dtype=int)), axis=0)
    diameters = [measure_nodule(img, sp, settings, window)[1] for img, sp in zip(flat, per_crop)]
    return np.asarray(diameters, dtype=float).reshape(lead)


def crop_spacings(crops_table: pd.DataFrame, pair_ids, when: str, where: str) -> np.ndarray:
    """(N, 2) pixel spacing of the ``when`` ("base"/"follow") crop of each pair, in ``pair_ids`` order."""
    columns = ["pair_id", *SPACING_COLUMNS[when]]
    missing = [c for c in columns if c not in crops_table.columns]
    if missing:
        raise ValueError(f"{where}: lacks column(s) {missing}")
    table = crops_table.astype({"pair_id": str}).set_index("pair_id")
    absent = sorted(set(map(str, pair_ids)) - set(table.index))
    if absent:
        raise ValueError(f"{where}: no row for pair(s) {absent[:10]}")
    spacing = table.loc[list(map(str, pair_ids)), list(SPACING_COLUMNS[when])].to_numpy(dtype=float)
    bad = ~(np.isfinite(spacing) & (spacing > 0)).all(axis=1)
    if bad.any():
        raise ValueError(f"{where}: pair {np.asarray(pair_ids)[bad][0]}: {SPACING_COLUMNS[when]} must be positive")
    return spacing


# -- validation against the phantom's truth ---------------------------------------------------------
def truth_crops(pairs: pd.DataFrame, crops: Mapping[str, np.ndarray], crops_table: pd.DataFrame,
                truth: pd.DataFrame) -> pd.DataFrame:
    """One row per real crop (pair x baseline/follow-up) with its image, spacing and true diameter."""
    needed = ["pid", "nodule_id", "study_yr", "long_dia_mm", "attenuation"]
    missing = [c for c in needed if c not in truth.columns]
    if missing:
        raise ValueError(f"phantom truth lacks column(s) {missing}")
    index = {p: i for i, p in enumerate(np.asarray(crops["pair_id"]).tolist())}
    frames = []
    for when, array in (("base", "baseline"), ("follow", "followup")):
        frame = pairs[["pair_id", "pid", "nodule_id", "split", "label", f"study_yr_{when}"]].rename(
            columns={f"study_yr_{when}": "study_yr"})
        frame = frame.merge(truth[needed], on=["pid", "nodule_id", "study_yr"], how="left", validate="many_to_one")
        unmatched = frame.loc[frame["long_dia_mm"].isna(), "pair_id"].tolist()
        if unmatched:
            raise ValueError(f"phantom truth has no row for the {when} crop of pair(s) {unmatched[:10]}")
        absent = [p for p in frame["pair_id"] if p not in index]
        if absent:
            raise ValueError(f"crops.npz has no crop for pair(s) {absent[:10]}")
        frame["image"] = list(np.asarray(crops[array])[[index[p] for p in frame["pair_id"]]])
        frame[["spacing_row", "spacing_col"]] = crop_spacings(crops_table, frame["pair_id"], when, "crops.csv")
        frames.append(frame.assign(time_point=when))
    table = pd.concat(frames, ignore_index=True)
    table["type"] = table["attenuation"].map(TYPE_NAMES)
    return table


def _measured(table: pd.DataFrame, settings: ReadoutSettings, window) -> pd.DataFrame:
    sizes = [measure_nodule(img, (r, c), settings, window)
             for img, r, c in zip(table["image"], table["spacing_row"], table["spacing_col"])]
    out = table.drop(columns="image").assign(area_mm2=[s[0] for s in sizes], diameter_mm=[s[1] for s in sizes])
    out["error_mm"] = out["diameter_mm"] - out["long_dia_mm"]
    return out


def summarise_errors(measured: pd.DataFrame) -> pd.DataFrame:
    """MAE, bias (mean signed error), median absolute error and count by split x type, with 'all' margins."""
    rows = []
    for split in [*sorted(measured["split"].unique()), "all"]:
        for kind in [*TYPE_NAMES.values(), "all"]:
            in_split = (measured["split"] == split) | (split == "all")
            part = measured[in_split & ((measured["type"] == kind) | (kind == "all"))]
            if part.empty:
                continue
            rows.append({"split": split, "type": kind, "n_crops": len(part),
                         "mae_mm": part["error_mm"].abs().mean(), "bias_mm": part["error_mm"].mean(),
                         "median_ae_mm": part["error_mm"].abs().median(),
                         "n_no_nodule": int((part["diameter_mm"] == 0).sum())})
    return pd.DataFrame(rows)


def readout_grid(table: pd.DataFrame, base: ReadoutSettings, grid: Mapping[str, list], window) -> pd.DataFrame:
    """Type-balanced MAE of every grid setting on the train and val crops only, best first."""
    selection = table[table["split"].isin(["train", "val"])]
    if selection.empty:
        raise ValueError("readout_grid: no train or val crop to choose the readout settings on")
    rows = []
    for values in itertools.product(*(grid[k] for k in GRID_KEYS)):
        settings = replace(base, **dict(zip(GRID_KEYS, map(float, values))))
        errors = _measured(selection, settings, window)
        by_type = errors.groupby("type")["error_mm"].apply(lambda e: e.abs().mean())
        rows.append({**dict(zip(GRID_KEYS, values)), "type_balanced_mae_mm": by_type.mean(),
                     "mae_mm": errors["error_mm"].abs().mean(), **{f"mae_mm_{k}": v for k, v in by_type.items()}})
    return pd.DataFrame(rows).sort_values("type_balanced_mae_mm", kind="stable").reset_index(drop=True)


def validate_readout(table: pd.DataFrame, settings: ReadoutSettings, window) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-crop measurements with errors, summary by split x type) for the configured settings."""
    measured = _measured(table, settings, window)
    return measured, summarise_errors(measured)
