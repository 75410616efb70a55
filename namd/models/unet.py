"""The latent-diffusion U-Net and its two-stage input widening (paper Sec. 3.3.2, App. B).

The paper's U-Net is Stable Diffusion 1.5's (block_out_channels (320, 640, 1280, 1280), two
res blocks per level, 8 heads, CrossAttn down blocks but the last) with a cross-attention width
of the LLM's hidden size (2560 for MedGemma). The defaults here are a CPU-sized model of the same
shape; the config keys select the paper's. The training schedule and the epsilon loss are in
`namd.models.schedulers`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

# re-exported for callers that still import them from here (benchmarks/gpu.py); their home is schedulers
from namd.sources import check_diffusers_class


def build_unet(
    *,
    sample_size: int = 8,
    in_channels: int = 4,
    out_channels: int = 4,
    block_out_channels: Sequence[int] = (64, 128),
    layers_per_block: int = 1,
    num_attention_heads: int = 8,
    cross_attention_dim: int = 384,
    down_block_types: Sequence[str] = ("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types: Sequence[str] = ("UpBlock2D", "CrossAttnUpBlock2D"),
    norm_num_groups: int = 32,
    pretrained: str | Path | None = None,
    subfolder: str | None = "unet",
) -> UNet2DConditionModel:
    """A fresh U-Net, or `pretrained`'s (e.g. SD1.5) with its cross-attention resized to the LLM's width.

    With `pretrained`, the architecture is the checkpoint's; only cross_attention_dim may differ
    from it. Then every attn2.to_k / to_v (the only weights whose shape depends on it) is newly
    initialised (torch's Linear default, from the global seed) and all other weights load
    (diffusers' low_cpu_mem_usage=False, ignore_mismatched_sizes=True). in_channels/out_channels
    must match the checkpoint: widen for Stage 2 with widen_conv_in.
    """
    if pretrained is None:
        # diffusers' `attention_head_dim` is the number of heads for this class (diffusers issue #2011).
        return UNet2DConditionModel(
            sample_size=sample_size,
            in_channels=in_channels,
            out_channels=out_channels,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            attention_head_dim=num_attention_heads,
            cross_attention_dim=cross_attention_dim,
            down_block_types=tuple(down_block_types),
            up_block_types=tuple(up_block_types),
            norm_num_groups=norm_num_groups,
        )
    config, source = _read_config(pretrained, subfolder)
    _check_config(config, source, in_channels=in_channels, out_channels=out_channels)
    if config["cross_attention_dim"] == cross_attention_dim:
        return UNet2DConditionModel.from_pretrained(pretrained, subfolder=subfolder)
    unet = UNet2DConditionModel.from_pretrained(
        pretrained,
        subfolder=subfolder,
        cross_attention_dim=cross_attention_dim,
        low_cpu_mem_usage=False,
        ignore_mismatched_sizes=True,
    )
    # diffusers 0.42.1 leaves the resized tensors allocated but not initialised (values up to 1e36, some
    # NaN): give them a fresh Linear's initialisation, as a from-scratch U-Net has
    for name, module in unet.named_modules():
        if name.endswith(("attn2.to_k", "attn2.to_v")):
            module.reset_parameters()
    return unet


def load_unet(
    path: str | Path,
    *,
    subfolder: str | None = None,
    in_channels: int | None = None,
    cross_attention_dim: int | None = None,
) -> UNet2DConditionModel:
    """A saved U-Net, refused before its weights load when it is not the shape the caller's stage needs."""
    config, source = _read_config(path, subfolder)
    _check_config(config, source, in_channels=in_channels, cross_attention_dim=cross_attention_dim)
    return UNet2DConditionModel.from_pretrained(path, subfolder=subfolder)


def _read_config(name_or_path: str | Path, subfolder: str | None) -> tuple[dict, str]:
    local = Path(name_or_path).expanduser()
    source = str(local / (subfolder or "") / "config.json")
    if not local.exists() and (local.is_absolute() or str(name_or_path).startswith((".", "~"))):
        raise FileNotFoundError(f"U-Net checkpoint not found: {local}")
    try:
        config = dict(UNet2DConditionModel.load_config(name_or_path, subfolder=subfolder))
    except OSError as err:
        raise FileNotFoundError(f"U-Net checkpoint {name_or_path!r} (subfolder {subfolder!r}): {err}") from err
    check_diffusers_class(config, "UNet2DConditionModel", source)
    return config, source


def _check_config(config: dict, source: str, **expected: int | None) -> None:
    for key, value in expected.items():
        if value is not None and config.get(key) != value:
            raise ValueError(f"{source}: U-Net {key} is {config.get(key)} but {value} is expected here")


def widen_conv_in(unet: UNet2DConditionModel, extra_channels: int = 4) -> UNet2DConditionModel:
    """Stage 2's input: [noisy latent, baseline latent] (App. B: 8 channels).

    The new input channels get zero weights, so at the start of Stage 2 the U-Net computes exactly
    the Stage-1 function and the baseline latent's influence is learned from there. The config is
    updated so save_pretrained / from_pretrained round-trip the widened model.
    """
    old = unet.conv_in
    widened = torch.nn.Conv2d(
        old.in_channels + extra_channels,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    with torch.no_grad():
        widened.weight.zero_()
        widened.weight[:, : old.in_channels].copy_(old.weight)
        widened.bias.copy_(old.bias)
    unet.conv_in = widened
    unet.register_to_config(in_channels=widened.in_channels)
    return unet
