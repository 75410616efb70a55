"""SD1.5 (Rombach et al. 2022), a stochastic row of Table 1: a standard image- and
text-conditioned latent diffusion model with Stable Diffusion 1.5's architecture.

What makes it the baseline rather than NAMD: its VAE is trained without L_align and L_pred
(config `vae: unaligned`), the report is conditioned the way SD conditions on a prompt — the
frozen text encoder's token states, padded to a fixed length, all of them cross-attended (SD1.5:
CLIP ViT-L/14, 77 tokens) — with no soft prompts and no LLM adaptation. The baseline latent is
channel-concatenated as in NAMD (8 input channels), the objective is the same epsilon MSE,
sampling the same DDIM.

Budget (`namd.budget`): as NAMD, it starts from the unconditional stage (Eq. 9) trained on its own
VAE's latents (`ldm_unconditional_unaligned`, the checkpoint the ablation also starts from), whose
cross-attention has the text model's width (the report tokens' D, 384 for MiniLM), widened with
zero weights for the baseline latent; so NAMD and SD1.5 train their U-Net for the same steps.
Paper config: stage 1 itself starts from SD1.5's U-Net (`ldm.unet.pretrained`, cross-attention
key/value resized when the text width differs from CLIP's 768). Default: CPU-sized, from scratch,
with the default text model (MiniLM) standing in for CLIP.
"""

from __future__ import annotations

from namd.methods import register
from namd.methods.latent_diffusion import LatentDiffusionMethod
from namd.models.frozen import FrozenReportEncoder


@register
class StableDiffusion15(LatentDiffusionMethod):
    name = "sd15"
    title = "SD1.5"
    group = "Stochastic Methods"
    reference = "Rombach et al., CVPR 2022 (Stable Diffusion v1.5 architecture)"

    def build_text_encoder(self):
        return FrozenReportEncoder(self.params["llm"], self.params["max_text_tokens"])

    def report_context(self, reports):
        states, _ = self.text(reports, self.unet.device)
        return states

    def context_dim(self):
        return self.text.model.config.get_text_config().hidden_size
