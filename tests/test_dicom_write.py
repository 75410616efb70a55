import numpy as np
import pydicom
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from namd.data.dicom_write import derived_uid, write_ct_series


def _write(hu, folder, **overrides):
    kwargs = dict(
        pixel_spacing=(0.7, 0.8),
        slice_thickness=2.5,
        origin=(-10.0, -20.0, 100.0),
        patient_id="100001",
        study_instance_uid=derived_uid("study"),
        series_instance_uid=derived_uid("series"),
    )
    kwargs.update(overrides)
    return write_ct_series(hu, folder, **kwargs)


@pytest.fixture
def hu_volume():
    return np.random.default_rng(0).integers(-1024, 2000, size=(3, 64, 48)).astype(float)


def test_series_parses_with_ct_tags_and_recovers_hu(tmp_path, hu_volume):
    paths = _write(hu_volume, tmp_path)
    assert [p.name for p in paths] == ["0001.dcm", "0002.dcm", "0003.dcm"]
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        assert ds.preamble == b"\x00" * 128
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.SOPClassUID == CTImageStorage and ds.Modality == "CT"
        assert ds.InstanceNumber == k + 1
        assert [float(v) for v in ds.ImagePositionPatient] == [-10.0, -20.0, 100.0 + 2.5 * k]
        assert [float(v) for v in ds.PixelSpacing] == [0.7, 0.8]
        assert (ds.Rows, ds.Columns) == (64, 48)
        assert ds.PixelRepresentation == 0 and ds.pixel_array.dtype == np.uint16
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(hu, hu_volume[k])


def test_values_below_intercept_switch_to_signed_storage(tmp_path):
    hu = np.full((1, 8, 8), -2000.0)
    ds = pydicom.dcmread(_write(hu, tmp_path)[0])
    assert ds.PixelRepresentation == 1
    assert float(ds.pixel_array.min()) + float(ds.RescaleIntercept) == -2000.0


def test_out_of_range_values_are_clipped_like_a_scanner(tmp_path):
    hu = np.array([[[70000.0, 0.0]]])
    ds = pydicom.dcmread(_write(hu, tmp_path)[0])
    assert int(ds.pixel_array.max()) == np.iinfo(np.uint16).max


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_compressed_transfer_syntaxes_are_lossless(tmp_path, hu_volume, syntax):
    ds = pydicom.dcmread(_write(hu_volume, tmp_path, transfer_syntax_uid=syntax)[1])
    assert ds.file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(ds.pixel_array + float(ds.RescaleIntercept), hu_volume[1])


def test_rewriting_is_byte_identical(tmp_path, hu_volume):
    first = _write(hu_volume, tmp_path / "a")
    second = _write(hu_volume, tmp_path / "b")
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    uids = {pydicom.dcmread(p).SOPInstanceUID for p in first}
    assert len(uids) == 3


def test_rejects_bad_input_with_context(tmp_path):
    with pytest.raises(ValueError, match="NaN"):
        _write(np.full((1, 4, 4), np.nan), tmp_path)
    with pytest.raises(ValueError, match="Z, Y, X"):
        _write(np.zeros((4, 4)), tmp_path)
    with pytest.raises(ValueError, match="pixel_spacing"):
        _write(np.zeros((1, 4, 4)), tmp_path, pixel_spacing=(1.0, 2.0, 3.0))


def test_negative_increment_numbers_slices_head_first(tmp_path):
    paths = _write(np.zeros((3, 4, 4)), tmp_path, slice_increment=-2.0)
    positions = [float(pydicom.dcmread(p).ImagePositionPatient[2]) for p in paths]
    assert positions == [100.0, 98.0, 96.0]
    assert float(pydicom.dcmread(paths[0]).SliceThickness) == 2.5
