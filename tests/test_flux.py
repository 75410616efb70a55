"""The Flux (rectified flow) baseline: packing, one training step, sampling, persistence, fine-tuning."""

import math

import pytest
import torch
from conftest import select, tiny_batch
from diffusers import FluxTransformer2DModel

from namd.methods.base import DataSpec, MethodContext
from namd.methods.flux import Flux, image_ids, pack_latents, unpack_latents
from namd.models.vae import NoduleAlignedVAE, build_vae

S = 16  # crop side; the tiny VAE halves it once, so latents are (4, 8, 8) -> 16 tokens
TINY = {
    "num_layers": 1, "num_single_layers": 1, "num_attention_heads": 2, "attention_head_dim": 16,
    "axes_dims_rope": [4, 6, 6], "max_text_tokens": 16, "num_inference_steps": 3,
}
D = 384  # MiniLM's width


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vae")
    NoduleAlignedVAE(build_vae(sample_size=S, block_out_channels=(8, 16), norm_num_groups=8)).save_pretrained(path)
    return str(path)


def build(vae_dir=None, **extra):
    torch.manual_seed(0)
    upstream = {"vae": vae_dir} if vae_dir else {}
    return Flux({**TINY, **extra}, DataSpec(image_size=S), MethodContext(upstream=upstream))


def test_packing_round_trip_and_ids():
    latents = torch.randn(2, 4, 8, 6)
    tokens = pack_latents(latents)
    assert tokens.shape == (2, 12, 16)
    assert torch.equal(tokens[0, 1], latents[0, :, 0:2, 2:4].reshape(-1))  # row 0, col 1
    assert torch.equal(unpack_latents(tokens, 8, 6), latents)
    assert image_ids(8, 6, "cpu")[1].tolist() == [0.0, 0.0, 1.0]


def test_attributes_and_unknown_param():
    assert Flux.name == "flux" and Flux.stochastic and Flux.group == "Stochastic Methods" and Flux.reference
    with pytest.raises(ValueError, match="flux: unknown params"):
        build(num_blocks=3)


def test_one_training_step_changes_the_transformer_only():
    method = build()
    assert all(k.startswith("transformer.") for k in method.state_dict())  # text model and VAE stay outside
    before = {k: v.clone() for k, v in method.state_dict().items()}
    losses = method.training_step(tiny_batch(), method.configure_optimizers(), 0, 1.0)
    assert math.isfinite(losses["loss"].item())
    changed = {k.split(".")[1] for k, v in method.state_dict().items() if not torch.equal(v, before[k])}
    assert {"x_embedder", "context_embedder", "time_text_embed", "transformer_blocks",
            "single_transformer_blocks", "proj_out"} <= changed
    assert math.isfinite(float(method.validation_losses(tiny_batch(seed=1))["loss"]))


def test_generate_shape_seeds_and_batch_invariance(vae_dir):
    method = build(vae_dir).eval()
    batch = tiny_batch()
    out = method.generate(batch, [0, 1])
    assert out.shape == (3, 2, 1, S, S) and out.abs().max() <= 1
    assert not torch.allclose(out[:, 0], out[:, 1])  # seeds differ
    alone = method.generate(select(batch, [2]), [1])
    assert torch.allclose(alone[0, 0], out[2, 1], atol=1e-5)  # a (pair, seed) sample ignores its batch
    reordered = method.generate(select(batch, [1, 0]), [1, 0])
    assert torch.allclose(reordered[0, 0], out[1, 1], atol=1e-5)


def test_generate_needs_the_upstream_vae():
    with pytest.raises(ValueError, match=r"flux: generation needs the trained VAE"):
        build().eval().generate(tiny_batch(), [0])


def test_save_and_load_round_trip(vae_dir, tmp_path):
    method = build(vae_dir).eval()
    method.save_pretrained(tmp_path)
    assert not (tmp_path / "method.safetensors").exists()
    plain = FluxTransformer2DModel.from_pretrained(tmp_path / "transformer")  # diffusers' own format
    assert plain.config.in_channels == 32 and plain.config.out_channels == 16
    loaded = Flux.from_pretrained(tmp_path, MethodContext(upstream={"vae": vae_dir}))
    batch = tiny_batch(2)
    assert torch.equal(loaded.generate(batch, [5]), method.generate(batch, [5]))


def tiny_flux_checkpoint(path, joint_attention_dim=D):
    """A base (unconditional) Flux transformer with guidance embeddings, as FLUX.1 [dev] is."""
    torch.manual_seed(1)
    base = FluxTransformer2DModel(
        in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=joint_attention_dim, pooled_projection_dim=D, guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    )
    base.save_pretrained(path / "transformer")
    return base


def test_fine_tunes_a_pretrained_checkpoint(tmp_path):
    base = tiny_flux_checkpoint(tmp_path).eval()
    method = build(pretrained=str(tmp_path)).eval()
    weight = method.transformer.x_embedder.weight
    assert weight.shape == (32, 32) and torch.equal(weight[:, 16:], torch.zeros(32, 16))
    # zero-initialised baseline channels: the widened model starts as the loaded one
    batch = tiny_batch(2)
    noisy, sigma = pack_latents(batch["followup_latent"]), torch.tensor([0.3, 0.8])
    text, pooled = method.encode_reports(batch["report"])
    ids = image_ids(8, 8, "cpu")
    with torch.no_grad():
        widened = method.velocity(noisy, pack_latents(batch["baseline_latent"]), sigma, text, pooled, ids)
        guidance = torch.full((2,), method.params["guidance_scale"])
        expected = base(hidden_states=noisy, encoder_hidden_states=text, pooled_projections=pooled, timestep=sigma,
                        img_ids=ids, txt_ids=torch.zeros(16, 3), guidance=guidance).sample
    assert torch.allclose(widened, expected, atol=1e-5)
    losses = method.train().training_step(batch, method.configure_optimizers(), 0, 1.0)
    assert math.isfinite(losses["loss"].item())


def test_mismatched_checkpoint_is_a_clear_error(tmp_path):
    tiny_flux_checkpoint(tmp_path, joint_attention_dim=64)
    with pytest.raises(ValueError, match="flux: .* text states of width 64"):
        build(pretrained=str(tmp_path))
