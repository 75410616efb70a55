# Every generative row of Table 1: one training rule and one generation rule, generic over {method}.
# A row that reuses another's trained model (namd.methods.REUSES) has no training job: its generation
# reads that model's folder and inputs (generation_inputs in common.smk).


rule train_method:
    """Train one registered method (NAMD, its ablation, or a baseline) with the one trainer."""
    input:
        unpack(training_inputs),
    output:
        directory(f"{RESULTS}/models/{{method}}"),
    log:
        f"{LOGS}/methods/train_{{method}}.log",
    benchmark:
        f"{BENCH}/train_{{method}}.tsv"
    wildcard_constraints:
        method="|".join(m for m in METHODS if m not in REUSES) or "(?!)",
    priority: TRAIN_METHOD_PRIORITY
    conda:
        "../envs/models.yaml"
    threads: config["compute"]["train_threads"]
    resources:
        **TRAIN_RESOURCES,
    params:
        method=lambda wc: method_params(config, wc.method),
        upstream=lambda wc, input: method_upstream(wc.method, input),
        state=lambda wc: state_dir(wc.method),
        seed=config["seed"],
        device=config["device"],
        precision=TRAIN_PRECISION,
    script:
        "../scripts/train_method.py"


rule generate_followups:
    """K follow-ups per test pair (one for deterministic methods), batched over pairs and seeds."""
    input:
        unpack(generation_inputs),
    output:
        f"{RESULTS}/generated/{{method}}.npz",
    log:
        f"{LOGS}/methods/generate_{{method}}.log",
    benchmark:
        f"{BENCH}/generate_{{method}}.tsv"
    conda:
        "../envs/models.yaml"
    threads: config["compute"]["train_threads"]
    resources:
        **TRAIN_RESOURCES,
    params:
        upstream=lambda wc, input: method_upstream(trained_model_of(wc.method), input),
        seeds=list(range(config["generation"]["k_seeds"])),
        batch_size=config["generation"]["pairs_per_batch"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/generate_followups.py"
