"""The holdout schemes StefaLand knows, one entry per (task, scheme).

``stefaland splits make`` runs an entry's rule, finetuning and pretraining plan its folds
(:class:`~stefaland.splits.plan.Holdout`), and the report takes its column titles and the folds it
expects from here, so a scheme is added in one place: :func:`register_holdout`, or for the
``stefaland`` command an installed package's ``stefaland.holdouts`` entry point naming a
:class:`~stefaland.splits.plan.Holdout` (docs/EXTENDING.md, "Adding a holdout scheme"). A task's
schemes are listed in registration order, which is the order of the report's column groups.
"""

from __future__ import annotations

import logging

import pandas as pd

from stefaland.errors import StefaLandError
from stefaland.plugins import load_entry_points_once

from .continents import CONTINENTS
from .plan import TEMPORAL, Holdout, Rule, TemporalHoldout
from .schemes import FIRST_FOLD, PUB_FOLDS, PUR_REGIONS, Assignment, camels_pub, camels_pur, continent_scheme, random_scheme

log = logging.getLogger("stefaland.splits")

ENTRY_POINT_GROUP = "stefaland.holdouts"
HOLDOUTS: dict[tuple[str, str], Holdout] = {}


def register_holdout(holdout: Holdout) -> Holdout:
    """Add ``holdout`` to the registry under ``(holdout.task, holdout.name)``.

    Parameters
    ----------
    holdout : Holdout
        The scheme; registering an equal one again is harmless.

    Returns
    -------
    Holdout
        ``holdout``, so a module can register and keep it in one line.

    Raises
    ------
    ValueError
        When a different scheme is registered under the same task and name: a plug-in never
        silently replaces a built-in scheme.
    """
    key = (holdout.task, holdout.name)
    existing = HOLDOUTS.get(key)
    if existing is not None and existing != holdout:
        raise ValueError(f"holdout scheme {holdout.task}/{holdout.name} is already registered ({existing.title})")
    HOLDOUTS[key] = holdout
    return holdout


def known_holdouts() -> dict[tuple[str, str], Holdout]:
    """The registry, with the schemes of installed plug-ins (loaded once, on first use).

    Returns
    -------
    dict
        ``{(task, name): Holdout}`` in registration order.
    """
    load_entry_points_once(ENTRY_POINT_GROUP, Holdout, lambda _name, holdout: register_holdout(holdout), "holdout",
                           log)
    return HOLDOUTS


def holdouts_of(task: str) -> list[Holdout]:
    """The schemes of ``task``, in the report's column order.

    Parameters
    ----------
    task : str

    Returns
    -------
    list of Holdout
        Empty for a task with no registered scheme.
    """
    return [h for (t, _), h in known_holdouts().items() if t == task]


def get_holdout(task: str, name: str) -> Holdout:
    """The registered scheme ``name`` of ``task``; one line listing the task's schemes when there is none.

    Parameters
    ----------
    task, name : str

    Returns
    -------
    Holdout
    """
    holdout = known_holdouts().get((task, name))
    if holdout is None:
        known = ", ".join(h.name for h in holdouts_of(task)) or "none"
        raise StefaLandError(f"task {task!r} has no split {name!r}; known: {known}, all")
    return holdout


def holdout_for(task: str, name: str) -> Holdout:
    """The scheme a run of ``task`` with ``--split name`` holds out by.

    A registered scheme, else one that the store's ``fold_<name>`` coordinate or a split file
    defines (its folds are whatever they hold), or, for ``temporal``, the temporal holdout of a
    task that does not register one.

    Parameters
    ----------
    task, name : str

    Returns
    -------
    Holdout
    """
    holdout = known_holdouts().get((task, name))
    if holdout is not None:
        return holdout
    if name == TEMPORAL:
        return TemporalHoldout(task)
    return Holdout(task, name, title=name)


def splittable() -> dict[str, list[str]]:
    """``{task: [scheme, ...]}`` for the schemes ``splits make`` can draw (those with a rule)."""
    tasks: dict[str, list[str]] = {}
    for (task, name), holdout in known_holdouts().items():
        if holdout.rule is not None:
            tasks.setdefault(task, []).append(name)
    return tasks


def assign(table: pd.DataFrame, task: str, scheme: str, seed: int, folds: int | None = None) -> Assignment:
    """Run the rule of ``scheme`` of ``task`` on a site table indexed by site id."""
    tasks = splittable()
    if task not in tasks:
        raise StefaLandError(f"unknown split task {task!r}; known: {', '.join(tasks)}")
    if scheme not in tasks[task]:
        raise StefaLandError(f"unknown scheme {scheme!r} for task {task}; known: {', '.join(tasks[task])}")
    rule = known_holdouts()[(task, scheme)].rule
    assert rule is not None  # splittable() lists only schemes with a rule
    return rule(table, seed, folds)


def _spatial(task: str, name: str, title: str, n_folds: int, rule: Rule) -> Holdout:
    return Holdout(task, name, title, tuple(range(FIRST_FOLD, FIRST_FOLD + n_folds)), rule)


def _random(task: str, n_folds: int, title: str) -> Holdout:
    return _spatial(task, "random", title, n_folds, random_scheme(n_folds, "random_"))


BUILT_IN: tuple[Holdout, ...] = (
    _spatial("camels", "pub", "Random holdout (ungauged basins, PUB)", PUB_FOLDS, camels_pub),
    _spatial("camels", "pur", "Regional holdout (ungauged regions, PUR)", len(PUR_REGIONS), camels_pur),
    TemporalHoldout("camels"),
    _random("global", 3, "Random holdout (ungauged basins)"),
    _spatial("global", "continents",
             "Regional holdout (ungauged continents: "
             + ", ".join(f"{k} {c}" for k, c in enumerate(CONTINENTS, start=FIRST_FOLD)) + ")",
             len(CONTINENTS), continent_scheme(CONTINENTS)),
    TemporalHoldout("global"),
    _random("ismn", 5, "Random location holdout (random sites)"),
    _spatial("ismn", "europe", "Regional holdout (Europe)", 1, continent_scheme(("europe",))),
    TemporalHoldout("ismn"),
    _random("smap", 5, "Random location holdout (random cells)"),
    TemporalHoldout("smap"),
    _random("wosis", 5, "Random holdout (soil profiles)"),
)

for _holdout in BUILT_IN:
    register_holdout(_holdout)
