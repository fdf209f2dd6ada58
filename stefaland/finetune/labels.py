"""The ``fold`` label a predictions file carries, in the report's vocabulary.

The report numbers folds from 1 as MHPI and the paper do (CAMELS PUB 1..10, PUR 1..7, continents
1..3). Split files written with 0-based ids (0..K-1) are shifted by one; run folders keep the
store's or split file's own id (``fold-0``), so nobody's data has to be renumbered.
"""

from __future__ import annotations

import logging

log = logging.getLogger("stefaland.finetune")


def fold_label(task: str, split: str, fold: int, fold_ids: list[int]) -> str:
    from stefaland.report.tasks import TASKS

    scheme = TASKS[task].schemes.get(split) if task in TASKS else None
    if scheme is None:
        return str(fold)
    labels = list(scheme.folds)
    if sorted(fold_ids) == list(range(len(labels))) and labels == [str(k + 1) for k in range(len(labels))]:
        return str(fold + 1)  # 0-based ids, 1-based report folds
    if str(fold) not in labels:
        log.warning("fold %d is not one of the report's folds for %s/%s (%s)", fold, task, split, ", ".join(labels))
    return str(fold)
