"""McWGAN's perceptual feature network: a timm ResNet that describes nodules, and that no metric uses.

McWGAN's source (Wang et al., Cancers 2024) takes its perceptual loss from the last hidden layer
of a pretrained, modified ResNet-18 whose weights are not public. The evaluation classifier would
be the obvious stand-in, but every Table 1 number (malignancy AUROC, the DFD-ViT / FD-ViT
stand-ins) is read through it, so McWGAN would be trained against the network that scores it.
This network is trained apart, and nothing in the evaluation loads it.

What it learns, and why: every REAL crop of the training split (baselines and follow-ups as
separate samples, as `namd.data.dataset.ImageDataset` gives them) predicts its pair's label (BCE)
and the nodule features a crop shows (MSE): the z-scored log long and perpendicular diameters
(the follow-up's own on a follow-up crop), margin suspicion and attenuation solidity. A perceptual
loss should make the predicted follow-up right in what a reader sees (size, margin, solidity),
not only in pixels; the label alone (~200 crops, a few dozen malignant) is too sparse a signal
to shape features, while the features give every crop dense targets. The lobe one-hot is left
out: a 51 mm crop does not show which lobe it lies in. Every target is rotation-invariant, so
training crops are turned by random multiples of 90 degrees (exact on the pixel grid).
Selection: the epoch with the lowest validation loss (the same sum) on the validation split's
real crops, as `namd.training.fit` selects.

Architecture: timm's ResNet with basic blocks (resnet18's family), in_chans=1, one output per
target. CPU-sized by default: `width` 16 (stage widths 16-128) and one block per stage, 0.3 M
parameters (resnet18: width 64, two blocks, 11 M). With `pretrained_file` (a local checkpoint of
`name`, e.g. ImageNet ResNet-18 weights: the paper config), timm loads and adapts the weights
(conv1 summed to one channel, a fresh head) and the network is fine-tuned on the same task; with
`width` and `blocks` null the named model keeps its own sizes (any timm classifier then fits).
Saved with timm's `save_for_hf` (config.json + model.safetensors); `PerceptualFeatures.load`
reads any such folder, frozen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from timm.data import resolve_data_config
from timm.models import save_for_hf
from torch import nn

from namd.data.nlst import NODULE_FEATURE_NAMES
from namd.models.augment import random_rotation
from namd.training import TrainableModule

#: nodule features (of NODULE_FEATURE_NAMES) the network predicts besides the label
TARGET_FEATURES = ("log_long_dia_z", "log_perp_dia_z", "margin_suspicion", "attenuation_solidity")
FEATURE_INDEX = [NODULE_FEATURE_NAMES.index(name) for name in TARGET_FEATURES]
#: key under which the training settings sit in the saved config.json
CONFIG_KEY = "namd_perceptual"


def build_perceptual_net(*, image_size: int, name: str = "resnet18", width: int | None = 16, blocks: int | None = 1,
                         pretrained_file: str | Path | None = None) -> nn.Module:
    """A timm classifier for (B, 1, S, S) crops with 1 + len(TARGET_FEATURES) outputs.

    `width` (channels of the first stage, doubled per stage) and `blocks` (residual blocks per
    stage) resize a timm ResNet; None keeps the named model's own. The grey channel's mean/std
    are the channel averages of the named model's data config, and the input size is the crop's.
    """
    sizes = {}
    if width is not None:
        sizes.update(stem_width=width, channels=tuple(width * 2**i for i in range(4)))
    if blocks is not None:
        sizes["layers"] = (blocks,) * 4
    default = timm.models.get_pretrained_cfg(name)
    if default is None:
        raise ValueError(f"perceptual.name: {name!r} is not a timm model")
    overlay = dict(mean=(float(np.mean(default.mean)),), std=(float(np.mean(default.std)),), test_input_size=None,
                   pool_size=None)
    if pretrained_file is None:
        overlay.update(tag=None, license=None)
    else:
        pretrained_file = Path(pretrained_file)
        if not pretrained_file.is_file():
            raise FileNotFoundError(f"perceptual.pretrained_file: {pretrained_file} (weights of {name!r}) "
                                    "does not exist")
        overlay["file"] = str(pretrained_file)
    try:
        net = timm.create_model(name, pretrained=pretrained_file is not None, pretrained_cfg_overlay=overlay,
                                in_chans=1, num_classes=1 + len(TARGET_FEATURES), **sizes)
    except TypeError as err:
        raise ValueError(f"perceptual: timm model {name!r} does not take width/blocks (a timm ResNet does); "
                         f"set perceptual.width and perceptual.blocks to null. timm said: {err}") from err
    except RuntimeError as err:
        if "size mismatch" not in str(err):
            raise
        raise ValueError(f"perceptual: the weights {pretrained_file} do not fit {name!r} with {sizes}; set "
                         f"perceptual.width and perceptual.blocks to null (the model's own sizes). "
                         f"timm said: {str(err)[:300]}") from err
    # after creation: timm reads input_size[0] as the channels of the weights it adapts
    net.pretrained_cfg = {**net.pretrained_cfg, "input_size": (1, image_size, image_size)}
    return net


class PerceptualFeatures(nn.Module):
    """A timm classifier on crops in [-1, 1]: mapped to [0, 1], normalised with the model's data
    config (timm's convention); a grey crop is repeated when the model takes 3 channels."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        config = resolve_data_config({}, model=net)
        self.in_chans = int(config["input_size"][0])
        self.register_buffer("mean", torch.tensor(config["mean"]).reshape(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config["std"]).reshape(1, -1, 1, 1), persistent=False)

    @classmethod
    def load(cls, path: str | Path) -> PerceptualFeatures:
        """A frozen network from a folder written by timm's save_for_hf, in eval mode."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"perceptual network {path} has no config.json "
                                    "(expected a folder written by timm's save_for_hf; was train_perceptual run?)")
        net = timm.create_model(f"local-dir:{path}", pretrained=True)
        return cls(net).eval().requires_grad_(False)

    def _tokens(self, images: torch.Tensor) -> torch.Tensor:
        x = (images + 1) / 2
        if self.in_chans != x.shape[1]:
            x = x.expand(-1, self.in_chans, -1, -1)
        return self.net.forward_features((x - self.mean) / self.std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, D) last hidden layer (timm's pre-logits)."""
        return self.net.forward_head(self._tokens(images), pre_logits=True).flatten(1)

    def outputs(self, images: torch.Tensor) -> torch.Tensor:
        """(B, n_outputs) head outputs."""
        return self.net.forward_head(self._tokens(images))


class PerceptualTraining(TrainableModule):
    """The task of the module docstring under `namd.training.fit`: BCE on output 0 + MSE per feature."""

    display_name = "perceptual network"

    def __init__(self, net: nn.Module, *, lr: float, weight_decay: float, seed: int):
        super().__init__()
        self.features = PerceptualFeatures(net)
        self.settings = dict(lr=lr, weight_decay=weight_decay, targets=["label", *TARGET_FEATURES])
        self.seed = seed
        # counts steps so augmentation draws are reproducible across a resume
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"main": torch.optim.AdamW(self.features.parameters(), lr=self.settings["lr"],
                                          weight_decay=self.settings["weight_decay"])}

    def losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        images = batch["image"]
        if self.training:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.steps))
            images = random_rotation(images, (90, 180, 270), generator=g)
            self.steps += 1
        out = self.features.outputs(images)
        bce = F.binary_cross_entropy_with_logits(out[:, 0], batch["label"].float())
        errors = (out[:, 1:] - batch["features"][:, FEATURE_INDEX]).square().mean(0)
        terms = {f"mse_{name}": errors[i] for i, name in enumerate(TARGET_FEATURES)}
        return {"loss": bce + errors.mean(), "bce": bce, **terms}

    def save_pretrained(self, out_dir: str | Path) -> None:
        """timm's export (architecture, sizes, data config) with our settings under CONFIG_KEY."""
        save_for_hf(self.features.net, str(out_dir), model_config={CONFIG_KEY: self.settings}, safe_serialization=True)
