"""DDL-CXR, a stochastic row of Table 1 (Yao et al. 2024), trained from scratch as the paper says.

Follows the official code, Chenliu-svg/DDL-CXR: `ldm/models/autoencoder.py` (AutoencoderKLLabel),
`ldm/modules/losses/contperceptual.py`, `ldm/models/ts_transformer.py` (TSTransformerEncoder),
`ldm/models/diffusion/ddpm.py` (DDL_CXR_LDM) and `configs/latent-diffusion/LDM_train.yaml`.

Two stages, trained in sequence inside this one module so that the one generic training rule
trains the method end to end: the first `autoencoder_fraction` of the optimisation steps train
the autoencoder (optimiser "autoencoder"), the rest train the latent diffusion model with the
autoencoder frozen (optimiser "diffusion").

1. A KL autoencoder (diffusers AutoencoderKL, 1 channel) with the source's losses: L1 summed
   over pixels (+ LPIPS when `lpips_weight` > 0; it needs the pretrained AlexNet weights, so the
   default leaves it off) + 1e-6 KL, plus a label head (linear on the flattened sampled latent,
   BCE to the malignancy label) weighted adaptively by the ratio of the gradient norms of the two
   terms at the encoder's last conv. Adam, betas 0.5 / 0.9. Both images of a pair are trained on,
   each with the pair's label.
2. The EHR encoder: linear to d_model (times sqrt(d_model)), a CLS token, fixed sinusoidal
   positions, one post-norm transformer layer with BatchNorm and GELU, then GELU and dropout. The
   13 static features are a length-1 sequence after the CLS; both tokens are the cross-attention
   context, and a linear head on the CLS predicts the label (BCE, weight 1.4).
3. The LDM: a U-Net with cross-attention at every level (diffusers UNet2DConditionModel, the
   openaimodel family), the baseline latent channel-concatenated after the noisy follow-up latent,
   latents by posterior sampling at scale 1.0. Loss: epsilon MSE + 1.4 BCE + the perturbed-context
   hinge: a second U-Net pass with context E' = 0.5 E + 0.5 N(0, I) and
   relu(|eps - eps(E)|^2 - |eps - eps(E')|^2 + 0.2) per element, averaged per sample, weighted by
   1 - alpha_bar_t and ramped linearly by epoch / max_epoch. T = 1000, betas linear in sqrt(beta)
   from 0.0015 to 0.0195 (diffusers "scaled_linear"), AdamW, EMA of the U-Net with the source's
   warm-up min(decay, (1 + n) / (10 + n)). Sampling: the EMA U-Net, DDIM with eta = 1, no guidance,
   LDM's step grid (steps_offset 1, last alpha_bar = alpha_bar_0). Validation "loss" is the EMA
   U-Net's epsilon MSE, the source's monitor (val/simple_loss_ema).

Deviations: the PatchGAN term of the autoencoder starts at step 10k in the source, beyond the
step count of any default-sized run here, so it is not implemented (a paper-scale run with more
than 10k autoencoder steps lacks it). The source trains the ramp by epoch; here it is the fraction
of diffusion-phase steps done (the module does not see epochs). The source's autoencoder leaves its
label head out of the optimiser (a fixed random probe); here the head is trained with it. The
autoencoder has no dropout (diffusers has none; the source uses 0.2). At generation the baseline
latent is the posterior mean, not a sample, so that the condition is per pair and all randomness
comes from the (pair, seed) generators of `namd.sampling`. CPU scaling: 8x8x4 latents from 32 px
crops (the source: 28x28x4 from 224 px), narrow nets, fewer DDIM steps than the source's 200.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler
from torch import nn

from namd.methods import register
from namd.methods.blocks import merge_params
from namd.methods.base import DataSpec, GenerativeMethod, MethodContext
from namd.methods.blocks import sinusoidal_embedding
from namd.models.unet import build_unet
from namd.sampling import ddim_sample
from namd.training import apply_gradients

DEFAULTS: dict[str, Any] = {
    # stage 1: KL autoencoder
    "vae_block_out_channels": [32, 64, 64],  # len - 1 halvings: 32 px -> 8x8 latents
    "vae_layers_per_block": 1,
    "vae_norm_groups": 32,  # GroupNorm groups of the autoencoder (divide every width)
    "latent_channels": 4,  # source embed_dim 4
    "kl_weight": 1e-6,  # source 1e-6
    "lpips_weight": 0.0,  # source 1.0; needs pretrained AlexNet weights and crops of >= 31 px
    "vae_lr": 1e-3,  # Adam, betas 0.5 / 0.9 (source 4.5e-6 scaled by batch 64 x 4 accumulation x GPUs)
    "vae_weight_decay": 1e-4,  # source 1e-4
    "autoencoder_fraction": 0.4,  # share of all training steps spent on stage 1
    # stage 2: EHR encoder
    "d_model": 128,  # source 128
    "ehr_heads": 8,  # source 8
    "ehr_feedforward": 256,  # source 256
    "ehr_dropout": 0.2,  # source 0.2
    "ehr_norm": "batch",  # "batch" (source) or "layer"
    "label_weight": 1.4,  # weight of the CLS-head BCE (source 1.4)
    # stage 2: latent diffusion
    "unet_block_out_channels": [32, 64, 128],  # three levels, cross-attention at each (source 224 x 1, 2, 4)
    "unet_layers_per_block": 1,  # source 2
    "unet_heads": 4,  # attention heads per block
    "unet_norm_groups": 32,  # GroupNorm groups of the U-Net (divide every width)
    "num_train_timesteps": 1000,  # source 1000
    "beta_start": 0.0015,  # source linear_start
    "beta_end": 0.0195,  # source linear_end
    "hinge_weight": 1.0,  # source triplet_weight
    "hinge_margin": 0.2,  # source margin
    "context_noise": 0.5,  # E' = (1 - c) E + c N(0, I), source 0.5
    "ldm_lr": 1e-3,  # AdamW (source 6.4e-5 = 2e-6 x batch 32 over 200 epochs; larger for a short CPU run)
    "ema_decay": 0.9999,  # source LitEma 0.9999 with warm-up
    "ddim_steps": 50,  # source 200
    "ddim_eta": 1.0,  # source 1.0
    "generate_batch_size": 256,  # (pair, seed) samples per U-Net batch at generation
}


class EHREncoder(nn.Module):
    """TSTransformerEncoder.encode for a static record: (B, F) -> CLS (B, d) and tokens (B, 2, d)."""

    def __init__(self, n_features: int, d_model: int, heads: int, feedforward: int, dropout: float, norm: str):
        super().__init__()
        if norm not in ("batch", "layer"):
            raise ValueError(f"ddlcxr: ehr_norm must be 'batch' or 'layer', got {norm!r}")
        self.d_model = d_model
        self.project = nn.Linear(n_features, d_model)
        self.cls = nn.Parameter(torch.randn(1, 1, d_model))
        self.register_buffer("positions", sinusoidal_embedding(torch.arange(2), d_model, scale=1.0), persistent=False)
        self.attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.feedforward = nn.Sequential(
            nn.Linear(d_model, feedforward), nn.GELU(), nn.Dropout(dropout), nn.Linear(feedforward, d_model)
        )
        make = (lambda: nn.BatchNorm1d(d_model)) if norm == "batch" else (lambda: nn.LayerNorm(d_model))
        self.norm1, self.norm2 = make(), make()
        self.batch_norm = norm == "batch"
        self.dropout = nn.Dropout(dropout)

    def _norm(self, norm: nn.Module, h: torch.Tensor) -> torch.Tensor:
        """BatchNorm normalises each feature over batch and tokens, as the source's layer does."""
        return norm(h.transpose(1, 2)).transpose(1, 2) if self.batch_norm else norm(h)

    def forward(self, ehr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values = self.project(ehr.float())[:, None] * math.sqrt(self.d_model)
        tokens = torch.cat([self.cls.expand(len(ehr), -1, -1), values], dim=1) + self.positions
        h = self.dropout(tokens)
        h = self._norm(self.norm1, h + self.dropout(self.attn(h, h, h, need_weights=False)[0]))
        h = self._norm(self.norm2, h + self.dropout(self.feedforward(h)))
        h = self.dropout(F.gelu(h))
        return h[:, 0], h


@register
class DDLCXR(GenerativeMethod):
    """DDL-CXR: a from-scratch KL autoencoder, then an LDM conditioned on the baseline latent and the EHR."""

    name = "ddlcxr"
    title = "DDL-CXR"
    stochastic = True
    group = "Stochastic Methods"
    reference = "Yao et al. 2024, DDL-CXR (Chenliu-svg/DDL-CXR, AutoencoderKLLabel + DDL_CXR_LDM)"

    def __init__(self, params: dict[str, Any], spec: DataSpec, context: MethodContext):
        super().__init__(merge_params(self.name, DEFAULTS, params), spec, context)
        p = self.params
        factor = 2 ** (len(p["vae_block_out_channels"]) - 1)
        if spec.image_size % factor:
            raise ValueError(
                f"{self.name}: image size {spec.image_size} is not divisible by the autoencoder's factor {factor}"
            )
        latent_size = spec.image_size // factor
        self.vae = AutoencoderKL(
            in_channels=spec.channels, out_channels=spec.channels, latent_channels=p["latent_channels"],
            block_out_channels=tuple(p["vae_block_out_channels"]), layers_per_block=p["vae_layers_per_block"],
            down_block_types=("DownEncoderBlock2D",) * len(p["vae_block_out_channels"]),
            up_block_types=("UpDecoderBlock2D",) * len(p["vae_block_out_channels"]),
            norm_num_groups=p["vae_norm_groups"], sample_size=spec.image_size, scaling_factor=1.0,
        )
        self.vae_label_head = nn.Linear(p["latent_channels"] * latent_size**2, 1)
        self.ehr_encoder = EHREncoder(spec.n_ehr, p["d_model"], p["ehr_heads"], p["ehr_feedforward"],
                                      p["ehr_dropout"], p["ehr_norm"])
        self.label_head = nn.Linear(p["d_model"], 1)
        levels = len(p["unet_block_out_channels"])
        self.unet = build_unet(
            sample_size=latent_size, in_channels=2 * p["latent_channels"], out_channels=p["latent_channels"],
            block_out_channels=p["unet_block_out_channels"], layers_per_block=p["unet_layers_per_block"],
            num_attention_heads=p["unet_heads"], cross_attention_dim=p["d_model"],
            down_block_types=("CrossAttnDownBlock2D",) * levels, up_block_types=("CrossAttnUpBlock2D",) * levels,
            norm_num_groups=p["unet_norm_groups"],
        )
        self.unet_ema = copy.deepcopy(self.unet).requires_grad_(False)
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        self.scheduler = DDPMScheduler(
            num_train_timesteps=p["num_train_timesteps"], beta_start=p["beta_start"], beta_end=p["beta_end"],
            beta_schedule="scaled_linear", prediction_type="epsilon", clip_sample=False, steps_offset=1,
        )
        self.register_buffer("alphas_cumprod", self.scheduler.alphas_cumprod.clone(), persistent=False)
        self._lpips = (self._load_lpips(),) if p["lpips_weight"] > 0 else ()
        self._total_steps: int | None = None

    def _load_lpips(self):
        from namd.hub_weights import LPIPS_MIN_SIZE, load_lpips

        if self.spec.image_size < LPIPS_MIN_SIZE:
            raise ValueError(f"{self.name}: lpips_weight > 0 needs crops of at least {LPIPS_MIN_SIZE} px, "
                             f"these are {self.spec.image_size}")
        return load_lpips(self.context.device, instead="set lpips_weight to 0")

    # -- stage 1: the autoencoder ---------------------------------------------------------------
    def autoencoder_losses(self, batch: dict[str, Any], adaptive: bool = True) -> dict[str, torch.Tensor]:
        """L1 (+ LPIPS) summed per image + KL + the label head's BCE at its adaptive weight."""
        images = torch.cat([batch["baseline"], batch["followup"]])
        labels = torch.cat([batch["label"], batch["label"]]).float()
        posterior = self.vae.encode(images).latent_dist
        z = posterior.sample()
        recon = self.vae.decode(z).sample
        rec = (images - recon).abs()
        if self._lpips:
            rec = rec + self.params["lpips_weight"] * self._lpips[0](recon.expand(-1, 3, -1, -1),
                                                                     images.expand(-1, 3, -1, -1))
        nll = rec.sum() / len(images)
        kl = posterior.kl().sum() / len(images)
        label_loss = F.binary_cross_entropy_with_logits(self.vae_label_head(z.flatten(1)).squeeze(1), labels)
        weight = self._adaptive_weight(nll, label_loss) if adaptive else torch.ones(())
        total = nll + self.params["kl_weight"] * kl + weight * label_loss
        return {"loss": total, "vae_l1": (images - recon).abs().mean().detach(), "vae_kl": kl.detach(),
                "vae_label": label_loss.detach(), "vae_label_weight": weight}

    def _adaptive_weight(self, nll: torch.Tensor, label_loss: torch.Tensor) -> torch.Tensor:
        """|grad nll| / |grad label| at the encoder's last conv, clamped to [0, 1e4] (the source's rule)."""
        last = self.vae.encoder.conv_out.weight
        nll_grad = torch.autograd.grad(nll, last, retain_graph=True)[0]
        label_grad = torch.autograd.grad(label_loss, last, retain_graph=True)[0]
        return (nll_grad.norm() / (label_grad.norm() + 1e-4)).clamp(0.0, 1e4).detach()

    # -- stage 2: the EHR-conditioned LDM -------------------------------------------------------
    def diffusion_losses(self, batch: dict[str, Any], ramp: float, unet: nn.Module | None = None):
        """Epsilon MSE + label BCE on the CLS + the ramped perturbed-context hinge."""
        unet = self.unet if unet is None else unet
        with torch.no_grad():
            z0 = self.vae.encode(batch["baseline"]).latent_dist.sample()
            z1 = self.vae.encode(batch["followup"]).latent_dist.sample()
        cls, context = self.ehr_encoder(batch["ehr"])
        t = torch.randint(0, self.params["num_train_timesteps"], (len(z1),), device=z1.device)
        noise = torch.randn_like(z1)
        model_input = torch.cat([self.scheduler.add_noise(z1, noise, t), z0], dim=1)
        eps = unet(model_input, t, encoder_hidden_states=context).sample
        c = self.params["context_noise"]
        perturbed = (1 - c) * context + c * torch.randn_like(context)
        eps_perturbed = unet(model_input, t, encoder_hidden_states=perturbed).sample
        pos = (noise - eps).square()
        neg = (noise - eps_perturbed).square()
        hinge = F.relu(pos - neg + self.params["hinge_margin"]).mean(dim=(1, 2, 3))
        hinge = (hinge * (1 - self.alphas_cumprod[t])).mean()
        label_loss = F.binary_cross_entropy_with_logits(self.label_head(cls).squeeze(1), batch["label"].float())
        total = pos.mean() + self.params["label_weight"] * label_loss + self.params["hinge_weight"] * ramp * hinge
        return {"loss": total, "eps_mse": pos.mean().detach(), "hinge": hinge.detach(),
                "ehr_label": label_loss.detach()}

    # -- training -------------------------------------------------------------------------------
    def _autoencoder_parameters(self) -> list[nn.Parameter]:
        return [*self.vae.parameters(), *self.vae_label_head.parameters()]

    def _diffusion_parameters(self) -> list[nn.Parameter]:
        return [*self.unet.parameters(), *self.ehr_encoder.parameters(), *self.label_head.parameters()]

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {
            "autoencoder": torch.optim.Adam(self._autoencoder_parameters(), lr=self.params["vae_lr"],
                                            betas=(0.5, 0.9), weight_decay=self.params["vae_weight_decay"]),
            "diffusion": torch.optim.AdamW(self._diffusion_parameters(), lr=self.params["ldm_lr"]),
        }

    def configure_schedulers(self, optimizers: dict[str, torch.optim.Optimizer], total_steps: int) -> dict:
        """No schedulers (the source has none); records the run length that places the two stages."""
        self._total_steps = total_steps
        if self._autoencoder_steps() >= total_steps:
            raise ValueError(
                f"{self.name}: autoencoder_fraction {self.params['autoencoder_fraction']} of {total_steps} steps "
                "leaves no step for the diffusion model; lower it or train longer"
            )
        return {}

    def _autoencoder_steps(self) -> int:
        if self._total_steps is None:
            raise RuntimeError(f"{self.name}: call configure_schedulers(optimizers, total_steps) before training "
                               "(namd.training.fit does): the stages are placed by the run's length")
        return round(self.params["autoencoder_fraction"] * self._total_steps)

    def training_step(self, batch: dict[str, Any], optimizers: dict, step: int, max_grad_norm: float | None):
        switch = self._autoencoder_steps()
        if step < switch:
            losses = self.autoencoder_losses(batch)
            apply_gradients(losses["loss"], optimizers["autoencoder"], self._autoencoder_parameters(), max_grad_norm)
            return losses
        ramp = (step - switch) / (self._total_steps - switch)
        losses = self.diffusion_losses(batch, ramp)
        apply_gradients(losses["loss"], optimizers["diffusion"], self._diffusion_parameters(), max_grad_norm)
        self._update_ema()
        return losses

    @torch.no_grad()
    def _update_ema(self) -> None:
        """LitEma: decay min(ema_decay, (1 + n) / (10 + n)) after n updates."""
        n = int(self.ema_updates) + 1
        self.ema_updates.fill_(n)
        decay = min(self.params["ema_decay"], (1 + n) / (10 + n))
        for ema, live in zip(self.unet_ema.parameters(), self.unet.parameters()):
            ema.lerp_(live, 1 - decay)

    @torch.no_grad()
    def validation_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        ae = self.autoencoder_losses(batch, adaptive=False)
        ldm = self.diffusion_losses(batch, ramp=1.0, unet=self.unet_ema)
        return {"loss": ldm["eps_mse"], "vae_l1": ae["vae_l1"], "vae_label": ae["vae_label"],
                "hinge": ldm["hinge"], "ehr_label": ldm["ehr_label"]}

    # -- generation -----------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, batch: dict[str, Any], seeds: Sequence[int]) -> torch.Tensor:
        pair_ids = list(batch["pair_id"])
        z0 = self.vae.encode(batch["baseline"]).latent_dist.mean
        _, context = self.ehr_encoder(batch["ehr"])
        config = {**self.scheduler.config, "set_alpha_to_one": False}
        latents = ddim_sample(
            self.unet_ema, config, z0, context, pair_ids, list(seeds),
            num_inference_steps=self.params["ddim_steps"], eta=self.params["ddim_eta"],
            batch_size=self.params["generate_batch_size"], base_seed=self.context.seed, progress=False,
        ).to(z0.device)
        flat = latents.flatten(0, 1)
        images = torch.cat([
            self.vae.decode(flat[i:i + self.params["generate_batch_size"]]).sample
            for i in range(0, len(flat), self.params["generate_batch_size"])
        ])
        return images.clamp(-1, 1).view(len(pair_ids), len(seeds), *batch["baseline"].shape[1:])
