"""The MLflow source: file-store runs written by MLflow's own client, read back value for value
with their statuses; and meta.yaml or metric files as links, FIFOs or damaged files."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lossreport.errors import MalformedRunFileError
from lossreport.sources.mlflow import MlflowSource
from tests.support.deadline import fails_if_blocked
from tests.support.foreign import Logged, assert_same, values_of
from tests.support.optional import missing

try:
    from mlflow.tracking import MlflowClient
except ImportError:
    missing("mlflow", "pip install -e '.[dev]'")

# MLflow 3 calls the file store deprecated (a warning in some versions, in 3.17 an error
# unless MLFLOW_ALLOW_FILE_STORE is set): it is what this source reads.
pytestmark = pytest.mark.filterwarnings("ignore:.*[Ff]ile ?[Ss]tore.*")

SOURCE = MlflowSource()
T0 = 1_700_000_000_000  # ms


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowClient]:
    """A client of a file store in tmp_path; no tracking URI or MLflow setting outlives it."""
    for name in list(os.environ):
        if name.startswith("MLFLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    yield MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())


def _run_dir(client: MlflowClient, run_id: str) -> Path:
    run = client.get_run(run_id)
    return Path(run.info.artifact_uri.removeprefix("file://")).parent


def _logged_run(client: MlflowClient) -> tuple[str, Logged]:
    """Params, three metrics (one with a `/`), a NaN, infinities, a step logged twice, and a
    value logged late with an earlier timestamp; then the run finishes."""
    experiment = client.create_experiment("sae-sweep")
    run = client.create_run(
        experiment, run_name="sweep-7", tags={"mlflow.source.name": "train.py", "team": "x"}
    )
    run_id = run.info.run_id
    client.log_param(run_id, "model_name", "gelu-1l")
    client.log_param(run_id, "lr", 0.001)
    client.log_param(run_id, "layer/index", 3)
    logged: Logged = {"train/mse": {}, "aux": {}, "eval/deep/loss": {}}
    for step in range(10):
        values = {"train/mse": 1.0 / (step + 1), "aux": math.sqrt(step)}
        if step % 4 == 0:
            values["eval/deep/loss"] = 0.5 * step
        for key, value in values.items():
            client.log_metric(run_id, key, value, timestamp=T0 + 1000 * step, step=step)
            logged[key][step] = value
    client.log_metric(run_id, "aux", float("nan"), timestamp=T0 + 20_000, step=10)
    client.log_metric(run_id, "aux", float("inf"), timestamp=T0 + 20_000, step=11)
    client.log_metric(run_id, "aux", -float("inf"), timestamp=T0 + 20_000, step=12)
    logged["aux"].update({10: math.nan, 11: math.inf, 12: -math.inf})
    client.log_metric(run_id, "train/mse", 42.0, timestamp=T0 + 30_000, step=3)  # later: wins
    logged["train/mse"][3] = 42.0
    client.log_metric(run_id, "train/mse", -1.0, timestamp=T0 - 1, step=4)  # earlier: loses
    client.set_terminated(run_id, "FINISHED")
    return run_id, logged


def test_what_the_mlflow_client_wrote_is_read_value_for_value(client: MlflowClient) -> None:
    run_id, logged = _logged_run(client)
    run_dir = _run_dir(client, run_id)
    assert SOURCE.is_run(run_dir)
    assert not SOURCE.is_run(run_dir.parent)  # the experiment's folder: meta.yaml, no metrics
    data = SOURCE.read_losses(run_dir)
    assert data.skipped == []
    assert_same(values_of(data), logged)
    walls = dict(zip(*data.table.select(["step", "wall_time"]).to_pydict().values(), strict=True))
    assert walls[0] == (T0 + 0) / 1000 and walls[3] == (T0 + 30_000) / 1000

    run = client.get_run(run_id)
    record = SOURCE.read_record(run_dir)
    assert record.run_id == "sweep-7" and record.model == "gelu-1l" and record.hook == ""
    assert record.config == {
        "layer/index": "3",
        "lr": "0.001",
        "model_name": "gelu-1l",
        "mlflow.source.name": "train.py",
    }
    assert record.status == "completed" and record.error is None
    (run_dir / "tags" / "mlflow.runName").write_text("renamed\n")  # the tag names the run
    assert SOURCE.read_record(run_dir).run_id == "renamed"
    assert record.started_at is not None and record.finished_at is not None
    started = run.info.start_time / 1000
    assert abs(_timestamp(record.started_at) - started) < 1e-3
    assert abs(_timestamp(record.finished_at) - run.info.end_time / 1000) < 1e-3

    inputs = SOURCE.inputs(run_dir)
    assert inputs.status == "completed" and not inputs.silence_finishes
    assert inputs.status_rule == "MLflow run status FINISHED"
    assert "metrics/eval/deep/loss:" in inputs.fingerprint
    client.log_metric(run_id, "aux", 1.0, step=13)  # MLflow lets a finished run log more
    assert SOURCE.inputs(run_dir).fingerprint != inputs.fingerprint


def _timestamp(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


def test_each_mlflow_status_is_read(client: MlflowClient) -> None:
    experiment = client.create_experiment("statuses")
    expected = {
        None: ("running", "RUNNING"),
        "FINISHED": ("completed", "FINISHED"),
        "FAILED": ("failed", "FAILED"),
        "KILLED": ("failed", "KILLED"),
    }
    for terminal, (status, name) in expected.items():
        run_id = client.create_run(experiment).info.run_id
        client.log_metric(run_id, "loss", 1.0, step=0)
        if terminal:
            client.set_terminated(run_id, terminal)
        run_dir = _run_dir(client, run_id)
        inputs = SOURCE.inputs(run_dir)
        assert (inputs.status, inputs.status_rule) == (status, f"MLflow run status {name}")
        assert not inputs.silence_finishes  # MLflow records an end: silence means stalled
        record = SOURCE.read_record(run_dir)
        assert record.status == status
        assert record.run_id == client.get_run(run_id).info.run_name
        assert (record.model, record.hook) == ("statuses", "")  # the experiment's name
        assert (record.finished_at is None) == (terminal is None)
        assert record.error == ("killed (MLflow run status KILLED)" if name == "KILLED" else None)
        assert values_of(SOURCE.read_losses(run_dir)) == {"loss": {0: 1.0}}


def test_a_run_is_named_by_its_run_name_and_the_model_by_its_experiment(
    client: MlflowClient, tmp_path: Path
) -> None:
    experiment = client.create_experiment("gpt2-small SAE sweep ω")
    run_id = client.create_run(experiment, run_name="lr-3e-4").info.run_id
    client.log_param(run_id, "lr", 3e-4)
    client.log_metric(run_id, "loss", 1.0, step=0)
    client.set_terminated(run_id, "FINISHED")
    run_dir = _run_dir(client, run_id)
    record = SOURCE.read_record(run_dir)
    assert (record.run_id, record.model, record.hook) == ("lr-3e-4", "gpt2-small SAE sweep ω", "")
    # An experiment meta.yaml that is a link is not followed: the run is still read
    dummy = tmp_path / "dummy.yaml"
    dummy.write_text("name: not-this-one\n")
    (run_dir.parent / "meta.yaml").unlink()
    (run_dir.parent / "meta.yaml").symlink_to(dummy)
    record = SOURCE.read_record(run_dir)
    assert (record.run_id, record.model) == ("lr-3e-4", run_dir.name)


def test_a_status_written_by_name_and_old_or_dataset_lines_are_read(
    client: MlflowClient,
) -> None:
    experiment = client.create_experiment("formats")
    run_id = client.create_run(experiment).info.run_id
    client.log_metric(
        run_id, "loss", 3.0, timestamp=T0, step=7, dataset_name="d", dataset_digest="x"
    )
    run_dir = _run_dir(client, run_id)
    with (run_dir / "metrics" / "loss").open("a") as handle:
        handle.write(f"{T0 + 1} 4.0\n")  # MLflow before steps: step 0
    meta = run_dir / "meta.yaml"
    meta.write_text(meta.read_text().replace("status: 1", "status: FINISHED"))
    assert values_of(SOURCE.read_losses(run_dir)) == {"loss": {0: 4.0, 7: 3.0}}
    assert SOURCE.inputs(run_dir).status == "completed"


def test_a_logged_model_folder_is_not_a_run(tmp_path: Path) -> None:
    model = tmp_path / "mlruns" / "1" / "models" / "m-0123abcd"
    (model / "metrics").mkdir(parents=True)
    (model / "meta.yaml").write_text("model_id: m-0123abcd\n")
    assert not SOURCE.is_run(model)


def _finished(client: MlflowClient) -> Path:
    run_id, _ = _logged_run(client)
    return _run_dir(client, run_id)


def test_a_linked_metric_file_or_folder_is_named_and_not_followed(
    client: MlflowClient, tmp_path: Path
) -> None:
    run_dir = _finished(client)
    dummy = tmp_path / "dummy"
    dummy.mkdir()
    (dummy / "loss").write_text(f"{T0} 123.0 0\n")
    (run_dir / "metrics" / "stolen").symlink_to(dummy / "loss")
    (run_dir / "metrics" / "elsewhere").symlink_to(dummy, target_is_directory=True)
    data = SOURCE.read_losses(run_dir)
    assert "stolen" not in values_of(data) and "elsewhere/loss" not in values_of(data)
    assert sorted(values_of(data)) == ["aux", "eval/deep/loss", "train/mse"]
    assert data.skipped == [
        f"{run_dir / 'metrics' / 'elsewhere'}: is a symbolic link; not followed or read",
        f"{run_dir / 'metrics' / 'stolen'}: is a symbolic link; not followed or read",
    ]
    assert "stolen" not in SOURCE.inputs(run_dir).fingerprint


def test_a_linked_meta_yaml_or_metrics_folder_is_not_a_run(
    client: MlflowClient, tmp_path: Path
) -> None:
    run_dir = _finished(client)
    dummy = tmp_path / "dummy"
    dummy.mkdir()
    (dummy / "meta.yaml").write_text("status: 3\n")
    meta = run_dir / "meta.yaml"
    text = meta.read_text()
    meta.unlink()
    meta.symlink_to(dummy / "meta.yaml")
    assert not SOURCE.is_run(run_dir)
    assert SOURCE.inputs(run_dir).status is None
    with pytest.raises(MalformedRunFileError, match="symbolic link"):
        SOURCE.read_record(run_dir)
    meta.unlink()
    meta.write_text(text)
    assert SOURCE.is_run(run_dir)
    metrics = run_dir / "metrics"
    metrics.rename(tmp_path / "metrics-moved")
    metrics.symlink_to(tmp_path / "metrics-moved", target_is_directory=True)
    assert not SOURCE.is_run(run_dir)
    assert SOURCE.inputs(run_dir).fingerprint.startswith("meta.yaml:")
    assert "metrics/" not in SOURCE.inputs(run_dir).fingerprint
    data = SOURCE.read_losses(run_dir)
    assert data.table.num_rows == 0
    assert data.skipped == [f"{metrics}: is a symbolic link; not followed or read"]
    tags = run_dir / "tags"
    tags.rename(tmp_path / "tags-moved")
    tags.symlink_to(tmp_path / "tags-moved", target_is_directory=True)
    assert SOURCE.read_record(run_dir).run_id == "sweep-7"  # meta.yaml's run_name
    assert "mlflow.source.name" not in SOURCE.read_record(run_dir).config


def test_fifos_never_block(client: MlflowClient) -> None:
    run_dir = _finished(client)
    os.mkfifo(run_dir / "metrics" / "pipe")
    os.mkfifo(run_dir / "params" / "pipe")
    os.mkfifo(run_dir / "tags" / "mlflow.runName.fifo")
    with fails_if_blocked():
        data = SOURCE.read_losses(run_dir)
        record = SOURCE.read_record(run_dir)
        (run_dir / "tags" / "mlflow.runName").unlink()
        os.mkfifo(run_dir / "tags" / "mlflow.runName")
        assert SOURCE.read_record(run_dir).run_id == "sweep-7"  # meta.yaml's run_name
        meta = run_dir / "meta.yaml"
        meta.unlink()
        os.mkfifo(meta)
        assert not SOURCE.is_run(run_dir)
        assert SOURCE.inputs(run_dir).status is None
        with pytest.raises(MalformedRunFileError, match="FIFO"):
            SOURCE.read_record(run_dir)
    assert data.skipped == [f"{run_dir / 'metrics' / 'pipe'}: is a FIFO; not followed or read"]
    assert sorted(values_of(data)) == ["aux", "eval/deep/loss", "train/mse"]
    assert "pipe" not in record.config and record.config["model_name"] == "gelu-1l"


def test_damaged_lines_and_meta_yaml_are_named_and_the_rest_read(
    client: MlflowClient,
) -> None:
    run_dir = _finished(client)
    metric = run_dir / "metrics" / "aux"
    before = values_of(SOURCE.read_losses(run_dir))
    garbage_line = metric.read_bytes().count(b"\n") + 1
    with metric.open("a") as handle:
        handle.write("garbage\n")
        handle.write(f"{T0} not-a-number 20\n")
        handle.write(f"{T0} 1.0 2 3 4 5 6\n")
        handle.write(f"{T0 + 99_000} 7.5 21\n")
        handle.write(f"{T0 + 99_000} 8.5 2")  # unfinished: a writer at work
    data = SOURCE.read_losses(run_dir)
    assert data.skipped == [
        f"{metric}: 3 malformed lines skipped (first: line {garbage_line}: b'garbage'); "
        "MLflow writes `timestamp value step`, the step a 64-bit integer"
    ]
    assert_same(values_of(data), {**before, "aux": {**before["aux"], 21: 7.5}})

    meta = run_dir / "meta.yaml"
    meta.write_text("status: [3\n")
    assert SOURCE.inputs(run_dir).status is None
    with pytest.raises(MalformedRunFileError, match=r"meta\.yaml: not valid YAML"):
        SOURCE.read_record(run_dir)
    meta.write_text("status: 9\n")
    with pytest.raises(MalformedRunFileError, match="9 is not an MLflow run status"):
        SOURCE.read_record(run_dir)
    assert_same(values_of(SOURCE.read_losses(run_dir)), values_of(data))


def test_a_step_beyond_int64_skips_its_line_and_names_it(client: MlflowClient) -> None:
    run_dir = _finished(client)
    metric = run_dir / "metrics" / "aux"
    before = values_of(SOURCE.read_losses(run_dir))
    line = metric.read_bytes().count(b"\n") + 1
    with metric.open("a") as handle:
        handle.write(f"{T0 + 99_000} 7.5 {2**64}\n")
        handle.write(f"{T0 + 99_000} 8.5 21\n")
    data = SOURCE.read_losses(run_dir)
    assert data.skipped == [
        f"{metric}: 1 malformed lines skipped (first: line {line}: "
        f"b'{T0 + 99_000} 7.5 {2**64}'); MLflow writes `timestamp value step`, the step a "
        "64-bit integer"
    ]
    assert_same(values_of(data), {**before, "aux": {**before["aux"], 21: 8.5}})


def test_a_metric_file_past_the_read_budget_is_named_and_the_others_read(
    client: MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = _finished(client)
    before = values_of(SOURCE.read_losses(run_dir))
    noise = run_dir / "metrics" / "noise"  # 50,000 short lines: 1 MB, some 4 MB once parsed
    noise.write_text("".join(f"{T0 + step} 0.5 {step}\n" for step in range(50_000)))
    monkeypatch.setenv("LOSSREPORT_READ_BUDGET", "2M")
    data = SOURCE.read_losses(run_dir)
    assert_same(values_of(data), before)
    assert len(data.skipped) == 1 and data.over_budget == data.skipped
    assert data.skipped[0].startswith(f"{noise}: would take ")
    assert "over the run's read budget of 2,097,152 bytes" in data.skipped[0]
    assert data.skipped[0].endswith("(LOSSREPORT_READ_BUDGET sets it); not read")
