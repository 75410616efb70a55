"""The nodule-aligned VAE of Section 3.2: diffusers' AutoencoderKL plus the linear probe h_theta.

Which z Eqs. 2-5 use: the paper writes z = E(X), the encoder's output, so the alignment loss and
the probe see the posterior mean, the same deterministic code that ``encode_latents`` hands the
diffusion model. The decoder reconstructs from a posterior sample, as VAE training does, so the KL
term keeps its meaning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import lpips
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from safetensors.torch import load_file, save_file

from namd.hub_weights import LPIPS_MIN_SIZE
from namd.models.losses import ALIGNMENT_MIN_BATCH, alignment_loss, kl_loss, prediction_loss
from namd.sources import check_diffusers_class

LATENT_PROBE_FILE = "latent_probe.safetensors"


def _latent_side(vae: AutoencoderKL) -> int:
    """Latent height/width for the VAE's crops: every block after the first halves the resolution."""
    compression = 2 ** (len(vae.config.block_out_channels) - 1)
    side, remainder = divmod(vae.config.sample_size, compression)
    if remainder:
        raise ValueError(
            f"sample_size {vae.config.sample_size} is not divisible by the VAE's compression {compression} "
            f"(block_out_channels={tuple(vae.config.block_out_channels)})"
        )
    return side


def _vae_source(pretrained: str | Path, subfolder: str | None) -> str:
    """The config file a checkpoint's channels come from, for error messages (a hub id when remote)."""
    folder = Path(pretrained, subfolder or "")
    return str(folder / "config.json") if folder.is_dir() else f"{pretrained} (subfolder {subfolder!r})"


def _check_channels(
    vae: AutoencoderKL, source: str, *, in_channels: int | None, latent_channels: int | None
) -> None:
    """A clear error naming the checkpoint instead of a shape error deep inside a convolution."""
    config = vae.config
    if in_channels is not None and (config.in_channels != in_channels or config.out_channels != in_channels):
        raise ValueError(
            f"{source}: the VAE has in_channels={config.in_channels}, out_channels={config.out_channels}, "
            f"but {in_channels}-channel images are expected; a 3-channel (Stable Diffusion) VAE must be "
            "loaded through build_vae(pretrained=...), which adapts it to 1-channel CT"
        )
    if latent_channels is not None and config.latent_channels != latent_channels:
        raise ValueError(
            f"{source}: the VAE has latent_channels={config.latent_channels}, but {latent_channels} are expected "
            "(the latent diffusion U-Net and the VAE must agree)"
        )


def _grey_state_dict(rgb_vae: AutoencoderKL) -> dict[str, torch.Tensor]:
    """Fold "replicate grey to RGB" into conv_in and "average RGB to grey" into conv_out.

    Both are linear in the channel dimension, so summing conv_in's kernels over input channels and
    averaging conv_out's kernels and biases over output channels gives exactly the RGB VAE wrapped
    by replicate/average, as a plain 1-channel AutoencoderKL: it saves, loads and runs like any
    other VAE, and later stages never need to know an adapter existed.
    """
    state = rgb_vae.state_dict()
    state["encoder.conv_in.weight"] = state["encoder.conv_in.weight"].sum(dim=1, keepdim=True)
    state["decoder.conv_out.weight"] = state["decoder.conv_out.weight"].mean(dim=0, keepdim=True)
    state["decoder.conv_out.bias"] = state["decoder.conv_out.bias"].mean(dim=0, keepdim=True)
    return state


def build_vae(
    *,
    sample_size: int = 32,
    in_channels: int = 1,
    latent_channels: int = 4,
    block_out_channels: Sequence[int] = (32, 64, 64),
    layers_per_block: int = 1,
    norm_num_groups: int = 32,
    pretrained: str | Path | None = None,
    subfolder: str | None = None,
) -> AutoencoderKL:
    """A KL autoencoder for sample_size crops: from scratch, or a pretrained one adapted to CT.

    From scratch (the CPU default) each entry of block_out_channels after the first halves the
    resolution: (32, 64, 64) compresses by 4, so a 32x32 crop becomes an 8x8x4 latent. The
    paper's SD1.5 VAE compresses by 8, which would leave a 32-pixel crop only a 4x4 latent.

    pretrained (a hub id or a folder; subfolder="vae" for a full Stable Diffusion pipeline folder)
    fixes the architecture, so block_out_channels, layers_per_block and norm_num_groups are
    ignored; latent_channels is checked against it. A 3-channel VAE is adapted to in_channels=1
    by folding grey-to-RGB replication into conv_in and RGB averaging into conv_out (exact).
    sample_size is recorded in the config as the crop size the VAE is trained on.
    """
    if pretrained is None:
        if any(channels % norm_num_groups for channels in block_out_channels):
            raise ValueError(
                f"norm_num_groups {norm_num_groups} must divide every entry of block_out_channels "
                f"{tuple(block_out_channels)}"
            )
        vae = AutoencoderKL(
            in_channels=in_channels,
            out_channels=in_channels,
            down_block_types=("DownEncoderBlock2D",) * len(block_out_channels),
            up_block_types=("UpDecoderBlock2D",) * len(block_out_channels),
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            latent_channels=latent_channels,
            norm_num_groups=norm_num_groups,
            sample_size=sample_size,
        )
    else:
        check_diffusers_class(AutoencoderKL.load_config(pretrained, subfolder=subfolder), "AutoencoderKL",
                              _vae_source(pretrained, subfolder))
        loaded = AutoencoderKL.from_pretrained(pretrained, subfolder=subfolder, torch_dtype=torch.float32)
        adapt_to_grey = in_channels == 1 and loaded.config.in_channels == loaded.config.out_channels == 3
        _check_channels(
            loaded,
            _vae_source(pretrained, subfolder),
            in_channels=None if adapt_to_grey else in_channels,
            latent_channels=latent_channels,
        )
        vae = AutoencoderKL.from_config(
            loaded.config, in_channels=in_channels, out_channels=in_channels, sample_size=sample_size
        )
        vae.load_state_dict(_grey_state_dict(loaded) if adapt_to_grey else loaded.state_dict())
    _latent_side(vae)  # the crop size must fit the compression, whichever branch built the VAE
    return vae


def load_vae(path: str | Path, *, in_channels: int = 1, latent_channels: int | None = None) -> AutoencoderKL:
    """A trained NAMD VAE (plain AutoencoderKL folder), checked against the channels the caller needs."""
    check_diffusers_class(AutoencoderKL.load_config(path), "AutoencoderKL", _vae_source(path, None))
    vae = AutoencoderKL.from_pretrained(path, torch_dtype=torch.float32)
    _check_channels(vae, _vae_source(path, None), in_channels=in_channels, latent_channels=latent_channels)
    return vae


def _check_images(vae: AutoencoderKL, images: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != vae.config.in_channels or images.shape[0] == 0:
        raise ValueError(
            f"expected a non-empty (N, {vae.config.in_channels}, H, W) image tensor for this VAE, "
            f"got shape {tuple(images.shape)}"
        )


@torch.no_grad()
def _posterior_latents(
    vae: AutoencoderKL, images: torch.Tensor, batch_size: int, sample: bool, generator: torch.Generator | None
) -> torch.Tensor:
    _check_images(vae, images)
    latents = []
    for start in range(0, images.shape[0], batch_size):
        posterior = vae.encode(images[start : start + batch_size].to(vae.device, vae.dtype)).latent_dist
        latents.append((posterior.sample(generator=generator) if sample else posterior.mean).to(images.device))
    return torch.cat(latents)


def encode_latents(
    vae: AutoencoderKL,
    images: torch.Tensor,
    batch_size: int = 256,
    sample: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Diffusion-ready latents: posterior mean (or a sample) times vae.config.scaling_factor.

    The factor is the LDM latent scale, 1 / std of training latents (see fit_latent_scale), so the
    diffusion model sees roughly unit-variance latents; decode_latents divides it back out.
    """
    return _posterior_latents(vae, images, batch_size, sample, generator) * vae.config.scaling_factor


@torch.no_grad()
def decode_latents(vae: AutoencoderKL, latents: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Images in [-1, 1] (unclamped) from latents scaled as encode_latents scales them."""
    images = []
    for start in range(0, latents.shape[0], batch_size):
        chunk = latents[start : start + batch_size].to(vae.device, vae.dtype) / vae.config.scaling_factor
        images.append(vae.decode(chunk).sample.to(latents.device))
    return torch.cat(images)


def fit_latent_scale(vae: AutoencoderKL, images: torch.Tensor, batch_size: int = 256) -> float:
    """Set vae.config.scaling_factor to 1 / std of the training latents and return it.

    Rombach et al. compute 1 / std over all latent elements of training data after the
    autoencoder is trained; here over the posterior means of the given images (what
    encode_latents feeds the diffusion model). save_pretrained then writes it to config.json.
    """
    latents = _posterior_latents(vae, images, batch_size, sample=False, generator=None)
    if latents.numel() < 2:
        raise ValueError("fit_latent_scale needs at least two latent elements to estimate a std")
    scale = 1.0 / float(latents.flatten().std())
    if not math.isfinite(scale):
        raise ValueError("fit_latent_scale: the latents are constant (std 0); is the VAE trained?")
    vae.register_to_config(scaling_factor=scale)
    return scale


def _weighted_term(
    name: str, weight: float, compute, unavailable: str | None, device: torch.device
) -> torch.Tensor:
    """A term of Eq. 6 that only builds a graph when its weight is positive.

    A zero-weight term (e.g. alignment and prediction in the unaligned ablation) is still
    reported, detached, when it can be computed, so runs with and without it are comparable;
    NaN when it cannot (``unavailable`` says why), and an error if its weight is positive.
    """
    if weight < 0:
        raise ValueError(f"loss weight lambda_{name} must be >= 0, got {weight}")
    if unavailable is not None:
        if weight > 0:
            raise ValueError(f"lambda_{name} = {weight} > 0, but {unavailable}")
        return torch.tensor(float("nan"), device=device)
    if weight > 0:
        return compute()
    with torch.no_grad():
        return compute()


class NoduleAlignedVAE(torch.nn.Module):
    """AutoencoderKL + linear probe h_theta on the flattened latent, trained with Eq. 6.

    The crop size is vae.config.sample_size (build_vae records it), which fixes the probe's input
    size latent_channels * (sample_size / compression)^2.
    """

    def __init__(self, vae: AutoencoderKL):
        super().__init__()
        side = _latent_side(vae)
        self.vae = vae
        self.latent_shape = (vae.config.latent_channels, side, side)
        self.probe = torch.nn.Linear(math.prod(self.latent_shape), 1)

    def probe_logits(self, latents: torch.Tensor) -> torch.Tensor:
        """h_theta before its sigmoid: one malignancy logit per unscaled posterior-mean latent."""
        return self.probe(latents.flatten(1)).squeeze(1)

    def _lpips_unavailable(self, lpips_model: lpips.LPIPS | None) -> str | None:
        if lpips_model is None:
            return "no lpips_model was given (namd.hub_weights.load_lpips)"
        if self.vae.config.sample_size < LPIPS_MIN_SIZE:
            size = self.vae.config.sample_size
            return f"LPIPS(net='alex') needs crops of at least {LPIPS_MIN_SIZE} pixels, these are {size}"
        return None

    def _unpack(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        missing = [key for key in ("image", "features", "label") if key not in batch]
        if missing:
            raise KeyError(f"VAE training batch lacks key(s) {missing}; it needs image, features and label")
        device = self.probe.weight.device
        images, features, labels = (batch[key].to(device) for key in ("image", "features", "label"))
        size = self.vae.config.sample_size
        expected = (self.vae.config.in_channels, size, size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"batch['image'] must be (B, {', '.join(map(str, expected))}), got {tuple(images.shape)}"
            )
        batch_size = images.shape[0]
        if features.ndim != 2 or features.shape[0] != batch_size:
            raise ValueError(f"batch['features'] must be (B={batch_size}, T), got {tuple(features.shape)}")
        if labels.shape != (batch_size,):
            raise ValueError(f"batch['label'] must be (B={batch_size},), got {tuple(labels.shape)}")
        return images, features.to(images.dtype), labels.to(images.dtype)

    def loss(
        self,
        batch: Mapping[str, torch.Tensor],
        *,
        lambda_kl: float,
        lambda_lpips: float,
        lambda_align: float,
        lambda_pred: float,
        sigma_f: float,
        sigma_z: float,
        lpips_model: lpips.LPIPS | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Eq. 6 and its terms: {"rec", "kl", "lpips", "align", "pred", "total"}.

        rec is the mean absolute error per pixel; lambda_align = lambda_pred = 0 is the plain
        (unaligned) VAE of the ablation. lambda_lpips > 0 needs lpips_model (see load_lpips);
        the grey crop is replicated to the 3 channels AlexNet expects.
        """
        images, features, labels = self._unpack(batch)
        posterior = self.vae.encode(images).latent_dist
        reconstruction = self.vae.decode(posterior.sample(generator=generator)).sample
        latents = posterior.mean.flatten(1)
        weights = {"kl": lambda_kl, "lpips": lambda_lpips, "align": lambda_align, "pred": lambda_pred}
        terms = {
            "rec": F.l1_loss(reconstruction, images),
            "kl": _weighted_term("kl", lambda_kl, lambda: kl_loss(posterior), None, images.device),
            "lpips": _weighted_term(
                "lpips",
                lambda_lpips,
                lambda: lpips_model(reconstruction.expand(-1, 3, -1, -1), images.expand(-1, 3, -1, -1)).mean(),
                self._lpips_unavailable(lpips_model),
                images.device,
            ),
            "align": _weighted_term(
                "align",
                lambda_align,
                lambda: alignment_loss(features, latents, sigma_f, sigma_z),
                f"the alignment loss needs a batch of at least {ALIGNMENT_MIN_BATCH} (Eq. 4 is identically zero at 2)"
                if len(images) < ALIGNMENT_MIN_BATCH else None,
                images.device,
            ),
            "pred": _weighted_term(
                "pred", lambda_pred, lambda: prediction_loss(self.probe_logits(latents), labels), None, images.device
            ),
        }
        terms["total"] = terms["rec"] + sum(weight * terms[name] for name, weight in weights.items() if weight > 0)
        return terms

    def save_pretrained(self, directory: str | Path) -> None:
        """The VAE as a plain diffusers folder (loadable by AutoencoderKL.from_pretrained), the probe beside it."""
        directory = Path(directory)
        self.vae.save_pretrained(directory)
        save_file({name: tensor.contiguous() for name, tensor in self.probe.state_dict().items()},
                  str(directory / LATENT_PROBE_FILE))

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, latent_channels: int | None = None) -> NoduleAlignedVAE:
        """The saved VAE and probe in eval mode, like diffusers models (call .train() to fine-tune on)."""
        directory = Path(directory)
        model = cls(load_vae(directory, in_channels=1, latent_channels=latent_channels))
        probe_file = directory / LATENT_PROBE_FILE
        if not probe_file.is_file():
            raise FileNotFoundError(f"{probe_file}: the latent probe of this nodule-aligned VAE is missing")
        state = load_file(str(probe_file))
        expected = {name: tuple(tensor.shape) for name, tensor in model.probe.state_dict().items()}
        found = {name: tuple(tensor.shape) for name, tensor in state.items()}
        if found != expected:
            raise ValueError(
                f"{probe_file}: probe tensors {found} do not fit the VAE's latent {model.latent_shape} "
                f"(expected {expected})"
            )
        model.probe.load_state_dict(state)
        return model.eval()
