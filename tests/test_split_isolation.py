"""The test split is read only by the rules that score it (issue 12, point 3).

Every job of the workflow's DAG, as Snakemake plans it, is checked: no rule that trains a model or
selects a setting may read a file that holds test data, directly or through any file derived from
one. split_data is the one place the whole cohort is cut into its train/val and test parts.
"""

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT

from namd.data.crops import load_crops, save_crops
from namd.data.dataset import Cohort, CohortDataError, ImageDataset, PairDataset
from namd.data.nlst import EHR_FEATURES
from namd.data.splits import PARTS, SplitDataError, write_split_files

CONFIGS = {"default": ["config.yaml"], "tiny": ["config.yaml", "configs/tiny.yaml"],
           "paper": ["config.yaml", "configs/paper.yaml"]}

TRAINING_PREFIXES = ("train_", "select_")
#: the rules that train a model or choose a setting today; a rule named train_* or select_* is one too
TRAINING_RULES = ("train_vae", "train_ldm_unconditional", "train_method", "train_classifier", "select_cohort")
#: the rule that draws the split reads the whole raw cohort: it is where the parts come from
SPLIT_MAKERS = ("select_cohort",)
#: the rules that read the raw cohort (every subject, every screen)
RAW_READERS = ("select_cohort", "index_series", "crop_nodules")
#: the only rule whose outputs are not tainted by its whole-cohort inputs: it writes the parts apart
SPLITTER = "split_data"


@dataclass(frozen=True)
class Job:
    rule: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def holds_test_data(path: str) -> bool:
    """Files that hold test pairs by where they live: the whole cohort's data files, the test part,
    test latents, generated follow-ups (test pairs) and everything scored (results/eval)."""
    if path.startswith("results/data/"):
        return not path.startswith("results/data/trainval/")
    return (path.startswith(("results/generated/", "results/eval/"))
            or (path.startswith("results/latents/") and path.endswith("/test.npz")))


def is_training(rule: str) -> bool:
    return rule.startswith(TRAINING_PREFIXES) or rule in TRAINING_RULES


def tainted_files(jobs: list[Job]) -> dict[str, str]:
    """Every file of the DAG that holds or derives from test data, with why (a fixpoint over the jobs)."""
    origin = {f: "holds test data" for job in jobs for f in (*job.inputs, *job.outputs) if holds_test_data(f)}
    for job in jobs:
        if job.rule in RAW_READERS:
            origin.update({f: "the raw cohort" for f in job.inputs if not f.startswith("results/")})
        if job.rule == "phantom_cohort":
            origin.update({f: "the raw cohort" for f in job.outputs})
    changed = True
    while changed:
        changed = False
        for job in jobs:
            if job.rule == SPLITTER:
                continue
            read = [f for f in job.inputs if f in origin]
            for out in job.outputs:
                if read and out not in origin:
                    origin[out] = f"written by {job.rule} from {read[0]}"
                    changed = True
    return origin


def leaks(jobs: list[Job]) -> list[str]:
    origin = tainted_files(jobs)
    return [f"{job.rule} -> {', '.join(job.outputs)} reads {f} ({origin[f]})"
            for job in jobs if is_training(job.rule) and job.rule not in SPLIT_MAKERS
            for f in job.inputs if f in origin]


def workflow_jobs(configfiles: list[str]) -> tuple[list[Job], list[str]]:
    """The jobs of the default target in a fresh directory, and every rule's name, as Snakemake plans them."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, Quietness, ResourceSettings

    with tempfile.TemporaryDirectory() as workdir:
        shutil.copy(ROOT / "config.yaml", Path(workdir) / "config.yaml")  # the Snakefile's configfile:
        with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
            workflow_api = api.workflow(
                resource_settings=ResourceSettings(cores=1, default_resources={}),
                config_settings=ConfigSettings(configfiles=[ROOT / c for c in configfiles]),
                snakefile=ROOT / "Snakefile", workdir=Path(workdir))
            workflow_api.dag(DAGSettings())
            # the DAG as `snakemake -n` builds it (tools/rules_json.py reads rules the same way)
            workflow = workflow_api._workflow
            workflow._prepare_dag(forceall=False, ignore_incomplete=True, lock_warn_only=True, nolock=True)
            workflow._build_dag()
            jobs = [Job(job.rule.name, tuple(map(str, job.input)), tuple(map(str, job.output)))
                    for job in workflow.dag.jobs]
            return jobs, [rule.name for rule in workflow.rules]


@pytest.fixture(scope="module", params=list(CONFIGS))
def planned(request):
    return workflow_jobs(CONFIGS[request.param])


def test_no_training_or_selection_rule_reads_test_data(planned):
    jobs, _ = planned
    assert not leaks(jobs), "\n".join(leaks(jobs))


def test_every_training_rule_is_planned_and_so_checked(planned):
    jobs, rules = planned
    planned_rules = {job.rule for job in jobs}
    assert set(TRAINING_RULES) <= set(rules), f"renamed or gone: {set(TRAINING_RULES) - set(rules)}"
    unchecked = sorted(r for r in rules if is_training(r) and r not in planned_rules)
    assert not unchecked, f"not in the default target's DAG, so not checked: {unchecked}"


def test_scoring_rules_read_the_test_part_and_training_rules_the_trainval_part(planned):
    jobs, _ = planned
    reads = {job.rule: set() for job in jobs}
    for job in jobs:
        reads[job.rule] |= set(job.inputs)
    for rule in ("train_vae", "train_method", "train_ldm_unconditional"):
        assert "results/data/trainval/pairs.csv" in reads[rule]
    for rule in ("generate_followups", "evaluate_generated", "table1", "figure2", "figure3", "figure_samples"):
        assert "results/data/test/pairs.csv" in reads[rule], rule
    assert "results/data/pairs.csv" not in reads["generate_followups"] | reads["table1"]


def test_the_check_catches_a_direct_and_a_derived_leak():
    split = Job("split_data", ("results/data/pairs.csv",),
                ("results/data/trainval/pairs.csv", "results/data/test/pairs.csv"))
    clean = [Job("select_cohort", ("resources/phantom/nlst_prsn.csv",), ("results/data/pairs.csv",)), split,
             Job("train_vae", ("results/data/trainval/pairs.csv",), ("results/models/vae",))]
    assert leaks(clean) == []
    direct = Job("train_classifier", ("results/data/pairs.csv",), ("results/models/classifier",))
    assert leaks([*clean, direct]) == [
        "train_classifier -> results/models/classifier reads results/data/pairs.csv (holds test data)"]
    derived = [Job("summarise", ("results/data/test/pairs.csv",), ("results/summary.csv",)),
               Job("rescale", ("results/summary.csv",), ("results/scale.json",)),
               Job("select_lr", ("results/scale.json", "results/data/trainval/pairs.csv"), ("results/lr.json",))]
    assert leaks([*clean, *derived]) == [
        "select_lr -> results/lr.json reads results/scale.json (written by rescale from results/summary.csv)"]
    truth = Job("train_x", ("resources/phantom/phantom_truth.csv",), ("results/models/x",))
    raw = Job("phantom_cohort", (), ("resources/phantom/phantom_truth.csv",))
    assert len(leaks([*clean, raw, truth])) == 1


# ---- split_data and the test-only cohort -----------------------------------------------------

def cohort_files(tmp_path: Path, n: int = 18, size: int = 8) -> tuple[Path, Path, Path]:
    """A full pairs.csv / crops.npz / crops.csv of `n` pairs, splits interleaved, record complete."""
    rng = np.random.default_rng(0)
    splits = np.array(["train", "val", "test"])[np.arange(n) % 3]
    pairs = pd.DataFrame({
        "pair_id": [f"{100 + i}_N1_T0T1" for i in range(n)], "pid": [str(100 + i) for i in range(n)],
        "split": splits, "label": rng.integers(0, 2, n),
        "SCT_PRE_ATT": rng.choice(["Soft", "Ground Glass", "Part Solid"], n),
        "SCT_EPI_LOC": rng.choice(["Right Upper Lobe", "Lingula", "Left Lower Lobe"], n),
        "SCT_LONG_DIA": rng.uniform(4, 30, n).round(1), "SCT_PERP_DIA": rng.uniform(3, 20, n).round(1),
        "SCT_MARGINS": rng.choice(["Smooth", "Spiculated"], n), "age": rng.integers(55, 75, n),
        "gender": rng.choice(["Male", "Female"], n),
        **{f: rng.choice(["Yes", "No"], n) for f in ("diagemph", "famfather", "fammother", "fambrother",
                                                      "famsister", "famchild")},
        "SCT_LONG_DIA_follow": np.where(np.arange(n) % 4, rng.uniform(4, 30, n).round(1), np.nan),
        "report": [f"A nodule, {i} mm, is present." for i in range(n)],
    })
    assert set(EHR_FEATURES) <= set(pairs.columns)
    crops = {"pair_id": pairs["pair_id"].to_numpy(str),
             "baseline": rng.uniform(-1, 1, (n, 1, size, size)).astype(np.float32),
             "followup": rng.uniform(-1, 1, (n, 1, size, size)).astype(np.float32),
             "border_padded": np.arange(n) % 5 == 0}
    table = pd.DataFrame({"pair_id": pairs["pair_id"], "pixel_spacing_row_base": 0.7, "slice_base": np.arange(n)})
    paths = tmp_path / "pairs.csv", tmp_path / "crops.npz", tmp_path / "crops.csv"
    pairs.to_csv(paths[0], index=False)
    save_crops(crops, paths[1])
    table.to_csv(paths[2], index=False)
    return paths


def split_outputs(root: Path) -> dict:
    return {part: {"pairs": root / part / "pairs.csv", "crops": root / part / "crops.npz",
                   "crops_table": root / part / "crops.csv"} for part in PARTS}


def test_split_data_partitions_the_pairs_and_keeps_every_row_as_written(tmp_path):
    pairs_csv, crops_npz, crops_csv = cohort_files(tmp_path)
    out = split_outputs(tmp_path / "split")
    counts = write_split_files(pairs_csv, crops_npz, crops_csv, out)
    full = pd.read_csv(pairs_csv, dtype=str)
    parts = {part: pd.read_csv(files["pairs"], dtype=str) for part, files in out.items()}
    assert counts == {part: len(frame) for part, frame in parts.items()}
    trainval, test = set(parts["trainval"]["pair_id"]), set(parts["test"]["pair_id"])
    assert not trainval & test and trainval | test == set(full["pair_id"])
    assert set(parts["trainval"]["split"]) == {"train", "val"} and set(parts["test"]["split"]) == {"test"}
    assert not set(parts["trainval"]["pid"]) & set(parts["test"]["pid"])
    full_lines = pairs_csv.read_text().splitlines()
    crops = load_crops(crops_npz)
    for part, files in out.items():
        lines = files["pairs"].read_text().splitlines()
        assert lines[0] == full_lines[0] and set(lines[1:]) <= set(full_lines[1:])  # the rows, byte for byte
        arrays = load_crops(files["crops"])
        ids = parts[part]["pair_id"].tolist()
        assert arrays["pair_id"].tolist() == ids == pd.read_csv(files["crops_table"], dtype=str)["pair_id"].tolist()
        rows = [crops["pair_id"].tolist().index(p) for p in ids]
        for key in ("baseline", "followup", "border_padded"):
            np.testing.assert_array_equal(arrays[key], crops[key][rows])


def test_split_data_names_an_unknown_split_and_misaligned_crops(tmp_path):
    pairs_csv, crops_npz, crops_csv = cohort_files(tmp_path)
    out = split_outputs(tmp_path / "split")
    pairs = pd.read_csv(pairs_csv, dtype=str)
    pairs.assign(split=pairs["split"].where(pairs.index != 4, "tset")).to_csv(tmp_path / "typo.csv", index=False)
    with pytest.raises(SplitDataError, match=r"pair 104_N1_T0T1: split='tset'"):
        write_split_files(tmp_path / "typo.csv", crops_npz, crops_csv, out)
    pairs.drop(index=4).to_csv(tmp_path / "fewer.csv", index=False)
    with pytest.raises(SplitDataError, match=r"crops.npz is not aligned .* extra \['104_N1_T0T1'\]"):
        write_split_files(tmp_path / "fewer.csv", crops_npz, crops_csv, out)
    pairs.assign(pid=pairs["pid"].where(pairs.index != 5, "103")).to_csv(tmp_path / "shared.csv", index=False)
    with pytest.raises(SplitDataError, match="pid 103 has pairs in both"):
        write_split_files(tmp_path / "shared.csv", crops_npz, crops_csv, out)
    pairs.assign(split="train").to_csv(tmp_path / "no_test.csv", index=False)
    with pytest.raises(SplitDataError, match="no pair in split.s. test"):
        write_split_files(tmp_path / "no_test.csv", crops_npz, crops_csv, out)
    assert not (tmp_path / "split").exists()  # nothing written


def assert_same_items(a, b):
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key, value in x.items():
            assert torch.equal(value, y[key]) if isinstance(value, torch.Tensor) else value == y[key], key


def test_every_split_sees_the_same_tensors_from_its_part_as_from_the_full_files(tmp_path):
    """Training and generation are unchanged by the split: same rows, order and record statistics."""
    pairs_csv, crops_npz, crops_csv = cohort_files(tmp_path)
    out = split_outputs(tmp_path / "split")
    write_split_files(pairs_csv, crops_npz, crops_csv, out)
    full = Cohort.load(pairs_csv, crops_npz)
    trainval = Cohort.load(out["trainval"]["pairs"], out["trainval"]["crops"])
    test = Cohort.load(out["test"]["pairs"], out["test"]["crops"], stats_pairs=out["trainval"]["pairs"])
    for split, part in (("train", trainval), ("val", trainval), ("test", test)):
        assert_same_items(PairDataset(full, split), PairDataset(part, split))
        assert_same_items(ImageDataset(full, split), ImageDataset(part, split))
    assert torch.equal(test.features_followup, full.features_followup[2::3])


def test_a_test_only_cohort_without_statistics_serves_images_and_names_what_it_lacks(tmp_path):
    pairs_csv, crops_npz, crops_csv = cohort_files(tmp_path)
    out = split_outputs(tmp_path / "split")
    write_split_files(pairs_csv, crops_npz, crops_csv, out)
    cohort = Cohort.load(out["test"]["pairs"], out["test"]["crops"])
    assert cohort.baseline.shape == (6, 1, 8, 8) and len(cohort.indices("test")) == 6
    with pytest.raises(CohortDataError, match=r"test/pairs.csv: the training split is empty.*stats_pairs"):
        cohort.ehr
    with pytest.raises(CohortDataError, match=r"test/pairs.csv: the training split is empty"):
        Cohort.load(out["test"]["pairs"], out["test"]["crops"], stats_pairs=out["test"]["pairs"])


def test_a_pair_subset_keeps_the_splits_order_and_names_a_pair_outside_it(tmp_path):
    from namd.data.splits import seeded_subset, seeded_test_pairs

    pairs_csv, crops_npz, _ = cohort_files(tmp_path)
    cohort = Cohort.load(pairs_csv, crops_npz)
    test_ids = [item["pair_id"] for item in PairDataset(cohort, "test")]
    chosen = seeded_test_pairs(pairs_csv, 3, seed=23)
    assert chosen == [test_ids[i] for i in seeded_subset(len(test_ids), 3, 23)]  # what Figure 5 draws
    assert [item["pair_id"] for item in PairDataset(cohort, "test", chosen[::-1])] == chosen
    assert seeded_test_pairs(pairs_csv, 500, seed=1) == test_ids
    with pytest.raises(CohortDataError, match=r"1 pair\(s\) are not in the test split: \['nope'\]"):
        PairDataset(cohort, "test", [chosen[0], "nope"])
