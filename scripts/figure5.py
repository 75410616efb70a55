from namd.evaluation.figures import figure5_running_variance
from namd.stages.evaluate import probability_matrix
from namd.workflow import rule_context

with rule_context(snakemake):
    pair_ids, _, probs = probability_matrix(snakemake.input.probs)
    curves = figure5_running_variance(probs, list(pair_ids), snakemake.output.png, snakemake.output.pdf,
                                      n_pairs=snakemake.params.n_pairs, seed=snakemake.params.seed,
                                      mark_k=snakemake.params.mark_k)
    curves.to_csv(snakemake.output.curves, index=False)
