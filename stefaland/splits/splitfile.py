"""The split file: a CSV of ``site,fold`` under one ``#`` header line of JSON metadata.

Keeping holdout schemes as data (not code paths) lets a run record exactly which sites it held
out, lets anyone import a published split, and makes a split reviewable in a diff. The header
records task, scheme, seed, fold names and what made it, so the file explains itself; it holds no
timestamp, so the same inputs and seed give a byte-identical file::

    # stefaland-split {"format": 1, "task": "camels", "scheme": "pur", "seed": 111111, ...}
    site,fold
    01013500,0
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from stefaland import __version__, fileio
from stefaland.errors import StefaLandError
from stefaland.outputs import claim_output

from .schemes import NOT_HELD_OUT

MAGIC = "# stefaland-split "
FORMAT_VERSION = 1


@dataclass
class Split:
    """Fold per site (``folds``: index site id (str), int16 values) plus the header metadata."""

    folds: pd.Series
    task: str
    scheme: str
    seed: int | None
    fold_names: dict[int, str]
    note: str = ""
    created_by: str = f"stefaland {__version__} splits make"
    sites_source: str = ""

    def metadata(self) -> dict:
        return {
            "format": FORMAT_VERSION, "task": self.task, "scheme": self.scheme, "seed": self.seed,
            "n_sites": int(len(self.folds)),
            "fold_names": {str(k): v for k, v in sorted(self.fold_names.items())},
            "fold_sizes": {str(k): int(v) for k, v in self.folds.value_counts().sort_index().items()},
            "note": self.note, "created_by": self.created_by, "sites_source": self.sites_source,
        }

    def to_csv_bytes(self) -> bytes:
        body = pd.DataFrame({"site": self.folds.index.astype(str), "fold": self.folds.to_numpy()})
        return (MAGIC + json.dumps(self.metadata()) + "\n" + body.to_csv(index=False)).encode()

    def groups(self) -> dict[int, list[str]]:
        """Sites by fold id, each list in file order."""
        return {int(k): list(v.index) for k, v in self.folds.groupby(self.folds, sort=True)}


SPLIT_KIND = "split"  # its header line is its StefaLand marker (stefaland.outputs.HEADER_KINDS)


def write_split(split: Split, url: str, force: bool = False) -> None:
    """Write atomically (readers never see half a split), local or s3://.

    The path is claimed first (:func:`stefaland.outputs.claim_output`): a file that is not a split
    file (a user's own CSV) is refused, an existing split file is replaced only with ``force``.
    """
    with claim_output(url, SPLIT_KIND, force=force):
        fileio.write_bytes_atomic(url, split.to_csv_bytes())


def check_split_out(url: str, force: bool = False) -> None:
    """Refuse ``url`` now (before any table is read) if :func:`write_split` would refuse it later."""
    claim_output(url, SPLIT_KIND, force=force).release()


def check_header(split: Split, url: str, scheme: str | None = None, task: str | None = None) -> None:
    """The header must name the scheme (and task) the run was asked for: a PUB file passed with
    ``--split pur`` would otherwise train and score under the wrong name without a word."""
    for what, asked, recorded in (("scheme", scheme, split.scheme), ("task", task, split.task)):
        if asked is not None and recorded and recorded != asked:
            raise StefaLandError(f"{url}: split file {what} is {recorded!r} but {asked!r} was asked for (--split/--task)")


def read_split(url: str, scheme: str | None = None, task: str | None = None) -> Split:
    """Read and check a split file: header present, one integer fold per site, no duplicates; with
    ``scheme``/``task``, the header must record the same."""
    text = fileio.read_bytes(url).decode()
    first, _, rest = text.partition("\n")
    if not first.startswith(MAGIC):
        raise StefaLandError(f"{url}: not a StefaLand split file (first line must start with "
                             f"{MAGIC.strip()!r})")
    try:
        meta = json.loads(first[len(MAGIC):])
    except json.JSONDecodeError as exc:
        raise StefaLandError(f"{url}: split header is not valid JSON ({exc.msg})") from exc
    if meta.get("format") != FORMAT_VERSION:
        raise StefaLandError(f"{url}: split format {meta.get('format')!r} is not supported")
    body = pd.read_csv(io.StringIO(rest), dtype={"site": str})
    if list(body.columns) != ["site", "fold"]:
        raise StefaLandError(f"{url}: columns must be site,fold, got {','.join(body.columns)}")
    fold = pd.to_numeric(body["fold"], errors="coerce")
    if fold.isna().any() or (fold != fold.round()).any():
        bad = body["site"][fold.isna() | (fold != fold.round())].iloc[0]
        raise StefaLandError(f"{url}: site {bad} has a fold that is not an integer")
    folds = pd.Series(fold.astype("int16").to_numpy(), index=pd.Index(body["site"].astype(str), name="site"))
    duplicated = folds.index[folds.index.duplicated()]
    if len(duplicated):
        raise StefaLandError(f"{url}: site {duplicated[0]} appears more than once")
    names = {int(k): v for k, v in meta.get("fold_names", {}).items()}
    unknown = set(folds.unique()) - set(names) - {NOT_HELD_OUT}
    if unknown:
        raise StefaLandError(f"{url}: fold {min(unknown)} is not named in the header")
    split = Split(folds=folds, task=str(meta.get("task", "")), scheme=str(meta.get("scheme", "")),
                  seed=meta.get("seed"), fold_names=names, note=meta.get("note", ""),
                  created_by=meta.get("created_by", ""), sites_source=meta.get("sites_source", ""))
    check_header(split, url, scheme, task)
    return split


def validate_split(folds: pd.Series, sites: Iterable[str], source: str = "split",
                   subset: bool = False) -> None:
    """Every split site is one of ``sites`` and appears once; unless ``subset``, every one of
    ``sites`` is in the split. Errors name the first offending site."""
    known = pd.Index([str(s) for s in sites])
    duplicated = folds.index[folds.index.duplicated()]
    if len(duplicated):
        raise StefaLandError(f"{source}: site {duplicated[0]} appears more than once")
    unknown = folds.index.difference(known)
    if len(unknown):
        raise StefaLandError(f"{source}: site {unknown[0]} is not among the store's sites"
                             + (f" ({len(unknown)} such sites)" if len(unknown) > 1 else ""))
    if not subset:
        missing = known.difference(folds.index)
        if len(missing):
            raise StefaLandError(f"{source}: site {missing[0]} has no fold"
                                 + (f" ({len(missing)} such sites)" if len(missing) > 1 else ""))


def apply_split(store_sites: Iterable[str], split_file: str, subset: bool = False,
                scheme: str | None = None) -> dict[int, list[str]]:
    """Sites by fold id (in store order) for the store's sites; fold -1 = never held out.

    ``subset=True`` allows store sites the split does not mention (e.g. a 671-basin store with a
    531-basin split); they are left out of every fold.
    """
    store_sites = [str(s) for s in store_sites]
    split = read_split(split_file, scheme)
    validate_split(split.folds, store_sites, source=split_file, subset=subset)
    groups: dict[int, list[str]] = {}
    for site in store_sites:
        if site in split.folds.index:
            groups.setdefault(int(split.folds[site]), []).append(site)
    return dict(sorted(groups.items()))


def holdout(groups: dict[int, list[str]], fold: int) -> tuple[list[str], list[str]]:
    """(training sites, test sites) when ``fold`` is held out; fold -1 always trains."""
    if fold not in groups or fold == NOT_HELD_OUT:
        raise StefaLandError(f"fold {fold} is not in the split (folds: "
                             f"{', '.join(str(k) for k in groups if k != NOT_HELD_OUT)})")
    train = [s for k, sites in groups.items() if k != fold for s in sites]
    return train, list(groups[fold])
