from pathlib import Path

from namd.data.phantom import write_phantom_cohort
from namd.workflow import rule_context

with rule_context(snakemake) as log:
    # the rule asks for `workers` threads; Snakemake lowers that to --cores where fewer are given
    phantom = {**snakemake.params.phantom, "workers": snakemake.threads}
    summary = write_phantom_cohort(Path(snakemake.output.dicom).parent, **phantom)
    log.info("phantom cohort: %s", summary)
