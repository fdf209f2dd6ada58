"""Run a plan: each run once its needs are finished, several at a time, resumable.

A run that is already finished (:mod:`stefaland.paper.state`) is skipped, never run again. A run
that fails is reported with the last lines of its log and what needs it is skipped; the others go
on. Ctrl-C stops the running commands (SIGTERM to each one's process group, then SIGKILL) and
returns; what they left half-written has no run record or manifest and so is run again next
time. Local runs are ``stefaland`` commands in subprocesses, each with its own log beside the
plan (``<plan>.state/logs/<run>.log``); :mod:`stefaland.paper.kube` sends pretraining and
finetuning to Kubernetes instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from stefaland import fileio

from .plan import Plan, Run, order
from .state import FINISHED, UNAVAILABLE, failure, finished, log_tail, read_failures, statuses, write_failures

Echo = Callable[[str], None]
STOP_GRACE_S = 15.0


@dataclass
class Outcome:
    """What one ``paper run`` did."""

    skipped: list[str] = field(default_factory=list)  # finished before it started
    finished: list[str] = field(default_factory=list)
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)
    blocked: list[str] = field(default_factory=list)  # needs a run that failed or cannot run
    unavailable: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted and not self.blocked


@dataclass
class Handle:
    run: Run
    started: float
    process: subprocess.Popen | None = None
    log: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


class LocalExecutor:
    """Each run as a ``stefaland`` subprocess with the plan's environment; its log beside the plan."""

    retry_failed = True  # a local failure is run again next time (it has no budget of retries)
    poll_interval = 0.2

    def __init__(self, plan: Plan, echo: Echo) -> None:
        self.plan = plan
        self.echo = echo

    def prepare(self, run: Run) -> None:
        """The run's config written whole, and the local folder its output goes in."""
        if run.config:
            path = self.plan.config_path(run)
            path.parent.mkdir(parents=True, exist_ok=True)
            fileio.write_bytes_atomic(str(path), self.plan.config_text(run).encode())
        output = self.plan.resolve(run.output)
        if not fileio.is_remote(output):
            Path(output).parent.mkdir(parents=True, exist_ok=True)

    def start(self, run: Run) -> Handle:
        self.prepare(run)
        log_path = self.plan.log_path(run)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = self.plan.argv(run)
        log = log_path.open("a")
        log.write(f"\n== {datetime.now().isoformat(timespec='seconds')} stefaland {' '.join(argv)}\n")
        log.flush()
        env = {**os.environ, **{k: self.plan.resolve(str(v)) for k, v in self.plan.env.items()}}
        process = subprocess.Popen([sys.executable, "-m", "stefaland_cli.main", *argv], stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                   start_new_session=True)  # Ctrl-C reaches us; we stop the children
        return Handle(run, time.monotonic(), process, log)

    def poll(self, handle: Handle) -> tuple[bool, str | None]:
        """(done, why it failed or None)."""
        assert handle.process is not None
        code = handle.process.poll()
        if code is None:
            return False, None
        handle.log.close()
        if code != 0:
            return True, f"exit status {code}"
        if not finished(self.plan, handle.run):
            return True, f"exited 0 but left no finished output at {self.plan.resolve(handle.run.output)}"
        return True, None

    def poll_ready(self, handle: Handle) -> bool:
        """Whether polling now may find ``handle`` done (a subprocess: when it has exited)."""
        return handle.process is not None and handle.process.poll() is not None

    def tail(self, handle: Handle) -> list[str]:
        return log_tail(self.plan.log_path(handle.run))

    def stop(self, handles: list[Handle]) -> None:
        """SIGTERM to each running command's process group, SIGKILL to those still there after a grace."""
        live = [h for h in handles if h.process is not None and h.process.poll() is None]
        for handle in live:
            assert handle.process is not None
            _signal_group(handle.process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for handle in live:
            assert handle.process is not None
            try:
                handle.process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                _signal_group(handle.process, signal.SIGKILL)
                handle.process.wait()
            if handle.log:
                handle.log.close()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def select(plan: Plan, patterns: list[str]) -> set[str]:
    """The runs whose ids match any of ``patterns`` (shell globs) and every run they need."""
    from fnmatch import fnmatchcase

    from stefaland.errors import StefaLandError

    chosen = {r for r in plan.runs if any(fnmatchcase(r, p) for p in patterns)}
    if not chosen:
        raise StefaLandError(f"--runs {','.join(patterns)}: no run of the plan matches (ids like t1.lstm-sl.pub.1)")
    stack = list(chosen)
    while stack:
        for need in plan.runs[stack.pop()].needs:
            if need not in chosen:
                chosen.add(need)
                stack.append(need)
    return chosen


def execute(plan: Plan, executor: LocalExecutor, max_parallel: int = 1, echo: Echo = print,
            only: set[str] | None = None) -> Outcome:
    """Every run of ``plan`` (or of ``only``) not yet finished, in dependency order, ``max_parallel`` at once."""
    outcome = Outcome()
    state = statuses(plan)
    failures = read_failures(plan)
    ids = [r for r in order(plan.runs) if only is None or r in only]
    done = {r for r, s in state.items() if s == FINISHED}
    outcome.skipped = [r for r in ids if r in done]
    outcome.unavailable = [r for r in ids if state[r] == UNAVAILABLE]
    todo = [r for r in ids if r not in done and state[r] != UNAVAILABLE]
    if not executor.retry_failed:
        for run_id in [r for r in todo if r in failures]:
            outcome.failed[run_id] = failures[run_id]
    not_here = {r for r, s in state.items() if s == UNAVAILABLE}
    bad = set(outcome.failed) | not_here
    echo(f"{len(ids)} runs: {len(outcome.skipped)} finished already (skipped), {len(outcome.unavailable)} not "
         f"available here, {len(todo)} to run, {max_parallel} at a time")
    running: dict[str, Handle] = {}
    waiting = [r for r in todo if r not in outcome.failed]
    try:
        while waiting or running:
            progressed = False
            for run_id in list(waiting):
                needs = plan.runs[run_id].needs
                if any(n in bad for n in needs):
                    waiting.remove(run_id)
                    bad.add(run_id)
                    if all(n in not_here for n in needs if n in bad):  # needs what cannot run here: not a failure
                        not_here.add(run_id)
                        outcome.unavailable.append(run_id)
                    else:
                        outcome.blocked.append(run_id)
                    progressed = True
                    continue
                if len(running) < max_parallel and all(n in done for n in needs):
                    waiting.remove(run_id)
                    echo(f"start   {run_id} ({plan.runs[run_id].kind})")
                    running[run_id] = executor.start(plan.runs[run_id])
                    progressed = True
            for run_id, handle in list(running.items()):
                complete, why = executor.poll(handle)
                if not complete:
                    continue
                progressed = True
                del running[run_id]
                seconds = time.monotonic() - handle.started
                if why is None:
                    done.add(run_id)
                    outcome.finished.append(run_id)
                    failures.pop(run_id, None)
                    echo(f"done    {run_id} ({seconds:.0f} s)")
                else:
                    tail = executor.tail(handle)
                    failures[run_id] = outcome.failed[run_id] = failure(why, tail, str(plan.log_path(handle.run)))
                    bad.add(run_id)
                    echo(f"FAILED  {run_id}: {why} ({seconds:.0f} s); last lines of {plan.log_path(handle.run)}:")
                    for line in tail:
                        echo(f"        | {line}")
                write_failures(plan, failures)
            if not running and not progressed:
                outcome.blocked += waiting  # their needs are outside the runs asked for
                break
            if running and not progressed and not any(executor.poll_ready(h) for h in running.values()):
                time.sleep(executor.poll_interval)
    except KeyboardInterrupt:
        outcome.interrupted = list(running)
        echo(f"interrupted: stopping {len(running)} running run(s) ({', '.join(running) or 'none'}); nothing they "
             "wrote counts as finished; `stefaland paper run` again resumes")
        executor.stop(list(running.values()))
    return outcome
