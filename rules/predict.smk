# Predict for a new patient: the trained NAMD and the evaluation classifier as one diffusers-style
# pipeline folder, the `--model` of `namd predict` (namd/pipeline.py, namd/cli.py).


rule export_pipeline:
    """NAMDPipeline.save_pretrained of the workflow's NAMD, its VAE, the classifier and the HU window."""
    input:
        model=f"{RESULTS}/models/namd",
        classifier=rules.train_classifier.output[0],
    output:
        directory(f"{RESULTS}/models/namd_pipeline"),
    log:
        f"{LOGS}/predict/export_pipeline.log",
    conda:
        "../envs/models.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        hu_window=config["crop"]["hu_window"],
    script:
        "../scripts/export_pipeline.py"


PREDICT_TARGETS = [rules.export_pipeline.output[0]] if "namd" in METHODS else []
