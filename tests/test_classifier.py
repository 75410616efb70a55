import json

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file
from sklearn.metrics import roc_auc_score
from timm.models.vision_transformer import VisionTransformer

from namd.evaluation.classifier import (
    CONFIG_KEY,
    MalignancyClassifier,
    balanced_pos_weight,
    build_classifier,
    dihedral_augment,
    real_pairs_dataset,
)
from namd.training import TrainSettings, fit

SMALL = dict(image_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2)


def blobs(n, seed, size=16):
    """Malignant crops hold a large bright disc, benign ones a small one; noise everywhere."""
    rng = np.random.default_rng(seed)
    labels = np.tile([0.0, 1.0], n // 2)
    yy, xx = np.mgrid[:size, :size] - size / 2 + 0.5
    radius = np.where(labels == 1, 5.0, 2.0)[:, None, None]
    images = np.where(np.hypot(yy, xx)[None] < radius, 0.5, -0.8) + rng.normal(0, 0.15, (n, size, size))
    return np.clip(images, -1, 1)[:, None].astype(np.float32), labels.astype(np.float32)


def small_classifier(**kw):
    torch.manual_seed(0)
    return MalignancyClassifier(build_classifier(**SMALL, drop_rate=0.0), lr=3e-3, **kw)


def test_default_build_is_a_one_channel_one_logit_timm_vit():
    model = build_classifier()
    assert isinstance(model, VisionTransformer)
    assert model.patch_embed.proj.in_channels == 1 and model.num_classes == 1
    clf = MalignancyClassifier(model)
    images = torch.zeros(3, 1, 32, 32)
    assert clf(images).shape == (3,)
    assert clf.features(images).shape == (3, 96)


def test_pretrained_checkpoint_is_adapted_by_timm(tmp_path):
    torch.manual_seed(1)
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, embed_dim=48, num_heads=3)
    path = tmp_path / "tiny_vit.safetensors"
    save_file(source.state_dict(), path)

    sizes = dict(image_size=32, patch_size=16, embed_dim=48, depth=1, num_heads=3)
    model = build_classifier(pretrained="vit_tiny_patch16_224", pretrained_file=path, **sizes)
    # RGB kernel summed to one channel, 14x14 position grid resampled to 2x2, fresh one-unit head
    torch.testing.assert_close(model.patch_embed.proj.weight, source.patch_embed.proj.weight.sum(1, keepdim=True))
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    assert model.pos_embed.shape == (1, 1 + 4, 48)
    assert model.head.weight.shape == (1, 48)

    with pytest.raises(ValueError, match="embed_dim, depth and num_heads"):
        build_classifier(pretrained="vit_tiny_patch16_224", pretrained_file=path, **{**sizes, "embed_dim": 96})
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        build_classifier(pretrained="vit_tiny_patch16_224", pretrained_file=tmp_path / "missing.safetensors")


def test_real_pairs_dataset_uses_both_crops_with_the_pair_label():
    baseline = np.zeros((3, 1, 8, 8), np.float32)
    followup = np.ones((3, 1, 8, 8), np.float32)
    data = real_pairs_dataset(baseline, followup, np.array([0, 1, 0]))
    assert len(data) == 6
    assert [float(data[i]["label"]) for i in range(6)] == [0, 1, 0, 0, 1, 0]
    assert float(data[4]["image"].mean()) == 1.0
    with pytest.raises(ValueError, match="differ in shape"):
        real_pairs_dataset(baseline, followup[:2], np.array([0, 1, 0]))


def test_pos_weight_scales_the_malignant_term():
    assert balanced_pos_weight(np.array([0, 0, 0, 1])) == 3.0
    images, labels = blobs(4, 0)
    batch = {"image": torch.from_numpy(images), "label": torch.ones(4)}
    plain, weighted = small_classifier(augment=False), small_classifier(pos_weight=3.0, augment=False)
    torch.testing.assert_close(weighted.losses(batch)["loss"], 3 * plain.losses(batch)["loss"])


def test_augmentation_is_a_dihedral_map_and_training_only():
    torch.manual_seed(3)
    images = torch.randn(8, 1, 6, 6)
    out = dihedral_augment(images)
    for x, y in zip(images, out):
        views = [torch.rot90(x, k, (-2, -1)) for k in range(4)]
        views += [torch.flip(v, (-1,)) for v in views]
        assert any(torch.equal(y, v) for v in views)

    clf = small_classifier()
    images, labels = blobs(8, 1)
    images[:, :, :, :4] = 1.0  # an asymmetric band, so turning the crops changes the logits
    batch = {"image": torch.from_numpy(images), "label": torch.from_numpy(labels)}
    clf.eval()
    assert clf.losses(batch)["loss"] == clf.losses(batch)["loss"]
    clf.train()
    clf.model.head_drop.p = 0.0
    torch.manual_seed(4)
    first = clf.losses(batch)["loss"]
    torch.manual_seed(5)
    assert clf.losses(batch)["loss"] != first


def test_training_learns_and_predictions_are_deterministic(tmp_path):
    torch.set_num_threads(2)
    train_b, train_l = blobs(48, 1)
    train_f, _ = blobs(48, 2)
    val_b, val_l = blobs(16, 3)
    test_x, test_y = blobs(40, 4)
    clf = small_classifier()
    result = fit(clf, real_pairs_dataset(train_b, train_f, train_l), real_pairs_dataset(val_b, val_b, val_l),
                 TrainSettings(epochs=6, batch_size=16, seed=23), tmp_path / "state", progress=False)
    assert result.best_val_loss == min(r["val_loss"] for r in result.history)

    clf.train()
    probs = clf.predict_proba(test_x)
    assert clf.training, "predict_proba must leave the mode as it found it"
    assert probs.shape == (40,) and ((probs >= 0) & (probs <= 1)).all()
    assert roc_auc_score(test_y, probs) > 0.9
    np.testing.assert_array_equal(probs, clf.predict_proba(test_x))
    np.testing.assert_allclose(probs, clf.predict_proba(torch.from_numpy(test_x), batch_size=7), atol=1e-6)
    with pytest.raises(ValueError, match=r"predict_proba: images must be \(N, 1, 16, 16\)"):
        clf.predict_proba(test_x[:, :, :8])
    with pytest.raises(ValueError, match="features: images hold NaN"):
        clf.features(np.full((1, 1, 16, 16), np.nan, np.float32))


def test_save_and_load_round_trip_through_timm(tmp_path):
    clf = small_classifier(pos_weight=2.5)
    images, _ = blobs(6, 7)
    clf.save_pretrained(tmp_path / "clf")
    config = json.loads((tmp_path / "clf" / "config.json").read_text())
    assert config[CONFIG_KEY]["pos_weight"] == 2.5
    assert (tmp_path / "clf" / "model.safetensors").is_file()

    loaded = MalignancyClassifier.from_pretrained(tmp_path / "clf")
    assert loaded.settings == clf.settings
    np.testing.assert_array_equal(loaded.predict_proba(images), clf.predict_proba(images))
    np.testing.assert_array_equal(loaded.features(images), clf.features(images))
    # the folder is a plain timm export: loadable without this module
    plain = timm.create_model(f"local-dir:{tmp_path / 'clf'}", pretrained=True).eval()
    with torch.no_grad():
        np.testing.assert_allclose(torch.sigmoid(plain(torch.from_numpy(images))).squeeze(1).numpy(),
                                   clf.predict_proba(images), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        MalignancyClassifier.from_pretrained(tmp_path / "nowhere")
