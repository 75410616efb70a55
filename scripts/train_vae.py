from namd.runtime import select_device, training_precision
from namd.stages.vae import train_vae
from namd.workflow import rule_context

with rule_context(snakemake, seed=snakemake.params.seed):
    device = select_device(snakemake.params.device)
    train_vae(
        snakemake.input.pairs,
        snakemake.input.crops,
        snakemake.output[0],
        snakemake.params.state,
        snakemake.params.vae,
        seed=snakemake.params.seed,
        device=device,
        precision=training_precision(snakemake.params.precision, device),
    )
