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


#: `compute.precision` values: Appendix B trains in 32-bit floats; bf16 autocast is a GPU option
PRECISIONS = ("fp32", "bf16")


def training_precision(compute: dict, device: torch.device) -> dict:
    """The trainer's precision keys from the config's `compute` section, for a job on `device`.

    bf16 autocast is refused off CUDA, as `device: cuda` is: CPU autocast runs, but slower than
    fp32 on most CPUs and with other numerics than the run asked a GPU for.
    """
    precision = compute.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise DeviceUnavailableError(f"config key 'compute.precision': unknown value {precision!r} {PRECISIONS}")
    if precision == "bf16" and torch.device(device).type != "cuda":
        raise DeviceUnavailableError(
            f"config key 'compute.precision' is 'bf16' but this job runs on {torch.device(device).type} "
            "(no CUDA GPU is visible, or device is cpu); set compute.precision: fp32 on this machine"
        )
    return {"precision": precision, "gradient_checkpointing": bool(compute.get("gradient_checkpointing", False))}


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


def numerics_signature(device: torch.device | str = "cpu") -> str:
    """What decides a run's floating-point results besides the code and the seed.

    The same commit and seed train to different models on machines whose kernels differ (README,
    "A second machine"): torch picks its CPU kernels by the instruction set it finds (AVX2,
    AVX-512, ...), so that and the thread count go into every rule log and model card.
    """
    device = torch.device(device)
    where = (f"CUDA {torch.cuda.get_device_name(device)}" if device.type == "cuda"
             else f"CPU {torch.backends.cpu.get_cpu_capability()}")
    return f"torch {torch.__version__}, {where}, {torch.get_num_threads()} thread(s)"


def generator_for(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g
