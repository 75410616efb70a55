"""Pretrained weights read from torch hub's offline cache, and the LPIPS network built on them.

LPIPS(net="alex") serves three places: the VAE's perceptual loss (Eq. 6), DDL-CXR's autoencoder
loss and Table 1's LPIPS column (`namd.evaluation.image_metrics`, which also finds FID's Inception
weights here). Nothing is downloaded: without the cached file lpips would try to (impossible
offline), and a randomly initialised trunk would silently give a meaningless distance.
"""

from __future__ import annotations

import os
import posixpath
import warnings
from pathlib import Path
from urllib.parse import urlparse

import lpips
import torch
from torchvision.models import AlexNet_Weights

# AlexNet's five stages (an 11x11 stride-4 convolution, then three 3x3 stride-2 max-pools) reduce
# crops below 31 pixels to nothing, so LPIPS(net="alex") cannot score them.
LPIPS_MIN_SIZE = 31


class PerceptualWeightsMissingError(FileNotFoundError):
    """A real perceptual network was requested but its pretrained weights are not in torch hub's cache."""


def hub_checkpoint(url: str) -> Path:
    """Where torch.hub.load_state_dict_from_url looks for `url`'s file before it would download it."""
    return Path(torch.hub.get_dir()) / "checkpoints" / posixpath.basename(urlparse(url).path)


def lpips_weights_path() -> Path:
    """ImageNet AlexNet trunk that lpips loads via torchvision (its linear heads ship with lpips)."""
    return hub_checkpoint(AlexNet_Weights.IMAGENET1K_V1.url)


def require_cached_weights(key: str, url: str, instead: str) -> Path:
    """The cached file of `url`, or PerceptualWeightsMissingError naming it, where it comes from and `instead`."""
    path = hub_checkpoint(url)
    if not path.is_file():
        raise PerceptualWeightsMissingError(
            f"{key}: pretrained weights not found at {path} (torch hub cache, "
            f"TORCH_HOME={os.environ.get('TORCH_HOME', '<unset>')}); copy {url} there, or {instead}"
        )
    return path


def load_lpips(device: torch.device | str = "cpu", *, instead: str = "set lambda_lpips to 0") -> lpips.LPIPS:
    """The real LPIPS(net="alex"), frozen and in eval mode; refuses to run without the cached AlexNet weights.

    `instead` ends the error message: what the caller can do without the weights.
    """
    require_cached_weights("lpips", AlexNet_Weights.IMAGENET1K_V1.url, instead)
    with warnings.catch_warnings():
        # lpips 0.1.4 still calls torchvision's deprecated `pretrained=` interface.
        warnings.filterwarnings("ignore", message=".*(pretrained|weight enum).*", category=UserWarning)
        model = lpips.LPIPS(net="alex", verbose=False)
    model.requires_grad_(False)
    return model.eval().to(device)
