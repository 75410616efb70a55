"""The Brock risk model's intercept, re-fitted to the phantom's malignant fraction."""

from __future__ import annotations

import numpy as np
from scipy import optimize, special


def calibrated_intercept(linear_predictor: np.ndarray, target_fraction: float) -> float:
    """Intercept that makes the mean Brock risk of these nodules equal ``target_fraction``."""
    if not 0.0 < target_fraction < 1.0:
        raise ValueError(f"target_malignant_fraction must be in (0, 1), got {target_fraction}")
    lp = np.asarray(linear_predictor, dtype=float)
    return float(optimize.brentq(lambda b: special.expit(lp + b).mean() - target_fraction, -40.0, 40.0))
