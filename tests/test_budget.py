"""One training budget for every generative row: the config, the registry, the table and README agree."""

import re
import sys

import pytest
from conftest import ROOT

from namd.budget import STAGE1, budget_rows, trainer_budget
from namd.config import load_config
from namd.methods import LDM_FAMILY, REUSES, UnknownMethodError, known_methods, upstream_of
from namd.training import budget_settings

sys.path.insert(0, str(ROOT / "tools"))
import budget_table  # noqa: E402

CONFIGS = {
    "default": ["config.yaml"],
    "tiny": ["config.yaml", "configs/tiny.yaml"],
    "paper": ["config.yaml", "configs/paper.yaml"],
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def config(request):
    return load_config(*(ROOT / p for p in CONFIGS[request.param]))


def test_every_method_trains_the_same_total_steps_at_the_same_batch(config):
    budget = config["budget"]
    total = budget["pretrain_steps"] + budget["paired_steps"]
    rows = {row["method"]: row for row in budget_rows(config)}
    assert list(rows) == list(config["methods"])
    for method, row in rows.items():
        own = trainer_budget(config, method)
        assert own["batch_size"] == row["batch_size"] == budget["batch_size"]
        if method in REUSES:  # samples another row's trained model: no steps of its own
            assert row["total_steps"] == own["max_steps"] == 0 and REUSES[method] in row["initialisation"]
            continue
        assert row["total_steps"] == total, method
        if method in LDM_FAMILY:  # stage 1 on its own VAE's latents, then the paired stage
            assert row["pretrain_steps"] == trainer_budget(config, STAGE1)["max_steps"] == budget["pretrain_steps"]
            assert own["max_steps"] == row["paired_steps"] == budget["paired_steps"]
        else:  # all of S_total in its own loop
            assert row["pretrain_steps"] == 0 and own["max_steps"] == row["paired_steps"] == total


def test_the_latent_family_is_exactly_the_methods_that_start_from_stage_one():
    assert set(LDM_FAMILY) == {m for m in known_methods() if STAGE1 in upstream_of(m)}
    assert "sd15" in LDM_FAMILY and "flux" not in LDM_FAMILY


def test_a_reusing_row_reuses_a_trained_row_of_the_default_config():
    config = load_config(ROOT / "config.yaml")
    assert "namd_no_context" in REUSES and "namd_no_context" in config["methods"]
    for method, trained in REUSES.items():
        assert trained not in REUSES and trainer_budget(config, trained)["max_steps"] > 0, method


def test_table_steps_match_the_config(config, tmp_path):
    table = budget_table.markdown(config, 100, tmp_path)
    rows = table_rows(table)
    assert list(rows) == list(config["methods"])
    for method, cells in rows.items():
        pre = config["budget"]["pretrain_steps"] if method in LDM_FAMILY else 0
        paired = trainer_budget(config, method)["max_steps"]
        assert cells["steps"] == (pre, paired, pre + paired), method
        assert cells["batch"] == config["budget"]["batch_size"]
        # no benchmark files in tmp_path; a reusing row has no training job at all
        assert cells["wall"] == (f"none (reuses `{REUSES[method]}`)" if method in REUSES else "not run")


def test_readme_table_matches_the_config():
    readme = (ROOT / "README.md").read_text()
    assert budget_table.HEADER in readme, "README has no training-budget table: paste tools/budget_table.py's output"
    config = load_config(ROOT / "config.yaml")
    rows = table_rows(readme[readme.index(budget_table.HEADER):])
    assert list(rows) == list(config["methods"])
    expected = table_rows(budget_table.markdown(config, None, ROOT / "nowhere"))
    for method, cells in rows.items():
        assert (cells["steps"], cells["batch"]) == (expected[method]["steps"], expected[method]["batch"]), method


def test_wall_time_reads_the_benchmark_files(tmp_path):
    config = load_config(ROOT / "config.yaml")
    for job, seconds in [("namd", 120.4), (f"{STAGE1}_aligned", 20.2), ("flux", 61.0)]:
        (tmp_path / f"train_{job}.tsv").write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:02:00\t1000\n")
    rows = table_rows(budget_table.markdown(config, None, tmp_path))
    assert rows["namd"]["wall"] == "120 s + stage 1 20 s"
    assert rows["flux"]["wall"] == "61 s"
    assert rows["sd15"]["wall"] == "not run"


def test_train_pairs_counts_the_training_split(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("pair_id,split\na,train\nb,train\nc,val\nd,test\n")
    assert budget_table.train_pairs(path) == 2
    path.write_text("pair_id\na\n")
    with pytest.raises(ValueError, match="pairs.csv: no split column"):
        budget_table.train_pairs(path)


def test_unknown_method_and_missing_budget_are_named():
    config = load_config(ROOT / "config.yaml")
    with pytest.raises(UnknownMethodError, match="unknown method 'namdd'"):
        trainer_budget(config, "namdd")
    with pytest.raises(ValueError, match=r"mcwgan: params lack the training budget \['max_steps'\]"):
        budget_settings({"batch_size": 8}, "mcwgan")
    settings = budget_settings({**trainer_budget(config, "mcwgan"), "max_grad_norm": 0.5}, "mcwgan", seed=3)
    budget = config["budget"]
    assert (settings.max_steps, settings.batch_size, settings.max_grad_norm, settings.epochs) == (
        budget["pretrain_steps"] + budget["paired_steps"], budget["batch_size"], 0.5, None)


def table_rows(text: str) -> dict[str, dict]:
    """method -> its steps (stage 1, paired, total), batch and wall time, from the table's markdown."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 7 or not cells[1].startswith("`"):
            if rows and not line.startswith("|"):
                break  # the table ended
            continue
        numbers = re.fullmatch(r"([\d,]+) \+ ([\d,]+) = ([\d,]+)", cells[2]).groups()
        steps = tuple(int(n.replace(",", "")) for n in numbers)
        rows[cells[1].strip("`")] = {"steps": steps, "batch": int(cells[3]), "wall": cells[6]}
    return rows
