# Clinical reference rows of Table 1 (issue 12, point 2): Brock and Lung-RADS from the test records.
# The rows' names are namd.rows.CLINICAL_ROWS (rules/evaluate.smk's table1 rule reads them too).

from namd.rows import CLINICAL_ROWS


rule clinical_scores:
    """Brock (PanCan) probability and Lung-RADS v2022 category of every test pair, as Table 1 rows."""
    input:
        pairs=TEST_PAIRS,
        sctabn=cohort_table("nlst_sctabn.csv"),
    output:
        brock=f"{RESULTS}/eval/probs/brock.csv",
        lungrads_baseline=f"{RESULTS}/eval/probs/lungrads_baseline.csv",
        lungrads_followup=f"{RESULTS}/eval/probs/lungrads_followup.csv",
    log:
        f"{LOGS}/evaluate/clinical_scores.log",
    conda:
        "../envs/evaluation.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/clinical_scores.py"
