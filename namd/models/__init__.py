"""Models of the NAMD pipeline: the nodule-aligned VAE, its losses and its augmentation."""

from namd.models.augment import random_rotation
from namd.models.losses import alignment_loss, kl_loss, prediction_loss
from namd.models.vae import (
    NoduleAlignedVAE,
    build_vae,
    decode_latents,
    encode_latents,
    fit_latent_scale,
    load_vae,
)

__all__ = [
    "NoduleAlignedVAE",
    "alignment_loss",
    "build_vae",
    "decode_latents",
    "encode_latents",
    "fit_latent_scale",
    "kl_loss",
    "load_vae",
    "prediction_loss",
    "random_rotation",
]
