"""Training choices that depend on what is predicted, made for a config that leaves them unset.

Why per target: one loss does not suit every target. Streamflow spans orders of magnitude between
basins, so a plain RMSE is dominated by the few wettest, flashiest basins and the rest are barely
fitted; neuralhydrology's NSE* (each basin's squared errors over (its training std + 0.1)^2) weighs
every basin alike, and on the 19 real CAMELS basins it lifts median test NSE at equal updates
(benchmarks/README.md, "Skill by default"). Soil moisture and soil texture vary little between
sites on their own scale, so RMSE is what the paper trains them with and what they report.

A config that names ``train.loss`` keeps it; ``run.json`` records which choices were made here.
"""

from __future__ import annotations

#: The loss for a target variable the config did not give one for.
LOSS_BY_TARGET: dict[str, str] = {"streamflow": "nse"}
DEFAULT_LOSS = "rmse"


def default_loss(target: str) -> str:
    """The loss a config without ``train.loss`` trains ``target`` with."""
    return LOSS_BY_TARGET.get(target, DEFAULT_LOSS)
