"""Device choice: a config asking for a GPU the machine lacks stops with a sentence, not a CUDA trace."""

import pytest
import torch

from namd.runtime import DeviceUnavailableError, select_device, training_precision


@pytest.fixture
def no_cuda(monkeypatch):
    # What a CPU-only machine reports; forced, so the test means the same on a GPU machine.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("requested", ["cuda", "cuda:0", "CUDA"])
def test_cuda_without_a_gpu_names_the_config_key(no_cuda, requested):
    with pytest.raises(DeviceUnavailableError) as error:
        select_device(requested)
    message = str(error.value)
    assert "config key 'device'" in message and "no CUDA GPU" in message and "device: auto" in message


def test_auto_without_a_gpu_is_the_cpu(no_cuda):
    assert select_device("auto") == torch.device("cpu")
    assert select_device(None) == torch.device("cpu")


def test_this_machine_matches_what_auto_picks():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailableError):
            select_device("cuda")


def test_unknown_device_names_the_key():
    with pytest.raises(DeviceUnavailableError, match="config key 'device': unknown value 'tpu'"):
        select_device("tpu")


def test_bf16_off_cuda_names_the_config_key_and_fp32_passes(no_cuda):
    cpu = select_device("auto")
    with pytest.raises(DeviceUnavailableError, match=r"'compute.precision' is 'bf16' but this job runs on cpu"):
        training_precision({"precision": "bf16", "gradient_checkpointing": False}, cpu)
    with pytest.raises(DeviceUnavailableError, match=r"'compute.precision': unknown value 'fp16'"):
        training_precision({"precision": "fp16"}, cpu)
    assert training_precision({"precision": "fp32", "gradient_checkpointing": True}, cpu) == {
        "precision": "fp32", "gradient_checkpointing": True}
    assert training_precision({"precision": "bf16", "gradient_checkpointing": False}, torch.device("cuda")) == {
        "precision": "bf16", "gradient_checkpointing": False}
