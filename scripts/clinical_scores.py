from namd.evaluation.clinical import write_clinical_scores
from namd.rows import CLINICAL_ROWS
from namd.workflow import rule_context

with rule_context(snakemake):
    write_clinical_scores(
        snakemake.input.pairs,
        snakemake.input.sctabn,
        {row: snakemake.output[row] for row in CLINICAL_ROWS},
    )
