"""tools/select_method.py: settings parse as stated, the one-SE rule picks what it says, a tiny run trains."""

import sys

import pandas as pd
import pytest
from conftest import ROOT
from test_classifier import cohort_files

sys.path.insert(0, str(ROOT / "tools"))
import select_method as sm  # noqa: E402


def test_a_setting_is_a_name_and_yaml_overrides():
    assert sm.parse_setting("current:") == ("current", {})
    assert sm.parse_setting("fast:dt=1.0,channel_mult=[1, 2]") == ("fast", {"dt": 1.0, "channel_mult": [1, 2]})
    with pytest.raises(SystemExit, match="is not KEY=VALUE"):
        sm.parse_setting("bad:dt")
    with pytest.raises(SystemExit, match="expected NAME:key=value"):
        sm.parse_setting("dt=1.0")


def runs(rows):
    return pd.DataFrame(rows, columns=["setting", "seed", "val_loss", "seconds"])


def test_the_fastest_setting_within_one_se_of_the_shipped_one_is_chosen():
    shipped = [("current", s, v, 300.0) for s, v in zip((1, 2, 3), (0.034, 0.035, 0.038))]  # mean 0.0357, SE 0.0012
    close = [("fast", s, v, 200.0) for s, v in zip((1, 2, 3), (0.036, 0.036, 0.037))]       # mean 0.0363
    far = [("small", s, v, 100.0) for s, v in zip((1, 2, 3), (0.056, 0.059, 0.051))]
    table, chosen = sm.choose(runs(shipped + close + far))
    assert chosen == "fast"
    assert table.set_index("setting")["within_one_se"].to_dict() == {"current": True, "fast": True, "small": False}
    # a setting within one SE but no faster leaves the shipped one
    slow = [("slow", s, v, 400.0) for s, v in zip((1, 2, 3), (0.034, 0.035, 0.036))]
    assert sm.choose(runs(shipped + slow))[1] == "current"
    assert sm.choose(runs(shipped[:1] + close[:1]))[1] is None  # one seed: no SE, no choice


def test_a_tiny_run_trains_each_setting_at_each_seed(tmp_path, capsys):
    pairs_csv, _ = cohort_files(tmp_path / "results" / "data" / "trainval", n=12, splits=("train", "val"), size=16)
    pairs = pd.read_csv(pairs_csv, dtype={"pair_id": str, "pid": str})
    pairs.assign(report="A 9 mm solid nodule in the lingula.").to_csv(pairs_csv, index=False)
    tiny = "max_steps=2,batch_size=4,base_channels=8,norm_groups=8,channel_mult=[1, 2],attention_sizes=[8]"
    sm.main(["--method", "imageflownet_sde", "--results", str(tmp_path / "results"), "--seeds", "1", "2",
             "--work", str(tmp_path / "work"), "--out", str(tmp_path / "runs.csv"),
             "--setting", f"current:{tiny}", f"dt2:{tiny},dt=2.0"])
    written = pd.read_csv(tmp_path / "runs.csv")
    assert sorted(zip(written["setting"], written["seed"])) == [("current", 1), ("current", 2), ("dt2", 1), ("dt2", 2)]
    assert (tmp_path / "work" / "dt2_seed2" / "model" / "method.safetensors").exists()
    assert "chosen:" in capsys.readouterr().out
    # the rule re-applied to saved runs (seeds trained by separate calls) trains nothing
    sm.main(["--from-runs", str(tmp_path / "runs.csv")])
    assert "| current " in capsys.readouterr().out


def test_a_run_without_the_rows_inputs_is_named(tmp_path):
    with pytest.raises(SystemExit, match="namd: not in .*run the workflow up to its training job first"):
        sm.main(["--method", "namd", "--results", str(tmp_path), "--setting", "current:"])
    with pytest.raises(SystemExit, match="not a row of"):
        sm.main(["--method", "nope", "--results", str(tmp_path), "--setting", "current:"])
