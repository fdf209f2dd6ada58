"""Holdouts as plans: which sites train and which are tested, over which periods, fold by fold.

A :class:`Holdout` is one scheme of one task (CAMELS PUB, CAMELS PUR, the temporal holdout, ...);
:mod:`stefaland.splits.registry` lists them. Applied to a store (its ``fold_<scheme>`` coordinate or
a split file from ``stefaland splits make``) and a run's periods, a holdout gives one :class:`Fold`
per fold asked for: the whole division a trainer needs, so no stage works out for itself who is
held out, what the fold is called or where it is written. The kind of a holdout is stated, not
inferred from its name:

* **spatial** (:class:`Holdout`): the sites of fold ``k`` are tested and every other site of the
  scheme trains, both over the run's own periods; as many folds as the scheme has;
* **temporal** (:class:`TemporalHoldout`): every site trains on the training period and is tested
  on the test period, which must not overlap it; one fold.

Every command reads a fold spec (``--fold``/``--folds``: ``all``, ``3``, ``1,2``, ``1-5``) with
:func:`parse_fold_spec`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pandas as pd
import xarray as xr

from stefaland import fileio
from stefaland.errors import StefaLandError
from stefaland.run import layout
from stefaland.run.folds import NOT_IN_SPLIT, coordinate_folds, fold_ids, folds_of_sites, known_splits, store_sites

if TYPE_CHECKING:
    from .schemes import Assignment

log = logging.getLogger("stefaland.splits")

ALL = "all"  # the fold spec naming every fold of a scheme
TEMPORAL = "temporal"
#: ``(start, end)`` as ISO dates.
Period = tuple[str, str]
#: How ``stefaland splits make`` assigns a site table's sites to folds: ``rule(table, seed, folds)``.
Rule = Callable[[pd.DataFrame, int, "int | None"], "Assignment"]


@dataclass(frozen=True)
class Fold:
    """One fold of a holdout: who trains, who is tested, over which days, and where it is written.

    Parameters
    ----------
    id : int
        The fold's id in the store's ``fold_<scheme>`` coordinate or the split file; what
        ``--fold`` names.
    label : str
        The fold as the report names it; written as ``fold`` into predictions files.
    name : str
        The fold as commands, logs and ``run.json`` name it.
    folder : str
        Its folder in the run folder (:mod:`stefaland.run.layout`).
    train_sites, test_sites : numpy.ndarray
        Store row indices of the sites trained on and of the sites tested.
    train_period, test_period : tuple of str, or None
        ``(start, end)`` of training and of testing; None where the caller gave no period.
    """

    id: int
    label: str
    name: str
    folder: str
    train_sites: np.ndarray
    test_sites: np.ndarray
    train_period: Period | None = None
    test_period: Period | None = None


@dataclass(frozen=True)
class Holdout:
    """A spatial holdout scheme: each fold's sites are tested in turn, the others train.

    Parameters
    ----------
    task : str
        The task the scheme belongs to (``camels``, ``global``, ...); the report's table.
    name : str
        The scheme: ``--split``, the store's ``fold_<name>`` coordinate, a split file's ``scheme``
        and a predictions file's ``split``.
    title : str
        The report's column-group heading.
    fold_ids : tuple of int
        The folds the report expects, 1-based as MHPI publish them; empty for a scheme that is
        not registered, whose folds are whatever the store or split file holds.
    rule : callable, optional
        How ``stefaland splits make`` assigns sites to folds (:data:`Rule`); None when the folds
        come only from a store or a published split.
    """

    task: str
    name: str
    title: str = ""
    fold_ids: tuple[int, ...] = ()
    rule: Rule | None = None

    #: False when the tested sites are also the trained ones (the test days are held out instead).
    holds_out_sites: ClassVar[bool] = True

    def labels(self) -> tuple[str, ...]:
        """The report's fold labels, in fold order."""
        return tuple(self.label(k, self.fold_ids) for k in self.fold_ids)

    def label(self, fold: int, known: Sequence[int] = ()) -> str:
        """The report's label of fold ``fold`` when the store's folds are ``known``.

        The report numbers folds from 1 as MHPI and the paper do; a store or split file whose ids
        are 0..K-1 for a scheme of K folds is read shifted by one, so nobody's data has to be
        renumbered (its run folders keep the store's own id, ``fold-0``).
        """
        if not self.fold_ids:
            return str(fold)
        report = list(self.fold_ids)
        if sorted(known) == list(range(len(report))) and report == list(range(1, len(report) + 1)):
            return str(fold + 1)
        if fold not in report:
            log.warning("fold %d is not one of the report's folds for %s/%s (%s)", fold, self.task, self.name,
                        ", ".join(map(str, report)))
        return str(fold)

    def fold_name(self, fold: int) -> str:
        """How commands, logs and ``run.json`` name fold ``fold``: its id."""
        return str(fold)

    def folder(self, fold: int) -> str:
        """The run-folder folder of fold ``fold``: ``fold-<k>``."""
        return layout.fold_folder(fold)

    def assignment(self, dataset: xr.Dataset, split_file: str | None = None) -> np.ndarray:
        """Fold id per store site (``-1``: in no fold), from ``split_file`` or the store's ``fold_<name>``.

        Parameters
        ----------
        dataset : xarray.Dataset
            The store (only its ``site`` and ``fold_*`` coordinates are read).
        split_file : str, optional
            A split file of this scheme; it may leave some of the store's sites out (a 671-basin
            store with a 531-basin split).

        Returns
        -------
        numpy.ndarray
            int64 fold ids in store order.
        """
        if split_file is not None:
            return split_file_folds(dataset, split_file, self.name)
        folds = coordinate_folds(dataset, self.name)
        if folds is None:
            raise StefaLandError(
                f"store has no coordinate {f'fold_{self.name}'!r} for split {self.name!r} (known splits: "
                f"{', '.join(known_splits(dataset)) or 'none'}); pass --split-file"
            )
        return folds

    def select(self, spec: str | int, known: Sequence[int], option: str = "--fold") -> list[int]:
        """The fold ids ``spec`` names among ``known`` (:func:`parse_fold_spec`)."""
        return parse_fold_spec(spec, known, self.name, option)

    def periods(self, train: Period | None, test: Period | None) -> tuple[Period | None, Period | None]:
        """The training and test periods of every fold: the run's own."""
        return train, test

    def sites(self, assignment: np.ndarray, fold: int) -> tuple[np.ndarray, np.ndarray]:
        """Store rows ``(train, test)`` with fold ``fold`` held out; sites in no fold are in neither."""
        known = fold_ids(assignment)
        if fold not in known:
            raise StefaLandError(f"fold {fold} is not in the split (folds: {', '.join(map(str, known))})")
        test = np.flatnonzero(assignment == fold)
        train = np.flatnonzero((assignment >= 0) & (assignment != fold))
        if len(train) == 0:
            raise StefaLandError(f"fold {fold}: no training sites left once it is held out")
        return train, test

    def fold(self, assignment: np.ndarray, fold: int, train_period: Period | None = None,
             test_period: Period | None = None) -> Fold:
        """Fold ``fold`` of the sites in ``assignment`` (from :meth:`assignment`).

        Returns
        -------
        Fold
        """
        train_period, test_period = self.periods(train_period, test_period)
        train, test = self.sites(assignment, fold)
        return Fold(fold, self.label(fold, fold_ids(assignment)), self.fold_name(fold), self.folder(fold),
                    train, test, train_period, test_period)

    def plan(self, dataset: xr.Dataset, spec: str | int = ALL, split_file: str | None = None,
             train_period: Period | None = None, test_period: Period | None = None) -> list[Fold]:
        """The folds ``spec`` names, on the store ``dataset``, in fold order.

        Parameters
        ----------
        dataset : xarray.Dataset
            The store.
        spec : str or int
            ``all``, one id, a list or a range (:func:`parse_fold_spec`).
        split_file : str, optional
            A split file instead of the store's ``fold_<name>`` coordinate.
        train_period, test_period : tuple of str, optional
            The run's ``(start, end)`` periods.

        Returns
        -------
        list of Fold
        """
        self.periods(train_period, test_period)  # a bad pair of periods is refused before the store is read
        assignment = self.assignment(dataset, split_file)
        return [self.fold(assignment, k, train_period, test_period)
                for k in self.select(spec, fold_ids(assignment))]


@dataclass(frozen=True)
class TemporalHoldout(Holdout):
    """The temporal holdout: every site trains on the training period and is tested on the test period.

    One fold (id 1, labelled ``all`` in predictions files and the report), written to ``temporal/``.
    A split file, of any scheme, restricts it to the sites it lists; the periods must not overlap.

    Parameters
    ----------
    task : str
        The task whose report table shows it.
    name : str
        ``temporal``.
    title : str
        The report's column-group heading.
    fold_ids : tuple of int
        ``(1,)``: the one fold.
    """

    name: str = TEMPORAL
    title: str = "Temporal holdout (gauged sites, unseen test period)"
    fold_ids: tuple[int, ...] = (1,)

    holds_out_sites: ClassVar[bool] = False

    def label(self, fold: int, known: Sequence[int] = ()) -> str:
        """``all``: the one fold holds every site."""
        return ALL

    def fold_name(self, fold: int) -> str:
        """``all``, as commands and ``run.json`` name the one fold."""
        return ALL

    def folder(self, fold: int) -> str:
        """``temporal``: the one fold's folder."""
        return layout.TEMPORAL_FOLDER

    def assignment(self, dataset: xr.Dataset, split_file: str | None = None) -> np.ndarray:
        """Every site (or every site of ``split_file``, whatever its scheme) in the one fold."""
        if split_file is None:
            members = np.ones(dataset.sizes["site"], dtype=bool)
        else:
            members = split_file_folds(dataset, split_file, None) != NOT_IN_SPLIT
        return np.where(members, self.fold_ids[0], NOT_IN_SPLIT).astype(np.int64)

    def select(self, spec: str | int, known: Sequence[int], option: str = "--fold") -> list[int]:
        """The one fold, for ``all``; any other spec is refused (the holdout has no folds to choose)."""
        if str(spec).strip() != ALL:
            raise StefaLandError(f"--split {self.name} has no folds: every site trains on data.train_* and is "
                                 f"tested on data.test_*; drop {option}")
        return list(known)

    def periods(self, train: Period | None, test: Period | None) -> tuple[Period | None, Period | None]:
        """The run's periods, refused when they overlap: that would score days the model was fitted on."""
        if train is not None and test is not None and overlap(train, test):
            raise StefaLandError(f"--split {self.name}: the test period {test[0]}..{test[1]} overlaps the "
                                 f"training period {train[0]}..{train[1]}; make them disjoint")
        return train, test

    def sites(self, assignment: np.ndarray, fold: int) -> tuple[np.ndarray, np.ndarray]:
        """Store rows ``(train, test)``: the same sites, every site of the fold."""
        rows = np.flatnonzero(assignment == fold)
        return rows, rows


def overlap(a: Period, b: Period) -> bool:
    """Whether two ``(start, end)`` periods share a day."""
    return pd.Timestamp(a[0]) <= pd.Timestamp(b[1]) and pd.Timestamp(b[0]) <= pd.Timestamp(a[1])


def split_file_folds(dataset: xr.Dataset, split_file: str, scheme: str | None) -> np.ndarray:
    """Fold id per store site from a split file of ``scheme`` (any scheme for None); -1 for the sites it omits."""
    from .splitfile import apply_split

    if not fileio.exists(split_file):
        raise StefaLandError(f"{split_file}: split file not found")
    sites = store_sites(dataset)
    groups = apply_split(sites, split_file, subset=True, scheme=scheme)
    return folds_of_sites(sites, {site: fold for fold, members in groups.items() for site in members})


def parse_fold_spec(spec: str | int, known: Sequence[int] | None = None, scheme: str = "",
                    option: str = "--fold") -> list[int]:
    """The fold ids a ``--fold``/``--folds`` value names: ``all``, ``3``, ``1,2``, ``1-5``, or a mix (``1-3,7``).

    Parameters
    ----------
    spec : str or int
        The value as given.
    known : sequence of int, optional
        The scheme's fold ids: ``all`` names these, and every id named must be one of them.
        None where they are not known (a Kubernetes submission names folds without reading the
        store); the ids are then only parsed, and ``all`` is refused.
    scheme : str
        The scheme's name, for the messages.
    option : str
        The option ``spec`` came from, for the messages.

    Returns
    -------
    list of int
        The fold ids, sorted, each once.

    Raises
    ------
    StefaLandError
        One line naming ``spec`` and, where known, the scheme's fold ids.
    """
    text = str(spec).strip()
    ids = ", ".join(map(str, known or ()))
    if known is not None and not known:
        raise StefaLandError(f"split {scheme!r} assigns no site to any fold")
    if text == ALL:
        if known is None:
            raise StefaLandError(f"{option} {ALL}: the folds of {scheme!r} are not known here; name them (1,2 or 1-5)")
        return sorted(known)
    try:
        wanted = sorted({k for part in text.split(",") for k in _fold_range(part)})
    except ValueError:
        of = f" (folds of {scheme!r}: {ids})" if known else ""
        raise StefaLandError(f"{option} {text!r}: expected 'all', a fold id, a list like 1,3,5 or a range like "
                             f"1-10{of}") from None
    unknown = [k for k in wanted if known is not None and k not in known]
    if unknown:
        raise StefaLandError(f"{option} {text}: fold {unknown[0]} is not in split {scheme!r} (folds: {ids})")
    return wanted


def _fold_range(part: str) -> range:
    """``3`` or ``1-5`` as a range of ids; ValueError for anything else (an empty or reversed range too)."""
    first, dash, last = part.strip().partition("-")
    ids = range(int(first), int(last) + 1) if dash else range(int(first), int(first) + 1)
    if not ids or ids.start < 0:
        raise ValueError(part)
    return ids
