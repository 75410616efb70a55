from namd.runtime import select_device
from namd.stages.classifier import classify_generated
from namd.stages.evaluate import image_metrics
from namd.workflow import rule_context

with rule_context(snakemake):
    device = select_device(snakemake.params.device)
    classify_generated(
        snakemake.input.classifier,
        snakemake.input.generated,
        snakemake.input.pairs,
        snakemake.output.probs,
        device=device,
    )
    image_metrics(
        snakemake.wildcards.method,
        snakemake.input.classifier,
        snakemake.input.generated,
        snakemake.input.pairs,
        snakemake.input.crops,
        snakemake.output.image,
        snakemake.params.image_metrics,
        device=device,
    )
