"""Nodule-centred 2D crops of baseline and follow-up CT, in a fixed HU window scaled to [-1, 1].

The crop is the axial slice through the annotated nodule centre (paper, problem setup: "a
cropped, nodule-centered 2D image slice"); ``crops.npz`` follows data contract section 4.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from namd.data.dicom_read import CTVolume, DicomSeriesError, read_ct_series
from namd.io import atomic_output
from namd.progress import progress_bar

AIR_HU = -1000.0
DEFAULT_WINDOW = (-1000.0, 400.0)
BORDER_MODES = ("pad", "exclude")
CROP_ARRAYS = ("pair_id", "baseline", "followup", "border_padded")
PAIR_LOCATION_COLUMNS = {
    "base": ("series_uid_base", "row_base", "col_base", "slice_base"),
    "follow": ("series_uid_follow", "row_follow", "col_follow", "slice_follow"),
}


class NoduleOutOfVolumeError(ValueError):
    """A nodule location that is not a voxel of its series: a wrong annotation or wrong series."""


class NoduleAtBorderError(ValueError):
    """The crop window around a nodule leaves the image and border handling is 'exclude'."""


def _window_bounds(window) -> tuple[float, float]:
    low, high = (float(v) for v in window)
    if not high > low:
        raise ValueError(f"HU window must be (low, high) with high > low, got {tuple(window)}")
    return low, high


def window_to_unit(hu, window=DEFAULT_WINDOW) -> np.ndarray:
    """Clip HU to ``window`` and map it linearly onto [-1, 1] (float32)."""
    low, high = _window_bounds(window)
    clipped = np.clip(np.asarray(hu, dtype=np.float64), low, high)
    return ((clipped - low) / (high - low) * 2.0 - 1.0).astype(np.float32)


def unit_to_hu(unit, window=DEFAULT_WINDOW) -> np.ndarray:
    """Inverse of :func:`window_to_unit`; values outside [-1, 1] (generated images) are clipped first."""
    low, high = _window_bounds(window)
    clipped = np.clip(np.asarray(unit, dtype=np.float64), -1.0, 1.0)
    return ((clipped + 1.0) / 2.0 * (high - low) + low).astype(np.float32)


def _voxel_index(value, name: str, bound: int, where: str) -> int:
    """An integer index in [0, bound); integer-valued floats are accepted (pandas reads ints with NaN as float)."""
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise NoduleOutOfVolumeError(f"{where}: {name}={value!r} is not a number") from err
    if not number.is_integer():
        raise NoduleOutOfVolumeError(f"{where}: {name}={value!r} is not a whole voxel index")
    if not 0 <= number < bound:
        raise NoduleOutOfVolumeError(f"{where}: {name}={int(number)} is outside the volume (valid 0..{bound - 1})")
    return int(number)


def _checked_crop_settings(size, border: str) -> int:
    if border not in BORDER_MODES:
        raise ValueError(f"border must be one of {BORDER_MODES}, got {border!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"crop size must be a positive integer, got {size!r}")
    return int(size)


def crop_nodule(
    volume: CTVolume, row, col, slice_index, size: int = 32, border: str = "pad"
) -> tuple[np.ndarray, bool]:
    """The ``size`` x ``size`` HU patch of slice ``slice_index`` centred on (row, col), and whether it was padded.

    The nodule voxel lands at crop index (size // 2, size // 2). A window that leaves the image is
    padded with air (-1000 HU) for ``border="pad"`` and raises :class:`NoduleAtBorderError` for
    ``border="exclude"``; a location outside the volume always raises :class:`NoduleOutOfVolumeError`.
    """
    size = _checked_crop_settings(size, border)
    n_slices, n_rows, n_cols = volume.hu.shape
    where = (
        f"nodule at (row={row}, col={col}, slice={slice_index}) in series {volume.series_instance_uid} "
        f"({volume.source}, shape {n_slices}x{n_rows}x{n_cols})"
    )
    z = _voxel_index(slice_index, "slice_index", n_slices, where)
    r = _voxel_index(row, "row", n_rows, where)
    c = _voxel_index(col, "col", n_cols, where)

    top, left = r - size // 2, c - size // 2
    bottom, right = top + size, left + size
    padded = top < 0 or left < 0 or bottom > n_rows or right > n_cols
    if padded and border == "exclude":
        raise NoduleAtBorderError(
            f"{where}: the {size}x{size} crop spans rows {top}..{bottom - 1}, cols {left}..{right - 1}, "
            f"beyond the {n_rows}x{n_cols} image (border='exclude')"
        )
    crop = np.full((size, size), AIR_HU, dtype=np.float32)
    src_top, src_left = max(top, 0), max(left, 0)
    src_bottom, src_right = min(bottom, n_rows), min(right, n_cols)
    crop[src_top - top : src_bottom - top, src_left - left : src_right - left] = volume.hu[
        z, src_top:src_bottom, src_left:src_right
    ]
    return crop, padded


def _check_columns(table: pd.DataFrame, required, name: str) -> None:
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing} (has {list(table.columns)})")


def build_crops(
    pairs: pd.DataFrame,
    series_index: pd.DataFrame,
    *,
    size: int = 32,
    window=DEFAULT_WINDOW,
    border: str = "pad",
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Baseline and follow-up crops for every row of ``pairs`` (contract sections 3 and 4), in its order.

    Each series is read once and dropped after its crops are cut, so memory holds one volume at a
    time however large the cohort. With ``border="exclude"`` every pair whose crop leaves the image
    is named in one :class:`NoduleAtBorderError`, so the cohort selection can drop them together.
    """
    _check_columns(pairs, ["pair_id", *PAIR_LOCATION_COLUMNS["base"], *PAIR_LOCATION_COLUMNS["follow"]], "pairs")
    _check_columns(series_index, ["series_instance_uid", "path"], "series index")
    if pairs.empty:
        raise ValueError("pairs is empty: no baseline/follow-up pair to crop")
    size = _checked_crop_settings(size, border)
    duplicated = pairs["pair_id"][pairs["pair_id"].duplicated()].unique().tolist()
    if duplicated:
        raise ValueError(f"pairs: pair_id values repeat: {duplicated[:10]}")
    indexed = series_index["series_instance_uid"].astype(str)
    if indexed.duplicated().any():
        raise ValueError(f"series index lists series {indexed[indexed.duplicated()].unique().tolist()} twice")
    series_paths = dict(zip(indexed, series_index["path"].astype(str)))
    window = _window_bounds(window)

    pair_ids = pairs["pair_id"].astype(str).to_numpy()
    records = pairs.to_dict("records")
    jobs: dict[str, list[tuple[int, str]]] = defaultdict(list)  # series uid -> (pair row, "base"/"follow")
    for i, (pair_id, record) in enumerate(zip(pair_ids, records)):
        for when, (uid_column, *_) in PAIR_LOCATION_COLUMNS.items():
            uid = str(record[uid_column])
            if uid not in series_paths:
                raise DicomSeriesError(f"pair {pair_id}: {uid_column} {uid} is not in the series index")
            jobs[uid].append((i, when))

    n = len(pairs)
    crops = {"base": np.empty((n, 1, size, size), np.float32), "follow": np.empty((n, 1, size, size), np.float32)}
    table = {when: [None] * n for when in PAIR_LOCATION_COLUMNS}
    at_border = []
    for uid, uid_jobs in progress_bar(jobs.items(), desc="Cropping nodules", unit="series", disable=not progress):
        try:
            volume = read_ct_series(series_paths[uid])
        except DicomSeriesError as err:
            needed_by = sorted({pair_ids[i] for i, _ in uid_jobs})
            raise DicomSeriesError(f"series {uid} needed by pairs {needed_by}: {err}") from err
        for i, when in uid_jobs:
            _, row_column, col_column, slice_column = PAIR_LOCATION_COLUMNS[when]
            record = records[i]
            try:
                hu, padded = crop_nodule(
                    volume, record[row_column], record[col_column], record[slice_column], size=size, border=border
                )
            except NoduleAtBorderError as err:
                at_border.append(f"{pair_ids[i]} ({when}): {err}")
                continue
            except NoduleOutOfVolumeError as err:
                raise NoduleOutOfVolumeError(f"pair {pair_ids[i]} ({when}): {err}") from err
            crops[when][i, 0] = window_to_unit(hu, window)
            z = int(float(record[slice_column]))
            table[when][i] = {
                f"series_uid_{when}": uid,
                f"slice_{when}": z,
                f"slice_position_mm_{when}": float(volume.slice_positions[z]),
                f"slice_file_{when}": str(volume.slice_files[z]),
                f"pixel_spacing_row_{when}": volume.pixel_spacing[0],
                f"pixel_spacing_col_{when}": volume.pixel_spacing[1],
                f"slice_spacing_{when}": volume.slice_spacing,
                f"padded_{when}": padded,
            }
    if at_border:
        raise NoduleAtBorderError(f"{len(at_border)} crops leave the image:\n" + "\n".join(at_border))

    crops_table = pd.concat(
        [pd.DataFrame({"pair_id": pair_ids}), pd.DataFrame(table["base"]), pd.DataFrame(table["follow"])], axis=1
    )
    crops_table["border_padded"] = crops_table["padded_base"] | crops_table["padded_follow"]
    arrays = {
        "pair_id": pair_ids,
        "baseline": crops["base"],
        "followup": crops["follow"],
        "border_padded": crops_table["border_padded"].to_numpy(dtype=bool),
    }
    return arrays, crops_table


def _check_crop_arrays(arrays, where: str) -> None:
    missing = [k for k in CROP_ARRAYS if k not in arrays]
    if missing:
        raise ValueError(f"{where}: crop arrays lack {missing}")
    n = len(arrays["pair_id"])
    for key in ("baseline", "followup"):
        shape = arrays[key].shape
        if arrays[key].dtype != np.float32 or len(shape) != 4 or shape[:2] != (n, 1) or shape[2] != shape[3]:
            raise ValueError(f"{where}: {key} must be float32 (N={n}, 1, S, S), got {arrays[key].dtype} {shape}")
    if arrays["baseline"].shape != arrays["followup"].shape:
        raise ValueError(f"{where}: baseline {arrays['baseline'].shape} and followup {arrays['followup'].shape} differ")
    padded = arrays["border_padded"]
    if padded.shape != (n,) or padded.dtype != bool:
        raise ValueError(f"{where}: border_padded must be bool ({n},), got {padded.dtype} {padded.shape}")
    if arrays["pair_id"].dtype.kind != "U":
        raise ValueError(f"{where}: pair_id must be a string array, got {arrays['pair_id'].dtype}")


def save_crops(arrays: dict[str, np.ndarray], path: str | Path) -> None:
    """Write ``crops.npz`` atomically, after checking it against contract section 4."""
    arrays = {k: np.asarray(arrays[k], dtype=str if k == "pair_id" else None) for k in CROP_ARRAYS if k in arrays}
    _check_crop_arrays(arrays, str(path))
    with atomic_output(path) as handle:
        np.savez_compressed(handle, **arrays)


def load_crops(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a ``crops.npz``, checked against contract section 4."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable crops .npz file: {err}") from err
    _check_crop_arrays(arrays, str(path))
    return {k: arrays[k] for k in CROP_ARRAYS}


def crop_rows(crops: dict[str, np.ndarray], pair_ids, source: str | Path) -> list[int]:
    """Row of each pair in `load_crops` arrays, in the order given; a pair without a crop is an error naming it."""
    index = {p: i for i, p in enumerate(crops["pair_id"].tolist())}
    absent = [p for p in pair_ids if p not in index]
    if absent:
        raise ValueError(f"{source}: no crop for pair(s) {absent[:10]}")
    return [index[p] for p in pair_ids]
