import socket

import numpy as np
import pytest
import pytorch_fid.inception
import torch
import torchvision

from namd.evaluation import image_metrics
from namd.evaluation.image_metrics import (
    PerceptualWeightsMissingError,
    fid_metric_name,
    frechet_distance,
    image_quality,
    load_inception,
    load_lpips,
    perceptual_weights_available,
)
from namd.evaluation.metrics import EvaluationInputError, summarise

SIZE = 32


@pytest.fixture(scope="module")
def cached_weights(tmp_path_factory):
    """A TORCH_HOME whose hub cache holds random weights of the right shapes under the real names."""
    torch.manual_seed(0)
    home = tmp_path_factory.mktemp("torch_home")
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    alexnet = torchvision.models.alexnet().state_dict()
    torch.save(alexnet, checkpoints / "alexnet-owt-7be5be79.pth")
    with pytest.MonkeyPatch.context() as patch:
        # Build pytorch-fid's own FID Inception graph without loading anything, to save its shapes.
        patch.setattr(pytorch_fid.inception, "load_state_dict_from_url", lambda *args, **kwargs: {})
        patch.setattr(torchvision.models.Inception3, "load_state_dict", lambda self, *args, **kwargs: None)
        inception = pytorch_fid.inception.fid_inception_v3().state_dict()
    torch.save(inception, checkpoints / "pt_inception-2015-12-05-6726825d.pth")
    return home, alexnet, inception


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def with_weights(cached_weights, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(cached_weights[0]))
    return cached_weights


@pytest.fixture
def without_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))


def images(n, k=None, seed=0):
    rng = np.random.default_rng(seed)
    shape = (n, 1, SIZE, SIZE) if k is None else (n, k, 1, SIZE, SIZE)
    return rng.uniform(-1, 1, shape).astype(np.float32)


def pair_ids(n):
    return [f"p{i}" for i in range(n)]


class PixelProjection:
    """Deterministic stand-in for the evaluation classifier's feature extractor."""

    def __init__(self, dims=6):
        self.weight = torch.randn(SIZE * SIZE, dims, generator=torch.Generator().manual_seed(1))

    def __call__(self, batch):
        return batch.flatten(1) @ self.weight


def test_availability_reads_the_cache_files(with_weights, tmp_path, monkeypatch):
    assert perceptual_weights_available() == {"lpips": True, "fid": True}
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert perceptual_weights_available() == {"lpips": False, "fid": False}


def test_real_networks_load_the_cached_weights_offline(with_weights):
    _, alexnet, inception = with_weights
    lpips_net = load_lpips()
    assert torch.equal(lpips_net.net.slice1[0].weight, alexnet["features.0.weight"])
    fid_net = load_inception()
    assert torch.equal(fid_net.blocks[0][0].conv.weight, inception["Conv2d_1a_3x3.conv.weight"])


def test_fid_is_named_fid_only_on_pool3_features():
    assert fid_metric_name() == "FID" and fid_metric_name(64) == "FID-64d"
    with pytest.raises(EvaluationInputError, match="fid dims"):
        fid_metric_name(100)


def test_real_metrics_zero_for_identical_images_positive_otherwise(with_weights):
    """Inception's 64-d first block keeps the test fast: scipy's sqrtm of 2048 x 2048 takes minutes here."""
    real = images(3)
    generated = np.stack([real, images(3, seed=5)], axis=1)
    results = image_quality("m", generated, pair_ids(3), [0, 1], real, pair_ids(3), fid_dims=64)
    assert (results["lpips"].name, results["fid"].name) == ("LPIPS", "FID-64d")
    assert not results["lpips"].stand_in and results["fid"].stand_in
    assert "64-d" in results["fid"].description
    lpips_values = results["lpips"].per_seed.set_index("seed")["lpips"]
    assert abs(lpips_values[0]) < 1e-6 and lpips_values[1] > 1e-4
    fid_values = results["fid"].per_seed.set_index("seed")["fid"]
    assert abs(fid_values[0]) < 1e-3


def test_stand_ins_are_labelled_and_zero_for_identical_images(without_weights):
    real = images(8)
    generated = np.repeat(real[:, None], 3, axis=1)
    results = image_quality(
        "copy", generated, pair_ids(8), [0, 1, 2], real, pair_ids(8), feature_extractor=PixelProjection()
    )
    assert (results["lpips"].name, results["fid"].name) == ("DFD-ViT", "FD-ViT")
    for result in results.values():
        assert result.stand_in
        assert "stand-in" in result.description and "not comparable" in result.description
        assert list(result.per_seed["seed"]) == [0, 1, 2]
        assert abs(result.mean) < 1e-6
    assert "LPIPS" not in results["lpips"].name.replace("DFD", "")


def test_stand_in_per_seed_values_and_summary(without_weights):
    real = images(8)
    generated = np.stack([real, images(8, seed=1), images(8, seed=2)], axis=1)
    results = image_quality(
        "mix", generated, pair_ids(8), [10, 11, 12], real, pair_ids(8),
        feature_extractor=PixelProjection(), extractor_name="Probe",
    )
    fid = results["fid"]
    assert fid.name == "FD-Probe"
    values = fid.per_seed.set_index("seed")["fid"]
    assert values[10] == pytest.approx(0, abs=1e-6) and values[11] > 0 and values[12] > 0
    summary = summarise(fid.per_seed, ("fid",))
    assert fid.mean == pytest.approx(values.mean()) == summary.loc["fid", "mean"]
    assert fid.std == pytest.approx(values.std(ddof=1))


def test_real_images_are_aligned_by_pair_id(without_weights):
    real = images(6)
    generated = images(6, k=1, seed=3)
    order = [3, 0, 5, 1, 4, 2]
    kwargs = {"feature_extractor": PixelProjection()}
    aligned = image_quality("m", generated, pair_ids(6), [0], real, pair_ids(6), **kwargs)
    shuffled = image_quality("m", generated, pair_ids(6), [0], real[order], [f"p{i}" for i in order], **kwargs)
    assert aligned["lpips"].mean == pytest.approx(shuffled["lpips"].mean)
    assert aligned["fid"].mean == pytest.approx(shuffled["fid"].mean)


def test_missing_weights_without_stand_in_is_an_error(without_weights):
    real = images(2)
    generated = real[:, None]
    with pytest.raises(PerceptualWeightsMissingError, match=r"'SD1.5'.*alexnet-owt-7be5be79\.pth.*feature_extractor"):
        image_quality("SD1.5", generated, pair_ids(2), [0], real, pair_ids(2))
    with pytest.raises(PerceptualWeightsMissingError, match="stand-ins are disabled"):
        image_quality(
            "SD1.5", generated, pair_ids(2), [0], real, pair_ids(2),
            feature_extractor=PixelProjection(), allow_stand_in=False,
        )
    with pytest.raises(PerceptualWeightsMissingError, match="pt_inception"):
        load_inception()


def test_bad_input_is_refused_naming_the_method(without_weights):
    real = images(3)
    kwargs = {"feature_extractor": PixelProjection()}
    with pytest.raises(EvaluationInputError, match=r"'Flux'.*\(N, K, 1, S, S\)"):
        image_quality("Flux", real, pair_ids(3), [0], real, pair_ids(3), **kwargs)
    with pytest.raises(EvaluationInputError, match=r"'Flux'.*expected \[-1, 1\]"):
        image_quality("Flux", 3 * real[:, None], pair_ids(3), [0], real, pair_ids(3), **kwargs)
    with pytest.raises(EvaluationInputError, match=r"'Flux'.*no real follow-up.*p9"):
        image_quality("Flux", real[:, None], ["p0", "p1", "p9"], [0], real, pair_ids(3), **kwargs)
    with pytest.raises(EvaluationInputError, match=r"'Flux'.*distinct seeds"):
        image_quality("Flux", np.repeat(real[:, None], 2, axis=1), pair_ids(3), [0, 0], real, pair_ids(3), **kwargs)


def test_frechet_distance_of_shifted_features_is_squared_shift():
    features = np.random.default_rng(0).normal(size=(50, 4))
    shift = np.array([1.0, -2.0, 0.5, 0.0])
    assert frechet_distance(features, features + shift) == pytest.approx(float(shift @ shift), rel=1e-6)
    assert frechet_distance(features, features) == pytest.approx(0, abs=1e-8)


def test_weight_paths_follow_torch_home(without_weights, tmp_path):
    assert image_metrics.lpips_weights_path() == tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert image_metrics.fid_weights_path().name == "pt_inception-2015-12-05-6726825d.pth"
