"""Table 1's real-image rows: the evaluator on real crops, beside the generated ones (no imports).

One definition for both sides: rules/evaluate.smk plans a probability file per name, and
`namd.stages.evaluate` gives each its title. Kept free of imports so the Snakefile can read it
without loading the deep-learning stack.
"""

#: name -> Table 1 title of the rows scored on real crops (rules/evaluate.smk: classify_real)
REAL_ROWS = {"real_baseline": "Real baseline LDCT", "real_followup": "Real follow-up LDCT"}
