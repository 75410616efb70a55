"""The Brock University (PanCan) nodule malignancy model: one home for the phantom and the evaluation.

The phantom draws malignancy from it (`namd.data.phantom`, intercept re-fitted to its
prevalence) and Table 1's Brock row scores the test records with it
(`namd.evaluation.clinical`, published intercept). Version: the *full model with spiculation*
of McWilliams et al., "Probability of cancer in pulmonary nodules detected on first screening
CT", NEJM 2013;369:910-919 (supplementary model 2b; author manuscript PMC3951177), logistic,
coefficients on the logit scale (checked against the same coefficients tabulated by Eur Radiol
2019;29:5367, PMC6717521, Table 2):

====================================  ===========
term                                  coefficient
====================================  ===========
intercept                             -6.7892
age, per year above 62                 0.0287
female sex                             0.6011
family history of lung cancer          0.2961
emphysema                              0.2953
size: (diameter_mm/10)**-0.5 - 1.5811  -5.3854
ground-glass (non-solid)              -0.1276
part-solid                             0.377
upper lobe (RUL, LUL)                  0.6581
nodule count, per nodule above 4      -0.0824
spiculation                            0.7729
====================================  ===========

The size term is centred at 4 mm ((4/10)**-0.5 = 1.58113883): a 4 mm nodule gets no size
contribution. Nodule size is the nodule's largest diameter in mm.
"""

from __future__ import annotations

import numpy as np
from scipy import special

SOLID, GROUND_GLASS, PART_SOLID = 1, 2, 3  # NLST sct_pre_att codes
UPPER_LOBES = (1, 4)  # NLST sct_epi_loc right and left upper lobe; the lingula (5) counts as not upper

BROCK_FULL_MODEL = {
    "intercept": -6.7892,
    "age_minus_62": 0.0287,
    "female": 0.6011,
    "family_history": 0.2961,
    "emphysema": 0.2953,
    "size_transform": -5.3854,
    "ground_glass": -0.1276,
    "part_solid": 0.377,
    "upper_lobe": 0.6581,
    "count_minus_4": -0.0824,
    "spiculation": 0.7729,
}


def brock_linear_predictor(
    *,
    age: np.ndarray,
    female: np.ndarray,
    family_history: np.ndarray,
    emphysema: np.ndarray,
    diameter_mm: np.ndarray,
    attenuation: np.ndarray,
    upper_lobe: np.ndarray,
    nodule_count: np.ndarray,
    spiculated: np.ndarray,
) -> np.ndarray:
    """Brock full-model logit without its intercept (so a cohort can re-fit the intercept).

    attenuation holds NLST sct_pre_att codes (SOLID, GROUND_GLASS, PART_SOLID).
    """
    c = BROCK_FULL_MODEL
    diameter_mm = np.asarray(diameter_mm, dtype=float)
    if (diameter_mm <= 0).any():
        raise ValueError("brock_linear_predictor: diameter_mm must be positive")
    attenuation = np.asarray(attenuation)
    return (
        c["age_minus_62"] * (np.asarray(age, dtype=float) - 62.0)
        + c["female"] * np.asarray(female, dtype=float)
        + c["family_history"] * np.asarray(family_history, dtype=float)
        + c["emphysema"] * np.asarray(emphysema, dtype=float)
        + c["size_transform"] * ((diameter_mm / 10.0) ** -0.5 - 1.58113883)
        + c["ground_glass"] * (attenuation == GROUND_GLASS)
        + c["part_solid"] * (attenuation == PART_SOLID)
        + c["upper_lobe"] * np.asarray(upper_lobe, dtype=float)
        + c["count_minus_4"] * (np.asarray(nodule_count, dtype=float) - 4.0)
        + c["spiculation"] * np.asarray(spiculated, dtype=float)
    )


def brock_probability(**features: np.ndarray) -> np.ndarray:
    """The published model's probability of cancer (its own intercept), features as `brock_linear_predictor`."""
    return special.expit(brock_linear_predictor(**features) + BROCK_FULL_MODEL["intercept"])
