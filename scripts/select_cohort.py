from pathlib import Path

from namd.data.cohort import select_cohort, write_cohort
from namd.data.nlst import read_nlst_table
from namd.workflow import rule_context

with rule_context(snakemake) as log:
    tables = {kind: read_nlst_table(getattr(snakemake.input, kind), kind)
              for kind in ("prsn", "sctabn", "sctabnc", "locations")}
    split = snakemake.params.split
    selection = select_cohort(
        **tables,
        val_fraction=split["val_fraction"],
        test_fraction=split["test_fraction"],
        seed=split["seed"],
        follow_up_years=snakemake.params.follow_up_years,
        nodule_size_mm=snakemake.params.nodule_size_mm,
        max_test_pairs_per_subject=snakemake.params.max_test_pairs_per_subject,
    )
    write_cohort(selection, Path(snakemake.output.pairs).parent)
    log.info("cohort counts:\n%s", selection.counts.to_string(index=False))
    log.info("%d rows excluded (reasons in %s)", len(selection.excluded), snakemake.output.excluded)
