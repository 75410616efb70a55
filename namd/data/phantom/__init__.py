"""The embedded default cohort: a deterministic phantom delivered exactly like NLST.

NLST cannot be shipped, so this package writes a cohort in NLST's own layout (section 1 of
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

Modules, in the order data flows: ``constants`` (codes, columns), ``risk`` (Brock intercept),
``cohort_draw`` (participants, nodules, outcomes), ``images`` (anatomy, nodules), ``tables`` (CSV
rows) and ``writing`` (``write_phantom_cohort``).
"""

from namd.data.brock import GROUND_GLASS, PART_SOLID, SOLID, brock_linear_predictor
from namd.data.phantom.cohort_draw import draw_cohort
from namd.data.phantom.constants import (
    CANCER_LOCATION_COLUMNS,
    LOCATION_COLUMNS,
    PRSN_COLUMNS,
    SCTABN_COLUMNS,
    SCTABNC_COLUMNS,
    SPICULATED,
)
from namd.data.phantom.risk import calibrated_intercept
from namd.data.phantom.writing import write_phantom_cohort

__all__ = [
    "CANCER_LOCATION_COLUMNS",
    "GROUND_GLASS",
    "LOCATION_COLUMNS",
    "PART_SOLID",
    "PRSN_COLUMNS",
    "SCTABNC_COLUMNS",
    "SCTABN_COLUMNS",
    "SOLID",
    "SPICULATED",
    "brock_linear_predictor",
    "calibrated_intercept",
    "draw_cohort",
    "write_phantom_cohort",
]
