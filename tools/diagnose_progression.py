"""Where is NAMD's growth signal lost? Five measurements on a finished run's trained models (issue 13).

    .venv/bin/python tools/diagnose_progression.py [--results results] [--config CONFIG ...]
        [--split test|val] [--pairs N] [--k 4] [--steps N] [--out DIR] [--device auto]

Reads the run's trained NAMD (results/models/namd, loaded as `namd predict` loads it:
NAMDPipeline.from_workflow), its evaluator (results/models/classifier), the unaligned VAE
(results/models/vae_unaligned) and one part of the cohort (results/data/test, or the validation
pairs of results/data/trainval with --split val: the split to choose fixes on). Every size is the
progression readout's (namd/evaluation/readout.py, the config's evaluation.progression settings);
every comparison of two sampling conditions uses the same noise per (pair, seed).

1. record: the pairs sampled with their own report, a fixed high-risk and a fixed low-risk report,
   and the null context (the `namd_no_context` row): mean predicted diameter, high - low with a
   bootstrap CI over pairs, mean absolute pixel difference, evaluator score, and the cosine
   similarity of the context tensors C;
2. baseline: baseline latents shuffled across the pairs (a derangement): Spearman of the predicted
   diameter with the pair's own and with the donor's baseline diameter; and the slope of the
   predicted (and the real) follow-up diameter on the baseline's (below 1: sizes pulled to the mean);
3. VAE: real follow-ups through the aligned and the unaligned VAE: readout error by size bin, and the
   growth AUROC and calibration of the reconstructed real follow-up (the best a stage 2 can reach
   through that VAE) and of the reconstructed baseline (a stage 2 that copies the baseline latent);
4. diffusion target: MSE of the sampled follow-up latents to the encoded real follow-up, by label,
   against the baseline latent (no change) and another pair's follow-up;
5. evaluator: its score against the readout diameter on real crops, on VAE reconstructions and on
   NAMD's samples (Spearman, slope in a diameter range all share, mean score per size bin), and
   against sharpness (mean Sobel gradient), to see whether it reacts to blur rather than size.

Writes DIR/diagnosis.md and DIR/diagnosis.csv (default DIR: <results>/diagnosis) and prints the
markdown. A config overlay the run used (configs/tiny.yaml) goes after config.yaml in --config.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import ndimage, stats
from sklearn.metrics import roc_auc_score

from namd.config import load_config
from namd.data.crops import crop_rows, load_crops
from namd.data.nlst import report_text
from namd.data.records import patient_record
from namd.evaluation.readout import ReadoutSettings, crop_spacings, measure_crops
from namd.io import atomic_output
from namd.models.vae import decode_latents, encode_latents, load_vae
from namd.pipeline import NAMDPipeline
from namd.runtime import select_device
from namd.sampling import ddim_sample

ROOT = Path(__file__).resolve().parents[1]
_FAMILY = ("famfather", "fammother", "fambrother", "famsister", "famchild")
HIGH_RISK = {"age": 74, "gender": "Female", "diagemph": "Yes", **{f: "Yes" for f in _FAMILY},
             "SCT_LONG_DIA": 25, "SCT_PERP_DIA": 18, "SCT_MARGINS": "Spiculated", "SCT_PRE_ATT": "Part Solid",
             "SCT_EPI_LOC": "Right Upper Lobe"}
LOW_RISK = {"age": 55, "gender": "Male", "diagemph": "No", **{f: "No" for f in _FAMILY},
            "SCT_LONG_DIA": 4, "SCT_PERP_DIA": 3, "SCT_MARGINS": "Smooth", "SCT_PRE_ATT": "Ground Glass",
            "SCT_EPI_LOC": "Left Lower Lobe"}
SIZE_BINS = (-math.inf, 6.0, 10.0, math.inf)
SIZE_LABELS = ("<=6 mm", "6-10 mm", ">10 mm")
COLUMNS = ["experiment", "quantity", "condition", "group", "value", "ci_low", "ci_high", "n"]


# -- metric helpers (tests/test_diagnose.py) ------------------------------------------------------
def bootstrap_mean(values, *, seed: int = 0, n_resamples: int = 2000,
                   level: float = 0.95) -> tuple[float, float, float]:
    """(mean, CI low, CI high) of the mean, percentile bootstrap; the CI is NaN below two values."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean()) if len(values) else math.nan
    if len(values) < 2:
        return mean, math.nan, math.nan
    if np.ptp(values) == 0:
        return mean, mean, mean
    ci = stats.bootstrap((values,), np.mean, n_resamples=n_resamples, confidence_level=level, method="percentile",
                         rng=np.random.default_rng(seed)).confidence_interval
    return mean, float(ci.low), float(ci.high)


def spearman(x, y) -> float:
    """Spearman's rho; NaN when either side is constant or there are fewer than three points."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(stats.spearmanr(x, y).statistic)


def auroc(labels, scores) -> float:
    labels = np.asarray(labels)
    return float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else math.nan


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two context tensors, each flattened."""
    return float(torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def pairwise_cosines(contexts: torch.Tensor) -> np.ndarray:
    """Cosine similarity of every two different rows of (N, ...) context tensors (N (N-1) / 2 values)."""
    flat = torch.nn.functional.normalize(contexts.flatten(1).double(), dim=1)
    gram = flat @ flat.T
    upper = torch.triu_indices(len(flat), len(flat), offset=1)
    return gram[upper[0], upper[1]].numpy()


def size_bin(diameters) -> pd.Categorical:
    return pd.cut(np.asarray(diameters, dtype=float), SIZE_BINS, labels=SIZE_LABELS)


def derangement(n: int, seed: int) -> np.ndarray:
    """donor[i] != i for every i (n >= 2): each pair gets another pair's baseline."""
    order = np.random.default_rng(seed).permutation(n)
    donor = np.empty(n, dtype=int)
    donor[order] = np.roll(order, -1)
    return donor


def shared_range(*diameter_sets) -> tuple[float, float] | None:
    """The diameters (5th-95th percentile) every set covers, where scores are compared at matched
    size; None when the sets do not overlap."""
    low = max(np.percentile(d, 5) for d in diameter_sets)
    high = min(np.percentile(d, 95) for d in diameter_sets)
    return (float(low), float(high)) if low <= high else None


def slope(x, y) -> float:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    return float(stats.linregress(x, y).slope) if len(x) >= 3 and np.ptp(x) > 0 else math.nan


def sharpness(images: np.ndarray) -> np.ndarray:
    """Mean Sobel gradient magnitude of each (..., S, S) image: low for a blurred crop."""
    images = np.asarray(images, dtype=float)
    flat = images.reshape(-1, *images.shape[-2:])  # per image: a 3-d sobel would smooth across images
    means = [np.hypot(ndimage.sobel(image, axis=1), ndimage.sobel(image, axis=0)).mean() for image in flat]
    return np.asarray(means).reshape(images.shape[:-2])


# -- the run ---------------------------------------------------------------------------------------
@dataclass
class Run:
    pipe: NAMDPipeline
    vae_unaligned: object | None
    pairs: pd.DataFrame
    baseline: np.ndarray  # (N, 1, S, S)
    followup: np.ndarray
    spacing: np.ndarray  # (N, 2) of the baseline crops: generated crops are read on the baseline's grid
    spacing_follow: np.ndarray
    settings: ReadoutSettings
    window: tuple[float, float]
    seed: int
    eta: float
    seeds: list[int]
    steps: int

    @functools.cached_property
    def baseline_diameters(self) -> np.ndarray:
        return self.measure(self.baseline[:, None])[:, 0]

    @functools.cached_property
    def followup_diameters(self) -> np.ndarray:
        return self.measure(self.followup[:, None], follow_grid=True)[:, 0]

    @property
    def labels(self) -> np.ndarray:
        return self.pairs["label"].to_numpy(dtype=int)

    @property
    def ids(self) -> list[str]:
        return self.pairs["pair_id"].tolist()

    def measure(self, images: np.ndarray, follow_grid: bool = False) -> np.ndarray:
        return measure_crops(images, self.spacing_follow if follow_grid else self.spacing, self.settings, self.window)

    def encode(self, vae, images: np.ndarray) -> torch.Tensor:
        return encode_latents(vae, torch.from_numpy(images).to(self.pipe.device)).cpu()

    def decode(self, vae, latents: torch.Tensor) -> np.ndarray:
        return decode_latents(vae, latents.to(self.pipe.device)).clamp(-1, 1).cpu().numpy()

    def context(self, reports) -> torch.Tensor:
        return self.pipe.text_encoder(list(reports)).cpu()

    def sample(self, condition: torch.Tensor, context: torch.Tensor | None) -> tuple[torch.Tensor, np.ndarray]:
        """(latents (N, K, C, h, w), images (N, K, 1, S, S)) of NAMD's sampler, noise seeded per (pair, seed)."""
        latents = ddim_sample(self.pipe.unet, self.pipe.scheduler, condition, context, self.ids, self.seeds,
                              num_inference_steps=self.steps, eta=self.eta, base_seed=self.seed, progress=False)
        images = self.decode(self.pipe.vae, latents.flatten(0, 1))
        return latents, images.reshape(*latents.shape[:2], *images.shape[1:])

    def score(self, images: np.ndarray) -> np.ndarray:
        flat = images.reshape(-1, *images.shape[-3:])
        return self.pipe.classifier.predict_proba(torch.from_numpy(flat)).reshape(images.shape[:-3])


def _part_files(results: Path, split: str) -> tuple[Path, Path, Path]:
    part = results / "data" / ("test" if split == "test" else "trainval")
    files = part / "pairs.csv", part / "crops.npz", part / "crops.csv"
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file; is {results} a finished run's results folder?")
    return files


def load_run(results: Path, config: dict, *, split: str, n_pairs: int | None, k: int, steps: int | None,
             device: torch.device) -> Run:
    models = results / "models"
    pipe = NAMDPipeline.from_workflow(models / "namd", models / "classifier",
                                      hu_window=config["crop"]["hu_window"]).to(device)
    unaligned = models / "vae_unaligned"
    vae_unaligned = load_vae(unaligned, in_channels=1).to(device).eval() if unaligned.is_dir() else None
    pairs_csv, crops_npz, crops_csv = _part_files(results, split)
    pairs = pd.read_csv(pairs_csv, dtype={"pair_id": str, "pid": str, "nodule_id": str})
    pairs = pairs[pairs["split"] == split].reset_index(drop=True)
    if pairs.empty:
        raise ValueError(f"{pairs_csv}: no pair in split {split!r}")
    if n_pairs is not None and n_pairs < len(pairs):
        pairs = pairs.sample(n=n_pairs, random_state=config["seed"]).sort_index().reset_index(drop=True)
    crops = load_crops(crops_npz)
    rows = crop_rows(crops, pairs["pair_id"].tolist(), crops_npz)
    table = pd.read_csv(crops_csv, dtype={"pair_id": str})
    meta = json.loads((models / "namd" / "method.json").read_text())
    return Run(pipe=pipe, vae_unaligned=vae_unaligned, pairs=pairs, baseline=crops["baseline"][rows],
               followup=crops["followup"][rows], spacing=crop_spacings(table, pairs["pair_id"], "base", str(crops_csv)),
               spacing_follow=crop_spacings(table, pairs["pair_id"], "follow", str(crops_csv)),
               settings=ReadoutSettings.from_config(config["evaluation"]["progression"]),
               window=tuple(config["crop"]["hu_window"]), seed=int(config["seed"]),
               eta=float(meta["params"].get("eta", 0.0)), seeds=list(range(k)), steps=steps or pipe.ddim_steps)


# -- the experiments -------------------------------------------------------------------------------
class Rows(list):
    def add(self, experiment, quantity, value, *, condition="", group="all", ci=(math.nan, math.nan), n=None):
        self.append(dict(zip(COLUMNS, (experiment, quantity, condition, group, float(value), float(ci[0]),
                                       float(ci[1]), n))))


def record_dependence(run: Run, rows: Rows, cache: dict) -> None:
    """Same baselines and noise, four contexts: the pair's own report, high-risk, low-risk, null."""
    reports = {"own": run.pairs["report"].tolist(), "high-risk": [report_text(patient_record(HIGH_RISK))],
               "low-risk": [report_text(patient_record(LOW_RISK))]}
    contexts = {name: run.context(text) for name, text in reports.items()}
    condition = run.encode(run.pipe.vae, run.baseline)
    n = len(run.pairs)
    samples, diameters = {}, {}
    for name in ("own", "high-risk", "low-risk", "null"):
        context = None if name == "null" else contexts[name].expand(n, *contexts[name].shape[1:])
        latents, samples[name] = run.sample(condition, context)
        per_sample = run.measure(samples[name])
        diameters[name] = per_sample.mean(axis=1)  # per pair, mean over K
        mean, low, high = bootstrap_mean(diameters[name], seed=run.seed)
        rows.add("record", "mean predicted diameter (mm)", mean, condition=name, ci=(low, high), n=n)
        rows.add("record", "mean evaluator score", run.score(samples[name]).mean(), condition=name, n=n)
        if name == "own":
            cache.update(condition=condition, own_latents=latents, own_samples=samples["own"],
                         own_sample_diameters=per_sample)
    for a, b in (("high-risk", "low-risk"), ("own", "null")):
        mean, low, high = bootstrap_mean(diameters[a] - diameters[b], seed=run.seed)
        rows.add("record", "predicted diameter difference (mm)", mean, condition=f"{a} - {b}", ci=(low, high), n=n)
        rows.add("record", "mean absolute pixel difference", np.abs(samples[a] - samples[b]).mean(),
                 condition=f"{a} vs {b}", n=n)
    rows.add("record", "cosine similarity of C", cosine(contexts["high-risk"], contexts["low-risk"]),
             condition="high-risk vs low-risk", n=1)
    if n > 1:
        own = pairwise_cosines(contexts["own"])
        rows.add("record", "cosine similarity of C", own.mean(), condition="own reports, every two pairs",
                 ci=(own.min(), own.max()), n=len(own))


def baseline_dependence(run: Run, rows: Rows, cache: dict) -> None:
    """Each pair sampled with another pair's baseline latent (its own report, same noise)."""
    n = len(run.pairs)
    if n < 3:
        rows.add("baseline", "skipped: fewer than 3 pairs", math.nan, n=n)
        return
    donor = derangement(n, run.seed)
    real_baseline = run.baseline_diameters
    _, shuffled = run.sample(cache["condition"][donor], run.context(run.pairs["report"]))
    predicted = {"own baselines": cache["own_sample_diameters"].mean(axis=1),
                 "shuffled baselines": run.measure(shuffled).mean(axis=1)}
    for name, diameters in predicted.items():
        rows.add("baseline", "Spearman(predicted, own baseline diameter)", spearman(diameters, real_baseline),
                 condition=name, n=n)
        rows.add("baseline", "Spearman(predicted, donor baseline diameter)",
                 spearman(diameters, real_baseline[donor]), condition=name, n=n)
    rows.add("baseline", "mean absolute pixel difference", np.abs(shuffled - cache["own_samples"]).mean(),
             condition="shuffled vs own", n=n)
    # regression to the mean: a follow-up that keeps the baseline's size ordering has slope ~1 (truth >= 1 with growth)
    real_followup = run.followup_diameters
    for name, diameters in (("real follow-up", real_followup), ("own baselines", predicted["own baselines"])):
        rows.add("baseline", "slope of follow-up diameter on baseline diameter", slope(real_baseline, diameters),
                 condition=name, n=n)


def vae_reconstruction(run: Run, rows: Rows, cache: dict) -> None:
    """Real follow-ups encoded and decoded: can the decoder represent the nodule the sampler should reach?"""
    real = run.followup_diameters
    bins = size_bin(real)
    vaes = {"aligned": run.pipe.vae, "unaligned": run.vae_unaligned}
    for name, vae in vaes.items():
        if vae is None:
            rows.add("vae", "skipped: no results/models/vae_unaligned", math.nan, condition=name)
            continue
        recon = run.decode(vae, run.encode(vae, run.followup))
        cache[f"recon_{name}"] = recon
        diameters = run.measure(recon[:, None], follow_grid=True)[:, 0]
        cache[f"recon_{name}_diameters"] = diameters
        error = diameters - real
        rows.add("vae", "pixel L1", np.abs(recon - run.followup).mean(), condition=name, n=len(real))
        # a sample that copied the baseline latent exactly would still be read at this slope: the VAE's share
        recon_base = run.measure(run.decode(vae, run.encode(vae, run.baseline))[:, None])[:, 0]
        rows.add("vae", "slope of reconstructed on real baseline diameter", slope(run.baseline_diameters, recon_base),
                 condition=name, n=len(real))
        rows.add("vae", "Spearman(reconstruction, real diameter)", spearman(diameters, real), condition=name,
                 n=len(real))
        # the two ends a stage 2 can reach through this VAE: the real follow-up latent, and the baseline copied
        ends = {"reconstructed real follow-up": diameters, "reconstructed baseline (no change)": recon_base}
        for end, follow in ends.items():
            change = follow - run.baseline_diameters
            rows.add("vae", "growth AUROC of the diameter change", auroc(run.labels, change),
                     condition=f"{name}: {end}", n=len(real))
            rows.add("vae", "calibration (mean change / real mean change)",
                     change.mean() / (real - run.baseline_diameters).mean(), condition=f"{name}: {end}", n=len(real))
        for group in ("all", *SIZE_LABELS):
            part = np.ones(len(real), bool) if group == "all" else np.asarray(bins == group)
            if not part.any():
                continue
            mean, low, high = bootstrap_mean(error[part], seed=run.seed)
            rows.add("vae", "diameter error (mm)", mean, condition=name, group=group, ci=(low, high), n=int(part.sum()))
            rows.add("vae", "diameter MAE (mm)", np.abs(error[part]).mean(), condition=name, group=group,
                     n=int(part.sum()))
            rows.add("vae", "read as no nodule", int(((diameters == 0) & (real > 0))[part].sum()), condition=name,
                     group=group, n=int(part.sum()))


def diffusion_target(run: Run, rows: Rows, cache: dict) -> None:
    """Sampled follow-up latents against the encoded real follow-up, with two references."""
    target = run.encode(run.pipe.vae, run.followup)
    sampled = cache["own_latents"]
    dims = tuple(range(1, target.ndim))
    candidates = {
        "NAMD sample": ((sampled - target[:, None]) ** 2).mean(dim=(1, *(d + 1 for d in dims))),
        "NAMD mean over K": ((sampled.mean(1) - target) ** 2).mean(dim=dims),
        "baseline latent (no change)": ((cache["condition"] - target) ** 2).mean(dim=dims),
        "NAMD sample vs another pair's follow-up": ((sampled - target.roll(1, 0)[:, None]) ** 2).mean(
            dim=(1, *(d + 1 for d in dims))),
    }
    labels = run.labels
    for name, mse in candidates.items():
        mse = mse.numpy()
        for group, part in (("all", labels >= 0), ("malignant", labels == 1), ("benign", labels == 0)):
            if part.any():
                mean, low, high = bootstrap_mean(mse[part], seed=run.seed)
                rows.add("target", "latent MSE to the real follow-up", mean, condition=name, group=group,
                         ci=(low, high), n=int(part.sum()))


def evaluator_response(run: Run, rows: Rows, cache: dict) -> None:
    """Score vs readout diameter (and sharpness) on real crops, reconstructions and NAMD's samples."""
    real_images = np.concatenate([run.baseline, run.followup])
    real_d = np.concatenate([run.baseline_diameters, run.followup_diameters])
    sets = {"real crops": (real_images, real_d)}
    if "recon_aligned" in cache:
        sets["aligned VAE reconstructions"] = (cache["recon_aligned"], cache["recon_aligned_diameters"])
    generated = cache["own_samples"]
    sets["NAMD samples"] = (generated.reshape(-1, *generated.shape[2:]), cache["own_sample_diameters"].reshape(-1))
    scores = {name: run.score(images) for name, (images, _) in sets.items()}
    shared = shared_range(*(d for _, d in sets.values()))
    matched = "no shared diameters" if shared is None else f"{shared[0]:.1f}-{shared[1]:.1f} mm"
    for name, (images, diameters) in sets.items():
        score, sharp = scores[name], sharpness(images[:, 0])
        n = len(score)
        inside = np.zeros(n, bool) if shared is None else (diameters >= shared[0]) & (diameters <= shared[1])
        rows.add("evaluator", "Spearman(score, diameter)", spearman(score, diameters), condition=name, n=n)
        rows.add("evaluator", "slope of score per mm at shared diameters", slope(diameters[inside], score[inside]),
                 condition=name, group=matched, n=int(inside.sum()))
        rows.add("evaluator", "Spearman(score, sharpness)", spearman(score, sharp), condition=name, n=n)
        rows.add("evaluator", "mean sharpness (Sobel)", sharp.mean(), condition=name, n=n)
        bins = size_bin(diameters)
        for group in SIZE_LABELS:
            part = np.asarray(bins == group)
            if part.any():
                rows.add("evaluator", "mean score", score[part].mean(), condition=name, group=group, n=int(part.sum()))
    n = len(run.pairs)
    follow_score = scores["real crops"][n:]
    rows.add("evaluator", "AUROC", auroc(run.labels, follow_score), condition="real follow-ups", n=n)
    if "recon_aligned" in cache:
        rows.add("evaluator", "AUROC", auroc(run.labels, scores["aligned VAE reconstructions"]),
                 condition="aligned VAE reconstructions", n=n)
        rows.add("evaluator", "score change, reconstruction - real follow-up (same nodule)",
                 (scores["aligned VAE reconstructions"] - follow_score).mean(), condition="aligned VAE", n=n)
    rows.add("evaluator", "AUROC", auroc(run.labels, scores["NAMD samples"].reshape(n, -1).mean(axis=1)),
             condition="NAMD samples (mean over K)", n=n)


EXPERIMENTS = {
    "record": ("Record dependence", record_dependence,
               "Same baseline latents and noise; the context C is the pair's own report, a fixed high-risk "
               "report, a fixed low-risk report, or the null context (zeros, as `namd_no_context`)."),
    "baseline": ("Baseline dependence", baseline_dependence,
                 "Each pair sampled with another pair's baseline latent (a derangement), its own report and noise."),
    "vae": ("VAE reconstruction of real follow-ups", vae_reconstruction,
            "Real follow-ups encoded (posterior mean) and decoded by each VAE; readout on the reconstruction minus "
            "readout on the real follow-up, by the real follow-up's size; and the slope of the readout on the real "
            "baselines' reconstructions against the real baselines' (what a sample that copied its baseline keeps)."),
    "target": ("Diffusion target", diffusion_target,
               "MSE of NAMD's sampled follow-up latents (own report) to the aligned VAE's latent of the real "
               "follow-up, per pair; references: the baseline latent (no change) and another pair's follow-up."),
    "evaluator": ("Evaluator response", evaluator_response,
                  "The evaluator's malignancy probability against the readout diameter and the sharpness (mean Sobel "
                  "gradient) on real crops (baselines and follow-ups), aligned VAE reconstructions and NAMD's "
                  "samples; slopes over the diameter range every set covers."),
}


@torch.no_grad()
def diagnose(run: Run) -> pd.DataFrame:
    rows, cache = Rows(), {}
    for _, function, _ in EXPERIMENTS.values():
        function(run, rows, cache)
    return pd.DataFrame(rows, columns=COLUMNS)


def _format(value: float) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def markdown(frame: pd.DataFrame, header: str) -> str:
    parts = [header]
    for key, (title, _, what) in EXPERIMENTS.items():
        part = frame[frame["experiment"] == key].drop(columns="experiment")
        shown = part.assign(**{c: part[c].map(_format) for c in ("value", "ci_low", "ci_high")},
                            n=part["n"].map(lambda n: "-" if pd.isna(n) else str(int(n))))
        parts += [f"## {title}", "", what, "", shown.to_markdown(index=False), ""]
    return "\n".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("results"), help="a finished run's results folder")
    parser.add_argument("--config", nargs="+", type=Path, default=None,
                        help="the run's config (+ overlays); default: config.yaml beside --results, else the repo's")
    parser.add_argument("--split", choices=("test", "val"), default="test")
    parser.add_argument("--pairs", type=int, default=None, help="a random subset of N pairs (default: all)")
    parser.add_argument("--k", type=int, default=4, help="samples per pair")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the model's)")
    parser.add_argument("--out", type=Path, default=None, help="default: <results>/diagnosis")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if args.k < 1 or (args.pairs is not None and args.pairs < 1) or (args.steps is not None and args.steps < 1):
        parser.error("--k, --pairs and --steps must be at least 1")
    beside = args.results.resolve().parent / "config.yaml"
    config = load_config(*(args.config or [beside if beside.is_file() else ROOT / "config.yaml"]))
    start = time.time()
    run = load_run(args.results, config, split=args.split, n_pairs=args.pairs, k=args.k, steps=args.steps,
                   device=select_device(args.device))
    frame = diagnose(run)
    out = args.out or args.results / "diagnosis"
    header = (f"# Progression diagnosis\n\n{args.results}: {len(run.pairs)} {args.split} pairs "
              f"({int(run.labels.sum())} malignant), K = {len(run.seeds)}, {run.steps} DDIM steps (eta {run.eta:g}), "
              f"seed {run.seed}; readout threshold {run.settings.threshold_hu:g} HU; {time.time() - start:.0f} s.\n\n"
              "Values are means over pairs (CI: 95% percentile bootstrap over pairs, or min-max for pairwise "
              "cosines); n counts pairs, crops or pair couples.\n")
    text = markdown(frame, header)
    with atomic_output(out / "diagnosis.csv") as handle:
        frame.to_csv(handle, index=False)
    with atomic_output(out / "diagnosis.md") as handle:
        handle.write(text.encode("utf-8"))
    print(text)
    print(f"wrote {out / 'diagnosis.md'} and {out / 'diagnosis.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
