"""Refuse a pretrained encoder that has seen the sites a finetuning fold is scored on.

In the paper's PUB/PUR experiments the held-out basins are removed from pretraining as well;
otherwise the encoder has reconstructed their forcings and attributes and the "ungauged" score is
flattered. Pretraining records what it left out (``data.exclude`` in its config, saved in every
checkpoint), so the check is exact rather than a convention.
"""

from __future__ import annotations

from stefaland.errors import StefaLandError
from stefaland.run.pretrained import read_state


def pretraining_exclusion(url: str) -> dict | None:
    """The ``data.exclude`` block of the pretraining run behind a checkpoint (None if it excluded nothing)."""
    _, state = read_state(url)  # weights_only: a planted pickle is refused before this check can run it
    config = state.get("config")
    data = config.get("data") if isinstance(config, dict) else None
    return data.get("exclude") if isinstance(data, dict) else None


def refuse_leakage(pretrained: str, split: str, fold: int, allowed: bool) -> None:
    """Stop unless the encoder was pretrained without fold ``fold`` of ``split`` (or leakage is allowed)."""
    if allowed:
        return
    excluded = pretraining_exclusion(pretrained)
    if not excluded or excluded.get("split") != split or int(excluded.get("fold", -999)) != int(fold):
        seen = f"excluded {excluded['split']} fold {excluded['fold']}" if excluded else "excluded nothing"
        raise StefaLandError(
            f"{pretrained}: leakage — this encoder's pretraining {seen}, but it would score {split} fold {fold}; "
            f"pretrain with data.exclude {{split: {split}, fold: {fold}}} and point model.pretrained at it "
            "(e.g. runs/pretrain-{fold}), or set model.allow_pretraining_leakage: true if the pretraining "
            "store never held these sites"
        )
