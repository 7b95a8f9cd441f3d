"""The TensorBoard source: event files written by PyTorch's SummaryWriter, tensorboardX and
TensorFlow 2's format, read whole and from the cache, every logged value checked; damaged,
truncated, replaced and hostile files."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lossreport.sources import tfrecord
from lossreport.sources.longform import LONG_SCHEMA
from lossreport.sources.tensorboard import TensorBoardSource
from tests.support.deadline import fails_if_blocked
from tests.support.foreign import tensorboard_run
from tests.support.optional import missing

try:
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter
    from tensorboard.util import tensor_util
except ImportError:
    missing("tensorboard", "pip install -e '.[tensorboard,dev]'")

SOURCE = TensorBoardSource()
Logged = dict[str, dict[int, float]]
EVENTS = "events.out.tfevents."


# Writing event files with TensorBoard's own record writer and protos


def scalar_event(tag: str, step: int, value: float, wall: float) -> Any:
    event = event_pb2.Event(wall_time=wall, step=step)
    event.summary.value.add(tag=tag, simple_value=value)
    return event


def tf2_event(
    tag: str, step: int, value: float, wall: float, *, plugin: str | None, how: str = "float_val"
) -> Any:
    """What TensorFlow 2's tf.summary.scalar writes: a scalar tensor, the plugin metadata on
    the first value of a tag only (`plugin`)."""
    if how == "float_val":
        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[value])
    elif how == "double_val":
        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_DOUBLE, double_val=[value])
    else:  # tensor_content, as TensorFlow's C++ writer stores it
        content = np.array([value], "<f4").tobytes()
        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=content)
    tensor.tensor_shape.SetInParent()  # a scalar: a shape with no dimensions
    event = event_pb2.Event(wall_time=wall, step=step)
    summary_value = event.summary.value.add(tag=tag, tensor=tensor)
    if plugin is not None:
        summary_value.metadata.plugin_data.plugin_name = plugin
    return event


def version_event(wall: float) -> Any:
    return event_pb2.Event(wall_time=wall, file_version="brain.Event:2")


def record_bytes(events: Iterable[Any]) -> bytes:
    """Events framed as TFRecords by TensorBoard's RecordWriter."""
    out = io.BytesIO()
    writer = RecordWriter(out)
    for event in events:
        writer.write(event.SerializeToString())
    return out.getvalue()


def write_events(path: Path, events: Iterable[Any], mode: str = "wb") -> None:
    with open(path, mode) as handle:
        handle.write(record_bytes(events))


def record_offsets(path: Path) -> list[int]:
    return record_offsets_of(path.read_bytes())


def record_offsets_of(data: bytes) -> list[int]:
    """Where each record of event file data starts (a plain walk of the framing)."""
    offsets, pos = [], 0
    while pos + 12 <= len(data):
        offsets.append(pos)
        pos += 16 + struct.unpack_from("<Q", data, pos)[0]
    return offsets


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x5A]))


def logged_values(table: pa.Table) -> Logged:
    """{series: {step: value}} of a wide table, nulls left out."""
    steps = table.column("step").to_pylist()
    found: Logged = {}
    for name in table.column_names:
        if name in ("step", "wall_time"):
            continue
        found[name] = {
            step: value
            for step, value in zip(steps, table.column(name).to_pylist(), strict=True)
            if value is not None
        }
    return found


def as_float32(logged: Logged) -> Logged:
    return {
        tag: {step: float(np.float32(value)) for step, value in values.items()}
        for tag, values in logged.items()
    }


def simple_run(
    folder: Path, steps: range, name: str = "1.host", wall0: float = 1.7e9, scale: float = 1.0
) -> Logged:
    """Two tags of simple_value scalars (times `scale`), one file."""
    folder.mkdir(parents=True, exist_ok=True)
    logged: Logged = {"train/mse_loss": {}, "train/l1_loss": {}}
    events = [version_event(wall0)]
    for step in steps:
        for tag, value in (
            ("train/mse_loss", scale / (step + 1)),
            ("train/l1_loss", scale * (0.5 + step)),
        ):
            events.append(scalar_event(tag, step, value, wall0 + step))
            logged[tag][step] = value
    write_events(folder / f"{EVENTS}{name}", events)
    return as_float32(logged)


def state_of(cache: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((cache / "tensorboard" / "state.json").read_bytes())
    return document


# The writers


def test_pytorch_summary_writer_scalars_are_read_and_the_rest_ignored(tmp_path: Path) -> None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        missing("torch's SummaryWriter (torch and tensorboard)", "pip install -e '.[dev]'")
    run = tmp_path / "run"
    writer = SummaryWriter(str(run), flush_secs=3600)
    logged: Logged = {"train/mse_loss": {}, "train/l1_loss": {}, "lr": {}}
    for step in range(50):
        values = {"train/mse_loss": 1.0 / (step + 1), "train/l1_loss": 0.5 + step * 0.1}
        for tag, value in values.items():
            writer.add_scalar(tag, value, step)
            logged[tag][step] = value
        # new_style: a tensor with the scalars plugin's metadata on every value
        writer.add_scalar("lr", 1e-3 * 0.9**step, step, new_style=True)
        logged["lr"][step] = 1e-3 * 0.9**step
        if step % 10 == 0:
            writer.add_image("sample", np.zeros((3, 4, 4)), step)
            writer.add_histogram("weights", np.arange(10.0) * step, step)
            writer.add_text("note", f"step {step}", step)
    writer.close()
    assert SOURCE.is_run(run)
    data = SOURCE.read_losses(run)
    assert data.skipped == []
    assert data.table.column_names == ["step", "wall_time", "train/mse_loss", "train/l1_loss", "lr"]
    assert logged_values(data.table) == as_float32(logged)
    assert data.table.column("wall_time").null_count == 0


def test_tensorboardx_scalars_are_read_and_the_rest_ignored(tmp_path: Path) -> None:
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        missing("tensorboardX", "pip install tensorboardX")
    run = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tensorboardX warns about its optional crc32c
        writer = SummaryWriter(str(run), flush_secs=3600)
        logged: Logged = {"loss/train": {}, "loss/val": {}, "aux": {}}
        for step in range(0, 150, 3):  # steps past 127: a two-byte varint
            values = {"loss/train": 2.0 / (step + 1), "loss/val": -1.5 * step, "aux": step**0.5}
            for tag, value in values.items():
                writer.add_scalar(tag, value, step)
                logged[tag][step] = value
            if step % 30 == 0:
                writer.add_histogram("hist", np.arange(5.0), step)
                writer.add_text("text", "hello", step)
                writer.add_image("image", np.ones((3, 2, 2)), step)
        writer.close()
    data = SOURCE.read_losses(run)
    assert data.skipped == []
    assert logged_values(data.table) == as_float32(logged)


def tf2_steps(steps: range, logged: Logged) -> list[Any]:
    """What TensorFlow 2 writes for a few steps: scalars plugin metadata on each tag's first
    value only; also a histogram tag's tensors, a text tag and a tensor of a tag with no
    metadata, which are not scalars."""
    events = [version_event(1.7e9)] if steps.start == 0 else []
    for step in steps:
        wall = 1.7e9 + step
        plugin = "scalars" if step == 0 else None
        scalars = {"epoch_loss": 1.0 / (step + 1), "epoch_accuracy": 0.01 * step}
        for (tag, value), how in zip(scalars.items(), ("float_val", "tensor_content"), strict=True):
            events.append(tf2_event(tag, step, value, wall, plugin=plugin, how=how))
            logged.setdefault(tag, {})[step] = float(np.float32(value))
        events.append(
            tf2_event("precise", step, 1 / 3 + step, wall, plugin=plugin, how="double_val")
        )
        logged.setdefault("precise", {})[step] = 1 / 3 + step  # a double stays a double
        histograms = "histograms" if step == 0 else None
        events.append(tf2_event("weights", step, 2.0, wall, plugin=histograms))
        events.append(tf2_event("unknown", step, 3.0, wall, plugin=None))
        text = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"hi"])
        event = event_pb2.Event(wall_time=wall, step=step)
        value = event.summary.value.add(tag="notes", tensor=text)
        value.metadata.plugin_data.plugin_name = "text"
        events.append(event)
    return events


def test_tensorflow2_scalar_tensors_are_read_by_their_plugin(tmp_path: Path) -> None:
    run, cache = tmp_path / "run", tmp_path / "cache"
    run.mkdir()
    logged: Logged = {}
    path = run / f"{EVENTS}1.host.v2"
    write_events(path, tf2_steps(range(40), logged))
    data = SOURCE.read_losses(run)
    assert data.skipped == []
    assert logged_values(data.table) == logged
    assert logged_values(SOURCE.read_losses(run, cache).table) == logged
    # More steps, without metadata: the cache remembers which tags are scalars.
    write_events(path, tf2_steps(range(40, 60), logged), mode="ab")
    data = SOURCE.read_losses(run, cache)
    assert logged_values(data.table) == logged
    assert len(logged["epoch_loss"]) == 60


def test_two_files_merge_and_a_repeated_step_takes_the_later_wall_time(tmp_path: Path) -> None:
    """A restart: the second file repeats steps 20-29 with other values, written later. The
    file whose name sorts first holds the later writes, so the order read does not decide."""
    run = tmp_path / "run"
    run.mkdir()
    later = [scalar_event("loss", step, 100.0 + step, 2e9 + step) for step in range(20, 50)]
    earlier = [scalar_event("loss", step, float(step), 1e9 + step) for step in range(30)]
    write_events(run / f"{EVENTS}1.host", later)
    write_events(run / f"{EVENTS}2.host", earlier)
    expected = {step: float(step) for step in range(20)}
    expected |= {step: 100.0 + step for step in range(20, 50)}
    data = SOURCE.read_losses(run)
    assert logged_values(data.table) == {"loss": expected}
    walls = dict(
        zip(data.table["step"].to_pylist(), data.table["wall_time"].to_pylist(), strict=True)
    )
    assert walls[25] == 2e9 + 25 and walls[5] == 1e9 + 5
    cached = SOURCE.read_losses(run, tmp_path / "cache")
    assert cached.table.equals(data.table)


# Reading again: the cache


def test_an_appended_file_is_read_from_where_the_last_read_ended(tmp_path: Path) -> None:
    run, cache = tmp_path / "run", tmp_path / "cache"
    logged = simple_run(run, range(30))
    path = run / f"{EVENTS}1.host"
    first = SOURCE.read_losses(run, cache)
    assert logged_values(first.table) == logged
    entry = state_of(cache)["files"][path.name]
    assert entry["offset"] == path.stat().st_size
    # Damage a record that was read already (past the hashed head): a second read that parsed
    # the file again would report it and lose the value.
    flip_byte(path, record_offsets(path)[10] + 14)
    more = [
        scalar_event("train/mse_loss", step, 1.0 / (step + 1), 1.7e9 + step)
        for step in range(30, 50)
    ]
    write_events(path, more, mode="ab")
    second = SOURCE.read_losses(run, cache)
    assert second.skipped == []
    expected = logged | {
        "train/mse_loss": logged["train/mse_loss"]
        | {step: float(np.float32(1.0 / (step + 1))) for step in range(30, 50)}
    }
    assert logged_values(second.table) == expected
    state = state_of(cache)["files"][path.name]
    assert state["offset"] == path.stat().st_size
    assert len(state["parts"]) == 2
    new_part = pq.read_table(cache / "tensorboard" / state["parts"][1])
    assert new_part.schema.equals(LONG_SCHEMA)
    assert new_part["step"].to_pylist() == list(range(30, 50))  # only the new records
    # Nothing new: nothing parsed, nothing written.
    state_before = (cache / "tensorboard" / "state.json").stat().st_mtime_ns
    third = SOURCE.read_losses(run, cache)
    assert third.table.equals(second.table)
    assert (cache / "tensorboard" / "state.json").stat().st_mtime_ns == state_before


def test_a_read_with_nothing_new_maps_the_last_table_and_reads_no_part(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing new: the last read's table, kept whole, is returned without a part being read
    (each is garbage now: read, it would be named and its file converted again). Anything new
    (a file grown, a file added) is read, and the kept table never stands in for it."""
    run, cache = tmp_path / "run", tmp_path / "cache"
    logged = simple_run(run, range(40))
    first = SOURCE.read_losses(run, cache)
    folder = cache / "tensorboard"
    for part in folder.glob("*.parquet"):
        part.write_bytes(b"not parquet")
    with caplog.at_level("WARNING"):
        again = SOURCE.read_losses(run, cache)
    assert again.table.equals(first.table) and again.skipped == []
    assert caplog.records == []
    assert logged_values(again.table) == logged
    shutil.rmtree(folder)  # parts that cannot be read: a fresh cache for the rest
    SOURCE.read_losses(run, cache)
    path = run / f"{EVENTS}1.host"
    more = [
        scalar_event("train/mse_loss", step, 1.0 / (step + 1), 1.7e9 + step)
        for step in range(40, 45)
    ]
    write_events(path, more, mode="ab")
    grown = SOURCE.read_losses(run, cache)
    assert grown.table.num_rows == 45
    other = simple_run(run, range(100, 103), name="2.host", scale=2.0)
    added = SOURCE.read_losses(run, cache)
    assert added.table.num_rows == 48
    assert SOURCE.read_losses(run, cache).table.equals(added.table)
    assert logged_values(added.table)["train/l1_loss"][101] == other["train/l1_loss"][101]
    # One that others could cut short while it is mapped (SIGBUS) is not mapped.
    (wide,) = folder.glob("wide-*")
    wide.chmod(0o664)
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert SOURCE.read_losses(run, cache).table.equals(added.table)
    assert "read-only" in caplog.text
    # A kept table that is no table is passed over: the parts are read.
    (wide,) = folder.glob("wide-*")
    wide.write_bytes(b"garbage" * 100)
    assert SOURCE.read_losses(run, cache).table.equals(added.table)


def test_a_truncated_last_record_is_read_once_the_writer_completes_it(tmp_path: Path) -> None:
    run, cache = tmp_path / "run", tmp_path / "cache"
    run.mkdir()
    path = run / f"{EVENTS}1.host"
    whole = record_bytes(
        [scalar_event("loss", step, step * 0.5, 1.7e9 + step) for step in range(10)]
    )
    last = record_offsets_of(whole)[-1]
    for cut in (last + 5, last + 20):  # in the header, then in the data
        path.write_bytes(whole[:cut])
        shutil.rmtree(cache, ignore_errors=True)
        assert logged_values(SOURCE.read_losses(run).table) == {
            "loss": {s: s * 0.5 for s in range(9)}
        }
        data = SOURCE.read_losses(run, cache)
        assert data.skipped == []
        assert logged_values(data.table) == {"loss": {s: s * 0.5 for s in range(9)}}
        assert state_of(cache)["files"][path.name]["offset"] == last
        with open(path, "ab") as handle:
            handle.write(whole[cut:])
        data = SOURCE.read_losses(run, cache)
        assert logged_values(data.table) == {"loss": {s: s * 0.5 for s in range(10)}}
        assert data.skipped == []


def test_a_record_whose_data_fail_their_checksum_is_skipped_and_named(tmp_path: Path) -> None:
    run = tmp_path / "run"
    logged = simple_run(run, range(300))
    path = run / f"{EVENTS}1.host"
    offsets = record_offsets(path)
    value_record, tag_record = offsets[101], offsets[250]  # step 50's mse, step 124's l1
    length = struct.unpack_from("<Q", path.read_bytes(), value_record)[0]
    flip_byte(path, value_record + 12 + length - 1)  # in the value: the record keeps its shape
    flip_byte(path, tag_record + 12 + 20)  # in the tag: another shape
    flip_byte(path, offsets[0] + 12 + 12)  # in the file version: read one by one
    del logged["train/mse_loss"][50]
    del logged["train/l1_loss"][124]
    for cache in (None, tmp_path / "cache", tmp_path / "cache"):  # afresh, cached, from cache
        data = SOURCE.read_losses(run, cache)
        assert logged_values(data.table) == logged
        assert data.skipped == [
            f"{path}: the record at byte 0 fails its checksum; skipped",
            f"{path}: the record at byte {value_record} fails its checksum; skipped",
            f"{path}: the record at byte {tag_record} fails its checksum; skipped",
        ]


def test_a_length_that_fails_its_checksum_ends_the_file_for_good(tmp_path: Path) -> None:
    run, cache = tmp_path / "run", tmp_path / "cache"
    logged = simple_run(run, range(20))
    path = run / f"{EVENTS}1.host"
    broken = record_offsets(path)[21]  # step 10's first record
    flip_byte(path, broken + 1)
    expected = {tag: {s: v for s, v in values.items() if s < 10} for tag, values in logged.items()}
    problem = (
        f"{path}: the length of the record at byte {broken} fails its checksum; "
        "the rest of the file cannot be read"
    )
    assert SOURCE.read_losses(run).skipped == [problem]
    data = SOURCE.read_losses(run, cache)
    assert logged_values(data.table) == expected and data.skipped == [problem]
    write_events(path, [scalar_event("train/mse_loss", 99, 1.0, 1.8e9)], mode="ab")
    again = SOURCE.read_losses(run, cache)  # still named, and nothing read past it
    assert logged_values(again.table) == expected and again.skipped == [problem]
    assert state_of(cache)["files"][path.name]["offset"] == broken


def test_a_replaced_file_is_read_again(tmp_path: Path) -> None:
    run, cache = tmp_path / "run", tmp_path / "cache"
    simple_run(run, range(20))
    path = run / f"{EVENTS}1.host"
    SOURCE.read_losses(run, cache)
    # Rewritten in place (same inode), longer: only its first bytes tell.
    replaced = simple_run(run, range(30), wall0=1.8e9, scale=3.0)
    data = SOURCE.read_losses(run, cache)
    assert logged_values(data.table) == replaced
    # Replaced by another file (another inode), shorter.
    new = run / "new"
    shorter = simple_run(new, range(5), wall0=1.9e9, scale=5.0)
    os.replace(new / path.name, path)
    data = SOURCE.read_losses(run, cache)
    assert logged_values(data.table) == shorter
    # Gone: its rows go with it, and its parts from the cache.
    path.unlink()
    assert SOURCE.read_losses(run, cache).table.num_rows == 0
    assert [p.name for p in (cache / "tensorboard").iterdir()] == ["state.json"]


def test_a_broken_cache_is_discarded_and_rebuilt(tmp_path: Path) -> None:
    run, cache = tmp_path / "run", tmp_path / "cache"
    logged = simple_run(run, range(25))
    SOURCE.read_losses(run, cache)
    state = cache / "tensorboard" / "state.json"
    for garbage in (b"{not json", b'{"format": 3}', b"[]", json.dumps({"format": "x"}).encode()):
        state.write_bytes(garbage)
        data = SOURCE.read_losses(run, cache)
        assert logged_values(data.table) == logged and data.skipped == []
        assert state_of(cache)["files"]  # written anew
    # A part that is gone or not Parquet: that file is read again.
    (part,) = state_of(cache)["files"][f"{EVENTS}1.host"]["parts"]
    (cache / "tensorboard" / part).write_bytes(b"PAR1 not really")
    assert logged_values(SOURCE.read_losses(run, cache).table) == logged
    (part,) = state_of(cache)["files"][f"{EVENTS}1.host"]["parts"]
    (cache / "tensorboard" / part).unlink()
    assert logged_values(SOURCE.read_losses(run, cache).table) == logged
    # A part not named as ours is refused, not read: the file is read again.
    decoy = pa.table(
        [pa.array(["train/mse_loss"]), pa.array([0]), pa.array([0.0]), pa.array([-1.0])],
        schema=LONG_SCHEMA,
    )
    pq.write_table(decoy, cache / "tensorboard" / "x.parquet")
    for name in ("x.parquet", "../../cache/tensorboard/x.parquet"):
        document = state_of(cache)
        document["files"][f"{EVENTS}1.host"]["parts"] = [name]
        state.write_text(json.dumps(document))
        assert logged_values(SOURCE.read_losses(run, cache).table) == logged
    # A cache folder that is a link is not used, and the run is still read.
    shutil.rmtree(cache)
    cache.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (cache / "tensorboard").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert logged_values(SOURCE.read_losses(run, cache).table) == logged
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_a_record_over_the_size_limit_is_passed_over_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    path = run / f"{EVENTS}1.host"
    image = summary_pb2.Summary.Image(height=1, width=1, encoded_image_string=b"x" * 5000)
    big = event_pb2.Event(wall_time=1.7e9, step=1)
    big.summary.value.add(tag="image", image=image)
    events = [scalar_event("loss", 0, 1.0, 1.7e9), big, scalar_event("loss", 2, 3.0, 1.7e9)]
    write_events(path, events)
    monkeypatch.setattr(tfrecord, "MAX_RECORD_BYTES", 4096)
    monkeypatch.setattr(tfrecord, "CHUNK_BYTES", 1024)
    data = SOURCE.read_losses(run)
    assert logged_values(data.table) == {"loss": {0: 1.0, 2: 3.0}}
    at = record_offsets(path)[1]
    assert data.skipped == [
        f"{path}: the record at byte {at} is {len(big.SerializeToString()):,} bytes, over the "
        "4,096 byte limit; skipped unread"
    ]


# Hostile folders


def test_links_fifos_and_folders_named_like_event_files_are_never_followed(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    logged = simple_run(run, range(5))
    dummy = tmp_path / "dummy"
    simple_run(dummy, range(5), name="secret")
    (run / f"{EVENTS}link").symlink_to(dummy / f"{EVENTS}secret")
    os.mkfifo(run / f"{EVENTS}fifo")
    (run / f"{EVENTS}folder").mkdir()
    with fails_if_blocked(10):
        data = SOURCE.read_losses(run, tmp_path / "cache")
        inputs = SOURCE.inputs(run)
    assert logged_values(data.table) == logged
    assert sorted(data.skipped) == [
        f"{run / EVENTS}fifo: is a FIFO; not read",
        f"{run / EVENTS}folder: is a directory; not read",
        f"{run / EVENTS}link: is a symbolic link; not read",
    ]
    assert inputs.fingerprint.count(EVENTS) == 1
    # Only links and FIFOs: not a run. A run reached through a link: not a run either.
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / f"{EVENTS}link").symlink_to(dummy / f"{EVENTS}secret")
    os.mkfifo(lonely / f"{EVENTS}fifo")
    linked = tmp_path / "linked"
    linked.symlink_to(run, target_is_directory=True)
    assert SOURCE.is_run(run)
    assert not SOURCE.is_run(lonely) and not SOURCE.is_run(linked)
    assert not SOURCE.is_run(run / f"{EVENTS}1.host")
    assert SOURCE.read_losses(linked).skipped[0].startswith(f"{linked}: cannot be read")


def test_a_summary_writers_run_is_named_by_its_folders(tmp_path: Path) -> None:
    """SummaryWriter(logs/EXPERIMENT/RUN): the run is its folder, the model the experiment's;
    event files record no hook."""
    run = tmp_path / "logs" / "gpt2-small sae sweep ω" / "lr-3e-4_l1-5"
    tensorboard_run(run, range(3))
    record = SOURCE.read_record(run)
    assert (record.run_id, record.model, record.hook) == (
        "lr-3e-4_l1-5",
        "gpt2-small sae sweep ω",
        "",
    )


def test_inputs_change_when_a_file_grows_and_say_running_until_silence(tmp_path: Path) -> None:
    run = tmp_path / "run"
    simple_run(run, range(5))
    (run / "notes.txt").write_text("not an input")
    before = SOURCE.inputs(run)
    assert before.status == "running" and before.silence_finishes
    assert before.status_rule and "TensorBoard" in before.status_rule
    assert before.heartbeat is not None
    (run / "notes.txt").write_text("still not an input")
    assert SOURCE.inputs(run).fingerprint == before.fingerprint
    write_events(run / f"{EVENTS}1.host", [scalar_event("loss", 9, 1.0, 1.8e9)], mode="ab")
    assert SOURCE.inputs(run).fingerprint != before.fingerprint
    record = SOURCE.read_record(run)
    assert record.status == "running" and record.run_id == "run"
    assert record.model == tmp_path.name and record.hook == ""  # the folders name it


def test_without_the_extra_a_run_is_listed_and_reported_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    simple_run(run, range(3))
    for module in ("google_crc32c", "tensorboard.compat.proto.event_pb2"):
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, module, None)  # import fails
            data = SOURCE.read_losses(run, tmp_path / "cache")
            assert data.table.num_rows == 0
            assert data.skipped == [
                f"{run}: reading TensorBoard logs needs the tensorboard extra: "
                "pip install 'lossreport[tensorboard]'"
            ]
            assert SOURCE.is_run(run) and SOURCE.inputs(run).fingerprint
    assert SOURCE.read_losses(run).table.num_rows == 3


# The fast path against TensorBoard's own parser


def mixed_events(rng: np.random.Generator, count: int) -> list[Any]:
    """Every kind of record, in random order, with steps of every varint width."""
    tags = ["a/loss", "b/loss", "c/loss", "lr", "x"]  # a/ and b/: same length, other shape
    events = [version_event(1.7e9)]
    for i in range(count):
        step = int(rng.choice([i, i * 131, i * 40_000, -i, 0]))
        wall = 0.0 if i % 97 == 5 else 1.7e9 + i * 0.25
        value = float(rng.normal() * 10.0 ** int(rng.integers(-3, 4)))
        kind = int(rng.integers(0, 10))
        tag = tags[int(rng.integers(0, len(tags)))]
        if kind <= 3:
            events.append(scalar_event(tag, step, value, wall))
        elif kind == 4:
            how = ("float_val", "double_val", "tensor_content")[int(rng.integers(0, 3))]
            plugin = "scalars" if rng.random() < 0.05 else None
            events.append(tf2_event("tf/" + tag, step, value, wall, plugin=plugin, how=how))
        elif kind == 5:  # new style: metadata on every value
            events.append(tf2_event("new/" + tag, step, value, wall, plugin="scalars"))
        elif kind == 6:
            event = event_pb2.Event(wall_time=wall, step=step)
            event.summary.value.add(tag="h", histo=summary_pb2.HistogramProto(min=1, max=2))
            event.summary.value.add(tag="two/" + tag, simple_value=value)  # two values
            events.append(event)
        elif kind == 7:
            image = summary_pb2.Summary.Image(height=1, width=1, encoded_image_string=b"x" * 30)
            event = event_pb2.Event(wall_time=wall, step=step)
            event.summary.value.add(tag="img", image=image)
            events.append(event)
        elif kind == 8 and i % 2:
            content = np.array([step % 2**31], "<i4").tobytes()  # an int32 that is no float32
            tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT32, tensor_content=content)
            tensor.tensor_shape.SetInParent()
            event = event_pb2.Event(wall_time=wall, step=step)
            value_proto = event.summary.value.add(tag="int32/" + tag, tensor=tensor)
            value_proto.metadata.plugin_data.plugin_name = "scalars"
            events.append(event)
        elif kind == 8:
            tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64, int64_val=[step])
            event = event_pb2.Event(wall_time=wall, step=step)
            value_proto = event.summary.value.add(tag="int/" + tag, tensor=tensor)
            value_proto.metadata.data_class = summary_pb2.DATA_CLASS_SCALAR
            events.append(event)
        else:
            events.append(event_pb2.Event(wall_time=wall, step=step))  # no summary
    return events


def reference_rows(data: bytes) -> list[tuple[str, int, float, float]]:
    """Long rows as a plain loop over TensorBoard's parser finds them."""
    plugins: dict[str, str] = {}
    rows: list[tuple[str, int, float, float, bool]] = []
    for offset in record_offsets_of(data):
        length = struct.unpack_from("<Q", data, offset)[0]
        event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
        for value in event.summary.value:
            if value.HasField("metadata") and value.tag not in plugins:
                scalar = value.metadata.data_class == summary_pb2.DATA_CLASS_SCALAR
                plugins[value.tag] = "scalars" if scalar else value.metadata.plugin_data.plugin_name
            if value.WhichOneof("value") == "simple_value":
                rows.append((value.tag, event.step, event.wall_time, value.simple_value, False))
            elif value.WhichOneof("value") == "tensor":
                array = tensor_util.make_ndarray(value.tensor)
                if array.size == 1 and array.dtype.kind in "fiub":
                    number = float(array.reshape(-1)[0])
                    rows.append((value.tag, event.step, event.wall_time, number, True))
    return [row[:4] for row in rows if not row[4] or plugins.get(row[0]) == "scalars"]


@pytest.mark.parametrize("chunk_bytes", [50, 997, 64 * 1024, tfrecord.CHUNK_BYTES])
def test_every_kind_of_record_reads_as_tensorboard_parses_it(
    tmp_path: Path, chunk_bytes: int
) -> None:
    rng = np.random.default_rng(7)
    data = record_bytes(mixed_events(rng, 3000))
    # and long regular stretches, where framing predicts records from the cycle of lengths
    steady = [
        scalar_event(tag, step, step * 0.5, 1.8e9 + step)
        for step in range(3000)
        for tag in ("p", "q/r", "s")
    ]
    data += record_bytes(steady) + record_bytes(mixed_events(rng, 300))
    path = tmp_path / f"{EVENTS}mixed"
    path.write_bytes(data)
    codec = tfrecord.load_codec()
    assert codec is not None
    plugins: dict[str, str] = {}
    fd = os.open(path, os.O_RDONLY)
    try:
        scan = tfrecord.scan_file(fd, path, 0, len(data), codec, plugins, chunk_bytes=chunk_bytes)
    finally:
        os.close(fd)
    assert scan.problems == [] and scan.end == len(data) and not scan.stopped
    table = scan.scalars.table(plugins)
    found = list(zip(*(table[name].to_pylist() for name in LONG_SCHEMA.names), strict=True))
    assert found == reference_rows(data)


# The read budget


def test_an_event_file_past_the_read_budget_is_named_and_kept_for_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, cache = tmp_path / "run", tmp_path / "cache"
    small = simple_run(run, range(10), name="1.host")
    simple_run(run, range(10_000), name="2.host")  # 20,000 scalars: some 900 KB
    big = run / f"{EVENTS}2.host"
    monkeypatch.setenv("LOSSREPORT_READ_BUDGET", "1M")
    data = SOURCE.read_losses(run, cache)
    assert logged_values(data.table) == small
    assert data.over_budget == data.skipped and len(data.skipped) == 1
    assert data.skipped[0].startswith(f"{big}: would take ")
    assert data.skipped[0].endswith(
        " bytes once scanned from byte 0, over the run's read budget of 1,048,576 bytes; "
        f"{(run / f'{EVENTS}1.host').stat().st_size * 2:,} of them taken by what was read "
        "before (LOSSREPORT_READ_BUDGET sets it); not read"
    )
    assert state_of(cache)["files"][big.name]["offset"] == 0  # read once the budget allows
    monkeypatch.delenv("LOSSREPORT_READ_BUDGET")
    again = SOURCE.read_losses(run, cache)
    assert again.skipped == [] and len(logged_values(again.table)["train/mse_loss"]) == 10_000


def test_a_cached_part_that_decodes_past_the_budget_is_never_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part of the cache replaced by one of two million rows of one tag: a few KB of zstd."""
    run, cache = tmp_path / "run", tmp_path / "cache"
    simple_run(run, range(10))
    SOURCE.read_losses(run, cache)
    (name,) = state_of(cache)["files"][f"{EVENTS}1.host"]["parts"]
    rows = 2_000_000
    planted = pa.table(
        [
            pa.repeat(pa.scalar("train/mse_loss"), rows),
            pa.array(np.zeros(rows, np.int64)),
            pa.array(np.zeros(rows)),
            pa.array(np.zeros(rows)),
        ],
        schema=LONG_SCHEMA,
    )
    part = cache / "tensorboard" / name
    pq.write_table(planted, part, compression="zstd")
    for wide in (cache / "tensorboard").glob("wide-*"):  # else the part is not read at all
        wide.unlink()
    monkeypatch.setenv("LOSSREPORT_READ_BUDGET", "16M")
    data = SOURCE.read_losses(run, cache)
    assert data.table.num_rows == 0
    assert (
        data.skipped
        == data.over_budget
        == [
            f"{part}: would take {rows * 28:,} bytes once decoded, over the run's read budget of "
            "16,777,216 bytes (LOSSREPORT_READ_BUDGET sets it); not read"
        ]
    )
