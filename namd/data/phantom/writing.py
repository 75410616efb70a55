"""Writing: each participant's DICOM series, then the CSV tables; the entry point ``write_phantom_cohort``."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from pydicom.uid import ExplicitVRLittleEndian
from scipy import ndimage

from namd.data.dicom_write import derived_uid, write_ct_series
from namd.data.phantom.cohort_draw import Participant, draw_cohort
from namd.data.phantom.constants import (
    LOCATION_COLUMNS,
    MAX_SHIFT_PX,
    PRSN_COLUMNS,
    SCTABN_COLUMNS,
    SCTABNC_COLUMNS,
    TRUTH_COLUMNS,
)
from namd.data.phantom.images import ScanGeometry, build_anatomy, draw_shape, place_nodules, render_nodule
from namd.data.phantom.tables import _abnormality_rows, _prsn_row
from namd.progress import progress_bar


def _render_participant(
    participant: Participant,
    out_dir: Path,
    geometry: ScanGeometry,
    *,
    seed: int,
    noise_hu: float,
    fov_padding_hu: float | None,
    extra_series_fraction: float,
    transfer_syntax_uid: str,
) -> dict:
    """Write every screen's series; return nodule locations keyed by (nodule_id, study_yr)."""
    rng = np.random.default_rng([seed, participant.pid])
    anatomy = build_anatomy(rng, geometry, bool(participant.diagemph), participant.findings)
    centres = place_nodules(rng, anatomy, geometry, participant.nodules)
    shapes = [draw_shape(rng) for _ in participant.nodules]
    n_z = geometry.n_slices
    axes = geometry.axes_mm(n_z)
    fov_radius = geometry.matrix * geometry.pixel_spacing_mm / 2.0
    outside_fov = np.broadcast_to(
        axes[1] ** 2 + axes[2] ** 2 > fov_radius**2, (n_z, geometry.matrix, geometry.matrix)
    )
    anatomy_z0 = -150.0 + rng.uniform(-30.0, 30.0)
    study_description = "CT CHEST LOW DOSE SCREENING"
    located = {}
    for screen in participant.screens:
        dz = int(rng.choice([-1, 0, 0, 1])) if geometry.z_pad else 0
        shift_px = rng.integers(-MAX_SHIFT_PX, MAX_SHIFT_PX + 1, 2)
        shift_mm = shift_px * geometry.pixel_spacing_mm
        first = geometry.z_pad + dz
        padded = np.pad(
            anatomy.hu[first : first + n_z], ((0, 0), (MAX_SHIFT_PX,) * 2, (MAX_SHIFT_PX,) * 2), mode="edge"
        )
        row0, col0 = MAX_SHIFT_PX - shift_px
        volume = padded[:, row0 : row0 + geometry.matrix, col0 : col0 + geometry.matrix].copy()
        for nodule, centre, shape in zip(participant.nodules, centres, shapes, strict=True):
            if screen not in nodule.screens:
                continue
            screen_centre = centre - [first * geometry.slice_thickness_mm, -shift_mm[0], -shift_mm[1]]
            render_nodule(rng, volume, axes, screen_centre, nodule.screens[screen], shape, nodule.solid_hu)
            slice_index = int(round(screen_centre[0] / geometry.slice_thickness_mm))
            located[(nodule.nodule_id, screen)] = {
                "row": int(round(screen_centre[1] / geometry.pixel_spacing_mm + (geometry.matrix - 1) / 2.0)),
                "col": int(round(screen_centre[2] / geometry.pixel_spacing_mm + (geometry.matrix - 1) / 2.0)),
                "slice_index": slice_index,
                "instance_number": n_z - slice_index,
            }
        study_uid = derived_uid("namd-phantom", seed, participant.pid, screen, "study")
        kernels = [("STANDARD", 1.0)] + ([("LUNG", 1.6)] if rng.random() < extra_series_fraction else [])
        for kernel, sharpness in kernels:
            # Reconstruction-correlated low-dose noise; the sharp LUNG kernel adds fine-grained noise.
            white = rng.standard_normal(volume.shape, dtype=np.float32)
            correlated = ndimage.gaussian_filter(white, (0.0, 1.0, 1.0))
            image = volume + noise_hu * (correlated / correlated.std() + (sharpness - 1.0) * white)
            image = np.maximum(image, -1024.0)
            if fov_padding_hu is not None:
                image[outside_fov] = fov_padding_hu
            series_uid = derived_uid("namd-phantom", seed, participant.pid, screen, kernel)
            z_top = anatomy_z0 + (first + n_z - 1) * geometry.slice_thickness_mm
            write_ct_series(
                image[::-1],
                out_dir / "dicom" / str(participant.pid) / f"T{screen}" / series_uid,
                pixel_spacing=geometry.pixel_spacing_mm,
                slice_thickness=geometry.slice_thickness_mm,
                slice_increment=-geometry.slice_thickness_mm,
                origin=(
                    -fov_radius + geometry.pixel_spacing_mm / 2,
                    -fov_radius + geometry.pixel_spacing_mm / 2,
                    z_top,
                ),
                patient_id=str(participant.pid),
                study_instance_uid=study_uid,
                series_instance_uid=series_uid,
                study_description=study_description,
                series_description=f"{geometry.slice_thickness_mm:g}mm {kernel}",
                transfer_syntax_uid=transfer_syntax_uid,
            )
            if kernel == "STANDARD":
                for key in located:
                    if key[1] == screen:
                        located[key]["series_instance_uid"] = series_uid
    return located


def write_phantom_cohort(
    out_dir: str | Path,
    *,
    n_participants: int = 180,
    seed: int = 0,
    missing_fraction: float = 0.03,
    unconfirmed_fraction: float = 0.03,
    matrix: int = 176,
    pixel_spacing_mm: float = 1.6,
    n_slices: int = 12,
    slice_thickness_mm: float = 2.5,
    noise_hu: float = 30.0,
    fov_padding_hu: float | None = -2000.0,
    extra_series_fraction: float = 0.05,
    transfer_syntax_uid: str = ExplicitVRLittleEndian,
    workers: int = 1,
    progress: bool = True,
    **cohort_options: float | tuple[float, ...],
) -> dict:
    """Write the phantom cohort into ``out_dir`` (NLST layout + phantom_truth.csv); return a summary.

    ``cohort_options`` are :func:`draw_cohort`'s keyword arguments (prevalence, attendance, growth).

    Same arguments give byte-identical CSVs and identical pixel data, whatever ``workers`` is:
    each participant's images come from its own generator seeded by (seed, pid).
    """
    if seed < 0 or workers < 1:
        raise ValueError(f"seed must be >= 0 and workers >= 1, got seed={seed}, workers={workers}")
    for name, value in (
        ("missing_fraction", missing_fraction),
        ("unconfirmed_fraction", unconfirmed_fraction),
        ("extra_series_fraction", extra_series_fraction),
    ):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    if matrix < 64 or n_slices < 6:
        raise ValueError(
            f"matrix must be >= 64 and n_slices >= 6 to hold a chest slab, got {matrix} and {n_slices}"
        )
    out_dir = Path(out_dir)
    if (out_dir / "dicom").exists() and any((out_dir / "dicom").iterdir()):
        raise FileExistsError(
            f"{out_dir / 'dicom'} already holds series; remove it or choose another out_dir"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    geometry = ScanGeometry(
        matrix=matrix,
        pixel_spacing_mm=pixel_spacing_mm,
        n_slices=n_slices,
        slice_thickness_mm=slice_thickness_mm,
    )
    participants = draw_cohort(n_participants, seed, **cohort_options)
    table_rng = np.random.default_rng([seed, 0xC5F])
    tables = {"prsn": [], "sctabn": [], "sctabnc": [], "locations": [], "truth": []}
    render = partial(
        _render_participant,
        out_dir=out_dir,
        geometry=geometry,
        seed=seed,
        noise_hu=noise_hu,
        fov_padding_hu=fov_padding_hu,
        extra_series_fraction=extra_series_fraction,
        transfer_syntax_uid=transfer_syntax_uid,
    )
    with ProcessPoolExecutor(workers) if workers > 1 else nullcontext() as pool:
        rendered = pool.map(render, participants, chunksize=4) if pool else map(render, participants)
        locations_by_participant = list(
            progress_bar(rendered, total=len(participants), desc="phantom participants", disable=not progress)
        )
    for participant, located in zip(participants, locations_by_participant, strict=True):
        if table_rng.random() < unconfirmed_fraction:
            participant.conflc, participant.can_scr = int(table_rng.choice([3, 4])), 0
        tables["prsn"].append(_prsn_row(table_rng, participant, missing_fraction))
        sctabn, sctabnc, locations, truth = _abnormality_rows(
            table_rng, participant, located, missing_fraction
        )
        tables["sctabn"] += sctabn
        tables["sctabnc"] += sctabnc
        tables["locations"] += locations
        tables["truth"] += truth

    files = {
        "nlst_prsn.csv": (tables["prsn"], PRSN_COLUMNS),
        "nlst_sctabn.csv": (tables["sctabn"], SCTABN_COLUMNS),
        "nlst_sctabnc.csv": (tables["sctabnc"], SCTABNC_COLUMNS),
        "nodule_locations.csv": (tables["locations"], LOCATION_COLUMNS),
        "phantom_truth.csv": (tables["truth"], TRUTH_COLUMNS),
    }
    for name, (rows, columns) in files.items():
        pd.DataFrame(rows, columns=columns, dtype=object).to_csv(out_dir / name, index=False)

    truth = pd.DataFrame(tables["truth"], columns=TRUTH_COLUMNS)
    per_nodule = truth.drop_duplicates(["pid", "nodule_id"])
    screens_seen = truth.groupby(["pid", "nodule_id"])["study_yr"].apply(set)
    dicom_files = list((out_dir / "dicom").rglob("*.dcm"))
    return {
        "participants": len(participants),
        "nodules": len(per_nodule),
        "malignant_nodules": int(per_nodule["malignant"].sum()),
        "malignant_fraction": float(per_nodule["malignant"].mean()) if len(per_nodule) else 0.0,
        "t0_t1_pairs": int(sum({0, 1} <= s for s in screens_seen)),
        "series": len({p.parent for p in dicom_files}),
        "files": len(dicom_files) + len(files),
        "bytes": sum(p.stat().st_size for p in dicom_files)
        + sum((out_dir / n).stat().st_size for n in files),
    }
