from pathlib import Path

from namd.data.phantom import write_phantom_cohort
from namd.workflow import rule_context

with rule_context(snakemake) as log:
    summary = write_phantom_cohort(Path(snakemake.output.dicom).parent, **snakemake.params.phantom)
    log.info("phantom cohort: %s", summary)
