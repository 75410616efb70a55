"""Rotation augmentation of Appendix B ("random rotations of 45, 90, 135 and 180 degrees")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms.functional import InterpolationMode, rotate

AIR = -1.0  # the [-1, 1] crop value of the HU window's lower end: what lies outside a rotated crop


def random_rotation(
    images: torch.Tensor,
    angles: Sequence[float] = (45, 90, 135, 180),
    *,
    generator: torch.Generator,
) -> torch.Tensor:
    """Rotate each sample of (B, C, H, W) by an angle drawn uniformly from {0, *angles} degrees.

    0 (the unrotated crop) is always a choice: the paper lists only the rotations, and an
    augmentation that never shows the original orientation would shift the training
    distribution away from the test crops. All channels of a sample turn together, so a
    baseline/follow-up pair stays aligned when stacked as channels:
    ``random_rotation(torch.cat([baseline, followup], dim=1), generator=g).chunk(2, dim=1)``.
    Multiples of 90 degrees use torch.rot90 (exact); other angles torchvision's bilinear rotate
    with the corners filled with air (-1). Angles are counter-clockwise, as in both functions.
    """
    if images.ndim != 4:
        raise ValueError(f"random_rotation expects (B, C, H, W) images, got shape {tuple(images.shape)}")
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"random_rotation expects square crops, got {images.shape[-2]}x{images.shape[-1]}")
    choices = (0, *angles)
    if len(set(choices)) != len(choices) or any(not 0 < a < 360 for a in choices[1:]):
        raise ValueError(f"random_rotation: angles must be distinct and in (0, 360) degrees, got {tuple(angles)}")
    picks = torch.randint(len(choices), (images.shape[0],), generator=generator, device=generator.device)
    picks = picks.to(images.device)
    rotated = images.clone()
    for index, angle in enumerate(choices[1:], start=1):
        chosen = picks == index
        if not chosen.any():
            continue
        if angle % 90 == 0:
            rotated[chosen] = torch.rot90(images[chosen], k=int(angle // 90), dims=(-2, -1))
        else:
            rotated[chosen] = rotate(images[chosen], angle, interpolation=InterpolationMode.BILINEAR, fill=[AIR])
    return rotated
