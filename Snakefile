# NAMD: Nodule-Aligned Multimodal latent Diffusion, end to end.
#   snakemake -n                      the plan
#   snakemake --cores all             the embedded default (phantom NLST cohort, CPU-sized)
#   snakemake results/table1.tex      only what Table 1 needs
#   snakemake --configfile configs/paper.yaml --profile profiles/slurm   the paper on a cluster
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "namd/schemas/config.schema.yaml")


# common.smk makes the namd package beside this file importable, here and in scripts/ (the
# scripts/namd -> ../namd symlink), whether or not it is installed: see the comment there.
include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/vae.smk"
include: "rules/ldm.smk"
include: "rules/methods.smk"
include: "rules/perceptual.smk"
include: "rules/evaluator.smk"
include: "rules/clinical.smk"
include: "rules/evaluate.smk"
include: "rules/progression.smk"
include: "rules/predict.smk"


onstart:
    check_slurm_partitions()


rule all:
    default_target: True
    input:
        DATA_TARGETS,
        EVALUATION_TARGETS,
        PROGRESSION_TARGETS,
        rules.evaluator_seeds.output.csv,
        PREDICT_TARGETS,
