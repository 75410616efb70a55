"""One trainer for everything the workflow trains: VAEs, both diffusion stages, every baseline,
the evaluation classifier.

A model plugs in by subclassing `TrainableModule`: it says how to build its optimisers and what
one step's losses are; the trainer owns the loop, validation-based selection, checkpoints,
resume after a kill, divergence checks, progress and the loss history.

Resumable state lives in a state folder that is *not* a Snakemake output (Snakemake deletes a
job's outputs before it starts), keyed by a fingerprint of the settings and data, so a re-run of
a killed job picks up where it stopped and a changed config starts afresh.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from namd.io import atomic_output
from namd.progress import progress_bar
from namd.runtime import numerics_signature

LOG = logging.getLogger(__name__)


#: keys of a method's params that set up the trainer rather than the model (the step budget of
#: `namd.budget` and the clipping norm)
TRAINER_KEYS = ("max_steps", "batch_size", "max_grad_norm")
#: the smallest batch a loader gives: the alignment loss (Eq. 4) is identically zero at B = 2
MIN_BATCH = 3


class TrainingDivergedError(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


class TrainableModule(torch.nn.Module):
    """What the trainer needs from a model.

    Override `losses` (a dict of scalar tensors with the total under "loss"; other entries are
    logged, and may be NaN for a term that is switched off) and
    `configure_optimizers`; override `training_step` only for models with several optimisers
    (a GAN's critic and generator).
    """

    #: name used in messages (the method or model name)
    display_name: str = "model"

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def configure_schedulers(self, optimizers: dict[str, torch.optim.Optimizer], total_steps: int) -> dict:
        """Learning-rate schedulers, stepped once per optimisation step; none by default."""
        return {}

    def losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def training_step(self, batch: dict[str, Any], optimizers: dict, step: int, max_grad_norm: float | None):
        losses = self.losses(batch)
        (optimizer,) = optimizers.values()
        apply_gradients(losses["loss"], optimizer, self.parameters(), max_grad_norm)
        return losses

    @torch.no_grad()
    def validation_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.losses(batch)

    def save_pretrained(self, out_dir: str | Path) -> None:
        raise NotImplementedError


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    *,
    warmup_steps: int,
    total_steps: int,
    lr_start: float = 0.0,
    lr_peak: float = 1.0,
    lr_min: float = 0.0,
    warmup_offset: int = 0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up lr_start -> lr_peak over warmup_steps, then cosine decay to lr_min at total_steps.

    LambdaLR scales the optimiser's lr by rate / lr_peak: give the rates in its units with its lr
    set to lr_peak, or as fractions of its lr with lr_peak = 1 (the default). warmup_offset = 1
    counts the step being taken, so the first step already runs at lr_peak / warmup_steps (from
    lr_start = 0) and lr_peak is reached at step warmup_steps - 1. Appendix B's latent diffusion
    schedule is lr_start -> lr_peak -> lr_min with offset 0; the evaluation classifier's is
    0 -> 1 -> 0 (fractions of its lr) with offset 1.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (lr_start + (lr_peak - lr_start) * (step + warmup_offset) / max(warmup_steps, 1)) / lr_peak
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        return (lr_min + 0.5 * (lr_peak - lr_min) * (1 + math.cos(math.pi * progress))) / lr_peak

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def apply_gradients(loss: torch.Tensor, optimizer: torch.optim.Optimizer, parameters, max_grad_norm: float | None):
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_([p for p in parameters if p.requires_grad], max_grad_norm)
    optimizer.step()


@dataclass
class TrainSettings:
    """How long and how to train: `max_steps` optimiser steps (the generative rows' shared budget,
    the last epoch then partial) or whole `epochs` (the VAE, the classifier); exactly one is given."""

    batch_size: int
    max_steps: int | None = None
    epochs: int | None = None
    seed: int = 23
    max_grad_norm: float | None = 1.0
    val_every: int = 1
    num_workers: int = 0
    #: "fp32" (Appendix B) or "bf16": every training and validation step under bf16 autocast
    precision: str = "fp32"
    #: diffusers models recompute activations in the backward pass (less memory, ~30% more time)
    gradient_checkpointing: bool = False
    # extra identity for the fingerprint (data hash, model config...)
    identity: dict = field(default_factory=dict)

    def __post_init__(self):
        if (self.max_steps is None) == (self.epochs is None):
            raise ValueError(f"TrainSettings: give exactly one of max_steps and epochs "
                             f"(got max_steps={self.max_steps}, epochs={self.epochs})")
        if (self.max_steps if self.epochs is None else self.epochs) < 1:
            raise ValueError(f"TrainSettings: max_steps / epochs must be at least 1 "
                             f"(got max_steps={self.max_steps}, epochs={self.epochs})")

    def total_steps(self, steps_per_epoch: int) -> int:
        return self.max_steps if self.epochs is None else self.epochs * steps_per_epoch

    def fingerprint(self) -> str:
        """Of what changes the result: checkpointing only recomputes; fp32 is left out so that states
        written before the precision key existed still resume."""
        fields = asdict(self)
        del fields["gradient_checkpointing"]
        if fields["precision"] == "fp32":
            del fields["precision"]
        blob = json.dumps(fields, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def budget_settings(params: dict, job: str, **kwargs) -> TrainSettings:
    """Settings of a generative row's training job from its params, which carry the step budget
    (`max_steps`, `batch_size`: `namd.budget.trainer_budget`) and the clipping norm."""
    missing = [k for k in ("max_steps", "batch_size") if k not in params]
    if missing:
        raise ValueError(f"{job}: params lack the training budget {missing} "
                         f"(the workflow adds namd.budget.trainer_budget(config, {job!r}) to them)")
    return TrainSettings(max_steps=params["max_steps"], batch_size=params["batch_size"],
                         max_grad_norm=params.get("max_grad_norm", 1.0), **kwargs)


@dataclass
class TrainResult:
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    seconds: float
    history: list[dict]
    steps: int
    numerics: str = ""  #: `namd.runtime.numerics_signature` of the device it trained on


def _evaluation_batches(n: int, batch_size: int) -> list[list[int]]:
    """Consecutive batches of every sample; a tail shorter than MIN_BATCH joins the batch before it."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < MIN_BATCH:
        starts.pop()
    return [list(range(start, stop)) for start, stop in zip(starts, starts[1:] + [n])]


def _loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int, collate_fn=None):
    """Training batches are all `batch_size` (the short tail is dropped) unless the split is smaller;
    evaluation batches keep every sample and are never smaller than MIN_BATCH, which pairwise losses
    (the alignment loss) need, unless the split is."""
    if not shuffle:
        return DataLoader(dataset, batch_sampler=_evaluation_batches(len(dataset), batch_size),
                          num_workers=num_workers, collate_fn=collate_fn)
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=min(batch_size, max(len(dataset), 1)),
        shuffle=True,
        generator=g,
        num_workers=num_workers,
        drop_last=len(dataset) > batch_size,
        collate_fn=collate_fn,
    )


def autocast(device: torch.device, precision: str):
    """bf16 autocast for precision "bf16", a no-op for "fp32"."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")


def enable_gradient_checkpointing(module: torch.nn.Module) -> int:
    """Switch on activation checkpointing in every diffusers model inside `module` that has it;
    returns how many. (A frozen transformers LLM stays in eval mode, where it does not checkpoint.)
    Recognised by diffusers' ModelMixin attributes, so the trainer does not import diffusers."""
    outermost: dict[str, torch.nn.Module] = {}  # a model's own blocks (also ModelMixins) follow its switch
    for name, m in module.named_modules():
        if getattr(m, "_supports_gradient_checkpointing", False) and hasattr(m, "enable_gradient_checkpointing") \
                and not any(
                name.startswith(f"{outer}.") or not outer for outer in outermost):
            outermost[name] = m
    for model in outermost.values():
        model.enable_gradient_checkpointing()
    return len(outermost)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _atomic_save(obj: Any, path: Path) -> None:
    with atomic_output(path) as handle:
        torch.save(obj, handle)


def trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Weights that training changes (and buffers): frozen parts, such as an LLM, are rebuilt
    from their own source, so checkpoints stay small."""
    frozen = {name for name, p in module.named_parameters() if not p.requires_grad}
    return {k: v for k, v in module.state_dict().items() if k not in frozen}


def load_trainable_state(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    missing, unexpected = module.load_state_dict(state, strict=False)
    frozen = {name for name, p in module.named_parameters() if not p.requires_grad}
    if unexpected or set(missing) - frozen:
        raise ValueError(f"{getattr(module, 'display_name', 'model')}: checkpoint does not match the model "
                         f"(missing {sorted(set(missing) - frozen)[:5]}, unexpected {sorted(unexpected)[:5]})")


def _rng_state() -> dict:
    """Plain types and tensors only, so that the checkpoint loads with weights_only=True."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)),
            "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), position, has_gauss, cached))
    random.setstate(state["python"])


def _load_state(path: Path, device: torch.device, name: str) -> dict | None:
    """The resume state, read with weights_only=True so that a tampered state folder cannot run code;
    None (start afresh) for a file that is no checkpoint of this trainer, or one from before that rule."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(state, dict):
            raise TypeError(f"holds a {type(state).__name__}, not the trainer's state dict")
        return state
    except Exception as error:  # UnpicklingError, RuntimeError, EOFError...: all mean "not ours"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else "empty"
        LOG.warning("%s: %s cannot be read as a resume checkpoint (%s: %s); starting afresh",
                    name, path, type(error).__name__, reason)
        return None


def fit(
    module: TrainableModule,
    train_set: Dataset,
    val_set: Dataset,
    settings: TrainSettings,
    state_dir: str | Path,
    *,
    device: torch.device | str = "cpu",
    collate_fn: Callable | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train with validation-based selection; resume from `state_dir` when its fingerprint matches.

    Training stops after exactly `settings.total_steps(...)` optimiser steps; validation runs every
    `val_every` epochs and after the last step. On return the module holds the weights of the epoch
    with the lowest validation loss.
    """
    if len(train_set) == 0:
        raise ValueError(f"{module.display_name}: the training split is empty")
    if len(val_set) == 0:
        raise ValueError(f"{module.display_name}: the validation split is empty")
    device = torch.device(device)
    module.to(device)
    if settings.gradient_checkpointing and not enable_gradient_checkpointing(module):
        LOG.warning("%s: gradient_checkpointing is on but it holds no diffusers model that supports it",
                    module.display_name)
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = state_dir / "last.pt", state_dir / "best.pt"
    fingerprint = settings.fingerprint()

    optimizers = module.configure_optimizers()
    train_loader = _loader(train_set, settings.batch_size, True, settings.seed, settings.num_workers, collate_fn)
    val_loader = _loader(val_set, settings.batch_size, False, settings.seed, settings.num_workers, collate_fn)
    total_steps = settings.total_steps(len(train_loader))
    n_epochs = math.ceil(total_steps / len(train_loader))
    schedulers = module.configure_schedulers(optimizers, total_steps)

    start_epoch, step, history = 0, 0, []
    best = {"epoch": -1, "loss": math.inf}
    if last_path.exists():
        state = _load_state(last_path, device, module.display_name)
        if state is None:
            best_path.unlink(missing_ok=True)
        elif state.get("fingerprint") == fingerprint:
            load_trainable_state(module, state["model"])
            for k, opt in optimizers.items():
                opt.load_state_dict(state["optimizers"][k])
            for k, sch in schedulers.items():
                sch.load_state_dict(state["schedulers"][k])
            start_epoch, step, history, best = state["epoch"] + 1, state["step"], state["history"], state["best"]
            _set_rng_state(state["rng"])
            LOG.info("%s: resuming after epoch %d from %s", module.display_name, state["epoch"], last_path)
        else:
            LOG.info("%s: settings changed since %s was written; starting afresh", module.display_name, last_path)
            best_path.unlink(missing_ok=True)

    t0 = time.time()
    # each epoch logs its own line below, so without a terminal the bar stays silent
    bar = progress_bar(range(start_epoch, n_epochs), desc=module.display_name, disable=not progress, unit="epoch",
                       log_percent=None)
    for epoch in bar:
        module.train()
        train_loader.generator.manual_seed(settings.seed + epoch)
        sums: dict[str, float] = {}
        n = 0
        for batch in itertools.islice(train_loader, total_steps - step):
            batch = _to_device(batch, device)
            with autocast(device, settings.precision):
                losses = module.training_step(batch, optimizers, step, settings.max_grad_norm)
            for sch in schedulers.values():
                sch.step()
            values = {k: float(v.detach()) for k, v in losses.items()}
            if not math.isfinite(values["loss"]):
                raise TrainingDivergedError(
                    f"{module.display_name}: loss is {values['loss']} at step {step} (epoch {epoch}); "
                    f"the last good checkpoint is kept at {last_path if last_path.exists() else 'none yet'}"
                )
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
            step += 1
        record = {"epoch": epoch, "step": step, **{f"train_{k}": v / max(n, 1) for k, v in sums.items()}}
        if (epoch + 1) % settings.val_every == 0 or step == total_steps:
            val = evaluate(module, val_loader, device, settings.precision)
            record.update({f"val_{k}": v for k, v in val.items()})
            if val["loss"] < best["loss"]:
                best = {"epoch": epoch, "loss": val["loss"]}
                _atomic_save(trainable_state(module), best_path)
        history.append(record)
        bar.set_postfix(train=f"{record.get('train_loss', float('nan')):.4f}",
                        val=f"{record.get('val_loss', float('nan')):.4f}")
        LOG.info("%s epoch %d: %s", module.display_name, epoch,
                 {k: round(v, 5) for k, v in record.items() if isinstance(v, float)})
        _atomic_save(
            {
                "fingerprint": fingerprint,
                "epoch": epoch,
                "step": step,
                "history": history,
                "best": best,
                "model": trainable_state(module),
                "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in schedulers.items()},
                "rng": _rng_state(),
            },
            last_path,
        )

    if best_path.exists():
        load_trainable_state(module, torch.load(best_path, map_location=device, weights_only=True))
    return TrainResult(best["epoch"], best["loss"], len(history), time.time() - t0, history, step,
                       numerics_signature(device))


@torch.no_grad()
def evaluate(module: TrainableModule, loader: DataLoader, device: torch.device, precision: str = "fp32"
             ) -> dict[str, float]:
    """Mean validation losses, with the validation noise fixed so epochs compare fairly."""
    module.eval()
    rng = torch.get_rng_state()
    torch.manual_seed(0)
    sums: dict[str, float] = {}
    count = 0
    for batch in loader:
        batch = _to_device(batch, device)
        size = next(len(v) for v in batch.values() if isinstance(v, torch.Tensor))
        with autocast(device, precision):
            losses = module.validation_losses(batch)
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v) * size
        count += size
    torch.set_rng_state(rng)
    module.train()
    return {k: v / max(count, 1) for k, v in sums.items()}


def write_history(result: TrainResult, path: str | Path) -> None:
    import pandas as pd

    pd.DataFrame(result.history).to_csv(path, index=False)


def write_model_card(out_dir: str | Path, *, name: str, description: str, config: dict, result: TrainResult,
                     data_fingerprint: str, seed: int, command: str = "") -> None:
    """A model card beside the weights: what it is, what it was trained on, how well it did."""
    out_dir = Path(out_dir)
    lines = [
        f"# {name}",
        "",
        description,
        "",
        f"- optimiser steps: {result.steps} over {result.epochs_run} epochs; best epoch (lowest validation loss): "
        f"{result.best_epoch}",
        f"- best validation loss: {result.best_val_loss:.6f}",
        f"- training time: {result.seconds:.1f} s",
        f"- seed: {seed}",
        f"- numerics: {result.numerics}",
        f"- data fingerprint (sha256 of the inputs): {data_fingerprint}",
        f"- command: `{command}`" if command else "- command: the NAMD Snakemake workflow",
        "",
        "## Configuration",
        "",
        "```json",
        json.dumps(config, indent=2, sort_keys=True, default=str),
        "```",
    ]
    (out_dir / "model_card.md").write_text("\n".join(lines) + "\n")


def file_fingerprint(*paths: str | Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]
