# The evaluation classifier (paper Section 4.1.2) as an instrument: M seed members (member i trains
# with seed config["seed"] + i), their mean-probability ensemble, and the spread of the real rows
# over evaluator seeds. Training reads the trainval files only; evaluator_seeds reads the test
# split to score, never to select.

CLASSIFIER = config["evaluation"]["classifier"]
ENSEMBLE_SIZE = CLASSIFIER["ensemble_size"]
#: the workflow's ensemble (members 0..M-1) and seed_study_ensembles more disjoint ones
SEED_STUDY_MEMBERS = ENSEMBLE_SIZE * (1 + CLASSIFIER["seed_study_ensembles"])
CLASSIFIER_MEMBER = f"{RESULTS}/models/classifier_members/member_{{member}}"
#: what one member's training depends on: not how many members there are, so a larger study retrains none
MEMBER_PARAMS = {
    k: v
    for k, v in CLASSIFIER.items()
    if k not in ("ensemble_size", "seed_study_ensembles")
}


rule train_classifier_member:
    """One seed member of the evaluation ViT, trained on real trainval crops, selected on validation BCE."""
    input:
        pairs=TRAIN_PAIRS,
        crops=TRAIN_CROPS,
    output:
        directory(CLASSIFIER_MEMBER),
    log:
        f"{LOGS}/evaluate/train_classifier_member_{{member}}.log",
    benchmark:
        f"{BENCH}/train_classifier_member_{{member}}.tsv"
    wildcard_constraints:
        member=r"\d+",
    conda:
        "../envs/evaluation.yaml"
    threads: config["compute"]["train_threads"]
    resources:
        **TRAIN_RESOURCES,
    params:
        classifier=MEMBER_PARAMS,
        state=lambda wildcards: state_dir(f"classifier_member_{wildcards.member}"),
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/train_classifier_member.py"


rule train_classifier:
    """The frozen evaluator: a copy of members 0..M-1 and ensemble.json (mean probability), self-contained."""
    input:
        members=expand(CLASSIFIER_MEMBER, member=range(ENSEMBLE_SIZE)),
    output:
        directory(f"{RESULTS}/models/classifier"),
    log:
        f"{LOGS}/evaluate/train_classifier.log",
    conda:
        "../envs/evaluation.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/train_classifier.py"


rule evaluator_seeds:
    """Test AUROC/AUPRC of the real rows per evaluator member and per disjoint ensemble: the instrument's spread."""
    input:
        members=expand(CLASSIFIER_MEMBER, member=range(SEED_STUDY_MEMBERS)),
        pairs=TEST_PAIRS,
        crops=TEST_CROPS,
    output:
        csv=f"{RESULTS}/eval/evaluator_seeds.csv",
        json=f"{RESULTS}/eval/evaluator_seeds.json",
    log:
        f"{LOGS}/evaluate/evaluator_seeds.log",
    conda:
        "../envs/evaluation.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        ensemble_size=ENSEMBLE_SIZE,
        device=config["device"],
    script:
        "../scripts/evaluator_seeds.py"
