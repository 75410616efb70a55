"""K-seed DDIM sampling (paper Sec. 3.3.2: 50 steps, K = 20 per pair, App. D), batched yet batch-invariant.

Each (pair, seed) sample owns a CPU torch.Generator seeded from a stable hash of
(base_seed, pair_id, seed); its initial noise and, for eta > 0, its per-step noise come only from
it (diffusers' per-sample generator lists). So an image does not depend on the batch, batch size
or order that makes it, and one pair's K images can be re-made alone: bit-identical in float64,
equal to float32 rounding otherwise (CPU/GPU kernels round differently per batch shape).

Classifier-free guidance on the context is an option, not the paper's method (it describes no
condition dropout and no guidance scale, and samples with eps_theta(z^(1), z_t, t, C) directly):
guidance_scale 1 (the default) is that plain sampler, one U-Net pass a step; w != 1 runs the
U-Net with C and with the null context (zeros, Eq. 9's) and steps with
eps_null + w (eps_C - eps_null) (Ho & Salimans 2022; the baseline latent is kept in both passes).

A residual model (`residual_std`, the `ldm.diffusion_target: residual` departure) diffuses
(z_follow - z_base) / residual_std; the samplers return z_base + residual_std * sample, the
follow-up latent, so callers see the same thing either way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import torch
from diffusers import DDIMScheduler, SchedulerMixin, UNet2DConditionModel
from diffusers.utils.torch_utils import randn_tensor

from namd.progress import progress_bar
from namd.runtime import generator_for


def sample_seed(base_seed: int, pair_id: str, seed: int) -> int:
    """64-bit seed of one (pair, seed) sample; blake2b, not hash(), so it is the same in every process."""
    key = f"{int(base_seed)}\x1f{pair_id}\x1f{int(seed)}"  # int(): a tensor or numpy seed hashes as its value
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def sample_generators(pair_ids: Sequence[str], seeds: Sequence[int], base_seed: int) -> list[torch.Generator]:
    """One generator per sample, pair-major: index n * K + k is (pair_ids[n], seeds[k])."""
    return [generator_for(sample_seed(base_seed, pair_id, seed)) for pair_id in pair_ids for seed in seeds]


def sample_noise(
    pair_ids: Sequence[str], seeds: Sequence[int], shape: Sequence[int], base_seed: int
) -> torch.Tensor:
    """Initial noise z_T (N*K, C, H, W), pair-major, each sample from its own generator."""
    return randn_tensor((len(pair_ids) * len(seeds), *shape), generator=sample_generators(pair_ids, seeds, base_seed))


#: the schedulers whose step() the loop here drives (it passes eta and a generator per sample)
SAMPLERS = (DDIMScheduler,)

#: what ddim_sample takes: the sampler itself, or the config of the training schedule to run DDIM over
Scheduler = SchedulerMixin | Mapping


def check_sampler(scheduler, what: str = "scheduler") -> None:
    """ValueError naming the scheduler's class when namd's sampler cannot step it."""
    if not isinstance(scheduler, SAMPLERS):
        supported = ", ".join(cls.__name__ for cls in SAMPLERS)
        raise ValueError(
            f"{what} is {type(scheduler).__name__}, which namd's sampler (namd.sampling, DDIM with eta and a "
            f"generator per sample) cannot step; it supports {supported}: e.g. "
            f"DDIMScheduler.from_config(scheduler.config) for DDIM over the same betas"
        )


def ddim_from_training(scheduler_config: Mapping) -> DDIMScheduler:
    """DDIM over a training schedule's betas (its config, e.g. DDPMScheduler.config): prediction_type,
    clip_sample and the beta schedule carry over, the rest are DDIM's defaults."""
    return DDIMScheduler.from_config(scheduler_config)


def ddim_scheduler(scheduler: Scheduler, num_inference_steps: int, device: torch.device) -> DDIMScheduler:
    """The sampler with its timesteps set, on a copy (the caller's scheduler is left as it is).

    A scheduler instance is the sampler itself and must be one of SAMPLERS (ValueError naming it
    otherwise); a config is a training schedule, sampled with DDIM over its betas (ddim_from_training).
    """
    if isinstance(scheduler, Mapping):
        sampler = ddim_from_training(scheduler)
    else:
        check_sampler(scheduler)
        sampler = type(scheduler).from_config(scheduler.config)
    sampler.set_timesteps(num_inference_steps, device=device)
    return sampler


def ddim_step(
    unet: UNet2DConditionModel,
    scheduler: DDIMScheduler,
    latents: torch.Tensor,
    timestep: torch.Tensor,
    condition_latents: torch.Tensor | None,
    context: torch.Tensor,
    *,
    eta: float,
    generator: torch.Generator | list[torch.Generator],
    guidance_scale: float = 1.0,
) -> torch.Tensor:
    """z_t -> z_{t-1}; the condition latents are channel-concatenated after z_t as in training."""
    model_input = scheduler.scale_model_input(latents, timestep)
    if condition_latents is not None:
        model_input = torch.cat([model_input, condition_latents], dim=1)
    if guidance_scale == 1.0:
        noise_pred = unet(model_input, timestep, encoder_hidden_states=context).sample
    else:
        both = unet(torch.cat([model_input, model_input]), timestep,
                    encoder_hidden_states=torch.cat([context, torch.zeros_like(context)])).sample
        with_context, null = both.chunk(2)
        noise_pred = null + guidance_scale * (with_context - null)
    return scheduler.step(noise_pred, timestep, latents, eta=eta, generator=generator).prev_sample


def _latent_shape(unet: UNet2DConditionModel, condition_latents: torch.Tensor | None) -> tuple[int, int, int]:
    channels = unet.config.out_channels
    if condition_latents is None:
        if unet.config.in_channels != channels:
            raise ValueError(
                f"U-Net takes {unet.config.in_channels} input channels (a conditional model) "
                "but no condition_latents were given"
            )
        size = unet.config.sample_size
        height, width = (size, size) if isinstance(size, int) else size
        return channels, height, width
    if channels + condition_latents.shape[-3] != unet.config.in_channels:
        raise ValueError(
            f"U-Net in_channels is {unet.config.in_channels} but sampled ({channels}) + condition "
            f"({condition_latents.shape[-3]}) latent channels are {channels + condition_latents.shape[-3]}"
        )
    return channels, condition_latents.shape[-2], condition_latents.shape[-1]


def check_residual(residual_std: float | None, condition_latents: torch.Tensor | None) -> None:
    if residual_std is None:
        return
    if condition_latents is None:
        raise ValueError("residual_std needs condition_latents: a residual is added back to the baseline latent")
    if not float(residual_std) > 0:
        raise ValueError(f"residual_std must be > 0, got {residual_std}")


def followup_latents(sampled: torch.Tensor, condition_latents: torch.Tensor | None,
                     residual_std: float | None) -> torch.Tensor:
    """What the U-Net sampled, as follow-up latents: itself, or z_base + residual_std * sample."""
    if residual_std is None:
        return sampled
    return condition_latents + float(residual_std) * sampled


def _null_context(unet: UNet2DConditionModel, batch: int) -> torch.Tensor:
    """Zeros: the same U-Net output as SoftPromptContextEncoder.null_context's (B, m, D) zeros for any m."""
    return torch.zeros(batch, 1, unet.config.cross_attention_dim, device=unet.device, dtype=unet.dtype)


@torch.no_grad()
def ddim_sample_one(
    unet: UNet2DConditionModel,
    scheduler: Scheduler,
    condition_latents: torch.Tensor | None,
    context: torch.Tensor | None,
    pair_id: str,
    seed: int,
    *,
    num_inference_steps: int = 50,
    eta: float = 0.0,
    base_seed: int = 0,
    guidance_scale: float = 1.0,
    residual_std: float | None = None,
) -> torch.Tensor:
    """Reference: one pair (condition (C, H, W), context (m, D)), one seed, the plain diffusers loop -> (C, H, W)."""
    check_residual(residual_std, condition_latents)
    scheduler = ddim_scheduler(scheduler, num_inference_steps, unet.device)
    condition = None if condition_latents is None else condition_latents[None].to(unet.device, unet.dtype)
    context = _null_context(unet, 1) if context is None else context[None].to(unet.device, unet.dtype)
    generator = generator_for(sample_seed(base_seed, pair_id, seed))
    latents = randn_tensor(
        (1, *_latent_shape(unet, condition)), generator=generator, device=unet.device, dtype=unet.dtype
    ) * scheduler.init_noise_sigma
    for timestep in scheduler.timesteps:
        latents = ddim_step(unet, scheduler, latents, timestep, condition, context, eta=eta, generator=generator,
                            guidance_scale=guidance_scale)
    return followup_latents(latents, condition, residual_std)[0].float().cpu()


@torch.no_grad()
def ddim_sample(
    unet: UNet2DConditionModel,
    scheduler: Scheduler,
    condition_latents: torch.Tensor | None,
    context: torch.Tensor | None,
    pair_ids: Sequence[str],
    seeds: Sequence[int],
    *,
    num_inference_steps: int = 50,
    eta: float = 0.0,
    batch_size: int = 64,
    base_seed: int = 0,
    progress: bool = True,
    guidance_scale: float = 1.0,
    residual_std: float | None = None,
) -> torch.Tensor:
    """K follow-up latents per pair -> (N, K, C, H, W) float32 on the CPU.

    scheduler: the sampler (a DDIMScheduler, e.g. a pipeline's) or the config of the training
    schedule, sampled with DDIM over its betas (see ddim_scheduler). condition_latents (N, C', H, W)
    and context (N, m, D) are per pair (None: unconditional / null context); the N*K (pair, seed)
    samples run `batch_size` at a time, each batch gathering its pairs' condition and context, and
    every sample equals ddim_sample_one's for its (pair, seed) up to float rounding. guidance_scale:
    classifier-free guidance on the context (module docstring); 1 samples without it. residual_std:
    the U-Net diffuses the scaled residual (module docstring); None: the follow-up latent itself.
    """
    pair_ids, seeds = [str(pair_id) for pair_id in pair_ids], [int(seed) for seed in seeds]
    n_pairs, n_seeds = len(pair_ids), len(seeds)
    if n_pairs == 0 or n_seeds == 0:
        raise ValueError("pair_ids and seeds must be non-empty")
    if len(set(pair_ids)) != n_pairs or len(set(seeds)) != n_seeds:
        raise ValueError("pair_ids and seeds must each be free of duplicates (a duplicate would repeat an image)")
    for name, tensor in (("condition_latents", condition_latents), ("context", context)):
        if tensor is not None and tensor.shape[0] != n_pairs:
            raise ValueError(f"{name} has {tensor.shape[0]} rows but there are {n_pairs} pair_ids")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    check_residual(residual_std, condition_latents)
    shape = _latent_shape(unet, condition_latents)
    device, dtype = unet.device, unet.dtype
    scheduler = ddim_scheduler(scheduler, num_inference_steps, device)
    if condition_latents is not None:
        condition_latents = condition_latents.to(device, dtype)
    if context is not None:
        context = context.to(device, dtype)
    generators = sample_generators(pair_ids, seeds, base_seed)
    total = n_pairs * n_seeds
    out = torch.empty(total, *shape)
    with progress_bar(total=total, desc="DDIM", unit="sample", disable=not progress) as bar:
        for start in range(0, total, batch_size):
            stop = min(start + batch_size, total)
            pair_index = torch.arange(start, stop, device=device) // n_seeds
            condition = None if condition_latents is None else condition_latents.index_select(0, pair_index)
            if context is None:
                batch_context = _null_context(unet, stop - start)
            else:
                batch_context = context.index_select(0, pair_index)
            batch_generators = generators[start:stop]
            latents = randn_tensor(
                (stop - start, *shape), generator=batch_generators, device=device, dtype=dtype
            ) * scheduler.init_noise_sigma
            for timestep in scheduler.timesteps:
                latents = ddim_step(
                    unet, scheduler, latents, timestep, condition, batch_context, eta=eta, generator=batch_generators,
                    guidance_scale=guidance_scale,
                )
            out[start:stop] = followup_latents(latents, condition, residual_std).float().cpu()
            bar.update(stop - start)
    return out.reshape(n_pairs, n_seeds, *shape)
