"""Write a HU volume as an axial CT series, one CT Image Storage file per slice.

Used by the phantom cohort and by tests of the DICOM reader, so the files must look like what a
scanner (NLST via TCIA) delivers: file meta + preamble, rescale slope/intercept, geometry tags.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

#: Axial slices: rows run along +y, columns along +x, slice normal +z.
AXIAL_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def derived_uid(*parts: object) -> UID:
    """A valid UID that is a pure function of ``parts``, so reruns write byte-identical files."""
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _spacing_pair(pixel_spacing: float | Sequence[float]) -> tuple[float, float]:
    pair = (float(pixel_spacing),) * 2 if np.isscalar(pixel_spacing) else tuple(map(float, pixel_spacing))
    if len(pair) != 2 or min(pair) <= 0:
        raise ValueError(
            f"pixel_spacing must be one positive number or (row, col) pair, got {pixel_spacing!r}"
        )
    return pair


def _stored_values(hu: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """HU -> stored integers; signed only when needed, clipped to the integer type like a scanner."""
    stored = np.rint((hu - intercept) / slope)
    dtype = np.int16 if stored.min() < 0 else np.uint16
    limits = np.iinfo(dtype)
    return np.clip(stored, limits.min, limits.max).astype(dtype)


def write_ct_series(
    hu: np.ndarray,
    folder: str | Path,
    *,
    pixel_spacing: float | Sequence[float],
    slice_thickness: float,
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    patient_id: str,
    study_instance_uid: str,
    series_instance_uid: str,
    rescale_slope: float = 1.0,
    rescale_intercept: float = -1024.0,
    study_description: str = "",
    series_description: str = "",
    transfer_syntax_uid: str = ExplicitVRLittleEndian,
    slice_increment: float | None = None,
) -> list[Path]:
    """Write ``hu`` (Z, Y, X) as ``folder/0001.dcm ...``; slice k sits at origin + k * slice_increment
    along +z (default increment: slice_thickness) and has InstanceNumber k + 1. A negative increment
    numbers slices head-first, as most scanners do. Returns the paths in slice order.

    HU outside what the stored integer type can hold after rescaling is clipped, as scanners do.
    SOP instance and frame-of-reference UIDs derive from the series UID, so output is reproducible.
    """
    hu = np.asarray(hu, dtype=np.float64)
    if hu.ndim != 3 or 0 in hu.shape:
        raise ValueError(f"hu must be a non-empty (Z, Y, X) array, got shape {hu.shape} for {folder}")
    if not np.isfinite(hu).all():
        raise ValueError(
            f"hu has NaN or infinite values; cannot write series {series_instance_uid} to {folder}"
        )
    if rescale_slope <= 0:
        raise ValueError(f"rescale_slope must be positive, got {rescale_slope}")
    if slice_thickness <= 0:
        raise ValueError(f"slice_thickness must be positive, got {slice_thickness}")
    increment = float(slice_thickness if slice_increment is None else slice_increment)
    if increment == 0:
        raise ValueError("slice_increment must be non-zero: slices would share one position")
    row_spacing, col_spacing = _spacing_pair(pixel_spacing)
    transfer_syntax = UID(transfer_syntax_uid)
    stored = _stored_values(hu, rescale_slope, rescale_intercept)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = CTImageStorage
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Manufacturer = "NAMD phantom"
    ds.PatientName = f"Phantom^{patient_id}"
    ds.PatientID = str(patient_id)
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = study_description
    ds.SeriesDescription = series_description
    ds.StudyInstanceUID = study_instance_uid
    ds.SeriesInstanceUID = series_instance_uid
    ds.FrameOfReferenceUID = derived_uid(series_instance_uid, "frame-of-reference")
    ds.PositionReferenceIndicator = ""
    ds.SeriesNumber = 1
    ds.ImageOrientationPatient = list(AXIAL_ORIENTATION)
    ds.SliceThickness = float(slice_thickness)
    ds.PixelSpacing = [row_spacing, col_spacing]
    ds.RescaleIntercept = float(rescale_intercept)
    ds.RescaleSlope = float(rescale_slope)
    ds.RescaleType = "HU"
    ds.WindowCenter = -600
    ds.WindowWidth = 1500

    paths = []
    for k, pixels in enumerate(stored):
        # Only the per-slice elements change; rebuilding the whole dataset per file costs more than the write.
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = derived_uid(series_instance_uid, k)
        ds.InstanceNumber = k + 1
        z = float(origin[2]) + k * increment
        ds.ImagePositionPatient = [float(origin[0]), float(origin[1]), z]
        ds.SliceLocation = z
        ds.set_pixel_data(pixels, "MONOCHROME2", 16, generate_instance_uid=False)
        if transfer_syntax.is_compressed:
            ds.compress(transfer_syntax, generate_instance_uid=False)
        else:
            ds.file_meta.TransferSyntaxUID = transfer_syntax

        path = folder / f"{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
