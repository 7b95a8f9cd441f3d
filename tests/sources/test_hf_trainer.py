"""The Hugging Face Trainer source: a real transformers.Trainer's output folder, read while
it trains (checkpoints only), after train() and after save_state(); and states or configs as
links, FIFOs or damaged files."""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lossreport.errors import MalformedRunFileError
from lossreport.runformat import LossData
from lossreport.sources.base import Inputs
from lossreport.sources.hf_trainer import HfTrainerSource
from tests.support.deadline import fails_if_blocked
from tests.support.foreign import Logged, assert_same, values_of
from tests.support.optional import missing

try:
    import torch
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )
except ImportError:
    missing("transformers and torch", "pip install -e '.[sae-lens]'")

SOURCE = HfTrainerSource()
MAX_STEPS = 12


def logged_in(history: list[dict[str, Any]]) -> Logged:
    """What the Trainer logged: every number of each entry but step and epoch."""
    logged: Logged = {}
    for entry in history:
        for key, value in entry.items():
            if key not in ("step", "epoch") and isinstance(value, int | float):
                logged.setdefault(key, {})[entry["step"]] = float(value)
    return logged


@dataclass
class Seen:
    """What the source said at one checkpoint save, and what the Trainer had logged then."""

    step: int
    inputs: Inputs
    data: LossData
    history: list[dict[str, Any]]


@dataclass
class Training:
    output_dir: Path
    during: list[Seen] = field(default_factory=list)
    after_train: tuple[Inputs, LossData] | None = None
    history_after_train: list[dict[str, Any]] = field(default_factory=list)
    after_save_state: tuple[Inputs, LossData] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


class _Tokens(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __len__(self) -> int:
        return 32

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = torch.randint(0, 50, (16,), generator=torch.Generator().manual_seed(index))
        return {"input_ids": ids, "labels": ids}


class _ReadAtSave(TrainerCallback):
    """Reads the output folder as lossreport would, right after each checkpoint is saved."""

    def __init__(self, training: Training) -> None:
        self.training = training

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        folder = self.training.output_dir
        self.training.during.append(
            Seen(
                state.global_step,
                SOURCE.inputs(folder),
                SOURCE.read_losses(folder),
                copy.deepcopy(state.log_history),
            )
        )


@pytest.fixture(scope="module")
def training(tmp_path_factory: pytest.TempPathFactory) -> Training:
    """A tiny GPT-2 trained 12 steps: logs every step, evaluates every 4, saves every 5."""
    output_dir = tmp_path_factory.mktemp("hf") / "gpt2-tiny"
    training = Training(output_dir)
    torch.manual_seed(0)
    config = GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50, n_positions=32)
    arguments = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=MAX_STEPS,
        logging_steps=1,
        save_steps=5,
        eval_strategy="steps",
        eval_steps=4,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=GPT2LMHeadModel(config),
        args=arguments,
        train_dataset=_Tokens(),
        eval_dataset=_Tokens(),
        callbacks=[_ReadAtSave(training)],
    )
    trainer.train()
    training.history_after_train = copy.deepcopy(trainer.state.log_history)
    training.after_train = (SOURCE.inputs(output_dir), SOURCE.read_losses(output_dir))
    trainer.save_state()
    training.after_save_state = (SOURCE.inputs(output_dir), SOURCE.read_losses(output_dir))
    training.history = trainer.state.log_history
    return training


def test_the_output_folder_is_a_run_and_its_checkpoints_are_not(training: Training) -> None:
    folder = training.output_dir
    assert SOURCE.is_run(folder)
    checkpoints = sorted(path.name for path in folder.glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-10", "checkpoint-12", "checkpoint-5"]
    assert not any(SOURCE.is_run(folder / name) for name in checkpoints)


def test_while_training_the_highest_checkpoint_is_read(training: Training) -> None:
    assert [seen.step for seen in training.during] == [5, 10, 12]
    for seen in training.during[:2]:
        assert seen.inputs.status == "running" and seen.inputs.silence_finishes
        assert seen.inputs.fingerprint.startswith(f"checkpoint-{seen.step}/trainer_state.json:")
        assert seen.data.skipped == []
        assert_same(values_of(seen.data), logged_in(seen.history))
        assert "eval_loss" in values_of(seen.data) and "loss" in values_of(seen.data)
    assert training.during[0].inputs.fingerprint != training.during[1].inputs.fingerprint


def test_after_train_the_last_checkpoint_says_completed(training: Training) -> None:
    assert training.after_train is not None
    inputs, data = training.after_train
    assert inputs.status == "completed" and not inputs.silence_finishes
    assert inputs.status_rule == f"Trainer state reached max_steps ({MAX_STEPS})"
    assert inputs.fingerprint.startswith("checkpoint-12/trainer_state.json:")
    # the last checkpoint was saved before the Trainer logged its summary
    assert "train_runtime" in training.history_after_train[-1]
    assert_same(values_of(data), logged_in(training.history_after_train[:-1]))


def test_after_save_state_every_logged_value_is_read(training: Training) -> None:
    assert training.after_save_state is not None
    inputs, data = training.after_save_state
    assert inputs.status == "completed"
    assert inputs.fingerprint.startswith("trainer_state.json:")
    assert data.skipped == []
    found = values_of(data)
    assert_same(found, logged_in(training.history))
    assert {"loss", "grad_norm", "learning_rate", "eval_loss", "train_loss"} <= set(found)
    assert "epoch" not in found
    record = SOURCE.read_record(training.output_dir)
    assert record.status == "completed" and record.finished_at == record.heartbeat_at
    assert record.run_id == "gpt2-tiny" and record.hook == ""  # the output folder; no hook
    # transformers 5 writes no _name_or_path for a model built from a config
    assert record.model == "gpt2" and record.architecture == "GPT2LMHeadModel"
    assert record.config["n_embd"] == 16 and record.config["model_type"] == "gpt2"


def _state(steps: int, max_steps: int, history: list[dict[str, Any]]) -> str:
    return json.dumps({"global_step": steps, "max_steps": max_steps, "log_history": history})


def _write_state(folder: Path, steps: int, max_steps: int = 100) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "trainer_state.json"
    path.write_text(_state(steps, max_steps, [{"loss": steps / 10, "step": steps}]))
    return path


def test_a_newer_checkpoint_than_the_saved_state_is_read(tmp_path: Path) -> None:
    """Training resumed in the same folder after save_state(): the checkpoints are newer."""
    run_dir = tmp_path / "out"
    top = _write_state(run_dir, 10)
    newer = _write_state(run_dir / "checkpoint-20", 20)
    os.utime(top, (1_000_000_000, 1_000_000_000))
    assert values_of(SOURCE.read_losses(run_dir)) == {"loss": {20: 2.0}}
    os.utime(newer, (999_999_999, 999_999_999))
    assert values_of(SOURCE.read_losses(run_dir)) == {"loss": {10: 1.0}}


def test_nan_inf_gaps_and_damaged_entries(tmp_path: Path) -> None:
    run_dir = tmp_path / "out"
    run_dir.mkdir()
    history = [
        {"loss": float("nan"), "grad_norm": float("inf"), "epoch": 0.1, "step": 1},
        {"loss": 0.5, "note": "text", "flag": True, "step": 2},
        {"loss": 0.4, "epoch": 0.3},  # no step
        "not an entry",
        {"eval_loss": 0.7, "wall_time": 5.0, "step": 3},
    ]
    state = run_dir / "trainer_state.json"
    state.write_text(_state(3, 3, history))
    data = SOURCE.read_losses(run_dir)
    assert_same(
        values_of(data),
        {"loss": {1: math.nan, 2: 0.5}, "grad_norm": {1: math.inf}, "eval_loss": {3: 0.7}},
    )
    assert data.table.column("eval_loss").to_pylist() == [None, None, 0.7]
    assert data.skipped == [
        f"{state}: 2 log_history entries without a step skipped",
        f"{state}: log_history keys left out, the report's own columns: wall_time",
        f"{state}: log_history keys that are not numbers left out: flag, note",
    ]


def test_a_damaged_state_is_named_and_the_next_checkpoint_read(tmp_path: Path) -> None:
    run_dir = tmp_path / "out"
    _write_state(run_dir / "checkpoint-5", 5)
    broken = _write_state(run_dir / "checkpoint-10", 10)
    broken.write_text('{"global_step": 10, "log_history": [{"loss": 1')  # being written
    inputs = SOURCE.inputs(run_dir)
    assert inputs.status == "running"
    assert "checkpoint-10/trainer_state.json:" in inputs.fingerprint
    data = SOURCE.read_losses(run_dir)
    assert values_of(data) == {"loss": {5: 0.5}}
    assert str(broken) in data.skipped[0] and "not valid JSON" in data.skipped[0]
    assert "checkpoint-5" in data.skipped[1]


def test_a_linked_state_is_not_followed(tmp_path: Path) -> None:
    dummy = _write_state(tmp_path / "dummy", 99, 99)
    run_dir = tmp_path / "out"
    run_dir.mkdir()
    (run_dir / "trainer_state.json").symlink_to(dummy)
    assert not SOURCE.is_run(run_dir)
    data = SOURCE.read_losses(run_dir)
    assert data.table.num_rows == 0
    assert "trainer_state.json: is a symbolic link" in data.skipped[0]
    _write_state(run_dir / "checkpoint-3", 3)
    (run_dir / "checkpoint-7").symlink_to(dummy.parent, target_is_directory=True)
    assert SOURCE.is_run(run_dir)
    inputs = SOURCE.inputs(run_dir)
    assert inputs.status == "running" and inputs.fingerprint.startswith("checkpoint-3/")
    data = SOURCE.read_losses(run_dir)
    assert values_of(data) == {"loss": {3: 0.3}}
    assert sorted(line.split(": ")[0] for line in data.skipped) == [
        str(run_dir / "checkpoint-7"),
        str(run_dir / "trainer_state.json"),
    ]


def test_a_fifo_state_or_config_never_blocks(tmp_path: Path) -> None:
    run_dir = tmp_path / "out"
    _write_state(run_dir / "checkpoint-4", 4, 4)
    os.mkfifo(run_dir / "trainer_state.json")
    os.mkfifo(run_dir / "checkpoint-4" / "config.json")
    with fails_if_blocked():
        assert SOURCE.is_run(run_dir)
        assert SOURCE.inputs(run_dir).status == "completed"
        data = SOURCE.read_losses(run_dir)
        with pytest.raises(MalformedRunFileError, match=r"config\.json: is a FIFO"):
            SOURCE.read_record(run_dir)
    assert values_of(data) == {"loss": {4: 0.4}}
    assert "trainer_state.json: is a FIFO" in data.skipped[0]


def test_a_config_json_that_is_a_link_or_not_json_is_named(tmp_path: Path) -> None:
    run_dir = tmp_path / "out"
    _write_state(run_dir, 1)
    dummy = tmp_path / "dummy.json"
    dummy.write_text('{"_name_or_path": "not-this-one"}')
    (run_dir / "config.json").symlink_to(dummy)
    with pytest.raises(MalformedRunFileError, match="symbolic link"):
        SOURCE.read_record(run_dir)
    (run_dir / "config.json").unlink()
    (run_dir / "config.json").write_text("{not json")
    with pytest.raises(MalformedRunFileError, match="not valid JSON"):
        SOURCE.read_record(run_dir)
    (run_dir / "config.json").write_text('{"_name_or_path": "org/model", "x": NaN}')
    record = SOURCE.read_record(run_dir)
    assert record.model == "org/model" and record.config["x"] == "nan"  # JSON-safe
    assert record.status == "running" and record.finished_at is None


def test_an_entry_whose_step_is_beyond_int64_is_skipped_and_named(tmp_path: Path) -> None:
    run_dir = tmp_path / "out"
    run_dir.mkdir()
    history = [{"loss": 0.5, "step": 1}, {"loss": 0.4, "step": 2**64}, {"loss": 0.3, "step": 3}]
    state = run_dir / "trainer_state.json"
    state.write_text(_state(3, 3, history))
    data = SOURCE.read_losses(run_dir)
    assert values_of(data) == {"loss": {1: 0.5, 3: 0.3}}
    assert data.skipped == [
        f"{state}: 1 log_history entries with a step beyond int64 skipped (first: entry 1)"
    ]


def test_a_state_past_the_read_budget_is_named_and_an_older_one_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "out"
    run_dir.mkdir()
    history = [{"loss": 1.0 / (step + 1), "step": step} for step in range(5000)]
    state = run_dir / "trainer_state.json"
    state.write_text(_state(5000, 5000, history))  # 150 KB; some 1.2 MB once parsed
    _write_state(run_dir / "checkpoint-10", 10)
    os.utime(run_dir / "checkpoint-10" / "trainer_state.json", (1e9, 1e9))
    monkeypatch.setenv("LOSSREPORT_READ_BUDGET", "512K")
    data = SOURCE.read_losses(run_dir)
    assert values_of(data) == {"loss": {10: 1.0}}
    refusal = data.skipped[0]
    assert data.over_budget == [refusal]
    assert refusal.startswith(f"{state}: would take ") and " bytes once parsed, over " in refusal
    assert refusal.endswith(
        "the run's read budget of 524,288 bytes (LOSSREPORT_READ_BUDGET sets it); not read"
    )
    checkpoint = run_dir / "checkpoint-10" / "trainer_state.json"
    assert data.skipped[1:] == [f"{checkpoint}: read instead, as the newer state could not be"]
