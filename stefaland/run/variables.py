"""A run's variables looked up in a store: names in the order the config gives them, and their columns.

Pretraining (``data.dynamic_vars``) and finetuning (``data.dynamic``) name their inputs under
different keys (both are in shipped configs and docs, so both stay), but look them up alike:
``None`` means every variable of the store, and a name the store lacks is one line listing what
it has.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..errors import StefaLandError


def variable_columns(available: Iterable[str], wanted: Sequence[str] | None, kind: str,
                     where: str | None = None) -> tuple[list[str], list[int]]:
    """``(names, columns)`` of ``wanted`` among ``available`` (every one when ``wanted`` is None).

    ``kind`` (dynamic, static, target) and ``where`` (the store's URL) name them in the error.
    """
    available = [str(name) for name in available]
    names = list(available) if wanted is None else [str(name) for name in wanted]
    missing = [name for name in names if name not in available]
    if missing:
        prefix = f"{where}: " if where else ""
        raise StefaLandError(f"{prefix}{kind} variable {missing[0]!r} is not in the store (it has: {', '.join(available)})")
    return names, [available.index(name) for name in names]
