"""Whether this installation can build a model: the one place the plan asks.

A row whose model cannot be built (an encoder whose optional extra is not installed, a model no
installed package registers) is shown as "not available: <reason>" in the plan and the rendered
tables instead of failing a run. Kept to one function so that a registry which can say more
(a missing extra, a missing weights file) is asked here and nowhere else.
"""

from __future__ import annotations

from stefaland.errors import StefaLandError


def unavailable(model: str) -> str | None:
    """Why ``model`` cannot be built here; None when it can."""
    from stefaland.finetune import models

    ask = getattr(models, "model_availability", None)  # the registry's own answer, where it has one
    if ask is not None:
        return ask(model)
    try:
        models.model_spec(model)
    except StefaLandError:
        return f"model {model!r} is not in this installation's model registry"
    return None
