"""Holdouts as plans: one fold-spec parser for every command, one registry for `splits make`,
finetuning and the report, the temporal holdout as a scheme like the others, and one run layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from click.testing import CliRunner

from stefaland.errors import StefaLandError
from stefaland.report import make_report, write_predictions
from stefaland.report.tasks import TASKS
from stefaland.run import layout
from stefaland.splits import (
    Holdout,
    Split,
    TemporalHoldout,
    get_holdout,
    holdout_for,
    holdouts_of,
    parse_fold_spec,
    splittable,
    write_split,
)
from stefaland_cli.main import cli

from _finetune_store import write_finetune_store
from _guarded import one_line_error


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_finetune_store(tmp_path_factory.mktemp("holdouts") / "store.zarr", n_sites=8, days=60, n_pub=4)


def _sites(n: int, folds: list[int] | None = None) -> xr.Dataset:
    """The coordinates a holdout reads: ``site`` and, given ``folds``, ``fold_pub``."""
    coords: dict = {"site": np.asarray([f"s{k}" for k in range(n)], dtype=object)}
    if folds is not None:
        coords["fold_pub"] = ("site", np.asarray(folds, dtype="int16"))
    return xr.Dataset(coords=coords)


# -- fold specs ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "expected"), [
    ("all", [1, 2, 3, 4, 5]), (" all ", [1, 2, 3, 4, 5]), ("3", [3]), (3, [3]), ("1,2", [1, 2]),
    ("2-4", [2, 3, 4]), ("5,1-2,2", [1, 2, 5]), ("1 , 3", [1, 3]),
])
def test_every_fold_spec_form(spec, expected) -> None:
    assert parse_fold_spec(spec, [1, 2, 3, 4, 5], "pub") == expected


@pytest.mark.parametrize("spec", ["one", "1-", "-1", "4-2", "1,,2", "", "1.5"])
def test_a_bad_spec_is_one_line_naming_it_and_the_folds(spec) -> None:
    with pytest.raises(StefaLandError) as raised:
        parse_fold_spec(spec, [1, 2, 3], "pub", "--folds")
    assert str(raised.value) == (f"--folds {spec.strip()!r}: expected 'all', a fold id, a list like 1,3,5 or a range "
                                 "like 1-10 (folds of 'pub': 1, 2, 3)")


def test_an_unknown_fold_names_the_split_and_its_folds() -> None:
    with pytest.raises(StefaLandError, match=r"^--fold 2,9: fold 9 is not in split 'pub' \(folds: 1, 2, 3\)$"):
        parse_fold_spec("2,9", [1, 2, 3], "pub")
    with pytest.raises(StefaLandError, match="split 'pub' assigns no site to any fold"):
        parse_fold_spec("all", [], "pub")


def test_ids_are_only_parsed_when_the_folds_are_not_known() -> None:
    assert parse_fold_spec("0-1,4", None, "pub", "--folds") == [0, 1, 4]  # what `submit` names without the store
    with pytest.raises(StefaLandError, match="the folds of 'pub' are not known here"):
        parse_fold_spec("all", None, "pub", "--folds")


# -- the registry -------------------------------------------------------------------------------------

def test_the_report_reads_its_schemes_from_the_registry() -> None:
    for task in TASKS.values():
        holdouts = holdouts_of(task.name)
        assert list(task.schemes) == [h.name for h in holdouts]
        for holdout in holdouts:
            scheme = task.schemes[holdout.name]
            assert (scheme.task, scheme.title, scheme.folds) == (task.name, holdout.title, holdout.labels())
    assert TASKS["camels"].schemes["pub"].folds == tuple(str(k) for k in range(1, 11))
    assert TASKS["camels"].schemes["pur"].folds == tuple(str(k) for k in range(1, 8))
    assert list(TASKS["camels"].schemes) == ["pub", "pur", "temporal"]  # the table's column order


def test_temporal_is_a_registered_scheme_with_one_fold() -> None:
    for task in ("camels", "global", "ismn"):
        temporal = get_holdout(task, "temporal")
        assert isinstance(temporal, TemporalHoldout) and not temporal.holds_out_sites
        assert temporal.fold_ids == (1,) and temporal.labels() == ("all",)
        assert temporal.rule is None and "temporal" not in splittable()[task]  # nothing for `splits make` to draw
    assert "temporal" not in TASKS["wosis"].schemes


def test_a_scheme_the_registry_lacks_is_the_store_s() -> None:
    custom = holdout_for("camels", "huc")
    assert type(custom) is Holdout and custom.fold_ids == () and custom.label(4, [4, 5]) == "4"
    assert isinstance(holdout_for("my_task", "temporal"), TemporalHoldout)  # any task may hold out time
    with pytest.raises(StefaLandError, match="task 'camels' has no split 'huc'; known: pub, pur, temporal, all"):
        get_holdout("camels", "huc")


# -- plans --------------------------------------------------------------------------------------------

def test_a_spatial_plan_tiles_the_scheme_s_sites() -> None:
    dataset = _sites(7, [1, 2, 3, 1, 2, 3, -1])
    folds = get_holdout("camels", "pub").plan(dataset, "1-3", train_period=("2000-01-01", "2000-12-31"),
                                              test_period=("2000-01-01", "2000-12-31"))
    assert [(f.id, f.label, f.name, f.folder) for f in folds] == [
        (1, "1", "1", "fold-1"), (2, "2", "2", "fold-2"), (3, "3", "3", "fold-3")]
    assert sorted(np.concatenate([f.test_sites for f in folds]).tolist()) == list(range(6))  # site 6: in no fold
    for fold in folds:
        assert not set(fold.train_sites) & set(fold.test_sites) and 6 not in fold.train_sites
        assert fold.train_period == fold.test_period == ("2000-01-01", "2000-12-31")


def test_zero_based_store_folds_carry_the_report_s_labels() -> None:
    folds = get_holdout("global", "continents").plan(_sites(3, [0, 1, 2]).rename({"fold_pub": "fold_continents"}))
    assert [(f.id, f.label, f.folder) for f in folds] == [(0, "1", "fold-0"), (1, "2", "fold-1"), (2, "3", "fold-2")]


def test_the_temporal_plan_is_every_site_on_two_periods(tmp_path: Path) -> None:
    temporal = get_holdout("camels", "temporal")
    train, test = ("1990-01-01", "1999-12-31"), ("2000-01-01", "2009-12-31")
    (fold,) = temporal.plan(_sites(5), "all", None, train, test)
    assert (fold.id, fold.label, fold.name, fold.folder) == (1, "all", "all", layout.TEMPORAL_FOLDER)
    assert fold.train_sites.tolist() == fold.test_sites.tolist() == [0, 1, 2, 3, 4]
    assert (fold.train_period, fold.test_period) == (train, test)
    split = tmp_path / "split.csv"  # a split file of any scheme restricts it to the sites it lists
    write_split(Split(pd.Series([1, 2], index=pd.Index(["s1", "s3"], name="site"), dtype="int16"), "camels", "pub",
                      1, {1: "a", 2: "b"}), str(split))
    (only,) = temporal.plan(_sites(5), "all", str(split), train, test)
    assert only.train_sites.tolist() == only.test_sites.tolist() == [1, 3]
    with pytest.raises(StefaLandError, match=r"--split temporal has no folds: .*; drop --fold$"):
        temporal.plan(_sites(5), "1", None, train, test)
    with pytest.raises(StefaLandError, match="the test period 1995-01-01..2009-12-31 overlaps the training period"):
        temporal.plan(_sites(5), "all", None, train, ("1995-01-01", "2009-12-31"))


def test_temporal_predictions_labelled_all_are_reported(tmp_path: Path) -> None:
    """Predictions files of the temporal holdout carry fold ``all``, as every version has written them."""
    obs = np.random.default_rng(0).gamma(2.0, 1.0, (4, 60)).astype(np.float32)
    write_predictions(str(tmp_path / "runs" / "temporal.nc"), obs, obs * 1.1, [f"s{k}" for k in range(4)],
                      pd.date_range("2001-01-01", periods=60), "camels", "temporal", "all", "LSTM-SL", "mm/day")
    report = make_report("camels", "temporal", str(tmp_path / "runs"), str(tmp_path / "out"), formats=[], quiet=True)
    assert set(report.sites["fold"]) == {"all"} and "Temporal holdout" in report.table
    again = make_report("camels", "temporal", str(tmp_path / "runs"), str(tmp_path / "out"), formats=[], quiet=True,
                        folds="all")
    assert again.table == report.table  # --folds all is every fold: the whole scheme


# -- commands -----------------------------------------------------------------------------------------

def test_finetune_refuses_a_bad_fold_spec_before_writing(store: str, tmp_path: Path) -> None:
    config = Path(__file__).resolve().parents[1] / "configs" / "finetune_tiny.yaml"
    base = ["finetune", "--store", store, "--config", str(config), "--out", str(tmp_path / "run"), "--split", "pub"]
    one_line_error(CliRunner().invoke(cli, [*base, "--fold", "2-x"]),
                   "--fold '2-x': expected 'all', a fold id", "(folds of 'pub': 1, 2, 3, 4)")
    one_line_error(CliRunner().invoke(cli, [*base, "--fold", "1,7"]),
                   "--fold 1,7: fold 7 is not in split 'pub' (folds: 1, 2, 3, 4)")
    assert not (tmp_path / "run").exists()


def test_pretraining_plans_one_run_per_fold(store: str) -> None:
    from stefaland.pretrain import load_config
    from stefaland.pretrain.runs import plan_runs

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "pretrain_tiny.yaml")
    runs = plan_runs(store, config, "out", "pub", "2-3")
    assert [(r.fold, r.out) for r in runs] == [(2, "out/fold-2"), (3, "out/fold-3")]
    assert [r.config.data.exclude.fold for r in runs] == [2, 3]
    assert plan_runs(store, config, "out")[0].config is config  # no --split: the one run as given
    with pytest.raises(StefaLandError, match="the temporal holdout holds out no site"):
        plan_runs(store, config, "out", "temporal", "all")
    with pytest.raises(StefaLandError, match="data.exclude is set and --split/--fold would replace it"):
        plan_runs(store, runs[0].config, "out", "pub", "all")


def test_submit_names_folds_without_the_store_and_refuses_the_temporal_holdout() -> None:
    from stefaland.k8s.submit import finetune_folds

    assert finetune_folds("1-3", "s3://nowhere/store.zarr", "camels", "pub") == [1, 2, 3]  # the store is not read
    with pytest.raises(StefaLandError, match="submit finetune runs the folds of a spatial holdout"):
        finetune_folds("all", "s3://nowhere/store.zarr", "camels", "temporal")


# -- the run layout -----------------------------------------------------------------------------------

def test_fold_folders_are_found_in_fold_order(tmp_path: Path) -> None:
    for k in (10, 2, 1):
        (tmp_path / "run" / layout.fold_folder(k)).mkdir(parents=True)
        (tmp_path / "run" / layout.fold_folder(k) / layout.FOLD_MARKER).write_text("")
    (tmp_path / "run" / "fold-3").mkdir()  # no config: not a fold of the run
    (tmp_path / "run" / "predict").mkdir()
    found = layout.fold_directories(str(tmp_path / "run"))
    assert found == [(f"fold{k}", str(tmp_path / "run" / f"fold-{k}")) for k in (1, 2, 10)]
    (tmp_path / "temporal" / layout.TEMPORAL_FOLDER).mkdir(parents=True)
    (tmp_path / "temporal" / layout.TEMPORAL_FOLDER / layout.FOLD_MARKER).write_text("")
    assert layout.fold_directories(str(tmp_path / "temporal")) == [
        ("temporal", str(tmp_path / "temporal" / "temporal"))]
    assert layout.fold_directories(str(tmp_path / "run" / "fold-2")) == [("model", str(tmp_path / "run" / "fold-2"))]
    with pytest.raises(StefaLandError, match="not a finetune run folder"):
        layout.fold_directories(str(tmp_path / "run" / "predict"))
    assert layout.predict_url(str(tmp_path / "run") + "/") == str(tmp_path / "run" / "predict" / "predictions.nc")
