"""The paper's tables with our numbers beside the paper's: Markdown, CSV and one figure per table.

Each cell shows the paper's value, ours and the difference (ours − paper), with the rows and
metrics in the paper's order. Ours come from the summary CSV each row's report run wrote; a row
whose report is not there (the model is not available here, a run failed or has not run) is
shown as missing with the reason, never dropped. Rows a user added to the plan follow the
paper's rows, with no paper value.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import pandas as pd

from stefaland import fileio
from stefaland.metrics import get_metric
from stefaland.outputs import claim_output
from stefaland.report.tables import escape_markdown

from .matrix import TABLES
from .plan import Plan, Run, Table
from .published import PublishedTable, published_table, table_keys
from .state import FAILED, FINISHED, UNAVAILABLE, read_failures, statuses

DEFAULT_METRICS = {"camels": ("RMSE", "ubRMSE", "Corr", "NSE"), "global": ("RMSE", "ubRMSE", "Corr"),
                   "ismn": ("RMSE", "ubRMSE", "Corr"), "wosis": ("Corr", "R2")}


@dataclass
class Cell:
    table: str
    row: str
    group: str
    scheme: str
    metric: str
    paper: float | None
    ours: float | None
    status: str  # "ok" or why ours is missing
    folds: str = ""  # the folds our value is over (the report run's --folds)

    @property
    def difference(self) -> float | None:
        return None if self.paper is None or self.ours is None else self.ours - self.paper


def _report_runs(plan: Plan, table: Table) -> dict[tuple[str, str], Run]:
    """``{(row, scheme): report run}`` of one table, as the plan (edited or not) has them."""
    found = {}
    for run in plan.runs.values():
        if run.kind == "report" and run.table == table.table and run.row is not None:
            scheme = run.args[run.args.index("--split") + 1] if "--split" in run.args else ""
            found[(run.row, scheme)] = run
    return found


def _why_missing(run: Run | None, state: dict[str, str], failures: dict, plan: Plan) -> str:
    if run is None:
        return "missing: not in the plan"
    status = state.get(run.id)
    if status == UNAVAILABLE:
        return f"missing: not available: {run.unavailable}"
    failed = [r for r in [run.id, *_upstream(plan, run.id)] if state.get(r) == FAILED]
    if failed:
        return f"missing: run {failed[0]} failed ({failures.get(failed[0], {}).get('reason', '')})"
    blocked = [r for r in _upstream(plan, run.id) if state.get(r) == UNAVAILABLE]
    if blocked:
        return f"missing: not available: {plan.runs[blocked[0]].unavailable}"
    return "missing: not run yet"


def _upstream(plan: Plan, run_id: str) -> list[str]:
    seen: list[str] = []
    stack = list(plan.runs[run_id].needs)
    while stack:
        need = stack.pop()
        if need not in seen:
            seen.append(need)
            stack.extend(plan.runs[need].needs)
    return seen


def _ours(plan: Plan, run: Run, metrics: tuple[str, ...], scheme: str) -> dict[str, float]:
    url = plan.resolve(run.output)
    frame = pd.read_csv(io.BytesIO(fileio.read_bytes(url)))
    frame = frame[frame["split"].astype(str) == scheme]
    values = {}
    for metric in metrics:
        hit = frame[frame["metric"] == metric]["value"]
        if len(hit) and not pd.isna(hit.iloc[0]):
            values[metric] = float(hit.iloc[0])
    return values


def cells(plan: Plan, table: Table) -> tuple[list[Cell], list[str], tuple[str, ...], PublishedTable | None]:
    """Every cell of ``table`` in the paper's order; returns (cells, rows, metrics, the paper's table)."""
    paper = published_table(table.table) if table.table in table_keys() else None
    metrics = paper.metrics if paper else DEFAULT_METRICS.get(table.task, ("RMSE", "Corr"))
    planned = [row.row for row in table.rows]
    rows = (paper.row_names() if paper else []) + [r for r in planned if not paper or r not in paper.row_names()]
    groups = list(paper.groups) if paper else list(table.groups)
    reports = _report_runs(plan, table)
    state = statuses(plan)
    failures = read_failures(plan)
    found: list[Cell] = []
    for name in rows:
        row = next((r for r in table.rows if r.row == name), None)
        row_groups = (row.groups if row and row.groups else None) or table.groups
        spec_groups = next((r.groups for r in TABLES[table.table].rows if r.row == name and r.groups), None) \
            if table.table in TABLES else None
        row_groups = row_groups if row is not None else (spec_groups or table.groups)
        for group in groups:
            scheme = row_groups.get(group, "")
            run = reports.get((name, scheme)) if row is not None else None
            folds = run.args[run.args.index("--folds") + 1] if run is not None and "--folds" in run.args else ""
            ours: dict[str, float] = {}
            status = "ok"
            if run is not None and state.get(run.id) == FINISHED:
                ours = _ours(plan, run, metrics, scheme)
            else:
                status = _why_missing(run, state, failures, plan)
            for metric in metrics:
                value = paper.value(name, group, metric) if paper else None
                cell_status = status if status != "ok" or metric in ours else "missing: no value in the report"
                found.append(Cell(table.table, name, group, scheme, metric, value, ours.get(metric), cell_status,
                                  folds))
    return found, rows, metrics, paper


def _number(metric: str, value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.{get_metric(metric).decimals}f}" if get_metric(metric).decimals is not None else f"{value:.3f}"


def markdown(plan: Plan, table: Table) -> str:
    """The table as the paper prints it, each cell ``paper / ours (difference)``."""
    found, rows, metrics, paper = cells(plan, table)
    groups = list(dict.fromkeys(c.group for c in found)) or list(table.groups)
    title = f"Table {table.table}: {paper.title}" if paper else f"Table {table.table}"
    heads = []
    for group in groups:
        for metric in metrics:
            m = get_metric(metric)
            heads.append(f"{group} {m.heading} {m.arrow}")
    lines = [f"### {title}", "",
             "Each cell: paper / ours (ours − paper). Column groups: "
             + "; ".join(f"{g} = {(paper.groups.get(g) if paper else g)} ({_schemes(found, g)})" for g in groups), "",
             "| Model | " + " | ".join(heads) + " | ours from |",
             "| --- | " + " | ".join(["---:"] * len(heads)) + " | --- |"]
    for name in rows:
        row_cells = [c for c in found if c.row == name]
        texts = []
        for group in groups:
            for metric in metrics:
                cell = next(c for c in row_cells if c.group == group and c.metric == metric)
                diff = cell.difference
                ours = _number(metric, cell.ours)
                texts.append(f"{_number(metric, cell.paper)} / {ours}" + (f" ({diff:+.3f})" if diff is not None else ""))
        by_group = {g: next(c.status for c in row_cells if c.group == g) for g in groups}
        reasons = list(dict.fromkeys(s for s in by_group.values() if s != "ok"))
        if not reasons:
            source = "our runs"
        elif len(reasons) == 1 and all(s != "ok" for s in by_group.values()):
            source = reasons[0]
        else:
            source = "; ".join(f"{g}: {s}" for g, s in by_group.items() if s != "ok")
        lines.append(f"| {escape_markdown(name)} | " + " | ".join(texts) + f" | {escape_markdown(source)} |")
    return "\n".join(lines) + "\n"


def _schemes(found: list[Cell], group: str) -> str:
    """The schemes of a column group with the folds we ran (``pub`` folds 1,2)."""
    schemes = dict.fromkeys((c.scheme, c.folds) for c in found if c.group == group and c.scheme)
    return ", ".join(f"{s} folds {f}" if f else s for s, f in schemes) or "—"


def csv_text(plan: Plan, table: Table) -> str:
    found, _, _, _ = cells(plan, table)
    frame = pd.DataFrame([{"table": c.table, "row": c.row, "group": c.group, "scheme": c.scheme, "metric": c.metric,
                           "paper": c.paper, "ours": c.ours, "difference": c.difference, "status": c.status}
                          for c in found])
    return frame.to_csv(index=False)


def figure_png(plan: Plan, table: Table) -> bytes:
    """Ours against the paper's, one panel per metric, a point per (row, column group); the line is equality."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    found, _, metrics, paper = cells(plan, table)
    figure = Figure(figsize=(3.2 * len(metrics), 3.4), layout="constrained")
    FigureCanvasAgg(figure)
    markers = {"random": "o", "regional": "s"}
    for index, metric in enumerate(metrics):
        axes = figure.add_subplot(1, len(metrics), index + 1)
        both = [(c, c.paper, c.ours) for c in found if c.metric == metric and c.paper is not None and c.ours is not None]
        for cell, paper_value, ours in both:
            axes.scatter(paper_value, ours, marker=markers.get(cell.group, "^"), s=22)
            axes.annotate(cell.row, (paper_value, ours), fontsize=5, alpha=0.7)
        values = [v for _, p, o in both for v in (p, o) if v is not None]
        if values:
            low, high = min(values), max(values)
            pad = 0.05 * (high - low or 1.0)
            axes.plot([low - pad, high + pad], [low - pad, high + pad], color="grey", lw=0.8)
        missing = sum(1 for c in found if c.metric == metric and c.ours is None)
        m = get_metric(metric)
        axes.set_title(f"{m.heading} {m.arrow}" + (f" ({missing} missing)" if missing else ""), fontsize=9)
        axes.set_xlabel("paper", fontsize=8)
        axes.set_ylabel("ours", fontsize=8)
        axes.tick_params(labelsize=7)
    figure.suptitle(f"Table {table.table}: ours vs the paper" + (" (o random, s regional)" if paper else ""),
                    fontsize=9)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


TABLES_KIND = "paper-tables"


def render(plan: Plan, out: str) -> tuple[str, list[str]]:
    """Write ``table-<key>.md/.csv/.png`` per table and ``paper_tables.md`` into ``out``; return (markdown, files).

    ``out`` is claimed first: rendering again replaces an earlier rendering (more runs may have
    finished since), never a folder of other files.
    """
    with claim_output(out, TABLES_KIND, resumable=True) as claim:
        claim.mark(plan=str(plan.path or ""), scale=plan.scale)
        return _render_into(plan, out)


def _render_into(plan: Plan, out: str) -> tuple[str, list[str]]:
    written = []
    parts = [f"# The paper's tables, paper vs ours ({plan.scale} scale)", ""]
    parts += [f"> {note}" for note in plan.notes] + ([""] if plan.notes else [])
    for table in plan.tables:
        text = markdown(plan, table)
        parts.append(text)
        for name, data in ((f"table-{table.table}.md", text.encode()),
                           (f"table-{table.table}.csv", csv_text(plan, table).encode()),
                           (f"table-{table.table}.png", figure_png(plan, table))):
            url = fileio.join(out, name)
            fileio.write_bytes_atomic(url, data)
            written.append(url)
    document = "\n".join(parts)
    url = fileio.join(out, "paper_tables.md")
    fileio.write_bytes_atomic(url, document.encode())
    written.append(url)
    return document, written
