"""One place that decides device, seeds, determinism and threads for every stage."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


class DeviceUnavailableError(RuntimeError):
    """A config asked for a device this machine does not have."""


def select_device(requested: str = "auto") -> torch.device:
    """CUDA when present and allowed, CPU otherwise; a clear error instead of a CUDA traceback."""
    requested = (requested or "auto").lower()
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cpu":
        return torch.device("cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                f"config key 'device' is {requested!r} but no CUDA GPU is visible on this machine "
                "(torch.cuda.is_available() is False); set device: auto to fall back to the CPU"
            )
        return torch.device(requested)
    raise DeviceUnavailableError(f"config key 'device': unknown value {requested!r} (auto, cpu, cuda[:N])")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_deterministic(seed: int, threads: int | None = None) -> None:
    """Seeded, deterministic algorithms, fp32 matmuls: the paper's reproducibility settings."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    seed_everything(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # filling fresh memory with NaN only catches nondeterminism in uninitialised reads, at ~18% of a
    # CPU training step; the results do not depend on it
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if threads:
        torch.set_num_threads(int(threads))


def generator_for(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g
