from namd.data.splits import seeded_test_pairs
from namd.runtime import select_device
from namd.stages.classifier import classify_generated
from namd.workflow import rule_context

with rule_context(snakemake):
    # Figure 5's rule scores a seeded subset of the test pairs; the others, every test pair
    n_pairs = snakemake.params.get("n_pairs")
    pair_ids = None if n_pairs is None else seeded_test_pairs(snakemake.input.pairs, n_pairs, snakemake.params.seed)
    classify_generated(
        snakemake.input.classifier,
        snakemake.input.generated,
        snakemake.input.pairs,
        snakemake.output[0],
        device=select_device(snakemake.params.device),
        pair_ids=pair_ids,
    )
