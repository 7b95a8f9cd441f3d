"""Is a path on a network filesystem? There inotify never sees other clients' writes."""

from __future__ import annotations

import os
from pathlib import Path

NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "lustre",
        "gpfs",
        "beegfs",
        "ceph",
        "fuse.ceph",
        "glusterfs",
        "fuse.glusterfs",
        "fuse.sshfs",
        "9p",
        "afs",
        "panfs",
        "wekafs",
        "orangefs",
    }
)


def filesystem_type(path: Path, mounts: str = "/proc/mounts") -> str | None:
    """The type of the filesystem holding `path` (longest matching mount point)."""
    target = os.path.realpath(path)
    best, best_type = "", None
    try:
        with open(mounts) as table:
            for line in table:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                inside = target == point or target.startswith(point.rstrip("/") + "/")
                if inside and len(point) > len(best):
                    best, best_type = point, fields[2]
    except OSError:
        return None
    return best_type


def is_network_filesystem(fs_type: str | None) -> bool:
    return fs_type is not None and fs_type in NETWORK_FILESYSTEMS
