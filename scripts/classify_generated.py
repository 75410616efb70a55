from namd.runtime import select_device
from namd.stages.classifier import classify_generated
from namd.workflow import rule_context

with rule_context(snakemake):
    classify_generated(
        snakemake.input.classifier,
        snakemake.input.generated,
        snakemake.input.pairs,
        snakemake.output[0],
        device=select_device(snakemake.params.device),
    )
