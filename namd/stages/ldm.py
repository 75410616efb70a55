"""Stage: the unconditional latent diffusion model (paper Eq. 9), stage 1 of NAMD's latent family.

The U-Net learns the marginal distribution of nodule latents (baselines and follow-ups alike,
unpaired) with the null context, under Appendix B's warm-up + cosine schedule, for the budget's
`pretrain_steps` (`namd.budget`). Its cross-attention is sized for the LLM's width, so the paired
stage of NAMD and of SD1.5 (whose report tokens have that width too) starts from these weights.
"""

from __future__ import annotations

from pathlib import Path

import torch

from namd.data.dataset import Cohort, ImageDataset
from namd.models.frozen import llm_context_dim
from namd.models.schedulers import denoising_loss, pretraining_scheduler
from namd.models.unet import build_unet
from namd.training import (
    TrainableModule,
    budget_settings,
    file_fingerprint,
    fit,
    warmup_cosine,
    write_history,
    write_model_card,
)


class UnconditionalDiffusion(TrainableModule):
    display_name = "ldm_unconditional"

    def __init__(self, unet, scheduler, context_shape: tuple[int, int], params: dict):
        super().__init__()
        self.unet = unet
        self.noise_scheduler = scheduler
        self.context_shape = context_shape
        self.params = params

    def configure_optimizers(self):
        return {"unet": torch.optim.AdamW(self.unet.parameters(), lr=self.params["lr_peak"],
                                          weight_decay=self.params.get("weight_decay", 0.0))}

    def configure_schedulers(self, optimizers, total_steps):
        p = self.params
        return {"unet": warmup_cosine(optimizers["unet"], warmup_steps=p["warmup_steps"], total_steps=total_steps,
                                      lr_start=p["lr_start"], lr_peak=p["lr_peak"], lr_min=p["lr_min"])}

    def losses(self, batch):
        latents = batch["image"]
        null = torch.zeros(len(latents), *self.context_shape, device=latents.device)
        return {"loss": denoising_loss(self.unet, self.noise_scheduler, latents, null)}

    def save_pretrained(self, out_dir):
        out_dir = Path(out_dir)
        self.unet.save_pretrained(out_dir / "unet")
        self.noise_scheduler.save_pretrained(out_dir / "scheduler")


def train_unconditional(pairs_csv, crops_npz, latents_npz, out_dir, state_dir, params: dict, *, seed: int,
                        device="cpu", precision: dict | None = None) -> dict:
    cohort = Cohort.load(pairs_csv, crops_npz, latents={"vae": latents_npz})
    train, val = ImageDataset(cohort, "train", latents="vae"), ImageDataset(cohort, "val", latents="vae")
    unet_params = params["unet"]
    torch.manual_seed(seed)
    unet = build_unet(
        sample_size=int(train.images.shape[-1]),
        in_channels=params["latent_channels"],
        out_channels=params["latent_channels"],
        block_out_channels=tuple(unet_params["block_out_channels"]),
        layers_per_block=unet_params["layers_per_block"],
        num_attention_heads=unet_params["num_attention_heads"],
        cross_attention_dim=llm_context_dim(params["llm"]),
        pretrained=unet_params.get("pretrained"),
    )
    module = UnconditionalDiffusion(unet, pretraining_scheduler(**params["scheduler"]),
                                    (params["n_sets"], unet.config.cross_attention_dim), params["unconditional"])
    fingerprint = file_fingerprint(pairs_csv, latents_npz)
    settings = budget_settings(params, "ldm_unconditional", seed=seed, identity={"params": params, "data": fingerprint},
                               **(precision or {}))
    result = fit(module, train, val, settings, state_dir, device=device)
    out_dir = Path(out_dir)
    module.save_pretrained(out_dir)
    write_history(result, out_dir / "history.csv")
    write_model_card(out_dir, name="ldm_unconditional", config=params, result=result, data_fingerprint=fingerprint,
                     seed=seed, description="Unconditional latent diffusion U-Net (NAMD Eq. 9), null context; "
                     "load with UNet2DConditionModel.from_pretrained(folder, subfolder='unet').")
    return {"best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss}
