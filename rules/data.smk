# Data stage: NLST-format cohort -> pairs -> nodule-centred crops (paper Sections 3.1, 4.1.1), cut into
# a train/val part and a test part.


rule phantom_cohort:
    """The embedded default: a phantom cohort in NLST's formats with real DICOM CT series."""
    output:
        tables=expand(f"{PHANTOM_DIR}/{{name}}", name=COHORT_FILES),
        truth=f"{PHANTOM_DIR}/phantom_truth.csv",
        dicom=directory(f"{PHANTOM_DIR}/dicom"),
    log:
        f"{LOGS}/data/phantom_cohort.log",
    benchmark:
        f"{BENCH}/phantom_cohort.tsv"
    conda:
        "../envs/data.yaml"
    threads: config["cohort"]["phantom"]["workers"]
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        phantom=config["cohort"]["phantom"],
    script:
        "../scripts/make_phantom_cohort.py"


rule index_series:
    """Which CT series lie where: headers only, so a real NLST tree is indexed quickly."""
    input:
        dicom=dicom_dir(),
    output:
        f"{RESULTS}/data/series_index.csv",
    log:
        f"{LOGS}/data/index_series.log",
    benchmark:
        f"{BENCH}/index_series.tsv"
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    script:
        "../scripts/index_series.py"


rule select_cohort:
    """Baseline/follow-up pairs of the same nodule, labels, patient-level splits, EHR and reports."""
    input:
        prsn=cohort_table("nlst_prsn.csv"),
        sctabn=cohort_table("nlst_sctabn.csv"),
        sctabnc=cohort_table("nlst_sctabnc.csv"),
        locations=cohort_table("nodule_locations.csv"),
    output:
        pairs=f"{RESULTS}/data/pairs.csv",
        counts=report(
            f"{RESULTS}/data/cohort_counts.csv",
            category="Data",
            caption="../report/cohort_counts.rst",
        ),
        excluded=f"{RESULTS}/data/excluded.csv",
    log:
        f"{LOGS}/data/select_cohort.log",
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        split=config["cohort"]["split"],
        follow_up_years=config["cohort"]["follow_up_years"],
        nodule_size_mm=config["cohort"]["nodule_size_mm"],
        max_test_pairs_per_subject=config["cohort"]["max_test_pairs_per_subject"],
    script:
        "../scripts/select_cohort.py"


rule crop_nodules:
    """Nodule-centred 2D crops of every pair, HU-windowed to [-1, 1]."""
    input:
        pairs=rules.select_cohort.output.pairs,
        series_index=rules.index_series.output[0],
        dicom=dicom_dir(),
    output:
        crops=f"{RESULTS}/data/crops.npz",
        table=f"{RESULTS}/data/crops.csv",
    log:
        f"{LOGS}/data/crop_nodules.log",
    benchmark:
        f"{BENCH}/crop_nodules.tsv"
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        crop=config["crop"],
    script:
        "../scripts/crop_nodules.py"


rule split_data:
    """The cohort's files cut apart: train/val for every training and selection rule, test for scoring."""
    input:
        pairs=rules.select_cohort.output.pairs,
        crops=rules.crop_nodules.output.crops,
        crops_table=rules.crop_nodules.output.table,
    output:
        trainval_pairs=TRAIN_PAIRS,
        trainval_crops=TRAIN_CROPS,
        trainval_crops_table=split_file("trainval", "crops_table"),
        test_pairs=TEST_PAIRS,
        test_crops=TEST_CROPS,
        test_crops_table=TEST_CROPS_TABLE,
    log:
        f"{LOGS}/data/split_data.log",
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/split_data.py"


rule plot_contact_sheet:
    """Baseline beside follow-up crops per label, so a person can see the data."""
    input:
        crops=rules.crop_nodules.output.crops,
        pairs=rules.select_cohort.output.pairs,
    output:
        png=report(
            f"{RESULTS}/figures/contact_sheet.png",
            category="Data",
            caption="../report/contact_sheet.rst",
        ),
        pdf=f"{RESULTS}/figures/contact_sheet.pdf",
    log:
        f"{LOGS}/data/plot_contact_sheet.log",
    conda:
        "../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/plot_contact_sheet.py"


DATA_TARGETS = [
    rules.select_cohort.output.counts,
    rules.crop_nodules.output.crops,
    *rules.split_data.output,
    rules.plot_contact_sheet.output.png,
]
