from namd.data.contact_sheet import plot_contact_sheet
from namd.workflow import rule_context

with rule_context(snakemake):
    plot_contact_sheet(snakemake.input.crops, snakemake.input.pairs, snakemake.output.png, snakemake.output.pdf)
