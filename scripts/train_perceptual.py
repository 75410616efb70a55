from namd.runtime import select_device
from namd.stages.perceptual import train_perceptual
from namd.workflow import rule_context

with rule_context(snakemake, seed=snakemake.params.seed):
    train_perceptual(
        snakemake.input.pairs,
        snakemake.input.crops,
        snakemake.output[0],
        snakemake.params.state,
        snakemake.params.perceptual,
        seed=snakemake.params.seed,
        device=select_device(snakemake.params.device),
    )
