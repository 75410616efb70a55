# Paths and helpers shared by every rule file.
import subprocess
import sys

from snakemake.exceptions import WorkflowError

# `import namd` without installing the package (envs/*.yaml, used under `snakemake --use-conda`,
# install only third-party packages), in two places:
# - the rule files themselves (this file imports namd.budget and namd.methods while the Snakefile
#   is parsed): the workflow's folder goes first on this process's sys.path, here;
# - a rule's `script:` (scripts/*.py, run by another Python: the rule's conda env, or a container):
#   Snakemake appends the script's own folder, scripts/, to its sys.path, and scripts/namd is a
#   symlink to ../namd. That finds the package whatever else Snakemake hands on (it passes this
#   process's sys.path too, but not into a container).
sys.path.insert(0, workflow.basedir)
from namd.budget import STAGE1, method_params, trainer_budget
from namd.methods import REUSES, trained_model_of, upstream_of
from namd.sources import check_config_sources

# the schema cannot see files: an LLM or weight path that does not exist stops the run here, named
try:
    check_config_sources(config)
except FileNotFoundError as err:
    raise WorkflowError(str(err)) from None

RESULTS = "results"
LOGS = "logs"
BENCH = "benchmarks/out"

PHANTOM_DIR = "resources/phantom"
COHORT_FILES = [
    "nlst_prsn.csv",
    "nlst_sctabn.csv",
    "nlst_sctabnc.csv",
    "nodule_locations.csv",
]


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


#: the cohort cut into a train/val part and a test part by split_data. Training and selection
#: rules read only the first, scoring rules the second; tests/test_split_isolation.py holds them to it
SPLIT_PARTS = ("trainval", "test")


def split_file(part, name):
    """One file of a part of the cohort: name is pairs, crops or crops_table."""
    return (
        f"{RESULTS}/data/{part}/"
        + {"pairs": "pairs.csv", "crops": "crops.npz", "crops_table": "crops.csv"}[name]
    )


TRAIN_PAIRS = split_file("trainval", "pairs")
TRAIN_CROPS = split_file("trainval", "crops")
TEST_PAIRS = split_file("test", "pairs")
TEST_CROPS = split_file("test", "crops")
TEST_CROPS_TABLE = split_file("test", "crops_table")


def calibrated_reference(wildcards):
    """The phantom's truth and the training pairs: the calibrated generator's row (none on NLST)."""
    if config["cohort"]["source"] != "phantom":
        return {}
    return {
        "truth": rules.phantom_cohort.output.truth,
        "train_pairs": TRAIN_PAIRS,
        "train_crops": TRAIN_CROPS,
        "train_crops_table": split_file("trainval", "crops_table"),
    }


def latents_file(vae, split):
    """Cached latents of one VAE for one part of the cohort (split: trainval or test)."""
    return f"{RESULTS}/latents/{vae}/{split}.npz"


STATE = f"{RESULTS}/.state"


def state_dir(name):
    """Resumable training state: not a declared output, so Snakemake keeps it across a re-run."""
    return f"{STATE}/{name}"


#: `ldm` keys only the paired stage reads: stage 1 (Eq. 9, null context, no baseline) is trained without them,
#: so switching one does not retrain it
PAIRED_STAGE_ONLY = ("guidance", "diffusion_target")
#: the VAE -> latents -> unconditional-stage chain gates NAMD, the longest path of the DAG:
#: started first, it runs while the baselines and the classifier fill the other cores
CRITICAL_PATH_PRIORITY = 10
#: then every method's training: the longest single jobs (ImageFlowNet's) must not be left for the
#: end, where one core would run them alone while the other idles
TRAIN_METHOD_PRIORITY = 5

#: the trainer's precision keys (compute.precision, compute.gradient_checkpointing), for the training rules
TRAIN_PRECISION = {
    "precision": config["compute"]["precision"],
    "gradient_checkpointing": config["compute"]["gradient_checkpointing"],
}
TRAIN_RESOURCES = dict(
    mem_mb=config["compute"]["train_mem_mb"],
    runtime=config["compute"]["train_runtime_min"],
    gpu=config["compute"]["gpus_per_job"],
)


def vae_params(variant):
    """Shared VAE settings with one variant's loss weights on top (aligned / unaligned)."""
    shared = {k: v for k, v in config["vae"].items() if k != "variants"}
    return {**shared, **config["vae"]["variants"][variant], "name": f"vae_{variant}"}


wildcard_constraints:
    vae="|".join(config["vae"]["variants"]),


METHODS = list(config["methods"])
for _row in METHODS:
    if trained_model_of(_row) not in METHODS:
        raise WorkflowError(
            f"config methods: {_row} samples the trained {trained_model_of(_row)!r} model, "
            f"which is not among the methods ({', '.join(METHODS)}); add it or drop {_row}"
        )


wildcard_constraints:
    method="|".join(METHODS),


def method_files(part, method):
    """One part's data (trainval to train, test to generate) for `method`, plus the trained models it
    starts from (registry: namd.methods.UPSTREAM)."""
    needs = upstream_of(method)
    vae = config["methods"][method].get("vae")
    files = {"pairs": split_file(part, "pairs"), "crops": split_file(part, "crops")}
    if part == "test":
        # the record is standardised as in training
        files["stats_pairs"] = TRAIN_PAIRS
    if "vae" in needs:
        files["latents"] = latents_file(vae, part)
        files["vae"] = f"{RESULTS}/models/vae_{vae}"
    if "ldm_unconditional" in needs:
        files["ldm_unconditional"] = f"{RESULTS}/models/ldm_unconditional_{vae}"
    if "perceptual" in needs:
        files["perceptual"] = rules.train_perceptual.output[0]
    return files


def training_inputs(wildcards):
    return method_files("trainval", wildcards.method)


def generation_files(method):
    """The test inputs of the method whose trained model this row samples, and that model's folder."""
    trained = trained_model_of(method)
    return {**method_files("test", trained), "model": f"{RESULTS}/models/{trained}"}


def generation_inputs(wildcards):
    return generation_files(wildcards.method)


def method_upstream(method, input):
    return {key: str(input[key]) for key in upstream_of(method)}


def check_slurm_partitions():
    """sbatch only says 'invalid partition'; name the resource that asked for it, before any job."""
    if workflow.executor_plugin.name != "slurm":
        return
    wanted = {
        job.resources.get("slurm_partition") for job in workflow.dag.needrun_jobs()
    } - {None}
    known = set(
        subprocess.run(
            ["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    if wanted - known:
        raise WorkflowError(
            f"resource slurm_partition={', '.join(sorted(wanted - known))} (profile default-resources, "
            f"--default-resources or --set-resources) is not a partition of this cluster; "
            f"sinfo lists: {', '.join(sorted(known))}"
        )
