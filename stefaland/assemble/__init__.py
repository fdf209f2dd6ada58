"""``stefaland data build``: catalog sources → one harmonised, sharded, resumable zarr store."""

from .build import DEFAULT_SHARD_SIZE, BuildSummary, build_store

__all__ = ["DEFAULT_SHARD_SIZE", "BuildSummary", "build_store"]
