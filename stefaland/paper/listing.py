"""The plan as a table a person reads: run, what it needs, GPU hours, status."""

from __future__ import annotations

from collections import Counter

from .plan import Plan
from .state import BLOCKED, UNAVAILABLE, read_failures, statuses


def plan_rows(plan: Plan) -> list[list[str]]:
    """``[run, needs, GPU h, status]`` per run, in dependency order, header first."""
    from .plan import order

    state = statuses(plan)
    failures = read_failures(plan)
    rows = [["RUN", "NEEDS", "GPU h", "STATUS"]]
    for run_id in order(plan.runs):
        run = plan.runs[run_id]
        status = state[run_id]
        if status == UNAVAILABLE:
            status = f"not available: {run.unavailable}"
        elif status == "failed":
            status = f"failed: {failures.get(run_id, {}).get('reason', '')}"
        elif status == BLOCKED:
            status = "blocked (needs a run that failed or is not available)"
        needs = ", ".join(run.needs[:2]) + (f" +{len(run.needs) - 2}" if len(run.needs) > 2 else "")
        rows.append([run_id, needs or "-", f"{run.gpu_hours:.1f}" if run.gpu_hours else "-", status])
    return rows


def format_rows(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(row, widths)), row[-1]]).rstrip() for row in rows)


def summary(plan: Plan) -> str:
    """One paragraph: runs by kind and status, the GPU hours of what is left and of the whole plan."""
    state = statuses(plan)
    kinds = Counter(run.kind for run in plan.runs.values())
    counts = Counter(state.values())
    total = sum(run.gpu_hours for run in plan.runs.values() if not run.unavailable)
    left = sum(run.gpu_hours for run_id, run in plan.runs.items() if state[run_id] not in ("finished", UNAVAILABLE))
    text = (f"{len(plan.runs)} runs ({', '.join(f'{n} {k}' for k, n in kinds.items())}); "
            f"{', '.join(f'{n} {s}' for s, n in counts.items())}")
    if total:
        text += (f"\nGPU hours: {total:,.0f} in all, {left:,.0f} left; rates: {plan.cost.get('source', '?')}")
    else:
        text += "\nGPU hours: none (every run is sized for CPU)" if plan.scale == "small" else ""
    return text
