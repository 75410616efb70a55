"""K-seed DDIM generation: the project's batched sampler against a one-pair, one-seed loop.

    python benchmarks/sampling.py [--model results/models/namd] [--pairs 4] [--seeds 20] [--steps 50]
    python benchmarks/sampling.py --scaling      # time against pairs x K, batched only

Both paths run the same U-Net, the same DDIM steps and the same per-(pair, seed) noise, so
the images must agree up to float rounding; the script prints the largest difference and
fails when they do not agree. The naive path is what a diffusers user writes first: a loop
over pairs and seeds calling the sampler with batch size 1 (namd.sampling.ddim_sample_one).

With --model (a folder the workflow wrote, e.g. results/models/namd) the trained U-Net is
timed; without it a freshly initialised U-Net of config.yaml's size (same cost per step).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
import yaml

from namd.models.frozen import llm_context_dim
from namd.models.schedulers import noise_scheduler
from namd.models.unet import build_unet, load_unet
from namd.sampling import ddim_sample, ddim_sample_one

ROOT = Path(__file__).resolve().parents[1]


def latent_size(config: dict, crop: int) -> int:
    """Side of the VAE latent of a crop: each VAE level after the first halves it."""
    return crop // 2 ** (len(config["vae"]["block_out_channels"]) - 1)


def load_or_build_unet(model: str | None, config: dict, size: int):
    """The trained conditional U-Net of `model`, or a fresh one of the config's size."""
    if model:
        return load_unet(model, subfolder="unet"), f"trained U-Net from {model}"
    ldm, channels = config["ldm"], config["vae"]["latent_channels"]
    unet = build_unet(
        sample_size=size, in_channels=2 * channels, out_channels=channels,
        block_out_channels=ldm["unet"]["block_out_channels"], layers_per_block=ldm["unet"]["layers_per_block"],
        num_attention_heads=ldm["unet"]["num_attention_heads"], cross_attention_dim=llm_context_dim(ldm["llm"]),
    )
    return unet, "untrained U-Net of config.yaml's size"


def inputs(unet, n_pairs: int, n_sets: int, size: int):
    g = torch.Generator().manual_seed(0)
    channels = unet.config.in_channels - unet.config.out_channels
    condition = torch.randn(n_pairs, channels, size, size, generator=g)
    context = torch.randn(n_pairs, n_sets, unet.config.cross_attention_dim, generator=g)
    return [f"pair{n:04d}" for n in range(n_pairs)], condition, context


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def compare(unet, scheduler_config, args, size: int) -> None:
    pair_ids, condition, context = inputs(unet, args.pairs, args.n_sets, size)
    seeds = list(range(args.seeds))
    batched, t_batched = timed(lambda: ddim_sample(
        unet, scheduler_config, condition, context, pair_ids, seeds, num_inference_steps=args.steps,
        batch_size=args.batch_size, progress=False))

    def naive():
        return torch.stack([
            torch.stack([ddim_sample_one(unet, scheduler_config, condition[n], context[n], pair_id, seed,
                                         num_inference_steps=args.steps) for seed in seeds])
            for n, pair_id in enumerate(pair_ids)])

    one_by_one, t_naive = timed(naive)
    n_images = args.pairs * args.seeds
    diff = (batched - one_by_one).abs().max().item()
    scale = one_by_one.abs().max().item()
    print(f"| path | images | seconds | images/s |\n|---|---:|---:|---:|\n"
          f"| one pair, one seed per call | {n_images} | {t_naive:.1f} | {n_images / t_naive:.2f} |\n"
          f"| batched over pairs x seeds (batch {args.batch_size}) | {n_images} | {t_batched:.1f} | "
          f"{n_images / t_batched:.2f} |")
    print(f"\nspeed-up: {t_naive / t_batched:.1f}x; largest latent difference {diff:.2e} "
          f"(latents up to {scale:.1f}; tolerance {args.atol:g})")
    if not diff <= args.atol:
        raise SystemExit(f"batched and one-by-one latents differ by {diff:.3e} > {args.atol:g}")
    print("images identical within float rounding")


def scaling(unet, scheduler_config, args, size: int) -> None:
    print("| pairs | K | images | seconds | images/s | ms per image-step |\n|---:|---:|---:|---:|---:|---:|")
    for n_pairs, n_seeds in ((1, 20), (4, 20), (16, 20), (57, 20)):
        pair_ids, condition, context = inputs(unet, n_pairs, args.n_sets, size)
        _, seconds = timed(lambda: ddim_sample(
            unet, scheduler_config, condition, context, pair_ids, list(range(n_seeds)),
            num_inference_steps=args.steps, batch_size=args.batch_size, progress=False))
        images = n_pairs * n_seeds
        print(f"| {n_pairs} | {n_seeds} | {images} | {seconds:.1f} | {images / seconds:.1f} | "
              f"{1000 * seconds / (images * args.steps):.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="method folder with unet/ (e.g. results/models/namd)")
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (a workflow job uses compute.train_threads)")
    parser.add_argument("--atol", type=float, default=1e-3)
    parser.add_argument("--scaling", action="store_true", help="time the batched sampler against pairs x K")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = yaml.safe_load(Path(args.config).read_text())
    args.n_sets = config["ldm"]["n_sets"]
    size = latent_size(config, config["crop"]["size"])
    unet, what = load_or_build_unet(args.model, config, size)
    unet.eval()
    scheduler_config = noise_scheduler(**config["ldm"]["scheduler"]).config
    print(f"# DDIM {args.steps} steps, {what}, {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M parameters, "
          f"{args.threads} thread(s), torch {torch.__version__}, {platform.processor() or platform.machine()}\n")
    (scaling if args.scaling else compare)(unet, scheduler_config, args, size)


if __name__ == "__main__":
    main()
