"""Image- and text-conditioned latent diffusion, the family NAMD, its ablation and SD1.5 share.

An epsilon-prediction U-Net (diffusers UNet2DConditionModel) on a frozen VAE's latents: the
baseline latent is channel-concatenated with the noisy follow-up latent (8 input channels) and
the report enters through cross-attention (paper Section 3.3.2, Eq. 10; Appendix B). Every member
starts from the unconditional stage (Eq. 9) on its own VAE's latents, widened to 8 input channels
with zero weights for the baseline latent, so it spends the budget's pretrain_steps there and
paired_steps here (`namd.budget`). Subclasses say how the report becomes the context C.

`ldm.guidance` (a departure, off by default and in configs/paper.yaml): context_dropout replaces a
training pair's C by the null context (zeros, Eq. 9's) with that probability, and scale != 1
samples with classifier-free guidance on C (namd.sampling). `ldm.diffusion_target: residual` (a
departure, off likewise) diffuses the follow-up minus the baseline latent, over its std on the
training pairs, instead of the follow-up latent (Eq. 10's z^(2)); the sampler adds it back to the
baseline. The whole family gets the same.

Saved with the ecosystem's own formats: `unet/` and `scheduler/` load with plain
`UNet2DConditionModel.from_pretrained` / `DDPMScheduler.from_pretrained`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from diffusers import DDPMScheduler

from namd.methods.base import DataSpec, GenerativeMethod, MethodContext
from namd.models.frozen import load_frozen_vae
from namd.models.schedulers import denoising_loss, noise_scheduler
from namd.models.unet import load_unet, widen_conv_in
from namd.models.vae import decode_latents
from namd.sampling import ddim_sample


def guidance_settings(params: dict[str, Any]) -> dict[str, float]:
    """ldm.guidance of a method's params; models saved before the option existed: no dropout, no guidance."""
    return {"context_dropout": 0.0, "scale": 1.0, **params.get("guidance", {})}


def residual_std(params: dict[str, Any]) -> float | None:
    """The scale of a residual model's target; None for the paper's target, the follow-up latent."""
    if params.get("diffusion_target", "followup") != "residual":
        return None
    if "residual_std" not in params:
        raise ValueError("diffusion_target is 'residual' but params hold no residual_std "
                         "(set by prepare() from the training pairs before training)")
    return float(params["residual_std"])


class LatentDiffusionMethod(GenerativeMethod):
    stochastic = True

    def __init__(self, params: dict[str, Any], spec: DataSpec, context: MethodContext, *, unet=None):
        super().__init__(params, spec, context)
        self.text = self.build_text_encoder()
        self.unet = unet if unet is not None else self.initial_unet()
        self.noise_scheduler = noise_scheduler(**params["scheduler"])
        self._decoder: list = []  # the frozen VAE, kept out of this module's weights

    # -- what a subclass decides --------------------------------------------------------------
    def build_text_encoder(self) -> torch.nn.Module:
        raise NotImplementedError

    def report_context(self, reports: Sequence[str]) -> torch.Tensor:
        """C for a batch of reports: (B, tokens, D), fed to cross-attention."""
        raise NotImplementedError

    def context_dim(self) -> int:
        """D of report_context's output: the width the stage-1 U-Net's cross-attention must have."""
        raise NotImplementedError

    def initial_unet(self):
        stage1 = self.context.upstream.get("ldm_unconditional")
        if not stage1:
            raise ValueError(
                f"{self.name}: needs the unconditional stage's U-Net (context.upstream['ldm_unconditional'])"
            )
        unet = load_unet(Path(stage1) / "unet", in_channels=self.params["latent_channels"],
                         cross_attention_dim=self.context_dim())
        return widen_conv_in(unet, extra_channels=self.params["latent_channels"])

    def save_text_encoder(self, out_dir: Path) -> None:
        """Only what training changed; the frozen LLM is reloaded from its own source."""

    def load_text_encoder(self, out_dir: Path) -> None:
        pass

    # -- training ---------------------------------------------------------------------------------
    def prepare(self, train) -> None:
        """A residual model's scale: the std of z_follow - z_base over the training pairs (saved in params)."""
        if self.params.get("diffusion_target", "followup") != "residual":
            return
        residuals = torch.stack([train[i]["followup_latent"] - train[i]["baseline_latent"] for i in range(len(train))])
        self.params["residual_std"] = float(residuals.std())

    def configure_optimizers(self):
        groups = [{"params": [p for p in self.unet.parameters() if p.requires_grad], "lr": self.params["lr"]}]
        text = [p for p in self.text.parameters() if p.requires_grad] if isinstance(self.text, torch.nn.Module) else []
        if text:
            groups.append({"params": text, "lr": self.params["prompt_lr"]})
        return {"diffusion": torch.optim.AdamW(groups, weight_decay=self.params.get("weight_decay", 0.0))}

    def losses(self, batch):
        context = self.report_context(batch["report"])
        dropout = guidance_settings(self.params)["context_dropout"]
        if dropout > 0 and self.training:  # no draw at 0 (the paper's training draws the same numbers as before),
            # none in validation (its loss compares epochs and settings on the pairs' own C)
            keep = torch.rand(context.shape[0], device=context.device) >= dropout
            context = context * keep[:, None, None].to(context.dtype)
        target = batch["followup_latent"]
        scale = residual_std(self.params)
        if scale is not None:
            target = (target - batch["baseline_latent"]) / scale
        loss = denoising_loss(self.unet, self.noise_scheduler, target, context,
                              condition_latents=batch["baseline_latent"])
        return {"loss": loss}

    # -- generation -------------------------------------------------------------------------------
    def decoder(self):
        if not self._decoder:
            self._decoder.append(load_frozen_vae(self.context.upstream.get("vae"),
                                                 latent_channels=self.params["latent_channels"], method=self.name))
        return self._decoder[0].to(self.unet.device)

    def guidance_scale(self) -> float:
        return float(guidance_settings(self.params)["scale"])

    @torch.no_grad()
    def generate(self, batch, seeds):
        context = self.report_context(batch["report"])  # once per batch, shared by all K seeds
        latents = ddim_sample(
            self.unet, self.noise_scheduler.config, batch["baseline_latent"], context, batch["pair_id"], seeds,
            num_inference_steps=self.params["ddim_steps"], eta=self.params["eta"],
            batch_size=self.params["sample_batch_size"], base_seed=self.context.seed, progress=False,
            guidance_scale=self.guidance_scale(), residual_std=residual_std(self.params),
        )
        n, k = latents.shape[:2]
        images = decode_latents(self.decoder(), latents.flatten(0, 1).to(self.unet.device))
        return images.clamp(-1, 1).reshape(n, k, *images.shape[1:])  # the decoder is unbounded

    # -- persistence ------------------------------------------------------------------------------
    def save_pretrained(self, out_dir) -> None:
        out_dir = Path(out_dir)
        self.write_meta(out_dir, upstream=self.context.upstream)
        self.unet.save_pretrained(out_dir / "unet")
        self.noise_scheduler.save_pretrained(out_dir / "scheduler")
        self.save_text_encoder(out_dir)

    @classmethod
    def from_pretrained(cls, out_dir, context: MethodContext) -> "LatentDiffusionMethod":
        out_dir = Path(out_dir)
        meta = cls.read_meta(out_dir)
        upstream = {**meta.get("upstream", {}), **context.upstream}
        context = MethodContext(device=context.device, upstream=upstream, seed=context.seed)
        unet = load_unet(out_dir / "unet", in_channels=2 * meta["params"]["latent_channels"])
        method = cls(meta["params"], DataSpec(**meta["spec"]), context, unet=unet)
        method.noise_scheduler = DDPMScheduler.from_pretrained(out_dir / "scheduler")
        method.load_text_encoder(out_dir)
        return method.to(context.device)
