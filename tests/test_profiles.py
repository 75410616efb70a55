"""Profiles and per-rule compute declarations: what local, GPU and SLURM runs rely on."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import ROOT, SNAKEMAKE

DEFAULT = ROOT / "profiles/default/config.yaml"
SLURM = ROOT / "profiles/slurm/config.yaml"
# Rules that train or sample a model on the configured device.
GPU_RULE_PREFIXES = ("train_", "generate_", "sample_")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def rules():
    out = subprocess.run([sys.executable, str(ROOT / "tools/rules_json.py")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [r for r in json.loads(out.stdout) if r["runs"]]


def dry_run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    config = load(ROOT / "config.yaml")
    config["cohort"]["phantom"].update(n_participants=40, matrix=128)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [*SNAKEMAKE, "--directory", str(tmp_path), "--configfile", str(tmp_path / "config.yaml"), "-n", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)


def test_profile_keys_are_snakemake_options():
    from snakemake.cli import get_argument_parser

    options = {s for action in get_argument_parser()._actions for s in action.option_strings}
    for path in (DEFAULT, SLURM):
        for key in load(path):
            assert f"--{key}" in options, f"{path.relative_to(ROOT)}: {key!r} is no snakemake option"


def test_workflow_profile_cannot_override_the_slurm_profile():
    # Snakemake applies profiles/default on top of --profile profiles/slurm, key by key.
    default, slurm = load(DEFAULT), load(SLURM)
    assert not set(default) & set(slurm), f"keys in both profiles: {set(default) & set(slurm)}"
    assert default["cores"] == "all" and default["rerun-incomplete"] and not default["keep-going"]


def test_slurm_profile_settings():
    slurm = load(SLURM)
    assert slurm["executor"] == "slurm" and slurm["jobs"] >= 1
    # A site without accounting (SLURM-local.md): no account, job states from squeue.
    assert slurm["slurm-no-account"] is True
    assert slurm["slurm-status-command"] == "squeue"
    resources = slurm["default-resources"]
    assert resources["slurm_partition"]
    assert resources["mem_mb"] > 0 and resources["runtime"] > 0


def test_slurm_profile_reaches_every_job(tmp_path):
    out = dry_run(tmp_path, "--profile", str(ROOT / "profiles/slurm"), "results/data/crops.npz")
    assert out.returncode == 0, out.stderr
    assert "workflow specific profile" in out.stderr  # profiles/default was applied as well
    partition = load(SLURM)["default-resources"]["slurm_partition"]
    jobs = out.stdout.count("\nrule ")
    assert jobs >= 4 and out.stdout.count(f"slurm_partition={partition}") == jobs, out.stdout


def test_negative_resource_in_a_profile_is_refused_naming_it(tmp_path):
    profile = tmp_path / "badprofile"
    profile.mkdir()
    slurm = load(SLURM)
    slurm["default-resources"]["mem_mb"] = -5
    (profile / "config.yaml").write_text(yaml.safe_dump(slurm))
    out = dry_run(tmp_path, "--profile", str(profile))
    assert out.returncode != 0
    assert "Resource 'mem_mb' was given value '-5', which is not a positive integer" in out.stderr


def test_every_rule_declares_threads_resources_log_and_conda(rules):
    assert len(rules) >= 5
    for rule in rules:
        name = rule["name"]
        assert rule["threads"], f"rule {name} declares no threads"
        assert {"mem_mb", "runtime"} <= set(rule["resources"]), f"rule {name}: resources {rule['resources']}"
        assert rule["log"], f"rule {name} has no log"
        assert rule["conda"], f"rule {name} has no conda env"


def test_training_and_sampling_rules_can_ask_for_a_gpu(rules):
    device_rules = [r for r in rules if "device" in r["params"] and r["name"].startswith(GPU_RULE_PREFIXES)]
    assert device_rules, "no training/sampling rule found"
    for rule in device_rules:
        assert "gpu" in rule["resources"], f"rule {rule['name']} trains/samples but has no gpu resource"


class FakeResources(dict):
    __getattr__ = dict.__getitem__


@pytest.mark.parametrize("gpu", [0, 1])
def test_plugin_turns_the_gpu_resource_into_sbatch_gpus(gpu):
    # How snakemake-executor-plugin-slurm 2.8.0 reads the rules' `gpu` resource.
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    job = SimpleNamespace(threads=2, resources=FakeResources(gpu=gpu, mem_mb=4000, runtime=60))
    params = dict(run_uuid="u", slurm_logfile="l", comment_str="c", account="", partition=" -p debug", workdir="w")
    call = get_submit_command(job, params) + set_gres_string(job)
    assert "--cpus-per-task=2" in call and "--mem 4000" in call and "-t 60" in call
    assert ("--gpus=1" in call) == bool(gpu) and "--gpus=0" not in call
