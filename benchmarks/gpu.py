"""The paper configuration's cost on one GPU, with random weights at the paper's shapes.

    python benchmarks/gpu.py [--precision fp32|bf16] [--gradient-checkpointing] [--train-pairs 880]
    python benchmarks/gpu.py --tiny      # the same code at toy sizes, on the CPU (the test runs this)

Per stage, the mean optimisation-step time (after a warm-up step) and the peak GPU memory:
the nodule-aligned VAE (SD1.5's AutoencoderKL shape, 64 px crops, Eq. 6 without LPIPS, batch
`vae.batch_size`), stage 1 (SD1.5's U-Net, null context, Eq. 9) and stage 2 (the U-Net widened
to 8 input channels, cross-attending to C from a Gemma 3 4B-shaped LLM built from its config,
whose soft prompts train through the frozen LLM: Eq. 10), both at `budget.batch_size`. Then
K-seed DDIM generation (`generation.k_seeds` x `ddim_steps` of configs/paper.yaml) batched over
pairs and seeds against one seed per call, and a projection of the paper run's NAMD path from
those figures and the config's step counts (VAE epochs over `--train-pairs`, stage 1's
pretrain_steps, stage 2's paired_steps, the test pairs x K samples). Baselines are not projected.
Sizes and counts come from config.yaml + configs/paper.yaml; nothing is downloaded; one GPU
runs it in a few minutes.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from standin_weights import gemma_tokenizer  # noqa: E402

from namd.config import load_config  # noqa: E402
from namd.models.text_encoder import SoftPromptContextEncoder  # noqa: E402
from namd.models.schedulers import denoising_loss, noise_scheduler  # noqa: E402
from namd.models.unet import build_unet, widen_conv_in  # noqa: E402
from namd.models.vae import NoduleAlignedVAE, build_vae  # noqa: E402
from namd.sampling import ddim_sample, ddim_sample_one  # noqa: E402
from namd.training import autocast, enable_gradient_checkpointing  # noqa: E402

REPORT = ("Lung cancer screening with low dose computed tomography performed for this 68 years old male with "
          "prior diagnosis of emphysema and family history of cancer. A part solid nodule, with spiculated "
          "margin, 27 mm in size is present in the right lower lobe.")
#: MedGemma 1.5 4B's text tower (Gemma 3 4B): the shape of the LLM stage 2 runs in its loop
GEMMA3_4B_TEXT = dict(hidden_size=2560, intermediate_size=10240, num_hidden_layers=34, num_attention_heads=8,
                      num_key_value_heads=4, head_dim=256, vocab_size=262208, sliding_window=1024)
TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, head_dim=32, sliding_window=64)


def shapes(config: dict, tiny: bool) -> dict:
    """Model sizes: the paper's (SD1.5, Gemma 3 4B) or toy ones with the same code path."""
    if tiny:
        return {"vae": dict(block_out_channels=(32, 32), layers_per_block=1),
                "unet": dict(block_out_channels=(32, 32), layers_per_block=1, num_attention_heads=2,
                             down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                             up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
                "text": TINY_TEXT, "batch": {"vae": 4, "ldm": 2}, "k": 2, "ddim_steps": 2, "pairs": 2,
                "one_by_one": 2, "n_sets": 2, "n_prompt_tokens": 2}
    ldm = config["ldm"]
    return {"vae": dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2),
            "unet": dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, num_attention_heads=8,
                         down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                         up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3),
            "text": GEMMA3_4B_TEXT,
            "batch": {"vae": config["vae"]["batch_size"], "ldm": config["budget"]["batch_size"]},
            "k": config["generation"]["k_seeds"], "ddim_steps": config["methods"]["namd"]["ddim_steps"],
            "pairs": 16, "one_by_one": 8, "n_sets": ldm["n_sets"], "n_prompt_tokens": ldm["n_prompt_tokens"]}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(step, device: torch.device, repeats: int) -> tuple[float, float | None]:
    """(mean seconds per call after one warm-up call, peak GPU memory in GiB or None on the CPU)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    synchronize(device)
    seconds = (time.perf_counter() - start) / repeats
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return seconds, peak


def optimiser_step(loss_fn, parameters, precision: str, device: torch.device):
    parameters = [p for p in parameters if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-5)

    def step():
        with autocast(device, precision):
            loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()

    return step


def vae_stage(config: dict, size: dict, crop: int, channels: int, args, device: torch.device):
    """(s / step, peak GiB, latent side) of the VAE; its memory is freed on return, before the LLM is built."""
    vae = NoduleAlignedVAE(build_vae(sample_size=crop, latent_channels=channels, **size["vae"])).to(device)
    if args.gradient_checkpointing:
        enable_gradient_checkpointing(vae)
    b = size["batch"]["vae"]
    data = {"image": torch.rand(b, 1, crop, crop, device=device) * 2 - 1,
            "features": torch.randn(b, 3, device=device), "label": torch.randint(0, 2, (b,), device=device).float()}
    weights = {k: config["vae"][k] for k in ("lambda_kl", "sigma_f", "sigma_z")}
    weights.update(lambda_lpips=0.0, **config["vae"]["variants"]["aligned"])
    seconds, peak = measure(optimiser_step(lambda: vae.loss(data, **weights)["total"], vae.parameters(),
                                           args.precision, device), device, args.repeats)
    with torch.no_grad():
        latent = vae.vae.encode(data["image"][:1]).latent_dist.mean
    return seconds, peak, latent.shape[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", type=Path, default=[ROOT / "config.yaml", ROOT / "configs/paper.yaml"])
    parser.add_argument("--tiny", action="store_true", help="toy sizes on the CPU: checks the script, not the GPU")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--train-pairs", type=int, default=880, help="training pairs the projection assumes")
    parser.add_argument("--test-pairs", type=int, default=450, help="test pairs the projection assumes (paper)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    config = load_config(*args.config)
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not args.tiny:
        print("no CUDA GPU visible: running the paper shapes on the CPU will take very long; use --tiny to check")
    size = shapes(config, args.tiny)
    crop, channels = config["crop"]["size"], config["vae"]["latent_channels"]
    torch.manual_seed(0)
    rows = []

    def report(stage, batch, seconds, peak, note=""):
        rows.append((stage, batch, seconds, peak))
        memory = "-" if peak is None else f"{peak:.1f}"
        print(f"| {stage} | {batch} | {seconds:.3f} | {memory} | {note} |", flush=True)

    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"precision {args.precision}, gradient checkpointing {args.gradient_checkpointing}, {crop} px crops")
    print("| stage | batch | s / step | peak GiB | what |\n|---|---:|---:|---:|---|")

    seconds, peak, latent_size = vae_stage(config, size, crop, channels, args, device)
    report("VAE (Eq. 6)", size["batch"]["vae"], seconds, peak,
           "AutoencoderKL + latent probe, L1 + KL + L_align + L_pred")

    tokenizer = gemma_tokenizer()
    text_config = Gemma3TextConfig(**{"vocab_size": len(tokenizer), **size["text"]},
                                   pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                   eos_token_id=tokenizer.eos_token_id)
    with torch.device(device):
        llm = Gemma3ForCausalLM(text_config)
    encoder = SoftPromptContextEncoder(llm, tokenizer, llm_name="gemma3-4b-shaped (random)",
                                       n_sets=size["n_sets"], n_prompt_tokens=size["n_prompt_tokens"],
                                       max_length=config["ldm"]["max_length"]).to(device)
    llm_params = sum(p.numel() for p in llm.parameters()) / 1e6
    dim = encoder.context_dim
    scheduler = noise_scheduler(**config["ldm"]["scheduler"])
    unet = build_unet(sample_size=latent_size, in_channels=channels, out_channels=channels,
                      cross_attention_dim=dim, **size["unet"]).to(device)
    if args.gradient_checkpointing:
        enable_gradient_checkpointing(unet)
    b = size["batch"]["ldm"]
    target = torch.randn(b, channels, latent_size, latent_size, device=device)
    null = torch.zeros(b, size["n_sets"], dim, device=device)
    seconds, peak = measure(optimiser_step(lambda: denoising_loss(unet, scheduler, target, null), unet.parameters(),
                                           args.precision, device), device, args.repeats)
    unet_params = sum(p.numel() for p in unet.parameters()) / 1e6
    report("stage 1 (Eq. 9)", b, seconds, peak,
           f"U-Net {unet_params:,.1f} M params, {latent_size}x{latent_size} latents")

    unet = widen_conv_in(unet, extra_channels=channels).to(device)
    condition = torch.randn_like(target)
    reports = [REPORT] * b
    seconds, peak = measure(optimiser_step(
        lambda: denoising_loss(unet, scheduler, target, encoder(reports), condition_latents=condition),
        list(unet.parameters()) + [encoder.soft_prompts], args.precision, device), device, args.repeats)
    report("stage 2 (Eq. 10)", b, seconds, peak, f"+ LLM {llm_params:,.1f} M params in the loop, {size['n_sets']} "
           f"prompt sets, {len(tokenizer(REPORT)['input_ids'])} report tokens")

    unet.eval()
    pairs, k, steps = size["pairs"], size["k"], size["ddim_steps"]
    with torch.no_grad(), autocast(device, args.precision):
        context = encoder([REPORT] * pairs)
    conditions = torch.randn(pairs, channels, latent_size, latent_size, device=device)
    ids = [f"p{i}" for i in range(pairs)]

    def batched():
        with autocast(device, args.precision):
            ddim_sample(unet, scheduler.config, conditions, context, ids, list(range(k)), num_inference_steps=steps,
                        batch_size=config["generation"]["pairs_per_batch"], progress=False)

    def one_by_one():
        with autocast(device, args.precision):
            for i in range(size["one_by_one"]):
                ddim_sample_one(unet, scheduler.config, conditions[i % pairs], context[i % pairs], ids[i % pairs], i,
                                num_inference_steps=steps)

    seconds, peak = measure(batched, device, 1)
    batched_rate = pairs * k / seconds
    report(f"DDIM {steps} steps, batched", pairs * k, seconds, peak, f"{batched_rate:.1f} samples/s")
    seconds, peak = measure(one_by_one, device, 1)
    single_rate = size["one_by_one"] / seconds
    report(f"DDIM {steps} steps, one seed per call", 1, seconds / size["one_by_one"], peak,
           f"{single_rate:.2f} samples/s; batched is {batched_rate / single_rate:.1f}x faster")

    vae_steps = config["vae"]["epochs"] * math.ceil(2 * args.train_pairs / config["vae"]["batch_size"])
    stage = {name: s for name, _, s, _ in rows}
    projection = {
        f"VAE: {vae_steps:,} steps ({config['vae']['epochs']} epochs of {2 * args.train_pairs} crops)":
            vae_steps * stage["VAE (Eq. 6)"],
        f"stage 1: {config['budget']['pretrain_steps']:,} steps":
            config["budget"]["pretrain_steps"] * stage["stage 1 (Eq. 9)"],
        f"stage 2: {config['budget']['paired_steps']:,} steps":
            config["budget"]["paired_steps"] * stage["stage 2 (Eq. 10)"],
        f"generation: {args.test_pairs} test pairs x K = {k}": args.test_pairs * k / batched_rate,
    }
    print(f"\nprojected NAMD path of {'configs/paper.yaml' if not args.tiny else 'the tiny sizes'} on this device "
          f"({args.precision}):")
    for what, seconds in projection.items():
        print(f"  {what}: {seconds / 3600:.2f} h")
    print(f"  total: {sum(projection.values()) / 3600:.2f} h (baselines not included)")


if __name__ == "__main__":
    main()
