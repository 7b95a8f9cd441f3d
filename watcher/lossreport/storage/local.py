"""The local-disk backend: `os` calls with O_NOFOLLOW, O_NONBLOCK and directory descriptors.

A path's last component is never followed when it is a symlink; the folders above it may be
(a runs directory reached through a link is normal). Callers keep links out of the middle of a
run's paths by never entering a run directory, `losses/` or `loss_graphs/` that is a link, and
where a folder could be swapped for a link while they work (a run directory, by its owner),
they open it once and pass its descriptor: every function taking `dir_fd` then acts on
`path.name` inside that descriptor's folder, and uses `path` only to name it in errors.
"""

from __future__ import annotations

import errno
import fcntl
import math
import os
import secrets
import shutil
import stat
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from ..errors import FileTooLargeError, RunBusy, UnsafePathError

# Documented in docs/run-directory-format.md: larger files are refused, not read.
MAX_RUN_FILE_BYTES = 16 * 2**20  # run.json, mail records
MAX_MARKER_BYTES = 4 * 2**20  # render markers: an index row and small curves (ours: a few KB)
MAX_SHARD_BYTES = 2 * 2**30  # one Parquet shard

LOCK_POLL_SECONDS = 0.2  # flock has no timeout: a bounded wait polls
# A file or folder changed this recently may change again without its time stamps moving
# (coarse filesystem clocks tick every few milliseconds; NFS servers' clocks drift by some
# more): its stat is not trusted to say it is unchanged (git's "racily clean" entries).
RACY_NS = 2_000_000_000

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def changed_too_recently(changed_ns: int) -> bool:
    """Whether something changed at `changed_ns` (a stat's time) too close to now, on either
    side, for its stat to be trusted to say it is unchanged since (`RACY_NS`)."""
    return abs(time.time_ns() - changed_ns) < RACY_NS


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


def kind_of(path: Path, *, dir_fd: int | None = None) -> str:
    """What is at `path`, in words ("a symbolic link", "a FIFO", ...), without following it."""
    try:
        mode = os.lstat(_at(path, dir_fd), dir_fd=dir_fd).st_mode
    except OSError:
        return "missing"
    return "a regular file" if stat.S_ISREG(mode) else _kind(mode)


def _refusal(path: Path, exc: OSError, dir_fd: int | None = None) -> OSError:
    """The error for an open that O_NOFOLLOW or O_DIRECTORY refused, naming what is there."""
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO, errno.EISDIR):
        what = kind_of(path, dir_fd=dir_fd)
        return UnsafePathError(path, f"is {what}; not followed or opened")
    return exc


def _at(path: Path, dir_fd: int | None) -> str | Path:
    """What to hand `os`: the name inside the folder `dir_fd` holds, or the path itself."""
    return path if dir_fd is None else path.name


def read_bytes(path: Path, limit: int, *, dir_fd: int | None = None) -> bytes:
    """The whole of regular file `path`, at most `limit` bytes.

    Raises FileNotFoundError when it is missing, UnsafePathError when it is a symlink, FIFO,
    device or folder (a FIFO is opened without blocking and never read), FileTooLargeError past
    `limit` (checked again while reading: the file may be growing).
    """
    return read_stated(path, limit, dir_fd=dir_fd)[0]


def read_stated(
    path: Path, limit: int, *, dir_fd: int | None = None
) -> tuple[bytes, os.stat_result]:
    """`read_bytes`, and the stat of the file opened (no call more): whatever is at `path`
    by then, a caller that stated `path` before can tell whether it read that file."""
    try:
        fd = os.open(_at(path, dir_fd), _READ_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        raise _refusal(path, exc, dir_fd) from exc
    try:
        return _read_open(fd, path, limit)
    finally:
        os.close(fd)


def read_descriptor(fd: int, path: Path, limit: int) -> bytes:
    """`read_bytes` for a file opened already (`path` names it in errors); it stays open."""
    return _read_open(fd, path, limit)[0]


def _read_open(fd: int, path: Path, limit: int) -> tuple[bytes, os.stat_result]:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise UnsafePathError(path, f"is {_kind(info.st_mode)}, not a regular file; not read")
    if info.st_size > limit:
        raise FileTooLargeError(path, f"is {info.st_size:,} bytes, over the {limit:,} limit")
    os.set_blocking(fd, True)
    with os.fdopen(os.dup(fd), "rb", buffering=0) as handle:
        handle.seek(0)
        # Ask for the size it has (a read of `limit` would allocate all of it), then for
        # whatever a writer added meanwhile, up to the limit.
        data = handle.read(info.st_size + 1)
        if len(data) > info.st_size:
            data += handle.read(limit + 1 - len(data))
    if len(data) > limit:
        raise FileTooLargeError(path, f"grew past the {limit:,} byte limit while read")
    return data, info


def lexists(path: Path, *, dir_fd: int | None = None) -> bool:
    """Whether anything, a dangling symlink included, is at `path` (False when it cannot be
    told: an unreadable folder of someone else's is nothing to act on)."""
    try:
        os.lstat(_at(path, dir_fd), dir_fd=dir_fd)
    except OSError:
        return False
    return True


def is_real_dir(path: Path, *, dir_fd: int | None = None) -> bool:
    """A directory that is not a symlink to one."""
    try:
        return stat.S_ISDIR(os.lstat(_at(path, dir_fd), dir_fd=dir_fd).st_mode)
    except OSError:
        return False


def open_dir(path: Path, *, dir_fd: int | None = None) -> int:
    """A descriptor of directory `path`, refusing a symlink (UnsafePathError)."""
    try:
        return os.open(_at(path, dir_fd), _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        raise _refusal(path, exc, dir_fd) from exc


@contextmanager
def opened_dir(path: Path, *, dir_fd: int | None = None) -> Iterator[int]:
    """`open_dir` for a block; the descriptor is closed after it."""
    fd = open_dir(path, dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def opened_beneath(root: Path, parts: Sequence[str]) -> Iterator[int]:
    """A descriptor of `root/parts...`, each part opened in the one above without following a
    link (`O_NOFOLLOW` alone guards only a path's last part): a folder on the way swapped for a
    link raises UnsafePathError instead of leading elsewhere. `root` itself may be a link."""
    fd, path = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), root
    try:
        for part in parts:
            path = path / part  # named whole in an error, opened by its name in `fd`
            inner = open_dir(path, dir_fd=fd)
            os.close(fd)
            fd = inner
        yield fd
    finally:
        os.close(fd)


@contextmanager
def made_beneath(root: Path, parts: Sequence[str]) -> Iterator[int]:
    """`opened_beneath`, making each folder on the way that is missing (never through a
    link: an entry there that is not a real folder raises UnsafePathError)."""
    fd, path = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), root
    try:
        for part in parts:
            path = path / part  # named whole in an error, made and opened in `fd`
            make_dir(path, dir_fd=fd)
            inner = open_dir(path, dir_fd=fd)
            os.close(fd)
            fd = inner
        yield fd
    finally:
        os.close(fd)


def is_plain_path(root: Path, parts: Sequence[str]) -> bool:
    """Whether every folder of `root/parts...` is a real folder, none a link (checked part by
    part with lstat)."""
    path = root
    for part in parts:
        path = path / part
        if not is_real_dir(path):
            return False
    return True


def still_at(path: Path, fd: int, root: Path, parts: Sequence[str]) -> bool:
    """Whether `path` (= root/parts...) still names the folder `fd` holds, through no link: a
    reader that went by path can check that what it read was that folder's."""
    if not is_plain_path(root, parts):
        return False
    try:
        now, opened = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (opened.st_dev, opened.st_ino)


def fd_path(fd: int, fallback: Path) -> Path:
    """A path that reaches the folder `fd` holds whatever happens to the path it was opened by
    (Linux's /proc/self/fd); `fallback` where there is no /proc."""
    linked = Path(f"/proc/self/fd/{fd}")
    return linked if linked.is_dir() else fallback


def make_dir(path: Path, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
    """`mkdir path` if it is missing; an existing symlink or file there is an UnsafePathError.
    With `dir_fd`, `path.name` in the folder that descriptor holds."""
    try:
        # mkdir never follows a symlink: one there raises FileExistsError
        os.mkdir(_at(path, dir_fd), mode, dir_fd=dir_fd)
    except FileExistsError:
        if not is_real_dir(path, dir_fd=dir_fd):
            error = OSError(errno.ENOTDIR, "not a directory")
            raise _refusal(path, error, dir_fd) from None


def make_hidden_dir(parent: Path, prefix: str, *, parent_fd: int | None = None) -> Path:
    """A new uniquely named folder in `parent` (not a symlink; or in the folder `parent_fd`
    holds), with plain mkdir permissions."""
    with ExitStack() as stack:
        fd = parent_fd if parent_fd is not None else stack.enter_context(opened_dir(parent))
        for _ in range(100):
            name = f"{prefix}{secrets.token_hex(4)}"
            try:
                os.mkdir(name, 0o777, dir_fd=fd)
            except FileExistsError:
                continue
            return parent / name
    raise FileExistsError(errno.EEXIST, f"no free name for {prefix}* in {parent}")


@contextmanager
def atomic_file(
    path: Path, *, replace: bool = True, dir_fd: int | None = None
) -> Iterator[BinaryIO]:
    """A handle whose contents appear at `path` whole, or not at all, when the block ends.

    The data go to a hidden temp file created (O_EXCL, O_NOFOLLOW) in `path`'s folder, opened
    without following a symlink, are fsynced and moved into place within that folder. What is
    at `path` must be a regular file or nothing: a symlink or anything else there is left alone
    (UnsafePathError). With `replace` false an existing file is never replaced either: the temp
    file is hard-linked to `path`, which fails if anything is there (FileExistsError), even when
    another writer gets there between a check and the move. On any error the temp file is
    removed and `path` keeps what it had.
    """
    with ExitStack() as stack:
        folder = dir_fd if dir_fd is not None else stack.enter_context(opened_dir(path.parent))
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


def atomic_write(path: Path, data: bytes, *, dir_fd: int | None = None) -> None:
    with atomic_file(path, dir_fd=dir_fd) as handle:
        handle.write(data)


@contextmanager
def exclusive_lock(
    path: Path, *, wait: float, create: bool = True, dir_fd: int | None = None
) -> Iterator[int]:
    """flock `path` (a regular file, created if missing unless `create` is false), across
    processes and, where the filesystem maps flock to POSIX locks (NFS), across hosts; yields
    the locked file's descriptor.

    `wait` is how many seconds to wait for another holder (`math.inf`: as long as it takes; 0:
    not at all): anyone who can read a lock file can hold it, so callers that must go on
    give up. Raises RunBusy when it is still held then, FileNotFoundError when it is missing
    and `create` is false, UnsafePathError when a symlink or FIFO is in its place.
    """
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(
            _at(path, dir_fd), flags | os.O_CREAT if create else flags, 0o666, dir_fd=dir_fd
        )
    except OSError as exc:
        raise _refusal(path, exc, dir_fd) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePathError(path, f"is {_kind(info.st_mode)}, not a lock file; not used")
        _flock(fd, path, wait)
        yield fd
    finally:
        os.close(fd)  # closing releases the lock


def _flock(fd: int, path: Path, wait: float) -> None:
    if math.isinf(wait):
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise RunBusy(path.parent, "held by another process") from None
        time.sleep(min(LOCK_POLL_SECONDS, max(0.0, deadline - time.monotonic())))


def move_at(name: str, src_fd: int, dst_fd: int, new_name: str | None = None) -> None:
    """Rename `name` in the folder `src_fd` holds to `new_name` (by default the same name) in
    the folder `dst_fd` holds. rename acts on the entries themselves, never through a link, and
    both folders were opened without following one."""
    os.rename(name, new_name or name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)


def remove_at(name: str, dir_fd: int) -> None:
    """Unlink `name` in the folder `dir_fd` holds (a link is removed, never followed)."""
    os.unlink(name, dir_fd=dir_fd)


def remove_empty_at(name: str, dir_fd: int) -> bool:
    """rmdir `name` in the folder `dir_fd` holds, if it is an empty folder (rmdir never follows
    a link); whether it was removed."""
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except OSError:
        return False
    return True


def remove_tree_at(name: str, dir_fd: int) -> None:
    """Remove folder `name` in the folder `dir_fd` holds with all it contains, as far as it can:
    rmtree works through descriptors and never follows a link inside."""
    shutil.rmtree(name, dir_fd=dir_fd, ignore_errors=True)
