from namd.runtime import select_device
from namd.stages.vae import cache_latents
from namd.workflow import rule_context

with rule_context(snakemake):
    cache_latents(
        snakemake.input.vae,
        snakemake.input.pairs,
        snakemake.input.crops,
        snakemake.output[0],
        device=select_device(snakemake.params.device),
    )
