"""The contract every registered generative method keeps (namd.methods.base.GenerativeMethod).

Parametrised over the registry itself (`namd.methods.known_methods()`), the way diffusers'
PipelineTesterMixin covers every pipeline: a newly registered method is checked without a line
here, and fails every check until TINY below gives its tiny CPU params. Each method is built
untrained at 16 px with the tiny upstream folders of conftest.py (VAE, stage-1 U-Net, perceptual
network) that `namd.methods.upstream_of` says it needs. A method that reuses another's model
(`namd.methods.REUSES`) is built by saving that model and loading it as the reusing method.

Checked: generate() gives (B, K, 1, S, S) in [-1, 1] (K = len(seeds) for a stochastic method,
1 for a deterministic one, whose seeds change nothing); a (pair, seed) sample does not depend on
the batch it is made in; the one generation loop stores K or 1 sample(s) per pair; a
save_pretrained / from_pretrained round trip gives the same samples; one or two training steps
give finite losses and move the weights.
"""

import math

import pytest
import torch
from conftest import LLM, N_EHR, N_FEATURES, TINY_SIZE, select, tiny_batch

from namd.generate import generate_followups
from namd.methods import REUSES, get_method, known_methods, trained_model_of, upstream_of
from namd.methods.base import DataSpec, GenerativeMethod, MethodContext

S = TINY_SIZE
SEED = 7  # MethodContext.seed: the base of every (pair, seed) generator
_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 8.5e-4, "beta_end": 1.2e-2, "beta_schedule": "linear"}
_NAMD = {
    "llm": LLM, "n_sets": 2, "n_prompt_tokens": 2, "max_length": 64, "latent_channels": 4, "scheduler": _SCHEDULER,
    "lr": 1e-3, "prompt_lr": 1e-2, "ddim_steps": 2, "eta": 0.0, "sample_batch_size": 4,
}
_CORRFLOWNET = {"ae_channels": 8, "ae_mults": [1, 2], "flow_channels": 8, "time_dim": 16, "n_steps": 2}

#: tiny CPU params of every method that trains a model (namd.methods.trained_model_of); batch sizes
#: of generation are below the 6 (pair, seed) samples of a test batch, so chunking is exercised too
TINY: dict[str, dict] = {
    "namd": _NAMD,
    # the ablation runs with the standardised context, so that path (a BatchNorm) is covered too
    "namd_unaligned": {**_NAMD, "context_norm": "batch"},
    "sd15": {"llm": LLM, "max_text_tokens": 24, "latent_channels": 4, "scheduler": _SCHEDULER, "lr": 1e-3,
             "ddim_steps": 2, "eta": 0.0, "sample_batch_size": 4},
    "mcwgan": {"base_channels": 8, "channel_mults": [1, 2], "critic_widths": [8, 16], "n_critic": 1},
    "corrflownet_ode": _CORRFLOWNET,
    "corrflownet_sde": _CORRFLOWNET,
    "flux": {"num_layers": 1, "num_single_layers": 1, "num_attention_heads": 2, "attention_head_dim": 16,
             "axes_dims_rope": [4, 6, 6], "max_text_tokens": 16, "num_inference_steps": 2,
             "generate_batch_size": 4},
    "ddlcxr": {"vae_block_out_channels": [8, 16], "vae_norm_groups": 4, "latent_channels": 2, "d_model": 16,
               "ehr_heads": 2, "ehr_feedforward": 32, "unet_block_out_channels": [16, 32], "unet_heads": 2,
               "unet_norm_groups": 8, "num_train_timesteps": 100, "ddim_steps": 2, "generate_batch_size": 4},
    "imageflownet_sde": {"base_channels": 8, "channel_mult": [1, 2], "attention_sizes": [8], "head_channels": 8,
                         "norm_groups": 4, "dt": 2.5, "generate_batch_size": 4},
}

METHODS = known_methods()
#: the methods that train a model of their own; a reusing method's training is its model's
TRAINED = sorted({trained_model_of(name) for name in METHODS})


pytestmark = pytest.mark.usefixtures("one_thread")


def context_for(name: str, tiny_upstream) -> MethodContext:
    kinds = upstream_of(trained_model_of(name))
    unknown = [kind for kind in kinds if kind not in tiny_upstream]
    if unknown:
        pytest.fail(f"{name}: needs upstream {unknown}, for which tests/conftest.py has no tiny folder "
                    "(add a builder to TinyUpstream.BUILDERS there)")
    return MethodContext(device="cpu", upstream={kind: tiny_upstream[kind] for kind in kinds}, seed=SEED)


def build_trained_model(name: str, tiny_upstream) -> GenerativeMethod:
    """A fresh, untrained model of a method that trains one (a TRAINED name), from its TINY params."""
    if name not in TINY:
        pytest.fail(f"{name}: registered, but tests/test_method_contract.py has no TINY params for it; "
                    "add an entry that builds it at 16 px on the CPU")
    torch.manual_seed(0)
    spec = DataSpec(image_size=S, n_ehr=N_EHR, n_nodule_features=N_FEATURES)
    return get_method(name)(TINY[name], spec, context_for(name, tiny_upstream))


def perturb(method: GenerativeMethod) -> None:
    """Move every trainable weight, as training would, so a round trip that dropped one shows."""
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in method.parameters():
            if p.requires_grad:
                p.add_(0.02 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def build(name: str, tiny_upstream, tmp_dir) -> GenerativeMethod:
    """Any registered method in eval mode; a reusing one loads the (perturbed) model it reuses."""
    if name not in REUSES:
        return build_trained_model(name, tiny_upstream).eval()
    model = build_trained_model(trained_model_of(name), tiny_upstream)
    perturb(model)
    model.save_pretrained(tmp_dir / trained_model_of(name))
    return get_method(name).from_pretrained(tmp_dir / trained_model_of(name), context_for(name, tiny_upstream)).eval()


@pytest.fixture(scope="module")
def built(tiny_upstream, tmp_path_factory):
    """name -> its method, built once for the read-only generation checks."""
    cache: dict[str, GenerativeMethod] = {}

    def get(name: str) -> GenerativeMethod:
        if name not in cache:
            cache[name] = build(name, tiny_upstream, tmp_path_factory.mktemp(name))
        return cache[name]

    return get


def k_of(name: str, seeds) -> int:
    return len(seeds) if get_method(name).stochastic else 1


def test_every_tiny_entry_is_a_registered_trained_model():
    assert sorted(TINY) == TRAINED, "TINY must hold exactly the methods that train a model"


@pytest.mark.parametrize("name", METHODS)
def test_registry_entry(name, tiny_upstream):
    cls = get_method(name)
    assert issubclass(cls, GenerativeMethod) and cls.name == name
    assert isinstance(cls.stochastic, bool)
    reused = trained_model_of(name)
    assert reused in TINY, f"{name}: no TINY params for {reused!r}, the model it samples"
    assert trained_model_of(reused) == reused, f"{name}: reuses {reused!r}, which itself reuses another model"
    missing = [kind for kind in upstream_of(reused) if kind not in tiny_upstream]
    assert not missing, f"{name}: tests/conftest.py has no tiny upstream folder for {missing}"


@pytest.mark.parametrize("name", METHODS)
def test_generate_gives_k_samples_in_range(name, built):
    method, batch, seeds = built(name), tiny_batch(3), [0, 1, 2]
    out = method.generate(batch, seeds)
    k = k_of(name, seeds)
    assert tuple(out.shape) == (3, k, 1, S, S)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert out.min() >= -1 and out.max() <= 1, f"{name}: samples in [{out.min():.3f}, {out.max():.3f}]"
    if method.stochastic:
        for a in range(k):
            for b in range(a + 1, k):
                assert not torch.allclose(out[:, a], out[:, b]), f"{name}: seeds {seeds[a]} and {seeds[b]} agree"
    else:  # a deterministic method ignores the seeds
        torch.testing.assert_close(method.generate(batch, [5]), out, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", METHODS)
def test_a_pair_and_seed_give_one_sample_whatever_the_batch(name, built):
    method, batch = built(name), tiny_batch(3)
    seeds = [0, 1] if method.stochastic else [0]
    out = method.generate(batch, seeds)
    alone = method.generate(select(batch, [1]), seeds[::-1])  # alone, and with the seeds in another order
    torch.testing.assert_close(alone[0], out[1].flip(0), atol=1e-5, rtol=0)
    reordered = method.generate(select(batch, [2, 1, 0]), seeds)
    torch.testing.assert_close(reordered, out.flip(0), atol=1e-5, rtol=0)
    # among other pairs: pair 1 with two pairs of another batch
    other = tiny_batch(3, seed=1)
    mixed = {k: torch.cat([other[k][:1], batch[k][1:2], other[k][1:2]]) if torch.is_tensor(batch[k])
             else [other[k][0], batch[k][1], other[k][1]] for k in batch}
    torch.testing.assert_close(method.generate(mixed, seeds)[1], out[1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", METHODS)
def test_generation_loop_stores_k_samples_per_pair(name, built):
    """namd.generate: K = len(seeds) samples per pair for a stochastic method, one (seed 0) for a
    deterministic one; batches of 2 give what one batch of all 5 pairs gives."""
    method, batch, seeds = built(name), tiny_batch(5, seed=2), [3, 4, 5]
    dataset = [{k: v[i] for k, v in batch.items()} for i in range(5)]
    arrays = generate_followups(method, dataset, seeds, batch_size=2, progress=False)
    k = k_of(name, seeds)
    assert arrays["seeds"].tolist() == (seeds if method.stochastic else [0])
    assert arrays["pair_id"].tolist() == batch["pair_id"]
    assert arrays["images"].shape == (5, k, 1, S, S)
    direct = method.generate(batch, arrays["seeds"].tolist())
    torch.testing.assert_close(torch.from_numpy(arrays["images"]), direct.clamp(-1, 1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", METHODS)
def test_save_and_load_give_the_same_samples(name, tiny_upstream, tmp_path):
    context = context_for(name, tiny_upstream)
    batch = tiny_batch(2, seed=3)
    seeds = [0, 1]
    if name in REUSES:  # its model folder is the reused method's: loading it twice must agree
        first = build(name, tiny_upstream, tmp_path)
        torch.manual_seed(123)  # whatever was not loaded would now come out different
        second = get_method(name).from_pretrained(tmp_path / trained_model_of(name), context).eval()
        torch.testing.assert_close(second.generate(batch, seeds), first.generate(batch, seeds))
        saved = get_method(trained_model_of(name)).from_pretrained(tmp_path / trained_model_of(name), context)
        assert second.state_dict().keys() == saved.state_dict().keys()
        for key, value in saved.state_dict().items():
            torch.testing.assert_close(second.state_dict()[key], value, atol=0, rtol=0, msg=key)
        return
    method = build_trained_model(name, tiny_upstream)
    perturb(method)
    method.eval()
    expected = method.generate(batch, seeds)
    method.save_pretrained(tmp_path / name)
    torch.manual_seed(123)  # whatever was not loaded would now come out different
    loaded = get_method(name).from_pretrained(tmp_path / name, context).eval()
    assert type(loaded) is type(method)
    torch.testing.assert_close(loaded.generate(batch, seeds), expected)


@pytest.mark.parametrize("name", TRAINED)
def test_training_steps_give_finite_losses(name, tiny_upstream):
    """Two optimisation steps as namd.training.fit takes them (schedulers placed by the run's
    length: two-phase methods run both phases), then a validation pass."""
    method = build_trained_model(name, tiny_upstream).train()
    optimizers = method.configure_optimizers()
    schedulers = method.configure_schedulers(optimizers, 2)
    before = {k: v.detach().clone() for k, v in method.state_dict().items() if v.is_floating_point()}
    for step in range(2):
        losses = method.training_step(tiny_batch(3, seed=10 + step), optimizers, step, 1.0)
        assert math.isfinite(float(losses["loss"].detach())), f"{name} step {step}: {losses}"
        for scheduler in schedulers.values():
            scheduler.step()
    after = method.state_dict()
    assert any(not torch.equal(v, after[k]) for k, v in before.items()), f"{name}: training changed no weight"
    method.eval()
    val = method.validation_losses(tiny_batch(3, seed=20))
    assert math.isfinite(float(val["loss"])), f"{name} validation: {val}"
