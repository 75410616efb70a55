"""Choose NAMD's stage-2 and sampler settings on the validation split only (issue 13).

    .venv/bin/python tools/select_namd.py --results RESULTS --config config.yaml [OVERLAY ...]
        [--variant NAME:KEY=VALUE,KEY=VALUE ...] [--pairs N] [--k 4] [--out docs/namd_selection.csv]

Reads a finished run's trainval files only (RESULTS/data/trainval, RESULTS/latents/vae_aligned's
trainval.npz, the trained VAE and stage 1); nothing under a test folder is opened. Each variant
overrides NAMD's params (the config's `methods.namd`, with `ldm` and the budget as the workflow
builds them; dotted keys reach nested ones, e.g. `scheduler.prediction_type=epsilon`), trains
stage 2 with the workflow's own code (`namd.stages.methods.train_method`, same budget of optimiser
steps as every row) unless only sampler keys change, samples the validation pairs and reads them
with the progression readout. Per variant: the stage-2 validation loss, the Spearman of the
predicted vs the true diameter change, the growth AUROC of the mean change over K, the slope of the
predicted follow-up diameter on the baseline's (1: sizes kept; the real follow-ups' slope is
printed beside it), the calibration (mean predicted / mean true change) and the crops read as no
nodule. The rule that marks a run's `chosen` variant: the highest validation growth AUROC, ties
(within 0.03, one seed's spread) to the simpler setting, i.e. the one listed first. Until session 8
it was the highest Spearman (within 0.02); docs/progression.md entry 8 says why it changed (the
Spearman has no headroom over what the baseline alone gives). A decision to switch a setting on
rests on three training seeds (entries 6 and 9), not on one run's mark.

With --record-swap each variant also samples the validation pairs with the fixed high-risk and the
fixed low-risk report of tools/diagnose_progression.py in place of their own (same noise per pair and
seed): `swap_mm` is the mean over pairs of the high- minus low-risk predicted diameter (mean over K),
with its bootstrap 95% interval, the size of what the model reads of the record.

With --sctabn (the cohort's nlst_sctabn.csv, for Brock's nodule count) it first prints what two
predictors that see only the baseline reach on the same readout, learning nothing: the baseline
diameter itself, and the Brock probability times the baseline diameter (the growth a calibrated
generator expects when malignant nodules grow in proportion to their size). They say how high
the Spearman and the growth AUROC of a generator can be on these pairs; neither is ever chosen.

With --truth (the phantom's phantom_truth.csv) it also prints what a calibrated generator reaches on the
same readout at the same K: one that makes each sample malignant with the nodule's true probability (the
risk the phantom drew its malignancy from, shifted to the training pairs' base rate) and grows it as the
training pairs' real follow-ups of that outcome grew. Its growth AUROC is the ceiling of a faithful
sampler at this K (it rises to the Brock x diameter reference only as K grows), and its grown shares
(the samples whose diameter rose by more than a quarter, in pairs of true risk >= 10% and below) say how
far a variant's mixture is from a calibrated one.

With --oracle-report outcome (a diagnostic, never a method: it reads the validation labels) every
training and validation report ends with the pair's outcome ("The nodule is malignant." or "...
benign."), so the record holds the answer. It splits the gap in two: a stage 2 that then grows the
malignant nodules can express growth from C, and what it lacks on the real reports is the risk in
them; one that still does not cannot, at this budget, whatever the report says. With
--oracle-report brock (needs --sctabn; reads no label) each report ends instead with the Brock
model's risk of its own record, in words ("The Brock model gives a 12 percent risk of malignancy
(intermediate)."): the same risk a calibrated generator should grow by, handed over as one phrase
rather than spread over the record's fields. With --oracle-report noisy (reads the labels) the stated
outcome is the opposite one for a seeded quarter of the pairs: one word that ranks the risk as well
as Brock does (AUROC 0.75) but does not decide the growth, the clean form of a probabilistic report.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats
from sklearn.metrics import roc_auc_score

from namd.budget import method_params
from namd.config import load_config
from namd.data.crops import crop_rows, load_crops
from namd.evaluation.calibrated import RelativeChanges, calibrated_followups, recalibrated, truth_risks
from namd.evaluation.readout import ReadoutSettings, crop_spacings, measure_crops
from namd.models.vae import decode_latents, encode_latents, load_vae
from namd.runtime import make_deterministic
from namd.stages.methods import generate_method, train_method
from namd.stages.progression import generated_diameters, split_readouts

from diagnose_progression import HIGH_RISK, LOW_RISK, bootstrap_mean  # tools/, beside this script
from variants import parse_variant
from namd.data.nlst import read_nlst_table, report_text
from namd.data.records import patient_record
from namd.evaluation.clinical import MissingField, brock_record, nodule_count, nodule_counts

ROOT = Path(__file__).resolve().parents[1]
#: a json of overrides -> a folder name
SLUG = str.maketrans({c: "_" for c in ' {}":,/'})
#: --oracle-report noisy: the share of pairs whose stated outcome is the opposite one. With 20% malignant
#: pairs, "malignant" then means a 44% risk and "benign" 8%: a risk group that ranks at AUROC 0.75, as Brock does
NOISY_FLIP = 0.25
#: a sample "grew" when its diameter rose by more than this share of the baseline's (in the powered run's
#: training pairs two thirds of the malignant real follow-ups do, 4% of the benign ones)
GROWN = 0.25
#: the risk that splits the grown shares: BTS's threshold for work-up
RISK_BAND = 0.10
#: keys read only when sampling: a variant that changes nothing else reuses the run's trained model
SAMPLER_KEYS = {"ddim_steps", "eta", "sample_batch_size", "guidance.scale", "scheduler.timestep_spacing"}


def apply(params: dict, overrides: dict) -> dict:
    out = copy.deepcopy(params)
    for key, value in overrides.items():
        *path, leaf = key.split(".")
        node = out
        for part in path:
            node = node[part]
        if leaf not in node:
            raise KeyError(f"NAMD has no param {key!r}")
        node[leaf] = value
    return out


def growth_metrics(labels, true_change, predicted, baseline_d, risk=None) -> dict:
    """predicted: (N, K) follow-up diameters; baseline_d, true_change and (with --truth) risk: (N,)."""
    change = predicted - baseline_d[:, None]
    mean_change = change.mean(axis=1)
    grown = change > GROWN * baseline_d[:, None]
    shares = {} if risk is None else {"grown_share_high_risk": float(grown[risk >= RISK_BAND].mean()),
                                      "grown_share_low_risk": float(grown[risk < RISK_BAND].mean())}
    return {
        "spearman": float(stats.spearmanr(true_change, mean_change).statistic),
        "growth_auroc": float(roc_auc_score(labels, mean_change)),
        "slope_on_baseline": float(stats.linregress(baseline_d, predicted.mean(axis=1)).slope),
        "change_malignant_mm": float(mean_change[labels == 1].mean()),
        "change_benign_mm": float(mean_change[labels == 0].mean()),
        "calibration": float(mean_change.mean() / true_change.mean()),
        "no_nodule": int((predicted == 0).sum()),
        "spread_mm": float(change.std(axis=1, ddof=1).mean()) if change.shape[1] > 1 else float("nan"),
        "grown_share": float(grown.mean()),
        **shares,
    }


def stated_risk(pairs: pd.DataFrame, pair_ids) -> np.ndarray:
    """--oracle-report outcome/noisy: the share malignant of the training pairs whose report states the same outcome."""
    indexed = pairs.set_index("pair_id")
    says = indexed["report"].str.endswith("malignant.")
    train = indexed["split"].eq("train")
    share = indexed.loc[train, "label"].groupby(says[train]).mean()
    return share.reindex(says.loc[list(pair_ids)].to_numpy()).to_numpy(dtype=float)


def through_vae(vae_dir: Path, crops_npz: Path, crops_csv: Path, pair_ids, settings, window) -> np.ndarray:
    """Readout diameters of the pairs' real follow-ups encoded and decoded by the run's VAE: what a latent
    generator that drew exactly the real follow-up would show (the VAE's blur and size bias included)."""
    crops = load_crops(crops_npz)
    images = torch.from_numpy(crops["followup"][crop_rows(crops, list(pair_ids), crops_npz)])
    vae = load_vae(vae_dir).eval()
    with torch.no_grad():
        decoded = decode_latents(vae, encode_latents(vae, images)).clamp(-1, 1).numpy()
    spacing = crop_spacings(pd.read_csv(crops_csv, dtype={"pair_id": str}), pair_ids, "follow", str(crops_csv))
    return measure_crops(decoded, spacing, settings, window)


def calibrated_sampler(labels, true_change, baseline_d, risk, changes: RelativeChanges, k: int, *, band_risk,
                       draws: int = 200, seed: int = 0) -> dict:
    """growth_metrics of namd.evaluation.calibrated's generator at K samples, mean (and AUROC SD) over draws.

    Its samples are malignant with `risk`; the grown shares split by `band_risk` (the variants' split).
    """
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame([growth_metrics(labels, true_change, calibrated_followups(rng, baseline_d, risk, changes, k),
                                         baseline_d, band_risk) for _ in range(draws)])
    return {**frame.mean().to_dict(), "growth_auroc_sd": float(frame["growth_auroc"].std())}


def mark_chosen(frame: pd.DataFrame, tie: float = 0.03) -> pd.DataFrame:
    """`chosen`: the first variant whose validation growth AUROC is within `tie` of the best."""
    out = frame.copy()
    out["chosen"] = False
    out.loc[out.index[out["growth_auroc"] >= out["growth_auroc"].max() - tie][0], "chosen"] = True
    return out


def brock_risks(pairs: pd.DataFrame, counts: pd.Series) -> np.ndarray:
    """Each pair's Brock probability; NaN where its record lacks a Brock field (an NLST missing code)."""
    risks = np.full(len(pairs), np.nan)
    for i, record in enumerate(pairs.to_dict("records")):
        try:
            risks[i] = brock_record(record, nodule_count(counts, record))
        except MissingField:
            pass
    return risks


def baseline_references(val: pd.DataFrame, labels, true_change, baseline_d, counts: pd.Series) -> pd.DataFrame:
    """Spearman and growth AUROC of two learning-free scores of the expected change (rank metrics: scale-free).

    A pair whose record lacks a Brock field (an NLST missing code) is left out of both, as Table 1's Brock row does.
    """
    brock = brock_risks(val, counts)
    kept = ~np.isnan(brock)
    scores = {"baseline diameter": baseline_d, "Brock probability x baseline diameter": brock * baseline_d}
    return pd.DataFrame([{"reference": name, "pairs": int(kept.sum()),
                          "spearman": float(stats.spearmanr(true_change[kept], score[kept]).statistic),
                          "growth_auroc": float(roc_auc_score(labels[kept], score[kept]))}
                         for name, score in scores.items()])


def with_report(pairs: pd.DataFrame, record: dict) -> pd.DataFrame:
    """The pairs with every validation pair's report replaced by `record`'s (training rows unchanged)."""
    out = pairs.copy()
    out.loc[out["split"] == "val", "report"] = report_text(patient_record(record))
    return out


def write_pairs(pairs: pd.DataFrame, path: Path) -> Path:
    """A derived pairs table written where the workflow's readers can take it (the trainer and readouts read files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pairs.to_csv(path, index=False)
    return path


def with_training_subjects(pairs: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """The pairs with the training split cut to a seeded `fraction` of its subjects (--train-fraction): how
    stage 2's readout moves with its data tells whether more pairs are a lever. Validation rows are kept."""
    if not 0 < fraction <= 1:
        raise ValueError(f"--train-fraction must be in (0, 1], got {fraction}")
    subjects = pairs.loc[pairs["split"] == "train", "pid"].drop_duplicates()
    kept = subjects.sample(frac=fraction, random_state=seed)
    return pairs[pairs["split"].ne("train") | pairs["pid"].isin(kept)]


def with_outcome(pairs: pd.DataFrame, flip: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Each report followed by the pair's own outcome (--oracle-report outcome), the opposite one for a
    seeded share `flip` of the pairs (--oracle-report noisy: the stated outcome is a risk group, not the answer)."""
    out = pairs.copy()
    stated = out["label"].eq(1) ^ (np.random.default_rng(seed).random(len(out)) < flip)
    out["report"] = out["report"] + np.where(stated, " The nodule is malignant.", " The nodule is benign.")
    return out


def brock_sentence(probability: float) -> str:
    """BTS bands: below 10% surveillance (low), 10-70% work-up (intermediate), above 70% (high)."""
    band = "low" if probability < 0.10 else "intermediate" if probability <= 0.70 else "high"
    return f" The Brock model gives a {100 * probability:.0f} percent risk of malignancy ({band})."


def with_brock(pairs: pd.DataFrame, counts: pd.Series) -> pd.DataFrame:
    """Each report followed by its record's Brock risk (--oracle-report brock); none where a field is missing."""
    out = pairs.copy()
    out["report"] += [brock_sentence(risk) if not np.isnan(risk) else "" for risk in brock_risks(pairs, counts)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--config", nargs="+", type=Path, default=[ROOT / "config.yaml"])
    parser.add_argument("--variant", nargs="*", default=["current:"],
                        help="NAME:KEY=VALUE,... (the default: the run's own model); none: print the references only")
    parser.add_argument("--pairs", type=int, default=None, help="a seeded subset of the validation pairs")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("select_namd"), help="trained variants go here")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "namd_selection.csv")
    parser.add_argument("--train-fraction", type=float, default=1.0,
                        help="diagnostic: stage 2 trains on this seeded share of the training subjects (all their "
                             "pairs); the validation pairs stay whole")
    parser.add_argument("--record-swap", action="store_true",
                        help="also sample with a high-risk and a low-risk report: the record's effect (swap_mm)")
    parser.add_argument("--sctabn", type=Path, default=None,
                        help="the cohort's nlst_sctabn.csv: print the baseline-only references first")
    parser.add_argument("--oracle-report", choices=("outcome", "noisy", "brock"), default=None,
                        help="diagnostic: every report states its pair's outcome (reads the validation labels) "
                             "or its record's Brock risk (needs --sctabn)")
    parser.add_argument("--truth", type=Path, default=None,
                        help="the phantom's phantom_truth.csv: print a calibrated generator's readout at this K first")
    parser.add_argument("--vae", nargs="+", type=Path, default=None,
                        help="with --truth: the VAE(s) the calibrated generator's follow-ups pass through "
                             "(default: the run's aligned VAE)")
    parser.add_argument("--ceiling-out", type=Path, default=None, help="with --truth: the calibrated generator's table")
    args = parser.parse_args()

    config = load_config(*args.config)
    seed = int(config["seed"])
    torch.set_num_threads(args.threads)
    trainval = args.results / "data" / "trainval"
    pairs_csv, crops_npz, crops_csv = trainval / "pairs.csv", trainval / "crops.npz", trainval / "crops.csv"
    latents = args.results / "latents" / "aligned" / "trainval.npz"
    models = args.results / "models"
    upstream = {"vae": str(models / "vae_aligned"), "ldm_unconditional": str(models / "ldm_unconditional_aligned")}

    pairs = pd.read_csv(pairs_csv, dtype={"pair_id": str})
    val = pairs[pairs["split"] == "val"]
    if args.pairs and args.pairs < len(val):
        val = val.sample(n=args.pairs, random_state=seed)
        pairs = pairs[pairs["split"].ne("val") | pairs["pair_id"].isin(val["pair_id"])]
        pairs_csv = write_pairs(pairs, args.work / "pairs.csv")
    if args.train_fraction != 1:
        try:
            pairs = with_training_subjects(pairs, args.train_fraction, seed)
        except ValueError as err:
            parser.error(str(err))
        pairs_csv = write_pairs(pairs, args.work / f"pairs_train{args.train_fraction:g}.csv")
    counts = nodule_counts(read_nlst_table(args.sctabn, "sctabn")) if args.sctabn else None
    if args.oracle_report:
        if args.oracle_report == "brock":
            if counts is None:
                parser.error("--oracle-report brock needs --sctabn (Brock's nodule count)")
            pairs = with_brock(pairs, counts)
        else:
            pairs = with_outcome(pairs, flip=NOISY_FLIP if args.oracle_report == "noisy" else 0.0)
        pairs_csv = write_pairs(pairs, args.work / f"pairs_{args.oracle_report}.csv")
    settings = ReadoutSettings.from_config(config["evaluation"]["progression"])
    window = tuple(config["crop"]["hu_window"])
    val, spacing, baseline_d, follow_d = split_readouts(pairs_csv, crops_npz, crops_csv, settings, window, split="val")
    labels = val["label"].to_numpy(dtype=int)
    true_change = follow_d - baseline_d
    print(f"{len(val)} validation pairs ({labels.sum()} malignant); real follow-ups: slope on baseline "
          f"{stats.linregress(baseline_d, follow_d).slope:.2f}, growth AUROC {roc_auc_score(labels, true_change):.3f}")
    if counts is not None:
        references = baseline_references(val, labels, true_change, baseline_d, counts)
        print(references.to_markdown(index=False, floatfmt=".3f"))
    risk = truth_risks(val, args.truth) if args.truth else None
    if risk is not None:
        train, _, train_baseline, train_follow = split_readouts(pairs_csv, crops_npz, crops_csv, settings, window,
                                                                split="train")
        train_labels = train["label"].to_numpy(dtype=int)
        knows = {"the true risk": recalibrated(risk, truth_risks(train, args.truth), train_labels)}
        if args.oracle_report in ("outcome", "noisy"):
            knows["the stated outcome"] = stated_risk(pairs, val["pair_id"])
        grows = {"real crops": train_follow}
        for vae in args.vae or [Path(upstream["vae"])]:
            grows[f"through {vae}"] = through_vae(vae, crops_npz, crops_csv, train["pair_id"], settings, window)
        ceiling = []
        for crops_seen, follow in grows.items():
            changes = RelativeChanges.of(train_baseline, follow, train_labels)
            for name, known_risk in knows.items():
                ceiling.append({"knows": name, "follow-ups": crops_seen, **calibrated_sampler(
                    labels, true_change, baseline_d, known_risk, changes, args.k, band_risk=risk, seed=seed)})
        print(f"a calibrated generator at K = {args.k} (its K samples drawn from training pairs of their size bin):")
        ceiling = pd.DataFrame(ceiling).assign(k=args.k)
        print(ceiling.to_markdown(index=False, floatfmt=".3f"))
        if args.ceiling_out:
            args.ceiling_out.parent.mkdir(parents=True, exist_ok=True)
            ceiling.to_csv(args.ceiling_out, index=False)

    if not args.variant:
        return
    base = method_params(config, "namd")
    swap_csvs = {}  # the validation reports replaced by one fixed report: the same files for every variant
    if args.record_swap:
        for tag, record in (("high_risk", HIGH_RISK), ("low_risk", LOW_RISK)):
            swap_csvs[tag] = write_pairs(with_report(pairs, record), args.work / f"pairs_{tag}.csv")
    results = []
    for text in args.variant:
        name, overrides = parse_variant(text)
        params = apply(base, overrides)
        start = time.time()
        trained = models / "namd"
        training = {k: v for k, v in overrides.items() if k not in SAMPLER_KEYS}
        if training:  # one training per set of training overrides, shared by the variants that sample it
            trained = args.work / ("trained-" + json.dumps(training, sort_keys=True).translate(SLUG)) / "model"
            if not (trained / "method.json").is_file():
                make_deterministic(seed, args.threads)
                train_method("namd", apply(base, training), pairs_csv, crops_npz, latents, upstream, trained,
                             trained.parent / "state", seed=seed)
        if len(training) < len(overrides):  # sampler keys: that model, sampled with the variant's settings
            source, trained = trained, args.work / name / "model"
            shutil.rmtree(trained, ignore_errors=True)
            shutil.copytree(source, trained)
            meta = json.loads((trained / "method.json").read_text())
            meta["params"] = params
            (trained / "method.json").write_text(json.dumps(meta, indent=2))
            if "scheduler.timestep_spacing" in overrides:  # the sampler is built from the saved schedule
                saved = trained / "scheduler" / "scheduler_config.json"
                schedule = json.loads(saved.read_text())
                saved.write_text(json.dumps({**schedule, "timestep_spacing": overrides["scheduler.timestep_spacing"]}))
        val_loss = float(pd.read_csv(trained / "history.csv")["val_loss"].min())

        def predicted_diameters(pairs_file: Path, tag: str) -> np.ndarray:
            """(N, K) readout diameters of the variant's samples of the validation pairs in `pairs_file`."""
            out_npz = args.work / name / f"{tag}.npz"
            out_npz.parent.mkdir(parents=True, exist_ok=True)
            generate_method("namd", trained, pairs_file, crops_npz, latents, upstream, out_npz,
                            seeds=list(range(args.k)), batch_size=64, seed=seed, split="val")
            return generated_diameters(out_npz, val["pair_id"].tolist(), spacing, settings, window)[0]

        predicted = predicted_diameters(pairs_csv, "val")
        row = {"variant": name, "overrides": json.dumps(overrides), "val_loss": val_loss,
               **growth_metrics(labels, true_change, predicted, baseline_d, risk)}
        if args.record_swap:
            swapped = {tag: predicted_diameters(csv, f"val_{tag}").mean(axis=1) for tag, csv in swap_csvs.items()}
            row["swap_mm"], row["swap_ci_low"], row["swap_ci_high"] = bootstrap_mean(
                swapped["high_risk"] - swapped["low_risk"], seed=seed)
        row["seconds"] = round(time.time() - start)
        results.append(row)
        print(json.dumps(row))
    frame = mark_chosen(pd.DataFrame(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out, index=False)
    print(frame.to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
