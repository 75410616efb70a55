"""Load a workflow config the way the Snakefile does: YAML, schema-validated, defaults filled."""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path

import yaml

SCHEMA = Path(__file__).parent / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config key is unknown, missing or out of range; the message names it."""


def validate_config(config: dict) -> dict:
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    config = deepcopy(config)
    try:
        validate(config, str(SCHEMA))
    except WorkflowError as err:
        raise ConfigError(_first_line_naming_the_key(str(err))) from None
    return config


def load_config(*paths: str | Path, overrides: dict | None = None) -> dict:
    """Later files override earlier ones key by key, as `snakemake --configfile a b` does."""
    merged: dict = {}
    for path in paths:
        with open(path) as fh:
            _merge(merged, yaml.safe_load(fh) or {})
    if overrides:
        _merge(merged, overrides)
    return validate_config(merged)


def _merge(base: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _first_line_naming_the_key(message: str) -> str:
    lines = [ln for ln in message.splitlines() if ln.strip()]
    head = next((ln for ln in lines if ln.startswith("ValidationError")), lines[0] if lines else message)
    where = next((ln.strip() for ln in lines if ln.strip().startswith("On instance")), "")
    return f"{head.replace('ValidationError: ', 'config: ')} {where}".strip()
