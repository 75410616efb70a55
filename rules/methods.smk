# Every generative row of Table 1: one training rule and one generation rule, generic over {method}.


rule train_method:
    """Train one registered method (NAMD, its ablation, or a baseline) with the one trainer."""
    input:
        unpack(method_inputs("trainval")),
    output:
        directory(f"{RESULTS}/models/{{method}}"),
    params:
        method=lambda wc: method_params(wc.method),
        upstream=lambda wc, input: method_upstream(wc.method, input),
        state=lambda wc: state_dir(wc.method),
        seed=config["seed"],
        device=config["device"],
    log:
        f"{LOGS}/methods/train_{{method}}.log",
    benchmark:
        f"{BENCH}/train_{{method}}.tsv"
    threads: config["compute"]["train_threads"]
    resources:
        **TRAIN_RESOURCES,
    conda:
        "../envs/models.yaml"
    script:
        "../scripts/train_method.py"


rule generate_followups:
    """K follow-ups per test pair (one for deterministic methods), batched over pairs and seeds."""
    input:
        unpack(method_inputs("test")),
        model=rules.train_method.output[0],
    output:
        f"{RESULTS}/generated/{{method}}.npz",
    params:
        upstream=lambda wc, input: method_upstream(wc.method, input),
        seeds=list(range(config["generation"]["k_seeds"])),
        batch_size=config["generation"]["pairs_per_batch"],
        seed=config["seed"],
        device=config["device"],
    log:
        f"{LOGS}/methods/generate_{{method}}.log",
    benchmark:
        f"{BENCH}/generate_{{method}}.tsv"
    threads: config["compute"]["train_threads"]
    resources:
        **TRAIN_RESOURCES,
    conda:
        "../envs/models.yaml"
    script:
        "../scripts/generate_followups.py"
