from namd.runtime import select_device
from namd.stages.classifier import classify_real
from namd.workflow import rule_context

with rule_context(snakemake):
    classify_real(
        snakemake.input.classifier,
        snakemake.input.pairs,
        snakemake.input.crops,
        snakemake.output.baseline,
        snakemake.output.followup,
        device=select_device(snakemake.params.device),
    )
