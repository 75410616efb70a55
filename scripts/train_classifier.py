from namd.runtime import select_device
from namd.stages.evaluate import train_classifier
from namd.workflow import rule_context

with rule_context(snakemake, seed=snakemake.params.seed):
    train_classifier(
        snakemake.input.pairs,
        snakemake.input.crops,
        snakemake.output[0],
        snakemake.params.state,
        snakemake.params.classifier,
        seed=snakemake.params.seed,
        device=select_device(snakemake.params.device),
    )
