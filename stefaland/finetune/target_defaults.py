"""Training choices that depend on what is predicted, made for a config that leaves them unset.

Why per target: one loss does not suit every target. Streamflow spans orders of magnitude between
basins, so a plain RMSE is dominated by the few wettest, flashiest basins and the rest are barely
fitted; neuralhydrology's NSE* (each basin's squared errors over (its training std + 0.1)^2) weighs
every basin alike, and on the 19 real CAMELS basins it lifts median test NSE at equal updates
(benchmarks/README.md, "Skill by default"). Soil moisture and soil texture vary little between
sites on their own scale, so RMSE is what the paper trains them with and what they report.

The optimiser follows the same split. On the real basins Adam (1e-3) ends a long budget at a higher
median NSE than Adadelta (lr 1.0, the paper's Table C2 choice): +0.018 at 4,032 updates, 3 seeds each;
it ties at 2,000 and trails at 600, budgets far below what a user trains for (benchmarks/README.md,
"Converged against converged"); soil moisture keeps Adadelta, with which its
defaults were measured against hydroDL (which uses it too).

A config that names ``train.loss`` or ``train.optimizer`` keeps it; ``run.json`` records which choices
were made here.
"""

from __future__ import annotations

#: Training choices, by target variable, for a config that leaves them unset.
BY_TARGET: dict[str, dict[str, str]] = {"streamflow": {"loss": "nse", "optimizer": "adam"}}
#: The same choices for every other target.
FALLBACK: dict[str, str] = {"loss": "rmse", "optimizer": "adadelta"}


def target_default(target: str, setting: str) -> str:
    """The value of ``train.<setting>`` a config without it trains ``target`` with."""
    return BY_TARGET.get(target, {}).get(setting, FALLBACK[setting])
