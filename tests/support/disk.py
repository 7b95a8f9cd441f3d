"""A small real filesystem (tmpfs) that a test can fill up and free again."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.optional import missing


@contextmanager
def small_disk(mount_point: Path, size: str = "16m") -> Iterator[Path]:
    """A tmpfs of `size` at `mount_point`; skips the test where this machine cannot mount."""
    mount_point.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte with one file; returns it (unlink it to free the space)."""
    filler = disk / "filler"
    chunk = b"\0" * (1 << 16)
    # Unbuffered: a buffered file would try the failed write again when closed, and raise.
    with filler.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    while True:  # the last partial chunk may have left a few bytes: take them too
        try:
            with filler.open("ab") as handle:
                handle.write(b"\0" * 512)
        except OSError:
            break
    assert os.statvfs(disk).f_bavail == 0
    return filler


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """`folder` as a tree this user cannot write: for root, a read-only bind mount of it onto
    itself (root writes anywhere else); for anyone else, the modes of it and its folders."""
    if os.geteuid() != 0:
        folders = [folder, *(path for path in folder.rglob("*") if path.is_dir())]
        for path in folders:
            path.chmod(0o555)
        try:
            yield
        finally:
            for path in folders:
                path.chmod(0o755)
        return
    mount = subprocess.run(
        ["mount", "--bind", "-o", "ro", str(folder), str(folder)], capture_output=True, text=True
    )
    if mount.returncode != 0:
        missing("a read-only bind mount (root without CAP_SYS_ADMIN?)", mount.stderr.strip())
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)
