# Progression (fair-evaluation issue, point 1): a learning-free size readout of every crop, validated on the
# phantom's truth, and each row's predicted diameter change on the test pairs.


rule progression:
    """Predicted vs true long-axis diameter change per method and seed; table, per-seed CSV and figure."""
    input:
        unpack(calibrated_reference),
        pairs=TEST_PAIRS,
        crops=TEST_CROPS,
        crops_table=TEST_CROPS_TABLE,
        generated=[f"{RESULTS}/generated/{m}.npz" for m in METHODS],
    output:
        csv=f"{RESULTS}/progression.csv",
        tex=report(
            f"{RESULTS}/table_progression.tex",
            category="Progression",
            caption="../report/progression.rst",
        ),
        per_seed=f"{RESULTS}/eval/progression_per_seed.csv",
        points=f"{RESULTS}/eval/progression_points.csv",
        png=report(
            f"{RESULTS}/figures/progression.png",
            category="Progression",
            caption="../report/progression.rst",
        ),
        pdf=f"{RESULTS}/figures/progression.pdf",
    log:
        f"{LOGS}/evaluate/progression.log",
    conda:
        "../envs/evaluation.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        methods=METHODS,
        readout=config["evaluation"]["progression"],
        window=config["crop"]["hu_window"],
        seed=config["seed"],
    script:
        "../scripts/progression.py"


if config["cohort"]["source"] == "phantom":

    rule readout_validation:
        """The readout against phantom_truth.csv on every real crop: MAE and bias by split and type; the
        train/val grid its settings were chosen on."""
        input:
            pairs=rules.select_cohort.output.pairs,
            crops=rules.crop_nodules.output.crops,
            crops_table=rules.crop_nodules.output.table,
            truth=rules.phantom_cohort.output.truth,
        output:
            csv=f"{RESULTS}/eval/readout_validation.csv",
            summary=f"{RESULTS}/eval/readout_validation_summary.csv",
            grid=f"{RESULTS}/eval/readout_grid.csv",
        log:
            f"{LOGS}/evaluate/readout_validation.log",
        conda:
            "../envs/evaluation.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=20,
        params:
            readout=config["evaluation"]["progression"],
            window=config["crop"]["hu_window"],
        script:
            "../scripts/readout_validation.py"


PROGRESSION_TARGETS = [rules.progression.output.csv] + (
    [rules.readout_validation.output.summary]
    if config["cohort"]["source"] == "phantom"
    else []
)
