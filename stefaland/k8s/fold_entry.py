"""Container entry point of an Indexed finetuning Job: completion index -> fold id -> exec.

Kubernetes gives each pod of an Indexed Job only its index (``JOB_COMPLETION_INDEX``); fold ids
are whatever the split uses (MHPI's PUB folds are 1..10). The Job lists its folds in
``STEFALAND_FOLDS``; this picks the one for this pod, puts it wherever the command says
``{fold}`` and replaces itself with the command, so signals and the exit status are the trainer's.

Usage: ``python -m stefaland.k8s.fold_entry COMMAND ARG... (with {fold} placeholders)``
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

# Only the standard library here: this runs at every pod start, before the trainer.
FOLD_PLACEHOLDER = "{fold}"
FOLDS_ENV = "STEFALAND_FOLDS"


def fold_command(argv: list[str], env: Mapping[str, str]) -> list[str]:
    """The command for this pod's fold; raises ``ValueError`` with a one-line reason."""
    if not argv:
        raise ValueError("no command given")
    folds = [f for f in env.get(FOLDS_ENV, "").split(",") if f]
    index_text = env.get("JOB_COMPLETION_INDEX", "")
    if not folds:
        raise ValueError(f"{FOLDS_ENV} is empty; expected a comma-separated list of fold ids")
    if not index_text.isdigit() or int(index_text) >= len(folds):
        raise ValueError(
            f"JOB_COMPLETION_INDEX={index_text!r} does not index {FOLDS_ENV}={','.join(folds)}"
        )
    fold = folds[int(index_text)]
    return [arg.replace(FOLD_PLACEHOLDER, fold) for arg in argv]


def main() -> None:
    try:
        command = fold_command(sys.argv[1:], os.environ)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.stdout.flush()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
