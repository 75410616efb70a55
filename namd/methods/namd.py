"""NAMD (paper Section 3.3): the conditional stage on the nodule-aligned latents.

C is the LLM context of Section 3.3.1: m sets of learnable soft prompts prepended to the
report's token embeddings, the LLM frozen, the last non-padding token's last hidden state per
set (Eqs. 7-8). The U-Net starts from the unconditional stage (Eq. 9) widened to 8 input
channels with zero weights for the baseline latent, and is trained on Eq. 10 jointly with the
soft prompts (our reading of the paper: the prompts receive gradients through the frozen LLM).

`namd_unaligned` is the same method on the VAE trained without L_align and L_pred (the
ablation, Table 1 last row): only the configuration differs. `namd_no_context` is NAMD's trained
model sampled with Eq. 9's null context instead of C (what the LLM context contributes): it trains
nothing and loads the `namd` model folder (namd.methods.REUSES).
"""

from __future__ import annotations

from pathlib import Path

from namd.methods import REUSES, get_method, register
from namd.methods.latent_diffusion import LatentDiffusionMethod
from namd.models.text_encoder import SoftPromptContextEncoder


@register
class NAMD(LatentDiffusionMethod):
    name = "namd"
    title = "NAMD (Ours)"
    group = "NAMD"
    reference = "Song, Wang, Zhou, Shen: NAMD (arXiv 2603.15932), Sections 3.2-3.3, Appendix B"
    #: the context cross-attention reads: "report" (C, Eqs. 7-8) or "null" (Eq. 9's zeros)
    sample_context = "report"

    def build_text_encoder(self):
        p = self.params
        return SoftPromptContextEncoder.from_pretrained(
            p["llm"], n_sets=p["n_sets"], n_prompt_tokens=p["n_prompt_tokens"], max_length=p["max_length"],
            init_seed=self.context.seed, context_norm=p.get("context_norm", "none"),
        )

    def report_context(self, reports):
        if self.sample_context == "null":
            return self.text.null_context(len(reports))
        return self.text(list(reports))

    def context_dim(self):
        return self.text.context_dim

    def save_text_encoder(self, out_dir):
        self.text.save_soft_prompts(Path(out_dir) / "soft_prompts")

    def load_text_encoder(self, out_dir):
        self.text.load_soft_prompts(Path(out_dir) / "soft_prompts")


@register
class NAMDWithoutAlignment(NAMD):
    name = "namd_unaligned"
    title = "NAMD (w/o L_align)"
    latex_title = r"NAMD (w/o $\mathcal{L}_{\text{align}}$)"
    group = "Ablation"


@register
class NAMDNullContext(NAMD):
    """NAMD's trained U-Net and prompts, sampled with the null context its stage 1 was trained with."""

    name = "namd_no_context"
    title = "NAMD (null context)"
    group = "Ablation"
    sample_context = "null"

    def losses(self, batch):
        raise TypeError(f"{self.name} trains nothing: it samples the trained {REUSES[self.name]!r} model")

    def guidance_scale(self):
        return 1.0  # guidance towards the null context is the null context's own sample

    @classmethod
    def read_meta(cls, out_dir):
        return get_method(REUSES[cls.name]).read_meta(out_dir)
