import logging
import math
import random

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from namd.training import (MIN_BATCH, TrainableModule, TrainSettings, TrainingDivergedError, _loader, _rng_state,
                           _set_rng_state, fit, write_model_card)


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


def test_the_model_card_says_which_kernels_trained_the_model(tmp_path):
    """Two machines' models of one commit and seed differ; the card names the instruction set and threads."""
    result = fit(Line(), Points(64, 1), Points(16, 2), settings(epochs=1), tmp_path / "state", progress=False)
    write_model_card(tmp_path, name="line", description="y = 3x", config={}, result=result, data_fingerprint="x",
                     seed=5)
    card = (tmp_path / "model_card.md").read_text()
    assert f"- numerics: torch {torch.__version__}, CPU {torch.backends.cpu.get_cpu_capability()}, " in card
    assert f"{torch.get_num_threads()} thread(s)" in card


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
    assert torch.load(state / "last.pt", weights_only=True)["epoch"] == 0


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


class _RunsCode:
    """What a tampered checkpoint could hold: unpickling it calls a function of the attacker's choice."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_tampered_state_runs_no_code_and_training_starts_afresh(tmp_path, caplog):
    state, marker = tmp_path / "s", tmp_path / "code_ran"
    state.mkdir()
    torch.save({"fingerprint": settings().fingerprint(), "epoch": 2, "payload": _RunsCode(marker)}, state / "last.pt")
    with caplog.at_level(logging.WARNING, logger="namd.training"):
        result = fit(Line(), Points(64, 1), Points(16, 2), settings(), state, progress=False)
    assert not marker.exists()
    assert [r["epoch"] for r in result.history] == [0, 1, 2, 3]
    (line,) = [r.getMessage() for r in caplog.records]
    assert f"line: {state / 'last.pt'} cannot be read as a resume checkpoint (UnpicklingError" in line
    assert line.endswith("starting afresh") and "\n" not in line
    assert torch.load(state / "last.pt", weights_only=True)["epoch"] == 3  # replaced whole by the new run


def test_random_state_survives_a_weights_only_checkpoint(tmp_path):
    np.random.seed(3)
    np.random.normal()  # a cached Gaussian is part of numpy's state too
    random.seed(4)
    torch.save({"rng": _rng_state()}, tmp_path / "rng.pt")
    expected = (np.random.normal(size=3), random.random(), torch.rand(2))
    _set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    again = (np.random.normal(size=3), random.random(), torch.rand(2))
    np.testing.assert_array_equal(again[0], expected[0])
    assert again[1] == expected[1] and torch.equal(again[2], expected[2])


@pytest.mark.parametrize("n", range(1, 30))
@pytest.mark.parametrize("batch_size", [3, 4, 8])
def test_no_loader_gives_a_batch_the_alignment_loss_cannot_score(n, batch_size):
    """Every batch, the last of an epoch and of validation included, has MIN_BATCH samples or the whole split."""
    train = [len(b["x"]) for b in _loader(Points(n, 1), batch_size, True, 0, 0)]
    val = [len(b["x"]) for b in _loader(Points(n, 1), batch_size, False, 0, 0)]
    assert sum(val) == n and all(size >= min(MIN_BATCH, n) for size in val)
    assert max(val) < batch_size + MIN_BATCH
    assert train == ([batch_size] * (n // batch_size) if n > batch_size else [n])


class DtypeRecordingLine(Line):
    """Records the dtype its forward computes in: bf16 under the trainer's autocast."""

    def losses(self, batch):
        out = self.lin(batch["x"])
        self.dtypes = getattr(self, "dtypes", set()) | {out.dtype}
        return {"loss": torch.nn.functional.mse_loss(out.float(), batch["y"])}


def test_bf16_autocast_runs_training_and_validation_in_bf16_and_keeps_fp32_weights(tmp_path):
    model = DtypeRecordingLine()
    result = fit(model, Points(64, 1), Points(16, 2), settings(precision="bf16"), tmp_path / "bf16", progress=False)
    assert model.dtypes == {torch.bfloat16} and model.lin.weight.dtype == torch.float32
    assert math.isclose(model.lin.weight.item(), 3.0, abs_tol=0.3) and math.isfinite(result.best_val_loss)
    plain = DtypeRecordingLine()
    fit(plain, Points(64, 1), Points(16, 2), settings(), tmp_path / "fp32", progress=False)
    assert plain.dtypes == {torch.float32}


def test_precision_enters_the_fingerprint_and_checkpointing_does_not():
    assert settings().fingerprint() == settings(gradient_checkpointing=True).fingerprint()
    assert settings().fingerprint() != settings(precision="bf16").fingerprint()


def test_gradient_checkpointing_reaches_the_diffusers_models_and_keeps_the_gradients():
    from namd.models.unet import build_unet
    from namd.training import enable_gradient_checkpointing

    unet = build_unet(sample_size=8, block_out_channels=(32, 32), num_attention_heads=2, cross_attention_dim=16)
    x, t, ctx = torch.randn(2, 4, 8, 8), torch.tensor([3, 700]), torch.randn(2, 2, 16)

    def gradients():
        unet.zero_grad()
        unet(x, t, ctx).sample.square().mean().backward()
        return [p.grad.clone() for p in unet.parameters()]

    unet.train()
    before = gradients()
    holder = torch.nn.ModuleDict({"unet": unet, "head": torch.nn.Linear(2, 2)})
    assert enable_gradient_checkpointing(holder) == 1 and unet.is_gradient_checkpointing
    for a, b in zip(before, gradients()):
        torch.testing.assert_close(a, b)
    assert enable_gradient_checkpointing(torch.nn.Linear(2, 2)) == 0
