from namd.pipeline import NAMDPipeline
from namd.workflow import rule_context

with rule_context(snakemake) as log:
    pipeline = NAMDPipeline.from_workflow(snakemake.input.model, snakemake.input.classifier,
                                          hu_window=snakemake.params.hu_window)
    pipeline.save_pretrained(snakemake.output[0])
    log.info("NAMD pipeline written to %s (HU window %s)", snakemake.output[0], snakemake.params.hu_window)
