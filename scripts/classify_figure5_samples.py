from namd.data.splits import seeded_test_pairs
from namd.runtime import select_device
from namd.stages.classifier import classify_generated
from namd.workflow import rule_context

with rule_context(snakemake):
    # Figure 5's samples: a seeded subset of the test pairs (Table 1's rows: rule evaluate_generated)
    classify_generated(
        snakemake.input.classifier,
        snakemake.input.generated,
        snakemake.input.pairs,
        snakemake.output[0],
        device=select_device(snakemake.params.device),
        pair_ids=seeded_test_pairs(snakemake.input.pairs, snakemake.params.n_pairs, snakemake.params.seed),
    )
