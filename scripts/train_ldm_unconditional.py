from namd.runtime import select_device, training_precision
from namd.stages.ldm import train_unconditional
from namd.workflow import rule_context

with rule_context(snakemake, seed=snakemake.params.seed):
    device = select_device(snakemake.params.device)
    train_unconditional(
        snakemake.input.pairs,
        snakemake.input.crops,
        snakemake.input.latents,
        snakemake.output[0],
        snakemake.params.state,
        snakemake.params.ldm,
        seed=snakemake.params.seed,
        device=device,
        precision=training_precision(snakemake.params.precision, device),
    )
