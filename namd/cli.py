"""`namd`: command line for using a trained NAMD model on a new patient.

Heavy libraries (torch, diffusers, timm) are imported inside the commands, so `namd --help`
answers at once. Every input is checked before anything is written; the outputs are written
into a hidden folder beside OUT and renamed to OUT at the end, so a failed run leaves no OUT.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

def _nodule(text: str) -> tuple[int, int, int]:
    try:
        row, col, slice_index = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected ROW,COL,SLICE as three whole numbers (0-based voxel indices), got {text!r}") from None
    return row, col, slice_index


def _window(text: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH in HU, e.g. -1000,400, got {text!r}") from None
    if not high > low:
        raise argparse.ArgumentTypeError(f"HIGH must exceed LOW, got {text!r}")
    return low, high


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="namd",
        description="NAMD (Nodule-Aligned Multimodal latent Diffusion): predict a lung nodule's one-year "
                    "follow-up CT crop and its malignancy probability from a baseline CT and the patient record.",
        epilog="Run 'namd predict --help' for the inputs and outputs of a prediction.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    predict = commands.add_parser(
        "predict",
        help="sample follow-up crops of one nodule and their malignancy probabilities",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
            Sample K one-year follow-up crops of one nodule from its baseline CT series and the
            patient record, and score each with the evaluation classifier.

            The crop is the axial slice through the nodule centre, cut and windowed as in training
            (crop size and HU window from the model). The record is a JSON object with the 13 EHR
            features of the paper's Table 2, e.g.
              {"SCT_PRE_ATT": "Part Solid", "SCT_EPI_LOC": "Right Upper Lobe", "SCT_LONG_DIA": 12,
               "SCT_PERP_DIA": 9, "SCT_MARGINS": "Spiculated", "age": 64, "gender": "Female",
               "diagemph": "No", "famfather": "Yes", "fammother": "No", "fambrother": "No",
               "famsister": "No", "famchild": "No"}
            Coded fields also take NLST codes (SCT_PRE_ATT 1 Soft, 2 Ground Glass, 3 Part Solid;
            gender 1 Male, 2 Female; Yes/No fields 1/0 or true/false); diameters in mm, age in years.
            """),
        epilog=textwrap.dedent("""\
            Outputs in OUT/: followup_samples.npy (K, 1, S, S) in [-1, 1]; followup_mean.png;
            followup_variance.png; sample_XX.png; prediction.json (probability mean, std and per
            sample, seed, model, report); summary.png (one page: baseline, mean, variance,
            samples, probability spread, report).
            Research software: not a medical device, not for clinical decisions."""),
    )
    inputs = predict.add_argument_group("inputs")
    inputs.add_argument("--dicom", required=True, metavar="DIR", type=Path,
                        help="the baseline CT series: a folder of slices (or a folder holding exactly one "
                             "series), or one multi-frame file")
    inputs.add_argument("--nodule", required=True, metavar="ROW,COL,SLICE", type=_nodule,
                        help="nodule centre as 0-based voxel indices; SLICE counts slices sorted by position "
                             "along the slice normal (as in nodule_locations.csv)")
    inputs.add_argument("--record", required=True, metavar="JSON", type=Path,
                        help="patient record with the 13 EHR features of Table 2 (see above)")
    model = predict.add_argument_group("model")
    model.add_argument("--model", required=True, metavar="MODEL_DIR", type=Path,
                       help="a saved NAMD pipeline folder (model_index.json), or the workflow's "
                            "results/models/namd")
    model.add_argument("--classifier", metavar="DIR", type=Path,
                       help="malignancy classifier folder; default: the pipeline's own, or "
                            "results/models/classifier beside a workflow model folder")
    model.add_argument("--hu-window", metavar="LOW,HIGH", type=_window,
                       help="HU window the workflow's crops used (config crop.hu_window; default -1000,400); "
                            "only for a workflow model folder, a saved pipeline stores its own")
    sampling = predict.add_argument_group("sampling")
    sampling.add_argument("--samples", type=_positive, default=20, metavar="K",
                          help="follow-ups to sample (paper: 20; default %(default)s)")
    sampling.add_argument("--seed", type=int, default=0,
                          help="the same seed gives the same outputs (default %(default)s)")
    sampling.add_argument("--steps", type=_positive, metavar="N",
                          help="DDIM steps (paper: 50; default: the steps the model was evaluated with, "
                               "model_index.json ddim_steps)")
    sampling.add_argument("--device", default="auto", help="auto (a CUDA GPU when present), cpu or cuda[:N] "
                                                           "(default %(default)s)")
    sampling.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    output = predict.add_argument_group("output")
    output.add_argument("--out", required=True, metavar="OUT", type=Path, help="folder to create for the outputs")
    output.add_argument("--overwrite", action="store_true", help="replace OUT if it exists and is not empty")
    predict.set_defaults(run=predict_command)

    example = commands.add_parser(
        "example",
        help="write the record.json of a workflow pair and print the predict command for its baseline",
        description="Turn one pair of the workflow's cohort (results/data/pairs.csv and crops.csv) into the "
                    "inputs of 'namd predict': OUT/record.json (the 13 Table 2 features of the baseline) and the "
                    "command line with its baseline series and nodule centre. Also prints the pair's label.",
    )
    example.add_argument("pair_id", help="a pair_id of results/data/pairs.csv, e.g. 100002_N1_T0T1")
    example.add_argument("--results", type=Path, default=Path("results"), metavar="DIR",
                         help="the workflow's results folder (default %(default)s)")
    example.add_argument("--model", type=Path, default=Path("results/models/namd_pipeline"), metavar="MODEL_DIR",
                         help="model folder to name in the printed command (default %(default)s)")
    example.add_argument("--out", required=True, type=Path, metavar="OUT", help="folder for record.json")
    example.set_defaults(run=example_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `namd` console script; 0 on success, 1 with one message on bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from namd.runtime import DeviceUnavailableError

    try:
        return args.run(args)
    except (ValueError, OSError, DeviceUnavailableError) as err:
        print(f"namd {args.command}: error: {err}", file=sys.stderr)
        return 1


# -- example --------------------------------------------------------------------------------------
def example_command(args) -> int:
    import pandas as pd

    from namd.data.nlst import EHR_FEATURES

    pairs_csv, crops_csv = args.results / "data" / "pairs.csv", args.results / "data" / "crops.csv"
    for path in (pairs_csv, crops_csv):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; run the workflow first (or pass --results)")
    pairs = pd.read_csv(pairs_csv, dtype=str, keep_default_na=False).set_index("pair_id")
    crops = pd.read_csv(crops_csv, dtype=str, keep_default_na=False).set_index("pair_id")
    if args.pair_id not in pairs.index or args.pair_id not in crops.index:
        raise ValueError(f"{pairs_csv}: no pair {args.pair_id!r} (e.g. {', '.join(pairs.index[:3])})")
    pair, crop = pairs.loc[args.pair_id], crops.loc[args.pair_id]
    record = {name: pair[name] for name in EHR_FEATURES}
    for name in ("SCT_LONG_DIA", "SCT_PERP_DIA", "age"):
        record[name] = float(record[name])
    args.out.mkdir(parents=True, exist_ok=True)
    record_path = args.out / "record.json"
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    series = Path(crop["slice_file_base"]).parent
    label = "malignant" if pair["label"] == "1" else "benign"
    print(f"# {args.pair_id}: {pair['split']} split, {label} (label_basis: {pair.get('label_basis', '?')})")
    print(f"namd predict --dicom {series} --nodule {pair['row_base']},{pair['col_base']},{pair['slice_base']} "
          f"--record {record_path} --model {args.model} --out predictions/{args.pair_id}")
    return 0


# -- predict --------------------------------------------------------------------------------------
def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"--out {out}: folder exists and is not empty; choose a new folder or pass --overwrite")


def _read_series(path: Path):
    """The CT volume at --dicom; a folder that holds no files but one series below it is read as that series."""
    from namd.data.dicom_read import DicomSeriesError, index_series, read_ct_series

    if path.is_dir() and not any(p.is_file() and not p.name.startswith(".") for p in path.iterdir()):
        index = index_series(path, progress=False)
        if len(index) > 1:
            listing = "; ".join(f"{uid} in {p}" for uid, p in zip(index["series_instance_uid"], index["path"]))
            raise DicomSeriesError(f"--dicom {path}: holds {len(index)} CT series ({listing}); pass one of them")
        path = Path(index["path"].iloc[0])
    return read_ct_series(path)


def _load_pipeline(args):
    """The pipeline and the folders it came from, for a saved pipeline or a workflow model folder."""
    from namd.data.crops import DEFAULT_WINDOW
    from namd.evaluation.classifier import load_classifier
    from namd.pipeline import PIPELINE_INDEX, NAMDPipeline

    model = args.model
    if (model / PIPELINE_INDEX).is_file():
        if args.hu_window is not None:
            raise ValueError(f"--hu-window: {model} is a saved pipeline with its own HU window "
                             f"({PIPELINE_INDEX} hu_window); the option is for workflow model folders only")
        NAMDPipeline.check_format(model)  # before the classifier loads, so a stale folder fails first
        extra = {"classifier": load_classifier(args.classifier)} if args.classifier else {}
        pipeline = NAMDPipeline.from_pretrained(model, **extra)
        return pipeline, args.classifier or model / "classifier"
    if (model / "method.json").is_file():
        classifier = args.classifier or model.parent / "classifier"
        if not classifier.is_dir():
            raise FileNotFoundError(f"--classifier not given and the workflow's classifier folder {classifier} "
                                    "does not exist; pass --classifier DIR")
        window = args.hu_window or DEFAULT_WINDOW
        return NAMDPipeline.from_workflow(model, classifier, hu_window=window), classifier
    raise FileNotFoundError(f"--model {model}: neither a saved NAMD pipeline ({PIPELINE_INDEX}) nor a workflow "
                            "model folder (method.json)")


def predict_command(args) -> int:
    from namd import __version__
    from namd.data.crops import crop_nodule, window_to_unit
    from namd.data.nlst import report_text
    from namd.data.records import read_patient_record
    from namd.runtime import make_deterministic, select_device

    _check_out(args.out, args.overwrite)
    _quiet_loading()
    record = read_patient_record(args.record)
    report = report_text(record)
    volume = _read_series(args.dicom)
    device = select_device(args.device)
    make_deterministic(args.seed)  # the workflow's settings: deterministic kernels, no TF32 on a GPU
    pipeline, classifier_dir = _load_pipeline(args)
    pipeline.to(device)
    row, col, slice_index = args.nodule
    hu, padded = crop_nodule(volume, row, col, slice_index, size=pipeline.crop_size, border="pad")
    if padded:
        print(f"namd predict: warning: the {pipeline.crop_size}-pixel crop leaves the image; padded with air "
              "(-1000 HU) as in training", file=sys.stderr)
    baseline = window_to_unit(hu, pipeline.hu_window)[None]
    steps = args.steps or pipeline.ddim_steps
    prediction = pipeline(baseline, report, num_samples=args.samples, seed=args.seed,
                          num_inference_steps=steps, progress=args.progress)
    summary = {
        "namd_version": __version__,
        "model": str(args.model.resolve()),
        "classifier": str(Path(classifier_dir).resolve()),
        "dicom": str(args.dicom.resolve()),
        "series_instance_uid": volume.series_instance_uid,
        "nodule": {"row": row, "col": col, "slice": slice_index},
        "crop": {"size_px": pipeline.crop_size, "pixel_spacing_mm": list(volume.pixel_spacing),
                 "hu_window": list(pipeline.hu_window), "border_padded": bool(padded)},
        "record": record,
        "report": report,
        "seed": args.seed,
        "num_samples": args.samples,
        "num_inference_steps": steps,
        "probability_mean": float(prediction.probability_mean[0]),
        "probability_std": float(prediction.probability_std[0]),
        "sample_probabilities": [float(p) for p in prediction.probabilities[0]],
    }
    _write_outputs(args.out, baseline, prediction, summary, overwrite=args.overwrite)
    print(f"malignancy probability {summary['probability_mean']:.3f} ± {summary['probability_std']:.3f} "
          f"(mean ± SD over {args.samples} samples); outputs in {args.out}")
    return 0


def _quiet_loading() -> None:
    """Weight-loading bars of transformers and diffusers say nothing to a user; the sampling bar stays."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def _write_outputs(out: Path, baseline, prediction, summary: dict, *, overwrite: bool) -> None:
    """All files into a hidden folder beside OUT, then one rename: OUT appears complete or not at all."""
    import numpy as np

    from namd.evaluation.prediction_figures import save_map_png, summary_figure

    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        samples = prediction.samples[0]
        np.save(tmp / "followup_samples.npy", samples)
        low, high = summary["crop"]["hu_window"]
        variance_hu2 = prediction.variance[0, 0] * ((high - low) / 2) ** 2
        save_map_png(tmp / "followup_mean.png", prediction.mean[0, 0], cmap="gray", vmin=-1, vmax=1)
        save_map_png(tmp / "followup_variance.png", variance_hu2, cmap="magma", vmin=0,
                  vmax=max(float(variance_hu2.max()), 1e-12))
        digits = max(2, len(str(len(samples) - 1)))
        for k, sample in enumerate(samples):
            save_map_png(tmp / f"sample_{k:0{digits}d}.png", sample[0], cmap="gray", vmin=-1, vmax=1)
        summary = {**summary, "variance_png_range_hu2": [0.0, float(variance_hu2.max())]}
        (tmp / "prediction.json").write_text(json.dumps(summary, indent=2) + "\n")
        summary_figure(tmp / "summary.png", baseline[0], prediction, variance_hu2, summary)
        os.chmod(tmp, 0o777 & ~_umask())
        if out.exists() and overwrite:
            shutil.rmtree(out)
        os.replace(tmp, out)  # an empty OUT is replaced too
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    """mkdtemp makes a 0700 folder; OUT should get the user's usual permissions."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


if __name__ == "__main__":
    sys.exit(main())
