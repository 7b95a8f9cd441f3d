"""Every reader of a run works within its read budget (storage.budget): a shard of a few hundred
KB that decodes to 40 million rows, and a run of many shards that together exceed the budget,
are skipped and named by `render` in bounded memory, answered 507 with the reason by `serve`,
and passed over by the alert checker: never decoded."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pytest

from lossreport import runformat
from lossreport.alerts import NON_FINITE
from lossreport.storage import BUDGET_VARIABLE
from tests.support.bombs import DECODED_ROW_BYTES, bomb_run
from tests.support.long_run import write_long_run
from tests.support.procs import run_measured
from tests.support.server import request, serving

BOMB = "bomb-δ"
BOMB_ROWS = 40_000_000  # 975 MB decoded, 0.5 MB on disk
MANY, MANY_SHARDS, MANY_ROWS = "many", 12, 1_000_000  # 24 MB decoded each
BUDGET, BUDGET_BYTES = "64M", 64 * 2**20  # two of MANY's shards fit
# What a render or a check of a small run takes (about 170 MB); before the budget, rendering
# BOMB took 2.2 GB.
PEAK_MIB = 600


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs_dir = tmp_path_factory.mktemp("budget") / "runs"
    runs_dir.mkdir()
    bomb_run(runs_dir, BOMB, shards=1, rows=BOMB_ROWS)
    bomb_run(runs_dir, MANY, shards=MANY_SHARDS, rows=MANY_ROWS)
    return runs_dir


def _refusal(shard: Path, rows: int, spent: int = 0) -> str:
    before = f"; {spent:,} of them taken by what was read before" if spent else ""
    return (
        f"{shard}: would take {math.ceil(rows * DECODED_ROW_BYTES):,} bytes once decoded, over "
        f"the run's read budget of {BUDGET_BYTES:,} bytes{before} ({BUDGET_VARIABLE} sets "
        "it); not read"
    )


def _shard(runs: Path, run_id: str, seq: int) -> Path:
    return runs / run_id / runformat.LOSSES_DIR / runformat.shard_name(seq)


def _summary(run_dir: Path) -> dict[str, object]:
    found = list((run_dir / runformat.GRAPHS_DIR).glob("loss_summary_*.json"))
    assert len(found) == 1, found
    summary: dict[str, object] = json.loads(found[0].read_text())
    return summary


def test_render_names_what_is_past_the_budget_and_stays_small(runs: Path) -> None:
    done, peak = run_measured(
        "-m", "lossreport", "render", str(runs), env={BUDGET_VARIABLE: BUDGET}
    )
    assert done.returncode == 0, done.stderr
    bomb = _summary(runs / BOMB)
    assert bomb["skipped"] == [_refusal(_shard(runs, BOMB, 1), BOMB_ROWS)]
    assert bomb["total_steps"] == 0
    many = _summary(runs / MANY)
    spent = 2 * math.ceil(MANY_ROWS * DECODED_ROW_BYTES)
    assert many["skipped"] == [
        _refusal(_shard(runs, MANY, seq), MANY_ROWS, spent) for seq in range(3, MANY_SHARDS + 1)
    ]
    assert many["total_steps"] == 2  # shards 1 and 2, one step each
    assert peak < PEAK_MIB, f"render peaked at {peak:.0f} MiB"


def test_serve_answers_507_with_the_file_and_the_budget(runs: Path, tmp_path: Path) -> None:
    good = tmp_path / "good"
    write_long_run(good, "good", steps=1000)
    shutil.move(good / "good", runs / "good")
    try:
        with serving(runs, tmp_path / "serve.log", env={BUDGET_VARIABLE: BUDGET}) as (_, port):
            shard = _shard(runs, BOMB, 1).relative_to(runs)
            expected = f"{BOMB}: not shown: {_refusal(shard, BOMB_ROWS)}\n"
            for path in (f"/.api/series?run={quote(BOMB)}&loss=mse_loss", f"/.run/{quote(BOMB)}"):
                for _ in range(2):  # the refusal is kept: the same answer, nothing read again
                    status, headers, body = request(port, path)
                    assert (status, body.decode()) == (507, expected)
                    assert headers["Content-Type"] == "text/plain; charset=utf-8"
            status, _, body = request(port, f"/.api/series?run={MANY}&loss=mse_loss")
            assert status == 507
            assert body.decode().endswith(f" (and {MANY_SHARDS - 3} more files)\n")
            assert request(port, "/.api/series?run=good&loss=mse_loss")[0] == 200
        assert "Traceback" not in (tmp_path / "serve.log").read_text()
    finally:
        shutil.rmtree(runs / "good")


CHECK = """
import json, sys
from pathlib import Path
from lossreport.alerts import AlertRules, RunChecker
alerts = RunChecker(AlertRules(divergence=None)).check(Path(sys.argv[1]))
print(json.dumps([alert.to_json() for alert in alerts]))
"""


def test_the_alert_checker_passes_over_a_shard_past_the_budget(runs: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / runformat.LOSSES_DIR).mkdir(parents=True)
    shutil.copy(_shard(runs, BOMB, 1), run_dir / runformat.LOSSES_DIR / runformat.shard_name(1))
    after = {"step": [1, 2, 3], "wall_time": [1.7e9] * 3, "mse_loss": [0.5, math.nan, 0.5]}
    runformat.write_shard(run_dir, 2, pa.table(after))
    done, peak = run_measured("-c", CHECK, str(run_dir))  # the default budget
    assert done.returncode == 0, done.stderr
    assert [alert["rule"] for alert in json.loads(done.stdout)] == [NON_FINITE]
    assert peak < PEAK_MIB, f"the check peaked at {peak:.0f} MiB"
