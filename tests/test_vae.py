import socket

import lpips
import pytest
import torch
import torchvision
from diffusers import AutoencoderKL
from torchvision.transforms.functional import InterpolationMode, rotate

from namd.models.augment import random_rotation
from namd.models.vae import (
    NoduleAlignedVAE,
    build_vae,
    decode_latents,
    encode_latents,
    fit_latent_scale,
    load_vae,
)
from namd.hub_weights import load_lpips, lpips_weights_path
from namd.models.vae import LATENT_PROBE_FILE

WEIGHTS = dict(lambda_kl=1e-3, lambda_lpips=0.0, lambda_align=0.5, lambda_pred=0.2, sigma_f=1.0, sigma_z=2.0)


def tiny_vae(**overrides) -> AutoencoderKL:
    """16x16 crops, compression 2: an 8x8x4 latent from 43k parameters."""
    options = dict(sample_size=16, block_out_channels=(8, 16), norm_num_groups=4) | overrides
    return build_vae(**options)


def make_batch(batch_size=4, size=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {
        "image": torch.rand(batch_size, 1, size, size, generator=generator) * 2 - 1,
        "features": torch.randn(batch_size, 5, generator=generator),
        "label": torch.tensor([0.0, 1.0] * (batch_size // 2)),
    }


def go_offline(monkeypatch, torch_home):
    """Point torch hub at torch_home and make any download or connection fail loudly."""
    monkeypatch.setenv("TORCH_HOME", str(torch_home))

    def no_network(*args, **kwargs):
        raise AssertionError("a test tried to reach the network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)


@pytest.fixture(scope="module")
def random_alexnet_lpips(tmp_path_factory):
    """load_lpips with random AlexNet weights of the right shapes written to an offline hub cache.

    Only the convolutional trunk matters to LPIPS; the 58M classifier weights are stored as
    stride-0 views of one value so the file stays small.
    """
    state = torchvision.models.alexnet().state_dict()
    state = {
        name: tensor if name.startswith("features") else torch.zeros(1).expand(tensor.shape)
        for name, tensor in state.items()
    }
    with pytest.MonkeyPatch.context() as monkeypatch:
        go_offline(monkeypatch, tmp_path_factory.mktemp("torch"))
        lpips_weights_path().parent.mkdir(parents=True)
        torch.save(state, lpips_weights_path())
        return load_lpips("cpu"), state["features.0.weight"]


def test_default_vae_maps_32_crop_to_8x8x4_latent():
    vae = build_vae()
    images = torch.rand(2, 1, 32, 32) * 2 - 1
    posterior = vae.encode(images).latent_dist
    assert posterior.mean.shape == (2, 4, 8, 8)
    assert vae.decode(posterior.mean).sample.shape == (2, 1, 32, 32)
    assert NoduleAlignedVAE(vae).probe.in_features == 4 * 8 * 8


def test_build_vae_rejects_inconsistent_sizes():
    with pytest.raises(ValueError, match="not divisible by the VAE's compression 4"):
        build_vae(sample_size=30)
    with pytest.raises(ValueError, match="norm_num_groups 32"):
        build_vae(block_out_channels=(16, 32))


def test_loss_terms_and_total_is_weighted_sum(random_alexnet_lpips):
    torch.manual_seed(0)
    model = NoduleAlignedVAE(tiny_vae(sample_size=32))  # AlexNet needs crops of at least 31 pixels
    weights = WEIGHTS | {"lambda_lpips": 0.7}
    lpips_model, _ = random_alexnet_lpips
    terms = model.loss(make_batch(size=32), **weights, lpips_model=lpips_model,
                       generator=torch.Generator().manual_seed(1))
    assert set(terms) == {"rec", "kl", "lpips", "align", "pred", "total"}
    assert all(torch.isfinite(value) and value.ndim == 0 for value in terms.values())
    assert terms["lpips"] > 0
    expected = terms["rec"] + sum(weights[f"lambda_{name}"] * terms[name] for name in ("kl", "lpips", "align", "pred"))
    torch.testing.assert_close(terms["total"], expected)


def test_unaligned_ablation_reports_but_does_not_train_alignment_or_probe():
    torch.manual_seed(0)
    model = NoduleAlignedVAE(tiny_vae())
    batch = make_batch()
    terms = model.loss(batch, **WEIGHTS | {"lambda_align": 0.0, "lambda_pred": 0.0})
    assert torch.isnan(terms["lpips"])  # no LPIPS network given: not measured
    assert terms["align"] > 0 and terms["pred"] > 0 and not terms["pred"].requires_grad
    torch.testing.assert_close(terms["total"], terms["rec"] + WEIGHTS["lambda_kl"] * terms["kl"])
    terms["total"].backward()
    assert model.probe.weight.grad is None
    assert model.vae.encoder.conv_in.weight.grad is not None

    model.zero_grad()
    model.loss(batch, **WEIGHTS)["total"].backward()
    assert model.probe.weight.grad.abs().sum() > 0


def test_loss_input_errors():
    model = NoduleAlignedVAE(tiny_vae())
    batch = make_batch()
    with pytest.raises(KeyError, match="features"):
        model.loss({"image": batch["image"], "label": batch["label"]}, **WEIGHTS)
    with pytest.raises(ValueError, match=r"batch\['image'\] must be \(B, 1, 16, 16\)"):
        model.loss(make_batch(size=32), **WEIGHTS)
    with pytest.raises(ValueError, match="no lpips_model was given"):
        model.loss(batch, **WEIGHTS | {"lambda_lpips": 1.0})
    single = {key: value[:1] for key, value in batch.items()}
    with pytest.raises(ValueError, match="lambda_align = 0.5 > 0, but the alignment loss needs a batch of at least 3"):
        model.loss(single, **WEIGHTS)
    assert torch.isnan(model.loss(single, **WEIGHTS | {"lambda_align": 0.0})["align"])


def test_lpips_refuses_crops_alexnet_cannot_score(random_alexnet_lpips):
    with pytest.raises(ValueError, match="at least 31 pixels, these are 16"):
        NoduleAlignedVAE(tiny_vae()).loss(
            make_batch(), **WEIGHTS | {"lambda_lpips": 1.0}, lpips_model=random_alexnet_lpips[0]
        )


def test_trainer_step_with_rotations_updates_and_is_reproducible():
    from namd.stages.vae import VAETraining

    params = {**WEIGHTS, "lr": 1e-3, "weight_decay": 0.0, "rotations": [45, 90, 135, 180]}

    def run():
        torch.manual_seed(0)
        module = VAETraining(NoduleAlignedVAE(tiny_vae()), params, seed=3)
        optimizers = module.configure_optimizers()
        return [{k: float(v.detach()) for k, v in module.training_step(make_batch(), optimizers, step, 1.0).items()}
                for step in range(3)]

    logs, logs_again = run(), run()
    assert [pytest.approx(log, rel=0, abs=0, nan_ok=True) for log in logs] == logs_again
    assert set(logs[0]) == {"loss", "rec", "kl", "lpips", "align", "pred"}
    assert logs[-1]["loss"] < logs[0]["loss"]


def test_save_load_round_trip_and_latent_scale(tmp_path):
    torch.manual_seed(0)
    model = NoduleAlignedVAE(tiny_vae()).eval()  # eval and train attention paths differ in the last bit
    images = make_batch(batch_size=6)["image"]
    scale = fit_latent_scale(model.vae, images, batch_size=4)
    latents = encode_latents(model.vae, images, batch_size=4)
    assert latents.shape == (6, 4, 8, 8)
    assert latents.std().item() == pytest.approx(1.0, rel=1e-5)

    model.save_pretrained(tmp_path / "vae")
    loaded = NoduleAlignedVAE.from_pretrained(tmp_path / "vae", latent_channels=4)
    assert AutoencoderKL.from_pretrained(tmp_path / "vae").config.scaling_factor == pytest.approx(scale)
    torch.testing.assert_close(encode_latents(loaded.vae, images), latents, rtol=0, atol=0)
    torch.testing.assert_close(decode_latents(loaded.vae, latents), decode_latents(model.vae, latents), rtol=0, atol=0)
    flat = latents.flatten(1)
    torch.testing.assert_close(loaded.probe_logits(flat), model.probe_logits(flat), rtol=0, atol=0)


def test_loading_checks_channels_and_probe(tmp_path):
    NoduleAlignedVAE(tiny_vae()).save_pretrained(tmp_path / "grey")
    with pytest.raises(ValueError, match=r"grey/config.json: the VAE has latent_channels=4, but 8"):
        NoduleAlignedVAE.from_pretrained(tmp_path / "grey", latent_channels=8)

    tiny_vae(in_channels=3).save_pretrained(tmp_path / "rgb")
    with pytest.raises(ValueError, match=r"rgb/config.json: the VAE has in_channels=3.*1-channel images"):
        load_vae(tmp_path / "rgb")

    NoduleAlignedVAE(tiny_vae(sample_size=32)).save_pretrained(tmp_path / "mixed")
    (tmp_path / "mixed" / LATENT_PROBE_FILE).replace(tmp_path / "grey" / LATENT_PROBE_FILE)
    with pytest.raises(ValueError, match=f"{LATENT_PROBE_FILE}: probe tensors"):
        NoduleAlignedVAE.from_pretrained(tmp_path / "grey")


def test_stable_diffusion_layout_is_adapted_to_one_channel(tmp_path):
    torch.manual_seed(0)
    rgb = tiny_vae(in_channels=3, sample_size=64)
    rgb.save_pretrained(tmp_path / "vae")  # a pipeline folder: the VAE lives in its vae/ subfolder
    grey = build_vae(pretrained=tmp_path, subfolder="vae", sample_size=16)
    assert (grey.config.in_channels, grey.config.out_channels, grey.config.sample_size) == (1, 1, 16)

    images = torch.rand(3, 1, 16, 16) * 2 - 1
    mean = grey.encode(images).latent_dist.mean
    torch.testing.assert_close(mean, rgb.encode(images.expand(-1, 3, -1, -1)).latent_dist.mean)
    torch.testing.assert_close(grey.decode(mean).sample, rgb.decode(mean).sample.mean(dim=1, keepdim=True))
    NoduleAlignedVAE(grey).loss(make_batch(), **WEIGHTS)["total"].backward()

    with pytest.raises(ValueError, match=r"vae/config.json: the VAE has latent_channels=4, but 8"):
        build_vae(pretrained=tmp_path, subfolder="vae", latent_channels=8)


def test_load_lpips_uses_cached_alexnet_and_is_frozen(random_alexnet_lpips):
    model, first_conv_weight = random_alexnet_lpips
    assert isinstance(model, lpips.LPIPS) and not model.training
    assert not any(parameter.requires_grad for parameter in model.parameters())
    torch.testing.assert_close(model.net.slice1[0].weight, first_conv_weight, rtol=0, atol=0)


def test_load_lpips_names_missing_weights(tmp_path, monkeypatch):
    go_offline(monkeypatch, tmp_path / "torch")
    with pytest.raises(FileNotFoundError, match=r"torch/hub/checkpoints/alexnet-owt-[0-9a-f]+\.pth"):
        load_lpips("cpu")


def turn(image, angle):
    return rotate(image, angle, interpolation=InterpolationMode.BILINEAR, fill=[-1.0])


def test_rotation_by_90_is_exact_and_pairs_stay_aligned():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(64, 1, 16, 16, generator=generator) * 2 - 1
    quarter = random_rotation(images, angles=(90,), generator=torch.Generator().manual_seed(3))
    turned = torch.tensor([not torch.equal(a, b) for a, b in zip(quarter, images)])
    assert 0 < turned.sum() < len(images)  # 0 (keep) is one of the choices
    assert torch.equal(quarter[turned], torch.rot90(images[turned], 1, dims=(-2, -1)))
    assert torch.equal(quarter[~turned], images[~turned])

    baseline, followup = images, -images.flip(-1)
    rotated = random_rotation(torch.cat([baseline, followup], dim=1), generator=torch.Generator().manual_seed(5))
    assert rotated.shape == (64, 2, 16, 16)
    rotated_baseline, rotated_followup = rotated.chunk(2, dim=1)
    seen = set()
    for index in range(len(images)):
        candidates = {
            angle: turn(baseline[index : index + 1], angle)[0] for angle in (0, 45, 90, 135, 180)
        }
        angle = min(candidates, key=lambda a: (candidates[a] - rotated_baseline[index]).abs().max())
        seen.add(angle)
        expected = turn(followup[index : index + 1], angle)[0]
        torch.testing.assert_close(rotated_followup[index], expected, atol=1e-5, rtol=0)
    assert seen == {0, 45, 90, 135, 180}


def test_rotation_rejects_bad_input():
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="distinct"):
        random_rotation(torch.zeros(2, 1, 8, 8), angles=(0, 90), generator=generator)
    with pytest.raises(ValueError, match="square"):
        random_rotation(torch.zeros(2, 1, 8, 6), generator=generator)
