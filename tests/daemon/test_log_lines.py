"""The text log format prints one line per record, whatever the runs tree holds: a run folder
named with a newline and a terminal escape (anyone can make one in a shared tree) cannot forge
a log line or colour the operator's terminal. A real daemon over such a folder."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import lossreport
from lossreport.logformat import TextFormatter
from tests.support.daemon import ENV
from tests.support.procs import ROOT

FORGED = "2025-01-01 00:00:00,000 ERROR run=other failed"
EVIL = f"sweep\n{FORGED}\x1b[31m\u2028red"
RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def test_a_run_folder_named_with_a_newline_and_an_escape_forges_no_log_line(
    runs_dir: Path,
) -> None:
    with lossreport.start_run(runs_dir, model="gpt2", hook="blocks.8.hook_resid_pre",
                              run_id="sae_gpt2_20250601-120000_a1b2c3") as run:  # fmt: skip
        for step in range(50):
            run.log(step, mse_loss=1.0 / (step + 1))
    Path(run.path).rename(runs_dir / EVIL)  # as another writer named it
    done = subprocess.run(
        [sys.executable, "-m", "lossreport", "--log-format", "text", "watch", str(runs_dir),
         "--once", "--workers", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert any("sweep\\n" + FORGED + "\\x1b[31m\\u2028red" in line for line in lines), lines
    for line in lines:
        assert RECORD.match(line) or line.startswith("  "), line  # a record, or its traceback
        assert not line.startswith(FORGED), line
    assert "\x1b" not in done.stderr and "\u2028" not in done.stderr


def test_a_traceback_is_indented_so_its_message_forges_no_record() -> None:
    try:
        raise OSError(f"cannot read {EVIL}")
    except OSError:
        record = logging.LogRecord("x", logging.ERROR, "x", 1, "run=%s failed", (EVIL,), None)
        record.exc_info = sys.exc_info()
    first, *rest = TextFormatter().format(record).split("\n")
    assert RECORD.match(first) and "\\n" in first and "\x1b" not in first
    assert rest and all(line.startswith("  ") and "\x1b" not in line for line in rest)
