"""The registry of generative methods (Table 1 rows). Each module registers one class.

Kept free of heavy imports: the Snakefile reads it to plan the DAG.
"""

from __future__ import annotations

import importlib

# method name -> module that defines it; modules import lazily so one method's heavy
# dependencies never slow another's rule (nor the Snakefile, which reads UPSTREAM)
_MODULES: dict[str, str] = {
    "namd": "namd.methods.namd",
    "namd_unaligned": "namd.methods.namd",
    "namd_no_context": "namd.methods.namd",
    "mcwgan": "namd.methods.mcwgan",
    "corrflownet_ode": "namd.methods.corrflownet",
    "corrflownet_sde": "namd.methods.corrflownet",
    "flux": "namd.methods.flux",
    "sd15": "namd.methods.sd15",
    "ddlcxr": "namd.methods.ddlcxr",
    "imageflownet_sde": "namd.methods.imageflownet",
}

#: trained models a method starts from, besides the data: "vae" (its VAE, whose cached latents
#: it trains on; which VAE is the method's `vae` config key), "ldm_unconditional" (the
#: unconditional diffusion stage on that VAE's latents) and "perceptual" (a frozen feature
#: network for a perceptual loss: rule train_perceptual's, never the evaluation classifier)
UPSTREAM: dict[str, tuple[str, ...]] = {
    "namd": ("vae", "ldm_unconditional"),
    "namd_unaligned": ("vae", "ldm_unconditional"),
    "mcwgan": ("perceptual",),
    "flux": ("vae",),
    "sd15": ("vae", "ldm_unconditional"),
}

#: methods that train nothing: they sample the named method's trained model (results/models/<that>)
#: another way, from that method's inputs; their training budget is zero
REUSES: dict[str, str] = {
    "namd_no_context": "namd",
}

#: methods built on NAMD's latent-diffusion settings (the config's `ldm` section)
LDM_FAMILY = ("namd", "namd_unaligned", "sd15")
_REGISTRY: dict[str, type] = {}


class UnknownMethodError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def register(cls):
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    if "title" not in vars(cls):  # its own: an inherited title would give two rows one name
        raise ValueError(f"{cls.__qualname__} ({cls.name}) sets no title (GenerativeMethod.title)")
    _REGISTRY[cls.name] = cls
    return cls


def known_methods() -> list[str]:
    return sorted(_MODULES)


def get_method(name: str):
    """The GenerativeMethod subclass registered under `name`."""
    module = get_method_module(name)
    if name not in _REGISTRY:
        importlib.import_module(module)
    return _REGISTRY[name]


def method_titles(names) -> tuple[dict[str, str], dict[str, str]]:
    """Table 1's row titles of these methods, and the LaTeX ones of those that have their own."""
    classes = {name: get_method(name) for name in names}
    return ({name: c.title for name, c in classes.items()},
            {name: c.latex_title for name, c in classes.items() if c.latex_title})


def trained_model_of(name: str) -> str:
    """The method whose trained model `name` samples: itself, or the one it reuses."""
    get_method_module(name)
    return REUSES.get(name, name)


def upstream_of(name: str) -> tuple[str, ...]:
    get_method_module(name)
    return UPSTREAM.get(name, ())


def get_method_module(name: str) -> str:
    if name not in _MODULES:
        raise UnknownMethodError(f"unknown method {name!r}; known methods: {', '.join(known_methods())}")
    return _MODULES[name]


__all__ = ["LDM_FAMILY", "REUSES", "get_method", "known_methods", "method_titles", "register", "trained_model_of",
           "upstream_of"]
