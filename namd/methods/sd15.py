"""SD1.5 (Rombach et al. 2022), a stochastic row of Table 1: a standard image- and
text-conditioned latent diffusion model with Stable Diffusion 1.5's architecture.

What makes it the baseline rather than NAMD: its VAE is trained without L_align and L_pred
(config `vae: unaligned`), the report is conditioned the way SD conditions on a prompt — the
frozen text encoder's token states, padded to a fixed length, all of them cross-attended (SD1.5:
CLIP ViT-L/14, 77 tokens) — with no soft prompts and no LLM adaptation, and there is no
unconditional pre-training stage. The baseline latent is channel-concatenated as in NAMD (8
input channels), the objective is the same epsilon MSE, sampling the same DDIM.

Paper config: fine-tuned from SD1.5's U-Net (`unet.pretrained`, a hub id or local folder; the
input conv widened with zero weights for the baseline latent, cross-attention key/value resized
when the text width differs from CLIP's 768). Default: the same family, CPU-sized, from scratch,
with the default text model (MiniLM) standing in for CLIP.
"""

from __future__ import annotations

from namd.methods import register
from namd.methods.latent_diffusion import LatentDiffusionMethod
from namd.models.frozen import FrozenReportEncoder
from namd.models.unet import build_unet, widen_conv_in


@register
class StableDiffusion15(LatentDiffusionMethod):
    name = "sd15"
    group = "Stochastic Methods"
    reference = "Rombach et al., CVPR 2022 (Stable Diffusion v1.5 architecture)"

    def build_text_encoder(self):
        return FrozenReportEncoder(self.params["llm"], self.params["max_text_tokens"])

    def report_context(self, reports):
        states, _ = self.text(reports, self.unet.device)
        return states

    def initial_unet(self):
        p, unet = self.params, self.params["unet"]
        latents = p["latent_channels"]
        model = build_unet(
            in_channels=latents, out_channels=latents,
            block_out_channels=tuple(unet["block_out_channels"]), layers_per_block=unet["layers_per_block"],
            num_attention_heads=unet["num_attention_heads"],
            cross_attention_dim=self.text.model.config.get_text_config().hidden_size, pretrained=unet.get("pretrained"),
        )
        return widen_conv_in(model, extra_channels=latents)
