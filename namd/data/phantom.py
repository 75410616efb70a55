"""The embedded default cohort: a deterministic phantom delivered exactly like NLST.

NLST cannot be shipped, so this module writes a cohort in NLST's own layout (section 1 of
docs/data-contracts.md): the prsn / sctabn / sctabnc CSVs with NLST's column names and codes
(missing codes included), a research-group nodule-location table, and one CT series of real DICOM
files per participant and screen. Everything after cohort selection cannot tell it from NLST.

The biology is chosen so the science has a signal to find:

* Malignancy per nodule is drawn from the Brock University (PanCan) full logistic model
  (`namd.data.brock`: McWilliams et al., NEJM 2013, full model with spiculation), with the
  intercept re-fitted so that the malignant fraction of the simulated nodules equals
  ``target_malignant_fraction`` (NLST-derived cohorts are enriched compared with PanCan's ~5 %).

* Growth follows a volume-doubling time (VDT): malignant nodules double in ~100-400 days (slower
  when ground-glass), gain solid component and tend to turn spiculated or poorly defined; benign
  nodules are mostly stable, some shrink, and some (mostly ground-glass) resolve. So the baseline
  record carries the Brock signal and the follow-up image carries more.

* Images are low-dose axial chest sections in HU (body wall, fat, mediastinum, spine, ribs, table,
  lungs with vessel trees and emphysema) with the participant's nodules rendered as 3-D blobs.
  Each participant keeps one anatomy across screens; every screen has its own noise and a small
  patient shift. Slices are numbered head-first like a scanner, so InstanceNumber is not the
  position-sorted index.

Lobes are a simplification: the scanned slab is one short stretch of chest, and lobes are assigned
by anterior-posterior position within each lung (upper anterior, lower posterior).
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from pydicom.uid import ExplicitVRLittleEndian
from scipy import ndimage, optimize, special

from namd.data.brock import GROUND_GLASS, PART_SOLID, SOLID, UPPER_LOBES, brock_linear_predictor
from namd.data.dicom_write import derived_uid, write_ct_series
from namd.progress import progress_bar

SPICULATED, SMOOTH, POORLY_DEFINED = 1, 2, 3
NODULE, MICRONODULE, CALCIFIED_NODULE = 51, 52, 53
OTHER_FINDINGS = tuple(range(54, 66))
MAX_SHIFT_PX = 3  # patient repositioning between screens
RIGHT_LOBES = (1, 2, 3)
LOBE_PROBABILITIES = {1: 0.28, 2: 0.08, 3: 0.19, 4: 0.23, 5: 0.05, 6: 0.17}
CANCER_LOCATION_COLUMNS = {1: "locrup", 2: "locrmid", 3: "locrlow", 4: "loclup", 5: "loclin", 6: "locllow"}
FAMILY_COLUMNS = ("famfather", "fammother", "fambrother", "famsister", "famchild")
FAMILY_PREVALENCE = (0.14, 0.07, 0.08, 0.05, 0.02)

PRSN_COLUMNS = [
    "pid",
    "age",
    "gender",
    "diagemph",
    *FAMILY_COLUMNS,
    "cigsmok",
    "pkyr",
    "can_scr",
    "conflc",
    "cancyr",
    "candx_days",
    "scr_days0",
    "scr_days1",
    "scr_days2",
    *CANCER_LOCATION_COLUMNS.values(),
]
SCTABN_COLUMNS = [
    "pid",
    "study_yr",
    "sct_ab_num",
    "sct_ab_desc",
    "sct_pre_att",
    "sct_epi_loc",
    "sct_long_dia",
    "sct_perp_dia",
    "sct_margins",
    "sct_slice_num",
    "sct_found_after_comp",
]
SCTABNC_COLUMNS = [
    "pid",
    "study_yr",
    "sct_ab_num",
    "sct_ab_preexist",
    "sct_ab_gwth",
    "sct_ab_attn",
    "sct_ab_invg",
    "visible_days",
]
LOCATION_COLUMNS = [
    "pid",
    "study_yr",
    "sct_ab_num",
    "nodule_id",
    "series_instance_uid",
    "row",
    "col",
    "slice_index",
]
TRUTH_COLUMNS = [
    "pid",
    "nodule_id",
    "study_yr",
    "sct_ab_num",
    "malignant",
    "brock_risk",
    "vdt_days",
    "first_screen",
    "long_dia_mm",
    "perp_dia_mm",
    "attenuation",
    "margins",
    "core_fraction",
    "lobe",
    "juxtapleural",
    "series_instance_uid",
    "row",
    "col",
    "slice_index",
]


# ----------------------------------------------------------------------------- risk model


def calibrated_intercept(linear_predictor: np.ndarray, target_fraction: float) -> float:
    """Intercept that makes the mean Brock risk of these nodules equal ``target_fraction``."""
    if not 0.0 < target_fraction < 1.0:
        raise ValueError(f"target_malignant_fraction must be in (0, 1), got {target_fraction}")
    lp = np.asarray(linear_predictor, dtype=float)
    return float(optimize.brentq(lambda b: special.expit(lp + b).mean() - target_fraction, -40.0, 40.0))


# ----------------------------------------------------------------------------- cohort draw


@dataclass
class NoduleScreen:
    """What a nodule truly looks like at one screen."""

    long_dia_mm: float
    perp_dia_mm: float
    attenuation: int
    margins: int
    core_fraction: float
    ggo_hu: float


@dataclass
class Nodule:
    nodule_id: str
    lobe: int
    attenuation: int
    margins: int
    long_dia_mm: float
    axis_ratio: float
    core_fraction: float
    first_screen: int
    juxtapleural: bool
    solid_hu: float
    ggo_hu: float
    resolves: bool
    malignant: bool = False
    brock_risk: float = 0.0
    vdt_days: float = np.inf
    screens: dict[int, NoduleScreen] = field(default_factory=dict)


@dataclass
class Finding:
    """A non-nodule abnormality row (micronodule, calcified nodule, other finding)."""

    desc: int
    screens: list[int]
    radius_mm: float = 0.0
    hu: float = 0.0


@dataclass
class Participant:
    pid: int
    age: int
    gender: int
    cigsmok: int
    pkyr: float
    diagemph: int
    family: tuple[int, ...]
    scr_days: dict[int, int]
    nodules: list[Nodule] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    can_scr: int = 0
    conflc: int = 0
    cancyr: int | None = None
    candx_days: int | None = None
    cancer_lobes: set[int] = field(default_factory=set)

    @property
    def screens(self) -> list[int]:
        return sorted(self.scr_days)


def _draw_participant(
    rng: np.random.Generator, pid: int, t1_attendance: float, t2_fraction: float
) -> Participant:
    ages = np.arange(55, 75)
    age_weights = np.exp(-(ages - 55) / 8.0)
    scr_days = {0: int(rng.integers(0, 45))}
    if rng.random() < t1_attendance:
        scr_days[1] = scr_days[0] + 365 + int(rng.integers(-20, 60))
        if rng.random() < t2_fraction:
            scr_days[2] = scr_days[1] + 365 + int(rng.integers(-20, 60))
    return Participant(
        pid=pid,
        age=int(rng.choice(ages, p=age_weights / age_weights.sum())),
        gender=1 if rng.random() < 0.59 else 2,
        cigsmok=int(rng.random() < 0.48),
        pkyr=round(30.0 + float(rng.gamma(1.6, 14.0)), 1),
        diagemph=int(rng.random() < 0.08),
        family=tuple(int(rng.random() < p) for p in FAMILY_PREVALENCE),
        scr_days=scr_days,
    )


def _draw_nodule(rng: np.random.Generator, nodule_id: str, first_screen: int) -> Nodule:
    """Screening-nodule morphology at first sight: mostly small and solid, upper-lobe biased."""
    attenuation = int(rng.choice([SOLID, GROUND_GLASS, PART_SOLID], p=[0.75, 0.15, 0.10]))
    median_excess_mm = {SOLID: 2.5, GROUND_GLASS: 4.5, PART_SOLID: 6.0}[attenuation]
    long_dia = float(min(30.0, 4.0 + rng.lognormal(np.log(median_excess_mm), 0.8)))
    size_factor = np.clip((long_dia - 4.0) / 16.0, 0.0, 1.0)
    p_spiculated = 0.04 + 0.2 * size_factor if attenuation != GROUND_GLASS else 0.01
    p_poorly = 0.35 if attenuation == GROUND_GLASS else 0.1
    margins = int(
        rng.choice(
            [SPICULATED, POORLY_DEFINED, SMOOTH], p=[p_spiculated, p_poorly, 1 - p_spiculated - p_poorly]
        )
    )
    lobes = list(LOBE_PROBABILITIES)
    return Nodule(
        nodule_id=nodule_id,
        lobe=int(rng.choice(lobes, p=list(LOBE_PROBABILITIES.values()))),
        attenuation=attenuation,
        margins=margins,
        long_dia_mm=long_dia,
        axis_ratio=float(rng.uniform(0.65, 1.0)),
        core_fraction=float(rng.uniform(0.3, 0.6)) if attenuation == PART_SOLID else 0.0,
        first_screen=first_screen,
        juxtapleural=bool(rng.random() < 0.15),
        solid_hu=float(rng.uniform(20.0, 60.0)),
        ggo_hu=float(rng.uniform(-620.0, -420.0)),
        resolves=bool(rng.random() < (0.3 if attenuation == GROUND_GLASS else 0.04)),
    )


def _draw_vdt(rng: np.random.Generator, nodule: Nodule, malignant_vdt_days: float) -> float:
    """Volume-doubling time in days; negative means shrinking, inf stable."""
    if nodule.malignant:
        slower = {SOLID: 1.0, PART_SOLID: 1.5, GROUND_GLASS: 2.2}[nodule.attenuation]
        return float(np.clip(rng.lognormal(np.log(malignant_vdt_days * slower), 0.3), 60.0, 900.0))
    kind = rng.random()
    if kind < 0.75:
        return np.inf
    if kind < 0.87:
        return float(rng.uniform(700.0, 1500.0))
    return -float(rng.uniform(150.0, 500.0))


def _evolve(rng: np.random.Generator, nodule: Nodule, participant: Participant) -> None:
    """Fill ``nodule.screens``: size by VDT, plus the attenuation/margin changes of malignancy."""
    start = participant.scr_days[nodule.first_screen]
    margins, attenuation, core, ggo_hu = (
        nodule.margins,
        nodule.attenuation,
        nodule.core_fraction,
        nodule.ggo_hu,
    )
    for screen in participant.screens:
        if screen < nodule.first_screen:
            continue
        if screen > nodule.first_screen and nodule.resolves and not nodule.malignant:
            break
        years = (participant.scr_days[screen] - start) / 365.25
        long_dia = nodule.long_dia_mm * 2.0 ** (
            (participant.scr_days[screen] - start) / (3.0 * nodule.vdt_days)
        )
        if long_dia < 3.0:
            break
        if screen > nodule.first_screen and nodule.malignant:
            if margins == SMOOTH:
                margins = int(rng.choice([SPICULATED, POORLY_DEFINED, SMOOTH], p=[0.45, 0.2, 0.35]))
            if attenuation == GROUND_GLASS and rng.random() < 0.5:
                attenuation, core = PART_SOLID, 0.35
            elif attenuation == PART_SOLID:
                core = min(1.0, core * 2.0 ** (365.25 / (1.5 * nodule.vdt_days)))
                if core >= 0.9:
                    attenuation, core = SOLID, 0.0
            ggo_hu = min(nodule.ggo_hu + 60.0 * years, -300.0)
        nodule.screens[screen] = NoduleScreen(
            long_dia_mm=float(long_dia),
            perp_dia_mm=float(long_dia * nodule.axis_ratio),
            attenuation=attenuation,
            margins=margins,
            core_fraction=core,
            ggo_hu=ggo_hu,
        )


def _assign_cancer(rng: np.random.Generator, participant: Participant, late_cancer_fraction: float) -> None:
    """NLST outcome fields: malignant nodules are diagnosed after the next screen (rarely at once)."""
    malignant = [n for n in participant.nodules if n.malignant]
    if malignant:
        first = min(n.first_screen for n in malignant)
        dx_screen = first + 1 if (first + 1 in participant.scr_days and rng.random() > 0.1) else first
        participant.scr_days = {s: d for s, d in participant.scr_days.items() if s <= dx_screen}
        participant.nodules = [n for n in participant.nodules if n.first_screen <= dx_screen]
        participant.can_scr, participant.conflc, participant.cancyr = 1, 1, dx_screen
        participant.candx_days = participant.scr_days[dx_screen] + int(rng.integers(20, 250))
        participant.cancer_lobes = {n.lobe for n in participant.nodules if n.malignant}
    elif rng.random() < late_cancer_fraction:
        participant.can_scr, participant.conflc = 4, 1
        participant.cancyr = int(rng.integers(4, 8))
        participant.candx_days = 365 * participant.cancyr + int(rng.integers(0, 300))
        participant.cancer_lobes = {int(rng.choice(list(LOBE_PROBABILITIES)))}
    elif any(n.long_dia_mm >= 8.0 for n in participant.nodules) and rng.random() < 0.5:
        participant.conflc = 2


def _draw_findings(rng: np.random.Generator, participant: Participant, mean_other_findings: float) -> None:
    screens = participant.screens
    for _ in range(int(rng.poisson(mean_other_findings))):
        desc = int(
            rng.choice([MICRONODULE, CALCIFIED_NODULE, int(rng.choice(OTHER_FINDINGS))], p=[0.45, 0.3, 0.25])
        )
        first = int(rng.choice(screens)) if rng.random() < 0.2 else screens[0]
        visible = [s for s in screens if s >= first]
        if desc == MICRONODULE:
            participant.findings.append(
                Finding(desc, visible, float(rng.uniform(0.9, 1.8)), float(rng.uniform(10, 50)))
            )
        elif desc == CALCIFIED_NODULE:
            participant.findings.append(
                Finding(desc, visible, float(rng.uniform(1.5, 3.0)), float(rng.uniform(250, 700)))
            )
        else:
            participant.findings.append(Finding(desc, visible))


def draw_cohort(
    n_participants: int = 180,
    seed: int = 0,
    *,
    target_malignant_fraction: float = 0.15,
    nodule_count_probabilities: tuple[float, ...] = (0.04, 0.33, 0.35, 0.28),
    t1_attendance: float = 0.93,
    t2_fraction: float = 0.2,
    new_nodule_fraction: float = 0.08,
    mean_other_findings: float = 0.8,
    malignant_vdt_days: float = 180.0,
    late_cancer_fraction: float = 0.02,
) -> list[Participant]:
    """Participants, nodules and outcomes (no images): the phantom's clinical truth."""
    if n_participants < 1:
        raise ValueError(f"n_participants must be >= 1, got {n_participants}")
    counts_p = np.asarray(nodule_count_probabilities, dtype=float)
    if counts_p.min() < 0 or not np.isclose(counts_p.sum(), 1.0):
        raise ValueError(
            f"nodule_count_probabilities must be non-negative and sum to 1, got {nodule_count_probabilities}"
        )
    rng = np.random.default_rng(seed)
    participants = []
    for i in range(n_participants):
        participant = _draw_participant(rng, 100001 + i, t1_attendance, t2_fraction)
        n_nodules = int(rng.choice(len(counts_p), p=counts_p))
        participant.nodules = [_draw_nodule(rng, f"N{j + 1}", 0) for j in range(n_nodules)]
        if 1 in participant.scr_days and rng.random() < new_nodule_fraction:
            participant.nodules.append(_draw_nodule(rng, f"N{n_nodules + 1}", 1))
        participants.append(participant)

    nodules = [(p, n) for p in participants for n in p.nodules]
    lp = brock_linear_predictor(
        age=[p.age for p, _ in nodules],
        female=[p.gender == 2 for p, _ in nodules],
        family_history=[any(p.family) for p, _ in nodules],
        emphysema=[p.diagemph for p, _ in nodules],
        diameter_mm=[n.long_dia_mm for _, n in nodules],
        attenuation=[n.attenuation for _, n in nodules],
        upper_lobe=[n.lobe in UPPER_LOBES for _, n in nodules],
        nodule_count=[len(p.nodules) for p, _ in nodules],
        spiculated=[n.margins == SPICULATED for _, n in nodules],
    )
    risk = special.expit(lp + calibrated_intercept(lp, target_malignant_fraction)) if nodules else lp
    for (_, nodule), r in zip(nodules, risk, strict=True):
        nodule.brock_risk = float(r)
        nodule.malignant = bool(rng.random() < r)
        nodule.vdt_days = _draw_vdt(rng, nodule, malignant_vdt_days)
    for participant in participants:
        _assign_cancer(rng, participant, late_cancer_fraction)
        for nodule in participant.nodules:
            _evolve(rng, nodule, participant)
        _draw_findings(rng, participant, mean_other_findings)
    return participants


# ----------------------------------------------------------------------------- images


@dataclass(frozen=True)
class ScanGeometry:
    """Axial slab geometry; the anatomy is built ``z_pad`` slices taller so screens can shift in z."""

    matrix: int
    pixel_spacing_mm: float
    n_slices: int
    slice_thickness_mm: float
    z_pad: int = 1

    def axes_mm(self, n_slices: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable (z, y, x) voxel-centre coordinates in mm, origin at the image centre."""
        xy = (np.arange(self.matrix) - (self.matrix - 1) / 2.0) * self.pixel_spacing_mm
        z = np.arange(n_slices) * self.slice_thickness_mm
        return (
            z[:, None, None].astype(np.float32),
            xy[None, :, None].astype(np.float32),
            xy[None, None, :].astype(np.float32),
        )


def _ellipse(x, y, cx, cy, a, b, power=2.0):
    return (np.abs((x - cx) / a) ** power + np.abs((y - cy) / b) ** power) <= 1.0


def _smooth_noise(rng, shape, sigma):
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
    return field_ / (field_.std() + 1e-12)


def _boxes(axes, shape, low_mm: np.ndarray, high_mm: np.ndarray) -> list[tuple[int, tuple[slice, ...]]]:
    """(row, index box) of every non-empty box holding the voxel centres in [low_mm, high_mm] (z, y, x)."""
    starts = np.array([axis.ravel()[0] for axis in axes])
    steps = np.array([axis.ravel()[1] - axis.ravel()[0] if axis.size > 1 else 1.0 for axis in axes])
    lo = np.maximum(np.floor((np.atleast_2d(low_mm) - starts) / steps).astype(int), 0)
    hi = np.minimum(np.ceil((np.atleast_2d(high_mm) - starts) / steps).astype(int) + 1, shape)
    return [(i, tuple(map(slice, lo[i], hi[i]))) for i in np.flatnonzero((hi > lo).all(axis=1))]


def _blend_capsules(volume, axes, starts, ends, radii_start, radii_end, hu, weight=None, edge_mm=0.8):
    """Blend tapered tubes (vessels, spicules) into ``volume`` with partial-volume edges."""
    zs, ys, xs = axes
    starts, ends = np.atleast_2d(starts), np.atleast_2d(ends)
    radii_start, radii_end = np.atleast_1d(radii_start), np.atleast_1d(radii_end)
    reach = (np.maximum(radii_start, radii_end) + edge_mm)[:, None]
    for i, box in _boxes(
        axes, volume.shape, np.minimum(starts, ends) - reach, np.maximum(starts, ends) + reach
    ):
        p0, d, r0, r1 = starts[i], ends[i] - starts[i], radii_start[i], radii_end[i]
        z, y, x = zs[box[0]] - p0[0], ys[:, box[1]] - p0[1], xs[:, :, box[2]] - p0[2]
        t = np.clip((z * d[0] + y * d[1] + x * d[2]) / max(d @ d, 1e-9), 0.0, 1.0)
        dist = np.sqrt((z - t * d[0]) ** 2 + (y - t * d[1]) ** 2 + (x - t * d[2]) ** 2)
        fraction = np.clip((r0 + (r1 - r0) * t - dist) / edge_mm + 0.5, 0.0, 1.0)
        if weight is not None:
            fraction = fraction * weight[box]
        volume[box] += fraction * (hu - volume[box])


@dataclass
class Anatomy:
    """One participant's chest in the anatomy frame (z-padded), shared by all their screens."""

    hu: np.ndarray
    lobes: np.ndarray
    pleura_distance_mm: np.ndarray


def _vessel_tree(rng, hilum, lateral_sign, n_roots, depth):
    starts, ends, r_start, r_end = [], [], [], []
    stack = []
    flatten = np.array([0.25, 1.0, 1.0])  # a thin axial slab shows vessels that run near its plane
    for _ in range(n_roots):
        direction = (
            np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), lateral_sign * rng.uniform(0.2, 1.0)]) * flatten
        )
        origin = hilum + np.array([rng.uniform(-12, 12), rng.uniform(-20, 20), 0.0])
        stack.append((origin, direction / np.linalg.norm(direction), rng.uniform(3.0, 4.5), 30.0, depth))
    while stack:
        origin, direction, radius, length, level = stack.pop()
        end = origin + direction * length * rng.uniform(0.8, 1.2)
        starts.append(origin), ends.append(end), r_start.append(radius), r_end.append(radius * 0.85)
        if level > 0:
            for _ in range(2):
                child = direction + rng.normal(0.0, 0.5, 3) * flatten
                stack.append((end, child / np.linalg.norm(child), radius * 0.75, length * 0.82, level - 1))
    return np.array(starts), np.array(ends), np.array(r_start), np.array(r_end)


def build_anatomy(
    rng: np.random.Generator, geometry: ScanGeometry, emphysema: bool, findings: list[Finding]
) -> Anatomy:
    """A low-dose chest slab: body wall, mediastinum, bones, table and vessel-filled lungs."""
    n_z = geometry.n_slices + 2 * geometry.z_pad
    shape = (n_z, geometry.matrix, geometry.matrix)
    zs, ys, xs = axes = geometry.axes_mm(n_z)
    half_fov = geometry.matrix * geometry.pixel_spacing_mm / 2.0
    zc = zs.mean()
    grow = 1.0 + 0.004 * (zs - zc)

    body_a = half_fov * rng.uniform(0.86, 0.95)
    body_b = body_a * rng.uniform(0.64, 0.72)
    body_cy = -0.05 * half_fov
    fat = rng.uniform(6.0, 20.0)
    muscle = rng.uniform(8.0, 13.0)
    cav_a, cav_b = body_a - fat - muscle, body_b - fat - muscle
    hu = np.full(shape, -1000.0, dtype=np.float32)

    def paint(mask, value):
        hu[np.broadcast_to(mask, shape)] = value

    paint(_ellipse(xs, ys, 0, body_cy, body_a, body_b), -100.0)
    paint(_ellipse(xs, ys, 0, body_cy, body_a - fat, body_b - fat), 45.0)
    cavity = np.broadcast_to(_ellipse(xs, ys, 0, body_cy, cav_a, cav_b), shape)
    hu[cavity] = 40.0
    table_y = body_cy + body_b + 8.0
    paint((ys > table_y) & (ys < table_y + 6.0) & (np.abs(xs) < 0.9 * half_fov), 120.0)

    lung_cy = body_cy + 0.05 * cav_b
    lungs = np.zeros(shape, dtype=bool)
    for side in (-1, 1):
        lungs |= _ellipse(
            xs, ys, side * 0.5 * cav_a, lung_cy, 0.46 * cav_a * grow, 0.86 * cav_b * grow, power=2.6
        )
    heart_x, heart_y = 0.12 * cav_a, body_cy - 0.2 * cav_b
    heart_fat = _ellipse(xs, ys, heart_x, heart_y, 0.36 * cav_a * grow, 0.5 * cav_b * grow)
    spine_y = body_cy + cav_b - 0.05 * cav_b
    mediastinum = heart_fat | (np.abs(xs) < 0.1 * cav_a) | _ellipse(xs, ys, 0, spine_y, 25.0, 30.0)
    lungs &= cavity & ~mediastinum
    paint(heart_fat, -90.0)
    paint(_ellipse(xs, ys, heart_x, heart_y, 0.31 * cav_a * grow, 0.44 * cav_b * grow), 40.0)
    aorta = _ellipse(xs, ys, 18.0, spine_y - 28.0, 12.0, 12.0)
    paint(_ellipse(xs, ys, 18.0, spine_y - 28.0, 15.0, 15.0), -90.0)
    paint(aorta, 42.0)

    spine_body = _ellipse(xs, ys, 0, spine_y, 17.0, 15.0)
    paint(_ellipse(xs, ys, 0, spine_y + 26.0, 7.0, 14.0), 700.0)
    paint(spine_body, 700.0)
    paint(_ellipse(xs, ys, 0, spine_y, 14.5, 12.5), 230.0)
    paint(_ellipse(xs, ys, 0, spine_y + 19.0, 6.0, 5.0), 20.0)
    for angle in np.concatenate([np.linspace(0.55, 2.45, 6), np.linspace(3.7, 5.6, 6)]) + rng.normal(
        0, 0.05, 12
    ):
        rx = np.cos(angle) * (cav_a + 4.0)
        ry = body_cy + np.sin(angle) * (cav_b + 4.0)
        z0 = rng.uniform(-10.0, zs.max())
        in_slab = (zs >= z0) & (zs <= z0 + 14.0)
        hu[in_slab & _ellipse(xs, ys, rx, ry, 5.5, 5.5)] = 750.0
        hu[in_slab & _ellipse(xs, ys, rx, ry, 3.5, 3.5)] = 280.0

    lung_rows = np.broadcast_to(ys, shape)
    top, bottom = lung_rows[lungs].min(), lung_rows[lungs].max()
    y_frac = (lung_rows - top) / (bottom - top)
    # One texture field: its darkest patches become the low-attenuation areas of emphysema.
    texture = _smooth_noise(rng, shape, (0.8, 2.0, 2.0))
    hu[lungs] = (-875.0 + 70.0 * y_frac + 12.0 * texture)[lungs]
    threshold = np.quantile(texture[lungs], 0.12 if emphysema else 0.015)
    hu[lungs & (texture < threshold)] = -960.0

    lung_weight = lungs.astype(np.float32)
    for side in (-1, 1):
        hilum = np.array([zc, lung_cy - 0.05 * cav_b, side * 0.12 * cav_a])
        starts, ends, r0, r1 = _vessel_tree(rng, hilum, side, n_roots=12, depth=4)
        _blend_capsules(hu, axes, starts, ends, r0, r1, 40.0, weight=lung_weight)
    n_dots = 320
    lung_voxels = np.flatnonzero(lungs)
    centres = np.column_stack(np.unravel_index(rng.choice(lung_voxels, n_dots), shape)).astype(float)
    centres *= [geometry.slice_thickness_mm, geometry.pixel_spacing_mm, geometry.pixel_spacing_mm]
    centres += [0.0, ys.ravel()[0], xs.ravel()[0]]
    directions = rng.normal(0.0, 1.0, (n_dots, 3))
    directions *= rng.uniform(3.0, 9.0, (n_dots, 1)) / np.linalg.norm(directions, axis=1, keepdims=True)
    radii = rng.uniform(0.6, 1.3, n_dots)
    _blend_capsules(
        hu, axes, centres - directions, centres + directions, radii, radii * 0.8, 40.0, weight=lung_weight
    )

    # Half in-plane resolution is precise enough for placing nodules and costs a quarter.
    pleura_distance = (
        ndimage.distance_transform_edt(
            lungs[:, ::2, ::2],
            sampling=(
                geometry.slice_thickness_mm,
                2 * geometry.pixel_spacing_mm,
                2 * geometry.pixel_spacing_mm,
            ),
        )
        .repeat(2, axis=1)
        .repeat(2, axis=2)[:, : geometry.matrix, : geometry.matrix]
    )
    for finding in findings:
        if finding.radius_mm > 0:
            candidates = np.flatnonzero(pleura_distance > finding.radius_mm + 1.0)
            if not candidates.size:
                continue
            centre = _voxel_to_mm(np.unravel_index(rng.choice(candidates), shape), axes)
            _blend_capsules(
                hu, axes, [centre], [centre], [finding.radius_mm], [finding.radius_mm], finding.hu
            )

    hu = ndimage.gaussian_filter(hu, (0.3, 0.7, 0.7))
    lobes = np.zeros(shape, dtype=np.int8)
    right = lungs & (xs < 0)
    left = lungs & (xs >= 0)
    for mask, (upper, middle, lower), cut in (
        (right, (1, 2, 3), (0.42, 0.6)),
        (left, (4, 5, 6), (0.45, 0.6)),
    ):
        lobes[mask & (y_frac < cut[0])] = upper
        lobes[mask & (y_frac >= cut[0]) & (y_frac < cut[1])] = middle
        lobes[mask & (y_frac >= cut[1])] = lower
    return Anatomy(hu=hu, lobes=lobes, pleura_distance_mm=pleura_distance)


def _voxel_to_mm(index, axes) -> np.ndarray:
    zs, ys, xs = axes
    return np.array([zs.ravel()[index[0]], ys.ravel()[index[1]], xs.ravel()[index[2]]], dtype=float)


def place_nodules(
    rng: np.random.Generator, anatomy: Anatomy, geometry: ScanGeometry, nodules: list[Nodule]
) -> list[np.ndarray]:
    """Centres (z, y, x mm, anatomy frame) inside each nodule's lobe, clear of pleura and each other.

    Juxtapleural nodules may touch the pleura; when a lobe has no room the nodule goes anywhere in
    the lungs on the same side, so a drawn cohort always renders.
    """
    n_z = anatomy.hu.shape[0]
    axes = geometry.axes_mm(n_z)
    zs = axes[0]
    z_ok = np.zeros(anatomy.hu.shape, dtype=bool)
    z_ok[geometry.z_pad + 2 : n_z - geometry.z_pad - 2] = True
    free = np.ones(anatomy.hu.shape, dtype=bool)
    centres = []
    for nodule in nodules:
        radius = max(s.long_dia_mm for s in nodule.screens.values()) / 2.0
        clearance = 0.5 * radius if nodule.juxtapleural else radius + 2.0
        side = np.isin(anatomy.lobes, RIGHT_LOBES if nodule.lobe in RIGHT_LOBES else (4, 5, 6))
        chosen = None
        for region in (anatomy.lobes == nodule.lobe, side, anatomy.lobes > 0):
            for scale in (1.0, 0.6, 0.3, 0.0):
                candidates = np.flatnonzero(
                    region & z_ok & free & (anatomy.pleura_distance_mm >= clearance * scale)
                )
                if candidates.size:
                    chosen = rng.choice(candidates)
                    break
            if chosen is not None:
                break
        if chosen is None:
            raise RuntimeError(
                f"phantom: no lung voxel left for nodule {nodule.nodule_id}; enlarge the matrix or slab"
            )
        centre = _voxel_to_mm(np.unravel_index(chosen, anatomy.hu.shape), axes)
        centre[1:] += rng.uniform(-0.5, 0.5, 2) * geometry.pixel_spacing_mm
        ys, xs = axes[1], axes[2]
        free &= (zs - centre[0]) ** 2 + (ys - centre[1]) ** 2 + (xs - centre[2]) ** 2 > (radius + 6.0) ** 2
        centres.append(centre)
    return centres


@dataclass(frozen=True)
class NoduleShape:
    """Per-nodule geometry that stays fixed across screens (orientation, lobulation, spicules)."""

    orientation: float
    lobulation_phase: float
    lobulation_order: int
    spicule_directions: np.ndarray
    core_offset: np.ndarray  # (z, u, v) in semi-axes, scaled by the room the core leaves


def draw_shape(rng: np.random.Generator) -> NoduleShape:
    n_spicules = int(rng.integers(6, 13))
    directions = rng.normal(0.0, 1.0, (n_spicules, 3)) * [0.3, 1.0, 1.0]
    return NoduleShape(
        orientation=float(rng.uniform(0, np.pi)),
        lobulation_phase=float(rng.uniform(0, 2 * np.pi)),
        lobulation_order=int(rng.integers(3, 7)),
        spicule_directions=directions / np.linalg.norm(directions, axis=1, keepdims=True),
        core_offset=rng.uniform(-0.6, 0.6, 3),
    )


def render_nodule(
    rng: np.random.Generator,
    volume: np.ndarray,
    axes,
    centre: np.ndarray,
    state: NoduleScreen,
    shape: NoduleShape,
    solid_hu: float,
) -> None:
    """Blend one nodule (ellipsoid, lobulated; halo + core when part-solid; spicules) into ``volume``."""
    zs, ys, xs = axes
    a, b = state.long_dia_mm / 2.0, state.perp_dia_mm / 2.0
    c = (a + b) / 2.0
    reach = a + (a + 4.0 if state.margins == SPICULATED else 4.0)
    boxes = _boxes(axes, volume.shape, centre - reach, centre + reach)
    if not boxes:
        return
    box = boxes[0][1]
    dz, dy, dx = zs[box[0]] - centre[0], ys[:, box[1]] - centre[1], xs[:, :, box[2]] - centre[2]
    u = dx * np.cos(shape.orientation) + dy * np.sin(shape.orientation)
    v = -dx * np.sin(shape.orientation) + dy * np.cos(shape.orientation)
    lobulation = {SMOOTH: 0.04, SPICULATED: 0.12, POORLY_DEFINED: 0.15}[state.margins]
    lobes = 1.0 + lobulation * np.cos(shape.lobulation_order * np.arctan2(v, u) + shape.lobulation_phase)
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2 + (dz / c) ** 2) / lobes
    edge_mm = 0.25 * a + 1.5 if state.margins == POORLY_DEFINED else 0.8
    region = volume[box]
    tex = _smooth_noise(rng, region.shape, 1.5)
    halo_hu = state.ggo_hu + 60.0 * tex if state.attenuation != SOLID else solid_hu + 8.0 * tex
    halo = np.clip((1.0 - rho) * a / edge_mm + 0.5, 0.0, 1.0)
    region += halo * (halo_hu - region)
    if state.attenuation == PART_SOLID:
        oz, ou, ov = shape.core_offset * (1.0 - state.core_fraction)
        core_rho = (
            np.sqrt(((u - ou * a) / a) ** 2 + ((v - ov * b) / b) ** 2 + ((dz - oz * c) / c) ** 2) / lobes
        )
        core = np.clip((state.core_fraction - core_rho) * a / 0.8 + 0.5, 0.0, 1.0)
        region += core * (solid_hu + 8.0 * tex - region)
    if state.margins == SPICULATED:
        dirs = shape.spicule_directions
        starts = centre + dirs * a * 0.8
        lengths = a * (0.6 + 0.4 * np.abs(dirs[:, 1:2])) + 3.0
        spicule_hu = solid_hu if state.attenuation != GROUND_GLASS else state.ggo_hu
        _blend_capsules(
            volume,
            axes,
            starts,
            starts + dirs * lengths,
            np.full(len(dirs), 1.0),
            np.full(len(dirs), 0.3),
            spicule_hu,
        )


# ----------------------------------------------------------------------------- tables


def _maybe_missing(rng: np.random.Generator, value, code, fraction: float):
    return code if rng.random() < fraction else value


def _prsn_row(rng, participant: Participant, missing_fraction: float) -> dict:
    days = {f"scr_days{s}": participant.scr_days.get(s, ".N") for s in (0, 1, 2)}
    has_cancer = participant.conflc == 1
    return {
        "pid": participant.pid,
        "age": participant.age,
        "gender": participant.gender,
        "diagemph": _maybe_missing(rng, participant.diagemph, ".M", missing_fraction),
        **{
            col: _maybe_missing(rng, v, ".M", missing_fraction)
            for col, v in zip(FAMILY_COLUMNS, participant.family, strict=True)
        },
        "cigsmok": participant.cigsmok,
        "pkyr": _maybe_missing(rng, participant.pkyr, "", missing_fraction),
        "can_scr": participant.can_scr,
        "conflc": participant.conflc,
        "cancyr": participant.cancyr if has_cancer else ".N",
        "candx_days": participant.candx_days if has_cancer else ".N",
        **days,
        **{
            col: (int(lobe in participant.cancer_lobes) if has_cancer else ".N")
            for lobe, col in CANCER_LOCATION_COLUMNS.items()
        },
    }


def _measured_mm(rng: np.random.Generator, diameter_mm: float) -> int:
    """A radiologist's caliper reading: whole mm, off by about 0.6 mm + 5 % (inter-reader spread)."""
    return max(2, int(round(diameter_mm + rng.normal(0.0, 0.6 + 0.05 * diameter_mm))))


def _abnormality_rows(rng, participant: Participant, located: dict, missing_fraction: float):
    """sctabn/sctabnc/location/truth rows for one participant; sct_ab_num is shuffled per screen
    (as in NLST, where the same nodule need not keep its number)."""
    sctabn, sctabnc, locations, truth = [], [], [], []
    last_reported = {}
    for screen in participant.screens:
        items = [("nodule", n) for n in participant.nodules if screen in n.screens]
        items += [("finding", f) for f in participant.findings if screen in f.screens]
        order = rng.permutation(len(items))
        for number, index in enumerate(order, start=1):
            kind, item = items[index]
            key = {"pid": participant.pid, "study_yr": screen, "sct_ab_num": number}
            if kind == "finding":
                sctabn.append(
                    {
                        **key,
                        "sct_ab_desc": item.desc,
                        **{c: ".N" for c in SCTABN_COLUMNS[4:10]},
                        "sct_found_after_comp": 0,
                    }
                )
                if screen > 0:
                    preexisting = screen > item.screens[0]
                    sctabnc.append(
                        {
                            **key,
                            "sct_ab_preexist": 2 if preexisting else 1,
                            "sct_ab_gwth": ".N",
                            "sct_ab_attn": ".N",
                            "sct_ab_invg": 1,
                            "visible_days": participant.scr_days[screen]
                            - participant.scr_days[item.screens[0]],
                        }
                    )
                continue
            state = item.screens[screen]
            loc = located[(item.nodule_id, screen)]
            # code 51 is an opacity of at least 4 mm: a reader who codes it never records less
            reported_long = max(4, _measured_mm(rng, state.long_dia_mm))
            reported_perp = min(reported_long, _measured_mm(rng, state.perp_dia_mm))
            new_here = screen == item.first_screen and screen > 0
            sctabn.append(
                {
                    **key,
                    "sct_ab_desc": NODULE,
                    "sct_pre_att": _maybe_missing(rng, state.attenuation, 9, missing_fraction),
                    "sct_epi_loc": _maybe_missing(rng, item.lobe, ".M", missing_fraction),
                    "sct_long_dia": _maybe_missing(rng, reported_long, ".S", missing_fraction),
                    "sct_perp_dia": _maybe_missing(rng, reported_perp, ".S", missing_fraction),
                    "sct_margins": _maybe_missing(rng, state.margins, 9, missing_fraction),
                    "sct_slice_num": _maybe_missing(rng, loc["instance_number"], 999, missing_fraction),
                    "sct_found_after_comp": int(new_here and rng.random() < 0.5),
                }
            )
            locations.append(
                {**key, "nodule_id": item.nodule_id, **{c: loc[c] for c in LOCATION_COLUMNS[4:]}}
            )
            truth.append(
                {
                    "pid": participant.pid,
                    "nodule_id": item.nodule_id,
                    "study_yr": screen,
                    "sct_ab_num": number,
                    "malignant": int(item.malignant),
                    "brock_risk": round(item.brock_risk, 5),
                    "vdt_days": round(item.vdt_days, 1),
                    "first_screen": item.first_screen,
                    "long_dia_mm": round(state.long_dia_mm, 3),
                    "perp_dia_mm": round(state.perp_dia_mm, 3),
                    "attenuation": state.attenuation,
                    "margins": state.margins,
                    "core_fraction": round(state.core_fraction, 3),
                    "lobe": item.lobe,
                    "juxtapleural": int(item.juxtapleural),
                    **{c: loc[c] for c in LOCATION_COLUMNS[4:]},
                }
            )
            if screen > 0:
                previous = item.screens.get(screen - 1)
                grew = previous is not None and reported_long - last_reported[item.nodule_id] > 1.5
                attn_changed = previous is not None and (
                    state.attenuation != previous.attenuation
                    or state.core_fraction > previous.core_fraction + 0.1
                )
                sctabnc.append(
                    {
                        **key,
                        "sct_ab_preexist": _maybe_missing(rng, 1 if new_here else 2, 9, missing_fraction),
                        "sct_ab_gwth": ".N"
                        if new_here
                        else _maybe_missing(rng, 2 if grew else 1, 9, missing_fraction),
                        "sct_ab_attn": _maybe_missing(rng, 2 if attn_changed else 1, 9, missing_fraction),
                        "sct_ab_invg": 2 if (grew or attn_changed or reported_long >= 10) else 1,
                        "visible_days": participant.scr_days[screen]
                        - participant.scr_days[item.first_screen],
                    }
                )
            last_reported[item.nodule_id] = reported_long
    return sctabn, sctabnc, locations, truth


# ----------------------------------------------------------------------------- writing


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
