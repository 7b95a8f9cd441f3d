"""What only a team's catalog on a PostgreSQL server does, on the session's real server: the
password never from a URL, and taken from libpq's ways or a file; a schema newer than this
version refused, an older one upgraded; many trees' runs in one catalog, each daemon pruning
its own; the server restarted under a reader and a writer;
a daemon's rows kept while the server is down and written when it is back, each logged once.
(The queries themselves: test_catalog.py, over both databases.)"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import lossreport
from tests.support.optional import missing

try:
    import psycopg  # noqa: F401
except ImportError:
    missing("psycopg", "pip install 'lossreport[postgresql]'")

from lossreport.catalog import RunQuery
from lossreport.catalog.places import Place
from lossreport.catalog.postgres import META, POSTGRESQL, PostgresCatalog
from lossreport.catalog.query import options, search, where_clause
from lossreport.catalog.store import SCHEMA_VERSION
from lossreport.catalog.urls import CatalogServer
from lossreport.cli.main import main
from lossreport.daemon.listing import Listing
from lossreport.errors import CatalogSchemaError, CatalogServerError, InvalidInputError
from lossreport.report import pages
from lossreport.runformat import Homes
from tests.catalog.test_upgrade import stamps_of, write_schema_3
from tests.support.catalog import TO_SCHEMA_4, fill, synthetic_entries
from tests.support.postgres import PASSWORD, PostgresServer

SECRET = "hunter2-Ω"


def _row(key: str, rendered_at: str = "2026-01-01T00:00:00+00:00") -> dict[str, object]:
    entry = {"status": "completed", "model": "m", "hook": "h", "architecture": "a"}
    return pages.index_row({**entry, "config": {"lr": 1}, "rendered_at": rendered_at}, key)


@pytest.fixture
def server_back(postgres_server: PostgresServer) -> Iterator[PostgresServer]:
    """The session's server, started again after the test whatever the test did to it."""
    yield postgres_server
    if not (postgres_server.data / "postmaster.pid").exists():
        postgres_server.start()


# -- the password --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://lossreport:{SECRET}@db.lab/runs",
        f"postgresql://lossreport@db.lab/runs?password={SECRET}",
        # Unescaped `/` or `@` in the password: the URL's parser finds none, and the whole
        # URL was logged (`/`) or its tail shown (`@`).
        f"postgresql://lossreport:pa/{SECRET}@db.lab/runs",
        f"postgresql://lossreport:pa@{SECRET}@db.lab/runs",
    ],
)
def test_a_password_in_argv_is_refused_and_never_shown(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in ("watch", "serve"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, str(tmp_path), "--catalog", url])
        assert exit_info.value.code == 2
        error = capsys.readouterr().err
        assert "holds a password" in error and "PGPASSWORD" in error, error
        assert SECRET not in error


def test_a_password_in_the_config_url_is_refused_and_never_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "lossreport.toml"
    config.write_text(f'[watch]\ncatalog = "postgresql://u:{SECRET}@db.lab/runs"\n')
    assert main(["watch", str(tmp_path), "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert "holds a password" in error and str(config) in error and SECRET not in error


def test_not_a_postgresql_url_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["serve", str(tmp_path), "--catalog", "sqlite:///x.db"])
    assert "not a postgresql:// URL" in capsys.readouterr().err


def test_the_password_comes_from_the_environment_or_a_file(
    postgres_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's loopback port asks for a password (scram): none fails, PGPASSWORD and
    a file named in the config each work."""
    url = postgres_server.tcp_url(postgres_server.new_database())
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-such-pgpass"))
    with pytest.raises(CatalogServerError, match="password"):
        PostgresCatalog.connect(url, writable=True)
    PostgresCatalog.connect(CatalogServer(url, PASSWORD), writable=True).close()
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    catalog = PostgresCatalog.connect(url, writable=False)
    assert catalog.count() == 0
    catalog.close()
    with pytest.raises(InvalidInputError, match="holds a password"):
        PostgresCatalog.connect(url.replace("lossreport@", f"lossreport:{SECRET}@"), writable=True)


# -- the schema ----------------------------------------------------------------------------------
def test_a_newer_schema_is_refused_by_writers_and_readers(postgres_url: str) -> None:
    PostgresCatalog.connect(postgres_url, writable=True).close()
    admin = PostgresCatalog.connect(postgres_url, writable=True)
    admin._connection.execute(f"UPDATE {META} SET version = ?", (SCHEMA_VERSION + 1,))
    admin.close()
    for writable in (True, False):
        with pytest.raises(CatalogSchemaError, match=f"schema {SCHEMA_VERSION + 1}, newer"):
            PostgresCatalog.connect(postgres_url, writable=writable)


def test_an_older_schema_without_an_upgrade_step_is_made_afresh(postgres_url: str) -> None:
    """Schema 2 (the first a server held) has no step to 3: its tables are made again, empty,
    and filled from the runs' markers as daemons look at them, instead of the daemon failing
    to start."""
    admin = PostgresCatalog.connect(postgres_url, writable=True)
    admin.put(_row("a/1"))
    admin._connection.execute(f"UPDATE {META} SET version = ?", (2,))
    admin.close()
    with pytest.raises(CatalogSchemaError, match=f"schema 2, not {SCHEMA_VERSION}"):
        PostgresCatalog.connect(postgres_url, writable=False)
    writer = PostgresCatalog.connect(postgres_url, writable=True)
    assert writer.count() == 0
    writer.put(_row("a/2"))
    writer.close()
    reader = PostgresCatalog.connect(postgres_url, writable=False)
    assert [row["run_id"] for row in reader.recent(10)] == ["a/2"]
    reader.close()


def test_schema_4_is_upgraded_in_place_with_its_rows(postgres_url: str) -> None:
    """Schema 4 to 5 (the counts by sweep, status and source, the run in the config's index)
    is a step on the rows as they are: a daemon's connection takes it, nothing is lost."""
    admin = PostgresCatalog.connect(postgres_url, writable=True)
    admin.put_many(pages.index_row(entry, key) for key, entry in synthetic_entries(200))
    failed = search(admin, RunQuery(status="failed")).total
    for statement in TO_SCHEMA_4:
        admin._connection.execute(statement)
    admin._connection.execute(f"UPDATE {META} SET version = ?", (4,))
    admin.close()
    with pytest.raises(CatalogSchemaError, match=f"schema 4, not {SCHEMA_VERSION}"):
        PostgresCatalog.connect(postgres_url, writable=False)
    PostgresCatalog.connect(postgres_url, writable=True).close()
    reader = PostgresCatalog.connect(postgres_url, writable=False)
    assert reader.count() == 200
    assert search(reader, RunQuery(status="failed")).total == failed > 0
    reader.close()


def test_the_text_filter_finds_its_sweeps_once_not_per_run(postgres_url: str) -> None:
    """The text filter's sweeps (their names hold the text) are found once, before the runs
    (an InitPlan), so that every arm of its OR can be read from an index and the arms'
    bitmaps joined: asked per run (`IN`, a hashed SubPlan) the OR needs every run read, 2.4 s
    at 1,000,000 runs. The plan's shape, not its choice among indexes, which a catalog of
    a test's size does not show."""
    writer = PostgresCatalog.connect(postgres_url, writable=True)
    fill(writer, 300)
    where, parameters = where_clause(RunQuery(text="blocks.7.hook"), POSTGRESQL)
    found = writer._connection.execute(f"EXPLAIN SELECT COUNT(*) FROM runs {where}", parameters)
    plan = "\n".join(line for (line,) in found)
    writer.close()
    assert "InitPlan" in plan and "SubPlan" not in plan, plan


def test_a_daemon_of_a_newer_schema_refuses_to_start(
    postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = PostgresCatalog.connect(postgres_url, writable=True)
    admin._connection.execute(f"UPDATE {META} SET version = ?", (SCHEMA_VERSION + 1,))
    admin.close()
    runs = tmp_path / "runs"
    runs.mkdir()
    assert main(["watch", str(runs), "--once", "--catalog", postgres_url]) == 1
    assert "upgrade lossreport" in capsys.readouterr().err


def test_schema_is_made_once_by_daemons_starting_together(postgres_url: str) -> None:
    catalogs = [PostgresCatalog.connect(postgres_url, writable=True) for _ in range(3)]
    catalogs[0].put(_row("a/1"))
    assert [catalog.count() for catalog in catalogs] == [1, 1, 1]
    for catalog in catalogs:
        catalog.close()


def test_an_older_schema_is_upgraded_in_place_its_runs_its_trees(postgres_url: str) -> None:
    """Schema 3 held one tree's runs (its `tree`): each is given that tree's place, none lost,
    and the tree's daemon goes on with them (its stamps, its pruning)."""
    tree = Place("login-1", "/srv/runs")
    admin = PostgresCatalog.connect(postgres_url, writable=True)
    rows = [pages.index_row(entry, key) for key, entry in synthetic_entries(30)]
    write_schema_3(admin._connection, rows)
    admin._connection.execute(f"ALTER TABLE {META} ADD COLUMN tree TEXT")
    admin._connection.execute(f"UPDATE {META} SET version = 3, tree = ?", (tree.tree,))
    admin.close()

    daemon = PostgresCatalog.connect(CatalogServer(postgres_url, place=tree), writable=True)
    reader = PostgresCatalog.connect(postgres_url, writable=False)
    try:
        assert reader.count() == len(rows)
        assert {row["place"] for row in reader.recent(100)} == {tree}
        assert daemon.stamps() == stamps_of(rows)
        assert daemon.keep_only([row["run_id"] for row in rows[1:]]) == 1
        assert search(reader, RunQuery(where="login-1:/srv/runs")).total == len(rows) - 1
    finally:
        daemon.close()
        reader.close()


def test_many_trees_share_a_catalog_each_daemon_pruning_its_own(postgres_url: str) -> None:
    """Two trees' daemons and a bucket's: one path in two trees is two runs, and a daemon's
    prune (keep_only) and forget leave the others' rows alone."""
    places = [Place("gpu-a", "/scratch/runs"), Place("gpu-b", "/scratch/runs"),
              Place("", "s3://team-bucket/runs")]  # fmt: skip
    daemons = [PostgresCatalog.connect(CatalogServer(postgres_url, place=place), writable=True)
               for place in places]  # fmt: skip
    try:
        for number, daemon in enumerate(daemons):
            daemon.put_many([_row("sweep/shared"), _row(f"sweep/only-{number}")])
            daemon.put_seen([("sweep/shared", number, False)])
        assert daemons[0].count() == 6
        assert [daemon.seen("sweep/shared") for daemon in daemons] == [(0, False), (1, False),
                                                                       (2, False)]  # fmt: skip
        daemons[0].mark_failed("sweep/shared", "boom", _row("sweep/shared"))
        assert [d.rows(["sweep/shared"])[0]["error"] for d in daemons] == ["boom", "", ""]
        assert daemons[0].keep_only(["sweep/shared"]) == 1
        daemons[1].forget("sweep/shared")
        assert daemons[2].count() == 4
        assert {row["run_id"] for row in daemons[2].recent(10, here=True)} == {
            "sweep/shared", "sweep/only-2"}  # fmt: skip
        page = search(daemons[2], RunQuery(where="gpu-b:/scratch/runs"))
        assert [(row["run_id"], row["place"]) for row in page.rows] == [
            ("sweep/only-1", places[1])]  # fmt: skip
        assert options(daemons[2])["where"] == sorted(place.name for place in places)
    finally:
        for daemon in daemons:
            daemon.close()


def test_daemons_sharing_a_tree_over_nfs_name_its_host_once(
    postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tree's place holds its host: daemons of one NFS tree on several hosts give it one
    name (--catalog-host), else each lists every run under its own place."""
    runs = tmp_path / "runs"
    with lossreport.start_run(runs / "sweep", model="gpt2-small", hook="blocks.3.hook_resid_pre",
                              run_id="lr-1", report_on_close=False) as run:  # fmt: skip
        for step in range(20):
            run.log(step, mse_loss=1.0 / (step + 1))
    watch = ["watch", str(runs), "--once", "--catalog", postgres_url]
    for _ in range(2):  # as from two hosts
        assert main([*watch, "--catalog-host", "nfs-1"]) == 0
    reader = PostgresCatalog.connect(postgres_url, writable=False)
    try:
        assert [row["place"] for row in reader.recent(10)] == [Place("nfs-1", str(runs))]
        assert main(watch) == 0  # this host's own name: another place
        assert {row["place"].host for row in reader.recent(10)} == {"nfs-1", socket.gethostname()}
    finally:
        reader.close()
    with pytest.raises(SystemExit):
        main([*watch, "--catalog-host", "two words"])
    assert "--catalog-host: 'two words': must be a host's name" in capsys.readouterr().err


# -- the server going away -------------------------------------------------------------------------
def test_a_reader_and_a_writer_outlive_a_server_restart(
    server_back: PostgresServer, postgres_url: str
) -> None:
    writer = PostgresCatalog.connect(postgres_url, writable=True)
    reader = PostgresCatalog.connect(postgres_url, writable=False)
    writer.put(_row("a/1"))
    assert reader.count() == 1
    server_back.stop()
    with pytest.raises(CatalogServerError):
        writer.put(_row("a/2"))
    with pytest.raises(CatalogServerError):
        reader.count()
    server_back.start()
    writer.put(_row("a/2"))
    assert reader.count() == 2
    assert search(reader, RunQuery(text="a/2")).total == 1
    writer.close()
    reader.close()


def test_a_daemon_keeps_its_rows_while_the_server_is_down(
    server_back: PostgresServer,
    postgres_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Rows rendered while the server is down are written when it is back: none lost, and
    the outage logged once, its end once."""
    caplog.set_level(logging.INFO, logger="lossreport")
    homes = Homes(tmp_path)
    listing = Listing(homes, CatalogServer(postgres_url, place=Place("host", str(tmp_path))))
    entries = list(synthetic_entries(40))
    for key, entry in entries[:10]:
        listing.rendered(key, entry)
    server_back.stop()
    for key, entry in entries[10:30]:
        listing.rendered(key, entry)
    for key, entry in entries[30:]:  # found at a scan, batched
        listing.found(key, entry)
    listing.flush()
    listing.write_page()
    listing.retry()
    server_back.start()
    listing.retry()
    reader = PostgresCatalog.connect(postgres_url, writable=False)
    assert sorted(row["run_id"] for row in reader.recent(100)) == sorted(k for k, _ in entries)
    reader.close()
    events = [getattr(record, "event", None) for record in caplog.records]
    assert events.count("catalog_unreachable") == 1 and events.count("catalog_reachable") == 1
    listing.close()


def test_a_daemon_started_while_the_server_is_down_renders_on(
    server_back: PostgresServer, postgres_url: str, tmp_path: Path
) -> None:
    PostgresCatalog.connect(postgres_url, writable=True).close()
    server_back.stop()
    here = Place("host", str(tmp_path))
    listing = Listing(Homes(tmp_path), CatalogServer(postgres_url, place=here))
    key, entry = next(iter(synthetic_entries(1)))
    listing.rendered(key, entry)
    server_back.start()
    listing.retry()
    reader = PostgresCatalog.connect(postgres_url, writable=False)
    assert [row["run_id"] for row in reader.recent(5)] == [key]
    reader.close()
    listing.close()
