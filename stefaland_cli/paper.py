"""``stefaland paper plan|run|status|render``: the paper's tables as one resumable plan."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("paper")
def paper() -> None:
    """Plan, run, follow and render the paper's Tables 1-4 and F1 beside the published numbers."""


@paper.command("plan")
@click.option("--tables", default="1,2,3,4,F1", show_default=True, help="Tables to plan: any of 1,2,3,4,F1.")
@click.option("--scale", type=click.Choice(["full", "small"]), default="full", show_default=True,
              help="full: the paper's runs on your stores; small: the virtual world and the real samples, on CPU.")
@click.option("--out", "out", default="paper-plan.yaml", show_default=True, help="Plan file to write (YAML).")
@click.option("--root", default=None,
              help="Where the runs write (a path relative to the plan, or s3://…) [default: <plan name>-outputs].")
@click.option("--force", is_flag=True, help="Replace an existing plan file.")
def plan_command(tables: str, scale: str, out: str, root: str | None, force: bool) -> None:
    """Write the experiment matrix (every run, its config, inputs and needs) and print it."""
    from stefaland.paper.listing import format_rows, plan_rows, summary
    from stefaland.paper.plan import make_plan, parse_tables, write_plan

    path = Path(out)
    plan = make_plan(parse_tables(tables), scale, path, root)
    write_plan(plan, path, force)
    click.echo(format_rows(plan_rows(plan)))
    click.echo(summary(plan))
    click.echo(f"plan written to {path}; run it with: stefaland paper run {path} --local")


@paper.command("run")
@click.argument("plan_file", metavar="PLAN")
@click.option("--local", "where", flag_value="local", default=True, help="Run each command here (default).")
@click.option("--k8s", "where", flag_value="k8s", help="Submit pretraining and finetuning as Kubernetes Jobs.")
@click.option("--max-parallel", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs at once (local processes, or Jobs in flight).")
@click.option("--runs", "patterns", default=None,
              help="Only the runs whose ids match these comma-separated globs (t1.*, *.pub.1), and what they need.")
@click.option("--retry-failed", is_flag=True, help="With --k8s: submit again runs whose Job failed.")
@click.option("--namespace", default=None, help="Kubernetes namespace (default: the plan's, else the context's).")
@click.option("--context", default=None, help="kubeconfig context (default: the current one).")
def run_command(plan_file: str, where: str, max_parallel: int, patterns: str | None, retry_failed: bool, namespace: str | None,
                context: str | None) -> None:
    """Run every unfinished run of PLAN in dependency order; finished runs are skipped."""
    from stefaland.paper.execute import LocalExecutor, execute, select
    from stefaland.paper.plan import read_plan

    plan = read_plan(plan_file)
    if where == "k8s":
        from stefaland.paper.kube import KubeExecutor

        executor: LocalExecutor = KubeExecutor(plan, click.echo, namespace, context, retry_failed)
    else:
        executor = LocalExecutor(plan, click.echo)
    only = select(plan, [p.strip() for p in patterns.split(",") if p.strip()]) if patterns else None
    outcome = execute(plan, executor, max_parallel, click.echo, only)
    click.echo(f"{len(outcome.finished)} finished now, {len(outcome.skipped)} already finished, "
               f"{len(outcome.failed)} failed, {len(outcome.blocked)} skipped (need a failed run), "
               f"{len(outcome.unavailable)} not available")
    if outcome.interrupted:
        raise SystemExit(130)
    if outcome.failed or outcome.blocked:
        raise SystemExit(1)


@paper.command("status")
@click.argument("plan_file", metavar="PLAN")
def status_command(plan_file: str) -> None:
    """Each run of PLAN: what it needs, its GPU hours and whether it is finished."""
    from stefaland.paper.listing import format_rows, plan_rows, summary
    from stefaland.paper.plan import read_plan
    from stefaland.paper.state import read_failures

    plan = read_plan(plan_file)
    click.echo(format_rows(plan_rows(plan)))
    click.echo(summary(plan))
    for run_id, failure in read_failures(plan).items():
        if run_id in plan.runs:
            click.echo(f"failed {run_id}: {failure.get('reason')}; last lines of {failure.get('log')}:")
            for line in failure.get("tail", []):
                click.echo(f"  | {line}")


@paper.command("render")
@click.argument("plan_file", metavar="PLAN")
@click.option("--out", default=None, help="Folder for the tables [default: <plan root>/tables].")
def render_command(plan_file: str, out: str | None) -> None:
    """Each table as the paper prints it: paper value, ours, difference (Markdown, CSV, a figure each)."""
    from stefaland import fileio
    from stefaland.paper.plan import read_plan
    from stefaland.paper.render import render

    plan = read_plan(plan_file)
    document, written = render(plan, out or fileio.join(plan.root_url, "tables"))
    click.echo(document)
    for url in written:
        click.echo(url)
