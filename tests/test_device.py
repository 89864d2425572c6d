"""Devices: which one `pick_device` takes, clear errors for a missing GPU, and bf16 autocast."""

import pytest
import torch

from vae_tutorial.data import load_mnist
from vae_tutorial.device import autocast, pick_device


@pytest.fixture
def machine(monkeypatch):
    """Pretend to be a machine with the given CUDA GPUs and MPS: set(cuda=2, mps=False)."""

    def set_(cuda: int = 0, mps: bool = False) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return set_


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(1, True, "cuda"), (0, True, "mps"), (0, False, "cpu"), (2, False, "cuda")],
)
def test_auto_takes_cuda_then_mps_then_cpu(machine, cuda, mps, expected):
    machine(cuda=cuda, mps=mps)
    assert pick_device().type == expected
    assert pick_device("auto").type == expected
    assert pick_device("cpu") == torch.device("cpu")


def test_the_device_picked_here_runs_a_computation():
    device = pick_device()
    x = torch.ones(3, 3, device=device)
    assert (x @ x).sum().item() == 27 and x.device.type == device.type


@pytest.mark.parametrize("bad", ["tpu", "gpu0", 3.5])
def test_unknown_device_names_expected_and_got(bad):
    with pytest.raises(ValueError, match=rf"expected 'auto', 'cpu', 'cuda'.*got {bad!r}"):
        pick_device(bad)


@pytest.mark.parametrize(
    ("cuda", "asked", "message"),
    [
        (0, "cuda", "got 'cuda'; this machine has no CUDA GPU: pass 'auto'"),
        (0, "mps", "got 'mps'; this machine has no Apple MPS device: pass 'auto'"),
        (2, "cuda:2", "(cpu, cuda), got 'cuda:2'; this machine has 2 CUDA GPU(s): pass 'auto'"),
    ],
)
def test_a_device_that_is_not_there_is_a_clear_error(machine, cuda, asked, message):
    machine(cuda=cuda)
    with pytest.raises(ValueError) as error:
        pick_device(asked)
    assert str(error.value).startswith("device: expected an available device (cpu")
    assert message in str(error.value)


def test_load_mnist_on_a_missing_gpu_names_the_device_not_the_driver(machine):
    machine(cuda=0)
    with pytest.raises(ValueError, match="got 'cuda'; this machine has no CUDA GPU"):
        load_mnist("test", device="cuda")


def test_bf16_autocast_runs_linear_layers_in_bfloat16():
    layer, x = torch.nn.Linear(4, 3), torch.randn(2, 4)
    with autocast(torch.device("cpu"), True):
        assert layer(x).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), False):
        assert layer(x).dtype == torch.float32


def test_bf16_where_cuda_lacks_it_warns_and_runs_float32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    with pytest.warns(UserWarning, match=r"bf16 is not supported on cuda; training in float32"):
        context = autocast(torch.device("cuda"), True)
    assert not context._enabled
