import copy
import re

import pytest
import torch
from diffusers import DDIMScheduler

from namd.models.schedulers import denoising_loss, noise_scheduler
from namd.models.unet import build_unet, load_unet, widen_conv_in
from namd.runtime import generator_for

TINY = dict(block_out_channels=(16, 32), norm_num_groups=8, num_attention_heads=4, cross_attention_dim=12)


def tiny_unet(**overrides):
    torch.manual_seed(0)
    return build_unet(**{**TINY, **overrides})


def test_default_unet_is_a_small_sd_shaped_cross_attention_unet():
    unet = build_unet()
    assert unet.config.block_out_channels == (64, 128) and unet.config.in_channels == 4
    keys = [m for name, m in unet.named_modules() if name.endswith("attn2.to_k")]
    assert keys and all(m.in_features == 384 for m in keys)
    out = unet(torch.randn(2, 4, 8, 8), torch.tensor([10, 900]), encoder_hidden_states=torch.randn(2, 4, 384)).sample
    assert out.shape == (2, 4, 8, 8)


def test_widened_unet_ignores_the_baseline_at_init_and_round_trips(tmp_path):
    stage1 = tiny_unet()
    stage2 = widen_conv_in(copy.deepcopy(stage1), extra_channels=4)
    noisy, baseline = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    t, context = torch.tensor([1, 500, 999]), torch.randn(3, 4, 12)
    with torch.no_grad():
        expected = stage1(noisy, t, encoder_hidden_states=context).sample
        widened = stage2(torch.cat([noisy, baseline], dim=1), t, encoder_hidden_states=context).sample
    torch.testing.assert_close(widened, expected, atol=1e-6, rtol=0)
    assert stage2.config.in_channels == 8 and stage2.conv_in.weight.shape[1] == 8
    stage2.save_pretrained(tmp_path)
    reloaded = load_unet(tmp_path, in_channels=8, cross_attention_dim=12)
    torch.testing.assert_close(reloaded.conv_in.weight, stage2.conv_in.weight, atol=0, rtol=0)


def test_pretrained_with_another_context_dim_reinitialises_only_cross_attention_keys_values(tmp_path):
    source = tiny_unet()
    source.save_pretrained(tmp_path / "unet")
    same = build_unet(pretrained=tmp_path, cross_attention_dim=12)
    for name, tensor in same.state_dict().items():
        torch.testing.assert_close(tensor, source.state_dict()[name], atol=0, rtol=0)
    resized = build_unet(pretrained=tmp_path, cross_attention_dim=20)
    assert resized.config.cross_attention_dim == 20
    original = source.state_dict()
    resized_keys = [name for name in resized.state_dict() if re.search(r"attn2\.to_[kv]\.weight$", name)]
    assert resized_keys
    for name, tensor in resized.state_dict().items():
        if name in resized_keys:
            assert tensor.shape == (original[name].shape[0], 20)
        else:
            torch.testing.assert_close(tensor, original[name], atol=0, rtol=0)


def test_checkpoints_of_the_wrong_shape_are_refused_naming_file_and_key(tmp_path):
    tiny_unet().save_pretrained(tmp_path / "unet")
    config = re.escape(str(tmp_path / "unet" / "config.json"))
    with pytest.raises(ValueError, match=f"{config}: U-Net in_channels is 4 but 8 is expected"):
        load_unet(tmp_path, subfolder="unet", in_channels=8)
    with pytest.raises(ValueError, match=f"{config}: U-Net cross_attention_dim is 12 but 2560 is expected"):
        load_unet(tmp_path, subfolder="unet", cross_attention_dim=2560)
    with pytest.raises(ValueError, match=f"{config}: U-Net in_channels is 4 but 8"):
        build_unet(pretrained=tmp_path, in_channels=8)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "missing"))):
        load_unet(tmp_path / "missing")


def test_noise_schedule_is_appendix_b_linear():
    scheduler = noise_scheduler()
    betas = scheduler.betas
    assert len(betas) == 1000 and not scheduler.config.clip_sample
    torch.testing.assert_close(betas[[0, -1]], torch.tensor([8.5e-4, 1.2e-2]))
    torch.testing.assert_close(betas.diff(), torch.full((999,), (1.2e-2 - 8.5e-4) / 999), atol=1e-7, rtol=0)


def test_denoising_loss_is_epsilon_mse_and_condition_follows_the_noisy_latent():
    scheduler = noise_scheduler()
    unet = tiny_unet()
    target, baseline, context = torch.randn(4, 4, 8, 8), torch.randn(4, 4, 8, 8), torch.randn(4, 2, 12)
    loss = denoising_loss(unet, scheduler, target, context, generator=generator_for(7))
    assert loss.ndim == 0
    loss.backward()
    assert unet.conv_in.weight.grad.abs().sum() > 0
    again = denoising_loss(unet, scheduler, target, context, generator=generator_for(7))
    other = denoising_loss(unet, scheduler, target, context, generator=generator_for(8))
    assert again.item() == loss.item() and other.item() != loss.item()
    # Stage 2 at init: zero weights on the baseline channels, so the same draws give the same loss.
    widened = widen_conv_in(copy.deepcopy(unet))
    conditional = denoising_loss(
        widened, scheduler, target, context, condition_latents=baseline, generator=generator_for(7)
    )
    torch.testing.assert_close(conditional, loss.detach(), atol=1e-6, rtol=0)
    # With a zero prediction the loss is E[eps^2] = 1.
    with torch.no_grad():
        unet.conv_out.weight.zero_()
        unet.conv_out.bias.zero_()
        zero_pred = denoising_loss(unet, scheduler, torch.randn(16, 4, 8, 8), torch.randn(16, 2, 12))
    assert abs(zero_pred.item() - 1.0) < 0.1
    with pytest.raises(ValueError, match="in_channels is 8 but target latents have 4 channels"):
        denoising_loss(widened, scheduler, target, context)
    with pytest.raises(ValueError, match="cross_attention_dim 12"):
        denoising_loss(unet, scheduler, target, torch.randn(4, 2, 7))


def test_v_prediction_loss_targets_the_velocity_and_ddim_turns_it_back_into_the_clean_latent():
    scheduler = noise_scheduler(prediction_type="v_prediction")
    unet = tiny_unet()
    with torch.no_grad():  # a zero prediction: the loss is the mean square of the target itself
        unet.conv_out.weight.zero_()
        unet.conv_out.bias.zero_()
    target, context = torch.randn(6, 4, 8, 8), torch.randn(6, 2, 12)
    loss = denoising_loss(unet, scheduler, target, context, generator=generator_for(3))
    g = generator_for(3)
    t = torch.randint(0, 1000, (6,), generator=g)
    noise = torch.randn(target.shape, generator=g)
    ab = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    velocity = ab.sqrt() * noise - (1 - ab).sqrt() * target  # Salimans & Ho (2022), written out
    torch.testing.assert_close(loss, velocity.pow(2).mean(), atol=1e-6, rtol=1e-5)
    # DDIM from this config reads the prediction as v: a perfect v gives back z0 in one step
    ddim = DDIMScheduler.from_config(scheduler.config)
    ddim.set_timesteps(1)
    step = ddim.timesteps[0]
    ab_t = scheduler.alphas_cumprod[step]
    noisy = ab_t.sqrt() * target + (1 - ab_t).sqrt() * noise
    v = ab_t.sqrt() * noise - (1 - ab_t).sqrt() * target
    out = ddim.step(v, step, noisy, eta=0.0).pred_original_sample
    torch.testing.assert_close(out, target, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="prediction_type must be one of"):
        noise_scheduler(prediction_type="sample")
