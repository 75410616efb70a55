"""NAMD's conditional stage and its shared latent-diffusion machinery, on tiny models."""

import math

import pytest
import torch
from conftest import LLM

from namd.methods import get_method, trained_model_of, upstream_of
from namd.methods.base import DataSpec, MethodContext
from namd.models.unet import build_unet
from namd.models.vae import NoduleAlignedVAE, build_vae
from namd.training import warmup_cosine

PARAMS = {
    "llm": LLM, "n_sets": 2, "n_prompt_tokens": 2, "max_length": 64, "latent_channels": 4,
    "unet": {"block_out_channels": [32, 32], "layers_per_block": 1, "num_attention_heads": 2},
    "scheduler": {"num_train_timesteps": 1000, "beta_start": 8.5e-4, "beta_end": 1.2e-2, "beta_schedule": "linear"},
    "max_grad_norm": 1.0, "vae": "aligned", "max_steps": 1, "batch_size": 2, "lr": 1e-3, "prompt_lr": 1e-2,
    "ddim_steps": 3, "eta": 0.0, "sample_batch_size": 4,
}


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    root = tmp_path_factory.mktemp("upstream")
    torch.manual_seed(0)
    NoduleAlignedVAE(build_vae(sample_size=16, block_out_channels=(32, 32))).save_pretrained(root / "vae")
    unet = build_unet(sample_size=8, block_out_channels=(32, 32), num_attention_heads=2, cross_attention_dim=384)
    unet.save_pretrained(root / "ldm" / "unet")
    return {"vae": str(root / "vae"), "ldm_unconditional": str(root / "ldm")}


def batch(n=3):
    g = torch.Generator().manual_seed(1)
    return {
        "baseline_latent": torch.randn(n, 4, 8, 8, generator=g),
        "followup_latent": torch.randn(n, 4, 8, 8, generator=g),
        "followup": torch.zeros(n, 1, 16, 16),
        "report": [f"A {d} mm solid nodule with smooth margin is present in the right upper lobe."
                   for d in range(4, 4 + n)],
        "pair_id": [f"p{i}" for i in range(n)],
    }


def build(upstream, name="namd"):
    return get_method(name)(PARAMS, DataSpec(image_size=16), MethodContext(upstream=upstream, seed=5))


def test_registry_knows_namd_and_its_upstream():
    assert upstream_of("namd") == ("vae", "ldm_unconditional")
    assert get_method("namd_unaligned").group == "Ablation"
    with pytest.raises(KeyError, match="known methods: .*namd"):
        get_method("namdd")


def test_widened_unet_starts_as_stage_one_and_trains_the_prompts(upstream):
    method = build(upstream)
    assert method.unet.config.in_channels == 8
    stage1 = type(method.unet).from_pretrained(upstream["ldm_unconditional"], subfolder="unet")
    b = batch()
    ctx = method.report_context(b["report"])
    assert ctx.shape == (3, 2, 384)
    t = torch.tensor([10, 500, 900])
    with torch.no_grad():
        widened = method.unet(torch.cat([b["followup_latent"], b["baseline_latent"]], 1), t, ctx).sample
        original = stage1(b["followup_latent"], t, ctx).sample
    torch.testing.assert_close(widened, original)

    opt = method.configure_optimizers()
    before = method.text.soft_prompts.detach().clone()
    losses = method.training_step(b, opt, 0, 1.0)
    assert math.isfinite(float(losses["loss"].detach()))
    assert not torch.equal(before, method.text.soft_prompts.detach())
    assert all(not p.requires_grad for p in method.text.llm.parameters())


def test_generation_shapes_seeds_and_batch_invariance(upstream):
    method = build(upstream).eval()
    b = batch()
    images = method.generate(b, [0, 1])
    assert images.shape == (3, 2, 1, 16, 16)
    assert not torch.allclose(images[:, 0], images[:, 1])
    alone = method.generate({k: v[1:2] for k, v in b.items()}, [1])
    torch.testing.assert_close(alone[0, 0], images[1, 1], atol=1e-5, rtol=1e-4)


def test_save_and_load_give_the_same_samples(upstream, tmp_path):
    method = build(upstream).eval()
    method.text.soft_prompts.data += 0.5  # as if trained
    method.save_pretrained(tmp_path / "namd")
    loaded = get_method("namd").from_pretrained(tmp_path / "namd", MethodContext(seed=5))
    b = batch(2)
    torch.testing.assert_close(loaded.generate(b, [3]), method.generate(b, [3]))
    assert (tmp_path / "namd" / "unet" / "diffusion_pytorch_model.safetensors").exists()


@pytest.mark.parametrize("name", ["namd", "sd15"])
def test_missing_stage_one_is_named(upstream, name):
    assert "ldm_unconditional" in upstream_of(name)
    with pytest.raises(ValueError, match=f"{name}: needs the unconditional stage"):
        get_method(name)({**PARAMS, "max_text_tokens": 24}, DataSpec(image_size=16),
                         MethodContext(upstream={"vae": upstream["vae"]}))


def test_warmup_then_cosine_reaches_its_ends():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    sched = warmup_cosine(opt, warmup_steps=10, total_steps=110, lr_start=1e-6, lr_peak=1e-4, lr_min=1e-5)
    lrs = []
    for _ in range(111):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-6)
    assert lrs[10] == pytest.approx(1e-4)
    assert lrs[110] == pytest.approx(1e-5)
    assert max(lrs) == pytest.approx(1e-4)


def test_sd15_conditions_on_report_tokens_without_soft_prompts(upstream):
    params = {**PARAMS, "max_text_tokens": 24}
    method = get_method("sd15")(params, DataSpec(image_size=16), MethodContext(upstream=upstream, seed=5))
    b = batch()
    ctx = method.report_context(b["report"])
    assert ctx.shape == (3, 24, 384)
    assert method.unet.config.in_channels == 8
    # it starts as the stage-1 U-Net (same budget as NAMD): the baseline channels are zero-weighted
    stage1 = type(method.unet).from_pretrained(upstream["ldm_unconditional"], subfolder="unet")
    t = torch.tensor([10, 500, 900])
    with torch.no_grad():
        widened = method.unet(torch.cat([b["followup_latent"], b["baseline_latent"]], 1), t, ctx).sample
        torch.testing.assert_close(widened, stage1(b["followup_latent"], t, ctx).sample)
    (optimizer,) = method.configure_optimizers().values()
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == sum(
        p.numel() for p in method.unet.parameters())
    losses = method.training_step(b, {"diffusion": optimizer}, 0, 1.0)
    assert math.isfinite(float(losses["loss"].detach()))
    assert method.eval().generate(b, [0, 1]).shape == (3, 2, 1, 16, 16)


def test_null_context_row_samples_namds_model_with_a_zero_context(upstream, tmp_path):
    assert trained_model_of("namd_no_context") == "namd" and get_method("namd_no_context").group == "Ablation"
    method = build(upstream).eval()
    method.text.soft_prompts.data += 0.5  # as if trained
    method.save_pretrained(tmp_path / "namd")
    ablated = get_method("namd_no_context").from_pretrained(tmp_path / "namd", MethodContext(seed=5))
    b = batch(2)
    with_report, without = method.generate(b, [3]), ablated.generate(b, [3])
    # stage 1 here is untrained, so its cross-attention is far from zero and the report moves the sample
    assert (with_report - without).abs().mean() > 1e-3
    method.report_context = lambda reports: torch.zeros(len(reports), PARAMS["n_sets"], 384)
    torch.testing.assert_close(without, method.generate(b, [3]))
    with pytest.raises(TypeError, match="namd_no_context trains nothing: it samples the trained 'namd' model"):
        ablated.losses(b)


def test_context_dropout_trains_on_the_null_context_and_is_free_at_zero(upstream):
    """ldm.guidance.context_dropout (an option): at 0 the loss draws exactly the paper's random numbers;
    at ~1 every pair trains on the null context (zeros), after one draw of the dropout mask."""
    from namd.models.schedulers import denoising_loss

    b = batch(3)
    method = build(upstream).train()
    torch.manual_seed(7)
    paper = method.losses(b)["loss"]
    method.params = {**PARAMS, "guidance": {"context_dropout": 0.0, "scale": 1.0}}
    torch.manual_seed(7)
    torch.testing.assert_close(method.losses(b)["loss"], paper, atol=0, rtol=0)

    method.params = {**PARAMS, "guidance": {"context_dropout": 0.999999, "scale": 1.0}}
    torch.manual_seed(7)
    dropped = method.losses(b)["loss"]
    torch.manual_seed(7)
    context = method.report_context(b["report"])
    torch.rand(3)  # the mask's draw
    null = denoising_loss(method.unet, method.noise_scheduler, b["followup_latent"], torch.zeros_like(context),
                          condition_latents=b["baseline_latent"])
    torch.testing.assert_close(dropped, null)
    method.eval()  # validation reads every pair's own C
    torch.manual_seed(7)
    torch.testing.assert_close(method.losses(b)["loss"], paper, atol=0, rtol=0)


def test_guidance_scale_reaches_the_sampler_but_not_the_null_context_row(upstream, tmp_path):
    method = build(upstream).eval()
    method.params = {**PARAMS, "guidance": {"context_dropout": 0.0, "scale": 3.0}}
    b = batch(2)
    guided = method.generate(b, [1])
    method.params = PARAMS  # saved before the option existed: no guidance
    assert method.guidance_scale() == 1.0 and (guided - method.generate(b, [1])).abs().amax() > 1e-4
    method.params = {**PARAMS, "guidance": {"context_dropout": 0.0, "scale": 3.0}}
    method.save_pretrained(tmp_path / "namd")
    ablated = get_method("namd_no_context").from_pretrained(tmp_path / "namd", MethodContext(seed=5))
    assert ablated.guidance_scale() == 1.0


def test_null_context_row_refuses_another_methods_folder(upstream, tmp_path):
    build(upstream, "namd_unaligned").save_pretrained(tmp_path / "ablation")
    with pytest.raises(ValueError, match=r"method.json: holds method 'namd_unaligned', not 'namd'"):
        get_method("namd_no_context").from_pretrained(tmp_path / "ablation", MethodContext(seed=5))


@pytest.mark.parametrize("context_norm", ["none", "batch"])
def test_a_trained_namd_reads_the_report(upstream, context_norm):
    """What issue 13 depends on, pinned: on a toy task where only the report says whether the nodule
    grows, a tiny trained NAMD makes the two reports' samples differ as the targets do (follow-up =
    baseline + 1.5 for the growing report, = baseline otherwise), with C raw or standardised."""
    from namd.sampling import ddim_sample

    grows = ("Lung cancer screening for this 74 years old female with emphysema and family history of cancer. "
             "A part solid nodule, with spiculated margin, 25 mm in size is present in the right upper lobe.")
    stays = ("Lung cancer screening for this 55 years old male with no emphysema and no family history of cancer. "
             "A ground glass nodule, with smooth margin, 4 mm in size is present in the left lower lobe.")
    params = {**PARAMS, "context_norm": context_norm, "lr": 3e-3, "prompt_lr": 3e-3,
              "scheduler": {**PARAMS["scheduler"], "prediction_type": "v_prediction"}}
    torch.manual_seed(0)
    method = get_method("namd")(params, DataSpec(image_size=16), MethodContext(upstream=upstream, seed=5))
    method.text.soft_prompts.requires_grad_(False)  # no backward through the LLM: keeps the test short
    optimizers = method.configure_optimizers()
    g = torch.Generator().manual_seed(2)
    method.train()
    for step in range(100):
        baseline = torch.randn(8, 4, 8, 8, generator=g) * 0.5
        grow = torch.arange(8) % 2 == 0
        followup = baseline + 1.5 * grow.float()[:, None, None, None]
        method.training_step({"baseline_latent": baseline, "followup_latent": followup,
                              "report": [grows if x else stays for x in grow]}, optimizers, step, 1.0)
    method.eval()
    baseline = torch.randn(4, 4, 8, 8, generator=g) * 0.5
    ids = [f"p{i}" for i in range(4)]
    with torch.no_grad():
        sampled = {name: ddim_sample(method.unet, method.noise_scheduler.config, baseline,
                                     method.report_context([report] * 4), ids, [0], num_inference_steps=10,
                                     progress=False)[:, 0]
                   for name, report in (("grows", grows), ("stays", stays))}
    shift = (sampled["grows"] - sampled["stays"]).mean(dim=(1, 2, 3))
    assert torch.all(shift > 0.75), shift  # the same baselines and noise: only the report differs


def test_a_residual_model_trains_on_the_scaled_residual_and_samples_around_the_baseline(upstream, tmp_path):
    """ldm.diffusion_target: residual (an option): prepare() fixes the std of z_follow - z_base over the
    training pairs, the loss is the paper's on (z_follow - z_base) / std, and the follow-up returned is
    z_base + std * the U-Net's sample; the scale is saved with the model."""
    from namd.models.schedulers import denoising_loss
    from namd.models.vae import decode_latents
    from namd.sampling import ddim_sample

    b = batch(3)
    train = [{k: b[k][i] for k in ("baseline_latent", "followup_latent")} for i in range(3)]
    method = build(upstream)
    method.prepare(train)
    assert "residual_std" not in method.params  # the paper's target: nothing to fix
    method.params = {**PARAMS, "diffusion_target": "residual"}
    with pytest.raises(ValueError, match="params hold no residual_std"):
        method.losses(b)
    method.prepare(train)
    std = (b["followup_latent"] - b["baseline_latent"]).std().item()
    assert method.params["residual_std"] == pytest.approx(std)

    method.train()
    torch.manual_seed(7)
    loss = method.losses(b)["loss"]
    torch.manual_seed(7)
    context = method.report_context(b["report"])
    expected = denoising_loss(method.unet, method.noise_scheduler, (b["followup_latent"] - b["baseline_latent"]) / std,
                              context, condition_latents=b["baseline_latent"])
    torch.testing.assert_close(loss, expected)

    method.eval()
    residual = method.generate(b, [1])
    with torch.no_grad():
        sampled = ddim_sample(method.unet, method.noise_scheduler.config, b["baseline_latent"], context,
                              b["pair_id"], [1], num_inference_steps=PARAMS["ddim_steps"], base_seed=5, progress=False)
        expected = decode_latents(method.decoder(), b["baseline_latent"] + std * sampled[:, 0]).clamp(-1, 1)
    torch.testing.assert_close(residual[:, 0], expected)
    method.save_pretrained(tmp_path / "namd")
    loaded = get_method("namd").from_pretrained(tmp_path / "namd", MethodContext(upstream=upstream, seed=5))
    assert loaded.params["residual_std"] == pytest.approx(std)
    torch.testing.assert_close(loaded.generate(b, [1]), residual)
