from namd.runtime import select_device
from namd.stages.ldm import train_unconditional
from namd.workflow import rule_context

with rule_context(snakemake, seed=snakemake.params.seed):
    train_unconditional(
        snakemake.input.pairs,
        snakemake.input.crops,
        snakemake.input.latents,
        snakemake.output[0],
        snakemake.params.state,
        snakemake.params.ldm,
        seed=snakemake.params.seed,
        device=select_device(snakemake.params.device),
    )
