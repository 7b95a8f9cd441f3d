"""Runs written by other tools, with those tools themselves, and what each logged: for tests
that check every logged value in the report's CSV. Each writer returns
{series: {step: value}} as the tool was given it."""

from __future__ import annotations

import csv
import math
import os
import warnings
from pathlib import Path
from typing import Any

from lossreport.runformat import LossData
from tests.support.optional import missing

Logged = dict[str, dict[int, float]]
MLFLOW_FILE_STORE_ENV = "MLFLOW_ALLOW_FILE_STORE"


def tensorboard_run(folder: Path, steps: range) -> Logged:
    """PyTorch's SummaryWriter: two tags, one with a `/`."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        missing("torch's SummaryWriter (torch and tensorboard)", "pip install -e '.[dev]'")
    logged: Logged = {"train/mse_loss": {}, "train/l1_loss": {}}
    writer = SummaryWriter(str(folder), flush_secs=3600)
    for step in steps:
        for tag, value in (("train/mse_loss", 1.0 / (step + 1)), ("train/l1_loss", 0.5 + step)):
            writer.add_scalar(tag, value, step)
            logged[tag][step] = value
    writer.close()
    return logged


def lightning_run(
    save_dir: Path,
    steps: range,
    name: str = "lightning_logs",
    hparams: dict[str, Any] | None = None,
) -> Logged:
    """Lightning's CSVLogger (`save_dir/name/version_N`), with a validation loss logged every
    third step (gaps)."""
    try:
        from lightning.pytorch.loggers import CSVLogger
    except ImportError:
        missing("lightning", "pip install -e '.[dev]'")
    logger = CSVLogger(str(save_dir), name=name)
    logger.log_hyperparams({"model_name": "tiny-mlp", "lr": 0.01} if hparams is None else hparams)
    logged: Logged = {"train_loss": {}, "val_loss": {}}
    for step in steps:
        metrics = {"train_loss": 2.0 / (step + 1)}
        if step % 3 == 0:
            metrics["val_loss"] = 3.0 / (step + 1)
        logger.log_metrics(metrics, step=step)
        for name, value in metrics.items():
            logged[name][step] = value
    logger.finalize("success")
    return logged


def mlflow_run(
    store: Path,
    steps: range,
    experiment: str = "sae-sweep",
    run_name: str = "mlflow-run",
    params: dict[str, Any] | None = None,
) -> Logged:
    """MLflow's client on a file store: a finished run with a `/` in a metric's name, in
    `experiment` (made if new)."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        missing("mlflow", "pip install -e '.[dev]'")
    allowed = os.environ.get(MLFLOW_FILE_STORE_ENV)
    os.environ[MLFLOW_FILE_STORE_ENV] = "true"  # MLflow 3 refuses a file store without it
    try:
        named = {"model_name": "gelu-1l"} if params is None else params
        return _mlflow_run(MlflowClient, store, steps, experiment, run_name, named)
    finally:
        if allowed is None:
            del os.environ[MLFLOW_FILE_STORE_ENV]
        else:
            os.environ[MLFLOW_FILE_STORE_ENV] = allowed


def _mlflow_run(
    client_class: Any,
    store: Path,
    steps: range,
    experiment_name: str,
    run_name: str,
    params: dict[str, Any],
) -> Logged:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # and warns that the file store is deprecated
        client = client_class(tracking_uri=store.as_uri())
        found = client.get_experiment_by_name(experiment_name)
        experiment = found.experiment_id if found else client.create_experiment(experiment_name)
        run = client.create_run(experiment, run_name=run_name)
        for key, value in params.items():
            client.log_param(run.info.run_id, key, value)
        logged: Logged = {"train/mse": {}, "aux": {}}
        for step in steps:
            for key, value in (("train/mse", 0.1 * step), ("aux", math.sqrt(step))):
                client.log_metric(run.info.run_id, key, value, step=step)
                logged[key][step] = value
        client.set_terminated(run.info.run_id, "FINISHED")
    return logged


def hf_trainer_run(output_dir: Path, max_steps: int) -> Logged:
    """A real transformers.Trainer on a tiny GPT-2: the losses of its log history."""
    try:
        import torch
        from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments
    except ImportError:
        missing("transformers", "pip install -e '.[sae-lens]'")

    class Tokens(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
        def __len__(self) -> int:
            return 64

        def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
            ids = torch.randint(0, 50, (16,), generator=torch.Generator().manual_seed(index))
            return {"input_ids": ids, "labels": ids}

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50))
    arguments = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=max_steps,
        logging_steps=1,
        save_steps=max_steps,
        per_device_train_batch_size=4,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=arguments, train_dataset=Tokens())
    trainer.train()
    trainer.save_state()
    logged: Logged = {}
    for entry in trainer.state.log_history:
        for key, value in entry.items():
            if key not in ("step", "epoch") and isinstance(value, int | float):
                logged.setdefault(key, {})[int(entry["step"])] = float(value)
    return logged


def csv_values(csv_path: Path) -> Logged:
    """The report's loss history CSV as {series: {step: value}} (empty cells left out)."""
    values: Logged = {}
    with csv_path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            step = int(row.pop("step"))
            for name, text in row.items():
                if text != "":
                    values.setdefault(name, {})[step] = float(text)
    return values


def assert_all_logged(csv_path: Path, logged: Logged, rel: float = 1e-6) -> None:
    """Every value `logged` is in the CSV at its step (float32 where the tool stores that)."""
    found = csv_values(csv_path)
    for series, by_step in logged.items():
        assert series in found, f"{series} missing from {csv_path.name}: {sorted(found)}"
        assert sorted(found[series]) == sorted(by_step), series
        for step, value in by_step.items():
            assert math.isclose(found[series][step], value, rel_tol=rel, abs_tol=1e-12), (
                series,
                step,
                found[series][step],
                value,
            )


def values_of(data: LossData) -> Logged:
    """{series: {step: value}} of what a source read, missing cells left out."""
    table = data.table.to_pydict()
    steps = table.pop("step")
    table.pop("wall_time")
    return {
        name: {step: value for step, value in zip(steps, column, strict=True) if value is not None}
        for name, column in table.items()
    }


def assert_same(found: Logged, logged: Logged) -> None:
    """Every logged value at its step, and nothing else (NaN where NaN was logged)."""
    assert sorted(found) == sorted(logged)
    for name, by_step in logged.items():
        assert sorted(found[name]) == sorted(by_step), name
        for step, value in by_step.items():
            got = found[name][step]
            assert got == value or (math.isnan(got) and math.isnan(value)), (name, step, got)
