"""The wheel, built and installed into a fresh virtual environment, is a working product."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import lossreport
from tests.support.procs import ROOT


def test_the_wheel_installs_fresh_and_its_cli_renders_with_packaged_templates(
    tmp_path: Path,
) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = dist.glob("lossreport-*.whl")
    env_dir = tmp_path / "fresh"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr

    runs = tmp_path / "runs"
    with lossreport.start_run(runs, model="m", hook="h", run_id="r") as run:
        for step in range(20):
            run.log(step, mse_loss=1.0 / (step + 1))
    outside = tmp_path / "elsewhere"  # not the source tree: nothing imports from it
    outside.mkdir()
    where = subprocess.run(
        [
            str(python),
            "-c",
            "import lossreport, importlib.util; print(lossreport.__file__); "
            "print(importlib.util.find_spec('torch')); "
            "print(importlib.util.find_spec('lossreport.integrations.sae_lens') is not None)",
        ],
        capture_output=True,
        text=True,
        cwd=outside,
        check=True,
    )
    assert str(env_dir) in where.stdout.splitlines()[0]
    assert where.stdout.splitlines()[1] == "None"  # torch is an extra, not a dependency
    assert where.stdout.splitlines()[2] == "True"
    cli = env_dir / "bin" / "lossreport"
    version = subprocess.run([str(cli), "--version"], capture_output=True, text=True, cwd=outside)
    assert version.stdout.strip() == f"lossreport {lossreport.__version__}"
    rendered = subprocess.run(
        [str(cli), "render", str(run.path)],
        capture_output=True,
        text=True,
        cwd=outside,
        timeout=120,
    )
    assert rendered.returncode == 0, rendered.stderr
    (page,) = (run.path / "loss_graphs").glob("loss_report_*.html")
    assert "<h2>Summary</h2>" in page.read_text()  # the template came from the wheel
    watched = subprocess.run(
        [str(cli), "watch", str(runs), "--once", "--workers", "1"],
        capture_output=True,
        text=True,
        cwd=outside,
        timeout=120,
    )
    assert watched.returncode == 0, watched.stderr
    assert "var MAX_LINES" in (runs / "index.html").read_text()  # index.js came from the wheel


def test_every_subpackage_is_in_the_wheel() -> None:
    """pyproject.toml lists the packages by hand (the templates live outside the package
    folder), so a new subpackage must be added there or the wheel silently lacks it."""
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    package = ROOT / "watcher" / "lossreport"
    found = {
        ".".join(("lossreport", *init.parent.relative_to(package).parts))
        for init in package.rglob("__init__.py")
    }
    assert found | {"lossreport.report_templates"} == listed
