"""Cohort input: the embedded NLST-like phantom, and DICOM reading/writing."""
