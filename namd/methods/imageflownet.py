"""ImageFlowNet (SDE), a stochastic row of Table 1 (Liu et al. 2025).

Follows the official code, KrishnaswamyLab/ImageFlowNet: `src/nn/imageflownet_sde.py` (the
model), `src/nn/nn_utils.py` (PPODEfunc, SDEFunc, SDEBlock) and `src/train_2pt_all.py` (training).

- A guided-diffusion U-Net used as an autoencoder with no time conditioning. Every encoder output
  (each skip map) and the bottleneck is one scale of the multiscale latent ("all_connections").
- One autonomous drift network per scale (InstanceNorm, 3x3 conv, ReLU, twice; time ignored) and
  one learnable scalar sigma per scale (init 0.5): dh = f(h) dt + sigma dW, diagonal Ito noise,
  fixed-step Euler-Maruyama. Horizon = time gap x (5 / largest time in the data); every NLST
  pair here is a one-year pair whose follow-up is the latest time, so the horizon is the
  constant 5 (`horizon`). The flows are skipped at t = 0, which makes the net an autoencoder.
- One optimiser step per batch sums two losses, as the source does: (a) reconstruction MSE of
  both images from noisy inputs (noise level U(0, 0.1) per image) trains the autoencoder;
  (b) once switched on, prediction MSE of the follow-up at the horizon plus the smoothness
  penalty (mean over scales of the summed squared drift-conv weights) trains only drift and
  sigma: the autoencoder's weights are frozen while (b) is built. AdamW, linear warm-up then
  cosine decay. Validation "loss" is the prediction MSE: the source keeps the weights of best
  validation prediction PSNR.
- PSNR is computed as the source computes it: images cast to [0, 1], peak value 2, so it reads
  6 dB above the usual PSNR; (b) starts after a validation pass whose mean reconstruction PSNR
  exceeds `psnr_threshold` (25, the source's value).

Deviations (CPU scaling): crops are 32x32 (not 256), so the encoder stops at 4x4 (base 32
channels, multipliers 1, 2, 2, 4, self-attention only at 4x4 and in the middle block: a 1x1
bottleneck would break InstanceNorm). A short CPU run may never reach the PSNR threshold, which
would leave the flows untrained, so (b) also switches on after `flow_start_fraction` of the run's
optimisation steps (the training budget, `namd.budget`) whatever the PSNR. The source trains with
batch 1 and 64-step gradient accumulation and keeps an EMA (0.9) of the weights; here batches
are real batches and there is no EMA (at decay 0.9 it changes little). The optional latent
regularisers of the source (ConvNeXt / SimSiam) are off, as in its default. Euler-Maruyama
takes ceil(horizon / dt) equal steps (torchsde shortens the last one instead; identical when dt
divides the horizon, as with the defaults). The CPU default's dt is coarser than the source's
0.05 (see `DEFAULTS`) to fit the training budget.

Randomness at generation is only the Brownian increments: each (pair, seed) sample draws them,
step by step, from its own generator (`namd.sampling.sample_generators`), so a sample does not
depend on the batch that made it.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

from namd.methods import register
from namd.methods.blocks import merge_params
from namd.methods.base import DataSpec, GenerativeMethod, MethodContext
from namd.sampling import sample_generators

DEFAULTS: dict[str, Any] = {
    "base_channels": 32,  # guided-diffusion model_channels (source 64 at 256 px)
    "channel_mult": [1, 2, 2, 4],  # one entry per scale; len - 1 halvings (32 px -> 4x4)
    "res_blocks": 1,  # residual blocks per scale (source 1)
    "attention_sizes": [4],  # feature-map sides with self-attention (the middle block always has it)
    "head_channels": 16,  # channels per attention head (source 16)
    "norm_groups": 32,  # GroupNorm groups of the U-Net (guided-diffusion's GroupNorm32)
    "horizon": 5.0,  # integration time for a one-year pair: gap x 5 / largest gap
    "dt": 0.5,  # Euler-Maruyama step (source 0.05; coarser on the CPU default)
    "sigma_init": 0.5,  # initial diffusion coefficient of every scale (source 0.5)
    "smoothness_weight": 0.1,  # drift-weight penalty (source README 0.1; its plain SDE command uses 0)
    "input_noise": 0.1,  # inputs get U(0, input_noise) x N(0, 1) noise during training (source 0.1)
    "psnr_threshold": 25.0,  # validation reconstruction PSNR that switches on the flow loss (source 25)
    "flow_start_fraction": 0.25,  # ... or after this share of the run's steps, whichever comes first (CPU deviation)
    "lr": 1e-3,  # AdamW learning rate (source 1e-4 over 120 epochs; larger for a short CPU run)
    "weight_decay": 0.01,  # AdamW weight decay (torch default, as in the source)
    "warmup_fraction": 0.1,  # linear warm-up share of the steps before cosine decay (source 1/10)
    "generate_batch_size": 64,  # (pair, seed) samples integrated at once at generation
}


def source_psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR as ImageFlowNet computes it: [-1, 1] images cast to [0, 1], peak value 2."""
    a01, b01 = ((a + 1) / 2).clamp(0, 1), ((b + 1) / 2).clamp(0, 1)
    mse = (a01 - b01).square().flatten(1).mean(1)
    return 20 * torch.log10(2 / torch.sqrt(mse + 1e-12))


@contextlib.contextmanager
def frozen(module: nn.Module):
    """Build a graph in which `module`'s weights are constants, as the source's freeze_time_independent."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class _Block(nn.Module):
    """A guided-diffusion ResBlock without time embedding (optionally resampling), then optional attention."""

    def __init__(self, in_ch: int, out_ch: int, groups: int, attention: bool, head_channels: int,
                 down: bool = False, up: bool = False):
        super().__init__()
        self.res = ResnetBlock2D(in_channels=in_ch, out_channels=out_ch, temb_channels=None, groups=groups,
                                 down=down, up=up)
        self.attn = (
            Attention(out_ch, heads=max(out_ch // head_channels, 1), dim_head=min(head_channels, out_ch),
                      norm_num_groups=groups, residual_connection=True, bias=True, upcast_softmax=True,
                      _from_deprecated_attn_block=True)
            if attention else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.res(x, None)
        return self.attn(h) if self.attn is not None else h


class UNetAutoencoder(nn.Module):
    """The source's U-Net with its time input unused: `encode` gives every skip map plus the bottleneck."""

    def __init__(self, channels: int, base: int, mult: Sequence[int], res_blocks: int, image_size: int,
                 attention_sizes: Sequence[int], head_channels: int, groups: int):
        super().__init__()
        self.input_blocks = nn.ModuleList([nn.Conv2d(channels, base, 3, padding=1)])
        skip_channels, ch, size = [base], base, image_size
        for level, m in enumerate(mult):
            for _ in range(res_blocks):
                self.input_blocks.append(_Block(ch, base * m, groups, size in attention_sizes, head_channels))
                ch = base * m
                skip_channels.append(ch)
            if level < len(mult) - 1:
                self.input_blocks.append(_Block(ch, ch, groups, False, head_channels, down=True))
                skip_channels.append(ch)
                size //= 2
        self.middle = UNetMidBlock2D(ch, temb_channels=None, resnet_groups=groups, attention_head_dim=head_channels)
        self.latent_channels = skip_channels + [ch]
        self.output_blocks = nn.ModuleList()
        for level, m in reversed(list(enumerate(mult))):
            for i in range(res_blocks + 1):
                skip = skip_channels.pop()
                up = level > 0 and i == res_blocks
                layers = [_Block(ch + skip, base * m, groups, size in attention_sizes, head_channels)]
                if up:
                    layers.append(_Block(base * m, base * m, groups, False, head_channels, up=True))
                    size *= 2
                self.output_blocks.append(nn.Sequential(*layers))
                ch = base * m
        self.out = nn.Sequential(nn.GroupNorm(groups, ch), nn.SiLU(), nn.Conv2d(ch, channels, 3, padding=1))

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        latents = []
        h = x
        for block in self.input_blocks:
            h = block(h)
            latents.append(h)
        latents.append(self.middle(h, None))
        return latents

    def decode(self, latents: Sequence[torch.Tensor]) -> torch.Tensor:
        *skips, h = latents
        skips = list(skips)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1))
        return self.out(h)


class ScaleFlow(nn.Module):
    """One scale's SDE: autonomous drift f (PPODEfunc) and a scalar diffusion coefficient sigma."""

    def __init__(self, channels: int, sigma_init: float):
        super().__init__()
        self.drift = nn.Sequential(
            nn.InstanceNorm2d(channels), nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
            nn.InstanceNorm2d(channels), nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
        )
        self.sigma = nn.Parameter(torch.tensor(float(sigma_init)))

    def smoothness(self) -> torch.Tensor:
        """Sum of squared drift-conv weights (the source's vec_grad)."""
        return sum(m.weight.square().sum() for m in self.drift if isinstance(m, nn.Conv2d))


def euler_maruyama(flows: Sequence[ScaleFlow], latents: Sequence[torch.Tensor], horizon: float, dt: float,
                   noise: Callable[[int], torch.Tensor]) -> list[torch.Tensor]:
    """Integrate every scale from 0 to `horizon`; `noise(D)` gives one step's N(0, I) for all scales, flat (B, D)."""
    n_steps = max(1, math.ceil(horizon / dt - 1e-9))
    step = horizon / n_steps
    sizes = [h[0].numel() for h in latents]
    states = list(latents)
    for _ in range(n_steps):
        increments = noise(sum(sizes)).split(sizes, dim=1)
        states = [
            h + flow.drift(h) * step + flow.sigma * math.sqrt(step) * dw.view_as(h)
            for h, flow, dw in zip(states, flows, increments)
        ]
    return states


@register
class ImageFlowNetSDE(GenerativeMethod):
    """ImageFlowNet (SDE): a U-Net's multiscale latents evolved by per-scale neural SDEs."""

    name = "imageflownet_sde"
    title = "ImageFlowNet (SDE)"
    stochastic = True
    group = "Stochastic Methods"
    reference = "Liu et al. 2025, ImageFlowNet (KrishnaswamyLab/ImageFlowNet, ImageFlowNetSDE, train_2pt_all.py)"

    def __init__(self, params: dict[str, Any], spec: DataSpec, context: MethodContext):
        super().__init__(merge_params(self.name, DEFAULTS, params), spec, context)
        p = self.params
        bottleneck = spec.image_size // 2 ** (len(p["channel_mult"]) - 1)
        if bottleneck < 2 or spec.image_size % 2 ** (len(p["channel_mult"]) - 1):
            raise ValueError(
                f"{self.name}: image size {spec.image_size} cannot be halved {len(p['channel_mult']) - 1} times "
                f"down to a map of at least 2x2 (channel_mult {p['channel_mult']}); shorten channel_mult"
            )
        if p["horizon"] <= 0 or p["dt"] <= 0:
            raise ValueError(f"{self.name}: horizon and dt must be positive, got {p['horizon']} and {p['dt']}")
        self.autoencoder = UNetAutoencoder(
            spec.channels, p["base_channels"], p["channel_mult"], p["res_blocks"], spec.image_size,
            p["attention_sizes"], p["head_channels"], p["norm_groups"],
        )
        self.flows = nn.ModuleList(ScaleFlow(c, p["sigma_init"]) for c in self.autoencoder.latent_channels)
        # 1 once phase (b) is on; a buffer so that it survives checkpoints and resume
        self.register_buffer("flow_on", torch.zeros((), dtype=torch.bool))
        self._val_psnr = [0.0, 0]  # sum and count of validation reconstruction PSNR since the last step
        self._flow_start: int | None = None  # the step that switches phase (b) on, set by configure_schedulers

    # -- the model ----------------------------------------------------------------------------
    def flow(self, latents: Sequence[torch.Tensor], noise: Callable[[int], torch.Tensor] | None = None):
        """Latents at the horizon; Brownian increments from the global generator unless `noise` is given."""
        if noise is None:
            like = latents[0]
            noise = lambda width: torch.randn(like.shape[0], width, device=like.device, dtype=like.dtype)  # noqa: E731
        return euler_maruyama(self.flows, latents, self.params["horizon"], self.params["dt"], noise)

    def smoothness(self) -> torch.Tensor:
        return torch.stack([flow.smoothness() for flow in self.flows]).mean()

    def _noisy(self, x: torch.Tensor) -> torch.Tensor:
        level = self.params["input_noise"] * torch.rand(x.shape[0], 1, 1, 1, device=x.device)
        return x + level * torch.randn_like(x)

    # -- training -----------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adamw": torch.optim.AdamW(self.parameters(), lr=self.params["lr"],
                                           weight_decay=self.params["weight_decay"])}

    def configure_schedulers(self, optimizers: dict[str, torch.optim.Optimizer], total_steps: int) -> dict:
        """Warm-up + cosine over the run; also places the step that switches phase (b) on."""
        self._flow_start = round(self.params["flow_start_fraction"] * total_steps)
        warmup = int(self.params["warmup_fraction"] * total_steps)
        return {"adamw": get_cosine_schedule_with_warmup(optimizers["adamw"], warmup, max(total_steps, 1))}

    def losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        baseline, followup = batch["baseline"], batch["followup"]
        noisy_baseline, noisy_followup = self._noisy(baseline), self._noisy(followup)
        latents = self.autoencoder.encode(torch.cat([noisy_baseline, noisy_followup]))
        recon = self.autoencoder.decode(latents)
        loss_recon = F.mse_loss(recon, torch.cat([baseline, followup]), reduction="none").flatten(1).mean(1)
        loss_recon = loss_recon.view(2, -1).mean(1).sum()  # MSE(x0) + MSE(x1), the source's sum
        # phase (b) starts from the noisy baseline's latents with the autoencoder held fixed
        start = [h[: len(baseline)].detach() for h in latents]
        if bool(self.flow_on):
            with frozen(self.autoencoder):
                prediction = self.autoencoder.decode(self.flow(start))
            smooth = self.smoothness()
            loss_pred = F.mse_loss(prediction, followup)
            total = loss_recon + loss_pred + self.params["smoothness_weight"] * smooth
        else:
            with torch.no_grad():
                loss_pred = F.mse_loss(self.autoencoder.decode(self.flow(start)), followup)
                smooth = self.smoothness()
            total = loss_recon
        return {"loss": total, "recon": loss_recon.detach(), "pred": loss_pred.detach(),
                "smoothness": smooth.detach(), "flow_on": self.flow_on.float()}

    def training_step(self, batch: dict[str, Any], optimizers: dict, step: int, max_grad_norm: float | None):
        self._update_gate(step)
        return super().training_step(batch, optimizers, step, max_grad_norm)

    def _update_gate(self, step: int) -> None:
        """Switch phase (b) on after a validation pass above the PSNR threshold, or at the flow_start_fraction step."""
        if self._flow_start is None:
            raise RuntimeError(f"{self.name}: call configure_schedulers(optimizers, total_steps) before training "
                               "(namd.training.fit does): the flow phase is placed by the run's length")
        total, count = self._val_psnr
        if count and total / count > self.params["psnr_threshold"]:
            self.flow_on.fill_(True)
        self._val_psnr = [0.0, 0]
        if step >= self._flow_start:
            self.flow_on.fill_(True)

    @torch.no_grad()
    def validation_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        baseline, followup = batch["baseline"], batch["followup"]
        images = torch.cat([baseline, followup])
        latents = self.autoencoder.encode(images)
        recon = self.autoencoder.decode(latents)
        psnr = source_psnr(recon, images).view(2, -1).mean(0)  # per pair: mean of its two images
        self._val_psnr[0] += float(psnr.sum())
        self._val_psnr[1] += psnr.numel()
        prediction = self.autoencoder.decode(self.flow([h[: len(baseline)] for h in latents]))
        return {"loss": F.mse_loss(prediction, followup), "recon": F.mse_loss(recon, images),
                "recon_psnr": psnr.mean(), "pred_psnr": source_psnr(prediction, followup).mean()}

    # -- generation ---------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, batch: dict[str, Any], seeds: Sequence[int]) -> torch.Tensor:
        baseline, pair_ids = batch["baseline"], list(batch["pair_id"])
        if not seeds:
            raise ValueError(f"{self.name}: generate() needs at least one seed")
        latents = self.autoencoder.encode(baseline)
        generators = sample_generators(pair_ids, seeds, self.context.seed)
        total, k = len(generators), len(seeds)
        out = []
        for start in range(0, total, self.params["generate_batch_size"]):
            stop = min(start + self.params["generate_batch_size"], total)
            pair_index = torch.arange(start, stop, device=baseline.device) // k
            chunk_generators = generators[start:stop]
            evolved = self.flow(
                [h.index_select(0, pair_index) for h in latents],
                lambda width: randn_tensor((stop - start, width), generator=chunk_generators,
                                           device=baseline.device, dtype=baseline.dtype),
            )
            out.append(self.autoencoder.decode(evolved))
        return torch.cat(out).clamp(-1, 1).view(len(pair_ids), k, *baseline.shape[1:])
