"""Assertions shared by the tests of what a command refuses: nothing of the user's changed, one line said."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without AWS or Kubernetes settings (and no way to find any), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KUBECONFIG"))}
    env.update(OMP_NUM_THREADS="1", AWS_EC2_METADATA_DISABLED="true",
               AWS_SHARED_CREDENTIALS_FILE="/nonexistent/credentials", AWS_CONFIG_FILE="/nonexistent/config")
    env.update(extra)
    return env


def cli_subprocess(*args: str, env: dict[str, str] | None = None, timeout: float = 180,
                   preexec_fn: Callable[[], object] | None = None) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess: what a user's terminal shows, traceback included."""
    return subprocess.run([sys.executable, "-m", "stefaland_cli.main", *args], capture_output=True, text=True,
                          env=env or clean_env(), timeout=timeout, cwd=REPO, preexec_fn=preexec_fn)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (or ``root`` itself) with its bytes, to compare before and after."""
    if root.is_file():
        return {"": root.read_bytes()}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def one_line_error(result, *needles: str) -> str:
    """A CLI result that failed with exactly one ``error:`` line mentioning every needle; that line."""
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("error: "), result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output
    return result.output.strip()
