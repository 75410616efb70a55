"""The tables: prsn, sctabn, sctabnc, location and truth rows, with NLST's missing codes."""

from __future__ import annotations

import numpy as np

from namd.data.phantom.cohort_draw import Participant
from namd.data.phantom.constants import (
    CANCER_LOCATION_COLUMNS,
    FAMILY_COLUMNS,
    LOCATION_COLUMNS,
    NODULE,
    SCTABN_COLUMNS,
)


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
