"""NAMDPipeline on tiny models: save/load round trip, seeds, format stamp, input checks."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import LLM
from diffusers import DDIMScheduler, DDPMScheduler, EulerDiscreteScheduler

from namd import __version__
from namd.evaluation.classifier import MalignancyClassifier, build_classifier
from namd.models.schedulers import noise_scheduler
from namd.models.text_encoder import SoftPromptContextEncoder
from namd.models.unet import build_unet
from namd.models.vae import build_vae, decode_latents, encode_latents
from namd.pipeline import NAMDPipeline, PipelineFormatError
from namd.sampling import ddim_sample

REPORT = ("Lung cancer screening with low dose computed tomography performed for this 64 years old female. "
          "A soft nodule, with smooth margin, 8 mm in size is present in the right upper lobe.")


def tiny_pipeline(image_size=16, hu_window=(-1000.0, 400.0)):
    torch.manual_seed(0)
    text = SoftPromptContextEncoder.from_pretrained(LLM, n_sets=2, n_prompt_tokens=2, max_length=64)
    vae = build_vae(sample_size=16, block_out_channels=(32, 32))
    unet = build_unet(sample_size=8, in_channels=8, block_out_channels=(32, 32), num_attention_heads=2,
                      cross_attention_dim=text.context_dim)
    classifier = MalignancyClassifier(build_classifier(image_size=image_size, patch_size=4, embed_dim=32, depth=1,
                                                       num_heads=2))
    return NAMDPipeline(vae=vae, unet=unet, scheduler=noise_scheduler(), text_encoder=text, classifier=classifier,
                        hu_window=hu_window, ddim_steps=2)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline") / "namd_pipeline"
    pipeline = tiny_pipeline(hu_window=(-1200.0, 600.0))
    pipeline.save_pretrained(folder)
    return pipeline, folder


def crop(n=None, seed=0):
    shape = (1, 16, 16) if n is None else (n, 1, 16, 16)
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def run(pipeline, image, report=REPORT, **kwargs):
    return pipeline(image, report, **{"num_samples": 3, "num_inference_steps": 3, "progress": False, **kwargs})


def test_save_load_round_trip_gives_identical_samples(saved):
    pipeline, folder = saved
    assert {p.name for p in folder.iterdir()} >= {"model_index.json", "vae", "unet", "scheduler", "soft_prompts",
                                                  "classifier"}
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_namd_version"] == __version__ and index["hu_window"] == [-1200.0, 600.0]
    assert index["ddim_steps"] == 2
    loaded = NAMDPipeline.from_pretrained(folder)
    assert loaded.hu_window == (-1200.0, 600.0) and loaded.crop_size == 16
    first, again = run(pipeline, crop(), seed=7), run(loaded, crop(), seed=7)
    np.testing.assert_array_equal(first.samples, again.samples)
    np.testing.assert_array_equal(first.probabilities, again.probabilities)
    assert first.samples.shape == (1, 3, 1, 16, 16) and first.samples.dtype == np.float32
    assert np.abs(first.samples).max() <= 1
    assert first.mean.shape == first.variance.shape == (1, 1, 16, 16)
    assert first.probabilities.shape == (1, 3) and ((first.probabilities >= 0) & (first.probabilities <= 1)).all()
    np.testing.assert_allclose(first.probability_std, first.probabilities.std(axis=1))
    other = run(loaded, crop(), seed=8)
    assert not np.array_equal(first.samples, other.samples)


def test_a_batch_seeds_each_baseline_by_its_index(saved):
    pipeline, _ = saved
    images, reports = crop(2), [REPORT, REPORT.replace("8 mm", "14 mm")]
    batch = run(pipeline, images, reports, seed=3)
    assert batch.samples.shape == (2, 3, 1, 16, 16) and batch.probabilities.shape == (2, 3)
    # baseline 0 of a batch is sampled exactly as when it is alone (float rounding aside)
    first = run(pipeline, images[:1], reports[0], seed=3)
    torch.testing.assert_close(torch.from_numpy(batch.samples[:1]), torch.from_numpy(first.samples),
                               atol=1e-5, rtol=1e-5)
    # baseline 1 alone is baseline 0 of its call: other noise than at index 1 of the batch
    alone = run(pipeline, images[1:], reports[1], seed=3)
    assert not np.allclose(batch.samples[1], alone.samples[0])


def test_the_guidance_scale_the_model_was_evaluated_with_is_saved_and_used(saved, tmp_path):
    """ldm.guidance (an option): a pipeline exported with scale w samples with w unless told otherwise."""
    pipeline, _ = saved
    assert pipeline.guidance_scale == 1.0
    parts = {"vae": pipeline.vae, "unet": pipeline.unet, "scheduler": pipeline.scheduler,
             "text_encoder": pipeline.text_encoder, "classifier": pipeline.classifier}
    guided = NAMDPipeline(**parts, hu_window=pipeline.hu_window, ddim_steps=2, guidance_scale=3.0)
    guided.save_pretrained(tmp_path / "guided")
    loaded = NAMDPipeline.from_pretrained(tmp_path / "guided")
    assert loaded.guidance_scale == 3.0
    plain, own = run(pipeline, crop(), seed=1), run(loaded, crop(), seed=1)
    assert np.abs(plain.samples - own.samples).max() > 1e-4
    np.testing.assert_array_equal(run(loaded, crop(), seed=1, guidance_scale=1.0).samples, plain.samples)
    with pytest.raises(ValueError, match="guidance_scale must be >= 0"):
        NAMDPipeline(**parts, guidance_scale=-1)


def test_a_residual_model_is_exported_with_its_scale_and_sampled_around_the_baseline(saved, tmp_path):
    """ldm.diffusion_target: residual (an option): the exported scale is saved, and the sample is the decoded
    baseline latent + residual_std * the U-Net's sample; folders saved without it sample the follow-up latent."""
    pipeline, _ = saved
    assert pipeline.residual_std is None
    parts = {"vae": pipeline.vae, "unet": pipeline.unet, "scheduler": pipeline.scheduler,
             "text_encoder": pipeline.text_encoder, "classifier": pipeline.classifier}
    NAMDPipeline(**parts, hu_window=pipeline.hu_window, ddim_steps=2, residual_std=0.5).save_pretrained(tmp_path / "r")
    loaded = NAMDPipeline.from_pretrained(tmp_path / "r")
    assert loaded.residual_std == 0.5
    image = crop()
    got = run(loaded, image, seed=1, num_inference_steps=2)
    with torch.no_grad():
        condition = encode_latents(loaded.vae, torch.from_numpy(image)[None])
        sampled = ddim_sample(loaded.unet, loaded.scheduler, condition, loaded.text_encoder([REPORT]), ["0"],
                              range(3), num_inference_steps=2, base_seed=1, progress=False)
        expected = decode_latents(loaded.vae, condition + 0.5 * sampled[0]).clamp(-1, 1)
    np.testing.assert_allclose(got.samples[0], expected.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="residual_std must be > 0 or None"):
        NAMDPipeline(**parts, residual_std=0.0)


def test_default_steps_are_the_ones_the_model_was_evaluated_with(saved, caplog):
    caplog.set_level("INFO", logger="namd.progress")  # no terminal here: progress comes as log lines
    saved[0](crop(), REPORT, num_samples=3, batch_size=2)  # ddim_steps 2 from model_index.json
    assert "4/4" in caplog.text


def test_progress_counts_denoising_steps(saved, caplog):
    caplog.set_level("INFO", logger="namd.progress")
    run(saved[0], crop(), progress=True, batch_size=2)  # 3 samples in 2 batches of 3 steps each
    assert "NAMD sampling: 100%" in caplog.text and "6/6" in caplog.text


def test_other_format_version_is_refused_by_file(saved, tmp_path):
    _, folder = saved
    index = json.loads((folder / "model_index.json").read_text())
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "model_index.json").write_text(json.dumps({**index, "_namd_format_version": 0}))
    with pytest.raises(PipelineFormatError, match=r"stale/model_index.json: NAMD pipeline format version 0"):
        NAMDPipeline.from_pretrained(stale)
    with pytest.raises(FileNotFoundError, match="not a saved NAMD pipeline"):
        NAMDPipeline.from_pretrained(tmp_path)


def test_bad_inputs_and_mismatched_parts(saved):
    pipeline, _ = saved
    with pytest.raises(ValueError, match=r"\(1, 16, 16\) or \(B, 1, 16, 16\)"):
        run(pipeline, np.zeros((1, 32, 32), np.float32))
    with pytest.raises(ValueError, match=r"in \[-1, 1\]"):
        run(pipeline, crop() * 3)
    with pytest.raises(ValueError, match="one non-empty string per baseline crop"):
        run(pipeline, crop(2), REPORT)
    with pytest.raises(ValueError, match="classifier image size is 32 but the VAE's sample_size"):
        tiny_pipeline(image_size=32)


def old_path_samples(pipeline, image, report, *, num_samples, steps, seed):
    """What NAMDPipeline.__call__ sampled before its scheduler was the sampler: DDIM over the training config."""
    condition = encode_latents(pipeline.vae, torch.from_numpy(image)[None])
    latents = ddim_sample(pipeline.unet, noise_scheduler().config, condition, pipeline.text_encoder([report]), ["0"],
                          range(num_samples), num_inference_steps=steps, base_seed=seed, progress=False)
    return decode_latents(pipeline.vae, latents.flatten(0, 1)).clamp(-1, 1).float().numpy()[None]


def test_the_scheduler_is_the_ddim_sampler_of_the_training_schedule(saved):
    pipeline, folder = saved
    training = noise_scheduler()
    assert isinstance(pipeline.scheduler, DDIMScheduler)  # built with the training DDPMScheduler, as from_workflow is
    for key in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type", "clip_sample"):
        assert pipeline.scheduler.config[key] == training.config[key]
    assert json.loads((folder / "model_index.json").read_text())["scheduler"] == ["diffusers", "DDIMScheduler"]
    saved_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert saved_config["_class_name"] == "DDIMScheduler"
    assert isinstance(NAMDPipeline.from_pretrained(folder).scheduler, DDIMScheduler)


def test_samples_are_those_of_ddim_over_the_training_config(saved):
    pipeline, _ = saved
    new = run(pipeline, crop(), seed=7)
    np.testing.assert_array_equal(new.samples, old_path_samples(pipeline, crop(), REPORT, num_samples=3, steps=3,
                                                                seed=7))


def test_a_folder_saved_with_the_training_ddpm_scheduler_loads_and_samples_as_before(saved, tmp_path):
    pipeline, folder = saved
    old = tmp_path / "exported_before"
    shutil.copytree(folder, old)
    shutil.rmtree(old / "scheduler")
    noise_scheduler().save_pretrained(old / "scheduler")
    index = json.loads((old / "model_index.json").read_text())
    (old / "model_index.json").write_text(json.dumps({**index, "scheduler": ["diffusers", "DDPMScheduler"]}))
    loaded = NAMDPipeline.from_pretrained(old)
    assert isinstance(loaded.scheduler, DDIMScheduler)
    np.testing.assert_array_equal(run(loaded, crop(), seed=7).samples, run(pipeline, crop(), seed=7).samples)


def test_a_swapped_scheduler_changes_the_sampler_or_is_refused_by_name(saved):
    pipeline, _ = saved
    held = pipeline.scheduler
    before = run(pipeline, crop(), seed=7).samples
    try:
        pipeline.scheduler = DDIMScheduler.from_config(held.config, timestep_spacing="trailing")
        assert not np.array_equal(run(pipeline, crop(), seed=7).samples, before)
        pipeline.scheduler = DDIMScheduler.from_config(held.config)
        np.testing.assert_array_equal(run(pipeline, crop(), seed=7).samples, before)
        for cls in (EulerDiscreteScheduler, DDPMScheduler):
            pipeline.scheduler = cls.from_config(held.config)
            with pytest.raises(ValueError, match=rf"NAMDPipeline.scheduler is {cls.__name__},.*supports DDIMScheduler"):
                run(pipeline, crop())
    finally:
        pipeline.scheduler = held


def test_loading_with_a_scheduler_the_sampler_cannot_use_is_refused(saved):
    _, folder = saved
    euler = EulerDiscreteScheduler.from_pretrained(folder, subfolder="scheduler")
    with pytest.raises(ValueError, match="NAMDPipeline: the scheduler is EulerDiscreteScheduler"):
        NAMDPipeline.from_pretrained(folder, scheduler=euler)
