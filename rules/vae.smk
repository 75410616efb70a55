# Nodule-aligned VAE (paper Section 3.2, Eq. 6) and its unaligned twin of the ablation.


rule train_vae:
    """AutoencoderKL + latent probe: L1 + KL (+ LPIPS) + lambda_align L_align + lambda_pred L_pred."""
    input:
        pairs=TRAIN_PAIRS,
        crops=TRAIN_CROPS,
    output:
        directory(f"{RESULTS}/models/vae_{{vae}}"),
    log:
        f"{LOGS}/vae/train_vae_{{vae}}.log",
    benchmark:
        f"{BENCH}/train_vae_{{vae}}.tsv"
    priority: CRITICAL_PATH_PRIORITY
    conda:
        "../envs/models.yaml"
    threads: config["compute"]["train_threads"]
    resources:
        **TRAIN_RESOURCES,
    params:
        vae=lambda wc: vae_params(wc.vae),
        state=lambda wc: state_dir(f"vae_{wc.vae}"),
        seed=config["seed"],
        device=config["device"],
        precision=TRAIN_PRECISION,
    script:
        "../scripts/train_vae.py"


rule cache_latents:
    """One part's baseline and follow-up latents (trainval or test), encoded once per VAE for all later rules."""
    input:
        vae=rules.train_vae.output[0],
        pairs=lambda wc: split_file(wc.part, "pairs"),
        crops=lambda wc: split_file(wc.part, "crops"),
    output:
        latents_file("{vae}", "{part}"),
    log:
        f"{LOGS}/vae/cache_latents_{{vae}}_{{part}}.log",
    wildcard_constraints:
        part="|".join(SPLIT_PARTS),
    priority: CRITICAL_PATH_PRIORITY
    conda:
        "../envs/models.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
        gpu=config["compute"]["gpus_per_job"],
    params:
        device=config["device"],
    script:
        "../scripts/cache_latents.py"
