"""The progression readout on synthetic nodules of known size, and the progression metrics and outputs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from namd.data.crops import save_crops, window_to_unit
from namd.evaluation.progression import change_metrics, row_metrics
from namd.evaluation.readout import ReadoutSettings, measure_crops, measure_nodule, readout_grid
from namd.generate import save_generated
from namd.methods import get_method
from namd.stages.progression import progression

WINDOW = (-1000.0, 400.0)
LUNG_HU, SOLID_HU, GGN_HU = -850.0, 40.0, -550.0
SETTINGS = ReadoutSettings()


def ellipse_crop(size, spacing, long_mm, short_mm=None, *, hu=SOLID_HU, angle=0.0, centre_px=None, vessel=False):
    """A [-1, 1] crop with a filled ellipse (axes in mm) on lung, optionally a 1-pixel vessel to the edge."""
    short_mm = long_mm if short_mm is None else short_mm
    sr, sc = spacing
    rows, cols = np.indices((size, size), dtype=float)
    cr, cc = centre_px if centre_px is not None else (size // 2, size // 2)
    y, x = (rows - cr) * sr, (cols - cc) * sc
    u = x * np.cos(angle) + y * np.sin(angle)
    v = -x * np.sin(angle) + y * np.cos(angle)
    hu_image = np.full((size, size), LUNG_HU)
    hu_image[(u / (long_mm / 2)) ** 2 + (v / (short_mm / 2)) ** 2 <= 1] = hu
    if vessel:
        hu_image[size // 2, size // 2 :] = SOLID_HU
    return window_to_unit(hu_image, WINDOW)


SPACINGS = [(0.7, 0.7), (1.0, 1.0), (1.6, 1.6), (1.2, 0.8)]


# a 5 mm disc spans 7 pixels at 0.7 mm: the leak guard's opening trims its rim there (readout.py), so the
# smallest disc is checked at the phantom's 1.6 mm only
@pytest.mark.parametrize(("spacing", "diameter"),
                         [((1.6, 1.6), 5.0), *((s, d) for s in SPACINGS for d in (9.0, 16.0, 30.0))])
def test_disc_diameter_within_a_pixel(spacing, diameter):
    size = int(np.ceil(diameter * 1.6 / min(spacing))) + 8
    area, measured = measure_nodule(ellipse_crop(size, spacing, diameter), spacing, SETTINGS, WINDOW)
    assert abs(measured - diameter) <= max(spacing)
    assert area == pytest.approx(math.pi * diameter**2 / 4, rel=0.25)


@pytest.mark.parametrize("angle", [0.0, 0.5, 1.2])
@pytest.mark.parametrize("long_mm", [6.0, 10.0, 14.0])
def test_ellipse_long_axis_within_a_pixel(angle, long_mm):
    crop = ellipse_crop(48, (1.0, 1.0), long_mm, 0.8 * long_mm, angle=angle)
    assert abs(measure_nodule(crop, (1.0, 1.0), SETTINGS, WINDOW)[1] - long_mm) <= 1.0


def test_ground_glass_disc_is_measured():
    crop = ellipse_crop(40, (1.6, 1.6), 14.0, hu=GGN_HU)
    assert abs(measure_nodule(crop, (1.6, 1.6), SETTINGS, WINDOW)[1] - 14.0) <= 1.6


def test_attached_vessel_does_not_inflate_the_nodule():
    crop = ellipse_crop(40, (1.0, 1.0), 12.0, vessel=True)
    assert abs(measure_nodule(crop, (1.0, 1.0), SETTINGS, WINDOW)[1] - 12.0) <= 1.0


def test_empty_and_off_centre_crops_read_zero():
    empty = window_to_unit(np.full((32, 32), LUNG_HU), WINDOW)
    assert measure_nodule(empty, (1.6, 1.6), SETTINGS, WINDOW) == (0.0, 0.0)
    off_centre = ellipse_crop(32, (1.6, 1.6), 5.0, centre_px=(6, 6))
    assert measure_nodule(off_centre, (1.6, 1.6), SETTINGS, WINDOW) == (0.0, 0.0)


def test_measure_crops_keeps_the_sample_axis():
    images = np.stack([[ellipse_crop(32, (1.0, 1.0), d)[None], np.full((1, 32, 32), -1.0, np.float32)]
                       for d in (6.0, 12.0)])  # (N=2, K=2, 1, S, S)
    diameters = measure_crops(images, np.array([[1.0, 1.0], [1.0, 1.0]]), SETTINGS, WINDOW)
    assert diameters.shape == (2, 2)
    assert np.allclose(diameters[:, 0], [6.0, 12.0], atol=1.0) and (diameters[:, 1] == 0).all()


def test_grid_is_chosen_on_train_and_val_only():
    crops = [ellipse_crop(32, (1.0, 1.0), d, hu=hu) for d, hu in ((8, SOLID_HU), (10, GGN_HU), (6, SOLID_HU))]
    table = pd.DataFrame({"image": crops, "spacing_row": 1.0, "spacing_col": 1.0, "long_dia_mm": [8.0, 10.0, 6.0],
                          "type": ["solid", "ground-glass", "solid"], "split": ["train", "val", "test"]})
    grid = {"threshold_hu": [-700, -300], "disc_factor": [1.0], "opening_factor": [0.8]}
    chosen = readout_grid(table, SETTINGS, grid, WINDOW)
    spoiled = table.assign(long_dia_mm=[8.0, 10.0, 60.0])  # a test-split truth that would change every score
    pd.testing.assert_frame_equal(chosen, readout_grid(spoiled, SETTINGS, grid, WINDOW))
    assert chosen.loc[0, "threshold_hu"] == -700  # -300 HU misses the ground-glass nodule


def test_change_metrics_on_a_toy_table():
    baseline = np.array([5.0, 5.0, 6.0, 6.0])
    real = np.array([10.0, 5.0, 12.0, 5.0])
    labels = np.array([1, 0, 1, 0])
    perfect = change_metrics(real - baseline, real - baseline, real, real, labels)
    assert perfect == pytest.approx({"change_malignant_mm": 5.5, "change_benign_mm": -0.5, "spearman": 1.0,
                                     "mae_followup_mm": 0.0, "auroc": 1.0, "calibration": 1.0})
    identity = change_metrics(np.zeros(4), real - baseline, baseline, real, labels)
    assert math.isnan(identity["spearman"]) and identity["auroc"] == 0.5 and identity["calibration"] == 0.0
    assert identity["mae_followup_mm"] == pytest.approx(3.0)


def test_row_metrics_counts_no_nodule_and_averages_over_k():
    baseline, real, labels = np.array([5.0, 5.0, 6.0]), np.array([9.0, 5.0, 6.0]), np.array([1, 0, 0])
    followup = np.array([[9.0, 7.0], [0.0, 5.0], [6.0, 6.0]])
    per_seed, summary = row_metrics("m", followup, [0, 1], baseline, real, labels)
    assert summary["n_no_nodule"] == 1 and summary["n_crops"] == 6
    assert summary["change_malignant_mm_mean"] == pytest.approx(3.0)
    assert summary["change_malignant_mm_std"] == pytest.approx(np.std([4.0, 2.0], ddof=1))
    assert summary["change_benign_mm_mean_over_k"] == pytest.approx((-2.5 + 0.0) / 2)
    with pytest.raises(ValueError, match="row 'm'"):
        row_metrics("m", followup[:, :1], [0, 1], baseline, real, labels)


@pytest.fixture
def test_split(tmp_path):
    """Six test pairs: malignant nodules grow 6 -> 12 mm, benign stay 6 mm; crops at 1 mm."""
    labels = np.array([1, 1, 1, 0, 0, 0])
    ids = [f"p{i}" for i in range(6)]
    base = np.stack([ellipse_crop(32, (1.0, 1.0), 6.0)[None]] * 6)
    follow = np.stack([ellipse_crop(32, (1.0, 1.0), 12.0 if y else 6.0)[None] for y in labels])
    save_crops({"pair_id": np.array(ids), "baseline": base, "followup": follow, "border_padded": np.zeros(6, bool)},
               tmp_path / "crops.npz")
    pd.DataFrame({"pair_id": ids, "split": "test", "label": labels}).to_csv(tmp_path / "pairs.csv", index=False)
    spacing = {c: 1.0 for c in ("pixel_spacing_row_base", "pixel_spacing_col_base", "pixel_spacing_row_follow",
                                "pixel_spacing_col_follow")}
    pd.DataFrame({"pair_id": ids, **spacing}).to_csv(tmp_path / "crops.csv", index=False)
    empty = np.full_like(base, -1.0)
    save_generated({"pair_id": np.array(ids), "seeds": np.array([0, 1]), "images": np.stack([follow, empty], axis=1)},
                   tmp_path / "oracle.npz")  # seed 0 the real follow-up, seed 1 blank
    return tmp_path


def _run(folder, generated, methods, **options):
    params = {"threshold_hu": -700, "disc_factor": 1.0, "opening_factor": 0.8, "disc_margin_px": 1.0,
              "centre_reach_px": 1.5}
    outputs = {f"out_{k}": folder / f"out.{k}" for k in ("csv", "per_seed", "points", "tex", "png", "pdf")}
    return progression(folder / "pairs.csv", folder / "crops.npz", folder / "crops.csv", generated, methods,
                       params=params, window=WINDOW, titles={m: get_method(m).title for m in methods}, **outputs,
                       **options)


def _phantom_reference(folder, sizes, train_labels, train_risk, test_risk) -> dict:
    """Training pairs at 1 mm (malignant ones double) and a truth file: the calibrated row's inputs."""
    trainval = folder / "trainval"
    trainval.mkdir()
    ids = [f"t{i}" for i in range(len(sizes))]
    save_crops({"pair_id": np.array(ids), "baseline": np.stack([ellipse_crop(32, (1.0, 1.0), d)[None] for d in sizes]),
                "followup": np.stack([ellipse_crop(32, (1.0, 1.0), d * (1 + y))[None]
                                      for d, y in zip(sizes, train_labels)]),
                "border_padded": np.zeros(len(ids), bool)}, trainval / "crops.npz")
    pd.DataFrame({"pair_id": ids, "pid": range(len(ids)), "nodule_id": "N1", "split": "train",
                  "label": train_labels}).to_csv(trainval / "pairs.csv", index=False)
    pd.read_csv(folder / "crops.csv").iloc[[0] * len(ids)].assign(pair_id=ids).to_csv(trainval / "crops.csv",
                                                                                       index=False)
    test = pd.read_csv(folder / "pairs.csv").assign(pid=range(100, 106), nodule_id="N1")
    test.to_csv(folder / "pairs.csv", index=False)
    pd.DataFrame({"pid": [*range(len(ids)), *range(100, 106)], "nodule_id": "N1",
                  "brock_risk": [*train_risk, *test_risk(test["label"])]}).to_csv(folder / "truth.csv", index=False)
    return {"truth": folder / "truth.csv", "pairs": trainval / "pairs.csv", "crops": trainval / "crops.npz",
            "crops_table": trainval / "crops.csv"}


def test_progression_stage_end_to_end(test_split):
    table = _run(test_split, {"namd": str(test_split / "oracle.npz")}, ["namd"]).set_index("row")
    assert list(table.index) == ["real_followup", "identity", "namd"]
    assert table.loc["real_followup", "spearman_mean"] == pytest.approx(1.0)
    assert table.loc["real_followup", "change_malignant_mm_mean"] == pytest.approx(6.0, abs=1.0)
    assert table.loc["identity", "auroc_mean"] == 0.5
    assert table.loc["namd", "n_no_nodule"] == 6  # seed 1 is blank: counted, not an exception
    tex = (test_split / "out.tex").read_text()
    assert "\\toprule" in tex and "NAMD (Ours): 6 of 12" in tex
    assert (test_split / "out.png").stat().st_size > 0


def test_progression_names_a_missing_method(test_split):
    with pytest.raises(ValueError, match="sd15"):
        _run(test_split, {"namd": str(test_split / "oracle.npz")}, ["namd", "sd15"])
    with pytest.raises(FileNotFoundError, match="flux"):
        _run(test_split, {"flux": str(test_split / "absent.npz")}, ["flux"])


def test_on_the_phantom_the_table_gains_the_calibrated_generator_at_the_methods_k(test_split):
    """Training pairs: malignant nodules double, benign ones stay; the truth gives the test pairs risk 0 or 1."""
    train_labels = np.array([1, 0] * 5)
    files = _phantom_reference(test_split, np.repeat([5.0, 7.0, 9.0, 11.0, 13.0], 2), train_labels,
                               np.where(train_labels == 1, 0.6, 0.4), lambda y: np.where(y == 1, 1 - 1e-9, 1e-9))
    table = _run(test_split, {"namd": str(test_split / "oracle.npz")}, ["namd"], calibrated=files,
                 seed=1).set_index("row")
    assert list(table.index) == ["real_followup", "identity", "namd", "calibrated"]
    row = table.loc["calibrated"]
    assert row["n_seeds"] == 2 and row["n_no_nodule"] == 0  # the methods' K; diameters, not crops: never blank
    # the risk is the outcome here (shifted to the training pairs' base rate, 1/2, which keeps 0 and 1): the
    # malignant test nodules grow in every sample as the small training ones read (5 -> 10, 7 -> 14 mm at 1 mm
    # pixels), the benign ones stay
    assert row["auroc_mean"] == 1.0 and row["change_benign_mm_mean"] == pytest.approx(0.0, abs=0.5)
    assert 3.0 < row["change_malignant_mm_mean"] < 7.0
    assert "Calibrated generator (knows the true risk)" in (test_split / "out.tex").read_text()


def test_without_a_malignant_training_pair_the_table_stands_without_the_calibrated_row(test_split, caplog):
    files = _phantom_reference(test_split, [6.0, 6.0], [0, 0], [0.1, 0.1], lambda y: np.full(len(y), 0.1))
    table = _run(test_split, {"namd": str(test_split / "oracle.npz")}, ["namd"], calibrated=files)
    assert table["row"].tolist() == ["real_followup", "identity", "namd"]
    assert "0 malignant and 2 benign" in caplog.text
