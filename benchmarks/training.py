"""Training-step cost against crop size and batch size: the VAE (Eq. 6) and the stage-2 U-Net (Eq. 10).

    python benchmarks/training.py [--crops 32 64] [--batches 8 16 64] [--threads 1]

Each row is the mean of a few optimisation steps (forward, backward, AdamW) after one warm-up
step, at config.yaml's model sizes; the U-Net works on the VAE's latents of that crop size.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import yaml

from namd.models.schedulers import denoising_loss, noise_scheduler
from namd.models.vae import NoduleAlignedVAE, build_vae
from sampling import latent_size, load_or_build_unet

ROOT = Path(__file__).resolve().parents[1]


def mean_step_seconds(step, repeats: int) -> float:
    step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats


def vae_step(config: dict, crop: int, batch: int):
    params = config["vae"]
    model = NoduleAlignedVAE(build_vae(sample_size=crop, latent_channels=params["latent_channels"],
                                       block_out_channels=tuple(params["block_out_channels"]),
                                       layers_per_block=params["layers_per_block"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=params["lr"])
    # features: the nodule descriptors of Eq. 2 (any width: only their pairwise distances enter)
    data = {"image": torch.rand(batch, 1, crop, crop) * 2 - 1, "features": torch.randn(batch, 3),
            "label": torch.randint(0, 2, (batch,)).float()}
    weights = {k: params[k] for k in ("lambda_kl", "sigma_f", "sigma_z")}
    weights.update(lambda_lpips=0.0, **params["variants"]["aligned"])

    def step():
        loss = model.loss(data, **weights)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def unet_step(config: dict, crop: int, batch: int):
    ldm, channels, size = config["ldm"], config["vae"]["latent_channels"], latent_size(config, crop)
    unet, _ = load_or_build_unet(None, config, size)
    scheduler = noise_scheduler(**ldm["scheduler"])
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    target = torch.randn(batch, channels, size, size)
    condition = torch.randn(batch, channels, size, size)
    context = torch.randn(batch, ldm["n_sets"], unet.config.cross_attention_dim)

    def step():
        loss = denoising_loss(unet, scheduler, target, context, condition_latents=condition)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    parser.add_argument("--crops", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = yaml.safe_load(Path(args.config).read_text())
    print(f"# {args.threads} thread(s), torch {torch.__version__}, mean of {args.repeats} steps after a warm-up\n")
    print("| model | crop | latent | batch | s/step | ms/image |\n|---|---:|---:|---:|---:|---:|")
    for crop in args.crops:
        for batch in args.batches:
            seconds = mean_step_seconds(vae_step(config, crop, batch), args.repeats)
            print(f"| VAE | {crop} | - | {batch} | {seconds:.3f} | {1000 * seconds / batch:.1f} |", flush=True)
        for batch in args.batches:
            step, size = unet_step(config, crop, batch)
            seconds = mean_step_seconds(step, args.repeats)
            print(f"| U-Net (stage 2) | {crop} | {size} | {batch} | {seconds:.3f} | {1000 * seconds / batch:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
