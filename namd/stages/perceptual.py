"""Stage: McWGAN's perceptual feature network, trained on the training split's real crops and
chosen on the validation split (namd.models.perceptual says what it learns and why)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch

from namd.data.dataset import Cohort, ImageDataset
from namd.models.perceptual import PerceptualTraining, build_perceptual_net
from namd.training import TrainSettings, file_fingerprint, fit, write_history, write_model_card

LOG = logging.getLogger(__name__)


def train_perceptual(pairs_csv, crops_npz, out_dir, state_dir, params: dict, *, seed: int, device="cpu") -> dict:
    """Train, then write the folder (timm config.json + model.safetensors, history, card) in one rename."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"train_perceptual: {out_dir} exists; remove it to retrain")
    cohort = Cohort.load(pairs_csv, crops_npz)
    train, val = ImageDataset(cohort, "train"), ImageDataset(cohort, "val")
    torch.manual_seed(seed)
    net = build_perceptual_net(image_size=cohort.image_size, name=params["name"], width=params.get("width"),
                               blocks=params.get("blocks"), pretrained_file=params.get("pretrained_file"))
    module = PerceptualTraining(net, lr=params["lr"], weight_decay=params["weight_decay"], seed=seed)
    fingerprint = file_fingerprint(pairs_csv, crops_npz)
    settings = TrainSettings(epochs=params["epochs"], batch_size=params["batch_size"], seed=seed,
                             max_grad_norm=1.0, identity={"params": params, "data": fingerprint})
    result = fit(module, train, val, settings, state_dir, device=device)
    best = result.history[result.best_epoch]
    scores = {k.removeprefix("val_"): v for k, v in best.items() if k.startswith("val_")}
    LOG.info("perceptual network: best epoch %d of %d, validation %s, %.1f s of training",
             result.best_epoch, result.epochs_run, {k: round(v, 4) for k, v in scores.items()}, result.seconds)
    tmp = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        module.save_pretrained(tmp)
        write_history(result, tmp / "history.csv")
        (tmp / "validation.json").write_text(json.dumps({"best_epoch": result.best_epoch, **scores}, indent=1) + "\n")
        write_model_card(tmp, name="perceptual network", config=params, result=result, data_fingerprint=fingerprint,
                         seed=seed, description="timm ResNet on real training-split crops (label + nodule features); "
                                                "McWGAN's perceptual loss reads its pre-logits. No metric uses it.")
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"best_epoch": result.best_epoch, **scores, "seconds": result.seconds}
