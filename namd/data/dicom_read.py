"""Read CT series the way NLST (TCIA) delivers them, and index a DICOM tree by series.

Slices are ordered by position along the slice normal, never by file name or InstanceNumber,
because that is how ``nodule_locations.csv`` defines ``slice_index`` (data contract, section 1).

Which files count: every file whose name does not start with "." must be DICOM (with the
128-byte preamble and "DICM" prefix); anything else is an error, since a stray non-DICOM file in
a series folder usually means a damaged download. Valid DICOM files that are not CT images
(DICOMDIR, structured reports, presentation states, secondary captures) are skipped with a
logged warning: TCIA folders sometimes carry them beside the slices. Hidden files (".DS_Store")
are skipped silently.

pydicom's own warnings (an invalid UID, an unknown character set...) become one log line each,
naming the file, instead of raw UserWarnings with pydicom's source line.

Missing slices, three ways: a gap longer than GAP_FACTOR times the median spacing (one slice
lost); InstanceNumbers that, ordered along the normal, step by more than one (every other
slice lost: the median then doubles with them); and, where the numbers cannot tell (absent,
repeated or not monotonic), a median spacing longer than GAP_FACTOR times the nominal spacing
(SpacingBetweenSlices, else SliceThickness; NLST's reconstructions are contiguous or overlap).
Each names the positions (mm along the normal) where slices are missing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, CTImageStorage, EnhancedCTImageStorage, LegacyConvertedEnhancedCTImageStorage

from namd.progress import progress_bar

log = logging.getLogger(__name__)

SINGLE_FRAME_CT = frozenset({CTImageStorage})
MULTI_FRAME_CT = frozenset({EnhancedCTImageStorage, LegacyConvertedEnhancedCTImageStorage})

#: A gap between neighbouring slices larger than this multiple of the median spacing is a missing slice.
GAP_FACTOR = 1.5
#: Direction cosines that differ by more than this are a different orientation.
ORIENTATION_TOLERANCE = 1e-4
#: Slices closer than this (mm) along the normal sit at the same position.
SAME_POSITION_MM = 1e-3
#: Missing positions listed in an error before "and N more".
LISTED_POSITIONS = 5

SERIES_INDEX_COLUMNS = [
    "series_instance_uid",
    "path",
    "n_slices",
    "rows",
    "cols",
    "pixel_spacing_row",
    "pixel_spacing_col",
    "slice_spacing",
]


class DicomSeriesError(ValueError):
    """A DICOM file or series that cannot be read as one consistent CT volume."""


@dataclass(frozen=True)
class CTVolume:
    """One CT series in Hounsfield units, slices ascending along the slice normal."""

    hu: np.ndarray  # (Z, Y, X) float32
    pixel_spacing: tuple[float, float]  # (row, col) mm
    slice_positions: np.ndarray  # (Z,) mm along the slice normal
    slice_spacing: float  # median distance between neighbouring slices, mm (NaN for one slice)
    series_instance_uid: str
    instance_numbers: tuple[int, ...]  # per slice; 1-based frame numbers for a multi-frame file
    source: Path  # the folder or multi-frame file read
    slice_files: tuple[Path, ...]  # the file each slice came from, for error messages

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.hu.shape


@dataclass(frozen=True)
class _Plane:
    """Geometry and rescale of one image plane: a single-frame file or one frame of a multi-frame file."""

    file: Path
    frame: int | None  # 0-based frame in a multi-frame file
    series_uid: str
    instance_number: int
    rows: int
    cols: int
    orientation: tuple[float, ...]
    position: tuple[float, ...]
    pixel_spacing: tuple[float, float]
    slope: float
    intercept: float
    nominal_spacing: float | None  # SpacingBetweenSlices, else SliceThickness (mm); None when neither is usable

    @property
    def label(self) -> str:
        return str(self.file) if self.frame is None else f"{self.file} (frame {self.frame + 1})"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _library_warnings_logged(path: Path):
    """pydicom's warnings, and the copies it sends to its logger, as one line each in ours naming the file."""
    pydicom_log = logging.getLogger("pydicom")
    collect, propagate = _Collect(), pydicom_log.propagate
    pydicom_log.addHandler(collect)
    pydicom_log.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        pydicom_log.removeHandler(collect)
        pydicom_log.propagate = propagate
        for message in dict.fromkeys([*collect.messages, *(str(w.message) for w in caught)]):
            log.warning("%s: %s", path, " ".join(message.split()))


def _read_dataset(path: Path, *, headers_only: bool) -> Dataset:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=headers_only, force=False)
        ds.walk(lambda dataset, element: None)  # parse every value now, where a damaged one is reported as such
    except InvalidDicomError as err:
        raise DicomSeriesError(f"{path}: not a DICOM file (no preamble / 'DICM' prefix): {err}") from err
    except Exception as err:  # pydicom raises many types for damaged bytes; all mean the same here
        raise DicomSeriesError(f"{path}: corrupt or truncated DICOM file ({type(err).__name__}: {err})") from err
    if len(ds) == 0:
        raise DicomSeriesError(f"{path}: truncated: a DICOM file meta header but no dataset after it "
                               f"({path.stat().st_size} bytes)")
    return ds


def _require(item: Dataset, keyword: str, where: str):
    value = item.get(keyword)
    if value is None or value == "":
        raise DicomSeriesError(f"{where}: missing {keyword} (file truncated or not a complete CT image)")
    return value


def _floats(value, count: int, keyword: str, where: str) -> tuple[float, ...]:
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError) as err:
        raise DicomSeriesError(f"{where}: {keyword} is not numeric: {value!r}") from err
    if len(numbers) != count:
        raise DicomSeriesError(f"{where}: {keyword} has {len(numbers)} values, expected {count}")
    return numbers


def _positive(value) -> float | None:
    """A spacing from an optional header value; None when absent, not a number or not positive."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _nominal_spacing(get) -> float | None:
    """SpacingBetweenSlices, else SliceThickness, from a keyword -> value lookup."""
    return _positive(get("SpacingBetweenSlices")) or _positive(get("SliceThickness"))


def _single_frame_plane(ds: Dataset, path: Path) -> _Plane:
    where = str(path)
    return _Plane(
        file=path,
        frame=None,
        series_uid=str(_require(ds, "SeriesInstanceUID", where)),
        instance_number=int(ds.get("InstanceNumber") or 0),
        rows=int(_require(ds, "Rows", where)),
        cols=int(_require(ds, "Columns", where)),
        orientation=_floats(_require(ds, "ImageOrientationPatient", where), 6, "ImageOrientationPatient", where),
        position=_floats(_require(ds, "ImagePositionPatient", where), 3, "ImagePositionPatient", where),
        pixel_spacing=_floats(_require(ds, "PixelSpacing", where), 2, "PixelSpacing", where),
        slope=float(_require(ds, "RescaleSlope", where)),
        intercept=float(_require(ds, "RescaleIntercept", where)),
        nominal_spacing=_nominal_spacing(ds.get),
    )


def _optional_frame_value(ds: Dataset, frame_groups: Dataset, group: str, keyword: str):
    """Per-frame functional group first, then the shared one: the enhanced-CT lookup order; None if neither."""
    for groups in (frame_groups, (ds.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]):
        items = groups.get(group)
        if items and items[0].get(keyword) not in (None, ""):
            return items[0].get(keyword)
    return None


def _frame_group_value(ds: Dataset, frame_groups: Dataset, group: str, keyword: str, where: str):
    value = _optional_frame_value(ds, frame_groups, group, keyword)
    if value is None:
        raise DicomSeriesError(f"{where}: no {group} > {keyword} in the per-frame or shared functional groups")
    return value


def _multi_frame_planes(ds: Dataset, path: Path) -> list[_Plane]:
    where = str(path)
    n_frames = int(_require(ds, "NumberOfFrames", where))
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if len(per_frame) != n_frames:
        raise DicomSeriesError(
            f"{where}: PerFrameFunctionalGroupsSequence has {len(per_frame)} items for {n_frames} frames"
        )
    series_uid = str(_require(ds, "SeriesInstanceUID", where))
    rows, cols = int(_require(ds, "Rows", where)), int(_require(ds, "Columns", where))
    planes = []
    for frame, groups in enumerate(per_frame):
        frame_where = f"{where} (frame {frame + 1})"
        value = partial(_frame_group_value, ds, groups, where=frame_where)
        planes.append(
            _Plane(
                file=path,
                frame=frame,
                series_uid=series_uid,
                instance_number=frame + 1,
                rows=rows,
                cols=cols,
                orientation=_floats(
                    value("PlaneOrientationSequence", "ImageOrientationPatient"), 6, "ImageOrientationPatient",
                    frame_where,
                ),
                position=_floats(
                    value("PlanePositionSequence", "ImagePositionPatient"), 3, "ImagePositionPatient", frame_where
                ),
                pixel_spacing=_floats(value("PixelMeasuresSequence", "PixelSpacing"), 2, "PixelSpacing", frame_where),
                slope=float(value("PixelValueTransformationSequence", "RescaleSlope")),
                intercept=float(value("PixelValueTransformationSequence", "RescaleIntercept")),
                nominal_spacing=_nominal_spacing(
                    partial(_optional_frame_value, ds, groups, "PixelMeasuresSequence")),
            )
        )
    return planes


def _planes_of(ds: Dataset, path: Path) -> list[_Plane]:
    """The CT image planes in ``ds``; none (with a warning) for DICOM that is not a CT image."""
    sop_class = ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID")
    if not sop_class:
        raise DicomSeriesError(f"{path}: no SOP Class UID, so not a complete DICOM image (truncated?)")
    if not UID(sop_class).is_valid:
        raise DicomSeriesError(f"{path}: SOP Class UID {str(sop_class)!r} is not a valid UID (truncated or corrupt)")
    if sop_class in SINGLE_FRAME_CT:
        return [_single_frame_plane(ds, path)]
    if sop_class in MULTI_FRAME_CT:
        return _multi_frame_planes(ds, path)
    name = getattr(sop_class, "name", sop_class)
    log.warning("%s: skipped, not a CT image (SOP class %s, modality %s)", path, name, ds.get("Modality", "?"))
    return []


def _order_planes(planes: list[_Plane], source: Path) -> tuple[list[_Plane], np.ndarray]:
    """Planes sorted along the slice normal, after checking they form one gap-free series."""
    if not planes:
        raise DicomSeriesError(f"{source}: no CT image files found")
    first = planes[0]
    by_series = {p.series_uid: p for p in planes}
    if len(by_series) > 1:
        listing = "; ".join(f"{uid} (e.g. {p.file})" for uid, p in by_series.items())
        raise DicomSeriesError(f"{source}: mixes {len(by_series)} SeriesInstanceUIDs: {listing}")
    for plane in planes[1:]:
        if (plane.rows, plane.cols) != (first.rows, first.cols):
            raise DicomSeriesError(
                f"{source}: {plane.label} is {plane.rows}x{plane.cols} but {first.label} is {first.rows}x{first.cols}"
            )
        if not np.allclose(plane.orientation, first.orientation, atol=ORIENTATION_TOLERANCE):
            raise DicomSeriesError(
                f"{source}: {plane.label} has ImageOrientationPatient {plane.orientation}, "
                f"{first.label} has {first.orientation}"
            )
        if not np.allclose(plane.pixel_spacing, first.pixel_spacing, rtol=1e-4):
            raise DicomSeriesError(
                f"{source}: {plane.label} has PixelSpacing {plane.pixel_spacing}, "
                f"{first.label} has {first.pixel_spacing}"
            )

    normal = np.cross(first.orientation[:3], first.orientation[3:])
    positions = np.array([np.dot(p.position, normal) for p in planes])
    order = np.argsort(positions, kind="stable")
    planes = [planes[i] for i in order]
    positions = positions[order]

    steps = np.diff(positions)
    duplicates = np.flatnonzero(steps < SAME_POSITION_MM)
    if len(duplicates):
        k = duplicates[0]
        raise DicomSeriesError(
            f"{source}: {planes[k].label} and {planes[k + 1].label} are both at position {positions[k]:.3f} mm"
        )
    median = _median_spacing(positions)
    gaps = np.flatnonzero(steps > GAP_FACTOR * median)
    if len(gaps):
        k = gaps[0]
        raise DicomSeriesError(
            f"{source}: missing slice between positions {positions[k]:.3f} mm and {positions[k + 1]:.3f} mm "
            f"(gap {steps[k]:.3f} mm, median spacing {median:.3f} mm) next to {planes[k].label} and "
            f"{planes[k + 1].label}"
        )
    _check_instance_numbers_and_spacing(planes, positions, median, source)
    return planes, positions


def _listing(missing: list[str]) -> str:
    shown = ", ".join(missing[:LISTED_POSITIONS])
    return shown + (f" and {len(missing) - LISTED_POSITIONS} more" if len(missing) > LISTED_POSITIONS else "")


def _check_instance_numbers_and_spacing(planes: list[_Plane], positions: np.ndarray, median: float,
                                        source: Path) -> None:
    """Slices missing at a regular stride, which the median spacing cannot see (module docstring)."""
    numbers = np.array([p.instance_number for p in planes])
    steps = np.diff(numbers)
    if len(planes) > 1 and (numbers > 0).all() and ((steps > 0).all() or (steps < 0).all()):
        jumps = np.flatnonzero(np.abs(steps) > 1)
        missing = [f"{n} at {positions[k] + (positions[k + 1] - positions[k]) * j / abs(steps[k]):.3f} mm"
                   for k in jumps for j, n in enumerate(range(numbers[k], numbers[k + 1], np.sign(steps[k])))
                   if j > 0]
        if missing:
            k = jumps[0]
            raise DicomSeriesError(
                f"{source}: {len(missing)} slice(s) missing by InstanceNumber: {_listing(missing)}; e.g. "
                f"{planes[k].label} (InstanceNumber {numbers[k]}) and {planes[k + 1].label} (InstanceNumber "
                f"{numbers[k + 1]}) are neighbours {positions[k + 1] - positions[k]:.3f} mm apart")
        return  # numbered without a gap: a spacing beyond the nominal one is the protocol's own gap
    nominal = planes[0].nominal_spacing
    if nominal is None or not median > GAP_FACTOR * nominal:
        return
    missing = [f"{positions[k] + step * j / round(step / nominal):.3f} mm"
               for k, step in enumerate(np.diff(positions)) for j in range(1, round(step / nominal))]
    raise DicomSeriesError(
        f"{source}: slices are {median:.3f} mm apart but their nominal spacing (SpacingBetweenSlices, else "
        f"SliceThickness) is {nominal:.3f} mm: {len(missing)} slice(s) missing, at {_listing(missing)}")


def _median_spacing(positions: np.ndarray) -> float:
    """NaN for a one-slice series: it has no spacing to measure."""
    return float(np.median(np.diff(positions))) if len(positions) > 1 else float("nan")


def _series_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _decode(ds: Dataset, path: Path) -> np.ndarray:
    """Stored pixel values as (frames, rows, cols), whatever the transfer syntax."""
    try:
        pixels = ds.pixel_array
    except Exception as err:  # decoders raise their own types; the file is what the user needs to know
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown transfer syntax")
        raise DicomSeriesError(
            f"{path}: cannot decode pixel data ({getattr(syntax, 'name', syntax)}; corrupt or truncated?): {err}"
        ) from err
    return pixels.reshape((-1, *pixels.shape[-2:]))


def read_ct_series(path: str | Path) -> CTVolume:
    """Read a folder of single-slice CT files, or one (enhanced) multi-frame CT file, as HU.

    Only files directly inside the folder are read; subfolders belong to other series.
    """
    source = Path(path)
    if source.is_dir():
        files = _series_files(source)
        if not files:
            raise DicomSeriesError(f"{source}: empty folder, no DICOM files")
    elif source.is_file():
        files = [source]
    else:
        raise DicomSeriesError(f"{source}: no such file or folder")

    datasets = {}
    planes = []
    for file in files:
        with _library_warnings_logged(file):
            ds = _read_dataset(file, headers_only=False)
            file_planes = _planes_of(ds, file)
        if file_planes:
            datasets[file] = ds
            planes.extend(file_planes)
    planes, positions = _order_planes(planes, source)

    decoded = {}
    for file, ds in datasets.items():
        with _library_warnings_logged(file):
            decoded[file] = _decode(ds, file)
    first = planes[0]
    hu = np.empty((len(planes), first.rows, first.cols), dtype=np.float32)
    for z, plane in enumerate(planes):
        frames = decoded[plane.file]
        frame = plane.frame or 0
        if frames.shape[1:] != (plane.rows, plane.cols) or frame >= len(frames):
            raise DicomSeriesError(
                f"{plane.label}: decoded pixel data has shape {frames.shape}, header says "
                f"{plane.rows}x{plane.cols} with frame {frame + 1}"
            )
        hu[z] = frames[frame].astype(np.float64) * plane.slope + plane.intercept

    return CTVolume(
        hu=hu,
        pixel_spacing=first.pixel_spacing,
        slice_positions=positions,
        slice_spacing=_median_spacing(positions),
        series_instance_uid=first.series_uid,
        instance_numbers=tuple(p.instance_number for p in planes),
        source=source,
        slice_files=tuple(p.file for p in planes),
    )


def _walk_files(root: Path) -> Iterable[Path]:
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith("."):
                yield Path(folder) / name


def index_series(dicom_root: str | Path, *, progress: bool = True) -> pd.DataFrame:
    """One row per CT series under ``dicom_root`` (contract section 2), from headers only.

    ``path`` is the series folder, or the file for a multi-frame series, joined onto
    ``dicom_root`` as given (relative stays relative). A folder must hold one series only,
    because ``read_ct_series`` reads whole folders.
    """
    root = Path(dicom_root)
    if not root.is_dir():
        raise DicomSeriesError(f"{root}: DICOM root folder does not exist")
    files = list(_walk_files(root))
    planes_by_series: dict[str, list[_Plane]] = defaultdict(list)
    series_in_folder: dict[Path, set[str]] = defaultdict(set)
    for file in progress_bar(files, desc="Indexing DICOM headers", unit="file", disable=not progress):
        with _library_warnings_logged(file):
            file_planes = _planes_of(_read_dataset(file, headers_only=True), file)
        for plane in file_planes:
            planes_by_series[plane.series_uid].append(plane)
            series_in_folder[file.parent].add(plane.series_uid)
    if not planes_by_series:
        raise DicomSeriesError(f"{root}: no CT series found ({len(files)} files looked at)")

    rows = []
    for uid, planes in planes_by_series.items():
        series_files = {p.file for p in planes}
        folders = {f.parent for f in series_files}
        if len(folders) > 1:
            raise DicomSeriesError(f"series {uid} is split over folders {sorted(map(str, folders))}")
        (folder,) = folders
        single_multiframe = len(series_files) == 1 and planes[0].frame is not None
        path = next(iter(series_files)) if single_multiframe else folder
        if not single_multiframe and len(series_in_folder[folder]) > 1:
            raise DicomSeriesError(
                f"{folder}: holds files of several series ({sorted(series_in_folder[folder])}); "
                "one folder per single-frame series is required"
            )
        ordered, positions = _order_planes(planes, path)
        rows.append(
            {
                "series_instance_uid": uid,
                "path": str(path),
                "n_slices": len(ordered),
                "rows": ordered[0].rows,
                "cols": ordered[0].cols,
                "pixel_spacing_row": ordered[0].pixel_spacing[0],
                "pixel_spacing_col": ordered[0].pixel_spacing[1],
                "slice_spacing": _median_spacing(positions),
            }
        )
    return pd.DataFrame(rows, columns=SERIES_INDEX_COLUMNS).sort_values("path", ignore_index=True)
