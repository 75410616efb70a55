"""Frozen pretrained parts that methods use but never train or save: a report encoder and the
upstream VAE's decoder. Kept out of a method's parameters, so checkpoints hold only what trains."""

from __future__ import annotations

from typing import Sequence

import torch
from transformers import AutoConfig

from namd.models.text_encoder import load_text_model
from namd.models.vae import NoduleAlignedVAE
from namd.sources import resolve_llm_source


def llm_context_dim(llm: str) -> int:
    """D of a text model's hidden states, read from its config alone (no weights loaded)."""
    source, offline = resolve_llm_source(llm)
    config = AutoConfig.from_pretrained(source, local_files_only=offline)
    return int(config.get_text_config().hidden_size)


class FrozenReportEncoder:
    """Token states of a frozen text model, padded to a fixed length so a sample's context does not
    depend on the other reports in its batch (as SD pads CLIP to 77 tokens, Flux T5 to 512).

    Padding goes on the right whatever the tokenizer's default (Gemma's is the left): a decoder
    numbers positions from the first token, so left padding would move a report's positions by
    its pad count, and a pad query before any real token would attend to nothing.
    """

    def __init__(self, name_or_path: str, max_length: int):
        self.tokenizer, self.model = load_text_model(name_or_path)
        self.tokenizer.padding_side = "right"
        if self.tokenizer.pad_token is None:  # decoder-only LLMs: pad with EOS (masked where it matters)
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.requires_grad_(False)
        self.max_length = max_length

    @torch.no_grad()
    def __call__(self, reports: Sequence[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, max_length, D) token states and (B, D) masked-mean pooled vectors."""
        if isinstance(reports, str) or len(reports) == 0:
            raise TypeError("reports must be a non-empty list of strings (one report per sample)")
        tokens = self.tokenizer(list(reports), padding="max_length", truncation=True, max_length=self.max_length,
                                return_tensors="pt").to(device)
        states = self.model.to(device)(**tokens).last_hidden_state.float()
        mask = tokens["attention_mask"][..., None].float()
        return states, (states * mask).sum(1) / mask.sum(1).clamp_min(1)


def load_frozen_vae(path: str | None, *, latent_channels: int, method: str):
    """The upstream VAE for decoding generated latents, checked against the method's latent size."""
    if not path:
        raise ValueError(f"{method}: generation needs the trained VAE, but context.upstream['vae'] is not set")
    vae = NoduleAlignedVAE.from_pretrained(path).vae.requires_grad_(False).eval()
    if vae.config.latent_channels != latent_channels:
        raise ValueError(f"{method}: the VAE at {path} has latent_channels={vae.config.latent_channels}, "
                         f"but the method was built for latent_channels={latent_channels}")
    return vae
