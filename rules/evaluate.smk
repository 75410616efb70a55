# Evaluation (paper Sections 4.1.2, 4.2, 4.3, Appendix D): the frozen evaluator ensemble (rules/evaluator.smk)
# on every row, Table 1, Figures 2, 3, 5.

from namd.rows import REAL_ROWS

EVAL = f"{RESULTS}/eval"


rule classify_real:
    """The real-image rows of Table 1: the classifier on real baseline and real follow-up test crops."""
    input:
        classifier=rules.train_classifier.output[0],
        pairs=TEST_PAIRS,
        crops=TEST_CROPS,
    output:
        baseline=f"{EVAL}/probs/real_baseline.csv",
        followup=f"{EVAL}/probs/real_followup.csv",
    log:
        f"{LOGS}/evaluate/classify_real.log",
    conda:
        "../envs/evaluation.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        device=config["device"],
    script:
        "../scripts/classify_real.py"


rule evaluate_generated:
    """The evaluator's readings of one row's follow-ups: malignancy probability per pair and seed, and
    LPIPS / FID per seed (labelled stand-ins without their weights). One job for both: on the CPU
    default each takes about a second and a job's start-up about six.
    """
    input:
        classifier=rules.train_classifier.output[0],
        generated=rules.generate_followups.output[0],
        pairs=TEST_PAIRS,
        crops=TEST_CROPS,
    output:
        probs=f"{EVAL}/probs/{{method}}.csv",
        image=f"{EVAL}/image_metrics/{{method}}.csv",
    log:
        f"{LOGS}/evaluate/evaluate_{{method}}.log",
    benchmark:
        f"{BENCH}/evaluate_{{method}}.tsv"
    conda:
        "../envs/evaluation.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=config["compute"]["gpus_per_job"],
    params:
        image_metrics=config["evaluation"]["image_metrics"],
        device=config["device"],
    script:
        "../scripts/evaluate_generated.py"


rule table1:
    """Table 1: AUROC/AUPRC per row (mean +- std over K), LPIPS, FID, DeLong against NAMD."""
    input:
        probs=expand(
            f"{EVAL}/probs/{{row}}.csv", row=[*REAL_ROWS, *CLINICAL_ROWS, *METHODS]
        ),
        image=expand(rules.evaluate_generated.output.image, method=METHODS),
        pairs=TEST_PAIRS,
        evaluator=rules.evaluator_seeds.output.json,
    output:
        tex=report(
            f"{RESULTS}/table1.tex", category="Table 1", caption="../report/table1.rst"
        ),
        csv=f"{RESULTS}/table1.csv",
        significance=f"{EVAL}/significance.csv",
        per_seed=f"{EVAL}/diagnosis_per_seed.csv",
    log:
        f"{LOGS}/evaluate/table1.log",
    conda:
        "../envs/evaluation.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        rows=[*REAL_ROWS, *CLINICAL_ROWS, *METHODS],
        cohort_source=config["cohort"]["source"],
        methods=METHODS,
        seeds=list(range(config["generation"]["k_seeds"])),
        evaluation=config["evaluation"],
        seed=config["seed"],
    script:
        "../scripts/table1.py"


rule figure2:
    """t-SNE of test latents coloured by diameter: aligned VAE beside unaligned VAE."""
    input:
        aligned=latents_file("aligned", "test"),
        unaligned=latents_file("unaligned", "test"),
        pairs=TEST_PAIRS,
    output:
        png=report(
            f"{RESULTS}/figures/figure2.png",
            category="Figures",
            caption="../report/figure2.rst",
        ),
        pdf=f"{RESULTS}/figures/figure2.pdf",
        scores=f"{RESULTS}/figures/figure2_scores.json",
    log:
        f"{LOGS}/evaluate/figure2.log",
    conda:
        "../envs/evaluation.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        seed=config["seed"],
    script:
        "../scripts/figure2.py"


rule figure3:
    """Prediction error vs variance over K, and NAMD examples with pixel-wise variance and error maps."""
    input:
        probs=f"{EVAL}/probs/{config['evaluation']['reference']}.csv",
        generated=f"{RESULTS}/generated/{config['evaluation']['reference']}.npz",
        pairs=TEST_PAIRS,
        crops=TEST_CROPS,
    output:
        png=report(
            f"{RESULTS}/figures/figure3.png",
            category="Figures",
            caption="../report/figure3.rst",
        ),
        pdf=f"{RESULTS}/figures/figure3.pdf",
        table=f"{RESULTS}/figures/figure3_pairs.csv",
    log:
        f"{LOGS}/evaluate/figure3.log",
    conda:
        "../envs/evaluation.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/figure3.py"


FIGURE5 = config["evaluation"]["figure5"]
REFERENCE = config["evaluation"]["reference"]


rule generate_figure5_samples:
    """K_max follow-ups of the reference method for Figure 5's pairs: more than Table 1's K, so the
    figure can show whether the variance settles after it (Appendix D)."""
    input:
        unpack(lambda wc: generation_files(REFERENCE)),
    output:
        f"{RESULTS}/figure5/samples.npz",
    log:
        f"{LOGS}/evaluate/generate_figure5_samples.log",
    benchmark:
        f"{BENCH}/generate_figure5_samples.tsv"
    conda:
        "../envs/models.yaml"
    threads: config["compute"]["train_threads"]
    resources:
        **TRAIN_RESOURCES,
    params:
        method=REFERENCE,
        upstream=lambda wc, input: method_upstream(trained_model_of(REFERENCE), input),
        seeds=list(range(FIGURE5["k_max"])),
        batch_size=config["generation"]["pairs_per_batch"],
        n_pairs=FIGURE5["pairs"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/generate_followups.py"


rule classify_figure5_samples:
    """The evaluator's probability of every Figure 5 sample."""
    input:
        classifier=rules.train_classifier.output[0],
        generated=rules.generate_figure5_samples.output[0],
        pairs=TEST_PAIRS,
    output:
        f"{RESULTS}/figure5/probs.csv",
    log:
        f"{LOGS}/evaluate/classify_figure5_samples.log",
    conda:
        "../envs/evaluation.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        n_pairs=FIGURE5["pairs"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/classify_figure5_samples.py"


rule figure5:
    """Running variance of the classifier's probability over k = 2..K_max samples (Appendix D)."""
    input:
        probs=rules.classify_figure5_samples.output[0],
    output:
        png=report(
            f"{RESULTS}/figures/figure5.png",
            category="Figures",
            caption="../report/figure5.rst",
        ),
        pdf=f"{RESULTS}/figures/figure5.pdf",
        curves=f"{RESULTS}/figures/figure5_curves.csv",
    log:
        f"{LOGS}/evaluate/figure5.log",
    conda:
        "../envs/evaluation.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        n_pairs=FIGURE5["pairs"],
        mark_k=config["generation"]["k_seeds"],
        seed=config["seed"],
    script:
        "../scripts/figure5.py"


rule figure_samples:
    """A gallery: real baseline and follow-up beside every method's first sample, for a few test pairs."""
    input:
        generated=expand(rules.generate_followups.output[0], method=METHODS),
        pairs=TEST_PAIRS,
        crops=TEST_CROPS,
    output:
        png=report(
            f"{RESULTS}/figures/samples.png",
            category="Figures",
            caption="../report/samples.rst",
        ),
        pdf=f"{RESULTS}/figures/samples.pdf",
    log:
        f"{LOGS}/evaluate/figure_samples.log",
    conda:
        "../envs/evaluation.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        methods=METHODS,
        seed=config["seed"],
    script:
        "../scripts/figure_samples.py"


EVALUATION_TARGETS = [
    rules.table1.output.tex,
    rules.figure2.output.png,
    rules.figure3.output.png,
    rules.figure5.output.png,
    rules.figure_samples.output.png,
]
