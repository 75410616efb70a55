"""The training schedule and its loss: App. B's DDPM forward process and the epsilon (or v) objective.

The latent diffusion stages train with `noise_scheduler()` and `denoising_loss`; `namd.sampling`
samples with DDIM over the same betas (its scheduler is built from this one's config, so
prediction_type and clip_sample carry over).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel

#: the DDPM targets the loss and the samplers understand; "epsilon" is the paper's
PREDICTION_TYPES = ("epsilon", "v_prediction")


def noise_scheduler(
    num_train_timesteps: int = 1000,
    beta_start: float = 8.5e-4,
    beta_end: float = 1.2e-2,
    beta_schedule: str = "linear",
    prediction_type: str = "epsilon",
    zero_terminal_snr: bool = False,
    timestep_spacing: str = "leading",
) -> DDPMScheduler:
    """App. B's forward process. clip_sample is off: latents are not bounded to [-1, 1] like pixels,
    and the DDIM sampler built from this config inherits it, like prediction_type.

    prediction_type "epsilon" is the paper's target (Eqs. 9-10). "v_prediction" (Salimans & Ho
    2022) is offered for short CPU runs: at high noise the epsilon loss barely weighs the clean
    latent (x0 errors are scaled by the SNR, ~0.005 at t = T here), so a model trained for a few
    hundred steps does not learn to follow the baseline there; v's target is mostly -x0 at high t.

    zero_terminal_snr rescales the betas so that t = T is pure noise, as sampling starts (Lin et al.
    2024, "Common diffusion noise schedules and sample steps are flawed"); otherwise training at
    t = T still sees sqrt(alpha_bar_T) ~ 0.04 of the target (App. B's betas), so a model may let
    that leak, not the condition, decide the sample's coarse content. It needs v_prediction (epsilon
    is undefined at SNR 0) and "trailing" timestep_spacing, so that DDIM's first step is t = T; both
    carry over to the sampler.
    """
    if zero_terminal_snr and prediction_type != "v_prediction":
        raise ValueError("zero_terminal_snr needs prediction_type v_prediction: at SNR 0 the noise "
                         "determines nothing about the latent, so epsilon cannot be the target")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    return DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_start=beta_start,
        beta_end=beta_end,
        beta_schedule=beta_schedule,
        clip_sample=False,
        prediction_type=prediction_type,
        rescale_betas_zero_snr=zero_terminal_snr,
        timestep_spacing=timestep_spacing,
    )


def pretraining_scheduler(**params) -> DDPMScheduler:
    """Stage 1's schedule: the config's, but never at zero terminal SNR. Lin et al. fine-tune a model
    pretrained on the standard schedule, and only that form raised NAMD's validation growth AUROC;
    stage 1 trained at SNR 0 too gave no gain (docs/progression.md entry 14)."""
    return noise_scheduler(**{**params, "zero_terminal_snr": False})


def denoising_loss(
    unet: UNet2DConditionModel,
    scheduler: DDPMScheduler,
    target_latents: torch.Tensor,
    context: torch.Tensor,
    *,
    condition_latents: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Eq. 9 (context = null context, no condition) or Eq. 10: ||eps - eps_theta([z_t, z^(1)], t, C)||^2.

    t ~ U{0..T-1} and eps ~ N(0, I) per sample, drawn from `generator` when given (it must live on
    the latents' device). With a v_prediction scheduler the target is v = sqrt(ab) eps - sqrt(1-ab) z0.
    """
    if scheduler.config.prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"scheduler prediction_type is {scheduler.config.prediction_type!r}; "
                         f"the loss knows {PREDICTION_TYPES}")
    batch = target_latents.shape[0]
    channels = target_latents.shape[1] + (0 if condition_latents is None else condition_latents.shape[1])
    if channels != unet.config.in_channels:
        raise ValueError(
            f"U-Net in_channels is {unet.config.in_channels} but target"
            f"{'' if condition_latents is None else ' + condition'} latents have {channels} channels"
        )
    if condition_latents is not None and condition_latents.shape[0] != batch:
        raise ValueError(f"condition_latents batch {condition_latents.shape[0]} != target_latents batch {batch}")
    if context.shape[0] != batch or context.shape[-1] != unet.config.cross_attention_dim:
        raise ValueError(
            f"context shape {tuple(context.shape)} does not fit batch {batch} and U-Net "
            f"cross_attention_dim {unet.config.cross_attention_dim}"
        )
    device = target_latents.device
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=generator, device=device)
    noise = torch.randn(target_latents.shape, generator=generator, device=device, dtype=target_latents.dtype)
    noisy = scheduler.add_noise(target_latents, noise, timesteps)
    model_input = noisy if condition_latents is None else torch.cat([noisy, condition_latents], dim=1)
    predicted = unet(model_input, timesteps, encoder_hidden_states=context).sample
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(target_latents, noise, timesteps)
    else:
        target = noise
    return F.mse_loss(predicted.float(), target.float())
