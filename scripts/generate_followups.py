from namd.data.splits import seeded_test_pairs
from namd.runtime import select_device
from namd.stages.methods import generate_method
from namd.workflow import rule_context

with rule_context(snakemake, seed=snakemake.params.seed):
    # Figure 5's rules sample and score a seeded subset of the test pairs; the others, every test pair
    n_pairs = snakemake.params.get("n_pairs")
    pair_ids = None if n_pairs is None else seeded_test_pairs(snakemake.input.pairs, n_pairs, snakemake.params.seed)
    generate_method(
        snakemake.params.get("method") or snakemake.wildcards.method,
        snakemake.input.model,
        snakemake.input.pairs,
        snakemake.input.crops,
        snakemake.input.get("latents"),
        snakemake.params.upstream,
        snakemake.output[0],
        seeds=snakemake.params.seeds,
        batch_size=snakemake.params.batch_size,
        seed=snakemake.params.seed,
        device=select_device(snakemake.params.device),
        stats_pairs_csv=snakemake.input.stats_pairs,
        pair_ids=pair_ids,
    )
