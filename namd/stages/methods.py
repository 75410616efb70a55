"""Stage: train any registered method, and sample its follow-ups for the test pairs."""

from __future__ import annotations

import logging
from pathlib import Path

from namd.data.dataset import Cohort, PairDataset
from namd.generate import generate_followups, save_generated
from namd.methods import get_method
from namd.methods.base import DataSpec, MethodContext
from namd.training import budget_settings, file_fingerprint, fit, write_history, write_model_card

LOG = logging.getLogger(__name__)


def _cohort(pairs_csv, crops_npz, latents_npz, stats_pairs_csv=None):
    return Cohort.load(pairs_csv, crops_npz, latents={"vae": latents_npz} if latents_npz else None,
                       stats_pairs=stats_pairs_csv)


def train_method(name: str, params: dict, pairs_csv, crops_npz, latents_npz, upstream: dict, out_dir, state_dir,
                 *, seed: int, device="cpu", precision: dict | None = None) -> dict:
    cohort = _cohort(pairs_csv, crops_npz, latents_npz)
    spec = DataSpec(image_size=cohort.image_size, n_ehr=int(cohort.ehr.shape[1]),
                    n_nodule_features=int(cohort.features.shape[1]))
    context = MethodContext(device=str(device), upstream={k: str(v) for k, v in upstream.items()}, seed=seed)
    method = get_method(name)(params, spec, context)
    inputs = [pairs_csv, crops_npz] + ([latents_npz] if latents_npz else [])
    fingerprint = file_fingerprint(*inputs)
    settings = budget_settings(params, name, seed=seed,
                               identity={"method": name, "params": params, "data": fingerprint},
                               **(precision or {}))
    train = PairDataset(cohort, "train")
    method.prepare(train)
    result = fit(method, train, PairDataset(cohort, "val"), settings, state_dir, device=device)
    LOG.info("%s: best epoch %d, validation loss %.5f", name, result.best_epoch, result.best_val_loss)
    out_dir = Path(out_dir)
    method.save_pretrained(out_dir)
    write_history(result, out_dir / "history.csv")
    write_model_card(out_dir, name=name, config=params, result=result, data_fingerprint=fingerprint, seed=seed,
                     description=f"{name}: {method.reference or type(method).__doc__ or ''}".strip())
    return {"best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss}


def generate_method(name: str, model_dir, pairs_csv, crops_npz, latents_npz, upstream: dict, out_npz, *,
                    seeds, batch_size: int, seed: int, device="cpu", split: str = "test", stats_pairs_csv=None,
                    pair_ids=None) -> None:
    """Follow-ups of the `split` pairs (only `pair_ids`, when given); a test-only table takes its
    record statistics from `stats_pairs_csv` (the train/val pairs.csv the method was trained on)."""
    cohort = _cohort(pairs_csv, crops_npz, latents_npz, stats_pairs_csv)
    context = MethodContext(device=str(device), upstream={k: str(v) for k, v in upstream.items()}, seed=seed)
    method = get_method(name).from_pretrained(model_dir, context)
    arrays = generate_followups(method, PairDataset(cohort, split, pair_ids), seeds, batch_size=batch_size)
    save_generated(arrays, out_npz)
    LOG.info("%s: %d pairs x %d seeds generated", name, *arrays["images"].shape[:2])
