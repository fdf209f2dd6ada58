"""Plug-ins found through entry points: one loop for the model, holdout and metric registries.

Why one loop: every registry must treat a broken plug-in the same way — log it and go on with the
built-ins — so that one faulty package in a user's environment never stops a command.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

#: The entry-point groups already loaded in this process: each registry loads its plug-ins once, on
#: first use, not at import (importing a plug-in may import torch or the registry itself).
LOADED_GROUPS: set[str] = set()


def load_entry_points(group: str, kind: type, register: Callable[[str, Any], object], what: str,
                      log: logging.Logger) -> None:
    """Register every object of entry-point ``group`` that is a ``kind``; log and skip the others.

    ``register(name, obj)`` is called with the entry point's name; a ``ValueError`` it raises (a
    name taken by another object) is logged as well.
    """
    for point in entry_points(group=group):
        try:
            loaded = point.load()
        except Exception as exc:  # noqa: BLE001 - a broken plug-in must not stop the built-ins
            log.warning("%s plug-in %s (%s) cannot be loaded: %s", what, point.name, point.value, exc)
            continue
        if not isinstance(loaded, kind):
            log.warning("%s plug-in %s (%s) is not a %s; ignored", what, point.name, point.value, kind.__name__)
            continue
        try:
            register(point.name, loaded)
        except ValueError as exc:
            log.warning("%s plug-in %s (%s): %s; ignored", what, point.name, point.value, exc)


def load_entry_points_once(group: str, kind: type, register: Callable[[str, Any], object], what: str,
                           log: logging.Logger) -> None:
    """:func:`load_entry_points`, the first time ``group`` is asked for in this process."""
    if group in LOADED_GROUPS:
        return
    LOADED_GROUPS.add(group)
    load_entry_points(group, kind, register, what, log)
