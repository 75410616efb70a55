"""The generated-samples file format that every method writes and evaluation reads."""

import numpy as np
import pytest

from namd.generate import GeneratedSetError, generated_images, load_generated, save_generated


def write(path, pair_ids, k=2):
    images = np.stack([np.full((k, 1, 4, 4), i, dtype=np.float32) for i in range(len(pair_ids))])
    save_generated({"pair_id": np.asarray(pair_ids), "seeds": np.arange(k), "images": images}, path)


def test_generated_images_follow_the_callers_pair_order(tmp_path):
    write(tmp_path / "g.npz", ["a", "b", "c"])
    images = generated_images(tmp_path / "g.npz", ["c", "a"])
    assert images.shape == (2, 2, 1, 4, 4)
    assert images[0].max() == 2 and images[1].max() == 0


def test_a_missing_pair_or_a_malformed_file_is_named(tmp_path):
    write(tmp_path / "g.npz", ["a", "b"])
    with pytest.raises(GeneratedSetError, match=r"g\.npz: 1 test pair\(s\) have no generated follow-up: \['z'\]"):
        generated_images(tmp_path / "g.npz", ["a", "z"])
    np.savez(tmp_path / "bad.npz", pair_id=np.array(["a"]), seeds=np.arange(3), images=np.zeros((1, 2, 1, 4, 4)))
    with pytest.raises(GeneratedSetError, match=r"bad\.npz: images have shape \(1, 2, 1, 4, 4\), expected \(1, 3"):
        load_generated(tmp_path / "bad.npz")
