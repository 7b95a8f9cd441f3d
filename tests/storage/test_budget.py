"""The read budget's size: LOSSREPORT_READ_BUDGET in bytes or with a unit, refused by every
command at its start when it is not a size."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossreport.errors import InvalidInputError, ReadBudgetError
from lossreport.storage import BUDGET_VARIABLE, DEFAULT_BUDGET_BYTES, ReadBudget, budget_bytes
from tests.support.procs import run_cli


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("", DEFAULT_BUDGET_BYTES),
        ("1048576", 2**20),
        ("512M", 512 * 2**20),
        ("2g", 2 * 2**30),
        ("1.5 GiB", 3 * 2**29),
        ("64KB", 64 * 2**10),
    ],
)
def test_the_budget_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, text: str, size: int
) -> None:
    monkeypatch.setenv(BUDGET_VARIABLE, text)
    assert budget_bytes() == size == ReadBudget().limit


@pytest.mark.parametrize("text", ["lots", "0", "-5M", "2X", "1e9"])
def test_a_budget_that_is_not_a_size_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setenv(BUDGET_VARIABLE, text)
    with pytest.raises(InvalidInputError, match=f"^{BUDGET_VARIABLE}='{text}': not a size"):
        budget_bytes()


def test_what_is_charged_is_spent_and_a_refusal_is_kept(tmp_path: Path) -> None:
    budget = ReadBudget(100)
    budget.charge(tmp_path / "a", 60)
    with pytest.raises(ReadBudgetError) as refused:
        budget.charge(tmp_path / "b", 41)
    assert budget.left == 40 and budget.refused == [str(refused.value)]
    budget.charge(tmp_path / "c", 40)
    assert budget.left == 0


def test_every_command_refuses_a_bad_budget_at_its_start(tmp_path: Path) -> None:
    done = run_cli("render", str(tmp_path), env={BUDGET_VARIABLE: "lots"})
    assert done.returncode == 1
    assert done.stderr == (
        f"lossreport: {BUDGET_VARIABLE}='lots': not a size in bytes (a number, or with K, M or G)\n"
    )
