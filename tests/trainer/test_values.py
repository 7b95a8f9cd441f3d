from __future__ import annotations

import gc
import math
import weakref

import numpy as np
import pytest
import torch

from lossreport.errors import InvalidLossError
from lossreport.trainer.values import check_loss_name, check_step, coerce_loss_value


@pytest.mark.parametrize("name", ["mse_loss", "l1", "_aux", "A9"])
def test_plain_identifiers_are_accepted_as_loss_names(name: str) -> None:
    assert check_loss_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "mse loss", "../x", "<b>", "1loss", "naïve", "class", "step", "wall_time", "x" * 65],
)
def test_other_loss_names_are_refused_with_the_name_in_the_error(name: str) -> None:
    with pytest.raises(InvalidLossError) as info:
        check_loss_name(name)
    assert repr(name) in str(info.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3, 3.0),
        (np.float32(0.5), 0.5),
        (np.float16(2.0), 2.0),
        (np.int64(4), 4.0),
        (np.array(1.25), 1.25),
        (torch.tensor(0.75), 0.75),
        (torch.tensor(0.75, dtype=torch.bfloat16), 0.75),
        (torch.tensor(3), 3.0),
        (torch.tensor([2.5]), 2.5),
        (10**400, math.inf),
    ],
)
def test_numbers_and_host_tensors_become_floats(value: object, expected: float) -> None:
    result = coerce_loss_value("mse_loss", value)
    assert type(result) is float
    assert result == expected


@pytest.mark.parametrize(
    "value", ["0.5", None, True, np.bool_(True), [1.0], torch.tensor(True), torch.tensor(1 + 2j)]
)
def test_non_numeric_values_are_refused_naming_the_key(value: object) -> None:
    with pytest.raises(InvalidLossError) as info:
        coerce_loss_value("l1_loss", value)
    assert "'l1_loss'" in str(info.value)
    assert info.value.key == "l1_loss"


def test_tensors_with_more_than_one_element_are_refused_with_their_shape() -> None:
    with pytest.raises(InvalidLossError, match=r"shape \(2, 2\)"):
        coerce_loss_value("mse_loss", torch.ones(2, 2))


def test_a_logged_loss_does_not_keep_its_autograd_graph_alive() -> None:
    for device in ("cpu", "meta"):  # meta stands in for an accelerator: kept on device, detached
        weights = torch.randn(1000, device=device)
        saved_for_backward = weakref.ref(weights)
        x = torch.randn(1000, requires_grad=True, device=device)
        loss = (x * weights).sum()  # mul saves `weights` in the graph
        kept = coerce_loss_value("overall_loss", loss)
        del weights, loss
        gc.collect()
        assert saved_for_backward() is None, device
        assert device == "cpu" or kept.grad_fn is None


def test_device_tensors_stay_on_their_device_until_flush() -> None:
    value = coerce_loss_value("mse_loss", torch.tensor([1.0], device="meta"))
    assert isinstance(value, torch.Tensor)
    assert value.device.type == "meta"
    assert value.dim() == 0


def test_steps_must_be_int64_integers() -> None:
    assert check_step(np.int32(5)) == 5
    for bad in (1.5, "3", True, 2**63):
        with pytest.raises(InvalidLossError, match="step"):
            check_step(bad)
