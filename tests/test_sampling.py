import pytest
import torch

from namd.models.schedulers import noise_scheduler
from namd.models.unet import build_unet, widen_conv_in
from namd.runtime import make_deterministic
from namd.sampling import ddim_sample, ddim_sample_one, sample_noise, sample_seed

PAIRS = ["100012_n1_T0T1", "100158_n2_T1T2", "100517_n1_T0T1"]
SEEDS = [0, 5]
STEPS = 4
SCHEDULER_CONFIG = noise_scheduler().config


def tiny_unet(conditional=True, dtype=torch.float64):
    torch.manual_seed(0)
    unet = build_unet(block_out_channels=(16, 32), norm_num_groups=8, num_attention_heads=4, cross_attention_dim=12)
    if conditional:
        unet = widen_conv_in(unet)
        with torch.no_grad():  # a trained Stage-2 model does look at the baseline
            unet.conv_in.weight[:, 4:].normal_(0, 0.1)
    return unet.eval().to(dtype)


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(len(PAIRS), 4, 8, 8, generator=g), torch.randn(len(PAIRS), 4, 12, generator=g)


def test_seed_is_a_stable_hash_and_noise_depends_only_on_pair_and_seed():
    # Pinned: Python's hash() of a str changes with every process, so this would catch its use.
    assert sample_seed(23, "100012_n1_T0T1", 0) == 9045665874824784998
    noise = sample_noise(PAIRS, SEEDS, (4, 8, 8), base_seed=23)
    assert noise.shape == (len(PAIRS) * len(SEEDS), 4, 8, 8)
    alone = sample_noise(PAIRS[2:], SEEDS[1:2], (4, 8, 8), 23)[0]
    torch.testing.assert_close(alone, noise[2 * len(SEEDS) + 1], atol=0, rtol=0)
    assert torch.equal(sample_noise(PAIRS, torch.tensor(SEEDS), (4, 8, 8), base_seed=23), noise)
    assert not torch.equal(noise[0], noise[1])
    assert not torch.equal(noise[0], sample_noise(PAIRS, SEEDS, (4, 8, 8), base_seed=24)[0])


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_images_do_not_depend_on_the_batch_and_match_the_one_at_a_time_path(inputs, eta):
    condition, context = inputs
    unet = tiny_unet()
    kwargs = dict(num_inference_steps=STEPS, eta=eta, base_seed=23, progress=False)
    everything = ddim_sample(unet, SCHEDULER_CONFIG, condition, context, PAIRS, SEEDS, **kwargs)
    assert everything.shape == (len(PAIRS), len(SEEDS), 4, 8, 8) and everything.dtype == torch.float32
    for batch_size in (1, 4):  # 4: batches that split a pair's seeds
        batched = ddim_sample(unet, SCHEDULER_CONFIG, condition, context, PAIRS, SEEDS, batch_size=batch_size, **kwargs)
        torch.testing.assert_close(batched, everything, atol=1e-6, rtol=0)
    # One pair sampled on its own, with a subset of seeds, gives the same images.
    alone = ddim_sample(unet, SCHEDULER_CONFIG, condition[1:2], context[1:2], PAIRS[1:2], SEEDS[1:], **kwargs)
    torch.testing.assert_close(alone[0], everything[1, 1:], atol=1e-6, rtol=0)
    del kwargs["progress"]
    for n, pair in enumerate(PAIRS):
        for k, seed in enumerate(SEEDS):
            one = ddim_sample_one(unet, SCHEDULER_CONFIG, condition[n], context[n], pair, seed, **kwargs)
            torch.testing.assert_close(one, everything[n, k], atol=1e-6, rtol=0)
    assert (everything[:, 0] - everything[:, 1]).abs().amax() > 0.1  # seeds differ
    assert (everything[0, 0] - everything[1, 0]).abs().amax() > 0.1  # pairs differ


def test_float32_batches_agree_to_rounding(inputs):
    """Float32 kernels round differently per batch shape; only that, never other noise, may differ."""
    condition, context = inputs
    unet = tiny_unet(dtype=torch.float32)
    kwargs = dict(num_inference_steps=STEPS, base_seed=23, progress=False)
    everything = ddim_sample(unet, SCHEDULER_CONFIG, condition, context, PAIRS, SEEDS, **kwargs)
    one_by_one = ddim_sample(unet, SCHEDULER_CONFIG, condition, context, PAIRS, SEEDS, batch_size=1, **kwargs)
    scale = everything.abs().amax()
    torch.testing.assert_close(one_by_one / scale, everything / scale, atol=1e-5, rtol=0)


@pytest.fixture
def deterministic():
    previous = torch.are_deterministic_algorithms_enabled()
    make_deterministic(23)
    yield
    torch.use_deterministic_algorithms(previous)


def test_repeatable_under_make_deterministic(inputs, deterministic):
    condition, context = inputs
    unet = tiny_unet(dtype=torch.float32)
    runs = [
        ddim_sample(unet, SCHEDULER_CONFIG, condition, context, PAIRS, SEEDS, num_inference_steps=STEPS, progress=False)
        for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1])


def test_unconditional_sampling_uses_the_null_context(inputs):
    _, context = inputs
    unet = tiny_unet(conditional=False)
    kwargs = dict(num_inference_steps=STEPS, progress=False)
    no_context = ddim_sample(unet, SCHEDULER_CONFIG, None, None, PAIRS[:2], SEEDS[:2], **kwargs)
    zeros = ddim_sample(unet, SCHEDULER_CONFIG, None, torch.zeros(2, 4, 12), PAIRS[:2], SEEDS[:2], **kwargs)
    assert no_context.shape == (2, 2, 4, 8, 8)
    torch.testing.assert_close(no_context, zeros, atol=1e-6, rtol=0)
    conditioned = ddim_sample(unet, SCHEDULER_CONFIG, None, context[:2], PAIRS[:2], SEEDS[:2], **kwargs)
    assert (conditioned - zeros).abs().amax() > 1e-3


def test_guidance_scale_mixes_the_context_and_null_predictions(inputs):
    """CFG (an option): w = 1 is the plain sampler, w = 0 the null context's, and any w steps with
    eps_null + w (eps_C - eps_null), here checked one DDIM step against the two U-Net passes."""
    from namd.sampling import ddim_scheduler, ddim_step

    condition, context = inputs
    unet = tiny_unet()
    kwargs = dict(num_inference_steps=STEPS, progress=False)
    plain = ddim_sample(unet, SCHEDULER_CONFIG, condition, context, PAIRS, SEEDS, **kwargs)
    torch.testing.assert_close(plain, ddim_sample(unet, SCHEDULER_CONFIG, condition, context, PAIRS, SEEDS,
                                                  guidance_scale=1.0, **kwargs), atol=0, rtol=0)
    null = ddim_sample(unet, SCHEDULER_CONFIG, condition, None, PAIRS, SEEDS, **kwargs)
    torch.testing.assert_close(null, ddim_sample(unet, SCHEDULER_CONFIG, condition, context, PAIRS, SEEDS,
                                                 guidance_scale=0.0, **kwargs))
    guided = ddim_sample(unet, SCHEDULER_CONFIG, condition, context, PAIRS, SEEDS, guidance_scale=3.0, **kwargs)
    assert (guided - plain).abs().amax() > 1e-3

    scheduler = ddim_scheduler(SCHEDULER_CONFIG, STEPS, unet.device)
    t = scheduler.timesteps[0]
    z = torch.randn(3, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    eps = {name: unet(torch.cat([z, condition.double()], 1), t, encoder_hidden_states=c.double()).sample
           for name, c in (("context", context), ("null", torch.zeros_like(context)))}
    expected = scheduler.step(eps["null"] + 3.0 * (eps["context"] - eps["null"]), t, z).prev_sample
    step = ddim_step(unet, scheduler, z, t, condition.double(), context.double(), eta=0.0, generator=None,
                     guidance_scale=3.0)
    torch.testing.assert_close(step, expected)


def test_a_residual_model_is_sampled_around_its_baseline(inputs):
    """ldm.diffusion_target: residual (an option): the U-Net's sample is (z_follow - z_base) / std, so the
    follow-up latent returned is z_base + std * sample, in the batched and the one-at-a-time path alike."""
    condition, context = inputs
    unet = tiny_unet()
    kwargs = dict(num_inference_steps=STEPS, progress=False)
    plain = ddim_sample(unet, SCHEDULER_CONFIG, condition, context, PAIRS, SEEDS, **kwargs)
    residual = ddim_sample(unet, SCHEDULER_CONFIG, condition, context, PAIRS, SEEDS, residual_std=0.25, **kwargs)
    torch.testing.assert_close(residual, condition[:, None] + 0.25 * plain)
    one = ddim_sample_one(unet, SCHEDULER_CONFIG, condition[2], context[2], PAIRS[2], SEEDS[1],
                          num_inference_steps=STEPS, residual_std=0.25)
    torch.testing.assert_close(one, residual[2, 1])
    with pytest.raises(ValueError, match="residual_std needs condition_latents"):
        ddim_sample(tiny_unet(conditional=False), SCHEDULER_CONFIG, None, context, PAIRS, SEEDS,
                    residual_std=0.25, **kwargs)
    with pytest.raises(ValueError, match="residual_std must be > 0"):
        ddim_sample(unet, SCHEDULER_CONFIG, condition, context, PAIRS, SEEDS, residual_std=0.0, **kwargs)


def test_bad_inputs_are_named(inputs):
    condition, context = inputs
    unet = tiny_unet(dtype=torch.float32)
    with pytest.raises(ValueError, match="condition_latents has 3 rows but there are 2 pair_ids"):
        ddim_sample(unet, SCHEDULER_CONFIG, condition, context[:2], PAIRS[:2], SEEDS, progress=False)
    with pytest.raises(ValueError, match="duplicates"):
        ddim_sample(unet, SCHEDULER_CONFIG, condition, context, PAIRS, [1, 1], progress=False)
    with pytest.raises(ValueError, match="in_channels is 8 but sampled \\(4\\) \\+ condition \\(3\\)"):
        ddim_sample(unet, SCHEDULER_CONFIG, condition[:, :3], context, PAIRS, SEEDS, progress=False)
    with pytest.raises(ValueError, match="no condition_latents"):
        ddim_sample(unet, SCHEDULER_CONFIG, None, context, PAIRS, SEEDS, progress=False)
