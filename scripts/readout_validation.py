from namd.stages.progression import readout_validation
from namd.workflow import rule_context

with rule_context(snakemake):
    readout_validation(
        snakemake.input.pairs,
        snakemake.input.crops,
        snakemake.input.crops_table,
        snakemake.input.truth,
        out_csv=snakemake.output.csv,
        out_summary=snakemake.output.summary,
        out_grid=snakemake.output.grid,
        params=snakemake.params.readout,
        window=snakemake.params.window,
    )
