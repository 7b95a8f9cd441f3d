"""The Lightning source: CSVLogger folders written by Lightning itself, read back value for
value; and metrics.csv or hparams.yaml as links, FIFOs or damaged files."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import pytest

from lossreport.errors import MalformedRunFileError
from lossreport.sources.lightning import LightningCsvSource
from tests.support.deadline import fails_if_blocked
from tests.support.foreign import Logged, assert_same, lightning_run, values_of
from tests.support.optional import missing

try:
    import torch
    from lightning.pytorch import LightningModule, Trainer
    from lightning.pytorch.loggers import CSVLogger
except ImportError:
    missing("lightning", "pip install -e '.[dev]'")

SOURCE = LightningCsvSource()
LOGGER_NAME = "two-losses-mlp_ω"


def _logger_run(save_dir: Path) -> tuple[Path, Logged]:
    """A CSVLogger given metrics at different steps: gaps, a NaN, an inf, a metric that
    first appears after a save (Lightning rewrites the file with a wider header)."""
    logger = CSVLogger(str(save_dir), name="lightning_logs")
    logger.log_hyperparams({"model_name": "tiny-mlp", "lr": 0.01, "out": Path("/x/y")})
    logged: Logged = {"train_loss": {}, "val_loss": {}, "aux": {}}
    for step in range(12):
        metrics = {"train_loss": 2.0 / (step + 1)}
        if step % 3 == 0:
            metrics["val_loss"] = 3.0 / (step + 1)
        if step == 4:
            metrics["train_loss"] = float("nan")
        if step == 5:
            metrics["val_loss"] = float("inf")
        if step >= 7:
            metrics["aux"] = -0.5 * step
        logger.log_metrics(metrics, step=step)
        for name, value in metrics.items():
            logged[name][step] = value
        if step == 6:
            logger.save()  # metrics.csv as it is now: aux is not in its header yet
    logger.finalize("success")
    return Path(logger.log_dir), logged


def test_what_the_csv_logger_wrote_is_read_value_for_value(tmp_path: Path) -> None:
    run_dir, logged = _logger_run(tmp_path)
    assert SOURCE.is_run(run_dir) and not SOURCE.is_run(run_dir.parent)
    data = SOURCE.read_losses(run_dir)
    assert data.skipped == []
    assert_same(values_of(data), logged)
    assert data.table.column("val_loss").null_count == 12 - len(logged["val_loss"])  # gaps
    assert data.table.column("step").to_pylist() == list(range(12))

    record = SOURCE.read_record(run_dir)
    assert record.run_id == "version_0"
    assert record.model == "tiny-mlp" and record.hook == ""  # the hparams name the model
    # hparams.yaml tags the Path as a Python object: read as text, never constructed
    assert record.config == {
        "model_name": "tiny-mlp",
        "lr": 0.01,
        "out": "pathlib.PosixPath('/', 'x', 'y')",
    }


def test_a_running_run_is_fingerprinted_by_its_files_and_finished_by_silence(
    tmp_path: Path,
) -> None:
    run_dir, _ = _logger_run(tmp_path)
    inputs = SOURCE.inputs(run_dir)
    assert inputs.status == "running" and inputs.silence_finishes
    assert inputs.status_rule is not None and "Lightning CSV logs" in inputs.status_rule
    metrics = run_dir / "metrics.csv"
    assert inputs.heartbeat is not None
    assert inputs.heartbeat.timestamp() == pytest.approx(metrics.stat().st_mtime)
    assert SOURCE.inputs(run_dir) == inputs
    os.utime(run_dir / "hparams.yaml", (1_000_000_000, 1_000_000_000))
    os.utime(metrics, (1_000_000_500, 1_000_000_500))
    later = SOURCE.inputs(run_dir)
    assert later.fingerprint != inputs.fingerprint
    assert later.heartbeat is not None and later.heartbeat.timestamp() == 1_000_000_500
    record = SOURCE.read_record(run_dir)
    assert record.heartbeat_at == later.heartbeat.isoformat() and record.finished_at is None
    assert record.started_at.startswith("2001-09-09T01:46:40")  # hparams.yaml, written first


class _TwoLosses(LightningModule):
    """A two-layer model logging two losses every step and a third every fifth."""

    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters()  # hparams.yaml: `hidden`, no model name
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
        )
        self.logged: dict[str, list[float]] = {"mse_loss": [], "l1_loss": [], "slow_loss": []}

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        out = self.net(x)
        mse = torch.nn.functional.mse_loss(out, y)
        l1 = torch.nn.functional.l1_loss(out, y)
        self.log("mse_loss", mse, on_step=True, on_epoch=False)
        self.log("l1_loss", l1, on_step=True, on_epoch=False)
        self.logged["mse_loss"].append(mse.item())
        self.logged["l1_loss"].append(l1.item())
        if batch_idx % 5 == 0:
            self.log("slow_loss", 2 * l1, on_step=True, on_epoch=False)
            self.logged["slow_loss"].append((2 * l1).item())
        return mse

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_lightning_trainer_fit_is_read_back_and_named_by_its_logger(tmp_path: Path) -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    data = torch.utils.data.TensorDataset(x, x.sum(dim=1, keepdim=True))
    model = _TwoLosses()
    trainer = Trainer(
        max_steps=20,
        logger=CSVLogger(str(tmp_path), name=LOGGER_NAME),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        accelerator="cpu",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few workers, few batches: advice for real runs
        trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=4))
    run_dir = tmp_path / LOGGER_NAME / "version_0"
    read = SOURCE.read_losses(run_dir)
    assert read.skipped == []
    # Lightning sorts the header; epoch is its own column, not a series
    assert read.table.column_names == ["step", "wall_time", "l1_loss", "mse_loss", "slow_loss"]
    found = values_of(read)
    assert sorted(found["mse_loss"]) == list(range(20))  # one row per optimizer step
    for name in ("mse_loss", "l1_loss"):
        assert [found[name][step] for step in range(20)] == model.logged[name], name
    # Lightning quirk (2.6): a value logged on some steps only is written again at every
    # later step until the next one is logged; the CSV, and so the report, holds exactly that.
    slow_steps = [0, 5, 10, 15, 16]  # batch_idx 0, 5, 10, 15 of 16 per epoch, then 0 again
    assert len(model.logged["slow_loss"]) == len(slow_steps)
    expected = {
        step: model.logged["slow_loss"][sum(s <= step for s in slow_steps) - 1]
        for step in range(20)
    }
    assert found["slow_loss"] == expected
    # the run is the logger's version, the model its name; Lightning records no hook
    record = SOURCE.read_record(run_dir)
    assert (record.run_id, record.model, record.hook) == ("version_0", LOGGER_NAME, "")
    assert record.config == {"hidden": 8}


def test_under_the_default_logger_name_the_model_is_the_folder_above(tmp_path: Path) -> None:
    """`Trainer(default_root_dir=ROOT)` logs to ROOT/lightning_logs/version_N: every
    experiment's logger has that name, so ROOT names the model; each version is a run."""
    root = tmp_path / "gpt2-small-resid-sae"
    for lr in (1e-3, 3e-4):
        lightning_run(root, range(3), hparams={"lr": lr})
    records = [SOURCE.read_record(root / "lightning_logs" / f"version_{n}") for n in (0, 1)]
    assert [(r.run_id, r.model, r.hook) for r in records] == [
        ("version_0", "gpt2-small-resid-sae", ""),
        ("version_1", "gpt2-small-resid-sae", ""),
    ]
    assert [r.config["lr"] for r in records] == [1e-3, 3e-4]


def _run_dir(tmp_path: Path) -> Path:
    run_dir = tmp_path / "lightning_logs" / "version_0"
    run_dir.mkdir(parents=True)
    return run_dir


def test_a_linked_metrics_csv_is_not_a_run_and_is_never_read_through(tmp_path: Path) -> None:
    dummy = tmp_path / "dummy.csv"
    dummy.write_text("step,train_loss\n0,1.0\n")
    run_dir = _run_dir(tmp_path)
    (run_dir / "metrics.csv").symlink_to(dummy)
    assert not SOURCE.is_run(run_dir)
    assert SOURCE.inputs(run_dir).fingerprint == ""
    data = SOURCE.read_losses(run_dir)
    assert data.table.num_rows == 0
    assert len(data.skipped) == 1 and "metrics.csv" in data.skipped[0]
    assert "symbolic link" in data.skipped[0]


def test_a_linked_or_fifo_hparams_yaml_is_named_and_the_values_still_read(
    tmp_path: Path,
) -> None:
    dummy = tmp_path / "dummy.yaml"
    dummy.write_text("model_name: not-this-one\n")
    run_dir = _run_dir(tmp_path)
    (run_dir / "metrics.csv").write_text("step,train_loss\n0,1.0\n")
    (run_dir / "hparams.yaml").symlink_to(dummy)
    with pytest.raises(MalformedRunFileError, match=r"hparams\.yaml.*symbolic link"):
        SOURCE.read_record(run_dir)
    (run_dir / "hparams.yaml").unlink()
    os.mkfifo(run_dir / "hparams.yaml")
    with fails_if_blocked(), pytest.raises(MalformedRunFileError, match=r"hparams\.yaml.*FIFO"):
        SOURCE.read_record(run_dir)
    assert values_of(SOURCE.read_losses(run_dir)) == {"train_loss": {0: 1.0}}


def test_a_fifo_metrics_csv_never_blocks(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path)
    os.mkfifo(run_dir / "metrics.csv")
    with fails_if_blocked():
        assert not SOURCE.is_run(run_dir)
        SOURCE.inputs(run_dir)
        data = SOURCE.read_losses(run_dir)
    assert data.table.num_rows == 0
    assert len(data.skipped) == 1 and "metrics.csv" in data.skipped[0]
    assert "FIFO" in data.skipped[0]


def test_damaged_rows_and_cells_are_named_and_the_rest_read(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path)
    metrics = run_dir / "metrics.csv"
    metrics.write_text(
        "epoch,step,train_loss,val_loss,note\n"
        "0,0,1.0,,a\n"
        "0,1,0.5,0.7,b\n"
        "0,2,0.25,0.6,c,extra\n"  # one field too many
        "0,,0.2,,d\n"  # no step
        "0,3,oops,0.5,e\n"  # not a number
        "0,4,0.125,nan,f\n"
        "0,4.5,9.0,,g\n"  # not a whole step
    )
    (run_dir / "hparams.yaml").write_text("model_name: [unclosed\n")
    data = SOURCE.read_losses(run_dir)
    expected: Logged = {
        "train_loss": {0: 1.0, 1: 0.5, 4: 0.125},
        "val_loss": {1: 0.7, 3: 0.5, 4: math.nan},
    }
    assert_same(values_of(data), expected)
    text = "\n".join(data.skipped)
    assert all(str(metrics) in line for line in data.skipped)
    assert "1 rows skipped: not as many fields" in text
    assert "2 rows skipped: no whole-number step" in text
    assert "'train_loss': 1 cells that are not numbers" in text
    assert "not numbers left out: note" in text
    with pytest.raises(MalformedRunFileError, match=r"hparams\.yaml: not valid YAML"):
        SOURCE.read_record(run_dir)


def test_an_empty_or_unfinished_metrics_csv_reads_as_nothing_yet(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path)
    for text in ("", "step,train_l"):
        (run_dir / "metrics.csv").write_text(text)
        data = SOURCE.read_losses(run_dir)
        assert data.table.num_rows == 0 and data.skipped == []
        assert SOURCE.read_record(run_dir).config == {}


def test_a_row_being_written_is_read_once_complete(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path)
    (run_dir / "metrics.csv").write_text("step,train_loss\n0,1.5\n1,0.9")  # 0.98765 half-written
    assert SOURCE.read_losses(run_dir).table.to_pydict()["train_loss"] == [1.5]
    (run_dir / "metrics.csv").write_text("step,train_loss\n0,1.5\n1,0.98765\n")
    assert SOURCE.read_losses(run_dir).table.to_pydict()["train_loss"] == [1.5, 0.98765]


def test_a_csv_past_the_read_budget_is_named_not_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mostly empty cells: 400 KB of commas are some 20 MB of cells once parsed."""
    run_dir = _run_dir(tmp_path)
    metrics = run_dir / "metrics.csv"
    header = ",".join(["step", *(f"val_{n}" for n in range(19))])
    metrics.write_text(
        header + "\n" + "".join(f"{step}" + "," * 19 + "\n" for step in range(20_000))
    )
    monkeypatch.setenv("LOSSREPORT_READ_BUDGET", "4M")
    data = SOURCE.read_losses(run_dir)
    assert data.table.num_rows == 0
    assert len(data.skipped) == 1 and data.over_budget == data.skipped
    assert data.skipped[0].startswith(f"{metrics}: would take ")
    assert data.skipped[0].endswith(
        " bytes once parsed, over the run's read budget of 4,194,304 bytes "
        "(LOSSREPORT_READ_BUDGET sets it); not read"
    )
