"""tools/standin_weights.py: every stand-in loads with its library's own loader, offline, as written."""

import socket
import sys

import pytest
import timm
import torch
from conftest import ROOT
from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
from safetensors.torch import load_file
from transformers import AutoTokenizer, Gemma3ForConditionalGeneration, GemmaTokenizer

sys.path.insert(0, str(ROOT / "tools"))
import standin_weights as standin  # noqa: E402

from namd.evaluation.classifier import build_classifier  # noqa: E402
from namd.models.perceptual import build_perceptual_net  # noqa: E402
from namd.models.text_encoder import SoftPromptContextEncoder  # noqa: E402
from namd.models.unet import build_unet  # noqa: E402
from namd.models.vae import build_vae  # noqa: E402

REPORT = "A part solid nodule, with spiculated margin, 27 mm in size is present in the right lower lobe."


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return standin.write_all(tmp_path_factory.mktemp("standin"))


def test_sd15_folder_has_sd15_layout_and_loads(written):
    folder = written["sd15"]
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae")
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    PNDMScheduler.from_pretrained(folder, subfolder="scheduler")
    assert (vae.config.in_channels, vae.config.latent_channels, len(vae.config.block_out_channels)) == (3, 4, 4)
    assert unet.config.cross_attention_dim == 768
    assert tuple(unet.config.down_block_types) == standin.SD15_UNET["down_block_types"]
    saved = load_file(folder / "vae" / "diffusion_pytorch_model.safetensors")
    torch.testing.assert_close(vae.state_dict()["encoder.conv_in.weight"], saved["encoder.conv_in.weight"])
    # the project's paper path: RGB VAE folded to grey, U-Net k/v resized to the LLM's width
    grey = build_vae(sample_size=64, pretrained=folder, subfolder="vae")
    assert grey.config.in_channels == grey.config.out_channels == 1
    resized = build_unet(pretrained=folder, cross_attention_dim=64)
    assert resized.config.cross_attention_dim == 64
    assert all(torch.isfinite(p).all() for p in resized.parameters())
    key = resized.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_k.weight  # (32, 64), re-made
    assert key.shape == (32, 64) and 0 < key.abs().max() <= 64**-0.5  # a fresh Linear's bound 1/sqrt(fan_in)
    query = resized.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_q.weight
    torch.testing.assert_close(query, unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_q.weight)


def test_medgemma_folder_is_a_gemma3_multimodal_checkpoint_with_gemmas_tokenizer(written):
    folder = written["medgemma"]
    model, info = Gemma3ForConditionalGeneration.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert isinstance(tokenizer, GemmaTokenizer)
    ids = tokenizer(REPORT)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id == 2 and ids[-1] != tokenizer.eos_token_id  # <bos> only, as Gemma
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1)
    assert tokenizer.decode(ids, skip_special_tokens=True) == REPORT  # byte fallback round-trips
    assert len(ids) < len(REPORT) / 2  # subwords, not characters
    image_token = tokenizer.convert_ids_to_tokens(model.config.image_token_index)
    assert image_token == "<image_soft_token>" and model.config.text_config.vocab_size == len(tokenizer)
    encoder = SoftPromptContextEncoder.from_pretrained(str(folder), n_sets=2, n_prompt_tokens=3, max_length=64)
    assert type(encoder.llm).__name__ == "Gemma3TextModel" and encoder.context_dim == 64
    with torch.no_grad():
        assert torch.isfinite(encoder([REPORT, "short"])).all()


def test_timm_files_load_as_pretrained_weights(written):
    vit = timm.create_model(standin.VIT, pretrained=True, pretrained_cfg_overlay=dict(file=str(written["vit"])),
                            **standin.VIT_SIZES)
    saved = load_file(written["vit"])
    torch.testing.assert_close(vit.state_dict()["blocks.0.attn.qkv.weight"], saved["blocks.0.attn.qkv.weight"])
    # the evaluator's and the perceptual net's own loading paths: 1 channel, 64 px, their heads
    classifier = build_classifier(image_size=64, patch_size=16, pretrained=standin.VIT,
                                  pretrained_file=written["vit"], **standin.VIT_SIZES)
    torch.testing.assert_close(classifier.patch_embed.proj.weight,
                               saved["patch_embed.proj.weight"].sum(dim=1, keepdim=True))
    net = build_perceptual_net(image_size=64, width=standin.RESNET_WIDTH, blocks=standin.RESNET_BLOCKS,
                               pretrained_file=written["resnet"])
    torch.testing.assert_close(net.layer1[0].conv1.weight, load_file(written["resnet"])["layer1.0.conv1.weight"])


def test_lpips_and_fid_weights_load_from_the_standin_torch_home(written, monkeypatch):
    from namd.evaluation import image_metrics

    monkeypatch.setenv("TORCH_HOME", str(written["torch_home"]))
    alexnet = torch.load(image_metrics.lpips_weights_path())
    net = image_metrics.load_lpips("cpu")
    torch.testing.assert_close(net.net.slice1[0].weight, alexnet["features.0.weight"])
    inception = image_metrics.load_inception()
    saved = torch.load(image_metrics.fid_weights_path())
    torch.testing.assert_close(inception.blocks[0][0].conv.weight, saved["Conv2d_1a_3x3.conv.weight"])
