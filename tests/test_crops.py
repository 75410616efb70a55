from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import namd.data.crops as crops_module
from namd.data.contact_sheet import plot_contact_sheet
from namd.io import atomic_output
from namd.data.crops import (
    NoduleAtBorderError,
    NoduleOutOfVolumeError,
    build_crops,
    crop_nodule,
    load_crops,
    save_crops,
    unit_to_hu,
    window_to_unit,
)
from namd.data.dicom_read import CTVolume, DicomSeriesError, index_series
from namd.data.dicom_write import derived_uid, write_ct_series

SHAPE = (4, 40, 50)


def _volume(hu):
    return CTVolume(
        hu=hu.astype(np.float32),
        pixel_spacing=(0.7, 0.7),
        slice_positions=2.0 * np.arange(len(hu)),
        slice_spacing=2.0,
        series_instance_uid="1.2.3",
        instance_numbers=tuple(range(1, len(hu) + 1)),
        source=Path("series"),
        slice_files=tuple(Path(f"{k}.dcm") for k in range(len(hu))),
    )


@pytest.fixture
def volume():
    """Every voxel distinct, so a misplaced crop cannot pass by accident."""
    return _volume(np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE) - 1000.0)


@pytest.mark.parametrize("size", [8, 5])
def test_crop_is_centred_on_the_nodule(volume, size):
    crop, padded = crop_nodule(volume, row=20, col=30, slice_index=2, size=size)
    assert crop.shape == (size, size) and crop.dtype == np.float32 and not padded
    assert crop[size // 2, size // 2] == volume.hu[2, 20, 30]
    top, left = 20 - size // 2, 30 - size // 2
    np.testing.assert_array_equal(crop, volume.hu[2, top : top + size, left : left + size])


def test_crop_leaving_the_image_is_padded_with_air_and_flagged(volume):
    crop, padded = crop_nodule(volume, row=1, col=48, slice_index=0, size=8)
    assert padded
    assert crop[4, 4] == volume.hu[0, 1, 48]
    np.testing.assert_array_equal(crop[:3], -1000.0)  # rows -3..-1
    np.testing.assert_array_equal(crop[:, 6:], -1000.0)  # cols 50, 51
    np.testing.assert_array_equal(crop[3:, :6], volume.hu[0, 0:5, 44:50])
    crop, padded = crop_nodule(volume, row=38, col=10, slice_index=0, size=8)  # leaves only at the bottom
    assert padded
    np.testing.assert_array_equal(crop[6:], -1000.0)  # rows 40, 41
    np.testing.assert_array_equal(crop[:6], volume.hu[0, 34:40, 6:14])


def test_exclude_mode_raises_naming_the_location(volume):
    with pytest.raises(NoduleAtBorderError, match=r"row=1, col=48, slice=0.*cols 44\.\.51"):
        crop_nodule(volume, row=1, col=48, slice_index=0, size=8, border="exclude")
    crop_nodule(volume, row=20, col=30, slice_index=0, size=8, border="exclude")


@pytest.mark.parametrize(
    "location, message",
    [
        ((20, 30, 4), r"slice_index=4 is outside the volume \(valid 0\.\.3\)"),
        ((40, 30, 0), r"row=40 is outside the volume \(valid 0\.\.39\)"),
        ((20, -1, 0), r"col=-1 is outside the volume \(valid 0\.\.49\)"),
        ((20.5, 30, 0), r"row=20\.5 is not a whole voxel index"),
        ((float("nan"), 30, 0), r"row=nan is not a whole voxel index"),
    ],
)
def test_location_outside_the_volume_always_raises(volume, location, message):
    row, col, slice_index = location
    with pytest.raises(NoduleOutOfVolumeError, match=message):
        crop_nodule(volume, row, col, slice_index, size=8, border="pad")


def test_window_maps_to_unit_range_and_back():
    hu = np.array([-3000.0, -1000.0, -300.0, 400.0, 2000.0])
    unit = window_to_unit(hu)
    np.testing.assert_allclose(unit, [-1.0, -1.0, 0.0, 1.0, 1.0])
    assert unit.dtype == np.float32
    inside = np.linspace(-1000.0, 400.0, 29)
    np.testing.assert_allclose(unit_to_hu(window_to_unit(inside)), inside, atol=1e-3)
    np.testing.assert_allclose(unit_to_hu([-1.5, 1.2], window=(-100, 100)), [-100.0, 100.0])
    with pytest.raises(ValueError, match="high > low"):
        window_to_unit(hu, window=(400, -1000))


def _tiny_cohort(tmp_path):
    """Two series (baseline, follow-up) and two pairs: one central, one at the image edge."""
    rng = np.random.default_rng(0)
    volumes = {}
    for name in ("base", "follow"):
        hu = rng.integers(-1100, 500, size=(6, 48, 40)).astype(float)
        uid = derived_uid("series", name)
        write_ct_series(
            hu, tmp_path / "dicom" / name, pixel_spacing=0.75, slice_thickness=2.0, patient_id="100001",
            study_instance_uid=derived_uid("study", name), series_instance_uid=uid,
        )
        volumes[name] = (uid, hu)
    pairs = pd.DataFrame(
        {
            "pair_id": ["100001_N1_T0T1", "100001_N2_T0T1"],
            "series_uid_base": [volumes["base"][0]] * 2,
            "series_uid_follow": [volumes["follow"][0]] * 2,
            "row_base": [24, 2],
            "col_base": [20, 20],
            "slice_base": [3, 0],
            "row_follow": [25, 3],
            "col_follow": [19, 21],
            "slice_follow": [2, 5],
            "label": [0, 1],
            "SCT_LONG_DIA": [6.0, float("nan")],
        }
    )
    return pairs, index_series(tmp_path / "dicom", progress=False), volumes


def test_build_crops_reads_each_series_once_and_keeps_pair_order(tmp_path, monkeypatch):
    pairs, series_index, volumes = _tiny_cohort(tmp_path)
    reads = []
    real_read = crops_module.read_ct_series
    monkeypatch.setattr(crops_module, "read_ct_series", lambda path: reads.append(path) or real_read(path))
    arrays, table = build_crops(pairs, series_index, size=16, progress=False)

    assert len(reads) == 2
    assert list(arrays["pair_id"]) == list(pairs["pair_id"])
    assert arrays["baseline"].shape == arrays["followup"].shape == (2, 1, 16, 16)
    assert arrays["baseline"].dtype == np.float32
    np.testing.assert_array_equal(arrays["border_padded"], [False, True])
    base_hu, follow_hu = volumes["base"][1], volumes["follow"][1]
    assert arrays["baseline"][0, 0, 8, 8] == window_to_unit(base_hu[3, 24, 20])
    assert arrays["followup"][1, 0, 8, 8] == window_to_unit(follow_hu[5, 3, 21])
    np.testing.assert_array_equal(arrays["baseline"][1, 0, :6], -1.0)  # air padding maps to -1
    assert list(table["pair_id"]) == list(pairs["pair_id"])
    assert list(table["slice_base"]) == [3, 0] and list(table["padded_follow"]) == [False, True]
    assert table.loc[0, "slice_position_mm_follow"] == pytest.approx(4.0)
    assert table.loc[0, "slice_spacing_base"] == pytest.approx(2.0)
    assert table.loc[0, "pixel_spacing_row_base"] == pytest.approx(0.75)
    assert table.loc[0, "slice_file_base"].endswith("0004.dcm")


def test_build_crops_errors_name_the_pair(tmp_path):
    pairs, series_index, _ = _tiny_cohort(tmp_path)
    with pytest.raises(NoduleAtBorderError, match=r"2 crops leave the image:\n100001_N2_T0T1 \(base\)"):
        build_crops(pairs, series_index, size=16, border="exclude", progress=False)
    outside = pairs.assign(slice_follow=[2, 6])
    with pytest.raises(NoduleOutOfVolumeError, match=r"pair 100001_N2_T0T1 \(follow\).*slice_index=6"):
        build_crops(outside, series_index, size=16, progress=False)
    unknown = pairs.assign(series_uid_base=["9.9.9", pairs.loc[1, "series_uid_base"]])
    with pytest.raises(DicomSeriesError, match=r"pair 100001_N1_T0T1: series_uid_base 9\.9\.9 is not in the series"):
        build_crops(unknown, series_index, size=16, progress=False)
    broken = Path(series_index.loc[0, "path"]) / "0002.dcm"
    broken.write_bytes(broken.read_bytes()[:-50])
    with pytest.raises(DicomSeriesError, match=r"needed by pairs \['100001_N1_T0T1', '100001_N2_T0T1'\].*0002\.dcm"):
        build_crops(pairs, series_index, size=16, progress=False)
    with pytest.raises(ValueError, match=r"pairs lacks columns \['row_follow'\]"):
        build_crops(pairs.drop(columns="row_follow"), series_index, progress=False)
    with pytest.raises(ValueError, match="pairs is empty"):
        build_crops(pairs.iloc[:0], series_index, progress=False)
    with pytest.raises(ValueError, match="crop size must be a positive integer, got 0"):
        build_crops(pairs, series_index, size=0, progress=False)
    with pytest.raises(ValueError, match="border must be one of"):
        build_crops(pairs, series_index, border="mirror", progress=False)


def test_crops_npz_round_trip_is_atomic_and_checked(tmp_path):
    arrays = {
        "pair_id": np.array(["a", "b"]),
        "baseline": np.zeros((2, 1, 8, 8), np.float32),
        "followup": np.ones((2, 1, 8, 8), np.float32),
        "border_padded": np.array([False, True]),
    }
    path = tmp_path / "data" / "crops.npz"
    save_crops(arrays, path)
    assert [p.name for p in path.parent.iterdir()] == ["crops.npz"]
    loaded = load_crops(path)
    for key, value in arrays.items():
        np.testing.assert_array_equal(loaded[key], value)
    with pytest.raises(ValueError, match="followup must be float32"):
        save_crops({**arrays, "followup": np.ones((2, 1, 8, 8))}, tmp_path / "bad.npz")
    assert not (tmp_path / "bad.npz").exists()
    with pytest.raises(RuntimeError, match="crashed"), atomic_output(path) as handle:
        handle.write(b"half a file")
        raise RuntimeError("crashed")
    assert [p.name for p in path.parent.iterdir()] == ["crops.npz"]
    np.testing.assert_array_equal(load_crops(path)["followup"], arrays["followup"])
    (tmp_path / "junk.npz").write_text("not an npz")
    with pytest.raises(ValueError, match="junk.npz: not a readable crops"):
        load_crops(tmp_path / "junk.npz")


def test_contact_sheet_writes_png_and_pdf(tmp_path):
    pairs, series_index, _ = _tiny_cohort(tmp_path)
    arrays, _ = build_crops(pairs, series_index, size=16, progress=False)
    save_crops(arrays, tmp_path / "crops.npz")
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    plot_contact_sheet(tmp_path / "crops.npz", tmp_path / "pairs.csv", tmp_path / "fig" / "sheet.png",
                       tmp_path / "fig" / "sheet.pdf", n_per_label=3)
    png, pdf = (tmp_path / "fig" / "sheet.png").read_bytes(), (tmp_path / "fig" / "sheet.pdf").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert pdf.startswith(b"%PDF")
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == ["sheet.pdf", "sheet.png"]
    pairs.assign(pair_id=["x", "y"]).to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(ValueError, match=r"pairs \['x', 'y'\] have no crops"):
        plot_contact_sheet(tmp_path / "crops.npz", tmp_path / "other.csv", tmp_path / "x.png")
