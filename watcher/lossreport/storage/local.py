"""The local-disk backend: `os` calls with O_NOFOLLOW, O_NONBLOCK and directory descriptors.

A path's last component is never followed when it is a symlink; the folders above it may be
(a runs directory reached through a link is normal). Callers keep links out of the middle of a
run's paths by never entering a run directory, `losses/` or `loss_graphs/` that is a link.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import cache
from pathlib import Path
from typing import BinaryIO

from ..errors import FileTooLargeError, RunBusy, UnsafePathError

# Documented in docs/run-directory-format.md: larger files are refused, not read.
MAX_RUN_FILE_BYTES = 16 * 2**20  # run.json, mail records
MAX_MARKER_BYTES = 64 * 2**20  # render markers (they carry the index row and its curves)
MAX_SHARD_BYTES = 2 * 2**30  # one Parquet shard

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _kind(mode: int) -> str:
    kinds = [
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symbolic link"),
    ]
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def kind_of(path: Path) -> str:
    """What is at `path`, in words ("a symbolic link", "a FIFO", ...), without following it."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return "missing"
    return "a regular file" if stat.S_ISREG(mode) else _kind(mode)


def _refusal(path: Path, exc: OSError) -> OSError:
    """The error for an open that O_NOFOLLOW or O_DIRECTORY refused, naming what is there."""
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO, errno.EISDIR):
        return UnsafePathError(path, f"is {kind_of(path)}; not followed or opened")
    return exc


def read_bytes(path: Path, limit: int) -> bytes:
    """The whole of regular file `path`, at most `limit` bytes.

    Raises FileNotFoundError when it is missing, UnsafePathError when it is a symlink, FIFO,
    device or folder (a FIFO is opened without blocking and never read), FileTooLargeError past
    `limit` (checked again while reading: the file may be growing).
    """
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        raise _refusal(path, exc) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePathError(path, f"is {_kind(info.st_mode)}, not a regular file; not read")
        if info.st_size > limit:
            raise FileTooLargeError(path, f"is {info.st_size:,} bytes, over the {limit:,} limit")
        os.set_blocking(fd, True)
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise FileTooLargeError(path, f"grew past the {limit:,} byte limit while read")
        return data
    finally:
        os.close(fd)


def lexists(path: Path) -> bool:
    """Whether anything, a dangling symlink included, is at `path`."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def is_real_dir(path: Path) -> bool:
    """A directory that is not a symlink to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def open_dir(path: Path) -> int:
    """A descriptor of directory `path`, refusing a symlink (UnsafePathError)."""
    try:
        return os.open(path, _DIR_FLAGS)
    except OSError as exc:
        raise _refusal(path, exc) from exc


@contextmanager
def _dir_fd(path: Path) -> Iterator[int]:
    fd = open_dir(path)
    try:
        yield fd
    finally:
        os.close(fd)


def make_dir(path: Path) -> None:
    """`mkdir path` if it is missing; an existing symlink or file there is an UnsafePathError."""
    try:
        os.mkdir(path, 0o777)  # mkdir never follows a symlink: one there raises FileExistsError
    except FileExistsError:
        if not is_real_dir(path):
            raise _refusal(path, OSError(errno.ENOTDIR, "not a directory")) from None


def make_hidden_dir(parent: Path, prefix: str) -> Path:
    """A new uniquely named folder in `parent` (not a symlink), with plain mkdir permissions."""
    with _dir_fd(parent) as fd:
        for _ in range(100):
            name = f"{prefix}{secrets.token_hex(4)}"
            try:
                os.mkdir(name, 0o777, dir_fd=fd)
            except FileExistsError:
                continue
            return parent / name
    raise FileExistsError(errno.EEXIST, f"no free name for {prefix}* in {parent}")


@contextmanager
def atomic_file(path: Path, *, replace: bool = True) -> Iterator[BinaryIO]:
    """A handle whose contents appear at `path` whole, or not at all, when the block ends.

    The data go to a hidden temp file created (O_EXCL, O_NOFOLLOW) in `path`'s folder, opened
    without following a symlink, are fsynced and moved into place within that folder. What is
    at `path` must be a regular file or nothing: a symlink or anything else there is left alone
    (UnsafePathError). With `replace` false an existing file is never replaced either: the temp
    file is hard-linked to `path`, which fails if anything is there (FileExistsError), even when
    another writer gets there between a check and the move. On any error the temp file is
    removed and `path` keeps what it had.
    """
    with _dir_fd(path.parent) as folder:
        try:
            existing = os.lstat(path.name, dir_fd=folder)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISREG(existing.st_mode):
                raise UnsafePathError(path, f"is {_kind(existing.st_mode)}; left untouched")
            if not replace:
                raise FileExistsError(errno.EEXIST, "exists; not replaced", str(path))
        tmp = f".{path.name[:200]}.{secrets.token_hex(4)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o666, dir_fd=folder)  # the umask applies, as for any file
        try:
            with os.fdopen(fd, "wb") as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            if replace:
                os.replace(tmp, path.name, src_dir_fd=folder, dst_dir_fd=folder)
            else:
                _move_without_replacing(tmp, path, folder)
        except BaseException:
            with suppress(OSError):
                os.unlink(tmp, dir_fd=folder)
            raise


def _move_without_replacing(tmp: str, path: Path, folder: int) -> None:
    """link + unlink: atomic and never replacing. Where the filesystem has no hard links
    (some FUSE and SMB mounts), the check above and a rename are the best there is."""
    try:
        os.link(tmp, path.name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "exists; not replaced", str(path)) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        os.rename(tmp, path.name, src_dir_fd=folder, dst_dir_fd=folder)
        return
    os.unlink(tmp, dir_fd=folder)


def atomic_write(path: Path, data: bytes) -> None:
    with atomic_file(path) as handle:
        handle.write(data)


@contextmanager
def exclusive_lock(path: Path, *, wait: bool, create: bool = True) -> Iterator[None]:
    """flock `path` (a regular file, created if missing unless `create` is false), across
    processes and, where the filesystem maps flock to POSIX locks (NFS), across hosts.

    Raises RunBusy when another process holds it and `wait` is false, FileNotFoundError when
    it is missing and `create` is false, UnsafePathError when a symlink or FIFO is in its place.
    """
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | os.O_CREAT if create else flags, 0o666)
    except OSError as exc:
        raise _refusal(path, exc) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePathError(path, f"is {_kind(info.st_mode)}, not a lock file; not used")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunBusy(path.parent, "held by another process") from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


@cache
def process_umask() -> int:
    """The umask, read without changing it (os.umask can only be read by setting it)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
