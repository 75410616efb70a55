"""McWGAN's perceptual network: trained on real crops, loaded frozen by McWGAN, never the evaluator."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT
from safetensors.torch import save_file
from scipy.stats import spearmanr

from namd.data.crops import save_crops
from namd.data.dataset import Cohort, ImageDataset
from namd.methods.base import DataSpec, MethodContext
from namd.methods.mcwgan import McWGAN
from namd.models.perceptual import (
    CONFIG_KEY,
    FEATURE_INDEX,
    TARGET_FEATURES,
    PerceptualFeatures,
    build_perceptual_net,
)
from namd.stages.perceptual import train_perceptual

S = 16
PARAMS = {"name": "resnet18", "pretrained_file": None, "width": 8, "blocks": 1, "epochs": 25, "batch_size": 8,
          "lr": 3e-3, "weight_decay": 0.0}
RECORD = {"SCT_PRE_ATT": "Soft", "SCT_EPI_LOC": "Right Upper Lobe", "SCT_MARGINS": "Smooth", "age": 64,
          "gender": "Female", "diagemph": "No", "famfather": "No", "fammother": "No", "fambrother": "No",
          "famsister": "No", "famchild": "No", "report": "a nodule"}


pytestmark = pytest.mark.usefixtures("one_thread")


def disc(diameter_mm: float, rng) -> np.ndarray:
    """A bright disc of the given size (1 pixel = 2 mm) on noisy air, in [-1, 1]."""
    yy, xx = np.mgrid[:S, :S] - (S - 1) / 2
    image = np.where(np.hypot(yy, xx) <= diameter_mm / 4, 0.6, -0.9) + rng.normal(0, 0.05, (S, S))
    return image.clip(-1, 1).astype(np.float32)[None]


@pytest.fixture(scope="module")
def cohort_files(tmp_path_factory):
    """40 pairs (28 train, 8 val, 4 test) whose crops show a disc as large as the record says."""
    root = tmp_path_factory.mktemp("perceptual")
    rng = np.random.default_rng(0)
    rows, baseline, followup = [], [], []
    for i in range(40):
        long_base = float(rng.uniform(4, 24))
        long_follow = long_base * (1.3 if i % 3 == 0 else 1.0)
        rows.append({**RECORD, "pair_id": f"P{i}", "pid": str(100 + i),
                     "split": "train" if i < 28 else "val" if i < 36 else "test", "label": int(i % 3 == 0),
                     "SCT_LONG_DIA": round(long_base, 1), "SCT_PERP_DIA": round(0.8 * long_base, 1),
                     "SCT_LONG_DIA_follow": round(long_follow, 1), "SCT_PERP_DIA_follow": round(0.8 * long_follow, 1)})
        baseline.append(disc(long_base, rng))
        followup.append(disc(long_follow, rng))
    pairs = pd.DataFrame(rows)
    pairs.to_csv(root / "pairs.csv", index=False)
    save_crops({"pair_id": pairs["pair_id"].to_numpy(), "baseline": np.stack(baseline), "followup": np.stack(followup),
                "border_padded": np.zeros(len(pairs), bool)}, root / "crops.npz")
    return root / "pairs.csv", root / "crops.npz"


@pytest.fixture(scope="module")
def trained(cohort_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "perceptual"
    scores = train_perceptual(*cohort_files, out, out.parent / "state", PARAMS, seed=3)
    return out, scores


def test_training_writes_a_timm_folder_with_its_validation_scores(trained):
    out, scores = trained
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "history.csv", "model_card.md",
                                               "validation.json"}
    assert not list(out.parent.glob(".perceptual.*"))  # the temporary folder is gone
    config = json.loads((out / "config.json").read_text())
    assert config[CONFIG_KEY]["targets"] == ["label", *TARGET_FEATURES]
    assert config["model_args"]["in_chans"] == 1 and config["pretrained_cfg"]["input_size"] == [1, S, S]
    validation = json.loads((out / "validation.json").read_text())
    history = pd.read_csv(out / "history.csv")
    assert validation["best_epoch"] == history["val_loss"].idxmin() == scores["best_epoch"]
    assert validation["loss"] == pytest.approx(history["val_loss"].min())
    assert {"bce", *(f"mse_{name}" for name in TARGET_FEATURES)} <= set(validation)


def test_features_describe_the_nodule_on_validation_crops(trained, cohort_files):
    out, _ = trained
    val = ImageDataset(Cohort.load(*cohort_files), "val")
    with torch.no_grad():
        predicted = PerceptualFeatures.load(out).outputs(val.images)[:, 1].numpy()
    truth = val.features[:, FEATURE_INDEX[0]].numpy()  # log long diameter, z-scored
    assert spearmanr(predicted, truth).statistic > 0.8


def test_mcwgan_loads_it_and_its_perceptual_loss_trains_only_the_predictor(trained):
    out, _ = trained
    torch.manual_seed(0)
    method = McWGAN({"base_channels": 8, "channel_mults": [1, 2], "critic_widths": [8, 16]}, DataSpec(image_size=S),
                    MethodContext(upstream={"perceptual": str(out)}))
    assert method.lambda_perc == 1.0 and str(out) in method.card_notes[0]
    g = torch.Generator().manual_seed(1)
    baseline, real = (torch.rand(4, 1, S, S, generator=g) * 2 - 1 for _ in range(2))
    loss = method._perceptual(method.predict(baseline), real)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.predictor.parameters())
    frozen = method._loss_nets["perceptual"]
    assert not frozen.training and all(not p.requires_grad and p.grad is None for p in frozen.parameters())
    assert not any("perceptual" in k for k in method.state_dict())


def test_existing_output_is_refused_and_left_alone(trained, cohort_files):
    out, _ = trained
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="perceptual"):
        train_perceptual(*cohort_files, out, out.parent / "state2", PARAMS, seed=3)
    assert (out / "model.safetensors").read_bytes() == before


def test_pretrained_file_is_adapted_by_timm(tmp_path):
    import timm

    rgb = timm.create_model("resnet18", in_chans=3, num_classes=1000, stem_width=4, channels=(4, 8, 16, 32),
                            layers=(1, 1, 1, 1))
    save_file(rgb.state_dict(), tmp_path / "weights.safetensors")
    net = build_perceptual_net(image_size=S, width=4, blocks=1, pretrained_file=tmp_path / "weights.safetensors")
    assert torch.allclose(net.conv1.weight, rgb.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(net.layer4[0].conv2.weight, rgb.layer4[0].conv2.weight)
    assert net.fc.out_features == 1 + len(TARGET_FEATURES)
    with pytest.raises(ValueError, match="do not fit"):
        build_perceptual_net(image_size=S, width=8, blocks=1, pretrained_file=tmp_path / "weights.safetensors")
    with pytest.raises(FileNotFoundError, match="perceptual.pretrained_file"):
        build_perceptual_net(image_size=S, pretrained_file=tmp_path / "missing.safetensors")


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="perceptual.name: 'no_such_net'"):
        build_perceptual_net(image_size=S, name="no_such_net")
    with pytest.raises(ValueError, match="width/blocks"):
        build_perceptual_net(image_size=S, name="vit_tiny_patch16_224")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        PerceptualFeatures.load(ROOT / "no_such_folder")


# --- the workflow: McWGAN's perceptual input is its own network, never the evaluator ---------------


def dry_run_jobs(tmp_path: Path) -> list[dict]:
    """Every job of the default target as Snakemake plans it: rule, wildcards, input and output files."""
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(tmp_path / "config.yaml"), "-n"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", out.stdout):
        head = re.match(r"(?:local)?rule (\w+):\n", block)
        if not head:
            continue
        fields = dict(re.findall(r"^    (\w+): (.*)$", block, flags=re.M))
        jobs.append({"rule": head.group(1), "wildcards": fields.get("wildcards", ""),
                     "input": fields.get("input", "").split(", ") if fields.get("input") else [],
                     "output": fields.get("output", "").split(", ") if fields.get("output") else []})
    return jobs


def test_mcwgan_trains_against_its_own_network_and_no_metric_reads_it(tmp_path):
    jobs = dry_run_jobs(tmp_path)
    perceptual, evaluator = "results/models/perceptual", "results/models/classifier"
    (mcwgan,) = [j for j in jobs if j["rule"] == "train_method" and j["wildcards"] == "method=mcwgan"]
    assert perceptual in mcwgan["input"]
    assert not [f for f in mcwgan["input"] if f.startswith(evaluator)], mcwgan["input"]
    (producer,) = [j for j in jobs if perceptual in j["output"]]
    assert producer["rule"] == "train_perceptual"
    assert not [f for f in producer["input"] if f.startswith(evaluator) or "/test" in f], producer["input"]
    readers = {(j["rule"], j["wildcards"]) for j in jobs if perceptual in j["input"]}
    assert readers <= {("train_method", "method=mcwgan"), ("generate_followups", "method=mcwgan")}, readers
