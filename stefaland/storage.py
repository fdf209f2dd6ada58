"""Former name of :mod:`stefaland.fileio` (paths and URLs, local or on object storage).

Kept so that code written against the name docs/DESIGN.md used before issue 16 keeps importing;
new code imports ``stefaland.fileio``.
"""

from .fileio import exists, filesystem, is_remote, join, read_bytes, remove, storage_options_for, write_bytes_atomic

__all__ = ["exists", "filesystem", "is_remote", "join", "read_bytes", "remove", "storage_options_for", "write_bytes_atomic"]
