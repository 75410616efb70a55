"""Table 1: diagnosis metrics per seed, significance against NAMD, image quality, and the table itself.

Import the submodules (namd.evaluation.metrics, .significance, .table, ...): this package imports
nothing itself, so a job that needs one of them does not pay for the others' libraries at start-up.
"""
