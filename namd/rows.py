"""Table 1's rows that are no generative method: the evaluator on real crops, and the clinical scores.

One definition for every side: the rule files plan a probability file per name (rules/evaluate.smk:
classify_real, rules/clinical.smk: clinical_scores), `namd.evaluation.clinical` writes the clinical
ones and `namd.stages.evaluate` gives each its title. A generative row's title is its method's
(`namd.methods.base.GenerativeMethod.title`). Kept free of imports so the Snakefile can read it
without loading the deep-learning stack.
"""

#: name -> Table 1 title of the rows scored on real crops (rules/evaluate.smk: classify_real)
REAL_ROWS = {"real_baseline": "Real baseline LDCT", "real_followup": "Real follow-up LDCT"}
#: name -> Table 1 title of the clinical reference rows, scores of the test records (namd.evaluation.clinical)
CLINICAL_ROWS = {"brock": "Brock (PanCan) model", "lungrads_baseline": "Lung-RADS v2022 (baseline)",
                 "lungrads_followup": "Lung-RADS v2022 (real follow-up)"}
#: name -> Table 1 title of every row that is no generative method
REFERENCE_ROWS = {**REAL_ROWS, **CLINICAL_ROWS}
