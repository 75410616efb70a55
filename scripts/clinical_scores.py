from namd.evaluation.clinical import CLINICAL_ROWS, write_clinical_scores
from namd.workflow import rule_context

with rule_context(snakemake):
    write_clinical_scores(
        snakemake.input.pairs,
        snakemake.input.sctabn,
        {row: snakemake.output[row] for row in CLINICAL_ROWS},
    )
