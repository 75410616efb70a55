"""McWGAN (Table 1, deterministic): a conditional Wasserstein GAN that predicts the follow-up crop.

Follows Wang, Zhou, Ying, Chan, Lee, Chughtai, Hadjiiski, Kazerooni, "Enhancing Early Lung Cancer
Diagnosis: Predicting Lung Nodule Progression in Follow-Up Low-Dose CT Scan with Deep Generative
Model", Cancers 2024, 16(12):2229 (the GP-WGAN on the same NLST pairs; NAMD's "McWGAN" is very
likely this model), with WGAN-GP as Gulrajani et al. 2017 define it:

- predictor G: a U-Net from the baseline crop to the follow-up crop, tanh output;
- critic D: a DCGAN-style strided conv net on (baseline, follow-up) stacked as two channels, with
  per-sample layer norm (no batch norm: the gradient penalty is taken per sample);
- critic loss: D(x1, G(x1)) - D(x1, x2) + gp_weight * (||grad D(x1, x_hat)|| - 1)^2 on random
  interpolates x_hat of real and predicted follow-ups; n_critic critic steps per predictor step,
  Adam(lr, betas 0.5 / 0.9) for both;
- predictor loss: lambda_l1 * L1 + lambda_ssim * (1 - SSIM) + lambda_perc * perceptual - D(x1, G(x1)).

Deviations, and why:
- The source's perceptual loss uses the last hidden layer of a pretrained, modified ResNet-18
  whose weights are not public. Here it uses the last hidden layer (timm pre-logits) of a frozen
  network passed in as `context.upstream["perceptual"]` (a folder written by timm's
  `save_for_hf`): in the workflow, the small timm ResNet of `namd.models.perceptual`, trained on
  the training split's real crops to predict the label and the nodule features. It is never the
  evaluation classifier, which scores Table 1 and the image metrics: McWGAN would then be
  trained against its own judge. Without one the term is off (lambda_perc = 0), which is logged
  and written to `card_notes`; a random network is never used.
- Layer sizes and loss weights are not published: a CPU-sized U-Net and critic, and pix2pix-like
  weights (L1 x 100 against an adversarial weight of 1).
- Each batch gives n_critic critic updates (fresh interpolates each) before one predictor update,
  rather than n_critic fresh batches: with ~170 training pairs a fresh-batch schedule would give
  the predictor only a couple of updates per epoch.
- Model selection: the validation loss is the predictor's reconstruction objective,
  lambda_l1 * L1 + lambda_ssim * (1 - SSIM) on validation pairs. Critic scores are left out
  because the critic changes between epochs, so they do not compare across epochs.

Generation is deterministic: G(x1), one output per pair whatever the seeds.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from namd.methods import register
from namd.methods.base import DataSpec, GenerativeMethod, MethodContext
from namd.methods.blocks import ConvUNet, StridedEncoder, merge_params, ssim
from namd.models.perceptual import PerceptualFeatures
from namd.training import apply_gradients

LOG = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "base_channels": 16,  # predictor U-Net width at full resolution
    "channel_mults": [1, 2, 4],  # predictor widths per scale (len - 1 halvings)
    "critic_widths": [32, 64, 128],  # critic conv widths, one stride-2 conv each
    "lr": 1e-4,  # Adam learning rate, predictor and critic (Gulrajani et al.)
    "betas": [0.5, 0.9],  # Adam betas (Gulrajani et al.)
    "n_critic": 5,  # critic updates per predictor update
    "gp_weight": 10.0,  # gradient-penalty weight
    "lambda_l1": 100.0,  # L1 pixel loss weight
    "lambda_ssim": 10.0,  # (1 - SSIM) loss weight
    "lambda_perc": 1.0,  # perceptual (feature MSE) weight; 0 when no perceptual network is given
}


class Critic(nn.Module):
    """Scores a (baseline, follow-up) pair: strided convs with layer norm, then one linear unit."""

    def __init__(self, image_size: int, widths: Sequence[int]):
        super().__init__()
        self.features = StridedEncoder(2, widths, norm="layer")
        side = image_size // 2 ** len(widths)
        self.score = nn.Linear(widths[-1] * side * side, 1)

    def forward(self, baseline: torch.Tensor, followup: torch.Tensor) -> torch.Tensor:
        return self.score(self.features(torch.cat([baseline, followup], dim=1)).flatten(1)).squeeze(1)


@register
class McWGAN(GenerativeMethod):
    name = "mcwgan"
    title = "McWGAN"
    stochastic = False
    group = "Deterministic Methods"
    reference = "Wang et al., Cancers 16(12):2229, 2024 (GP-WGAN); WGAN-GP: Gulrajani et al., NeurIPS 2017"

    def __init__(self, params: dict[str, Any], spec: DataSpec, context: MethodContext):
        super().__init__(params, spec, context)
        self.params = p = merge_params(self.name, DEFAULTS, params)
        if int(p["n_critic"]) < 1:
            raise ValueError(f"{self.name}: n_critic must be at least 1, got {p['n_critic']}")
        self.predictor = ConvUNet(spec.channels, spec.channels, p["base_channels"], p["channel_mults"])
        self.critic = Critic(spec.image_size, p["critic_widths"])
        self.perceptual_path = context.upstream.get("perceptual")
        self.lambda_perc = float(p["lambda_perc"]) if self.perceptual_path else 0.0
        self.card_notes: list[str] = []
        if p["lambda_perc"] and not self.perceptual_path:
            note = (
                "perceptual loss off (lambda_perc = 0): the source's pretrained ResNet-18 is not available "
                "and no frozen perceptual network was given (context.upstream['perceptual'])"
            )
            LOG.warning("%s: %s", self.name, note)
            self.card_notes.append(note)
        elif self.lambda_perc:
            self.card_notes.append(
                f"perceptual loss on the pre-logit features of the frozen network {self.perceptual_path}"
            )
        # loss networks are not part of the model: a plain dict keeps them out of the state dict
        # (from_pretrained needs no perceptual network) and they load on first use
        self._loss_nets: dict[str, nn.Module] = {}

    def predict(self, baseline: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.predictor(baseline))

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        lr, betas = self.params["lr"], tuple(self.params["betas"])
        return {
            "critic": torch.optim.Adam(self.critic.parameters(), lr=lr, betas=betas),
            "predictor": torch.optim.Adam(self.predictor.parameters(), lr=lr, betas=betas),
        }

    def _perceptual(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        if "perceptual" not in self._loss_nets:
            self._loss_nets["perceptual"] = PerceptualFeatures.load(self.perceptual_path)
        features = self._loss_nets["perceptual"].to(fake.device)
        return F.mse_loss(features(fake), features(real))

    def _reconstruction(self, fake: torch.Tensor, real: torch.Tensor) -> dict[str, torch.Tensor]:
        l1 = (fake - real).abs().mean()
        ssim_loss = 1 - ssim(fake, real)
        total = self.params["lambda_l1"] * l1 + self.params["lambda_ssim"] * ssim_loss
        return {"loss": total, "l1": l1, "ssim_loss": ssim_loss}

    def _critic_loss(self, baseline: torch.Tensor, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
        mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.critic(baseline, mixed).sum(), mixed, create_graph=True)
        penalty = (grad.flatten(1).norm(dim=1) - 1).square().mean()
        wasserstein = self.critic(baseline, real).mean() - self.critic(baseline, fake).mean()
        return {"critic": -wasserstein + self.params["gp_weight"] * penalty, "wasserstein": wasserstein,
                "gradient_penalty": penalty}

    def training_step(self, batch: dict[str, Any], optimizers: dict, step: int, max_grad_norm: float | None):
        baseline, real = batch["baseline"], batch["followup"]
        fake = self.predict(baseline)
        for _ in range(int(self.params["n_critic"])):
            critic_losses = self._critic_loss(baseline, real, fake.detach())
            apply_gradients(critic_losses["critic"], optimizers["critic"], self.critic.parameters(), max_grad_norm)
        self.critic.requires_grad_(False)
        adversarial = -self.critic(baseline, fake).mean()
        self.critic.requires_grad_(True)
        losses = self._reconstruction(fake, real)
        losses["adversarial"] = adversarial
        losses["loss"] = losses["loss"] + adversarial
        if self.lambda_perc:
            losses["perceptual"] = self._perceptual(fake, real)
            losses["loss"] = losses["loss"] + self.lambda_perc * losses["perceptual"]
        apply_gradients(losses["loss"], optimizers["predictor"], self.predictor.parameters(), max_grad_norm)
        return {k: v.detach() for k, v in {**losses, **critic_losses}.items()}

    @torch.no_grad()
    def validation_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self._reconstruction(self.predict(batch["baseline"]), batch["followup"])

    @torch.no_grad()
    def generate(self, batch: dict[str, Any], seeds: Sequence[int]) -> torch.Tensor:
        return self.predict(batch["baseline"])[:, None]
