from namd.evaluation.figures import figure2_latent_tsne
from namd.io import write_json
from namd.stages.evaluate import latents_of_test_pairs
from namd.workflow import rule_context

with rule_context(snakemake) as log:
    aligned, diameters = latents_of_test_pairs(snakemake.input.aligned, snakemake.input.pairs)
    unaligned, _ = latents_of_test_pairs(snakemake.input.unaligned, snakemake.input.pairs)
    scores = figure2_latent_tsne(aligned, unaligned, diameters, snakemake.output.png, snakemake.output.pdf,
                                 seed=snakemake.params.seed)
    write_json(scores, snakemake.output.scores)
    log.info("Figure 2 scores: %s", scores)
