"""GPU hours of a run, from measured seconds per epoch.

The rates are those measured for these models on GPUs: the paper's Table C8 (seconds per epoch
on NVIDIA V100s, ``published.yaml`` ``compute``), the figures ``benchmarks/gpu_suite.py`` compares
its own measurements with. No GPU figure of StefaLand's own is recorded in ``benchmarks/`` yet
(benchmarks/README.md, "GPU suite"); a plan's ``cost.rates`` can be edited to measured ones, and
the plan's estimates follow. Table C8 gives CAMELS rates; the paper says the relative cost is the
same in its other experiments, so the same rates are used for every task.
"""

from __future__ import annotations

from typing import Any

from .published import compute_rates

SOURCE = ("paper Table C8 (seconds per epoch on NVIDIA V100, CAMELS; published.yaml 'compute'); "
          "benchmarks/gpu_suite.py has recorded no StefaLand GPU rate yet (benchmarks/README.md, 'GPU suite')")
#: Models Table C8 does not time, costed like the model of the same size it does time.
STAND_INS = {"stefaland_transformer": "stefaland_resconn", "ablation_resconn": "stefaland_resconn",
             "ablation_resconn_hbv": "stefaland_resconn_hbv", "terramind_resconn": "stefaland_resconn",
             "prithviwxc_resconn": "stefaland_resconn"}
CPU_ONLY = ("linear", "random_forest")  # scikit-learn baselines: no GPU


def default_rates() -> dict[str, Any]:
    """The plan's ``cost`` section: where the rates come from and the rates themselves."""
    rates = {name: {"seconds_per_epoch": s, "gpus": g} for name, (s, g) in compute_rates().items()}
    return {"source": SOURCE, "stand_ins": dict(STAND_INS), "rates": rates}


def gpu_hours(cost: dict[str, Any], kind: str, model: str | None, epochs: int | None) -> float:
    """Estimated GPU hours of one run: seconds per epoch × epochs × GPUs (0 for CPU-only runs)."""
    if kind not in ("pretrain", "finetune") or not epochs or model in CPU_ONLY:
        return 0.0
    rates = cost.get("rates") or {}
    name = "pretrain" if kind == "pretrain" else (model or "")
    name = name if name in rates else (cost.get("stand_ins") or {}).get(name, "stefaland_resconn")
    rate = rates.get(name)
    if not rate:
        return 0.0
    return float(rate["seconds_per_epoch"]) * int(epochs) * int(rate["gpus"]) / 3600.0
