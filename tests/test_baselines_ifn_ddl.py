"""ImageFlowNet (SDE) and DDL-CXR baselines: build, train a step, sample, persist, batch invariance."""

import math

import pytest
import torch
from conftest import tiny_batch

from namd.methods.base import DataSpec, MethodContext
from namd.methods.ddlcxr import DDLCXR
from namd.methods.imageflownet import ImageFlowNetSDE, ScaleFlow, euler_maruyama
from namd.training import TrainSettings, fit

S = 16
IFN_TINY = {"base_channels": 8, "channel_mult": [1, 2], "attention_sizes": [8], "head_channels": 8,
            "norm_groups": 4, "dt": 2.5, "generate_batch_size": 7}
DDL_TINY = {"vae_block_out_channels": [8, 16], "vae_norm_groups": 4, "latent_channels": 2, "d_model": 16,
            "ehr_heads": 2, "ehr_feedforward": 32, "unet_block_out_channels": [16, 32], "unet_heads": 2,
            "unet_norm_groups": 8, "num_train_timesteps": 100, "ddim_steps": 3, "generate_batch_size": 5}


def build(cls, params, **extra):
    torch.manual_seed(0)
    return cls({**params, **extra}, DataSpec(image_size=S), MethodContext(seed=7))


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, module, prefix):
    after = module.state_dict()
    keys = [k for k in before if k.startswith(prefix) and before[k].is_floating_point()]
    return any(not torch.equal(before[k], after[k]) for k in keys)


def sample_checks(method):
    """Shape and range, seeds differ, and a pair's sample does not depend on its batch."""
    method.eval()
    batch = tiny_batch()
    out = method.generate(batch, [0, 1])
    assert out.shape == (3, 2, 1, S, S)
    assert torch.isfinite(out).all() and out.abs().max() <= 1
    assert not torch.allclose(out[:, 0], out[:, 1])
    alone = method.generate({k: v[1:2] for k, v in batch.items()}, [1])
    torch.testing.assert_close(alone[0, 0], out[1, 1], atol=1e-5, rtol=1e-5)
    return out


# -- ImageFlowNet (SDE) ------------------------------------------------------------------------
def test_euler_maruyama_integrates_a_constant_drift_exactly():
    flow = ScaleFlow(2, sigma_init=0.0)
    for m in flow.drift:
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.zeros_(m.weight)
            torch.nn.init.ones_(m.bias)  # relu(0 * x + 1) = 1 after the second conv
    h = torch.randn(3, 2, 4, 4)
    draws = []
    out = euler_maruyama([flow], [h], horizon=1.0, dt=0.3, noise=lambda d: draws.append(d) or torch.randn(3, d))
    torch.testing.assert_close(out[0], h + 1.0)
    assert len(draws) == math.ceil(1.0 / 0.3) and draws[0] == h[0].numel()


def test_imageflownet_trains_autoencoder_then_flows():
    method = build(ImageFlowNetSDE, IFN_TINY, flow_start_fraction=0.1, warmup_fraction=0.0, lr=1e-2)
    assert len(method.flows) == len(method.autoencoder.encode(tiny_batch()["baseline"]))
    opts = method.configure_optimizers()
    method.configure_schedulers(opts, 10)  # no warm-up: the first step has lr > 0; flows from step 1
    method.train()
    before = snapshot(method)
    losses = method.training_step(tiny_batch(), opts, 5, 1.0)
    assert float(losses["flow_on"]) == 1.0
    assert all(torch.isfinite(v) for v in losses.values())
    # step 5 >= 0.1 x 10 steps: both phases ran; phase (b) alone moves the flows
    assert changed(before, method, "autoencoder.") and changed(before, method, "flows.")

    gated = build(ImageFlowNetSDE, IFN_TINY, flow_start_fraction=1.0, warmup_fraction=0.0, lr=1e-2)
    opts = gated.configure_optimizers()
    gated.configure_schedulers(opts, 10)
    gated.train()
    before = snapshot(gated)
    losses = gated.training_step(tiny_batch(), opts, 5, 1.0)
    assert float(losses["flow_on"]) == 0.0
    assert changed(before, gated, "autoencoder.") and not changed(before, gated, "flows.")


def test_imageflownet_flow_switches_on_after_validation_psnr():
    method = build(ImageFlowNetSDE, IFN_TINY, flow_start_fraction=1.0, psnr_threshold=-100.0)
    opts = method.configure_optimizers()
    method.configure_schedulers(opts, 10)
    val = method.validation_losses(tiny_batch())
    assert {"loss", "recon_psnr", "pred_psnr"} <= set(val)
    assert not bool(method.flow_on)
    method.train()
    method.training_step(tiny_batch(), opts, 0, 1.0)
    assert bool(method.flow_on)


def test_imageflownet_samples_and_round_trips(tmp_path):
    method = build(ImageFlowNetSDE, IFN_TINY)
    out = sample_checks(method)
    method.save_pretrained(tmp_path)
    loaded = ImageFlowNetSDE.from_pretrained(tmp_path, MethodContext(seed=7)).eval()
    torch.testing.assert_close(loaded.generate(tiny_batch(), [0, 1]), out)


def test_imageflownet_rejects_bad_params():
    with pytest.raises(ValueError, match="imageflownet_sde: unknown params"):
        build(ImageFlowNetSDE, IFN_TINY, typo=1)
    with pytest.raises(ValueError, match="cannot be halved"):
        build(ImageFlowNetSDE, IFN_TINY, channel_mult=[1, 2, 2, 2, 4])


# -- DDL-CXR -------------------------------------------------------------------------------------
def test_ddlcxr_trains_autoencoder_then_diffusion():
    method = build(DDLCXR, DDL_TINY)
    opts = method.configure_optimizers()
    method.configure_schedulers(opts, 10)  # steps 0-3 autoencoder, 4-9 diffusion
    method.train()
    before = snapshot(method)
    losses = method.training_step(tiny_batch(), opts, 0, 1.0)
    assert all(torch.isfinite(v) for v in losses.values()) and float(losses["vae_label_weight"]) > 0
    assert changed(before, method, "vae.") and not changed(before, method, "unet.")

    before = snapshot(method)
    losses = method.training_step(tiny_batch(), opts, 5, 1.0)
    assert {"eps_mse", "hinge", "ehr_label"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    assert changed(before, method, "unet.") and changed(before, method, "ehr_encoder.")
    assert changed(before, method, "unet_ema.") and not changed(before, method, "vae.")


def test_ddlcxr_needs_the_run_length():
    method = build(DDLCXR, DDL_TINY)
    opts = method.configure_optimizers()
    with pytest.raises(RuntimeError, match="ddlcxr: call configure_schedulers"):
        method.training_step(tiny_batch(), opts, 0, 1.0)
    with pytest.raises(ValueError, match="leaves no step for the diffusion model"):
        build(DDLCXR, DDL_TINY, autoencoder_fraction=1.0).configure_schedulers(opts, 10)


def test_ddlcxr_samples_and_round_trips(tmp_path):
    method = build(DDLCXR, DDL_TINY)
    out = sample_checks(method)
    method.save_pretrained(tmp_path)
    loaded = DDLCXR.from_pretrained(tmp_path, MethodContext(seed=7)).eval()
    torch.testing.assert_close(loaded.generate(tiny_batch(), [0, 1]), out)


@pytest.mark.parametrize("cls, params", [(ImageFlowNetSDE, {**IFN_TINY, "flow_start_fraction": 0.5}),
                                         (DDLCXR, DDL_TINY)])
def test_fit_trains_end_to_end(tmp_path, cls, params):
    """The generic trainer runs both stages / phases within the step budget (the last epoch partial)
    and keeps a finite validation loss."""
    method = build(cls, params)
    data = [{k: v[i] for k, v in tiny_batch(6, seed=1).items()} for i in range(6)]
    result = fit(method, data[:4], data[4:], TrainSettings(max_steps=5, batch_size=2), tmp_path, progress=False)
    assert result.steps == 5 and result.epochs_run == 3 and math.isfinite(result.best_val_loss)
    # the second phase is placed by the budget: ImageFlowNet's flows from step 3 of 5, DDL-CXR's LDM from step 2
    first, last = result.history[0], result.history[-1]
    if cls is ImageFlowNetSDE:
        assert last["train_flow_on"] == 1.0
    else:
        assert "train_vae_l1" in first and "train_eps_mse" in last and "train_vae_l1" not in last
