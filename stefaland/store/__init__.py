"""The harmonised zarr store: its layout, how to open it safely, and how to read it shard by shard."""

from .reader import StoreShard, open_store, plain_strings, read_shard, shard_count, shard_slices

__all__ = ["StoreShard", "open_store", "plain_strings", "read_shard", "shard_count", "shard_slices"]
