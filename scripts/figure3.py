from namd.data.dataset import Cohort
from namd.evaluation.figures import figure3_variance
from namd.generate import generated_images
from namd.stages.evaluate import probability_matrix
from namd.workflow import rule_context

with rule_context(snakemake):
    pair_ids, labels, probs = probability_matrix(snakemake.input.probs)
    cohort = Cohort.load(snakemake.input.pairs, snakemake.input.crops)
    rows = {p: i for i, p in enumerate(cohort.pairs["pair_id"])}
    real = [rows[p] for p in pair_ids]
    table = figure3_variance(
        probs, labels, generated_images(snakemake.input.generated, pair_ids),
        cohort.followup[real].numpy(), cohort.baseline[real].numpy(), list(pair_ids),
        snakemake.output.png, snakemake.output.pdf,
    )
    table.to_csv(snakemake.output.table, index=False)
