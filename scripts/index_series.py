from namd.data.dicom_read import index_series
from namd.workflow import rule_context

with rule_context(snakemake) as log:
    index = index_series(snakemake.input.dicom)
    index.to_csv(snakemake.output[0], index=False)
    log.info("%d CT series indexed under %s", len(index), snakemake.input.dicom)
