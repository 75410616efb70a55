"""The benchmark scripts run and check what they claim (their timings are not asserted)."""

import subprocess
import sys

import pytest
from conftest import ROOT


def run(*args):
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_sampling_benchmark_compares_batched_and_one_by_one_images():
    out = run("benchmarks/sampling.py", "--pairs", "2", "--seeds", "3", "--steps", "2")
    assert "images identical within float rounding" in out
    assert "speed-up:" in out


def test_sampling_benchmark_fails_when_images_differ():
    done = subprocess.run([sys.executable, "benchmarks/sampling.py", "--pairs", "2", "--seeds", "2", "--steps", "2",
                           "--atol", "-1"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "differ by" in done.stderr


def test_training_benchmark_prints_a_row_per_model_and_batch():
    out = run("benchmarks/training.py", "--crops", "32", "--batches", "3", "--repeats", "1")
    rows = [line for line in out.splitlines() if line.startswith("| VAE") or line.startswith("| U-Net")]
    assert len(rows) == 2


def test_rule_times_reads_snakemake_benchmark_files(tmp_path):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    (tmp_path / "train_vae_aligned.tsv").write_text(header + "12.5\t0:00:12\t900.0\t1\t1\t1\t0\t0\t90\t11.0\n")
    (tmp_path / "crop_nodules.tsv").write_text(header + "3.0\t0:00:03\t300.0\t1\t1\t1\t0\t0\t90\t2.5\n")
    out = run("benchmarks/rule_times.py", str(tmp_path))
    assert out.index("train_vae_aligned") < out.index("crop_nodules")
    assert "heaviest job train_vae_aligned at 900 MB RSS" in out


def test_startup_benchmark_imports_what_a_script_imports(tmp_path):
    script = tmp_path / "rule.py"
    script.write_text("import json\nfrom namd.io import atomic_output\nfrom . import nothing\n\nx = 1\n")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from startup import top_level_imports
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert top_level_imports(script) == ["json", "namd.io"]
    out = run("benchmarks/startup.py", "--repeats", "1", str(script))
    assert "| rule.py " in out and "mean over scripts" in out


@pytest.mark.slow
def test_workflow_benchmark_runs_the_workflow_in_a_scratch_copy(tmp_path):
    """The tiny overlay through benchmarks/workflow.py (3-4 min; the CI suite runs the same DAG in test_workflow)."""
    out = run("benchmarks/workflow.py", "--cores", "2", "--keep", str(tmp_path / "run"), "--",
              "--configfile", "configs/tiny.yaml")
    assert "whole workflow:" in out and "| train_vae_aligned" in out
    assert (tmp_path / "run" / "results" / "table1.tex").exists()


def test_gpu_benchmark_runs_every_stage_at_tiny_size_on_the_cpu():
    """benchmarks/gpu.py's code path (bf16 autocast and checkpointing included) at toy sizes; the
    figures in README come from a GPU run, or README says there has been none."""
    out = run("benchmarks/gpu.py", "--tiny", "--repeats", "1", "--precision", "bf16", "--gradient-checkpointing")
    for stage in ("| VAE (Eq. 6) |", "| stage 1 (Eq. 9) |", "| stage 2 (Eq. 10) |", "batched |",
                  "one seed per call |"):
        assert stage in out, out
    assert "precision bf16, gradient checkpointing True" in out
    assert "stage 1: 100,000 steps:" in out and "stage 2: 6,600 steps:" in out and "total:" in out
