"""Stage: train a VAE (nodule-aligned or plain) on the train/val files, and cache its latents per part.

One code path for both VAEs of the paper: the aligned one (Eq. 6 with L_align and L_pred) and
the unaligned one of the ablation (lambda_align = lambda_pred = 0) differ only in config.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from namd.data.dataset import Cohort, ImageDataset
from namd.io import atomic_output
from namd.models.augment import random_rotation
from namd.hub_weights import load_lpips
from namd.models.vae import NoduleAlignedVAE, build_vae, encode_latents, fit_latent_scale
from namd.training import TrainableModule, TrainSettings, file_fingerprint, fit, write_history, write_model_card

LOG = logging.getLogger(__name__)

LOSS_WEIGHTS = ("lambda_kl", "lambda_lpips", "lambda_align", "lambda_pred", "sigma_f", "sigma_z")


class VAETraining(TrainableModule):
    """Eq. 6 under the one trainer: AdamW, rotation augmentation, every term logged."""

    def __init__(self, model: NoduleAlignedVAE, params: dict, seed: int, lpips_model=None):
        super().__init__()
        self.model = model
        self.params = params
        self.seed = seed
        self.lpips_model = lpips_model
        self.display_name = params.get("name", "vae")
        # counts steps so augmentation draws are reproducible across a resume
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def configure_optimizers(self):
        return {"vae": torch.optim.AdamW(self.model.parameters(), lr=self.params["lr"],
                                         weight_decay=self.params["weight_decay"])}

    def losses(self, batch):
        if self.training:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.steps))
            batch = {**batch, "image": random_rotation(batch["image"], self.params["rotations"], generator=g)}
            self.steps += 1
        weights = {k: self.params[k] for k in LOSS_WEIGHTS}
        terms = self.model.loss(batch, lpips_model=self.lpips_model, **weights)
        return {"loss": terms.pop("total"), **terms}

    def save_pretrained(self, out_dir):
        self.model.save_pretrained(out_dir)


def train_vae(pairs_csv, crops_npz, out_dir, state_dir, params: dict, *, seed: int, device: str = "cpu",
              precision: dict | None = None) -> dict:
    """Train on the training split's baseline and follow-up crops; select on the validation split."""
    cohort = Cohort.load(pairs_csv, crops_npz)
    train, val = ImageDataset(cohort, "train"), ImageDataset(cohort, "val")
    torch.manual_seed(seed)
    vae = build_vae(
        sample_size=cohort.image_size,
        latent_channels=params["latent_channels"],
        block_out_channels=tuple(params["block_out_channels"]),
        layers_per_block=params["layers_per_block"],
        pretrained=params.get("pretrained"),
        subfolder=params.get("pretrained_subfolder"),
    )
    lpips_model = load_lpips(device) if params["lambda_lpips"] > 0 else None
    module = VAETraining(NoduleAlignedVAE(vae), params, seed, lpips_model)
    fingerprint = file_fingerprint(pairs_csv, crops_npz)
    settings = TrainSettings(
        epochs=params["epochs"], batch_size=params["batch_size"], seed=seed,
        max_grad_norm=params.get("max_grad_norm", 1.0), identity={"params": params, "data": fingerprint},
        **(precision or {}),
    )
    result = fit(module, train, val, settings, state_dir, device=device)
    scale = fit_latent_scale(module.model.vae, train.images.to(device))
    LOG.info("%s: best epoch %d, validation loss %.5f, latent scale %.4f",
             module.display_name, result.best_epoch, result.best_val_loss, scale)
    out_dir = Path(out_dir)
    module.save_pretrained(out_dir)
    write_history(result, out_dir / "history.csv")
    write_model_card(
        out_dir, name=module.display_name, config=params, result=result, data_fingerprint=fingerprint, seed=seed,
        description="Nodule-aligned VAE (NAMD Eq. 6): diffusers AutoencoderKL + linear latent probe; "
                    "load with AutoencoderKL.from_pretrained(folder).",
    )
    return {"best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss, "latent_scale": scale}


def cache_latents(vae_dir, pairs_csv, crops_npz, out_npz, *, device: str = "cpu") -> None:
    """Scaled posterior-mean latents of every pair of one part's files (trainval or test), once per VAE."""
    cohort = Cohort.load(pairs_csv, crops_npz)
    vae = NoduleAlignedVAE.from_pretrained(vae_dir).vae.to(device)
    arrays = {
        "pair_id": cohort.pairs["pair_id"].to_numpy(dtype=str),
        "baseline": encode_latents(vae, cohort.baseline.to(device)).cpu().numpy(),
        "followup": encode_latents(vae, cohort.followup.to(device)).cpu().numpy(),
    }
    with atomic_output(out_npz) as handle:
        np.savez(handle, **arrays)
