"""Print README's training-budget table (markdown): one row per generative method of a config.

    .venv/bin/python tools/budget_table.py [--config config.yaml [overlay.yaml ...]]
                                           [--pairs PAIRS_CSV] [--bench benchmarks/out]

Steps, batch and initialisation come from the config (`namd.budget`); pairs seen in epochs need
the training split's size (`--pairs`, default results/data/trainval/pairs.csv, else
results/data/pairs.csv, when present); wall times come from the Snakemake benchmark files of a
run (benchmarks/out/train_<job>.tsv), when present. tests/test_budget.py checks README's copy of
the table against the config.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from namd.budget import STAGE1, budget_rows
from namd.config import load_config
from namd.methods import LDM_FAMILY, REUSES, get_method

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [ROOT / "results/data/trainval/pairs.csv", ROOT / "results/data/pairs.csv"]
HEADER = "| row | method | optimiser steps (stage 1 + paired) | batch | pairs seen | initialisation | wall time |"


def train_pairs(path: Path | None) -> int | None:
    path = path or next((p for p in PAIRS if p.exists()), None)
    if path is None:
        return None
    pairs = pd.read_csv(path)
    if "split" not in pairs:
        raise ValueError(f"{path}: no split column")
    return int((pairs["split"] == "train").sum())


def wall_seconds(bench: Path, job: str) -> float | None:
    path = bench / f"train_{job}.tsv"
    return float(pd.read_csv(path, sep="\t")["s"].iloc[0]) if path.exists() else None


def wall_time(bench: Path, method: str, vae: str | None) -> str:
    if method in REUSES:
        return f"none (reuses `{REUSES[method]}`)"
    own = wall_seconds(bench, method)
    if own is None:
        return "not run"
    if method not in LDM_FAMILY:
        return f"{own:.0f} s"
    stage1 = wall_seconds(bench, f"{STAGE1}_{vae}")
    return f"{own:.0f} s + stage 1 {stage1:.0f} s" if stage1 is not None else f"{own:.0f} s + stage 1 (not run)"


def markdown(config: dict, n_train: int | None, bench: Path) -> str:
    lines = [HEADER, "|---|---|---:|---:|---:|---|---:|"]
    for row in budget_rows(config, n_train):
        method = row["method"]
        seen = f"{row['pairs_seen']:,}"
        if row["paired_epochs"] is not None:
            seen += f" ({row['paired_epochs']:.1f} epochs)"
        if row["pretrain_steps"]:
            seen += f" + {row['stage1_images_seen']:,} unpaired latents"
        steps = f"{row['pretrain_steps']:,} + {row['paired_steps']:,} = {row['total_steps']:,}"
        lines.append(f"| {get_method(method).title} | `{method}` | {steps} | {row['batch_size']} | {seen} | "
                     f"{row['initialisation']} | {wall_time(bench, method, config['methods'][method].get('vae'))} |")
    budget = config["budget"]
    reused = [f"`{m}` samples `{REUSES[m]}`'s trained model and trains nothing"
              for m in config["methods"] if m in REUSES]
    lines += [
        "",
        f"Every row{' that trains' if reused else ''}: {budget['pretrain_steps'] + budget['paired_steps']:,} "
        f"optimiser steps of its generator at batch {budget['batch_size']}"
        + (f" on the same {n_train} training pairs" if n_train else " on the same training pairs")
        + ("; " + "; ".join(reused) if reused else "") + "."
        + " The latent family's VAEs (`vae_aligned`, `vae_unaligned`) are shared infrastructure, like SD1.5's "
        "pretrained VAE in the paper, and are not counted (Flux trains on `vae_unaligned`'s latents too); nor is "
        "McWGAN's frozen perceptual network, which stands in for its source's pretrained ResNet-18. "
        "Stage 1 (`ldm_unconditional_unaligned`) is one job shared by NAMD w/o L_align and SD1.5. Flux has "
        "no stage 1: it would need a Flux-shaped unconditional model, so all its steps are paired.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", default=[str(ROOT / "config.yaml")])
    parser.add_argument("--pairs", type=Path, default=None)
    parser.add_argument("--bench", type=Path, default=ROOT / "benchmarks/out")
    args = parser.parse_args()
    print(markdown(load_config(*args.config), train_pairs(args.pairs), args.bench))


if __name__ == "__main__":
    main()
