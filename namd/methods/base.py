"""What every row of Table 1 that generates a follow-up is: a `GenerativeMethod`.

A method says how it is built, what its training losses are and how it samples follow-ups for a
batch of pairs. The one trainer (`namd.training.fit`) trains them all and the one generation
loop (`namd.generate`) samples them all, so adding a method is one module and one config entry.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
from safetensors.torch import load_file, save_file

from namd.training import TrainableModule


@dataclass(frozen=True)
class DataSpec:
    """Shapes of what a batch carries, so a method can size its layers."""

    image_size: int
    channels: int = 1
    n_ehr: int = 13
    n_nodule_features: int = 0


@dataclass
class MethodContext:
    """What a method may need from earlier rules: trained upstream models and the device."""

    device: str = "cpu"
    upstream: dict[str, str] = field(default_factory=dict)
    seed: int = 23


class GenerativeMethod(TrainableModule):
    """Base of every generative row of Table 1.

    Batches are dicts: "baseline" and "followup" (B, 1, S, S) in [-1, 1], "label" (B,),
    "ehr" (B, n_ehr) numeric record, "features" (B, T) normalised nodule features, "report"
    (list of B strings), "pair_id" (list of B strings), and, for methods that name a VAE in
    their params, "baseline_latent" and "followup_latent" from that VAE's cached latents.

    `generate(batch, seeds)` returns (B, K, 1, S, S) in [-1, 1]. A stochastic method must make
    sample (pair_id, seed) from noise drawn by `namd.sampling.sample_noise`, so that it does not
    depend on the batch it was made in; a deterministic one ignores the seeds (K = 1).
    """

    name: ClassVar[str] = ""
    #: the row's title in Table 1, the progression table and the figures (every registered method sets it)
    title: ClassVar[str]
    #: the title in LaTeX, where plain text would not do (None: `title`, escaped)
    latex_title: ClassVar[str | None] = None
    stochastic: ClassVar[bool] = False
    #: Table 1 row group
    group: ClassVar[str] = "Stochastic Methods"
    #: source the implementation follows (shown in the model card)
    reference: ClassVar[str] = ""

    def __init__(self, params: dict[str, Any], spec: DataSpec, context: MethodContext):
        super().__init__()
        self.params = dict(params)
        self.spec = spec
        self.context = context
        self.display_name = self.name

    def prepare(self, train: torch.utils.data.Dataset) -> None:
        """Fix what the method derives from its training pairs, once, before the first step (default: nothing)."""

    @torch.no_grad()
    def generate(self, batch: dict[str, Any], seeds: Sequence[int]) -> torch.Tensor:
        """Follow-ups of the batch's pairs, one per seed.

        Args:
            batch: B pairs as the class docstring lists them (a DataLoader batch of
                namd.data.dataset.PairDataset, whose Cohort holds the VAE's latents where the method has one).
            seeds: the K sample seeds; sample (pair_id, seed) is the same in any batch. A
                deterministic method (stochastic = False) is given [0].

        Returns:
            torch.Tensor: (B, K, 1, S, S) in [-1, 1].

        Example:
            ```py
            >>> from namd.methods import get_method
            >>> from namd.methods.base import MethodContext
            >>> method = get_method("namd").from_pretrained("results/models/namd", MethodContext(device="cpu"))
            >>> method.generate(batch, seeds=range(20)).shape  # (B, 20, 1, S, S)
            ```
            namd.generate.generate_followups runs this over a whole split and saves the samples.
        """
        raise NotImplementedError

    # -- persistence: weights as safetensors beside a json of what built them ------------------
    def write_meta(self, out_dir: Path, **extra) -> None:
        """method.json: which method, its params and data spec (and what else a subclass needs)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        meta = {"method": self.name, "params": self.params, "spec": asdict(self.spec), **extra}
        (out_dir / "method.json").write_text(json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def read_meta(cls, out_dir: str | Path) -> dict:
        """method.json of a saved method: {"method", "params", "spec", ...} as write_meta wrote it.

        On a method class the file must hold that method; on GenerativeMethod itself, any method
        (what namd.pipeline.NAMDPipeline.from_workflow reads before it knows which).

        Raises:
            FileNotFoundError: the folder holds no method.json.
            ValueError: method.json is not valid JSON, names no method, or names another method;
                the message names the file.
        """
        meta_path = Path(out_dir) / "method.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path}: no such file; no saved method here (was the training rule run?)")
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{meta_path}: not valid JSON ({err})") from err
        if not isinstance(meta, dict) or not isinstance(meta.get("method"), str):
            raise ValueError(f"{meta_path}: names no method (a method.json holds method, params and spec)")
        if cls.name and meta["method"] != cls.name:
            raise ValueError(f"{meta_path}: holds method {meta['method']!r}, not {cls.name!r}")
        return meta

    def save_pretrained(self, out_dir: str | Path) -> None:
        out_dir = Path(out_dir)
        self.write_meta(out_dir)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, out_dir / "method.safetensors")

    @classmethod
    def from_pretrained(cls, out_dir: str | Path, context: MethodContext) -> "GenerativeMethod":
        out_dir = Path(out_dir)
        meta = cls.read_meta(out_dir)
        method = cls(meta["params"], DataSpec(**meta["spec"]), context)
        state = load_file(out_dir / "method.safetensors")
        missing, unexpected = method.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{out_dir / 'method.safetensors'}: weights do not match method {cls.name!r} "
                f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
            )
        return method.to(context.device)
