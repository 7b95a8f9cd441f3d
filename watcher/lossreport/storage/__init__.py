"""All file I/O the run format needs, safe on a runs tree written by other people.

Anything in a shared runs tree can be a symlink, a FIFO, a device, a directory where a file
belongs, or a file another process is writing now. So every file is opened without following a
final symlink and without blocking, must be a regular file, and is read only up to a limit;
every file and folder is created or replaced relative to a directory descriptor that was itself
opened without following a symlink, so nothing is ever created, renamed or truncated through
one.

`budget` bounds what reading one run may decode. `folders` is the seam the run format writes
through: `LocalFolder` for a filesystem, `s3`'s `ObjectFolder` for an object store; `mirror`
gives the daemon a local view of a store.
"""

from . import mirror, s3
from .budget import BUDGET_VARIABLE, DEFAULT_BUDGET_BYTES, ReadBudget, budget_bytes
from .documents import clean_text, load_json, read_json_or
from .folders import LocalFolder, RunFolder, RunLocation, folder_at
from .local import (
    MAX_MARKER_BYTES,
    MAX_RUN_FILE_BYTES,
    MAX_SHARD_BYTES,
    RACY_NS,
    atomic_file,
    atomic_write,
    changed_too_recently,
    exclusive_lock,
    fd_path,
    is_plain_path,
    is_real_dir,
    kind_of,
    lexists,
    made_beneath,
    make_dir,
    make_hidden_dir,
    move_at,
    open_dir,
    opened_beneath,
    opened_dir,
    read_bytes,
    read_descriptor,
    read_stated,
    remove_at,
    remove_empty_at,
    remove_tree_at,
    still_at,
)

__all__ = [
    "BUDGET_VARIABLE",
    "DEFAULT_BUDGET_BYTES",
    "MAX_MARKER_BYTES",
    "MAX_RUN_FILE_BYTES",
    "MAX_SHARD_BYTES",
    "RACY_NS",
    "LocalFolder",
    "ReadBudget",
    "RunFolder",
    "RunLocation",
    "atomic_file",
    "atomic_write",
    "budget_bytes",
    "changed_too_recently",
    "clean_text",
    "exclusive_lock",
    "fd_path",
    "folder_at",
    "is_plain_path",
    "is_real_dir",
    "kind_of",
    "lexists",
    "load_json",
    "made_beneath",
    "make_dir",
    "make_hidden_dir",
    "mirror",
    "move_at",
    "open_dir",
    "opened_beneath",
    "opened_dir",
    "read_bytes",
    "read_descriptor",
    "read_json_or",
    "read_stated",
    "remove_at",
    "remove_empty_at",
    "remove_tree_at",
    "s3",
    "still_at",
]
