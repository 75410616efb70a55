"""The one generation loop: every method's follow-ups for every test pair, in one file format."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from namd.io import atomic_output
from namd.methods.base import GenerativeMethod
from namd.progress import progress_bar


class GeneratedSetError(ValueError):
    """A generated-samples file is incomplete or malformed; the message names what is missing."""


def generate_followups(
    method: GenerativeMethod,
    dataset: Dataset,
    seeds: Sequence[int],
    *,
    batch_size: int = 64,
    collate_fn=None,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """K follow-ups per pair for a stochastic method, one for a deterministic one."""
    seeds = list(seeds) if method.stochastic else [0]
    device = next((p.device for p in method.parameters()), torch.device("cpu"))
    method.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn)
    pair_ids: list[str] = []
    images: list[np.ndarray] = []
    with torch.no_grad():
        for batch in progress_bar(loader, desc=f"generate {method.name}", disable=not progress, unit="batch"):
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            out = method.generate(batch, seeds)
            expected = (len(batch["pair_id"]), len(seeds), *batch["followup"].shape[1:])
            if tuple(out.shape) != expected:
                raise GeneratedSetError(
                    f"{method.name}: generate() returned shape {tuple(out.shape)}, expected {expected}"
                )
            if not torch.isfinite(out).all():
                raise GeneratedSetError(f"{method.name}: generate() returned NaN or infinite pixels")
            pair_ids.extend(batch["pair_id"])
            images.append(out.clamp(-1, 1).float().cpu().numpy())
    return {
        "pair_id": np.asarray(pair_ids, dtype=str),
        "seeds": np.asarray(seeds, dtype=np.int64),
        "images": np.concatenate(images).astype(np.float32),
    }


def save_generated(arrays: dict[str, np.ndarray], path: str | Path) -> None:
    with atomic_output(path) as handle:
        np.savez_compressed(handle, **arrays)


def load_generated(path: str | Path, *, expected_pair_ids: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in ("pair_id", "seeds", "images")}
    if expected_pair_ids is not None:
        missing = sorted(set(expected_pair_ids) - set(arrays["pair_id"].tolist()))
        if missing:
            raise GeneratedSetError(f"{path}: {len(missing)} test pair(s) have no generated follow-up: {missing[:10]}")
    n, k = len(arrays["pair_id"]), len(arrays["seeds"])
    if arrays["images"].shape[:2] != (n, k):
        raise GeneratedSetError(f"{path}: images have shape {arrays['images'].shape}, expected ({n}, {k}, ...)")
    return arrays


def generated_images(path: str | Path, pair_ids: Sequence[str]) -> np.ndarray:
    """A generated-samples file's images (N, K, ...) in the order of `pair_ids`; a missing pair is named."""
    arrays = load_generated(path, expected_pair_ids=pair_ids)
    order = {p: i for i, p in enumerate(arrays["pair_id"].tolist())}
    return arrays["images"][[order[p] for p in pair_ids]]
