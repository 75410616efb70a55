from namd.runtime import select_device
from namd.stages.classifier import evaluator_seeds
from namd.workflow import rule_context

with rule_context(snakemake):
    evaluator_seeds(
        snakemake.input.members,
        snakemake.params.ensemble_size,
        snakemake.input.pairs,
        snakemake.input.crops,
        snakemake.output.csv,
        snakemake.output.json,
        device=select_device(snakemake.params.device),
    )
