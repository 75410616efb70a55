import json
import logging
import shutil
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    SecondaryCaptureImageStorage,
)

from namd.data.dicom_read import SERIES_INDEX_COLUMNS, DicomSeriesError, index_series, read_ct_series
from namd.data.dicom_write import derived_uid, write_ct_series

SERIES_UID = derived_uid("series-a")


def _write(hu, folder, series_instance_uid=SERIES_UID, **overrides):
    kwargs = dict(
        pixel_spacing=(0.7, 0.8),
        slice_thickness=2.5,
        origin=(-10.0, -20.0, 100.0),
        patient_id="100001",
        study_instance_uid=derived_uid("study"),
        series_instance_uid=series_instance_uid,
    )
    kwargs.update(overrides)
    return write_ct_series(hu, folder, **kwargs)


def _edit(path, **attributes):
    ds = pydicom.dcmread(path)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.save_as(path)


@pytest.fixture
def hu_volume():
    return np.random.default_rng(0).integers(-1024, 2000, size=(5, 24, 20)).astype(float)


def test_round_trip_is_exact_and_keeps_geometry(tmp_path, hu_volume):
    paths = _write(hu_volume, tmp_path / "s")
    volume = read_ct_series(tmp_path / "s")
    assert volume.hu.dtype == np.float32
    np.testing.assert_array_equal(volume.hu, hu_volume)
    np.testing.assert_allclose(volume.slice_positions, 100.0 + 2.5 * np.arange(5))
    assert volume.slice_spacing == pytest.approx(2.5)
    assert volume.pixel_spacing == (0.7, 0.8)
    assert volume.series_instance_uid == SERIES_UID
    assert volume.instance_numbers == (1, 2, 3, 4, 5)
    assert volume.slice_files == tuple(paths)


def test_slices_sort_by_position_not_file_name_or_instance_number(tmp_path, hu_volume):
    paths = _write(hu_volume, tmp_path)
    scrambled_instance_numbers = [4, 1, 5, 2, 3]
    for k, path in enumerate(paths):
        _edit(path, InstanceNumber=scrambled_instance_numbers[k])
        path.rename(tmp_path / f"img{9 - k}.dcm")  # name order is the reverse of position order
    volume = read_ct_series(tmp_path)
    np.testing.assert_array_equal(volume.hu, hu_volume)
    assert volume.instance_numbers == tuple(scrambled_instance_numbers)


def test_order_follows_the_slice_normal_not_raw_z(tmp_path, hu_volume):
    paths = _write(hu_volume, tmp_path)
    for path in paths:  # columns run along -y, so the normal is -z
        _edit(path, ImageOrientationPatient=[1, 0, 0, 0, -1, 0])
    volume = read_ct_series(tmp_path)
    np.testing.assert_array_equal(volume.hu, hu_volume[::-1])
    np.testing.assert_allclose(volume.slice_positions, -100.0 - 2.5 * np.arange(5)[::-1])


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_compressed_series_decode_to_the_same_hu(tmp_path, syntax):
    hu_volume = np.random.default_rng(1).integers(-1024, 2000, size=(3, 40, 36)).astype(float)  # J2K needs >= 32 px
    paths = _write(hu_volume, tmp_path, transfer_syntax_uid=syntax)
    assert pydicom.dcmread(paths[0], stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(read_ct_series(tmp_path).hu, hu_volume)


def _enhanced_ct(hu, path, *, rescale_per_frame):
    """An Enhanced CT file whose frames are stored out of position order, as some scanners do."""
    frame_order = [2, 0, 4, 1, 3]
    intercepts = [-1024.0 - 10 * k for k in range(len(hu))] if rescale_per_frame else [-1024.0] * len(hu)
    stored = np.stack([hu[k] - intercepts[k] for k in frame_order]).astype(np.uint16)

    def item(**attributes):
        entry = Dataset()
        for keyword, value in attributes.items():
            setattr(entry, keyword, value)
        return entry

    def rescale(intercept):
        return item(RescaleSlope=1.0, RescaleIntercept=intercept, RescaleType="HU")

    shared = item(
        PixelMeasuresSequence=Sequence([item(PixelSpacing=[0.7, 0.8], SliceThickness=2.5)]),
        PlaneOrientationSequence=Sequence([item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])]),
    )
    if not rescale_per_frame:
        shared.PixelValueTransformationSequence = Sequence([rescale(intercepts[0])])
    per_frame = []
    for k in frame_order:
        groups = item(PlanePositionSequence=Sequence([item(ImagePositionPatient=[-10.0, -20.0, 100.0 + 2.5 * k])]))
        if rescale_per_frame:
            groups.PixelValueTransformationSequence = Sequence([rescale(intercepts[k])])
        per_frame.append(groups)

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = derived_uid("enhanced", path)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.SeriesInstanceUID = derived_uid("enhanced-series", path)
    ds.InstanceNumber = 1
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.set_pixel_data(stored, "MONOCHROME2", 16)
    ds.save_as(path, enforce_file_format=True)
    return ds.SeriesInstanceUID


@pytest.mark.parametrize("rescale_per_frame", [True, False])
def test_enhanced_multiframe_reads_to_the_same_hu(tmp_path, hu_volume, rescale_per_frame):
    path = tmp_path / "enhanced.dcm"
    uid = _enhanced_ct(hu_volume, path, rescale_per_frame=rescale_per_frame)
    volume = read_ct_series(path)
    np.testing.assert_array_equal(volume.hu, hu_volume)
    np.testing.assert_allclose(volume.slice_positions, 100.0 + 2.5 * np.arange(5))
    assert volume.pixel_spacing == (0.7, 0.8)
    assert volume.series_instance_uid == uid
    assert volume.instance_numbers == (2, 4, 1, 5, 3)  # frame numbers in the file


def test_non_ct_dicom_is_skipped_with_a_warning(tmp_path, hu_volume, caplog):
    paths = _write(hu_volume, tmp_path)
    stray = tmp_path / "report.dcm"
    shutil.copy(paths[0], stray)
    _edit(stray, SOPClassUID=SecondaryCaptureImageStorage, Modality="OT")
    (tmp_path / ".DS_Store").write_bytes(b"\x00junk")
    with caplog.at_level(logging.WARNING, logger="namd.data.dicom_read"):
        volume = read_ct_series(tmp_path)
    np.testing.assert_array_equal(volume.hu, hu_volume)
    assert "report.dcm" in caplog.text and "not a CT image" in caplog.text


@pytest.mark.parametrize(
    "keep_bytes, reason",
    [(-100, "cannot decode pixel data"), (300, "truncated: a DICOM file meta header but no dataset after it"),
     (140, "truncated: a DICOM file meta header"), (700, r"missing SeriesInstanceUID \(file truncated"),
     (396, r"SOP Class UID '1\.2\.840\.' is not a valid UID \(truncated or corrupt\)")],
)
def test_truncated_file_is_named(tmp_path, hu_volume, keep_bytes, reason):
    paths = _write(hu_volume, tmp_path)
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[:keep_bytes])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no raw library warning may escape
        with pytest.raises(DicomSeriesError, match=rf"0003\.dcm: {reason}"):
            read_ct_series(tmp_path)


def test_pydicom_warnings_become_one_log_line_each_naming_the_file(tmp_path, caplog):
    """A real file written by another tool (pydicom's corpus), cut inside its meta header's transfer syntax UID."""
    from pydicom.data import get_testdata_file

    source = get_testdata_file("CT_small.dcm")
    shutil.copy(source, tmp_path / "CT_small.dcm")
    (tmp_path / "cut.dcm").write_bytes(open(source, "rb").read()[:274])
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING):
        warnings.simplefilter("error")
        with pytest.raises(DicomSeriesError) as error:
            read_ct_series(tmp_path)
    truncated = "truncated: a DICOM file meta header but no dataset after it (274 bytes)"
    assert str(error.value) == f"{tmp_path / 'cut.dcm'}: {truncated}"
    (line,) = [(r.name, r.getMessage()) for r in caplog.records]  # pydicom said it twice, and logged it too
    assert line == ("namd.data.dicom_read", f"{tmp_path / 'cut.dcm'}: Invalid value for VR UI: '1.2.840.10008.1.2.'. "
                    "Please see <https://dicom.nema.org/medical/dicom/current/output/html/part05.html#table_6.2-1> for "
                    "allowed values for each VR.")


def test_namd_predict_on_a_folder_with_a_truncated_file_prints_no_raw_warning(tmp_path, capsys, caplog):
    from pydicom.data import get_testdata_file

    from namd.cli import main

    series = tmp_path / "series"
    series.mkdir()
    source = get_testdata_file("CT_small.dcm")
    shutil.copy(source, series / "CT_small.dcm")
    (series / "cut.dcm").write_bytes(open(source, "rb").read()[:274])
    record = {"SCT_PRE_ATT": "Soft", "SCT_EPI_LOC": "Right Upper Lobe", "SCT_LONG_DIA": 12, "SCT_PERP_DIA": 9,
              "SCT_MARGINS": "Smooth", "age": 60, "diagemph": "No", "gender": "Male", "famfather": "No",
              "fammother": "No", "fambrother": "No", "famsister": "No", "famchild": "No"}
    (tmp_path / "record.json").write_text(json.dumps(record))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        code = main(["predict", "--dicom", str(series), "--nodule", "10,10,0", "--record",
                     str(tmp_path / "record.json"), "--model", str(tmp_path / "model"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and not (tmp_path / "out").exists()
    truncated = "truncated: a DICOM file meta header but no dataset after it (274 bytes)"
    assert err == f"namd predict: error: {series / 'cut.dcm'}: {truncated}\n"
    warned = [r.getMessage().split(": ")[0] for r in caplog.records if r.levelno >= logging.WARNING]
    assert warned == [str(series / "cut.dcm")]  # pydicom's one warning, as one line naming the file


def test_non_dicom_file_is_named(tmp_path, hu_volume):
    _write(hu_volume, tmp_path)
    (tmp_path / "notes.txt").write_text("acquired on scanner 3\n" * 20)
    with pytest.raises(DicomSeriesError, match=r"notes\.txt: not a DICOM file"):
        read_ct_series(tmp_path)


def test_mixed_series_uids_are_named(tmp_path, hu_volume):
    _write(hu_volume, tmp_path / "a")
    other_uid = derived_uid("series-b")
    for path in _write(hu_volume, tmp_path / "b", series_instance_uid=other_uid, origin=(0, 0, 300)):
        path.rename(tmp_path / "a" / f"b{path.name}")
    with pytest.raises(DicomSeriesError, match="mixes 2 SeriesInstanceUIDs") as err:
        read_ct_series(tmp_path / "a")
    assert SERIES_UID in str(err.value) and other_uid in str(err.value)


def test_inconsistent_image_size_is_named(tmp_path, hu_volume):
    paths = _write(hu_volume, tmp_path)
    ds = pydicom.dcmread(paths[3])
    ds.set_pixel_data(np.zeros((24, 18), np.uint16), "MONOCHROME2", 16)
    ds.save_as(paths[3])
    with pytest.raises(DicomSeriesError, match=r"0004\.dcm is 24x18 but .*0001\.dcm is 24x20"):
        read_ct_series(tmp_path)


def test_inconsistent_orientation_is_named(tmp_path, hu_volume):
    paths = _write(hu_volume, tmp_path)
    _edit(paths[1], ImageOrientationPatient=[0, 1, 0, 0, 0, -1])
    with pytest.raises(DicomSeriesError, match=r"0002\.dcm has ImageOrientationPatient"):
        read_ct_series(tmp_path)


def test_missing_slice_names_positions_and_neighbours(tmp_path, hu_volume):
    paths = _write(hu_volume, tmp_path)
    paths[2].unlink()
    with pytest.raises(DicomSeriesError, match=r"missing slice between positions 102\.500 mm and 107\.500 mm") as err:
        read_ct_series(tmp_path)
    assert "0002.dcm" in str(err.value) and "0004.dcm" in str(err.value)


def _every_other_slice(tmp_path, **overrides):
    """Slices 1, 3, 5 of a 6-slice 2.5 mm series: 5 mm apart, so no gap against the median spacing."""
    paths = _write(np.zeros((6, 8, 8)), tmp_path, **overrides)
    for path in paths[1::2]:
        path.unlink()
    return paths[::2]


def test_every_other_slice_missing_is_found_by_instance_numbers(tmp_path):
    _every_other_slice(tmp_path)
    with pytest.raises(DicomSeriesError) as error:
        read_ct_series(tmp_path)
    assert str(error.value) == (
        f"{tmp_path}: 2 slice(s) missing by InstanceNumber: 2 at 102.500 mm, 4 at 107.500 mm; e.g. "
        f"{tmp_path / '0001.dcm'} (InstanceNumber 1) and {tmp_path / '0003.dcm'} (InstanceNumber 3) are neighbours "
        "5.000 mm apart")
    with pytest.raises(DicomSeriesError, match="2 slice"):
        index_series(tmp_path, progress=False)


def test_every_other_slice_missing_is_found_by_slice_thickness_without_instance_numbers(tmp_path):
    for path in _every_other_slice(tmp_path):
        ds = pydicom.dcmread(path)
        del ds.InstanceNumber
        ds.save_as(path)
    with pytest.raises(DicomSeriesError) as error:
        read_ct_series(tmp_path)
    assert str(error.value) == (
        f"{tmp_path}: slices are 5.000 mm apart but their nominal spacing (SpacingBetweenSlices, else SliceThickness) "
        "is 2.500 mm: 2 slice(s) missing, at 102.500 mm, 107.500 mm")


def test_a_gapped_protocol_is_no_missing_slice(tmp_path):
    """1 mm slices every 2.5 mm, numbered without a gap or stating SpacingBetweenSlices, are a whole series."""
    _write(np.zeros((4, 8, 8)), tmp_path / "numbered", slice_thickness=1.0, slice_increment=2.5)
    assert read_ct_series(tmp_path / "numbered").slice_spacing == pytest.approx(2.5)
    for path in _write(np.zeros((4, 8, 8)), tmp_path / "stated", slice_thickness=1.0, slice_increment=2.5):
        _edit(path, InstanceNumber=1, SpacingBetweenSlices=2.5)
    assert read_ct_series(tmp_path / "stated").shape == (4, 8, 8)


def test_duplicate_position_is_named(tmp_path, hu_volume):
    paths = _write(hu_volume, tmp_path)
    shutil.copy(paths[1], tmp_path / "0002_copy.dcm")
    with pytest.raises(DicomSeriesError, match=r"0002.*0002_copy\.dcm are both at position 102\.500"):
        read_ct_series(tmp_path)


def test_empty_folder_and_missing_path(tmp_path):
    with pytest.raises(DicomSeriesError, match="empty folder"):
        read_ct_series(tmp_path)
    with pytest.raises(DicomSeriesError, match="no such file"):
        read_ct_series(tmp_path / "absent")


def test_index_lists_each_series_once(tmp_path, hu_volume):
    root = tmp_path / "dicom"
    _write(hu_volume, root / "100001" / "T0" / "s1")
    _write(hu_volume[:3], root / "100001" / "T1" / "s2", series_instance_uid=derived_uid("b"), slice_thickness=1.25)
    (root / "100002").mkdir()
    enhanced_uid = _enhanced_ct(hu_volume, root / "100002" / "enhanced.dcm", rescale_per_frame=True)
    index = index_series(root, progress=False)
    assert list(index.columns) == SERIES_INDEX_COLUMNS
    by_uid = index.set_index("series_instance_uid")
    assert by_uid.loc[SERIES_UID, "path"] == str(root / "100001" / "T0" / "s1")
    assert by_uid.loc[derived_uid("b"), "n_slices"] == 3
    assert by_uid.loc[derived_uid("b"), "slice_spacing"] == pytest.approx(1.25)
    assert by_uid.loc[enhanced_uid, "path"] == str(root / "100002" / "enhanced.dcm")
    row = by_uid.loc[SERIES_UID]
    assert (row.n_slices, row.rows, row.cols) == (5, 24, 20)
    assert (row.pixel_spacing_row, row.pixel_spacing_col) == (0.7, 0.8)
    read_ct_series(by_uid.loc[enhanced_uid, "path"])  # index paths are readable as they are


def test_index_names_unreadable_header(tmp_path, hu_volume):
    _write(hu_volume, tmp_path / "s1")
    (tmp_path / "s1" / "0002.dcm").write_bytes(b"garbage" * 10)
    with pytest.raises(DicomSeriesError, match=r"s1/0002\.dcm: not a DICOM file"):
        index_series(tmp_path, progress=False)


def test_index_rejects_folder_with_two_series(tmp_path, hu_volume):
    _write(hu_volume, tmp_path / "s1")
    for path in _write(hu_volume, tmp_path / "s2", series_instance_uid=derived_uid("b"), origin=(0, 0, 300)):
        path.rename(tmp_path / "s1" / f"b{path.name}")
    with pytest.raises(DicomSeriesError, match="holds files of several series"):
        index_series(tmp_path, progress=False)


def test_index_of_tree_without_ct_fails(tmp_path):
    with pytest.raises(DicomSeriesError, match="no CT series found"):
        index_series(tmp_path, progress=False)


def test_enhanced_frame_without_position_is_named(tmp_path, hu_volume):
    path = tmp_path / "enhanced.dcm"
    _enhanced_ct(hu_volume, path, rescale_per_frame=True)
    ds = pydicom.dcmread(path)
    del ds.PerFrameFunctionalGroupsSequence[2].PlanePositionSequence
    ds.save_as(path)
    with pytest.raises(DicomSeriesError, match=r"enhanced\.dcm \(frame 3\): no PlanePositionSequence > ImagePosition"):
        read_ct_series(path)
