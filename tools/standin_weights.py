"""Write randomly initialised, tiny stand-ins for every checkpoint configs/paper.yaml loads.

    .venv/bin/python tools/standin_weights.py OUT_DIR

The files have the real checkpoints' formats and layouts, so configs/paper-standin.yaml runs the
paper configuration's every loading path (SD1.5 fine-tuning, the Gemma 3 context, the pretrained
ViT evaluator, a pretrained perceptual net, LPIPS and FID) on a CPU without the gated or large
weights. Only sizes shrink; every number they give is meaningless. Written under OUT_DIR:

    stable-diffusion-v1-5/   diffusers pipeline folder: model_index.json, vae/, unet/, scheduler/
                             with SD1.5's config keys (3-channel VAE, 4 levels, cross-attention 768)
    medgemma-1.5-4b-it/      transformers Gemma3ForConditionalGeneration (text + SigLIP towers) and
                             a Gemma tokenizer (byte-fallback BPE, <bos> prefix, <eos>, <pad> = 0)
    timm/<name>.safetensors  the evaluator's ViT and the perceptual ResNet-18 (3-channel ImageNet
                             heads, as timm's hub files; timm adapts them to 1 channel)
    torch_home/hub/checkpoints/  lpips' AlexNet and pytorch-fid's Inception under their real names
                             (TORCH_HOME=OUT_DIR/torch_home); never the user's own torch cache

FLUX.1 is not written: configs/paper.yaml trains Flux from scratch (FLUX.1's weights need a
16-channel VAE and T5-XXL, namd/methods/flux.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from unittest import mock

import timm
import torch
import torchvision
from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import (
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3TextConfig,
    GemmaTokenizer,
    SiglipVisionConfig,
)

SD15 = "stable-diffusion-v1-5"
MEDGEMMA = "medgemma-1.5-4b-it"
VIT = "vit_small_patch16_224.augreg_in21k_ft_in1k"
RESNET = "resnet18"
#: the stand-in ViT's sizes; configs/paper-standin.yaml gives the evaluator the same
VIT_SIZES = dict(embed_dim=32, depth=2, num_heads=2)
#: the stand-in ResNet-18's sizes (perceptual.width / perceptual.blocks in configs/paper-standin.yaml)
RESNET_WIDTH, RESNET_BLOCKS = 8, 1
SEED = 0

# Stable Diffusion 1.5's own config keys (vae/ and unet/ config.json of stable-diffusion-v1-5),
# channel counts shrunk; everything else as shipped.
SD15_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32, sample_size=512,
    act_fn="silu", block_out_channels=(32, 32, 64, 64),  # SD1.5: 128, 256, 512, 512
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, attention_head_dim=8,
    cross_attention_dim=768, norm_num_groups=32, act_fn="silu", center_input_sample=False,
    downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, mid_block_scale_factor=1, norm_eps=1e-5,
    block_out_channels=(32, 64, 64, 64),  # SD1.5: 320, 640, 1280, 1280
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)
SD15_SCHEDULER = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1,
)

# Gemma 3's special tokens in the order of its vocabulary (pad 0, eos 1, bos 2, unk 3, mask 4) and
# the image tokens of the multimodal checkpoint (boi / eoi / image soft token)
GEMMA_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")
GEMMA_IMAGE_TOKENS = ("<start_of_image>", "<end_of_image>", "<image_soft_token>")
GEMMA_BPE_VOCAB = 800
# text the stand-in BPE merges are learnt from: report-like words, so reports tokenise into
# subwords as a real tokenizer's would (unseen characters fall back to bytes, as Gemma's do)
BPE_CORPUS = (
    "Lung cancer screening with low dose computed tomography performed for this years old male female "
    "with prior diagnosis of emphysema and family history of cancer smoker pack years. A solid part solid "
    "non solid ground glass nodule with smooth spiculated lobulated poorly defined margin mm in size is "
    "present in the right left upper middle lower lobe lingula. Baseline follow-up screen record age."
)


def gemma_tokenizer() -> GemmaTokenizer:
    """Gemma's tokenizer class (byte-fallback BPE on "▁"-joined text) with a tiny learnt vocabulary."""
    backend = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    backend.normalizer = normalizers.Replace(" ", "▁")
    backend.pre_tokenizer = pre_tokenizers.Split(pattern="▁", behavior="merged_with_next")
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=GEMMA_BPE_VOCAB, special_tokens=[*GEMMA_SPECIALS, *byte_tokens],
                                  show_progress=False)
    words = re.findall(r"\S+", BPE_CORPUS)
    backend.train_from_iterator([" ".join(words[i:i + 12]) for i in range(0, len(words), 12)] * 4, trainer)
    state = json.loads(backend.to_str())["model"]
    vocab = dict(state["vocab"])
    for token in GEMMA_IMAGE_TOKENS:
        vocab[token] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    tokenizer = GemmaTokenizer(vocab=vocab, merges=merges, add_bos_token=True, add_eos_token=False,
                               extra_special_tokens=list(GEMMA_IMAGE_TOKENS))
    return tokenizer


def gemma3_config(tokenizer: GemmaTokenizer) -> Gemma3Config:
    """MedGemma 1.5 4B's config (Gemma3ForConditionalGeneration) with tiny towers.

    The real one: text 2560 wide, 34 layers (5 sliding-window : 1 global), 8 heads of 256, 4 KV
    heads; SigLIP 1152 wide, 27 layers, 896 px in 14 px patches, 256 image tokens.
    """
    ids = tokenizer.convert_tokens_to_ids
    text = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32,
        sliding_window=16,  # short, so reports exceed it and the sliding-window layers matter
        layer_types=["sliding_attention", "full_attention"], max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
    )
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                image_size=32, patch_size=8, vision_use_head=False)
    boi, eoi, image = (ids(token) for token in GEMMA_IMAGE_TOKENS)
    return Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4, boi_token_index=boi,
                        eoi_token_index=eoi, image_token_index=image)


def write_medgemma(out: Path) -> Path:
    tokenizer = gemma_tokenizer()
    torch.manual_seed(SEED)
    Gemma3ForConditionalGeneration(gemma3_config(tokenizer)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def write_sd15(out: Path) -> Path:
    torch.manual_seed(SEED)
    AutoencoderKL(**SD15_VAE).save_pretrained(out / "vae")
    UNet2DConditionModel(**SD15_UNET).save_pretrained(out / "unet")
    PNDMScheduler(**SD15_SCHEDULER).save_pretrained(out / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "scheduler": ["diffusers", "PNDMScheduler"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return out


def _save_timm(model: torch.nn.Module, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


def write_vit(out: Path) -> Path:
    """The ViT as timm's hub file holds it: 3 channels, 224 px, a 1000-class head."""
    torch.manual_seed(SEED)
    return _save_timm(timm.create_model(VIT, pretrained=False, **VIT_SIZES), out / f"{VIT}.safetensors")


def write_resnet(out: Path) -> Path:
    torch.manual_seed(SEED)
    channels = tuple(RESNET_WIDTH * 2**i for i in range(4))
    model = timm.create_model(RESNET, pretrained=False, stem_width=RESNET_WIDTH, channels=channels,
                              layers=(RESNET_BLOCKS,) * 4)
    return _save_timm(model, out / f"{RESNET}.safetensors")


def write_torch_hub(torch_home: Path) -> Path:
    """lpips' AlexNet and pytorch-fid's Inception, random, at the file names torch hub looks for.

    AlexNet's 58M classifier weights, which LPIPS never uses, are stride-0 views of one value, so
    the file stays small; the Inception is whole (FID uses all of it).
    """
    import pytorch_fid.inception as fid_inception
    from pytorch_fid.inception import FID_WEIGHTS_URL
    from torchvision.models import AlexNet_Weights

    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    alexnet = {
        name: tensor if name.startswith("features") else torch.zeros(1).expand(tensor.shape)
        for name, tensor in torchvision.models.alexnet().state_dict().items()
    }
    torch.save(alexnet, checkpoints / os.path.basename(AlexNet_Weights.IMAGENET1K_V1.url))
    # pytorch-fid's own FID graph, built with its weight download and loading switched off
    with mock.patch.object(fid_inception, "load_state_dict_from_url", return_value={}), \
            mock.patch.object(torchvision.models.Inception3, "load_state_dict"):
        model = fid_inception.fid_inception_v3()
    torch.save(model.state_dict(), checkpoints / os.path.basename(FID_WEIGHTS_URL))
    return torch_home


def write_all(out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    return {
        "sd15": write_sd15(out / SD15),
        "medgemma": write_medgemma(out / MEDGEMMA),
        "vit": write_vit(out / "timm"),
        "resnet": write_resnet(out / "timm"),
        "torch_home": write_torch_hub(out / "torch_home"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    written = write_all(parser.parse_args(argv).out_dir)
    for what, path in written.items():
        print(f"{what}: {path}")


if __name__ == "__main__":
    main()
