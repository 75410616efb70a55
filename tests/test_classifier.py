import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from conftest import ROOT
from safetensors.torch import save_file
from sklearn.metrics import roc_auc_score
from timm.models.vision_transformer import VisionTransformer

from namd.data.crops import load_crops, save_crops
from namd.data.dataset import CohortDataError
from namd.evaluation.classifier import (
    CONFIG_KEY,
    ENSEMBLE_INDEX,
    ClassifierEnsemble,
    MalignancyClassifier,
    balanced_pos_weight,
    build_classifier,
    dihedral_augment,
    load_classifier,
    member_seed,
    real_pairs_dataset,
)
from namd.stages.classifier import (
    assemble_classifier,
    classify_real,
    evaluator_seeds,
    member_seeds,
    seed_study,
    train_classifier_member,
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


# ---- the ensemble evaluator, its seed study, the selection tool ---------------------------------

def test_ensemble_probability_is_the_members_mean_and_survives_a_round_trip(tmp_path):
    images, _ = blobs(6, 8)
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        members.append(MalignancyClassifier(build_classifier(**SMALL)))
    ensemble = ClassifierEnsemble(members, seeds=[23, 24])
    each = np.stack([m.predict_proba(images) for m in members], axis=1)
    assert not np.allclose(each[:, 0], each[:, 1]), "members of different seeds must differ"
    np.testing.assert_allclose(ensemble.predict_proba(images), each.mean(axis=1))
    np.testing.assert_array_equal(ensemble.features(images), members[0].features(images))

    ensemble.save_pretrained(tmp_path / "ens")
    loaded = load_classifier(tmp_path / "ens")
    assert isinstance(loaded, ClassifierEnsemble) and loaded.seeds == [23, 24]
    np.testing.assert_array_equal(loaded.predict_proba(images), ensemble.predict_proba(images))
    members[0].save_pretrained(tmp_path / "single")
    assert isinstance(load_classifier(tmp_path / "single"), MalignancyClassifier)

    torch.manual_seed(2)
    other_size = MalignancyClassifier(build_classifier(**{**SMALL, "image_size": 8}))
    with pytest.raises(ValueError, match="different image sizes"):
        ClassifierEnsemble([members[0], other_size], seeds=[1, 2])
    (tmp_path / "ens" / ENSEMBLE_INDEX).write_text("{}")
    with pytest.raises(ValueError, match="ensemble.json: not a classifier ensemble index"):
        load_classifier(tmp_path / "ens")


def cohort_files(folder, n=24, splits=("train", "val", "test"), size=16, first_pid=100):
    """pairs.csv + crops.npz of `n` pairs (splits cycled, complete record, blob crops) in `folder`."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = blobs(n, 9, size)
    pairs = pd.DataFrame({
        "pair_id": [f"{first_pid + i}_N1_T0T1" for i in range(n)], "pid": [str(first_pid + i) for i in range(n)],
        "split": np.array(splits)[np.arange(n) % len(splits)], "label": labels.astype(int),
        "SCT_PRE_ATT": "Soft", "SCT_EPI_LOC": "Lingula", "SCT_LONG_DIA": rng.uniform(4, 30, n).round(1),
        "SCT_PERP_DIA": rng.uniform(3, 20, n).round(1), "SCT_MARGINS": "Smooth", "age": 60, "gender": "Male",
        **{f: "No" for f in ("diagemph", "famfather", "fammother", "fambrother", "famsister", "famchild")},
    })
    pairs.to_csv(folder / "pairs.csv", index=False)
    save_crops({"pair_id": pairs["pair_id"].to_numpy(str), "baseline": images, "followup": images[::-1].copy(),
                "border_padded": np.zeros(n, bool)}, folder / "crops.npz")
    return folder / "pairs.csv", folder / "crops.npz"


PARAMS = dict(patch_size=4, embed_dim=32, depth=1, num_heads=2, drop_rate=0.0, lr=3e-3, weight_decay=0.05,
              warmup_fraction=0.05, augment=True, epochs=2, batch_size=8)


def test_members_train_with_their_own_seeds_and_assemble_into_the_workflow_evaluator(tmp_path):
    torch.set_num_threads(2)
    trainval = cohort_files(tmp_path / "trainval", splits=("train", "val"))
    members = [tmp_path / "members" / f"member_{i}" for i in range(2)]
    for i, folder in enumerate(members):
        summary = train_classifier_member(*trainval, folder, tmp_path / "state" / str(i), PARAMS, index=i, seed=23)
        assert summary["seed"] == member_seed(23, i) == 23 + i
    weights = [MalignancyClassifier.from_pretrained(f).model.head.weight for f in members]
    assert not torch.equal(*weights)
    with pytest.raises(CohortDataError, match="test-split pair"):
        train_classifier_member(*cohort_files(tmp_path / "all"), tmp_path / "x", tmp_path / "sx", PARAMS, index=0,
                                seed=23)
    with pytest.raises(ValueError, match="index is 1 but the folder is member 0"):
        member_seeds(members[::-1])

    evaluator = assemble_classifier(members, tmp_path / "classifier")
    assert evaluator.seeds == [23, 24]
    assert sorted(p.name for p in (tmp_path / "classifier").iterdir()) == [ENSEMBLE_INDEX, "member_0", "member_1"]

    test = cohort_files(tmp_path / "test", splits=("test",))
    classify_real(tmp_path / "classifier", *test, tmp_path / "b.csv", tmp_path / "f.csv")
    written = pd.read_csv(tmp_path / "b.csv")
    crops = load_crops(test[1])
    np.testing.assert_allclose(written["prob"], evaluator.predict_proba(crops["baseline"]), atol=1e-6)
    summary = evaluator_seeds(members, 1, *test, tmp_path / "seeds.csv", tmp_path / "seeds.json")
    assert summary["n_ensembles"] == 2 and len(pd.read_csv(tmp_path / "seeds.csv")) == 2 * (2 + 2)


def test_seed_study_spreads_on_a_toy_case():
    labels = np.array([0, 0, 1, 1])
    # four members: AUROC 1, 0.75, 0.5 and 1 on the same four pairs
    members = np.array([[0.1, 0.2, 0.8, 0.9], [0.1, 0.6, 0.5, 0.9], [0.6, 0.1, 0.3, 0.4], [0.2, 0.3, 0.6, 0.4]]).T
    aurocs = [roc_auc_score(labels, members[:, i]) for i in range(4)]
    assert aurocs == [1.0, 0.75, 0.5, 1.0]
    table, summary = seed_study({"real_baseline": members}, labels, seeds=[23, 24, 25, 26], ensemble_size=2)
    single = table[table["kind"] == "member"]
    assert single["auroc"].tolist() == aurocs and single["in_workflow"].tolist() == [True, True, False, False]
    ensembles = [roc_auc_score(labels, members[:, [0, 1]].mean(1)), roc_auc_score(labels, members[:, [2, 3]].mean(1))]
    spread = summary["rows"]["real_baseline"]["auroc"]
    assert table[table["kind"] == "ensemble"]["auroc"].tolist() == ensembles
    assert spread["member_sd"] == pytest.approx(np.std(aurocs, ddof=1))
    assert spread["ensemble_sd"] == pytest.approx(np.std(ensembles, ddof=1))
    assert spread["workflow"] == ensembles[0]
    assert "ensemble of 2 timm ViTs (seeds 23, 24)" in summary["footnote"]
    assert f"real baseline {np.std(aurocs, ddof=1):.3f} per single ViT (4 seeds)" in summary["footnote"]

    _, one = seed_study({"real_baseline": members}, labels, seeds=[23, 24, 25, 26], ensemble_size=4)
    assert np.isnan(one["rows"]["real_baseline"]["auroc"]["ensemble_sd"])
    assert "seeds 23-26" in one["footnote"] and "ensemble SD not measured" in one["footnote"]
    with pytest.raises(ValueError, match="do not make whole ensembles of 3"):
        seed_study({"real_baseline": members}, labels, seeds=[23, 24, 25, 26], ensemble_size=3)


def selection_tool():
    spec = importlib.util.spec_from_file_location("select_classifier", ROOT / "tools" / "select_classifier.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_selection_tool_reads_trainval_only_and_refuses_test_split_input(tmp_path):
    tool = selection_tool()
    pairs_csv, crops_npz = cohort_files(tmp_path / "data")
    kept_pairs, kept_crops = tool.trainval_inputs(pairs_csv, crops_npz, tmp_path / "work")
    assert set(pd.read_csv(kept_pairs)["split"]) == {"train", "val"}
    assert len(load_crops(kept_crops)["pair_id"]) == 16

    test_only = cohort_files(tmp_path / "only_test", splits=("test",), first_pid=500)
    with pytest.raises(tool.SplitInputError, match="holds no train and val rows"):
        tool.trainval_inputs(*test_only, tmp_path / "w2")
    test_dir = cohort_files(tmp_path / "results" / "data" / "test")
    with pytest.raises(tool.SplitInputError, match="a test-split file"):
        tool.trainval_inputs(*test_dir, tmp_path / "w3")
    with pytest.raises(tool.SplitInputError, match="holds no crop of a train/val pair"):
        tool.trainval_inputs(pairs_csv, test_only[1], tmp_path / "w4")


def test_selection_rules_are_validation_numbers_only():
    tool = selection_tool()
    assert tool.epochs_from_history([11, 30, 41], 100) == 60  # 1.25 x 42 = 52.5 -> 60
    assert tool.epochs_from_history([99], 100) == 100
    assert tool.ensemble_size_for(0.05) == 7 and tool.ensemble_size_for(0.01) == 1
    runs = pd.DataFrame({"setting": ["a"] * 3 + ["b"] * 3, "embed_dim": 1, "depth": 1, "num_heads": 1, "lr": 1.0,
                         "seed": [0, 1, 2] * 2, "val_bce": [0.50, 0.52, 0.54, 0.52, 0.53, 0.53],
                         "val_auroc": [0.8, 0.7, 0.9, 0.8, 0.8, 0.8], "best_epoch": 5,
                         "s_per_epoch": 1.0, "n_params": [9] * 3 + [4] * 3})
    ensembles = pd.DataFrame({"setting": ["a", "b"], "ensemble_val_bce": [0.5, 0.5], "ensemble_val_auroc": [0.8, 0.8]})
    table = tool.summarise_runs(runs, ensembles).set_index("setting")
    # b's mean (0.527) is within one SE of a's (0.52 + 0.02 / sqrt 3 = 0.532) and smaller: b is chosen
    assert table["within_1se"].all() and table["chosen"].tolist() == [False, True]
    assert tool.pooled_seed_sd(runs) == pytest.approx(np.sqrt(0.01 / 2))
