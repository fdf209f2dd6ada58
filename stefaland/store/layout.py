"""Names and attributes of the store layout (see docs/DESIGN.md §2), kept in one place."""

from __future__ import annotations

COMPLETE_ATTR = "stefaland_complete"
BUILD_STATE_ATTR = "stefaland_build_state"
PROVENANCE_ATTR = "provenance"
SHARD_SIZE_ATTR = "shard_size"

# array name -> (variable dimension, per-variable coordinate prefix)
BLOCKS: dict[str, str] = {"dynamic": "dvar", "target": "tvar", "static": "svar"}
TIME_BLOCKS = ("dynamic", "target")
