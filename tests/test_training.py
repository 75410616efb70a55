import math

import pytest
import torch
from torch.utils.data import Dataset

from namd.training import TrainableModule, TrainSettings, TrainingDivergedError, fit


class Points(Dataset):
    """y = 3x + 1 with a little noise; can be told to crash after some reads (a killed job)."""

    def __init__(self, n, seed, crash_after=None):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 1, generator=g)
        self.y = 3 * self.x + 1 + 0.01 * torch.randn(n, 1, generator=g)
        self.reads = 0
        self.crash_after = crash_after

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.reads += 1
        if self.crash_after is not None and self.reads > self.crash_after:
            raise KeyboardInterrupt("simulated kill")
        return {"x": self.x[i], "y": self.y[i]}


class Line(TrainableModule):
    display_name = "line"

    def __init__(self, poison_at=None):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(1, 1)
        self.calls = 0
        self.poison_at = poison_at

    def configure_optimizers(self):
        return {"main": torch.optim.SGD(self.parameters(), lr=0.1)}

    def losses(self, batch):
        self.calls += 1
        loss = torch.nn.functional.mse_loss(self.lin(batch["x"]), batch["y"])
        if self.training and self.poison_at is not None and self.calls >= self.poison_at:
            loss = loss * float("nan")
        return {"loss": loss}


def settings(**kw):
    return TrainSettings(**{"epochs": 4, "batch_size": 8, "seed": 5, **kw})


def test_fit_learns_and_keeps_best(tmp_path):
    model = Line()
    result = fit(model, Points(64, 1), Points(16, 2), settings(), tmp_path / "state", progress=False)
    assert result.epochs_run == 4
    assert math.isclose(model.lin.weight.item(), 3.0, abs_tol=0.2)
    assert result.best_val_loss == min(r["val_loss"] for r in result.history)


def test_resume_after_kill_gives_the_same_weights(tmp_path):
    reference = Line()
    fit(reference, Points(64, 1), Points(16, 2), settings(), tmp_path / "ref", progress=False)

    killed = Line()
    with pytest.raises(KeyboardInterrupt):
        fit(killed, Points(64, 1, crash_after=64 * 2 + 10), Points(16, 2), settings(), tmp_path / "run", progress=False)
    resumed = Line()
    result = fit(resumed, Points(64, 1), Points(16, 2), settings(), tmp_path / "run", progress=False)
    assert [r["epoch"] for r in result.history] == [0, 1, 2, 3]
    torch.testing.assert_close(resumed.state_dict(), reference.state_dict())


def test_changed_settings_start_afresh(tmp_path):
    fit(Line(), Points(64, 1), Points(16, 2), settings(epochs=1), tmp_path / "s", progress=False)
    result = fit(Line(), Points(64, 1), Points(16, 2), settings(epochs=2, seed=6), tmp_path / "s", progress=False)
    assert [r["epoch"] for r in result.history] == [0, 1]


def test_nan_loss_names_model_and_step_and_keeps_last_checkpoint(tmp_path):
    state = tmp_path / "s"
    with pytest.raises(TrainingDivergedError, match=r"line: loss is nan at step 14 \(epoch 1\)"):
        fit(Line(poison_at=17), Points(64, 1), Points(16, 2), settings(), state, progress=False)
    assert (state / "last.pt").exists()
    assert torch.load(state / "last.pt", weights_only=False)["epoch"] == 0


def test_empty_split_is_named(tmp_path):
    with pytest.raises(ValueError, match="validation split is empty"):
        fit(Line(), Points(8, 1), Points(0, 2), settings(), tmp_path, progress=False)


class ScheduledLine(Line):
    """Line with a linear decay to zero over the run: shows the schedule is sized by the budget."""

    def configure_schedulers(self, optimizers, total_steps):
        self.total_steps, self.optimizer = total_steps, optimizers["main"]
        return {"main": torch.optim.lr_scheduler.LambdaLR(optimizers["main"], lambda s: 1 - s / total_steps)}


def test_step_budget_stops_after_exactly_max_steps(tmp_path):
    model = ScheduledLine()
    # 64 points at batch 8: 8 steps an epoch, so 19 steps are two epochs and 3 steps of a third
    result = fit(model, Points(64, 1), Points(16, 2), settings(epochs=None, max_steps=19), tmp_path, progress=False)
    assert model.calls == 19 + 3 * 2  # 19 training steps + one validation pass (2 batches) after each epoch
    assert result.steps == 19 and model.total_steps == 19
    assert [r["step"] for r in result.history] == [8, 16, 19]
    assert all("val_loss" in r for r in result.history)
    assert model.optimizer.param_groups[0]["lr"] == pytest.approx(0.0)  # the schedule ended with the budget


def test_resume_mid_budget_gives_the_same_weights(tmp_path):
    budget = settings(epochs=None, max_steps=19)
    reference = ScheduledLine()
    fit(reference, Points(64, 1), Points(16, 2), budget, tmp_path / "ref", progress=False)

    killed = ScheduledLine()
    with pytest.raises(KeyboardInterrupt):  # killed inside the partial third epoch
        fit(killed, Points(64, 1, crash_after=64 * 2 + 12), Points(16, 2), budget, tmp_path / "run", progress=False)
    resumed = ScheduledLine()
    result = fit(resumed, Points(64, 1), Points(16, 2), budget, tmp_path / "run", progress=False)
    assert [r["epoch"] for r in result.history] == [0, 1, 2] and result.steps == 19
    assert resumed.calls == 3 + 2  # only the third epoch's 3 steps and its validation ran again
    torch.testing.assert_close(resumed.state_dict(), reference.state_dict())


def test_exactly_one_of_steps_and_epochs():
    with pytest.raises(ValueError, match="exactly one of max_steps and epochs"):
        settings(max_steps=10)
    with pytest.raises(ValueError, match="exactly one of max_steps and epochs"):
        settings(epochs=None)
    with pytest.raises(ValueError, match="at least 1"):
        settings(epochs=None, max_steps=0)
