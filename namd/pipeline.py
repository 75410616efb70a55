"""Predict one nodule's one-year follow-up and its malignancy from a baseline crop and a report.

`NAMDPipeline` is a diffusers `DiffusionPipeline`: `vae` (AutoencoderKL), `unet`
(UNet2DConditionModel, 8 input channels) and `scheduler` are registered components, so
`save_pretrained` writes them in diffusers' own layout with a `model_index.json`. The scheduler is
the sampler: a DDIMScheduler over the training schedule's betas and prediction_type, and
`pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, ...)` changes how it samples;
one `namd.sampling` cannot step (namd.sampling.SAMPLERS) is refused by name. Folders exported
before held the training DDPMScheduler in scheduler/; it is turned into that same DDIM sampler on
load, so they sample as they always did.

The soft-prompt text encoder and the evaluation classifier are not diffusers, transformers or
timm-hub classes, and DiffusionPipeline.save_pretrained only knows those: it would log "cannot
be saved" and write `[null, null]` for them. So they are plain attributes (optional `__init__`
arguments, which diffusers passes through `from_pretrained` untouched) saved by their own code:
`soft_prompts/` (the trained prompts plus the LLM's name; the frozen LLM is reloaded from where
it came from, never copied) and `classifier/` (the evaluator: ensemble.json and one timm `save_for_hf`
folder per member, or a single such folder; `namd.evaluation.classifier.load_classifier` reads both).

model_index.json also holds the HU window the crops are mapped with and a version stamp
(`_namd_version`, `_namd_format_version`); a folder of another format version is refused by name.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, DiffusionPipeline, UNet2DConditionModel

from namd import __version__
from namd.data.crops import DEFAULT_WINDOW
from namd.evaluation.classifier import ClassifierEnsemble, MalignancyClassifier, load_classifier
from namd.methods import get_method
from namd.methods.base import GenerativeMethod
from namd.methods.latent_diffusion import guidance_settings
from namd.methods.latent_diffusion import residual_std as params_residual_std
from namd.methods.namd import NAMD
from namd.models.text_encoder import SoftPromptContextEncoder
from namd.models.unet import load_unet
from namd.models.vae import decode_latents, encode_latents, load_vae
from namd.progress import progress_bar
from namd.sampling import check_sampler, ddim_from_training, ddim_sample

#: bump when the saved folder's layout or meaning changes; older folders are then refused
PIPELINE_FORMAT_VERSION = 1
PIPELINE_INDEX = "model_index.json"
SOFT_PROMPTS_DIR = "soft_prompts"
CLASSIFIER_DIR = "classifier"


class PipelineFormatError(ValueError):
    """A model folder this version of namd cannot read (another format version, or no NAMD pipeline)."""


@dataclass(frozen=True)
class NAMDPrediction:
    """K sampled follow-ups per baseline and what the evaluation classifier makes of them.

    Variances and standard deviations are over the K samples with ddof = 0, as in the
    evaluation (Figures 3 and 5).
    """

    samples: np.ndarray  # (B, K, 1, S, S) float32 in [-1, 1]
    mean: np.ndarray  # (B, 1, S, S) pixel-wise mean follow-up
    variance: np.ndarray  # (B, 1, S, S) pixel-wise variance, in [-1, 1] units squared
    probabilities: np.ndarray  # (B, K) malignancy probability of each sample
    probability_mean: np.ndarray  # (B,)
    probability_std: np.ndarray  # (B,)

    @classmethod
    def from_samples(cls, samples: np.ndarray, probabilities: np.ndarray) -> NAMDPrediction:
        return cls(samples=samples, mean=samples.mean(axis=1), variance=samples.var(axis=1),
                   probabilities=probabilities, probability_mean=probabilities.mean(axis=1),
                   probability_std=probabilities.std(axis=1))


class NAMDPipeline(DiffusionPipeline):
    """Baseline crop(s) + report(s) -> K follow-up crops each, with malignancy probabilities."""

    def __init__(
        self,
        vae: AutoencoderKL,
        unet: UNet2DConditionModel,
        scheduler: DDIMScheduler | DDPMScheduler,
        text_encoder: SoftPromptContextEncoder | None = None,
        classifier: MalignancyClassifier | ClassifierEnsemble | None = None,
        hu_window: list[float] | tuple[float, float] = DEFAULT_WINDOW,
        ddim_steps: int = 50,
        guidance_scale: float = 1.0,
        residual_std: float | None = None,
    ):
        # Optional only in form: diffusers treats arguments with defaults as pass-through, not components.
        if text_encoder is None or classifier is None:
            raise ValueError("NAMDPipeline needs a text_encoder (SoftPromptContextEncoder) and a classifier "
                             "(ClassifierEnsemble or MalignancyClassifier)")
        super().__init__()
        low, high = (float(v) for v in hu_window)
        if not high > low:
            raise ValueError(f"NAMDPipeline: hu_window must be (low, high) with high > low, got {tuple(hu_window)}")
        latent_channels, size = vae.config.latent_channels, vae.config.sample_size
        checks = (
            ("U-Net in_channels", unet.config.in_channels, 2 * latent_channels,
             "twice the VAE's latent_channels (noisy follow-up + baseline latent)"),
            ("U-Net out_channels", unet.config.out_channels, latent_channels, "the VAE's latent_channels"),
            ("U-Net cross_attention_dim", unet.config.cross_attention_dim, text_encoder.context_dim,
             f"the hidden size of LLM {text_encoder.llm_name!r}"),
            ("classifier image size", classifier.image_size, size, "the VAE's sample_size (the crop size)"),
        )
        for what, found, expected, whose in checks:
            if found != expected:
                raise ValueError(f"NAMDPipeline: {what} is {found} but {whose} is {expected}")
        if isinstance(scheduler, DDPMScheduler):
            # the training schedule, as folders exported before held it: DDIM over its betas is what they sampled with
            scheduler = ddim_from_training(scheduler.config)
        check_sampler(scheduler, "NAMDPipeline: the scheduler")
        self.register_modules(vae=vae, unet=unet, scheduler=scheduler)
        if int(ddim_steps) < 1:
            raise ValueError(f"NAMDPipeline: ddim_steps must be at least 1, got {ddim_steps}")
        if not float(guidance_scale) >= 0:
            raise ValueError(f"NAMDPipeline: guidance_scale must be >= 0, got {guidance_scale}")
        if residual_std is not None and not float(residual_std) > 0:
            raise ValueError(f"NAMDPipeline: residual_std must be > 0 or None, got {residual_std}")
        self.register_to_config(hu_window=[low, high], ddim_steps=int(ddim_steps),
                                guidance_scale=float(guidance_scale),
                                residual_std=None if residual_std is None else float(residual_std),
                                _namd_version=__version__,
                                _namd_format_version=PIPELINE_FORMAT_VERSION)
        self.text_encoder = text_encoder.eval()
        self.classifier = classifier.eval()

    # -- what a caller needs to prepare inputs ------------------------------------------------------
    @property
    def crop_size(self) -> int:
        return int(self.vae.config.sample_size)

    @property
    def ddim_steps(self) -> int:
        """The DDIM steps the model was evaluated with (model_index.json); 50, the paper's, for older folders."""
        return int(self.config.get("ddim_steps", 50))

    @property
    def guidance_scale(self) -> float:
        """The classifier-free guidance scale the model was evaluated with (ldm.guidance.scale); 1: none."""
        return float(self.config.get("guidance_scale", 1.0))

    @property
    def residual_std(self) -> float | None:
        """The scale of the residual the U-Net diffuses (ldm.diffusion_target: residual); None: the follow-up latent."""
        value = self.config.get("residual_std")
        return None if value is None else float(value)

    @property
    def hu_window(self) -> tuple[float, float]:
        low, high = self.config.hu_window
        return float(low), float(high)

    def to(self, *args, **kwargs) -> NAMDPipeline:
        """diffusers moves registered components only; the text encoder and classifier follow their device."""
        super().to(*args, **kwargs)
        self.text_encoder.to(self.device)
        self.classifier.to(self.device)
        return self

    # -- persistence --------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | Path, **kwargs) -> None:
        """diffusers' folder (model_index.json, vae/, unet/, scheduler/) plus soft_prompts/ and classifier/."""
        super().save_pretrained(save_directory, **kwargs)
        self.text_encoder.save_soft_prompts(Path(save_directory) / SOFT_PROMPTS_DIR)
        self.classifier.save_pretrained(Path(save_directory) / CLASSIFIER_DIR)

    @classmethod
    def check_format(cls, folder: str | Path) -> dict[str, Any]:
        """model_index.json of a folder this namd can load; PipelineFormatError naming the file otherwise."""
        index = Path(folder) / PIPELINE_INDEX
        if not index.is_file():
            raise FileNotFoundError(f"{index}: no such file; {folder} is not a saved NAMD pipeline")
        try:
            config = json.loads(index.read_text())
        except json.JSONDecodeError as err:
            raise PipelineFormatError(f"{index}: not valid JSON ({err})") from err
        if config.get("_class_name") != cls.__name__:
            raise PipelineFormatError(f"{index}: holds a {config.get('_class_name')!r}, not a {cls.__name__}")
        found = config.get("_namd_format_version")
        if found != PIPELINE_FORMAT_VERSION:
            raise PipelineFormatError(
                f"{index}: NAMD pipeline format version {found} (written by namd {config.get('_namd_version', '?')}), "
                f"but namd {__version__} reads format version {PIPELINE_FORMAT_VERSION}; re-export the model with "
                "this version (NAMDPipeline.from_workflow(...).save_pretrained(...))"
            )
        return config

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs) -> NAMDPipeline:
        """Load a folder written by save_pretrained (local only: the soft prompts are read from disk).

        The folder is checked first (check_format): another format version, or no NAMD pipeline,
        is refused with PipelineFormatError naming model_index.json.

        Args:
            pretrained_model_name_or_path: the saved folder (model_index.json, vae/, unet/,
                scheduler/, soft_prompts/, classifier/); a local path, not a Hub name.
            **kwargs: `text_encoder=` (a SoftPromptContextEncoder) or `classifier=` (a
                MalignancyClassifier or ClassifierEnsemble) replace the saved ones; the rest go to
                diffusers' `DiffusionPipeline.from_pretrained`.

        Returns:
            The NAMDPipeline, on the CPU (move it with `.to(device)`).

        Example:
            ```py
            >>> from namd.pipeline import NAMDPipeline
            >>> pipe = NAMDPipeline.from_pretrained("results/models/namd_pipeline").to("cuda")
            >>> pipe.crop_size, pipe.hu_window, pipe.ddim_steps
            ```
        """
        folder = Path(pretrained_model_name_or_path)
        cls.check_format(folder)
        if "text_encoder" not in kwargs:
            kwargs["text_encoder"] = SoftPromptContextEncoder.from_soft_prompts(folder / SOFT_PROMPTS_DIR)
        if "classifier" not in kwargs:
            kwargs["classifier"] = load_classifier(folder / CLASSIFIER_DIR)
        return super().from_pretrained(folder, **kwargs)

    @classmethod
    def from_workflow(
        cls, namd_model_dir: str | Path, classifier_dir: str | Path, *, hu_window: Sequence[float] = DEFAULT_WINDOW
    ) -> NAMDPipeline:
        """Assemble from the workflow's folders: results/models/namd (or namd_unaligned) and results/models/classifier.

        The VAE is the one method.json names in upstream["vae"]; a relative path there is relative to
        the workflow's working directory, found as the ancestor of the model folder that holds it.
        The workflow does not record its HU window in the model folder, so it is given here
        (default: the config's lung window). method.json is read by the methods' own
        `GenerativeMethod.read_meta`; its `params.ddim_steps`, `params.guidance.scale` and (a residual
        model's) `params.residual_std` become the pipeline's ddim_steps, guidance_scale and residual_std.

        Args:
            namd_model_dir: a trained NAMD method's folder (method.json, unet/, scheduler/, soft_prompts/).
            classifier_dir: the evaluator's folder (rule train_classifier's results/models/classifier).
            hu_window: (low, high) HU the workflow's crops were windowed with (config crop.hu_window).

        Returns:
            The NAMDPipeline, on the CPU; `save_pretrained` turns it into a folder `from_pretrained` loads.

        Raises:
            FileNotFoundError: no method.json, or the upstream VAE folder it names is not found.
            PipelineFormatError: method.json is no valid JSON, names no NAMD method (namd or
                namd_unaligned), or lacks params.latent_channels or upstream.vae.

        Example:
            ```py
            >>> from namd.pipeline import NAMDPipeline
            >>> pipe = NAMDPipeline.from_workflow("results/models/namd", "results/models/classifier",
            ...                                   hu_window=(-1000, 400))
            >>> pipe.save_pretrained("results/models/namd_pipeline")
            ```
        """
        model_dir = Path(namd_model_dir)
        meta_path = model_dir / "method.json"
        try:
            meta = GenerativeMethod.read_meta(model_dir)  # any method's; FileNotFoundError when there is none
        except ValueError as err:  # not valid JSON, or no method named
            raise PipelineFormatError(str(err)) from err
        name = meta["method"]
        try:
            is_namd = issubclass(get_method(name), NAMD)
        except KeyError:
            is_namd = False
        if not is_namd:
            raise PipelineFormatError(f"{meta_path}: holds method {name!r}, not NAMD (namd or namd_unaligned)")
        try:
            latent_channels, vae_path = meta["params"]["latent_channels"], meta["upstream"]["vae"]
        except (KeyError, TypeError) as err:
            raise PipelineFormatError(f"{meta_path}: not a NAMD method.json (needs "
                                      f"params.latent_channels and upstream.vae): {err!r}") from err
        vae = load_vae(_upstream_folder(vae_path, model_dir, meta_path), in_channels=1,
                       latent_channels=latent_channels)
        text_encoder = SoftPromptContextEncoder.from_soft_prompts(model_dir / SOFT_PROMPTS_DIR)
        unet = load_unet(model_dir / "unet", in_channels=2 * latent_channels,
                         cross_attention_dim=text_encoder.context_dim)
        # the method saved its training schedule; the pipeline holds the DDIM sampler over its betas
        scheduler = ddim_from_training(DDPMScheduler.from_pretrained(model_dir / "scheduler").config)
        classifier = load_classifier(classifier_dir)
        return cls(vae=vae, unet=unet, scheduler=scheduler, text_encoder=text_encoder, classifier=classifier,
                   hu_window=hu_window, ddim_steps=int(meta["params"].get("ddim_steps", 50)),
                   guidance_scale=float(guidance_settings(meta["params"])["scale"]),
                   residual_std=params_residual_std(meta["params"]))

    # -- prediction ---------------------------------------------------------------------------------
    def _baseline_batch(self, baseline_crop) -> torch.Tensor:
        images = torch.as_tensor(np.asarray(baseline_crop, dtype=np.float32))
        if images.ndim == 3:
            images = images[None]
        size = self.crop_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (1, size, size) or images.shape[0] == 0:
            raise ValueError(f"baseline_crop must be (1, {size}, {size}) or (B, 1, {size}, {size}) for this model, "
                             f"got {tuple(np.shape(baseline_crop))}")
        if not torch.isfinite(images).all() or images.abs().max() > 1:
            raise ValueError("baseline_crop must hold finite values in [-1, 1] (HU mapped with "
                             "namd.data.crops.window_to_unit and the pipeline's hu_window)")
        return images

    @torch.no_grad()
    def __call__(
        self,
        baseline_crop: np.ndarray | torch.Tensor,
        report: str | Sequence[str],
        *,
        num_samples: int = 20,
        seed: int = 0,
        num_inference_steps: int | None = None,
        eta: float = 0.0,
        guidance_scale: float | None = None,
        batch_size: int = 64,
        progress: bool = True,
    ) -> NAMDPrediction:
        """K = num_samples follow-ups per baseline (DDIM, paper Sec. 3.3.2) and their malignancy probabilities.

        The sampler is `self.scheduler` (its config sets timestep spacing, final alpha, prediction_type ...);
        a scheduler namd.sampling cannot step stops here with a ValueError naming it.

        Sample k of baseline b comes from noise seeded by (seed, b, k) alone (namd.sampling), so the
        same seed gives the same samples whatever the batch size; `batch_size` (pair, sample)
        combinations run at once. The progress bar counts denoising steps (U-Net calls): ddim_sample's
        own counts finished samples, which all arrive at the end when the K samples fit one batch.

        Args:
            baseline_crop: (1, S, S) or (B, 1, S, S) baseline crop(s), S = `crop_size`, HU mapped to
                [-1, 1] with `namd.data.crops.window_to_unit` and the pipeline's `hu_window`.
            report: the patient's report (`namd.data.nlst.report_text`), one string per baseline crop.
            num_samples: K, follow-ups sampled per baseline (the paper: 20).
            seed: base seed of the noise; the same seed gives the same samples.
            num_inference_steps: DDIM steps; None: `ddim_steps`, the steps the model was evaluated with.
            eta: DDIM's eta (0: deterministic given the initial noise).
            guidance_scale: classifier-free guidance on the report's context (namd.sampling; two U-Net
                passes a step unless 1); None: `guidance_scale`, the scale the model was evaluated with.
            batch_size: (baseline, sample) combinations sampled, and samples classified, at once.
            progress: show a progress bar over the denoising steps.

        Returns:
            NAMDPrediction: numpy arrays of the samples (B, K, 1, S, S) in [-1, 1], their pixel-wise
            mean and variance (B, 1, S, S), and the malignancy probability of each sample (B, K) with
            its mean and standard deviation over the K samples (B,).

        Example:
            ```py
            >>> from namd.data.crops import crop_nodule, window_to_unit
            >>> from namd.data.dicom_read import read_ct_series
            >>> from namd.data.nlst import report_text
            >>> from namd.data.records import read_patient_record
            >>> from namd.pipeline import NAMDPipeline
            >>> pipe = NAMDPipeline.from_pretrained("results/models/namd_pipeline")
            >>> hu, padded = crop_nodule(read_ct_series("baseline_series/"), 250, 310, 42, size=pipe.crop_size)
            >>> report = report_text(read_patient_record("record.json"))
            >>> prediction = pipe(window_to_unit(hu, pipe.hu_window)[None], report, num_samples=20, seed=0)
            >>> prediction.samples.shape  # (1, 20, 1, S, S)
            >>> float(prediction.probability_mean[0]), float(prediction.probability_std[0])
            ```
        """
        check_sampler(self.scheduler, "NAMDPipeline.scheduler")
        images = self._baseline_batch(baseline_crop)
        reports = [report] if isinstance(report, str) else list(report)
        if len(reports) != images.shape[0] or not all(isinstance(r, str) and r.strip() for r in reports):
            raise ValueError(f"report must be one non-empty string per baseline crop ({images.shape[0]}), "
                             f"got {len(reports)} report(s)")
        if num_inference_steps is None:
            num_inference_steps = self.ddim_steps
        if guidance_scale is None:
            guidance_scale = self.guidance_scale
        if min(num_samples, num_inference_steps, batch_size) < 1:
            raise ValueError(f"num_samples ({num_samples}), num_inference_steps ({num_inference_steps}) and "
                             f"batch_size ({batch_size}) must be at least 1")
        device, n = self.device, images.shape[0]
        condition = encode_latents(self.vae, images.to(device))
        context = self.text_encoder(reports)
        calls = math.ceil(n * num_samples / batch_size) * num_inference_steps
        with progress_bar(total=calls, desc="NAMD sampling", unit="step", disable=not progress) as bar:
            def count_step(*_) -> None:  # a forward hook returning a value would replace the U-Net's output
                bar.update()

            hook = self.unet.register_forward_hook(count_step)
            try:
                latents = ddim_sample(
                    self.unet, self.scheduler, condition, context, [str(b) for b in range(n)],
                    range(num_samples), num_inference_steps=num_inference_steps, eta=eta, batch_size=batch_size,
                    base_seed=seed, progress=False, guidance_scale=guidance_scale, residual_std=self.residual_std,
                )
            finally:
                hook.remove()
        samples = decode_latents(self.vae, latents.flatten(0, 1).to(device)).clamp(-1, 1).float().cpu()
        probabilities = self.classifier.predict_proba(samples, batch_size=batch_size).reshape(n, num_samples)
        samples = samples.numpy().reshape(n, num_samples, *samples.shape[1:])
        return NAMDPrediction.from_samples(samples, probabilities)


def _upstream_folder(path: str, model_dir: Path, meta_path: Path) -> Path:
    """An upstream model folder named in method.json: absolute, or relative to the workflow's directory."""
    given = Path(path)
    candidates = [given] if given.is_absolute() else [base / given for base in model_dir.resolve().parents]
    candidates.append(Path.cwd() / given)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"{meta_path}: upstream VAE folder {path!r} not found (looked in "
                            f"{', '.join(str(c) for c in dict.fromkeys(candidates))})")

