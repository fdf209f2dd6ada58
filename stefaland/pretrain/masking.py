"""Cross-Variable Group Masking (CVGM): what the pretraining model is asked to reconstruct.

Forcings are hidden in contiguous windows (a day-by-day mask would be trivially interpolated);
attributes are hidden a whole group at a time (terrain, soil, …) so the model cannot fill in
``sand_frac`` from ``clay_frac`` and must learn relations *between* groups. Each group counts as
one "effective feature" against the budget, as in the authors' release.

All randomness comes from a ``numpy.random.Generator`` that the caller seeds, so a resumed run
draws exactly the masks an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StaticGrouping:
    """Which attributes mask together, and which are never masked.

    ``groups``: one entry per attribute, "" = ungrouped. Never-masked attributes are removed from
    their group and from the budget (masking "area" would teach nothing, and finetuning needs it).
    """

    groups: tuple[tuple[int, ...], ...]  # attribute indices of each non-empty group
    ungrouped: tuple[int, ...]  # maskable attributes outside any group
    n_vars: int

    @classmethod
    def from_metadata(cls, groups: Sequence[str], never_mask: Sequence[bool]) -> StaticGrouping:
        if len(groups) != len(never_mask):
            raise ValueError("groups and never_mask must have one entry per static variable")
        members: dict[str, list[int]] = {}
        ungrouped: list[int] = []
        for index, (group, frozen) in enumerate(zip(groups, never_mask)):
            if frozen:
                continue
            if group:
                members.setdefault(str(group), []).append(index)
            else:
                ungrouped.append(index)
        return cls(tuple(tuple(v) for _, v in sorted(members.items())), tuple(ungrouped), len(groups))

    @property
    def n_effective(self) -> int:
        return len(self.groups) + len(self.ungrouped)

    def budget(self, ratio: float) -> int:
        return int(self.n_effective * ratio)


def dynamic_mask(
    rng: np.random.Generator,
    batch: int,
    seq_len: int,
    n_vars: int,
    ratio: float = 0.5,
    min_window: int = 30,
    max_window: int = 90,
) -> np.ndarray:
    """(batch, seq_len, n_vars) bool: per sample and variable, windows until ``ratio`` is hidden.

    Window lengths are drawn in [min_window, max_window] (clipped to the sequence and to the
    budget left), so each (sample, variable) hides exactly ``round(ratio · seq_len)`` days.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask ratio must lie in [0, 1], got {ratio}")
    if min_window < 1 or max_window < min_window:
        raise ValueError(f"bad mask window range [{min_window}, {max_window}]")
    mask = np.zeros((batch, n_vars, seq_len), dtype=bool)
    target = int(round(ratio * seq_len))
    for row in mask.reshape(batch * n_vars, seq_len):
        hidden = 0
        for _ in range(64):  # windows may overlap; a few draws almost always suffice
            if hidden >= target:
                break
            length = min(int(rng.integers(min_window, max_window + 1)), seq_len, target - hidden)
            start = int(rng.integers(0, seq_len - length + 1))
            row[start : start + length] = True
            hidden = int(row.sum())
        if hidden < target:  # pathological overlap: top up with random visible days
            visible = np.flatnonzero(~row)
            row[rng.choice(visible, target - hidden, replace=False)] = True
    return mask.transpose(0, 2, 1).copy()


def static_mask(
    rng: np.random.Generator, batch: int, grouping: StaticGrouping, ratio: float = 0.5
) -> np.ndarray:
    """(batch, n_vars) bool: whole groups first (each with probability ``ratio``) until the budget
    of ``int(n_effective · ratio)`` effective features is spent; leftover budget goes to ungrouped
    attributes, then (if none remain) to groups not yet drawn — so every sample hides exactly the
    budget's worth of effective features."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask ratio must lie in [0, 1], got {ratio}")
    mask = np.zeros((batch, grouping.n_vars), dtype=bool)
    budget = grouping.budget(ratio)
    for row in mask:
        left = budget
        unused_groups: list[int] = []
        for group_index in rng.permutation(len(grouping.groups)):
            if left > 0 and rng.random() < ratio:
                row[list(grouping.groups[group_index])] = True
                left -= 1
            else:
                unused_groups.append(int(group_index))
        if left > 0 and grouping.ungrouped:
            chosen = rng.choice(len(grouping.ungrouped), min(left, len(grouping.ungrouped)), replace=False)
            row[[grouping.ungrouped[i] for i in chosen]] = True
            left -= len(chosen)
        for group_index in unused_groups[:left]:
            row[list(grouping.groups[group_index])] = True
    return mask
