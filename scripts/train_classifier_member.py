from namd.evaluation.classifier import member_seed
from namd.runtime import select_device
from namd.stages.classifier import train_classifier_member
from namd.workflow import rule_context

index = int(snakemake.wildcards.member)
with rule_context(snakemake, seed=member_seed(snakemake.params.seed, index)):
    train_classifier_member(
        snakemake.input.pairs,
        snakemake.input.crops,
        snakemake.output[0],
        snakemake.params.state,
        snakemake.params.classifier,
        index=index,
        seed=snakemake.params.seed,
        device=select_device(snakemake.params.device),
    )
