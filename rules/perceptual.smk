# McWGAN's perceptual feature network (namd/models/perceptual.py): its own network, never the evaluator.


rule train_perceptual:
    """A small timm ResNet on real training-split crops (label + nodule features), chosen on validation."""
    input:
        pairs=TRAIN_PAIRS,
        crops=TRAIN_CROPS,
    output:
        directory(f"{RESULTS}/models/perceptual"),
    log:
        f"{LOGS}/methods/train_perceptual.log",
    benchmark:
        f"{BENCH}/train_perceptual.tsv"
    conda:
        "../envs/models.yaml"
    threads: config["compute"]["train_threads"]
    resources:
        **TRAIN_RESOURCES,
    params:
        perceptual=config["perceptual"],
        state=state_dir("perceptual"),
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/train_perceptual.py"
