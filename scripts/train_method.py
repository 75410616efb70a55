from namd.runtime import select_device, training_precision
from namd.stages.methods import train_method
from namd.workflow import rule_context

with rule_context(snakemake, seed=snakemake.params.seed):
    device = select_device(snakemake.params.device)
    train_method(
        snakemake.wildcards.method,
        snakemake.params.method,
        snakemake.input.pairs,
        snakemake.input.crops,
        snakemake.input.get("latents"),
        snakemake.params.upstream,
        snakemake.output[0],
        snakemake.params.state,
        seed=snakemake.params.seed,
        device=device,
        precision=training_precision(snakemake.params.precision, device),
    )
