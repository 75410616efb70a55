from namd.stages.classifier import assemble_classifier
from namd.workflow import rule_context

with rule_context(snakemake):
    assemble_classifier(snakemake.input.members, snakemake.output[0])
