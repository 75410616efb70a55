"""Rule logs hold lines, not progress bars: a bar's carriage returns stay on interactive terminals."""

import io
import re
from types import SimpleNamespace

import torch
import tqdm
import tqdm.auto
from conftest import ROOT

from namd.progress import progress_bar
from namd.training import TrainableModule, TrainSettings, fit
from namd.workflow import rule_context

PACKAGE = ROOT / "namd"


class _Line(TrainableModule):
    display_name = "line"

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(1, 1)

    def configure_optimizers(self):
        return {"main": torch.optim.SGD(self.parameters(), lr=0.1)}

    def losses(self, batch):
        return {"loss": torch.nn.functional.mse_loss(self.lin(batch["x"]), batch["y"])}


def _points(n):
    x = torch.linspace(-1, 1, n)[:, None]
    return [{"x": a, "y": 3 * a} for a in x]


def _rule(tmp_path, body):
    log = tmp_path / "logs" / "rule.log"
    log.parent.mkdir()
    with rule_context(SimpleNamespace(log=[str(log)], threads=1, rule="demo")):
        body()
    return log.read_text()


def test_a_rule_log_gets_a_line_every_ten_percent_and_no_carriage_return(tmp_path):
    def body():
        for _ in progress_bar(range(200), desc="Cropping nodules", unit="series"):
            pass
        for _ in tqdm.tqdm(range(50), desc="Loading weights"):  # another library's bar
            pass
    text = _rule(tmp_path, body)
    assert "\r" not in text and "Loading weights" not in text
    lines = [line for line in text.splitlines() if "Cropping nodules" in line]
    assert [re.search(r"(\d+)% (\d+)/200", line).groups() for line in lines] == [
        (str(p), str(2 * p)) for p in range(10, 101, 10)]
    assert all(" INFO namd.progress: " in line for line in lines)
    assert not tqdm.tqdm(range(1), file=io.StringIO()).disable  # other libraries' bars are back after the rule


def test_training_in_a_rule_logs_one_line_per_epoch(tmp_path):
    settings = TrainSettings(epochs=3, batch_size=4, seed=1)
    text = _rule(tmp_path, lambda: fit(_Line(), _points(12), _points(6), settings, tmp_path / "state"))
    assert "\r" not in text
    assert [int(n) for n in re.findall(r"line epoch (\d+): \{'train_loss'", text)] == [0, 1, 2]
    assert "epoch/s" not in text and "epoch [" not in text  # the bar itself stays silent


def test_a_loop_that_stops_early_logs_where_it_stopped(caplog):
    with caplog.at_level("INFO", logger="namd.progress"):
        for i in progress_bar(range(40), desc="DDIM", unit="sample"):
            if i == 5:
                break
    assert caplog.records[-1].getMessage().startswith("DDIM:  12% 5/40 ")  # five steps done


def test_an_interactive_terminal_gets_the_tqdm_bar(monkeypatch):
    terminal = io.StringIO()
    terminal.isatty = lambda: True
    monkeypatch.setattr("sys.stderr", terminal)
    bar = progress_bar(range(3), desc="DDIM", file=terminal)
    list(bar)
    assert type(bar) is tqdm.auto.tqdm and "\r" in terminal.getvalue()


def test_every_bar_goes_through_the_one_helper():
    own = [p.relative_to(PACKAGE).as_posix() for p in sorted(PACKAGE.rglob("*.py"))
           if p.name not in ("progress.py", "workflow.py")  # the helper, and the rule context that silences others
           and re.search(r"^\s*(from tqdm|import tqdm)", p.read_text(), re.M)]
    assert own == [], f"these modules make their own tqdm bars, which write carriage returns into log files: {own}"
