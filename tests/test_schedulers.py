"""Schedules: the training schedule's home, which schedulers the sampler steps, the warm-up cosine lr."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, EulerDiscreteScheduler

from namd.models.schedulers import noise_scheduler, pretraining_scheduler
from namd.sampling import SAMPLERS, check_sampler, ddim_from_training, ddim_scheduler
from namd.training import warmup_cosine


@pytest.mark.parametrize("kwargs", [{}, {"prediction_type": "v_prediction"}, {"num_train_timesteps": 500}])
def test_a_ddim_scheduler_samples_as_ddim_over_the_training_config(kwargs):
    training = noise_scheduler(**kwargs)
    old = ddim_scheduler(training.config, 7, "cpu")  # what sampling did with the training config
    held = ddim_from_training(training.config)
    new = ddim_scheduler(held, 7, "cpu")
    assert isinstance(held, DDIMScheduler) and held.config.prediction_type == training.config.prediction_type
    assert held.config.clip_sample is False and held.config.beta_end == training.config.beta_end
    assert {k: v for k, v in old.config.items() if not k.startswith("_")} == {
        k: v for k, v in new.config.items() if not k.startswith("_")}
    assert torch.equal(old.timesteps, new.timesteps) and torch.equal(old.alphas_cumprod, new.alphas_cumprod)
    assert held.num_inference_steps is None  # the caller's scheduler is copied, not set up in place


def test_the_held_ddim_config_is_honoured():
    held = ddim_from_training(noise_scheduler().config)
    trailing = DDIMScheduler.from_config(held.config, timestep_spacing="trailing")
    assert ddim_scheduler(trailing, 5, "cpu").timesteps.tolist() == [999, 799, 599, 399, 199]
    assert ddim_scheduler(noise_scheduler().config, 5, "cpu").timesteps.tolist() == [800, 600, 400, 200, 0]


def test_a_zero_terminal_snr_schedule_samples_from_pure_noise_at_its_first_step():
    training = noise_scheduler(prediction_type="v_prediction", zero_terminal_snr=True, timestep_spacing="trailing")
    assert float(training.alphas_cumprod[-1]) == 0.0 and float(noise_scheduler().alphas_cumprod[-1]) > 1e-3
    sampler = ddim_scheduler(training.config, 5, "cpu")  # both keys carry over to the sampler
    assert sampler.timesteps.tolist()[0] == 999 and sampler.config.rescale_betas_zero_snr
    latents = torch.randn(2, 4, 8, 8)
    clean = torch.randn(2, 4, 8, 8)
    step = sampler.step(-clean, sampler.timesteps[0], latents)  # v = -x0 at SNR 0
    assert torch.allclose(step.pred_original_sample, clean)
    with pytest.raises(ValueError, match="zero_terminal_snr needs prediction_type v_prediction"):
        noise_scheduler(zero_terminal_snr=True)


def test_stage1_pretrains_on_the_standard_schedule_whatever_zero_terminal_snr_says():
    params = {"prediction_type": "v_prediction", "zero_terminal_snr": True, "timestep_spacing": "trailing"}
    stage1, stage2 = pretraining_scheduler(**params), noise_scheduler(**params)
    assert float(stage2.alphas_cumprod[-1]) == 0.0
    assert torch.equal(stage1.alphas_cumprod, noise_scheduler(prediction_type="v_prediction").alphas_cumprod)
    assert not stage1.config.rescale_betas_zero_snr and stage1.config.prediction_type == "v_prediction"


@pytest.mark.parametrize("cls", [EulerDiscreteScheduler, DDPMScheduler])
def test_a_scheduler_the_sampler_cannot_step_is_refused_by_name(cls):
    scheduler = cls.from_config(noise_scheduler().config)
    assert SAMPLERS == (DDIMScheduler,)
    with pytest.raises(ValueError, match=rf"pipe.scheduler is {cls.__name__},.*cannot step; it supports DDIMScheduler"):
        check_sampler(scheduler, "pipe.scheduler")
    with pytest.raises(ValueError, match=cls.__name__):
        ddim_scheduler(scheduler, 5, "cpu")


def _lrs(scheduler_factory, lr, steps):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = scheduler_factory(optimizer)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize("total_steps, fraction", [(1, 0.05), (37, 0.05), (400, 0.05), (1000, 0.2)])
def test_warmup_cosine_is_the_classifiers_schedule_to_the_bit(total_steps, fraction):
    warmup = max(1, int(fraction * total_steps))

    def before(step: int) -> float:  # namd.evaluation.classifier's own schedule before it moved here
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1 + np.cos(np.pi * progress))

    old = _lrs(lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, before), 3e-4, total_steps + 2)
    new = _lrs(lambda opt: warmup_cosine(opt, warmup_steps=warmup, total_steps=total_steps, warmup_offset=1), 3e-4,
               total_steps + 2)
    assert new == old


@pytest.mark.parametrize("warmup_steps, total_steps", [(0, 10), (10, 110), (100, 1000)])
def test_warmup_cosine_is_appendix_bs_schedule_to_the_bit(warmup_steps, total_steps):
    lr_start, lr_peak, lr_min = 1e-6, 1e-4, 1e-5

    def before(step: int) -> float:  # namd.methods.latent_diffusion's schedule before it moved here
        if step < warmup_steps:
            return (lr_start + (lr_peak - lr_start) * step / max(warmup_steps, 1)) / lr_peak
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        return (lr_min + 0.5 * (lr_peak - lr_min) * (1 + math.cos(math.pi * progress))) / lr_peak

    old = _lrs(lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, before), lr_peak, total_steps + 2)
    new = _lrs(lambda opt: warmup_cosine(opt, warmup_steps=warmup_steps, total_steps=total_steps, lr_start=lr_start,
                                         lr_peak=lr_peak, lr_min=lr_min), lr_peak, total_steps + 2)
    assert new == old
    assert new[-1] == pytest.approx(lr_min)
