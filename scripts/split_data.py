from namd.data.splits import FILES, PARTS, write_split_files
from namd.workflow import rule_context

with rule_context(snakemake) as log:
    counts = write_split_files(
        snakemake.input.pairs,
        snakemake.input.crops,
        snakemake.input.crops_table,
        {part: {name: snakemake.output[f"{part}_{name}"] for name in FILES} for part in PARTS},
    )
    log.info("pairs per part: %s", counts)
