"""McWGAN and CorrFlowNet (ODE / SDE) baselines, and the shared blocks they are built from."""

import math

import pytest
import torch
from conftest import select, tiny_batch

from namd.methods.base import DataSpec, MethodContext
from namd.methods.blocks import ConvDecoder, ConvEncoder, ConvUNet, StridedEncoder, TimeEmbedding, merge_params, ssim
from namd.methods.corrflownet import CorrFlowNetODE, CorrFlowNetSDE, latent_correlation
from namd.methods.mcwgan import McWGAN

S = 16
TINY = {
    McWGAN: {"base_channels": 8, "channel_mults": [1, 2], "critic_widths": [8, 16]},
    CorrFlowNetODE: {"ae_channels": 8, "ae_mults": [1, 2], "flow_channels": 8, "time_dim": 16, "n_steps": 4},
    CorrFlowNetSDE: {"ae_channels": 8, "ae_mults": [1, 2], "flow_channels": 8, "time_dim": 16, "n_steps": 4},
}
METHODS = list(TINY)


pytestmark = pytest.mark.usefixtures("one_thread")


def build(cls, upstream=None, **extra):
    torch.manual_seed(0)
    return cls({**TINY[cls], **extra}, DataSpec(image_size=S), MethodContext(upstream=upstream or {}))


@pytest.mark.parametrize("cls", METHODS)
def test_method_attributes(cls):
    assert cls.name and cls.reference
    assert cls.group == ("Stochastic Methods" if cls.stochastic else "Deterministic Methods")


@pytest.mark.parametrize("cls", METHODS)
def test_one_training_step_changes_every_part(cls):
    method = build(cls)
    before = {k: v.clone() for k, v in method.state_dict().items()}
    losses = method.training_step(tiny_batch(), method.configure_optimizers(), 0, 1.0)
    assert all(math.isfinite(float(v.detach())) for v in losses.values()), losses
    changed = {k.split(".")[0] for k, v in method.state_dict().items() if not torch.equal(v, before[k])}
    parts = {"predictor", "critic"} if cls is McWGAN else {"encoder", "decoder", "probe", "velocity_net", "time"}
    assert parts <= changed
    val = method.validation_losses(tiny_batch(seed=1))
    assert math.isfinite(float(val["loss"]))


@pytest.mark.parametrize("cls", METHODS)
def test_generate_shape_and_range(cls):
    method = build(cls).eval()
    out = method.generate(tiny_batch(), [0, 1])
    k = 2 if cls.stochastic else 1
    assert out.shape == (3, k, 1, S, S)
    assert out.abs().max() <= 1


@pytest.mark.parametrize("cls", [c for c in METHODS if not c.stochastic])
def test_deterministic_methods_ignore_seeds(cls):
    method = build(cls).eval()
    batch = tiny_batch()
    assert torch.equal(method.generate(batch, [0]), method.generate(batch, [7]))


def test_sde_samples_differ_across_seeds_and_not_across_batches():
    method = build(CorrFlowNetSDE).eval()
    batch = tiny_batch(n=3)
    out = method.generate(batch, [0, 1, 2])
    assert not torch.allclose(out[:, 0], out[:, 1])
    alone = method.generate(select(batch, [1]), [2])
    torch.testing.assert_close(alone[0, 0], out[1, 2], atol=1e-5, rtol=0)
    reordered = method.generate(select(batch, [2, 1, 0]), [2, 0])
    torch.testing.assert_close(reordered[1, 0], out[1, 2], atol=1e-5, rtol=0)


@pytest.mark.parametrize("cls", [CorrFlowNetODE, CorrFlowNetSDE])
def test_sampler_reaches_the_target_under_the_exact_drift(cls, monkeypatch):
    """With the oracle bridge drift (target - z) / (1 - t), Euler(-Maruyama) ends exactly on the target."""
    method = build(cls).eval()
    z0, target = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    monkeypatch.setattr(method, "velocity", lambda z, t, zb: (target - z) / (1 - t[:, None, None, None]))
    increments = None if cls is CorrFlowNetODE else torch.randn(2, method.params["n_steps"] - 1, 4, 8, 8)
    torch.testing.assert_close(method.integrate(z0, increments), target, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cls", METHODS)
def test_save_and_load_round_trip(cls, tmp_path):
    method = build(cls)
    method.training_step(tiny_batch(), method.configure_optimizers(), 0, 1.0)
    method.eval()
    method.save_pretrained(tmp_path)
    loaded = cls.from_pretrained(tmp_path, MethodContext())
    batch = tiny_batch(seed=3)
    torch.testing.assert_close(loaded.generate(batch, [0, 1]), method.generate(batch, [0, 1]))


def test_unknown_param_is_an_error():
    with pytest.raises(ValueError, match="corrflownet_ode: unknown params \\['n_stpes'\\]"):
        build(CorrFlowNetODE, n_stpes=3)
    with pytest.raises(ValueError, match="unknown params"):
        build(CorrFlowNetODE, sigma=0.5)  # the ODE has no bridge noise
    with pytest.raises(ValueError, match="corrflownet_sde: sigma must be > 0"):
        build(CorrFlowNetSDE, sigma=0.0)


def test_mcwgan_without_perceptual_network_turns_the_term_off():
    method = build(McWGAN)
    assert method.lambda_perc == 0 and "perceptual loss off" in method.card_notes[0]
    losses = method.training_step(tiny_batch(), method.configure_optimizers(), 0, None)
    assert "perceptual" not in losses


def test_mcwgan_perceptual_network_from_a_timm_folder(tmp_path):
    timm = pytest.importorskip("timm")
    from timm.models import save_for_hf

    save_for_hf(timm.create_model("test_resnet", in_chans=1, num_classes=1), tmp_path / "clf")
    method = build(McWGAN, upstream={"perceptual": str(tmp_path / "clf")})
    losses = method.training_step(tiny_batch(), method.configure_optimizers(), 0, 1.0)
    assert math.isfinite(float(losses["perceptual"])) and method.lambda_perc == 1.0
    frozen_before = {k: v.clone() for k, v in method._loss_nets["perceptual"].state_dict().items()}
    method.training_step(tiny_batch(seed=2), method.configure_optimizers(), 1, 1.0)
    assert all(torch.equal(v, method._loss_nets["perceptual"].state_dict()[k]) for k, v in frozen_before.items())
    assert not any("perceptual" in k or "_loss_nets" in k for k in method.state_dict())


def test_latent_correlation():
    a = torch.randn(32, 3, 2, 2)
    assert latent_correlation(a, 2 * a + 1).item() == pytest.approx(1.0, abs=1e-4)
    assert latent_correlation(a, -a).item() == pytest.approx(-1.0, abs=1e-4)
    assert latent_correlation(a[:1], a[:1]).item() == 0.0  # one sample: no correlation, no NaN


def test_ssim_matches_definition():
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)
    flat = torch.zeros_like(x)
    # mean-only images: SSIM reduces to the luminance term (2 mu_x mu_y + c1) / (mu_x^2 + mu_y^2 + c1)
    c1 = (0.01 * 2) ** 2
    assert ssim(flat + 0.5, flat).item() == pytest.approx(c1 / (0.25 + c1), rel=1e-4)
    with pytest.raises(ValueError, match="smaller than"):
        ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))


@pytest.mark.parametrize("size", [16, 32, 64])
def test_blocks_work_at_every_crop_size(size):
    x = torch.randn(2, 1, size, size)
    emb = TimeEmbedding(16)(torch.rand(2))
    assert ConvUNet(1, 3, 8, (1, 2, 2), emb_dim=16)(x, emb).shape == (2, 3, size, size)
    z = ConvEncoder(1, 4, 8, (1, 2, 2))(x)
    assert z.shape == (2, 4, size // 4, size // 4)
    assert ConvDecoder(4, 2, 8, (1, 2, 2))(z).shape == (2, 2, size, size)
    assert StridedEncoder(1, [8, 16, 32])(x).shape == (2, 32, size // 8, size // 8)


def test_blocks_reject_sizes_they_cannot_halve():
    with pytest.raises(ValueError, match="ConvUNet: input of size \\(12, 12\\) is not divisible by 8"):
        ConvUNet(1, 1, 8, (1, 2, 2, 2))(torch.randn(1, 1, 12, 12))


def test_merge_params():
    assert merge_params("m", {"a": 1, "b": 2}, {"b": 3}) == {"a": 1, "b": 3}
    with pytest.raises(ValueError, match="m: unknown params \\['c'\\]"):
        merge_params("m", {"a": 1}, {"c": 1})
