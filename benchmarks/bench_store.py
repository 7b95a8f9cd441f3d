"""What polling an object store costs a daemon, against moto's S3 server on loopback.

    python benchmarks/bench_store.py                 # 10,000 runs
    python benchmarks/bench_store.py --runs 1000     # quicker

Fills a bucket with RUNS rendered runs (run.json, two shards, a render marker and a report of
five files each), then measures, medians over --repeats:

- the daemon's first sync (an empty mirror: every input fetched);
- a restart: a new mirror on the same folder (its state file read, each kept entry checked
  against its local copy) and its first sync of the unchanged bucket; the peer is what a
  restart cost before the state was kept on disk, a first sync (target: under 30 s at 10,000
  runs);
- the listing alone, with nothing compared or fetched: what any restart that checks every
  object against the store pays this server, whoever the client;
- one poll of an unchanged bucket, as the daemon does every --poll-interval: one paged
  listing, every object's size and time compared with what was fetched, nothing else;
- one poll after one run wrote a new shard and run.json;
- the peer: finding the same changes by asking each run (a listing of its folder, which
  returns its objects' sizes and times), the way a poller that walks the runs tree works.

Runs are named as `start_run` names them (its own id function), after long and non-ASCII
model names: about 65 characters.

Loopback has no network latency: a real store answers each request in 10 to 100 ms, so the
request counts printed beside the times are what scales.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support's S3 server
from lossreport import runformat
from lossreport.storage import s3
from lossreport.storage.mirror import Mirror
from lossreport.trainer.tracker import _agreed_run_id, directory_name
from tests.support.s3 import CREDENTIALS, MotoServer, boto

BUCKET = "bench"
REPORT = ["loss_report.html", "loss_history.csv", "loss_summary.json", "mse.png", "l1.png"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peer-runs", type=int, default=None, help="default: --runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lossreport-bench-store-") as tmp:
        workdir = Path(tmp)
        server = MotoServer(workdir / "moto.log")
        try:
            return bench(server, workdir, args)
        finally:
            server.stop()


def bench(server: MotoServer, workdir: Path, args: argparse.Namespace) -> int:
    os.environ.update({**CREDENTIALS, "AWS_ENDPOINT_URL": server.url})
    client = boto(server.url)
    client.create_bucket(Bucket=BUCKET)
    started = time.monotonic()
    objects = fill(client, args.runs)
    print(f"filled {args.runs:,} runs, {objects:,} objects in {time.monotonic() - started:.0f} s")
    url = s3.StoreUrl(BUCKET, "runs")
    mirror = Mirror(url, workdir / "mirror", runformat.MIRROR_RULES)
    first = timed(lambda: mirror.sync(), 1)
    listed = mirror.sync()
    restarts: list[int] = []

    def restart() -> None:
        restarts.append(Mirror(url, workdir / "mirror", runformat.MIRROR_RULES).sync().fetched)

    restarted = timed(restart, max(1, args.repeats // 2))
    if any(restarts):
        raise AssertionError(f"a restart over an unchanged bucket fetched {restarts} objects")
    pages = -(-listed.listed // 1000)
    # Any restart that checks every object against the store lists it all: the server's floor.
    floor = timed(lambda: s3.listing(url, recursive=True), args.repeats)
    unchanged = timed(lambda: mirror.sync(), args.repeats)

    written = [2]

    def one_run_changed() -> None:
        written[0] += 1
        put_run(client, 0, shards=written[0])
        if mirror.sync().fetched < 1:
            raise AssertionError("the new shard should have been fetched")

    changed = timed(one_run_changed, args.repeats)
    peer_runs = args.peer_runs or args.runs
    peer = timed(lambda: per_run_listing(url, peer_runs), max(1, args.repeats // 2))
    peer_full = peer * args.runs / peer_runs
    rows = [
        ("first sync, empty mirror (fetches every input)", first, f"{listed.listed:,} listed"),
        ("restart, nothing changed (state kept on disk)", restarted, f"{pages} LIST, 0 GET"),
        ("the listing alone (any restart's floor)", floor, f"{pages} LIST requests"),
        ("poll, nothing changed", unchanged, f"{pages} LIST requests"),
        ("poll, one run wrote a shard", changed, f"{pages} LIST + HEAD/GET per new object"),
        (f"peer: list each run's folder ({peer_runs:,} runs)", peer, f"{peer_runs:,} LIST"),
    ]
    print(f"\nlossreport bench_store: {args.runs:,} runs on moto (loopback), medians")
    for label, seconds, requests in rows:
        print(f"  {label:<52} {seconds * 1000:>10.1f} ms   {requests}")
    verdict = "met" if restarted < 30 * args.runs / 10_000 else "NOT met"
    print(
        f"  {'restart vs before (a first sync)':<52} {first / restarted:>10.1f}x faster"
        f"   target under 30 s at 10,000 runs (scaled: {30 * args.runs / 10_000:.0f} s): {verdict}"
    )
    ratio = peer_full / unchanged
    print(f"  {'poll vs the peer (per-run listing), same runs':<52} {ratio:>10.1f}x fewer ms")
    print(f"  {'requests per poll vs the peer':<52} {args.runs / pages:>10.0f}x fewer")
    return 0


def timed(action: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def per_run_listing(url: s3.StoreUrl, runs: int) -> None:
    for number in range(runs):
        s3.listing(url.child(run_name(number)), recursive=True)


MODELS = ["Qwen2.5-7B-Instruct-SAE-sweep", "Meta-Llama-3.1-8B-Instruct", "gpt2-small-résumé"]
HOOK = "blocks.12.hook_resid_post"
_NAMES: dict[int, str] = {}


def run_name(number: int) -> str:
    """The run's folder name, as `start_run` makes it (its id function, then its folder)."""
    if number not in _NAMES:
        run_id = _agreed_run_id(MODELS[number % len(MODELS)], HOOK)
        _NAMES[number] = directory_name(run_id)
    return _NAMES[number]


def fill(client: object, runs: int) -> int:
    with ThreadPoolExecutor(16) as pool:
        return sum(pool.map(lambda number: put_run(client, number), range(runs)))


def put_run(client: object, number: int, shards: int = 2) -> int:
    """A rendered run's objects; returns how many were written."""
    put = client.put_object  # type: ignore[attr-defined]
    folder = f"runs/{run_name(number)}"
    record = runformat.RunRecord(run_name(number), "model", "hook", "standard", {})
    put(Bucket=BUCKET, Key=f"{folder}/{runformat.RUN_FILE}", Body=record.to_json().encode())
    table = pa.table({"step": pa.array(range(100), pa.int64()), "mse_loss": [0.5] * 100})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    for shard in range(1, shards + 1):
        key = f"{folder}/{runformat.LOSSES_DIR}/{runformat.shard_name(shard)}"
        put(Bucket=BUCKET, Key=key, Body=buffer.getvalue())
    graphs = f"{folder}/{runformat.GRAPHS_DIR}"
    for name in REPORT:
        put(Bucket=BUCKET, Key=f"{graphs}/{name}", Body=b"report")
    marker = json.dumps({"fingerprint": "", "status": "completed", "entry": {}}).encode()
    put(Bucket=BUCKET, Key=f"{graphs}/{runformat.MARKER}", Body=marker)
    return 1 + shards + len(REPORT) + 1


if __name__ == "__main__":
    sys.exit(main())
