"""The neutral evaluation classifier of Table 1 (Section 4.1.2): standard timm ViTs, one logit, ensembled.

The paper uses "a pre-trained ViT-based binary classification model ... a standard architecture
without task-specific adaptation" and says no more, so this is our reading of it:

- what it trains on: REAL crops of the training split, both the baseline and the follow-up crop
  of every pair, each labelled with its pair's label (malignant 1 / benign 0). One classifier
  must judge real baselines, real follow-ups and every method's generated follow-ups alike; one
  trained on both time points has seen the appearance of either, and it never sees a generated
  image, so no method is favoured.
- model selection: the epoch with the lowest validation BCE on the validation split's real
  crops (the same two crops per pair), which is what `namd.training.fit` selects on. BCE is a
  proper scoring rule and changes smoothly; validation AUROC on a split with a few dozen
  malignant pairs moves in coarse steps and ties across epochs.
- an ensemble of seeds, not one network: `ensemble_size` members, member i trained with seed
  config seed + i (`member_seed`), each trained and selected as above on the same crops; the
  evaluator's probability is the mean of theirs (`ClassifierEnsemble`). One from-scratch ViT on
  ~200 crops moved the real rows' test AUROC by ~0.05 between seeds and between machines (issue
  12), more than most gaps between rows; rule evaluator_seeds measures what spread remains
  (results/eval/evaluator_seeds.csv). The image-metric stand-ins use member 0's features.
- then frozen: every Table 1 row is `predict_proba` of this one ensemble on that row's test images.

How the settings were chosen, on the validation split only (the test split informed none):
`tools/select_classifier.py` trains a grid of sizes (embed_dim x depth x num_heads) and learning
rates, several seeds each, with the workflow's own member training on the trainval files, and
scores each member and the seeds' ensemble on the validation crops (BCE, AUROC). Size and lr:
the one-standard-error rule on the mean member validation BCE (the smallest model within one SE
of the lowest mean). Epochs: 1.25 x the latest best validation epoch of the chosen setting's
seeds, rounded up to 10. Ensemble size: ceil((s / 0.02)^2), s the members' validation-AUROC seed
SD pooled over the grid, so that the mean of M members has a seed SD of about 0.02. Fixed a
priori, not searched: patch 4 (8 x 8 tokens on a 32-px crop), drop_rate 0.1, weight decay 0.05
and 5% warm-up (timm/DeiT defaults), dihedral augmentation (a nodule has no preferred
orientation), batch 32, plain BCE. The last run's numbers: docs/classifier_selection.csv, quoted
in config.yaml.

Architecture: timm's VisionTransformer with in_chans=1 and num_classes=1, CPU-sized by default.
With `pretrained`, timm loads the named weights and adapts them itself (RGB patch kernel summed
to one channel, position embeddings and patch kernel resampled to the crop and patch size, a
fresh one-unit head). Inputs are crops in [-1, 1]; they are mapped to [0, 1] and normalised with
the model's own data config (timm's convention, so a pretrained ImageNet ViT sees what it was
trained on); for the default model (mean = std = 0.5) this is the identity.

Saved with timm's `save_for_hf` (config.json + model.safetensors), so
`timm.create_model("local-dir:<folder>", pretrained=True)` loads it without this module.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from timm.data import resolve_data_config
from timm.models import save_for_hf
from timm.models.vision_transformer import VisionTransformer
from torch.utils.data import Dataset

from namd.training import TrainableModule, warmup_cosine

#: registered timm ViT whose constructor builds the from-scratch model (every size is overridden)
SCRATCH_ARCHITECTURE = "vit_tiny_patch16_224"
#: key under which the classifier's own settings sit in the saved config.json
CONFIG_KEY = "namd_classifier"


def build_classifier(
    *,
    image_size: int = 32,
    patch_size: int = 4,
    embed_dim: int = 96,
    depth: int = 4,
    num_heads: int = 3,
    pretrained: str | None = None,
    pretrained_file: str | Path | None = None,
    drop_rate: float = 0.1,
) -> VisionTransformer:
    """A timm VisionTransformer for (B, 1, S, S) crops with one malignancy logit.

    `drop_rate` is timm's: dropout on the pooled features before the head.

    `pretrained`: None trains from scratch; otherwise a timm model name (e.g.
    "vit_tiny_patch16_224") whose weights come from `pretrained_file` (a local .safetensors/.pth
    checkpoint of that architecture) or, without a file, from timm's usual source (a hub id such
    as "hf-hub:timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k", read from the local Hugging Face
    cache). The sizes given here are passed to timm as well, so embed_dim, depth and num_heads
    must be the named model's (vit_tiny: 192, 12, 3); image_size and patch_size may differ
    (timm resamples the position embeddings and the patch kernel).
    """
    if image_size % patch_size:
        raise ValueError(f"build_classifier: image_size {image_size} is not a multiple of patch_size {patch_size}")
    sizes = dict(img_size=image_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads)
    common = dict(in_chans=1, num_classes=1, drop_rate=drop_rate, **sizes)
    if pretrained is None:
        if pretrained_file is not None:
            raise ValueError(f"build_classifier: pretrained_file={pretrained_file} given without a model name "
                             "in `pretrained`")
        overlay = dict(mean=(0.5,), std=(0.5,), tag=None, license=None)
        return timm.create_model(SCRATCH_ARCHITECTURE, pretrained=False, pretrained_cfg_overlay=overlay, **common)
    overlay = None
    if pretrained_file is not None:
        pretrained_file = Path(pretrained_file)
        if not pretrained_file.is_file():
            raise FileNotFoundError(f"build_classifier: pretrained checkpoint {pretrained_file} (for {pretrained!r}) "
                                    "does not exist")
        overlay = dict(file=str(pretrained_file))
    try:
        model = timm.create_model(pretrained, pretrained=True, pretrained_cfg_overlay=overlay, **common)
    except RuntimeError as err:
        if "size mismatch" not in str(err):
            raise
        raise ValueError(
            f"build_classifier: weights of {pretrained!r} ({pretrained_file or 'timm source'}) do not fit "
            f"the requested sizes {sizes}; set embed_dim, depth and num_heads to the pretrained model's. "
            f"timm said: {str(err)[:400]}"
        ) from err
    if not isinstance(model, VisionTransformer):
        raise ValueError(f"build_classifier: {pretrained!r} is a {type(model).__name__}, not a timm VisionTransformer")
    return model


class ImageLabelDataset(Dataset):
    """Crops and labels as the trainer's batches: {"image": (1, S, S) float, "label": float}."""

    def __init__(self, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor):
        images = torch.as_tensor(np.asarray(images), dtype=torch.float32)
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.float32)
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"ImageLabelDataset: images must be (N, 1, S, S), got {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"ImageLabelDataset: labels must be ({images.shape[0]},), got {tuple(labels.shape)}")
        if not torch.isin(labels, torch.tensor([0.0, 1.0])).all():
            raise ValueError(f"ImageLabelDataset: labels must be 0 or 1, got {sorted(set(labels.tolist()))}")
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[index], "label": self.labels[index]}


def real_pairs_dataset(baseline: np.ndarray, followup: np.ndarray, labels: np.ndarray) -> ImageLabelDataset:
    """The classifier's training (or validation) set: both real crops of each pair, with the pair's label."""
    baseline, followup, labels = np.asarray(baseline), np.asarray(followup), np.asarray(labels)
    if baseline.shape != followup.shape:
        raise ValueError(f"real_pairs_dataset: baseline {baseline.shape} and followup {followup.shape} differ in shape")
    return ImageLabelDataset(np.concatenate([baseline, followup]), np.concatenate([labels, labels]))


def balanced_pos_weight(labels: np.ndarray) -> float:
    """n_benign / n_malignant: the pos_weight that gives both classes equal total weight in the BCE."""
    labels = np.asarray(labels)
    positives = int((labels == 1).sum())
    if positives == 0:
        raise ValueError("balanced_pos_weight: the labels hold no malignant (1) case")
    return float((labels == 0).sum()) / positives


def dihedral_augment(images: torch.Tensor) -> torch.Tensor:
    """Each crop turned by a random multiple of 90 degrees and randomly mirrored (exact on the pixel grid).

    Draws from torch's global generator, which the trainer saves and restores, so a resumed run
    augments exactly as an uninterrupted one.
    """
    turns = torch.randint(4, (images.shape[0],))
    flips = torch.rand(images.shape[0]) < 0.5
    out = torch.empty_like(images)
    for i in range(images.shape[0]):
        x = torch.rot90(images[i], int(turns[i]), dims=(-2, -1))
        out[i] = torch.flip(x, dims=(-1,)) if flips[i] else x
    return out


class MalignancyClassifier(TrainableModule):
    """Binary malignancy ViT trained with `namd.training.fit` on ImageLabelDataset batches.

    Loss: BCE with logits. `pos_weight` scales the malignant cases' term (None: plain BCE,
    calibrated to the training prevalence; `balanced_pos_weight(train_labels)` equalises the
    classes). AUROC/AUPRC are rank metrics and barely move with it; the probabilities of
    Figure 3 (error |L - p|) do, so the default is plain BCE. AdamW with linear warm-up then
    cosine decay; random rot90/flip augmentation in training only.
    """

    display_name = "evaluation classifier"

    def __init__(
        self,
        model: VisionTransformer,
        *,
        lr: float = 3e-4,
        weight_decay: float = 0.05,
        warmup_fraction: float = 0.05,
        pos_weight: float | None = None,
        augment: bool = True,
    ):
        super().__init__()
        if pos_weight is not None and not pos_weight > 0:
            raise ValueError(f"MalignancyClassifier: pos_weight must be positive or None, got {pos_weight}")
        self.model = model
        self.settings = dict(lr=lr, weight_decay=weight_decay, warmup_fraction=warmup_fraction,
                             pos_weight=pos_weight, augment=augment)
        config = resolve_data_config({}, model=model)
        self.image_size = int(model.patch_embed.img_size[0])
        self.register_buffer("mean", torch.tensor(float(np.mean(config["mean"]))), persistent=False)
        self.register_buffer("std", torch.tensor(float(np.mean(config["std"]))), persistent=False)
        self.register_buffer("pos_weight", torch.tensor(pos_weight if pos_weight is not None else 1.0),
                             persistent=False)

    # -- model ---------------------------------------------------------------------------------
    def _tokens(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(((images + 1) / 2 - self.mean) / self.std)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, D) pooled pre-logit features of crops in [-1, 1] (timm's forward_head(pre_logits=True))."""
        return self.model.forward_head(self._tokens(images), pre_logits=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B,) malignancy logits."""
        return self.model.forward_head(self._tokens(images)).squeeze(1)

    # -- training ------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            # timm's convention: no weight decay on biases, norms, tokens and position embeddings
            (no_decay if p.ndim <= 1 or name in self.model.no_weight_decay() else decay).append(p)
        groups = [{"params": decay, "weight_decay": self.settings["weight_decay"]},
                  {"params": no_decay, "weight_decay": 0.0}]
        return {"main": torch.optim.AdamW(groups, lr=self.settings["lr"])}

    def configure_schedulers(self, optimizers: dict[str, torch.optim.Optimizer], total_steps: int) -> dict:
        warmup = max(1, int(self.settings["warmup_fraction"] * total_steps))
        return {"main": warmup_cosine(optimizers["main"], warmup_steps=warmup, total_steps=total_steps,
                                      warmup_offset=1)}

    def losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        images, labels = batch["image"], batch["label"].float()
        if self.training and self.settings["augment"]:
            images = dihedral_augment(images)
        logits = self(images)
        loss = F.binary_cross_entropy_with_logits(logits, labels, pos_weight=self.pos_weight)
        return {"loss": loss}

    # -- inference -----------------------------------------------------------------------------
    def _batches(self, images: np.ndarray | torch.Tensor, batch_size: int, caller: str):
        images = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
        expected = (1, self.image_size, self.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"MalignancyClassifier.{caller}: images must be (N, {', '.join(map(str, expected))}), "
                f"got {tuple(images.shape)}"
            )
        if not torch.isfinite(images).all():
            raise ValueError(f"MalignancyClassifier.{caller}: images hold NaN or infinite values")
        device = next(self.parameters()).device
        for start in range(0, images.shape[0], batch_size):
            yield images[start:start + batch_size].to(device=device, dtype=torch.float32)

    @torch.no_grad()
    def _run(self, fn, images, batch_size: int, caller: str) -> np.ndarray:
        was_training = self.training
        self.eval()
        try:
            out = [fn(batch).double().cpu() for batch in self._batches(images, batch_size, caller)]
        finally:
            self.train(was_training)
        return torch.cat(out).numpy() if out else np.empty((0,))

    def predict_proba(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """(N,) malignancy probabilities of (N, 1, S, S) crops in [-1, 1]; eval mode, no augmentation."""
        return self._run(lambda x: torch.sigmoid(self(x)), images, batch_size, "predict_proba")

    def features(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """(N, D) pre-logit features of (N, 1, S, S) crops in [-1, 1] (for the FID/LPIPS stand-ins)."""
        out = self._run(self.embed, images, batch_size, "features")
        return out.reshape(-1, self.model.num_features)

    # -- persistence ---------------------------------------------------------------------------
    def save_pretrained(self, out_dir: str | Path) -> None:
        """timm's own export: config.json (architecture, model_args, data config, our settings) + model.safetensors."""
        model_config = {CONFIG_KEY: {**self.settings, "drop_rate": float(self.model.head_drop.p)}}
        save_for_hf(self.model, str(out_dir), model_config=model_config, safe_serialization=True)

    @classmethod
    def from_pretrained(cls, out_dir: str | Path, device: torch.device | str = "cpu") -> MalignancyClassifier:
        out_dir = Path(out_dir)
        config_path = out_dir / "config.json"
        if not config_path.is_file() or not (out_dir / "model.safetensors").is_file():
            raise FileNotFoundError(
                f"MalignancyClassifier.from_pretrained: {out_dir} lacks config.json or model.safetensors "
                "(was the classifier training rule run?)"
            )
        config = json.loads(config_path.read_text())
        if CONFIG_KEY not in config:
            raise ValueError(
                f"MalignancyClassifier.from_pretrained: {config_path} has no {CONFIG_KEY!r} entry; "
                "not a NAMD classifier"
            )
        settings = dict(config[CONFIG_KEY])
        drop_rate = settings.pop("drop_rate")
        model = timm.create_model(f"local-dir:{out_dir}", pretrained=True, drop_rate=drop_rate)
        return cls(model, **settings).to(device).eval()


#: the index file that marks a folder as an ensemble of classifiers (one subfolder per member)
ENSEMBLE_INDEX = "ensemble.json"


def member_seed(seed: int, index: int) -> int:
    """Training seed of ensemble member `index`: the config seed + index (member 0 trains with the config seed)."""
    if index < 0:
        raise ValueError(f"member_seed: member index must be >= 0, got {index}")
    return int(seed) + int(index)


def write_ensemble_index(out_dir: str | Path, member_dirs: Sequence[str], seeds: Sequence[int]) -> None:
    """ensemble.json: the member subfolders (relative to `out_dir`) and their training seeds."""
    if len(member_dirs) != len(seeds) or not member_dirs:
        raise ValueError(f"write_ensemble_index: {len(member_dirs)} member folder(s) but {len(seeds)} seed(s)")
    index = {"members": [{"dir": str(d), "seed": int(s)} for d, s in zip(member_dirs, seeds)],
             "probability": "mean of the members' probabilities", "features_from": str(member_dirs[0])}
    (Path(out_dir) / ENSEMBLE_INDEX).write_text(json.dumps(index, indent=2) + "\n")


class ClassifierEnsemble(torch.nn.Module):
    """M MalignancyClassifiers trained alike but for their seed; the probability is the members' mean.

    One from-scratch ViT on a few hundred crops is a noisy instrument (its test AUROC moves by
    about 0.05 with the seed); averaging M members' probabilities shrinks that spread roughly by
    sqrt(M) without choosing anything. Features (the DFD-ViT / FD-ViT stand-ins) are member 0's:
    a mean of features from independently trained networks would mix unrelated coordinate systems.
    """

    def __init__(self, members: Sequence[MalignancyClassifier], seeds: Sequence[int]):
        super().__init__()
        if not members or len(members) != len(seeds):
            raise ValueError(f"ClassifierEnsemble: {len(members)} member(s) but {len(seeds)} seed(s)")
        sizes = {m.image_size for m in members}
        if len(sizes) != 1:
            raise ValueError(f"ClassifierEnsemble: members take different image sizes {sorted(sizes)}")
        self.members = torch.nn.ModuleList(members)
        self.seeds = [int(s) for s in seeds]
        self.image_size = sizes.pop()

    def member_probabilities(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """(N, M): each member's malignancy probability."""
        return np.stack([m.predict_proba(images, batch_size) for m in self.members], axis=1)

    def predict_proba(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """(N,) mean of the members' probabilities."""
        return self.member_probabilities(images, batch_size).mean(axis=1)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Member 0's pooled pre-logit features."""
        return self.members[0].embed(images)

    def features(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """Member 0's (N, D) pre-logit features."""
        return self.members[0].features(images, batch_size)

    def save_pretrained(self, out_dir: str | Path) -> None:
        """member_<i>/ (each a timm `save_for_hf` folder) and ensemble.json."""
        out_dir = Path(out_dir)
        names = [f"member_{i}" for i in range(len(self.members))]
        for name, member in zip(names, self.members):
            member.save_pretrained(out_dir / name)
        write_ensemble_index(out_dir, names, self.seeds)

    @classmethod
    def from_pretrained(cls, out_dir: str | Path, device: torch.device | str = "cpu") -> ClassifierEnsemble:
        index_path = Path(out_dir) / ENSEMBLE_INDEX
        if not index_path.is_file():
            raise FileNotFoundError(f"ClassifierEnsemble.from_pretrained: {index_path} does not exist "
                                    "(was the classifier training rule run?)")
        try:
            entries = json.loads(index_path.read_text())["members"]
            dirs, seeds = [e["dir"] for e in entries], [int(e["seed"]) for e in entries]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{index_path}: not a classifier ensemble index (needs members: [{{dir, seed}}]): "
                             f"{err!r}") from err
        members = [MalignancyClassifier.from_pretrained(Path(out_dir) / d, device=device) for d in dirs]
        return cls(members, seeds).to(device).eval()


def load_classifier(folder: str | Path,
                    device: torch.device | str = "cpu") -> MalignancyClassifier | ClassifierEnsemble:
    """The evaluation classifier saved in `folder`: an ensemble (ensemble.json) or a single timm folder.

    Both answer predict_proba, features, embed, image_size and save_pretrained alike; a single
    folder is what pipelines saved before the ensemble hold.
    """
    if (Path(folder) / ENSEMBLE_INDEX).is_file():
        return ClassifierEnsemble.from_pretrained(folder, device=device)
    return MalignancyClassifier.from_pretrained(folder, device=device)
