"""The package's shape, as docs/architecture.md draws it, checked by reading the source.

Imports only go down the layers; every exception is in errors.py; the run-directory names are
spelled in runformat alone; file locking is storage's alone, the chart engine vega's. Read with
`ast`, so a check costs nothing and needs no imports.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.support.procs import ROOT

PACKAGE = ROOT / "watcher" / "lossreport"
LEAVES = frozenset({"errors", "version", "clock", "backoff", "logformat", "processes"})
# What each part may import besides the leaves (and itself): docs/architecture.md's picture.
ALLOWED: dict[str, set[str]] = {
    "storage": set(),
    "runformat": {"storage"},
    "sources": {"runformat", "storage"},
    "trainer": {"runformat", "storage"},
    "alerts": {"runformat", "storage"},
    "catalog": {"runformat", "storage"},
    "report": {"sources", "runformat", "storage"},
    "browse": {"catalog", "report", "sources", "runformat", "storage"},
    "delivery": {"alerts", "browse", "catalog", "report", "sources", "runformat", "storage"},
    "daemon": {
        "alerts",
        "browse",
        "catalog",
        "delivery",
        "report",
        "sources",
        "runformat",
        "storage",
    },
    "cli": {
        "alerts",
        "browse",
        "catalog",
        "daemon",
        "delivery",
        "report",
        "sources",
        "runformat",
        "storage",
    },
    "integrations": {"trainer", "runformat", "storage"},
    "notebook": {"report", "sources", "runformat", "storage"},
    "__main__": {"cli"},
    "__init__": {
        "trainer",
        "report",
        "notebook",
    },  # the public face: these only lazily, on first use
}


RUN_DIRECTORY_NAMES = frozenset(
    {
        "run.json",
        "losses",
        "loss_graphs",
        ".lossreport-render.lock",
        ".lossreport-rendered.json",
        ".lossreport-mailed.json",
        ".lossreport",
        "outbox",
        "index.html",
        ".lossreport-catalog",
        "runs.sqlite",
        ".lossreport-daemon.json",
        ".lossreport-alerts.json",
        "cleared",
    }
)


def _modules() -> Iterator[tuple[Path, tuple[str, ...]]]:
    """Each module's file and its dotted name inside the package, `()` for `__init__`."""
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        yield path, parts[:-1] if parts[-1] == "__init__" else parts


def _part(module: tuple[str, ...], path: Path) -> str:
    if module:
        return module[0]
    return "__init__" if path.parent == PACKAGE else path.parent.name


def _imported(tree: ast.Module, module: tuple[str, ...], path: Path) -> Iterator[tuple[str, ...]]:
    """What each import statement names, as a dotted name inside the package (`()`: the
    package itself). Imports of other packages are skipped."""
    package = module if path.name == "__init__.py" else module[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names = alias.name.split(".")
                if names[0] == "lossreport":
                    yield tuple(names[1:])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = (*base, *(node.module.split(".") if node.module else ()))
            elif node.module and node.module.split(".")[0] == "lossreport":
                target = tuple(node.module.split(".")[1:])
            else:
                continue
            if target:
                yield target
            else:  # `from .. import x`: x is a module of the package, or the package's own name
                for alias in node.names:
                    is_module = (PACKAGE / alias.name).is_dir() or (
                        PACKAGE / f"{alias.name}.py"
                    ).is_file()
                    yield (alias.name,) if is_module else ()


def test_imports_only_go_down_the_layers() -> None:
    wrong = []
    for path, module in _modules():
        part = _part(module, path)
        allowed = ALLOWED.get(part, set()) | LEAVES | {part}
        if part in LEAVES:
            allowed = set(LEAVES)
        for target in _imported(ast.parse(path.read_text()), module, path):
            if not target:
                wrong.append(f"{path.relative_to(ROOT)} imports the package root")
            elif target[0] not in allowed:
                wrong.append(f"{path.relative_to(ROOT)} imports lossreport.{'.'.join(target)}")
    assert wrong == []


def test_every_part_of_the_package_has_its_place_in_the_layers() -> None:
    parts = {_part(module, path) for path, module in _modules()}
    assert parts <= set(ALLOWED) | LEAVES


def test_only_runformat_spells_the_run_directory_names() -> None:
    """Docstrings and messages may mention a name; code that uses one takes runformat's."""
    found = []
    for path, module in _modules():
        if module[:1] == ("runformat",):
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        # `stats["losses"]` and `{"losses": ...}` are keys of a document, not folder names
        keys = {id(node.slice) for node in ast.walk(tree) if isinstance(node, ast.Subscript)}
        keys |= {
            id(key) for node in ast.walk(tree) if isinstance(node, ast.Dict) for key in node.keys
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings | keys
                and (node.value in RUN_DIRECTORY_NAMES or node.value.startswith("part-"))
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert found == []


def _importers(name: str) -> list[str]:
    """The package's modules that import the module `name` of another package."""
    found = []
    for path, _module in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            if any(imported.split(".")[0] == name for imported in names):
                found.append(str(path.relative_to(PACKAGE)))
    return sorted(set(found))


def test_only_storage_locks_files() -> None:
    assert _importers("fcntl") == ["storage/local.py"]


def test_only_vega_drives_the_chart_engine() -> None:
    """Charts, the report's PNGs and the mail's PNG all go through vega (one error type)."""
    assert _importers("vl_convert") == ["report/vega.py"]


def test_every_exception_is_defined_in_errors() -> None:
    defined = []
    for path, _module in _modules():
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(base).rsplit(".", 1)[-1] for base in node.bases]
                if any(base.endswith(("Error", "Exception")) for base in bases):
                    defined.append(f"{path.relative_to(PACKAGE)}: {node.name}")
    assert defined == []


def test_only_storage_talks_to_object_stores() -> None:
    """pyarrow's S3 filesystem for every byte, boto3 for the leases' conditional PUTs alone."""
    assert _importers("boto3") == ["storage/lease.py"]
    users = []
    for path, _module in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [alias.name for alias in node.names]
                if isinstance(node, ast.ImportFrom):
                    names = [f"{node.module}.{name}" for name in names]
                if any(name.startswith("pyarrow.fs") for name in names):
                    users.append(str(path.relative_to(PACKAGE)))
    assert sorted(set(users)) == ["storage/s3.py"]
