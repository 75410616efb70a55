"""LPIPS and FID of generated follow-ups against the real ones (Table 1, image-quality columns).

The real metrics are lpips' AlexNet LPIPS and pytorch-fid's Inception FID, whose pretrained
weights are read from torch hub's cache ($TORCH_HOME/hub/checkpoints); nothing is downloaded.
When a cache file is absent, a stand-in computed on the project's evaluation classifier is
returned under its own name (never "LPIPS" or "FID") so the table cannot pass it off as the
paper's metric. The evaluator is an ensemble; the stand-ins use member 0's features
(`ClassifierEnsemble.embed`), since features of independently trained members live in unrelated
coordinates and their mean would describe no network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import lpips
import numpy as np
import pandas as pd
import torch
from pytorch_fid.fid_score import calculate_frechet_distance
from pytorch_fid.inception import FID_WEIGHTS_URL, InceptionV3

from namd.evaluation.metrics import FID_NAME, LPIPS_NAME, EvaluationInputError, format_ids, summarise
from namd.hub_weights import (
    PerceptualWeightsMissingError,
    hub_checkpoint,
    load_lpips,
    lpips_weights_path,
    require_cached_weights,
)

IMAGE_METRIC_KEYS = ("lpips", "fid")
INCEPTION_POOL_DIMS = 2048
LPIPS_DESCRIPTION = ("LPIPS (Zhang et al. 2018, lpips 0.1.4, AlexNet v0.1), "
                     "mean over pairs of generated vs real follow-up")

#: what a missing-weights error suggests instead of the real metric
STAND_IN_HINT = "let the evaluation compute the labelled stand-in"

FeatureExtractor = Callable[[torch.Tensor], torch.Tensor]


def fid_weights_path() -> Path:
    return hub_checkpoint(FID_WEIGHTS_URL)


def perceptual_weights_available() -> dict[str, bool]:
    """Which real metrics can run offline: looks at the cache files only, never at the network."""
    return {"lpips": lpips_weights_path().is_file(), "fid": fid_weights_path().is_file()}


def fid_metric_name(dims: int = INCEPTION_POOL_DIMS) -> str:
    """FID proper is on the 2048-d pool3 features; other pytorch-fid blocks give values not comparable to it."""
    if dims not in InceptionV3.BLOCK_INDEX_BY_DIM:
        raise EvaluationInputError(f"fid dims must be one of {sorted(InceptionV3.BLOCK_INDEX_BY_DIM)}, got {dims}")
    return FID_NAME if dims == INCEPTION_POOL_DIMS else f"{FID_NAME}-{dims}d"


def fid_description(dims: int = INCEPTION_POOL_DIMS) -> str:
    return (
        f"{fid_metric_name(dims)}: Fréchet distance (pytorch-fid 0.3.0) of InceptionV3 {dims}-d features "
        "between generated and real follow-ups"
    )


def load_inception(dims: int = INCEPTION_POOL_DIMS, device: torch.device | str = "cpu") -> InceptionV3:
    fid_metric_name(dims)
    require_cached_weights("fid", FID_WEIGHTS_URL, STAND_IN_HINT)
    return InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[dims]]).to(device).eval()


def grey_to_rgb(images: torch.Tensor) -> torch.Tensor:
    """Both networks were trained on RGB; a grey CT slice is the same value in all three channels."""
    return images.expand(-1, 3, -1, -1)


def _batches(images: np.ndarray, batch_size: int, device: torch.device | str):
    for start in range(0, len(images), batch_size):
        yield torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)


@torch.no_grad()
def lpips_distances(net: lpips.LPIPS, generated: np.ndarray, real: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """LPIPS per pair; images (N, 1, S, S) in [-1, 1], the range lpips expects."""
    device = next(net.parameters()).device
    distances = [
        net(grey_to_rgb(a), grey_to_rgb(b)).flatten().cpu()
        for a, b in zip(_batches(generated, batch_size, device), _batches(real, batch_size, device))
    ]
    return torch.cat(distances).numpy().astype(np.float64)


@torch.no_grad()
def inception_features(model: InceptionV3, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Activations of the loaded block (pool3 for FID), spatially averaged as pytorch-fid does.

    Images (N, 1, S, S) in [-1, 1] go to [0, 1]; InceptionV3 resizes them to 299 x 299.
    """
    device = next(model.parameters()).device
    features = [
        torch.nn.functional.adaptive_avg_pool2d(model(grey_to_rgb((batch + 1) / 2).clamp(0, 1))[0], 1).flatten(1).cpu()
        for batch in _batches(images, batch_size, device)
    ]
    return torch.cat(features).numpy().astype(np.float64)


@torch.no_grad()
def extractor_features(extractor: FeatureExtractor, images: np.ndarray, batch_size: int = 32,
                       device="cpu") -> np.ndarray:
    """(N, D) features of the caller's extractor, which takes (B, 1, S, S) in [-1, 1]."""
    features = []
    for batch in _batches(images, batch_size, device):
        out = extractor(batch)
        if out.ndim != 2 or out.shape[0] != batch.shape[0]:
            raise EvaluationInputError(
                f"feature extractor must return (batch, features), got {tuple(out.shape)} "
                f"for a batch of {batch.shape[0]}"
            )
        features.append(out.detach().cpu().to(torch.float64))
    return torch.cat(features).numpy()


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """pytorch-fid's Fréchet distance between Gaussians fitted to two feature sets."""
    stats = [(f.mean(axis=0), np.cov(f, rowvar=False)) for f in (features_a, features_b)]
    return float(calculate_frechet_distance(stats[0][0], stats[0][1], stats[1][0], stats[1][1]))


def unit_feature_distance(features_a: np.ndarray, features_b: np.ndarray) -> np.ndarray:
    """Per pair squared distance of L2-normalised features, LPIPS' recipe without its learned layer weights."""

    def unit(f: np.ndarray) -> np.ndarray:
        return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-10)

    return ((unit(features_a) - unit(features_b)) ** 2).sum(axis=1)


@dataclass(frozen=True)
class ImageMetricResult:
    """One image-quality column of one method: per-seed values under the name of what was computed."""

    key: str
    name: str
    stand_in: bool
    description: str
    per_seed: pd.DataFrame

    @property
    def mean(self) -> float:
        return float(summarise(self.per_seed, (self.key,)).loc[self.key, "mean"])

    @property
    def std(self) -> float:
        """NaN for a deterministic method (one seed)."""
        return float(summarise(self.per_seed, (self.key,)).loc[self.key, "std"])


def _validate_images(
    method: str,
    generated: np.ndarray,
    generated_pair_ids: Sequence,
    seeds: Sequence[int],
    real: np.ndarray,
    real_pair_ids: Sequence,
) -> np.ndarray:
    """Shapes, range and pair coverage; returns real images reordered to the generated pairs."""
    generated_pair_ids = [str(p) for p in generated_pair_ids]
    real_pair_ids = [str(p) for p in real_pair_ids]
    if generated.ndim != 5 or generated.shape[2] != 1:
        raise EvaluationInputError(
            f"method {method!r}: generated images must be (N, K, 1, S, S), got {generated.shape}"
        )
    n, k = generated.shape[:2]
    if real.ndim != 4 or real.shape[1:] != generated.shape[2:]:
        raise EvaluationInputError(
            f"method {method!r}: real follow-ups {real.shape} do not match generated images {generated.shape}"
        )
    if len(generated_pair_ids) != n or len(set(generated_pair_ids)) != n:
        raise EvaluationInputError(f"method {method!r}: need {n} distinct pair_ids for {n} generated pairs")
    if len(seeds) != k or len(set(seeds)) != k:
        raise EvaluationInputError(f"method {method!r}: need {k} distinct seeds for K = {k} samples, got {list(seeds)}")
    if len(real_pair_ids) != real.shape[0]:
        raise EvaluationInputError(f"method {method!r}: {len(real_pair_ids)} real pair_ids for {real.shape[0]} images")
    for what, images in (("generated", generated), ("real", real)):
        if not np.isfinite(images).all():
            raise EvaluationInputError(f"method {method!r}: {what} images contain NaN or infinite values")
        if images.min() < -1.001 or images.max() > 1.001:
            raise EvaluationInputError(
                f"method {method!r}: {what} images span [{images.min():.3f}, {images.max():.3f}], expected [-1, 1]"
            )
    position = {p: i for i, p in enumerate(real_pair_ids)}
    without_real = [p for p in generated_pair_ids if p not in position]
    if without_real:
        raise EvaluationInputError(f"method {method!r}: no real follow-up for pair_id(s) {format_ids(without_real)}")
    return real[[position[p] for p in generated_pair_ids]]


def image_quality(
    method: str,
    generated: np.ndarray,
    generated_pair_ids: Sequence,
    seeds: Sequence[int],
    real: np.ndarray,
    real_pair_ids: Sequence,
    *,
    feature_extractor: FeatureExtractor | None = None,
    extractor_name: str = "ViT",
    allow_stand_in: bool = True,
    fid_dims: int = INCEPTION_POOL_DIMS,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
) -> dict[str, ImageMetricResult]:
    """LPIPS and FID per seed for one method; keys "lpips" and "fid".

    Per seed k: LPIPS is the mean over pairs of LPIPS(generated[:, k], real); FID compares the N
    images of seed k with the N real follow-ups. Without cached weights (and allow_stand_in) the
    column is a stand-in on `feature_extractor`: DFD-<name> (mean squared distance of unit-normalised
    features per pair) for LPIPS and FD-<name> (Fréchet distance of the features) for FID.
    fid_dims other than 2048 (a shallower Inception block, much cheaper) is named FID-<dims>d.
    Cost: pytorch-fid's scipy sqrtm of a 2048 x 2048 matrix takes minutes on 2 CPU cores, once per seed.
    """
    fid_metric_name(fid_dims)
    generated = np.asarray(generated, dtype=np.float32)
    real = _validate_images(method, generated, generated_pair_ids, seeds, np.asarray(real, dtype=np.float32),
                            real_pair_ids)
    available = perceptual_weights_available()
    needs_stand_in = [key for key in IMAGE_METRIC_KEYS if not available[key]]
    if needs_stand_in and (not allow_stand_in or feature_extractor is None):
        paths = {"lpips": lpips_weights_path(), "fid": fid_weights_path()}
        reason = "stand-ins are disabled" if not allow_stand_in else "no feature_extractor was given for the stand-in"
        raise PerceptualWeightsMissingError(
            f"method {method!r}: weights missing for {', '.join(f'{k} ({paths[k]})' for k in needs_stand_in)} "
            f"and {reason}"
        )
    per_sample = [generated[:, index] for index in range(len(seeds))]

    def result(key: str, name: str, stand_in: bool, description: str, values: list[float]) -> ImageMetricResult:
        table = pd.DataFrame({"seed": [int(s) for s in seeds], key: values})
        return ImageMetricResult(key=key, name=name, stand_in=stand_in, description=description, per_seed=table)

    extractor_real, extractor_generated = None, []
    if needs_stand_in:
        extractor_real = extractor_features(feature_extractor, real, batch_size, device)
        extractor_generated = [extractor_features(feature_extractor, g, batch_size, device) for g in per_sample]

    results = {}
    if available["lpips"]:
        net = load_lpips(device, instead=STAND_IN_HINT)
        values = [float(lpips_distances(net, g, real, batch_size).mean()) for g in per_sample]
        results["lpips"] = result("lpips", LPIPS_NAME, False, LPIPS_DESCRIPTION, values)
    else:
        values = [float(unit_feature_distance(f, extractor_real).mean()) for f in extractor_generated]
        results["lpips"] = result(
            "lpips",
            f"DFD-{extractor_name}",
            True,
            f"stand-in for LPIPS (AlexNet weights absent): mean over pairs of the squared distance between "
            f"L2-normalised {extractor_name} features of generated and real follow-up; not comparable to LPIPS",
            values,
        )
    if available["fid"]:
        model = load_inception(fid_dims, device)
        real_features = inception_features(model, real, batch_size)
        values = [frechet_distance(inception_features(model, g, batch_size), real_features) for g in per_sample]
        stand_in = fid_dims != INCEPTION_POOL_DIMS
        results["fid"] = result("fid", fid_metric_name(fid_dims), stand_in, fid_description(fid_dims), values)
    else:
        values = [frechet_distance(f, extractor_real) for f in extractor_generated]
        results["fid"] = result(
            "fid",
            f"FD-{extractor_name}",
            True,
            f"stand-in for FID (Inception weights absent): Fréchet distance (pytorch-fid) between "
            f"{extractor_name} features of generated and real follow-ups; not comparable to FID",
            values,
        )
    return results
