"""Choose between settings of one Table-1 row on the validation split: the one-standard-error rule.

    .venv/bin/python tools/select_method.py --method imageflownet_sde --config config.yaml \
        --setting "current:" "dt1:dt=1.0" [--seeds 23 24 25] [--results results] [--work DIR]

Each setting (NAME:key=value,key=value; values are YAML) overrides the row's training parameters
(`namd.budget.method_params`: the same budget as the workflow gives it). Every setting trains once
per seed with the workflow's own code (`namd.stages.methods.train_method`, seeded as the rule seeds
it), on a finished run's trainval files and upstream models (RESULTS/data/trainval, its VAE's
latents, stage 1, the perceptual network); the row's validation loss is its trainer's selection
criterion (the best epoch's). The rule, all on validation numbers: among the settings whose mean
over seeds is within one SE (SD / sqrt(seeds)) of the first setting's (the reference), keep the
fastest by mean training time; the first setting wins ties. One seed chooses nothing. Reads no
test file. Prints one line per run and a table; `--out` writes the runs as CSV.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from namd.budget import method_params
from namd.config import load_config
from namd.methods import upstream_of
from namd.runtime import make_deterministic
from namd.stages.methods import train_method

from variants import parse_variant  # tools/, beside this script


def parse_setting(text: str) -> tuple[str, dict]:
    """'NAME:key=value,key=value' -> (NAME, {key: value}) as tools/variants.py reads it; 'NAME:' is the reference."""
    name, sep, _ = text.partition(":")
    if not sep or not name:
        raise SystemExit(f"--setting {text!r}: expected NAME:key=value,... (NAME: alone for the reference)")
    try:
        return parse_variant(text)
    except ValueError as error:
        raise SystemExit(f"--setting {error}") from None


def run_inputs(results: Path, config: dict, method: str) -> tuple[Path, Path, Path | None, dict]:
    """The trainval files and upstream models of `method` in a finished run, as rules/common.smk names them."""
    trainval = results / "data" / "trainval"
    vae = config["methods"][method].get("vae")
    needs = upstream_of(method)
    upstream = {}
    latents = None
    if "vae" in needs:
        latents = results / "latents" / vae / "trainval.npz"
        upstream["vae"] = results / "models" / f"vae_{vae}"
    if "ldm_unconditional" in needs:
        upstream["ldm_unconditional"] = results / "models" / f"ldm_unconditional_{vae}"
    if "perceptual" in needs:
        upstream["perceptual"] = results / "models" / "perceptual"
    missing = [str(p) for p in [trainval / "pairs.csv", trainval / "crops.npz", latents, *upstream.values()]
               if p is not None and not p.exists()]
    if missing:
        raise SystemExit(f"{method}: not in {results} (run the workflow up to its training job first): {missing}")
    return trainval / "pairs.csv", trainval / "crops.npz", latents, upstream


def choose(runs: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """Per-setting mean, SD, SE and time; the fastest setting within one SE of the first one's mean
    (None with a single seed: there is no SE to compare with)."""
    order = list(dict.fromkeys(runs["setting"]))
    table = runs.groupby("setting", sort=False).agg(
        mean=("val_loss", "mean"), sd=("val_loss", "std"), n=("val_loss", "size"), seconds=("seconds", "mean"))
    table = table.loc[order]
    table["se"] = table["sd"] / table["n"].map(math.sqrt)
    shipped = table.iloc[0]
    if shipped["n"] < 2:
        table["within_one_se"] = table["chosen"] = pd.NA
        return table.reset_index(), None
    table["within_one_se"] = table["mean"] <= shipped["mean"] + shipped["se"]
    chosen = table[table["within_one_se"]].sort_values("seconds", kind="stable").index[0]
    if table.loc[chosen, "seconds"] >= shipped["seconds"]:
        chosen = table.index[0]
    table["chosen"] = table.index == chosen
    return table.reset_index(), chosen


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", help="a trained row of Table 1 (config methods:); not with --from-runs")
    parser.add_argument("--config", nargs="+", default=["config.yaml"], help="config files, later ones overlay")
    parser.add_argument("--setting", nargs="+", default=[], help="NAME:key=value,...; the first is the reference")
    parser.add_argument("--seeds", nargs="+", type=int, default=[23, 24, 25])
    parser.add_argument("--results", type=Path, default=Path("results"), help="a finished run's results folder")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=None, help="where trained models go (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=None, help="CSV of every run")
    parser.add_argument("--from-runs", nargs="+", type=Path, default=None,
                        help="apply the rule to earlier calls' --out CSVs (seeds run in parallel); trains nothing")
    args = parser.parse_args(argv)
    if args.from_runs:
        table, chosen = choose(pd.concat([pd.read_csv(p) for p in args.from_runs], ignore_index=True))
        print(table.to_markdown(index=False, floatfmt=".5f"))
        print(f"chosen: {chosen}")
        return

    if not args.method:
        raise SystemExit("--method: name the row to train (config methods:), or give --from-runs")
    if not args.setting:
        raise SystemExit("--setting: give at least one (the first is the reference), or --from-runs")
    config = load_config(*args.config)
    if args.method not in config["methods"]:
        raise SystemExit(f"--method {args.method!r}: not a row of {args.config} (rows: {', '.join(config['methods'])})")
    pairs, crops, latents, upstream = run_inputs(args.results, config, args.method)
    work = args.work or Path(tempfile.mkdtemp(prefix="select_method_"))
    settings = [parse_setting(s) for s in args.setting]
    rows = []
    for seed in args.seeds:
        for name, overrides in settings:
            params = {**method_params(config, args.method), **overrides}
            folder = work / f"{name}_seed{seed}"
            make_deterministic(seed, args.threads)
            start = time.perf_counter()
            result = train_method(args.method, params, pairs, crops, latents, upstream, folder / "model",
                                  folder / "state", seed=seed)
            rows.append({"setting": name, "overrides": yaml.safe_dump(overrides, default_flow_style=True).strip(),
                         "seed": seed, "val_loss": result["best_val_loss"], "best_epoch": result["best_epoch"],
                         "seconds": time.perf_counter() - start})
            print(f"{name} seed {seed}: validation loss {result['best_val_loss']:.5f} "
                  f"(epoch {result['best_epoch']}), {rows[-1]['seconds']:.0f} s", flush=True)
    runs = pd.DataFrame(rows)
    if args.out:
        runs.to_csv(args.out, index=False)
    table, chosen = choose(runs)
    print(table.to_markdown(index=False, floatfmt=".5f"))
    if chosen is None:
        print("chosen: none (one seed gives no standard error; the rule needs two or more)")
    else:
        print(f"chosen: {chosen} ({dict(settings)[chosen] or 'the shipped setting'})")


if __name__ == "__main__":
    sys.exit(main())
