"""The workflow itself: it plans, lints clean, and really runs on a tiny cohort."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from conftest import ROOT, SNAKEMAKE


def tiny_config(workdir: Path) -> Path:
    """config.yaml with the configs/tiny.yaml overlay, as one file in the working directory."""
    from namd.config import load_config

    config = load_config(ROOT / "config.yaml", ROOT / "configs" / "tiny.yaml")
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [*SNAKEMAKE, "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)


def test_lint_is_clean(tmp_path):
    tiny_config(tmp_path)
    out = run_snakemake(tmp_path, "--lint")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Congratulations" in out.stdout + out.stderr


def test_dry_run_plans_the_data_stage(tmp_path):
    tiny_config(tmp_path)
    out = run_snakemake(tmp_path, "-n", "--cores", "1")
    assert out.returncode == 0, out.stderr
    for rule in ("phantom_cohort", "index_series", "select_cohort", "crop_nodules", "plot_contact_sheet"):
        assert rule in out.stdout


def test_config_typo_stops_the_workflow_naming_the_key(tmp_path):
    path = tiny_config(tmp_path)
    config = yaml.safe_load(path.read_text())
    config["crop"]["windw"] = [0, 1]
    path.write_text(yaml.safe_dump(config))
    out = run_snakemake(tmp_path, "-n", "--cores", "1")
    assert out.returncode != 0
    assert "windw" in out.stdout + out.stderr


def test_a_missing_llm_or_weight_path_stops_the_plan_naming_the_key(tmp_path):
    path = tiny_config(tmp_path)
    config = yaml.safe_load(path.read_text())
    for key, value in (("llm", str(tmp_path / "no-such-llm")), ("unet", {"pretrained": "./no-such-unet"})):
        broken = yaml.safe_load(yaml.safe_dump(config))
        if key == "llm":
            broken["ldm"]["llm"] = value
        else:
            broken["ldm"]["unet"].update(value)
        path.write_text(yaml.safe_dump(broken))
        out = run_snakemake(tmp_path, "-n", "--cores", "1")
        assert out.returncode != 0
        named = "ldm.llm" if key == "llm" else "ldm.unet.pretrained"
        assert f"config key '{named}'" in out.stdout + out.stderr


def test_tiny_workflow_runs_for_real(tmp_path):
    """Every stage of the default DAG on a tiny cohort with tiny models: the CI end-to-end run."""
    tiny_config(tmp_path)
    out = run_snakemake(tmp_path, "--cores", "2")
    assert out.returncode == 0, out.stderr[-3000:]
    pairs = pd.read_csv(tmp_path / "results/data/pairs.csv", dtype={"pid": str})
    counts = pd.read_csv(tmp_path / "results/data/cohort_counts.csv")
    assert counts.set_index("split").loc["total", "pairs"] == len(pairs) > 0
    assert pairs.groupby("pid")["split"].nunique().max() == 1
    with np.load(tmp_path / "results/data/crops.npz") as crops:
        assert crops["baseline"].shape == (len(pairs), 1, 32, 32)
        assert crops["baseline"].min() >= -1 and crops["baseline"].max() <= 1
    parts = {part: pd.read_csv(tmp_path / f"results/data/{part}/pairs.csv", dtype={"pid": str})
             for part in ("trainval", "test")}
    assert set(parts["trainval"]["split"]) == {"train", "val"} and set(parts["test"]["split"]) == {"test"}
    assert sorted([*parts["trainval"]["pair_id"], *parts["test"]["pair_id"]]) == sorted(pairs["pair_id"])
    with np.load(tmp_path / "results/latents/aligned/test.npz") as latents:
        assert latents["pair_id"].tolist() == parts["test"]["pair_id"].tolist()
    from namd.training import file_fingerprint  # the VAE really trained on the train/val files

    trained_on = file_fingerprint(tmp_path / "results/data/trainval/pairs.csv",
                                  tmp_path / "results/data/trainval/crops.npz")
    assert trained_on in (tmp_path / "results/models/vae_aligned/model_card.md").read_text()
    assert (tmp_path / "results/figures/contact_sheet.png").stat().st_size > 10_000
    assert (tmp_path / "logs/data/crop_nodules.log").read_text().strip()
    k = yaml.safe_load((tmp_path / "config.yaml").read_text())["generation"]["k_seeds"]
    test_pairs = (pairs["split"] == "test").sum()
    with np.load(tmp_path / "results/generated/namd.npz") as generated:
        assert generated["images"].shape == (test_pairs, k, 1, 32, 32)
    assert (tmp_path / "results/models/namd/unet/config.json").exists()
    assert (tmp_path / "results/models/vae_aligned/model_card.md").exists()
    assert (tmp_path / "results/figures/samples.png").stat().st_size > 10_000
    figure5 = yaml.safe_load((tmp_path / "config.yaml").read_text())["evaluation"]["figure5"]
    curves = pd.read_csv(tmp_path / "results/figures/figure5_curves.csv")
    assert curves["k"].max() == figure5["k_max"] > k  # Figure 5 draws its own samples, beyond Table 1's K
    assert curves["pair_id"].nunique() == min(figure5["pairs"], test_pairs)
    quoted = subprocess.run([sys.executable, str(ROOT / "tools/results_markdown.py"), "results"], cwd=tmp_path,
                            capture_output=True, text=True)  # the Markdown README quotes, from this run's files
    assert quoted.returncode == 0, quoted.stderr
    assert quoted.stdout.count("| NAMD (Ours) |") == quoted.stdout.count("| Real follow-up LDCT |") == 2
    assert quoted.stdout.count("\n|---") == 2

    # the README's worked example: a test pair of the run through `namd example` and `namd predict`
    pair_id = pairs.loc[pairs["split"] == "test", "pair_id"].iloc[0]
    cli = [sys.executable, "-m", "namd.cli"]
    shown = subprocess.run([*cli, "example", pair_id, "--out", "example"], cwd=tmp_path, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    command = shown.stdout.splitlines()[-1].split()[2:]  # drop "namd predict"
    for _ in range(2):
        predicted = subprocess.run([*cli, "predict", *command, "--samples", "2", "--steps", "3", "--no-progress",
                                    "--overwrite"], cwd=tmp_path, capture_output=True, text=True)
        assert predicted.returncode == 0, predicted.stderr
        out = tmp_path / "predictions" / pair_id
        result = yaml.safe_load((out / "prediction.json").read_text())
        assert 0 <= result["probability_mean"] <= 1 and (out / "summary.png").exists()


def test_paper_config_is_valid_and_plans_the_whole_paper(tmp_path):
    from namd.config import load_config

    config = load_config(ROOT / "config.yaml", ROOT / "configs" / "paper.yaml")
    assert config["crop"]["size"] == 64 and config["ldm"]["unet"]["block_out_channels"] == [320, 640, 1280, 1280]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    out = run_snakemake(tmp_path, "-n", "--cores", "1")
    assert out.returncode == 0, out.stderr[-3000:]
    for rule in ("train_vae", "train_ldm_unconditional", "train_method", "generate_followups", "table1", "figure3"):
        assert rule in out.stdout
