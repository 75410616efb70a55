"""configs/paper.yaml sets every Table 1 row at paper scale, not at the CPU default's sizes."""

import importlib

import pytest
from conftest import ROOT

from namd.config import load_config
from namd.methods import LDM_FAMILY, REUSES, get_method_module
from namd.methods.blocks import merge_params

#: each baseline's keys that size its networks or its sampler; a new baseline must be listed here
SIZE_KEYS = {
    "mcwgan": ("base_channels", "channel_mults", "critic_widths"),
    "corrflownet_ode": ("ae_channels", "ae_mults", "flow_channels", "time_dim", "n_steps"),
    "corrflownet_sde": ("ae_channels", "ae_mults", "flow_channels", "time_dim", "n_steps"),
    "ddlcxr": ("vae_block_out_channels", "vae_layers_per_block", "unet_block_out_channels", "unet_layers_per_block",
               "ddim_steps"),
    "imageflownet_sde": ("base_channels", "channel_mult", "dt"),
    "flux": ("num_layers", "num_single_layers", "num_attention_heads", "attention_head_dim", "num_inference_steps"),
}
DEFAULT = load_config(ROOT / "config.yaml")
PAPER = load_config(ROOT / "config.yaml", ROOT / "configs" / "paper.yaml")
BASELINES = [m for m in DEFAULT["methods"] if m not in LDM_FAMILY and m not in REUSES]


def defaults(method: str) -> dict:
    return importlib.import_module(get_method_module(method)).DEFAULTS


def test_every_baseline_has_its_size_keys_listed():
    assert sorted(BASELINES) == sorted(SIZE_KEYS)


@pytest.mark.parametrize("method", sorted(SIZE_KEYS))
def test_paper_config_sets_every_size_key_of_a_baseline(method):
    own, default = PAPER["methods"][method], defaults(method)
    merge_params(method, default, {k: v for k, v in own.items() if k != "vae"})  # every key known to the method
    for key in SIZE_KEYS[method]:
        assert key in default, f"{method}: {key} is no parameter of the method"
        assert key in own, f"configs/paper.yaml: methods.{method}.{key} is left at the CPU default {default[key]}"
        assert own[key] != default[key] and own[key] != DEFAULT["methods"][method].get(key), \
            f"configs/paper.yaml: methods.{method}.{key} equals the CPU default {default[key]}"


def test_paper_config_sizes_the_latent_family_from_sd15_and_the_paper_budget():
    for key in ("pretrained",):
        assert PAPER["vae"][key] and PAPER["ldm"]["unet"][key]
    assert PAPER["ldm"]["llm"] != DEFAULT["ldm"]["llm"] and PAPER["crop"]["size"] == 64
    assert PAPER["budget"]["pretrain_steps"] > 100 * DEFAULT["budget"]["pretrain_steps"]
    assert PAPER["budget"]["paired_steps"] > 10 * DEFAULT["budget"]["paired_steps"]
