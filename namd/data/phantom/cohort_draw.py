"""The cohort draw: participants, nodules, growth, outcomes and other findings (no images)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import special

from namd.data.brock import GROUND_GLASS, PART_SOLID, SOLID, UPPER_LOBES, brock_linear_predictor
from namd.data.phantom.constants import (
    CALCIFIED_NODULE,
    FAMILY_PREVALENCE,
    LOBE_PROBABILITIES,
    MICRONODULE,
    OTHER_FINDINGS,
    POORLY_DEFINED,
    SMOOTH,
    SPICULATED,
)
from namd.data.phantom.risk import calibrated_intercept


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
