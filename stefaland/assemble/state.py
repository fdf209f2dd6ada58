"""Resumable build state: which shards are written, and their partial statistics.

Kept as one small JSON object beside the arrays, replaced atomically after each shard, so a build
killed at any moment resumes from the last finished shard and still gets exact statistics. It also
holds the fingerprints of the input files (a resume refuses when one changed: the store would mix
old and new shards) and the size and checksum of every chunk written so far (the store's integrity
record, see :mod:`stefaland.store.integrity`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from ..fileio import exists, read_bytes, remove, write_bytes_atomic

STATE_SUFFIX = ".build-state.json"  # a sibling of the store, so zarr never sees a foreign key


@dataclass
class RunningMoments:
    """Count, mean and M2 per variable, merged with Chan et al.'s parallel formula (stable in float64)."""

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def of(cls, values: np.ndarray) -> RunningMoments:
        flat = values.reshape(-1, values.shape[-1]).astype(np.float64)
        valid = np.isfinite(flat)
        count = valid.sum(axis=0).astype(np.float64)
        total = np.where(valid, flat, 0.0).sum(axis=0)
        mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        m2 = np.where(valid, (flat - mean) ** 2, 0.0).sum(axis=0)
        return cls(count, mean, m2)

    def merge(self, other: RunningMoments) -> RunningMoments:
        count = self.count + other.count
        delta = other.mean - self.mean
        safe = np.where(count > 0, count, 1.0)
        mean = self.mean + delta * other.count / safe
        m2 = self.m2 + other.m2 + delta**2 * self.count * other.count / safe
        return RunningMoments(count, mean, m2)

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(self.count > 0, self.mean, np.nan)
            std = np.where(self.count > 1, np.sqrt(self.m2 / np.maximum(self.count - 1, 1)), np.nan)
        return mean, std

    def to_json(self) -> dict:
        return {"count": self.count.tolist(), "mean": self.mean.tolist(), "m2": self.m2.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> RunningMoments:
        return cls(*(np.asarray(data[k], dtype=np.float64) for k in ("count", "mean", "m2")))


@dataclass
class BuildState:
    fingerprint: str
    done: dict[int, dict[str, RunningMoments]] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    chunks: dict[str, list[int]] = field(default_factory=dict)

    @staticmethod
    def url(store: str) -> str:
        return str(store).rstrip("/") + STATE_SUFFIX

    @classmethod
    def load(cls, store: str) -> BuildState | None:
        if not exists(cls.url(store)):
            return None
        try:
            data = json.loads(read_bytes(cls.url(store)))
        except (ValueError, OSError):
            return None  # unreadable state: the caller rebuilds from scratch
        done = {int(k): {b: RunningMoments.from_json(m) for b, m in v.items()} for k, v in data["done"].items()}
        return cls(data["fingerprint"], done, dict(data.get("inputs") or {}), dict(data.get("chunks") or {}))

    def save(self, store: str) -> None:
        payload = {
            "fingerprint": self.fingerprint,
            "done": {str(k): {b: m.to_json() for b, m in v.items()} for k, v in self.done.items()},
            "inputs": self.inputs,
            "chunks": self.chunks,
        }
        write_bytes_atomic(self.url(store), json.dumps(payload).encode())

    @classmethod
    def clear(cls, store: str) -> None:
        remove(cls.url(store))
