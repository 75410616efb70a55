# Paths and helpers shared by every rule file.

RESULTS = "results"
LOGS = "logs"
BENCH = "benchmarks/out"

PHANTOM_DIR = "resources/phantom"
COHORT_FILES = ["nlst_prsn.csv", "nlst_sctabn.csv", "nlst_sctabnc.csv", "nodule_locations.csv"]


def cohort_dir():
    """The raw NLST-layout folder: the phantom the workflow writes, or a user's NLST copy."""
    if config["cohort"]["source"] == "phantom":
        return PHANTOM_DIR
    return config["cohort"]["nlst_dir"]


def cohort_table(name):
    return f"{cohort_dir()}/{name}"


def dicom_dir():
    if config["cohort"]["source"] == "phantom":
        return f"{PHANTOM_DIR}/dicom"
    return config["cohort"].get("dicom_dir") or f"{config['cohort']['nlst_dir']}/dicom"
