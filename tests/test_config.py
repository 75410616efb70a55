import pytest
import yaml
from conftest import ROOT

from namd.config import ConfigError, load_config, validate_config


def default():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_default_config_is_valid():
    config = load_config(ROOT / "config.yaml")
    assert config["crop"]["size"] == 32


@pytest.mark.parametrize(
    "edit, named",
    [
        (lambda c: c["crop"].update(sizee=32), "sizee"),
        (lambda c: c.update(sede=1), "sede"),
        (lambda c: c["crop"].update(size=30), "multiple of 8"),
        (lambda c: c["cohort"]["split"].update(test_fraction=1.5), "1.5"),
        (lambda c: c["cohort"].update(source="nlsst"), "nlsst"),
        (lambda c: c.update(device="gpu"), "gpu"),
        (lambda c: c["ldm"]["scheduler"].update(zero_terminal_snr=True, prediction_type="epsilon"),
         r"'v_prediction' was expected On instance\['ldm'\]\['scheduler'\]\['prediction_type'\]"),
    ],
)
def test_typos_and_out_of_range_values_are_named(edit, named):
    config = default()
    edit(config)
    with pytest.raises(ConfigError, match=named):
        validate_config(config)


def test_nlst_source_needs_a_folder():
    config = default()
    config["cohort"]["source"] = "nlst"
    with pytest.raises(ConfigError, match="nlst_dir"):
        validate_config(config)
