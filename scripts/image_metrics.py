from namd.runtime import select_device
from namd.stages.evaluate import image_metrics
from namd.workflow import rule_context

with rule_context(snakemake):
    image_metrics(
        snakemake.wildcards.method,
        snakemake.input.classifier,
        snakemake.input.generated,
        snakemake.input.pairs,
        snakemake.input.crops,
        snakemake.output[0],
        snakemake.params.image_metrics,
        device=select_device(snakemake.params.device),
    )
