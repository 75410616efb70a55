# Unconditional latent diffusion (paper Eq. 9): the pre-training NAMD's conditional stage starts from.


rule train_ldm_unconditional:
    """U-Net on unpaired latents of one VAE, null context, warm-up + cosine schedule."""
    input:
        pairs=TRAIN_PAIRS,
        crops=TRAIN_CROPS,
        latents=latents_file("{vae}", "trainval"),
    output:
        directory(f"{RESULTS}/models/ldm_unconditional_{{vae}}"),
    log:
        f"{LOGS}/ldm/train_ldm_unconditional_{{vae}}.log",
    benchmark:
        f"{BENCH}/train_ldm_unconditional_{{vae}}.tsv"
    priority: CRITICAL_PATH_PRIORITY
    conda:
        "../envs/models.yaml"
    threads: config["compute"]["train_threads"]
    resources:
        **TRAIN_RESOURCES,
    params:
        ldm=lambda wc: {
            **{k: v for k, v in config["ldm"].items() if k not in PAIRED_STAGE_ONLY},
            "latent_channels": config["vae"]["latent_channels"],
            **trainer_budget(config, STAGE1),
        },
        state=lambda wc: state_dir(f"ldm_unconditional_{wc.vae}"),
        seed=config["seed"],
        device=config["device"],
        precision=TRAIN_PRECISION,
    script:
        "../scripts/train_ldm_unconditional.py"
